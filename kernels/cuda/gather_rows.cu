// gather_rows: out[i, :] = x[rows[i], :] (the last position of each sequence before the final
// norm). The same copy as embed with a different index source; one block per output row.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

__global__ void kc_gather_vec(uint4 *out /* [m, dim/8] */, const uint4 *x /* [*, dim/8] */,
                              const int32_t *rows /* [m] */, int dim8) {
    kc_pdl_begin();
    int i = blockIdx.x;
    const uint4 *src = x + (size_t)rows[i] * dim8;
    uint4 *dst = out + (size_t)i * dim8;
    for (int j = threadIdx.x; j < dim8; j += blockDim.x)
        dst[j] = src[j];
}

__global__ void kc_gather_scalar(bf16 *out /* [m, dim] */, const bf16 *x /* [*, dim] */,
                                 const int32_t *rows /* [m] */, int dim) {
    kc_pdl_begin();
    int i = blockIdx.x;
    const bf16 *src = x + (size_t)rows[i] * dim;
    bf16 *dst = out + (size_t)i * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        dst[j] = src[j];
}

// ---- launchers

extern "C" int kern_cuda_gather_rows(bf16 *out, const bf16 *x, const int32_t *rows, int m, int dim,
                                     cudaStream_t s) {
    if (m < 0 || dim <= 0) return err_set(ERR_INVAL, "gather_rows: bad sizes m=%d dim=%d", m, dim);
    if (m == 0) return 0;
    bool vec = dim % 8 == 0 && ((uintptr_t)out % 16) == 0 && ((uintptr_t)x % 16) == 0;
    if (vec) {
        int threads = dim / 8 < 256 ? ((dim / 8 + 31) / 32) * 32 : 256;
        kc_launch(kc_gather_vec, m, threads, 0, s, (uint4 *)out, (const uint4 *)x, rows, dim / 8);
    } else {
        kc_launch(kc_gather_scalar, m, 256, 0, s, out, x, rows, dim);
    }
    KC_LAUNCHED();
    return 0;
}

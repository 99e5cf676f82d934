// embed: out[i, :] = table[ids[i], :], bf16 rows copied as they are.
// Layout: one block per token; 16-byte vectors when dim is a multiple of 8 and both pointers
// are 16-byte aligned (every real model), else 2-byte copies. A pure copy: memory-bound.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

__global__ void kc_embed_vec(uint4 *out /* [n, dim/8] */, const int32_t *ids /* [n] */,
                             const uint4 *table /* [vocab, dim/8] */, int dim8) {
    kc_pdl_begin();
    int i = blockIdx.x;
    const uint4 *src = table + (size_t)ids[i] * dim8;
    uint4 *dst = out + (size_t)i * dim8;
    for (int j = threadIdx.x; j < dim8; j += blockDim.x)
        dst[j] = src[j];
}

__global__ void kc_embed_scalar(bf16 *out /* [n, dim] */, const int32_t *ids /* [n] */,
                                const bf16 *table /* [vocab, dim] */, int dim) {
    kc_pdl_begin();
    int i = blockIdx.x;
    const bf16 *src = table + (size_t)ids[i] * dim;
    bf16 *dst = out + (size_t)i * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        dst[j] = src[j];
}

// ---- launchers

extern "C" int kern_cuda_embed(bf16 *out, const int32_t *ids, const bf16 *table, int n, int dim,
                               cudaStream_t s) {
    if (n < 0 || dim <= 0) return err_set(ERR_INVAL, "embed: bad sizes n=%d dim=%d", n, dim);
    if (n == 0) return 0;
    bool vec = dim % 8 == 0 && ((uintptr_t)out % 16) == 0 && ((uintptr_t)table % 16) == 0;
    if (vec) {
        int threads = dim / 8 < 256 ? ((dim / 8 + 31) / 32) * 32 : 256;
        kc_launch(kc_embed_vec, n, threads, 0, s, (uint4 *)out, ids, (const uint4 *)table, dim / 8);
    } else {
        kc_launch(kc_embed_scalar, n, 256, 0, s, out, ids, table, dim);
    }
    KC_LAUNCHED();
    return 0;
}

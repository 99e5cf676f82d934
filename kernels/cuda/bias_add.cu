// bias_add: y[i, :] = bf16(y[i, :] + bias). The GEMM runs it after a plain cuBLASLt GEMM where
// that measures faster than the library's bias epilogue (the prefill qkv GEMM: the epilogue's
// algorithms ran at about half the plain GEMM's rate), or where the library offers no epilogue
// algorithm for a shape. So it is on the prefill path and must run at the copy rate: a 2-D grid
// (columns by blockIdx.x, rows by blockIdx.y, grid-striding past 65535 rows), 8 elements per
// thread with 16-byte loads when n % 8 == 0 and y, bias are 16-byte aligned, else one element per
// thread. No division or modulo per element.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

__global__ void kc_bias_add_vec8(bf16 *y /* [m, n] */, const bf16 *bias /* [n] */, int m, int n) {
    kc_pdl_begin();
    const int j = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (j >= n) return;
    uint4 bv = *reinterpret_cast<const uint4 *>(bias + j);
    const bf16 *bb = reinterpret_cast<const bf16 *>(&bv);
    for (int i = blockIdx.y; i < m; i += gridDim.y) {
        uint4 *p = reinterpret_cast<uint4 *>(y + (size_t)i * n + j);
        uint4 v = *p;
        bf16 *yy = reinterpret_cast<bf16 *>(&v);
#pragma unroll
        for (int e = 0; e < 8; e++)
            yy[e] = kc_bf(kc_f(yy[e]) + kc_f(bb[e]));
        *p = v;
    }
}

__global__ void kc_bias_add(bf16 *y /* [m, n] */, const bf16 *bias /* [n] */, int m, int n) {
    kc_pdl_begin();
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    const float b = kc_f(bias[j]);
    for (int i = blockIdx.y; i < m; i += gridDim.y)
        y[(size_t)i * n + j] = kc_bf(kc_f(y[(size_t)i * n + j]) + b);
}

// ---- launchers

extern "C" int kern_cuda_bias_add(bf16 *y, const bf16 *bias, int m, int n, cudaStream_t s) {
    if (m < 0 || n <= 0) return err_set(ERR_INVAL, "bias_add: bad sizes m=%d n=%d", m, n);
    if (m == 0) return 0;
    bool vec = n % 8 == 0 && (uintptr_t)y % 16 == 0 && (uintptr_t)bias % 16 == 0;
    int per_thread = vec ? 8 : 1;
    unsigned cols = (unsigned)((n / per_thread + 255) / 256);
    dim3 grid(cols, (unsigned)(m < KC_MAX_GRID_YZ ? m : KC_MAX_GRID_YZ));
    if (vec)
        kc_launch(kc_bias_add_vec8, grid, 256, 0, s, y, bias, m, n);
    else
        kc_launch(kc_bias_add, grid, 256, 0, s, y, bias, m, n);
    KC_LAUNCHED();
    return 0;
}

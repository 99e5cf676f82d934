// bias_add: y[i, :] = bf16(y[i, :] + bias). The GEMM fuses the bias through cuBLASLt's epilogue
// (one rounding, as PyTorch's Linear does); this kernel is the fallback for shapes where the
// library offers no epilogue algorithm. Grid-stride over all m*n elements.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

__global__ void kc_bias_add(bf16 *y /* [m, n] */, const bf16 *bias /* [n] */, int m, int n) {
    size_t total = (size_t)m * n;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x)
        y[t] = kc_bf(kc_f(y[t]) + kc_f(bias[t % n]));
}

// ---- launchers

extern "C" int kern_cuda_bias_add(bf16 *y, const bf16 *bias, int m, int n, cudaStream_t s) {
    if (m < 0 || n <= 0) return err_set(ERR_INVAL, "bias_add: bad sizes m=%d n=%d", m, n);
    if (m == 0) return 0;
    size_t total = (size_t)m * n;
    int blocks = (int)((total + 255) / 256 < 65536 ? (total + 255) / 256 : 65536);
    kc_bias_add<<<blocks, 256, 0, s>>>(y, bias, m, n);
    KC_LAUNCHED();
    return 0;
}

// silu_mul: out = silu(gate) * up, gate_up rows being [gate (h) | up (h)].
// Rounding follows Hugging Face's bf16 MLP (act_fn(gate) * up): silu(gate) is rounded to bf16,
// then the product is rounded again (kernels/cuda/fused_act.h, shared with the fused down
// projection in gemv.cu). Grid-stride over all n*h outputs, two per thread when h is
// even (bf16x2 loads); memory-bound.
#include "kernels/cuda/device.h"
#include "kernels/cuda/fused_act.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

__global__ void kc_silu_mul_pair(uint32_t *out /* [n, h/2] */, const uint32_t *gate_up /* [n, h] */,
                                 int n, int h2) {
    kc_pdl_begin();
    size_t total = (size_t)n * h2;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / h2, j = t % h2;
        out[t] = kc_silu_mul2(gate_up[i * 2 * h2 + j], gate_up[i * 2 * h2 + h2 + j]);
    }
}

__global__ void kc_silu_mul_scalar(bf16 *out /* [n, h] */, const bf16 *gate_up /* [n, 2h] */, int n,
                                   int h) {
    kc_pdl_begin();
    size_t total = (size_t)n * h;
    for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        size_t i = t / h, j = t % h;
        out[t] =
            kc_bf(kc_silu_mul1(kc_f(gate_up[i * 2 * h + j]), kc_f(gate_up[i * 2 * h + h + j])));
    }
}

// ---- launchers

extern "C" int kern_cuda_silu_mul(bf16 *out, const bf16 *gate_up, int n, int h, cudaStream_t s) {
    if (n < 0 || h <= 0) return err_set(ERR_INVAL, "silu_mul: bad sizes n=%d h=%d", n, h);
    if (n == 0) return 0;
    size_t total = (size_t)n * h;
    bool pair = h % 2 == 0 && ((uintptr_t)out % 4) == 0 && ((uintptr_t)gate_up % 4) == 0;
    size_t items = pair ? total / 2 : total;
    int blocks = (int)((items + 255) / 256 < 65536 ? (items + 255) / 256 : 65536);
    if (pair)
        kc_launch(kc_silu_mul_pair, blocks, 256, 0, s, (uint32_t *)out, (const uint32_t *)gate_up,
                  n, h / 2);
    else
        kc_launch(kc_silu_mul_scalar, blocks, 256, 0, s, out, gate_up, n, h);
    KC_LAUNCHED();
    return 0;
}

// Device-side activation arithmetic shared by the standalone op and the kernels that fuse it
// (kernels/cuda/*.cu only): one definition, so the fused and unfused paths round identically and
// their results agree bit for bit.
#ifndef KEEL_KERNELS_CUDA_FUSED_ACT_H
#define KEEL_KERNELS_CUDA_FUSED_ACT_H

#include "kernels/cuda/device.h"

// silu(g) * u as Hugging Face's bf16 MLP computes act_fn(gate) * up: silu(g) is rounded to bf16,
// then the product is computed in float32 (the caller rounds it where it is stored).
__device__ __forceinline__ float kc_silu_mul1(float g, float u) {
    float a = kc_round(g / (1.0f + expf(-g)));
    return a * u;
}

// Two packed bf16 pairs (low half first): bf16(silu(g) * u) for each.
__device__ __forceinline__ uint32_t kc_silu_mul2(uint32_t g, uint32_t u) {
    float lo = kc_silu_mul1(kc_f((bf16)(g & 0xffff)), kc_f((bf16)(u & 0xffff)));
    float hi = kc_silu_mul1(kc_f((bf16)(g >> 16)), kc_f((bf16)(u >> 16)));
    return (uint32_t)kc_bf(lo) | ((uint32_t)kc_bf(hi) << 16);
}

#endif

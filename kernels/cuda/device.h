// Device-side helpers shared by the kernel files (kernels/cuda/*.cu only; C code never includes
// this): bf16 loads and stores through CUDA's __nv_bfloat16, warp and block reductions, and the
// launch-shape checks every launcher performs.
#ifndef KEEL_KERNELS_CUDA_DEVICE_H
#define KEEL_KERNELS_CUDA_DEVICE_H

// common/err.h has no extern "C" block of its own; include it as C before cuda_check.h does.
extern "C" {
#include "common/err.h"
}
#include "common/cuda_check.h"
#include "kernels/bf16.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

// ---- bf16 conversions (round to nearest even, like the host's f32_to_bf16)

__device__ __forceinline__ float kc_ld(const bf16 *p) {
    return __bfloat162float(*reinterpret_cast<const __nv_bfloat16 *>(p));
}

__device__ __forceinline__ float kc_f(bf16 h) {
    return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ bf16 kc_bf(float f) {
    __nv_bfloat16 h = __float2bfloat16_rn(f);
    return *reinterpret_cast<bf16 *>(&h);
}

// Rounds a float to the nearest bf16 value and back: the precision loss a bf16 tensor imposes.
__device__ __forceinline__ float kc_round(float f) {
    return kc_f(kc_bf(f));
}

// ---- reductions

__device__ __forceinline__ float kc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float kc_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets the
// result. `red` is shared scratch of 32 floats; the call ends with the scratch free for reuse.
__device__ __forceinline__ float kc_block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = kc_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < n_warps ? red[lane] : 0.0f;
    t = kc_warp_sum(t);
    __syncthreads();
    return t;
}

// ---- launcher helpers

// The last launch's error, classified (every launcher ends with this).
#define KC_LAUNCHED() CUDA_CHECK(cudaGetLastError())

// Grid dimension limits: y and z stay below 65536.
#define KC_MAX_GRID_YZ 65535

#endif

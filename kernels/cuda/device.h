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
#include <utility>

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

// ---- tensor cores and asynchronous copies (the attention kernels)

// d += A . B on tensor cores, mma.m16n8k16 (bf16 in, float32 accumulate), in PTX's fragment
// layouts (groupID = lane / 4, thread-in-group = lane % 4): a0..a3 the 16 x 16 A tile (rows g,
// g + 8; k 2t.., 2t + 8..), b0 b1 the 16 x 8 B tile (k 2t.., 2t + 8..; column g), d rows g, g + 8.
__device__ __forceinline__ void kc_mma_bf16(float *d, uint32_t a0, uint32_t a1, uint32_t a2,
                                            uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair (lo in the low half), each rounded like kc_bf.
__device__ __forceinline__ uint32_t kc_pack_bf16x2(float lo, float hi) {
    return (uint32_t)kc_bf(lo) | ((uint32_t)kc_bf(hi) << 16);
}

// Closes the cp.async copies issued so far into one group; waits until at most N groups fly.
__device__ __forceinline__ void kc_cp_async_commit(void) {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void kc_cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- programmatic dependent launch (PDL, sm_90+)
//
// A kernel launched with kc_launch while PDL is on may start while the kernel before it in the
// stream is still running (cudaLaunchAttributeProgrammaticStreamSerialization; stream capture
// keeps it as a programmatic graph edge), so its launch and first loads overlap the previous
// kernel's tail instead of following its drain. The price is a rule every such kernel keeps: it
// calls kc_pdl_wait() on every path of every block before its first read of anything an earlier
// kernel may have written and before its first global write; only weights (never written while
// serving) may be read before it. Every block waits, idle ones too, so a grid never completes
// before its predecessor has: the kernel after it, which waits only for this one, inherits the
// whole chain. Without the attribute (PDL off, older GPUs) the wait returns at once.

// Blocks until the grids this one depends on have completed and their writes are visible.
__device__ __forceinline__ void kc_pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel's blocks be scheduled once every block of this grid has called it or
// exited. It carries no memory guarantee (the dependent's kc_pdl_wait still waits for this grid
// to complete and flush), so it is safe anywhere; it only helps where little work is left.
__device__ __forceinline__ void kc_pdl_trigger(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// The start of a kernel with no weights worth loading early: wait for the previous grids, then
// let the next kernel's blocks in at once (they wait for this grid in turn), so the next launch
// and its weight loads overlap this kernel's whole run instead of following its drain.
__device__ __forceinline__ void kc_pdl_begin(void) {
    kc_pdl_wait();
    kc_pdl_trigger();
}

// Whether launches carry the PDL attribute (kernels/cuda/pdl.cu): KEEL_PDL=0 turns it off, it is
// on by default where the device's compute capability is 9.0 or higher; decided once per process
// (kern_cuda_set_pdl in kern_cuda.h overrides it for tests).
extern "C" int kern_cuda_pdl_enabled(void);

// Launches kernel<<<grid, block, smem, s>>>(args...), with the PDL attribute when PDL is on and
// `pdl` is true (kc_launch: always asked for). Only for kernels that call kc_pdl_wait() as
// described above. The launch's error, if any, is left for KC_LAUNCHED() as a <<<>>> launch's
// would be.
template <typename... P, typename... A>
static inline void kc_launch_if(bool pdl, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                                cudaStream_t s, A &&...args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = pdl && kern_cuda_pdl_enabled() ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

template <typename... P, typename... A>
static inline void kc_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                             cudaStream_t s, A &&...args) {
    kc_launch_if(true, kernel, grid, block, smem, s, std::forward<A>(args)...);
}

// ---- launcher helpers

// The last launch's error, classified (every launcher ends with this).
#define KC_LAUNCHED() CUDA_CHECK(cudaGetLastError())

// Grid dimension limits: y and z stay below 65536.
#define KC_MAX_GRID_YZ 65535

#endif

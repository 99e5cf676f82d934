// CPU emulation of the few CUDA features kernels/cuda/sample.cu uses: one block at a time, 1024
// pthreads, barriers for __syncthreads and for every warp collective.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
extern "C" {
#include "common/err.h"
}
#include "kernels/ops.h"
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
using std::max;
using std::min;
struct emu_dim {
    unsigned x;
};
static thread_local emu_dim threadIdx;
static emu_dim blockIdx;
static pthread_barrier_t emu_block;
static pthread_barrier_t emu_warp[32];
static uint64_t emu_slot[32][32];
static inline void __syncthreads() {
    pthread_barrier_wait(&emu_block);
}
template <class T> static inline uint64_t emu_bits(T v) {
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <class T> static inline T emu_from(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
template <class T> static inline T emu_xchg(T v, int src, bool valid) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    emu_slot[w][lane] = emu_bits(v);
    pthread_barrier_wait(&emu_warp[w]);
    T r = valid ? emu_from<T>(emu_slot[w][src]) : v;
    pthread_barrier_wait(&emu_warp[w]);
    return r;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int o) {
    return emu_xchg(v, (threadIdx.x & 31) ^ o, true);
}
template <class T> static inline T __shfl_up_sync(unsigned, T v, int o) {
    int l = threadIdx.x & 31;
    return emu_xchg(v, l - o, l - o >= 0);
}
template <class T> static inline T __shfl_sync(unsigned, T v, int s) {
    return emu_xchg(v, s & 31, true);
}
static inline unsigned __ballot_sync(unsigned, int pred) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    emu_slot[w][lane] = pred ? 1 : 0;
    pthread_barrier_wait(&emu_warp[w]);
    unsigned r = 0;
    for (int l = 0; l < 32; l++)
        r |= (unsigned)emu_slot[w][l] << l;
    pthread_barrier_wait(&emu_warp[w]);
    return r;
}
static inline int atomicAdd(int *p, int v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
static inline double atomicAdd(double *p, double v) {
    uint64_t *q = (uint64_t *)p, old = __atomic_load_n(q, __ATOMIC_SEQ_CST);
    for (;;) {
        uint64_t nw = emu_bits(emu_from<double>(old) + v);
        if (__atomic_compare_exchange_n(q, &old, nw, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return emu_from<double>(old);
    }
}
static inline int atomicMax(int *p, int v) {
    int o = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (o < v &&
           !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return o;
}
static inline int atomicMin(int *p, int v) {
    int o = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (o > v &&
           !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return o;
}
static inline uint32_t __float_as_uint(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float __fmul_rn(float a, float b) {
    return a * b;
}
static inline float __fsub_rn(float a, float b) {
    return a - b;
}
static inline float __fadd_rn(float a, float b) {
    return a + b;
}
static inline int __ffs(unsigned x) {
    return __builtin_ffs((int)x);
}
static inline int __clz(unsigned x) {
    return x ? __builtin_clz(x) : 32;
}

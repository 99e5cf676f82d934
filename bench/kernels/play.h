// Kernel playgrounds' shared helpers: the two measured ceilings (device-to-device copy
// bandwidth, counting bytes read plus written, and an 8192^3 bf16 GEMM through keel's cuBLASLt
// path), median timing with CUDA events after a warm-up, and the result line
// `variant | time | GB/s or TFLOP/s | % of measured peak`. Playgrounds may allocate (cudaMalloc):
// they are tools, not keel.
#ifndef KEEL_BENCH_KERNELS_PLAY_H
#define KEEL_BENCH_KERNELS_PLAY_H

extern "C" {
#include "common/err.h"
}
#include "kernels/cuda/kern_cuda.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <vector>

#define PLAY_CUDA(call)                                                                            \
    do {                                                                                           \
        cudaError_t play__e = (call);                                                              \
        if (play__e != cudaSuccess) {                                                              \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                          \
                    cudaGetErrorString(play__e));                                                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define PLAY_OK(call)                                                                              \
    do {                                                                                           \
        int play__rc = (call);                                                                     \
        if (play__rc) {                                                                            \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, err_msg());              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static inline void *play_dev(size_t bytes) {
    void *p;
    PLAY_CUDA(cudaMalloc(&p, bytes));
    return p;
}

// Fills with random bf16 in [-scale, scale) (never zeros: they run faster than real data).
__global__ void play_fill_kernel(bf16 *p, size_t n, float scale, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed;
        x ^= x >> 13;
        x *= 0x5bd1e995u;
        x ^= x >> 15;
        float f = ((x & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * scale;
        __nv_bfloat16 h = __float2bfloat16(f);
        p[i] = *reinterpret_cast<bf16 *>(&h);
    }
}

static inline void play_fill(bf16 *p, size_t n, float scale, unsigned seed) {
    play_fill_kernel<<<1024, 256>>>(p, n, scale, seed);
    PLAY_CUDA(cudaGetLastError());
    PLAY_CUDA(cudaDeviceSynchronize());
}

// Median milliseconds of `reps` runs of fn(i) on stream s, after `warm` runs.
template <typename F> static float play_time(cudaStream_t s, int warm, int reps, F fn) {
    for (int i = 0; i < warm; i++)
        fn(i);
    cudaEvent_t a, b;
    PLAY_CUDA(cudaEventCreate(&a));
    PLAY_CUDA(cudaEventCreate(&b));
    std::vector<float> ms;
    for (int i = 0; i < reps; i++) {
        PLAY_CUDA(cudaEventRecord(a, s));
        fn(i);
        PLAY_CUDA(cudaEventRecord(b, s));
        PLAY_CUDA(cudaEventSynchronize(b));
        float t;
        PLAY_CUDA(cudaEventElapsedTime(&t, a, b));
        ms.push_back(t);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

struct play_peaks {
    double copy_gbs; // device-to-device copy, bytes read + written
    double gemm_tflops;
};

static inline struct play_peaks play_measure_peaks(struct kern_ctx *c) {
    struct play_peaks p;
    cudaStream_t s = kern_cuda_stream(c);
    size_t bytes = (size_t)1 << 30;
    void *x = play_dev(bytes), *y = play_dev(bytes);
    PLAY_CUDA(cudaMemsetAsync(x, 0x3c, bytes, s));
    float ms = play_time(s, 3, 10, [&](int) {
        PLAY_CUDA(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, s));
    });
    p.copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
    cudaFree(x);
    cudaFree(y);
    int n = 8192;
    bf16 *a = (bf16 *)play_dev((size_t)n * n * 2), *b = (bf16 *)play_dev((size_t)n * n * 2),
         *o = (bf16 *)play_dev((size_t)n * n * 2);
    play_fill(a, (size_t)n * n, 1.0f, 1);
    play_fill(b, (size_t)n * n, 1.0f, 2);
    ms = play_time(s, 3, 10, [&](int) { PLAY_OK(kern_cuda_gemm(c, o, a, b, NULL, n, n, n)); });
    p.gemm_tflops = 2.0 * n * n * (double)n / (ms * 1e-3) / 1e12;
    cudaFree(a);
    cudaFree(b);
    cudaFree(o);
    printf("measured peaks: copy %.0f GB/s (read + write), bf16 GEMM 8192^3 %.0f TFLOP/s\n\n",
           p.copy_gbs, p.gemm_tflops);
    return p;
}

static inline struct kern_ctx *play_ctx(void) {
    size_t ws = 64u << 20;
    void *w = play_dev(ws);
    struct kern_ctx *c;
    PLAY_OK(kern_cuda_ctx_init(&c, 0, w, ws, NULL, 0));
    return c;
}

static inline void play_header(void) {
    printf("%-52s | %9s | %14s | %s\n", "variant", "time", "rate", "% of measured peak");
    printf("%-52s-|-%9s-|-%14s-|-%s\n", "----------------------------------------------------",
           "---------", "--------------", "------------------");
}

// One line; the bound (copy or GEMM peak) is whichever the roofline says limits this case.
static inline void play_line(const char *variant, float ms, double bytes, double flops,
                             const struct play_peaks *pk) {
    double gbs = bytes / (ms * 1e-3) / 1e9, tfl = flops / (ms * 1e-3) / 1e12;
    double t_mem = bytes / (pk->copy_gbs * 1e9), t_math = flops / (pk->gemm_tflops * 1e12);
    char rate[32];
    double pct;
    if (t_mem >= t_math) {
        snprintf(rate, sizeof rate, "%8.0f GB/s", gbs);
        pct = 100.0 * gbs / pk->copy_gbs;
    } else {
        snprintf(rate, sizeof rate, "%6.1f TFLOP/s", tfl);
        pct = 100.0 * tfl / pk->gemm_tflops;
    }
    printf("%-52s | %6.1f us | %14s | %5.1f%%\n", variant, ms * 1e3, rate, pct);
}

#endif

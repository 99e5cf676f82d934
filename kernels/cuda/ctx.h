// The CUDA context's layout, shared by ctx.c, gemm.c and ops_table.c (internal to kernels/cuda).
// One per GPU, created at start-up by kern_cuda_ctx_init: the device, the engine's one stream,
// the one cuBLASLt handle, the arena regions given to it, and the GEMM plan cache.
#ifndef KEEL_KERNELS_CUDA_CTX_H
#define KEEL_KERNELS_CUDA_CTX_H

#include "kernels/ops.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>

// GEMM plans are cached by shape so that a step's GEMMs do no descriptor set-up or heuristic
// query once a shape has been seen: a fixed table (no allocation after start-up), open
// addressing over a short probe window, the oldest entry of the window evicted when full.
#define KERN_CUDA_GEMM_PLANS 512
#define KERN_CUDA_GEMM_PROBE 8

enum kern_cuda_gemm_kind {
    KERN_CUDA_GEMM_BF16 = 1,
    KERN_CUDA_GEMM_BIAS = 2,
    KERN_CUDA_GEMM_F32 = 3
};

struct kern_cuda_gemm_plan {
    int m, n, k, kind, align; // the key (m: the bucket, a power of two); kind 0 = empty slot
    unsigned long long used;  // the context's call counter when last used (eviction order)
    bool fused_bias;          // the bias goes through the epilogue (else kern_cuda_bias_add)
    // How the shape runs, chosen by timing the candidates once on the first call made outside a
    // graph capture (gemm.c): cuBLASLt's algorithm `algo`, or (m <= 8) keel's gemv kernel.
    bool settled;   // false: built during a capture, the heuristic's pick until measured
    bool gemv;      // kern_cuda_gemv instead of cuBLASLt
    int gemv_warps; // its warps per block
    cublasLtMatmulDescOpaque_t desc;
    cublasLtMatrixLayoutOpaque_t a; // w; the layouts of x and y are made per call (real m)
    cublasLtMatmulAlgo_t algo;
};

struct kern_ctx {
    int device;
    int n_sm; // multiprocessors, read once at start-up (split-KV sizing)
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *workspace; // arena region for cuBLASLt, workspace_bytes long
    size_t workspace_bytes;
    void *op_scratch; // arena region for kernels' temporaries, op_scratch_bytes long
    size_t op_scratch_bytes;
    bool sample_prob_cache; // the sample op caches probabilities (KEEL_SAMPLE_PROB_CACHE != 0)
    unsigned long long n_gemm_calls;
    int n_gemm_plans_built; // heuristic queries made (tests check that the cache works)
    struct kern_cuda_gemm_plan plans[KERN_CUDA_GEMM_PLANS];
};

// Plans built so far (each one a heuristic query); for tests.
int kern_cuda__gemm_plans_built(const struct kern_ctx *c);

#endif

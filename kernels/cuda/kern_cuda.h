// The CUDA backend's launchers: one per op, each in its own kernels/cuda/<op>.cu. They take
// device pointers, sizes and the stream; check shapes; launch; and return 0 or a negative ERR_*
// code (ERR_INVAL for bad sizes, CUDA launch errors classified by CUDA_CHECK). They never
// allocate, synchronize, print or read globals. kern_cuda_ops (kernels/cuda/ops_table.c) wraps
// them with the context's stream; tests and playgrounds call them directly.
//
// Everything is bf16 in device memory, row-major, with float32 arithmetic; index arrays are int32
// in device memory. The op contracts are those of kernels/ops.h.
#ifndef KEEL_KERNELS_CUDA_KERN_CUDA_H
#define KEEL_KERNELS_CUDA_KERN_CUDA_H

#include "kernels/bf16.h"
#include "kernels/ops.h"

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Programmatic dependent launch on the decode path's kernels (kernels/cuda/device.h): whether
// it is on, and a switch for tests: 1 turns it on where the device supports it (compute
// capability >= 9.0; otherwise it stays off), 0 off, -1 back to the default (on for sm_90+ unless
// KEEL_PDL=0). Returns the state now in force. Graphs keep the state they were captured with.
int kern_cuda_pdl_enabled(void);
int kern_cuda_set_pdl(int on);

int kern_cuda_embed(bf16 *out /* [n, dim] */, const int32_t *ids /* [n] */,
                    const bf16 *table /* [vocab, dim] */, int n, int dim, cudaStream_t s);

int kern_cuda_add_rmsnorm(bf16 *out /* [n, dim] */, bf16 *residual /* [n, dim] */,
                          const bf16 *delta /* [n, dim] or NULL */, const bf16 *w /* [dim] */,
                          int n, int dim, float eps, cudaStream_t s);

// The same with the new residual written to res_out (may equal residual; otherwise residual is
// only read): bf16(residual + delta), or a copy of residual when delta is NULL.
int kern_cuda_add_rmsnorm_to(bf16 *out /* [n, dim] */, bf16 *res_out /* [n, dim] */,
                             const bf16 *residual /* [n, dim] */,
                             const bf16 *delta /* [n, dim] or NULL */, const bf16 *w /* [dim] */,
                             int n, int dim, float eps, cudaStream_t s);

// y[i, :] += bias (rounded to bf16): the fallback when cuBLASLt has no bias epilogue for a shape.
int kern_cuda_bias_add(bf16 *y /* [m, n] */, const bf16 *bias /* [n] */, int m, int n,
                       cudaStream_t s);

int kern_cuda_qk_norm(bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                      const bf16 *q_w /* [head_dim] */, const bf16 *k_w /* [head_dim] */, int n,
                      int n_heads, int n_kv_heads, int head_dim, float eps, cudaStream_t s);

int kern_cuda_rope(bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                   const int32_t *positions /* [n] */, int n, int n_heads, int n_kv_heads,
                   int head_dim, float theta, cudaStream_t s);

int kern_cuda_kv_write(bf16 *k_cache /* [n_blocks, block_size, n_kv, head_dim] */,
                       bf16 *v_cache /* same */,
                       const bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                       const int32_t *slot_mapping /* [n] */, int n, int n_heads, int n_kv_heads,
                       int head_dim, cudaStream_t s);

// Paged causal attention over a mixed batch (kernels/ops.h). Supported head_dim: 64, 128, 256.
// kern_cuda_attention_setup raises the kernels' shared-memory limit; the context calls it once
// at start-up (never per step). `scratch` (the context's op_scratch, may be NULL) holds split-KV
// partials when the batch is too small to fill the GPU's n_sm multiprocessors; with less scratch
// than kern_cuda_attention_scratch_bytes() the kernel splits less (or not at all), never fails.
#define KERN_CUDA_ATT_MAX_SPLITS 32
int kern_cuda_attention_setup(void);
size_t kern_cuda_attention_scratch_bytes(int max_tokens, int n_heads, int head_dim);
int kern_cuda_attention(bf16 *out /* [n_tokens, n_heads * head_dim] */,
                        const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * head_dim] */,
                        const bf16 *k_cache, const bf16 *v_cache, const struct kern_attn_batch *b,
                        int n_heads, int n_kv_heads, int head_dim, int block_size, float scale,
                        void *scratch, size_t scratch_bytes, int n_sm, cudaStream_t s);

// The two paths kern_cuda_attention chooses between, for tests and playgrounds: CUDA cores (any
// supported head_dim; split-KV through scratch) and tensor cores (attention_tc.cu; head_dim 64
// or 128, no split). Same contract as kern_cuda_attention.
int kern_cuda__attention_cc(bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,
                            const struct kern_attn_batch *b, int n_heads, int n_kv_heads,
                            int head_dim, int block_size, float scale, void *scratch,
                            size_t scratch_bytes, int n_sm, cudaStream_t s);
int kern_cuda__attention_tc(bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,
                            const struct kern_attn_batch *b, int n_heads, int n_kv_heads,
                            int head_dim, int block_size, float scale, cudaStream_t s);
int kern_cuda__attention_tc_setup(void);

// qk_norm (when q_w != NULL) + rope + kv_write in one launch (fused_qk_rope_kv.cu), equal bit for
// bit to the three launchers in turn. head_dim must be a multiple of 64, at most 256
// (kern_cuda_qk_rope_kv_supported); otherwise ERR_UNSUPPORTED.
int kern_cuda_qk_rope_kv(bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */, bf16 *k_cache,
                         bf16 *v_cache, const bf16 *q_w /* [head_dim] or NULL */,
                         const bf16 *k_w /* [head_dim] or NULL */,
                         const int32_t *positions /* [n] */, const int32_t *slot_mapping /* [n] */,
                         int n, int n_heads, int n_kv_heads, int head_dim, float eps, float theta,
                         cudaStream_t s);
static inline int kern_cuda_qk_rope_kv_supported(int head_dim) {
    return head_dim > 0 && head_dim % 64 == 0 && head_dim <= 256;
}

int kern_cuda_silu_mul(bf16 *out /* [n, h] */, const bf16 *gate_up /* [n, 2h] */, int n, int h,
                       cudaStream_t s);

int kern_cuda_gather_rows(bf16 *out /* [m, dim] */, const bf16 *x /* [*, dim] */,
                          const int32_t *rows /* [m] */, int m, int dim, cudaStream_t s);

// Greedy sampling on the GPU: ids[i] = argmax_j logits[i, j] (the lowest index among ties), so
// only token ids cross to the host.
int kern_cuda_argmax(int32_t *ids /* [m] */, const float *logits /* [m, vocab] */, int m, int vocab,
                     cudaStream_t s);

// The sample op (kernels/ops.h) on device rows: one block per row. d_out, d_params, d_adj and
// d_orig (the raw logits of adjusted ids, [n_adj]) are device memory; logits are changed while
// the kernel runs and restored before it ends. Rows < n_pcache that truncate keep their
// probabilities in d_pcache [n_pcache, vocab] instead of recomputing them on every pass (the
// same results, faster); n_pcache 0 turns the cache off.
int kern_cuda_sample(struct kern_sample_out *d_out /* [m] */, float *logits /* [m, vocab] */, int m,
                     int vocab, const struct kern_sample_params *d_params /* [m] */,
                     const struct kern_sample_adj *d_adj /* [n_adj] */, float *d_orig /* [n_adj] */,
                     float *d_pcache /* [n_pcache, vocab] */, int n_pcache, cudaStream_t s);
// Device bytes the op needs in op_scratch for m rows and n_adj adjustments.
size_t kern_cuda_sample_scratch_bytes(int m, int n_adj);
// The whole op over host params/adj and host out: copies in, the kernel, copies out, waits.
// ERR_NOSPACE when scratch_bytes < kern_cuda_sample_scratch_bytes(m, n_adj).
// prob_cache: give truncating rows a probability cache from the scratch left over (the context
// turns it off with KEEL_SAMPLE_PROB_CACHE=0).
int kern_cuda__sample_op(void *scratch, size_t scratch_bytes, struct kern_sample_out *out,
                         float *logits, int m, int vocab, const struct kern_sample_params *params,
                         const struct kern_sample_adj *adj, int n_adj, bool prob_cache,
                         cudaStream_t s);

// Binds (or re-binds) the context's arena regions. Start-up order that keeps every byte inside
// the budget: kern_cuda_ctx_init(&c, dev, NULL, 0, NULL, 0) first (the cuBLASLt handle and the
// kernels' set-up take a few MiB of device memory), then measure the overhead, compute the plan,
// make the arena, carve the workspace and scratch, and hand them over here. Waits for the stream;
// start-up only. Returns 0 or ERR_INVAL (a region that is not 256-byte aligned, or NULL with a
// size).
int kern_cuda_ctx_set_regions(struct kern_ctx *c, void *workspace, size_t workspace_bytes,
                              void *op_scratch, size_t op_scratch_bytes);

// The context's stream and cuBLASLt GEMMs (kernels/cuda/ctx.c, gemm.c), for tests and tools.
cudaStream_t kern_cuda_stream(struct kern_ctx *c);
int kern_cuda_gemm(struct kern_ctx *c, bf16 *y /* [m, n] */, const bf16 *x /* [m, k] */,
                   const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */, int m, int n,
                   int k);
int kern_cuda_gemm_f32(struct kern_ctx *c, float *y /* [m, n] */, const bf16 *x /* [m, k] */,
                       const bf16 *w /* [n, k] */, int m, int n, int k);

// Thin GEMM for decode (kernels/cuda/gemv.cu): y[m, n] = x[m, k] . w[n, k]^T (+ bias) for
// 1 <= m <= KERN_CUDA_GEMV_MAX_M, y bf16 (y_f32 = 0) or float32 (y_f32 = 1), one rounding after
// the bias. `warps` per block splits k inside a block (0 = kern_cuda_gemv_default_warps(k), at
// most 8). Any n, k and alignment (a slower element-wise path when k % 8 or the alignment of x or
// w is not 16 bytes). kern_cuda_gemm chooses it for small m where it measures faster.
#define KERN_CUDA_GEMV_MAX_M 8
int kern_cuda_gemv(void *y /* [m, n] */, int y_f32, const bf16 *x /* [m, k] */,
                   const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */, int m, int n,
                   int k, int warps, cudaStream_t s);
int kern_cuda_gemv_default_warps(int k);
// The fused down projection: y[m, n] = silu_mul(gate_up)[m, h] . w[n, h]^T, bf16 out, no bias,
// 1 <= m <= KERN_CUDA_GEMV_MAX_M; equal bit for bit to kern_cuda_silu_mul then kern_cuda_gemv
// with the same warps (kernels/cuda/gemv.cu).
int kern_cuda_gemv_silu(bf16 *y /* [m, n] */, const bf16 *gate_up /* [m, 2h] */,
                        const bf16 *w /* [n, h] */, int m, int n, int h, int warps, cudaStream_t s);
// The fused residual add + RMSNorm + projection (gemv.cu): res_out = bf16(residual + delta)
// (residual when delta is NULL), y = add_rmsnorm's out . w^T (+ bias), bf16 y, 1 <= m <= 8,
// without the normed row ever stored. res_out may not alias residual or delta. Equal to
// kern_cuda_add_rmsnorm_to then kern_cuda_gemv up to the order of the sum of squares (the inverse
// RMS may differ in its last bit; res_out is exact).
int kern_cuda_gemv_add_rmsnorm(bf16 *y /* [m, n] */, bf16 *res_out /* [m, k] */,
                               const bf16 *residual /* [m, k] */,
                               const bf16 *delta /* [m, k] or NULL */, const bf16 *norm_w /* [k] */,
                               const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */,
                               int m, int n, int k, float eps, int warps, cudaStream_t s);
// The fused decode projections of kernels/ops.h's struct kern_proj, one gemv launch each
// (kc_gemv's NORMP input and ROPE / RES outputs), for 1 <= m <= KERN_CUDA_GEMV_MAX_M; n_sm picks
// the warps per block. ERR_INVAL for a bad combination, ERR_UNSUPPORTED for a norm over more
// than 8192 columns.
int kern_cuda_proj(const struct kern_proj *p, int n_sm, cudaStream_t s);
// sums[0] = sum (a - b)^2, sums[1] = sum b^2 over `count` bf16 (f32 = 0) or float32 values
// (device pointers; sums is zeroed first): the GEMM tuner checks a gemv against cuBLASLt with it.
int kern_cuda__gemv_diff(const void *a, const void *b, int f32, size_t count, float *sums /* [2] */,
                         cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif

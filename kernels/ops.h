// The op table: every operation the forward pass needs, implemented once per backend
// (kernels/cpu: the plain-C reference; kernels/cuda: the product). The forward pass (models/)
// calls only these, so the same network code runs on both.
//
// Conventions, for every op:
// - Pointers are backend memory: host memory for the CPU backend, device memory for CUDA.
//   Index arrays (ids, positions, slot_mapping, attention metadata) are int32 in backend memory.
// - Activations and weights are bf16, row-major; arithmetic accumulates in float32.
// - Ops run in order on the backend's one stream; they never allocate, synchronize or print.
// - Each returns 0 or a negative ERR_* code (CUDA launch errors, classified; bad sizes: ERR_INVAL).
//
// KV cache layout, per layer: k_cache and v_cache are each
//   [n_blocks, block_size, n_kv_heads, head_dim]
// and a token's slot is block_id * block_size + offset_in_block (vLLM's slot_mapping).
// The fused QKV activation row of a token is [q (n_heads*head_dim) | k (n_kv*head_dim) | v (same)].
#ifndef KEEL_KERNELS_OPS_H
#define KEEL_KERNELS_OPS_H

#include "kernels/bf16.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// What attention needs to know about one scheduled batch of variable-length spans. Sequence i
// contributes query tokens [query_start[i], query_start[i+1]) of the batch; its context (cached
// plus new tokens) is seq_lens[i] long, so its first new token sits at position
// seq_lens[i] - (query_start[i+1] - query_start[i]). Query token at position p attends to keys at
// positions 0..p (causal). Prefill chunks and single decode tokens mix freely.
struct kern_attn_batch {
    int n_seqs;
    int n_tokens;                // == query_start[n_seqs]
    const int32_t *query_start;  // [n_seqs + 1], backend memory
    const int32_t *seq_lens;     // [n_seqs], backend memory
    const int32_t *block_tables; // [n_seqs, max_blocks_per_seq], backend memory
    int max_blocks_per_seq;
    int max_query_len; // host-side hints for launch shapes
    int max_seq_len;
};

// ---- sampling (the `sample` op)
//
// One row per sequence that samples this step. The semantics are vLLM's, in its order:
//   ban ids (flag KERN_SAMPLE_BANNED: min_tokens) and apply penalties (repetition once per
//   distinct token of prompt and output; frequency * count + presence for tokens the output
//   holds) -> greedy (lowest id among equal maxima) when temperature < KERN_SAMPLE_EPS ->
//   p = exp((w - max) / T) -> min_p (keep p >= min_p; p of the best is 1) -> top_k -> top_p
//   -> draw.
// Truncation ranks candidates by (p descending, id ascending), so ties never depend on an
// algorithm's internal order; top_p keeps the shortest such prefix whose mass reaches top_p of
// the mass left after top_k. The draw walks the kept ids in ascending id order and picks the
// first whose running mass exceeds u * (kept mass): every backend can do that without sorting,
// and the same u gives the same token up to the rounding of the sums.
// Logprobs are raw: log_softmax of the logits before penalties, temperature or truncation, over
// ids [0, n_valid); the top ones are ordered by (logprob descending, id ascending).
#define KERN_SAMPLE_EPS 1e-5f  // temperatures below this are greedy (vLLM's _SAMPLING_EPS)
#define KERN_SAMPLE_MAX_TOP 20 // most top logprobs a row can ask for (OpenAI's limit)
#define KERN_SAMPLE_HISTORY 1  // kern_sample_adj.flags: the token is in prompt or output
#define KERN_SAMPLE_BANNED 2   // kern_sample_adj.flags: the token may not be drawn this step

struct kern_sample_params {
    float temperature;        // < KERN_SAMPLE_EPS: greedy
    float top_p;              // (0, 1]; 1 = off
    float min_p;              // [0, 1]; 0 = off
    int32_t top_k;            // <= 0: off
    int32_t n_valid;          // ids >= n_valid are never drawn; 0: skip the row (token -1)
    int32_t n_logprobs;       // -1: none; else the sampled token's logprob + this many top ones
    float u;                  // uniform in [0, 1) from the sequence's own RNG (unused if greedy)
    float repetition_penalty; // 1 = off
    float frequency_penalty, presence_penalty;
    int32_t adj_start, n_adj; // this row's entries of the adjustments array
};

// A sparse per-row adjustment: one entry per distinct id (the host merges duplicates).
struct kern_sample_adj {
    int32_t id;
    int32_t count; // occurrences in the output so far (frequency and presence penalties)
    int32_t flags; // KERN_SAMPLE_HISTORY | KERN_SAMPLE_BANNED
};

struct kern_sample_out {
    int32_t token;  // the sampled id; -1 for a skipped row or when status != 0
    int32_t status; // 0, or ERR_INVAL when every token is suppressed
    float logprob;  // raw logprob of token (n_logprobs >= 0)
    int32_t n_top;  // == max(n_logprobs, 0), capped at n_valid
    int32_t top_id[KERN_SAMPLE_MAX_TOP];
    float top_lp[KERN_SAMPLE_MAX_TOP];
};

// Backend state (CPU: thread count; CUDA: device, stream, cuBLAS handle, workspace). Opaque here.
// A decode projection with its neighbours fused in (the optional `proj` op below):
//   input  (exactly one): x [m, k]; or silu_mul(gate_up) [m, 2k] (silu_mul's roundings); or
//          add_rmsnorm(norm_in, no delta) * norm_w [m, k], whose row statistics stats_in a
//          residual-writing proj left (so the norm needs no pass of its own);
//   output (exactly one): y [m, n] = the product (+ bias), bf16; or residual [m, n] += the
//          product (rounded to bf16 first, as gemm then add_rmsnorm's add), in place, with the
//          rows' statistics written to stats_out for the next normed input;
//   rope   (with y only, optional): y is fused QKV rows; qk_rope_kv without the q/k norm runs on
//          them (bit for bit), so the q and k heads come out rotated and k, v are in the cache.
// stats_in/stats_out are backend scratch of at least m * KERN_PROJ_STATS_PER_ROW(dim) floats:
// opaque, valid only from a residual-writing proj to the next normed one of the same rows.
#define KERN_PROJ_STATS_PER_ROW(dim) (((dim) + 15) / 16)
struct kern_rope_kv {
    bf16 *k_cache, *v_cache;                 // [slots, n_kv_heads, head_dim]
    const int32_t *positions, *slot_mapping; // [m]; a negative slot stores nothing
    int n_heads, n_kv_heads, head_dim;
    float theta;
};
struct kern_proj {
    int m, n, k;
    const bf16 *w /* [n, k] */, *bias /* [n] or NULL */;
    const bf16 *x, *gate_up, *norm_in, *norm_w;
    const float *stats_in;
    float eps;
    bf16 *y, *residual;
    float *stats_out;
    const struct kern_rope_kv *rope;
    int warps; // CUDA: warps per block, 0 = the backend's choice (tests set it)
};

struct kern_ctx;

struct kern_ops {
    const char *name; // "cpu" or "cuda"

    // out[i, :] = table[ids[i], :]
    int (*embed)(struct kern_ctx *c, bf16 *out /* [n, dim] */, const int32_t *ids /* [n] */,
                 const bf16 *table /* [vocab, dim] */, int n, int dim);

    // Fused residual add + RMSNorm (vLLM's fused_add_rms_norm):
    //   if delta != NULL: residual += delta (rounded to bf16)
    //   out = residual / sqrt(mean(residual^2) + eps) * w
    // out may not alias residual or delta.
    int (*add_rmsnorm)(struct kern_ctx *c, bf16 *out /* [n, dim] */, bf16 *residual /* [n, dim] */,
                       const bf16 *delta /* [n, dim] or NULL */, const bf16 *w /* [dim] */, int n,
                       int dim, float eps);

    // y = x · w^T (+ bias): bf16 in and out, float32 accumulation.
    int (*gemm)(struct kern_ctx *c, bf16 *y /* [m, n] */, const bf16 *x /* [m, k] */,
                const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */, int m, int n,
                int k);

    // The same with float32 output, for logits.
    int (*gemm_f32)(struct kern_ctx *c, float *y /* [m, n] */, const bf16 *x /* [m, k] */,
                    const bf16 *w /* [n, k] */, int m, int n, int k);

    // Qwen3: RMSNorm over head_dim of every q head (weight q_w) and k head (weight k_w), in place
    // inside the fused QKV rows.
    int (*qk_norm)(struct kern_ctx *c, bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                   const bf16 *q_w /* [head_dim] */, const bf16 *k_w /* [head_dim] */, int n,
                   int n_heads, int n_kv_heads, int head_dim, float eps);

    // Rotary embedding as Hugging Face Qwen/Llama apply it (rotate_half: pairs (i, i + head_dim/2),
    // inv_freq[i] = theta^(-2i/head_dim)), in place on q and k inside the fused QKV rows.
    int (*rope)(struct kern_ctx *c, bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                const int32_t *positions /* [n] */, int n, int n_heads, int n_kv_heads,
                int head_dim, float theta);

    // Copies each token's k and v (from the fused QKV rows) into its cache slot. A negative slot
    // means "do not store" (padding).
    int (*kv_write)(struct kern_ctx *c, bf16 *k_cache, bf16 *v_cache,
                    const bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                    const int32_t *slot_mapping /* [n] */, int n, int n_heads, int n_kv_heads,
                    int head_dim);

    // Causal attention over the paged cache for a mixed batch (see kern_attn_batch); the keys
    // and values of the batch's own tokens must already be written (kv_write). GQA: query head h
    // uses kv head h / (n_heads / n_kv_heads). out = softmax(q·k^T * scale) · v.
    int (*attention)(struct kern_ctx *c, bf16 *out /* [n_tokens, n_heads * head_dim] */,
                     const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * head_dim] */,
                     const bf16 *k_cache, const bf16 *v_cache, const struct kern_attn_batch *b,
                     int n_heads, int n_kv_heads, int head_dim, int block_size, float scale);

    // out = silu(gate) * up, where gate_up rows are [gate (h) | up (h)].
    int (*silu_mul)(struct kern_ctx *c, bf16 *out /* [n, h] */, const bf16 *gate_up /* [n, 2h] */,
                    int n, int h);

    // ---- fused ops (optional: NULL in a table means "run the composition instead")

    // y = silu_mul(gate_up) . w^T: the composition silu_mul then gemm (no bias), with the same
    // roundings (the bf16 hidden row). `hidden` [m, h] is scratch the op may use for the
    // intermediate; its contents afterwards are unspecified. The CUDA op fuses the two for
    // m <= 8 (decode), so the hidden row is never written and one launch goes.
    int (*gemm_silu)(struct kern_ctx *c, bf16 *y /* [m, n] */, bf16 *hidden /* [m, h] */,
                     const bf16 *gate_up /* [m, 2h] */, const bf16 *w /* [n, h] */, int m, int n,
                     int h);

    // The residual add + RMSNorm of the next sublayer's input, then its projection:
    //   res_out = bf16(residual + delta) (a copy of residual when delta is NULL)
    //   xn = add_rmsnorm's out (HF's roundings), y = xn . w^T (+ bias)
    // res_out is a different buffer from residual and delta (the forward pass ping-pongs the
    // residual stream between two buffers, so no kernel reads what another block writes);
    // `xn` [m, k] is scratch the op may use for the normed rows. The CUDA op fuses it all into
    // the gemv for m <= 8; elsewhere it is add_rmsnorm then gemm.
    int (*add_rmsnorm_gemm)(struct kern_ctx *c, bf16 *y /* [m, n] */, bf16 *res_out /* [m, k] */,
                            const bf16 *residual /* [m, k] */,
                            const bf16 *delta /* [m, k] or NULL */, const bf16 *norm_w /* [k] */,
                            const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */,
                            bf16 *xn /* [m, k] */, int m, int n, int k, float eps);

    // qk_norm (only when q_w != NULL; k_w must then be set too), then rope, then kv_write: the
    // composition of the three ops, same results bit for bit, in one op (one launch on CUDA).
    int (*qk_rope_kv)(struct kern_ctx *c, bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                      bf16 *k_cache, bf16 *v_cache, const bf16 *q_w /* [head_dim] or NULL */,
                      const bf16 *k_w /* [head_dim] or NULL */, const int32_t *positions /* [n] */,
                      const int32_t *slot_mapping /* [n] */, int n, int n_heads, int n_kv_heads,
                      int head_dim, float eps, float theta);

    // One decode projection with its neighbours (struct kern_proj), for m <= proj_max_m(c)
    // (0: never); the forward pass uses it for the decode steps of a single-device model.
    int (*proj)(struct kern_ctx *c, const struct kern_proj *p);
    int (*proj_max_m)(struct kern_ctx *c);

    // out[i, :] = x[rows[i], :] (the last position of each sequence, before the final norm).
    int (*gather_rows)(struct kern_ctx *c, bf16 *out /* [m, dim] */, const bf16 *x /* [*, dim] */,
                       const int32_t *rows /* [m] */, int m, int dim);

    // Host <-> backend copies on the backend's stream. to_host waits for the copy to finish
    // (it is the one synchronisation point of a step).
    int (*copy_to_backend)(struct kern_ctx *c, void *dst, const void *src, size_t bytes);
    int (*copy_to_host)(struct kern_ctx *c, void *dst, const void *src, size_t bytes);

    // Samples one token per row (the semantics above) and writes the outputs to host memory:
    // the one synchronisation point of a sampled step (it replaces copy_to_host of the logits).
    // logits are backend memory and may be changed during the op but hold their raw values again
    // when it returns; params and adj are host memory, copied to the backend by the op. CUDA
    // keeps everything it needs in the context's op_scratch (ERR_NOSPACE when the step's
    // adjustments do not fit it). A row's ERR_INVAL (nothing can be drawn) is its out.status,
    // not the op's return code.
    int (*sample)(struct kern_ctx *c, struct kern_sample_out *out /* [n_rows] host */,
                  float *logits /* [n_rows, vocab] */, int n_rows, int vocab,
                  const struct kern_sample_params *params /* [n_rows] host */,
                  const struct kern_sample_adj *adj /* [n_adj] host */, int n_adj);

    // Waits for all queued work (start-up, tests). Returns the first pending error.
    int (*sync)(struct kern_ctx *c);

    // Debugging only (KEEL_DEBUG_INJECT_FAULT): fails the way a sticky device fault does. CUDA
    // launches a kernel that traps, so the context really dies and the backend's own check
    // reports it (ERR_CUDA_FAULT); the CPU backend returns ERR_CUDA_FAULT as that check would.
    int (*debug_fault)(struct kern_ctx *c);
};

// The CPU reference backend (kernels/cpu). n_threads <= 0 means "all cores".
extern const struct kern_ops kern_cpu_ops;
int kern_cpu_ctx_init(struct kern_ctx **c, int n_threads);
void kern_cpu_ctx_free(struct kern_ctx *c);

// The CPU reference of one sampled row, for host code (server/sample.c) that samples host logits
// without a backend context. The scratch is one thread's: w [vocab] the processed logits (then
// probabilities), cand [vocab] candidates, block_mass [vocab / 256 + 1].
struct kern_sample_cand {
    float p;
    int32_t id;
};
struct kern_sample_scratch {
    int vocab;
    float *w;                      // [vocab]
    struct kern_sample_cand *cand; // [vocab]
    double *block_mass;            // [vocab / KERN_SAMPLE_BLOCK + 1]
};
#define KERN_SAMPLE_BLOCK 256
int kern_sample_scratch_init(struct kern_sample_scratch *s, int vocab); // ERR_NOMEM
void kern_sample_scratch_free(struct kern_sample_scratch *s);           // NULL-safe
// Samples one row of host logits (not modified) into *out; returns 0 or ERR_INVAL for bad sizes
// (an unsampleable row is out->status). n_valid must be <= s->vocab.
int kern_sample_row(struct kern_sample_out *out, const float *logits /* [>= n_valid] */,
                    const struct kern_sample_params *p, const struct kern_sample_adj *adj,
                    struct kern_sample_scratch *s);
// The sample op's argument check, shared by the backends: sizes, every row's n_valid, its slice
// of the adjustments and its logprob count. Returns 0 or ERR_INVAL naming the row ("who: ...").
int kern_sample_check(const char *who, int n_rows, int vocab,
                      const struct kern_sample_params *params, int n_adj);
// Raw logprobs of one row: log-sum-exp over [0, n_valid) and the n_top best (id, logprob).
double kern_sample_lse(const float *logits, int n_valid);
void kern_sample_top(const float *logits, int n_valid, int n_top, double lse,
                     int32_t *top_id /* [n_top] */, float *top_lp /* [n_top] */);

#ifdef KEEL_CUDA
// The CUDA backend (kernels/cuda). One context per GPU: one stream, one cuBLAS(Lt) handle bound to
// it, created here at start-up and never in a request path. cuBLAS gets `workspace` (an arena
// region) so it never allocates on its own; `op_scratch` (an arena region) is for kernels that
// need temporary space (split-KV attention partials, sampling). Nothing here allocates device
// memory.
extern const struct kern_ops kern_cuda_ops;
int kern_cuda_ctx_init(struct kern_ctx **c, int device, void *workspace, size_t workspace_bytes,
                       void *op_scratch, size_t op_scratch_bytes);
void kern_cuda_ctx_free(struct kern_ctx *c); // NULL-safe
// Start-up order that keeps every byte inside the budget: kern_cuda_ctx_init(&c, dev, NULL, 0,
// NULL, 0) first (the handle and kernel set-up take a few MiB), then measure free memory, plan,
// make the arena, and bind its regions here (kernels/cuda/kern_cuda.h has the details).
int kern_cuda_ctx_set_regions(struct kern_ctx *c, void *workspace, size_t workspace_bytes,
                              void *op_scratch, size_t op_scratch_bytes);
// Number of cuBLAS handles this process has created (the one-handle promise's test).
int kern_cuda_handle_count(void);
#endif

// Number of CUDA devices visible (0 in a CPU-only build or when none is present).
int kern_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif

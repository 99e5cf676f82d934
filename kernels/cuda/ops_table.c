// kern_cuda_ops: the op table of kernels/ops.h over the CUDA launchers, each bound to the
// context's stream. The launchers (kern_cuda.h) do the shape checks and the work.
#include "kernels/cuda/ctx.h"
#include "kernels/cuda/kern_cuda.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int kern_cuda__copy_to_backend(struct kern_ctx *c, void *dst, const void *src, size_t bytes);
int kern_cuda__copy_to_host(struct kern_ctx *c, void *dst, const void *src, size_t bytes);
int kern_cuda__sync(struct kern_ctx *c);
int kern_cuda__debug_fault(struct kern_ctx *c); // debug_fault.cu

static int op_embed(struct kern_ctx *c, bf16 *out, const int32_t *ids, const bf16 *table, int n,
                    int dim) {
    return kern_cuda_embed(out, ids, table, n, dim, c->stream);
}

static int op_add_rmsnorm(struct kern_ctx *c, bf16 *out, bf16 *residual, const bf16 *delta,
                          const bf16 *w, int n, int dim, float eps) {
    return kern_cuda_add_rmsnorm(out, residual, delta, w, n, dim, eps, c->stream);
}

static int op_qk_norm(struct kern_ctx *c, bf16 *qkv, const bf16 *q_w, const bf16 *k_w, int n,
                      int n_heads, int n_kv_heads, int head_dim, float eps) {
    return kern_cuda_qk_norm(qkv, q_w, k_w, n, n_heads, n_kv_heads, head_dim, eps, c->stream);
}

static int op_rope(struct kern_ctx *c, bf16 *qkv, const int32_t *positions, int n, int n_heads,
                   int n_kv_heads, int head_dim, float theta) {
    return kern_cuda_rope(qkv, positions, n, n_heads, n_kv_heads, head_dim, theta, c->stream);
}

static int op_kv_write(struct kern_ctx *c, bf16 *k_cache, bf16 *v_cache, const bf16 *qkv,
                       const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                       int head_dim) {
    return kern_cuda_kv_write(k_cache, v_cache, qkv, slot_mapping, n, n_heads, n_kv_heads, head_dim,
                              c->stream);
}

static int op_attention(struct kern_ctx *c, bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                        const bf16 *v_cache, const struct kern_attn_batch *b, int n_heads,
                        int n_kv_heads, int head_dim, int block_size, float scale) {
    return kern_cuda_attention(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, head_dim,
                               block_size, scale, c->op_scratch, c->op_scratch_bytes, c->n_sm,
                               c->stream);
}

static int op_silu_mul(struct kern_ctx *c, bf16 *out, const bf16 *gate_up, int n, int h) {
    return kern_cuda_silu_mul(out, gate_up, n, h, c->stream);
}

// ---- fused ops: each falls back to the composition when its switch is off or the shape is
// not one the fused kernel takes. KEEL_FUSE_SILU=0 and KEEL_FUSE_ROPE_KV=0 turn those off;
// the norm fusion is off unless KEEL_FUSE_NORM=1, because on the H100 it made decode slower
// (docs/PERF.md run 6: 7B 5.60 ms/step without it, 5.94 with it; Qwen3-8B 6.12 vs 6.24). The
// qk_norm + rope + kv_write fusion (3-6% faster decode, bit-identical to the three kernels at
// every size) takes steps of at most KEEL_FUSE_ROPE_KV_MAX_N tokens when that is set (default: all;
// run 6's "differences at 300 tokens" were the test's own colliding cache slots);
// KEEL_FUSE_SILU_MAX_M (default 4) and KEEL_FUSE_NORM_MAX_M (default 2) bound the batch the fused
// gemvs take. All are read per call: a host-side string scan, and graph replays
// do not call ops at all.

static bool op_env_off(const char *name) {
    const char *v = getenv(name);
    return v && strcmp(v, "0") == 0;
}

// The largest batch a fused gemv takes: `name` when set (0 = never), else `dflt`. The fused
// kernels redo per-block work that grows with m (every block stages all m rows: silu's special
// functions; the norm's re-read of the rows for its sums), so past a few rows the separate
// launches can win; bench/kernels/fused.cu measures both at m = 1, 2, 4, 8.
static int op_env_max_m(const char *name, int dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    int m = atoi(v);
    return m < 0 ? 0 : m > KERN_CUDA_GEMV_MAX_M ? KERN_CUDA_GEMV_MAX_M : m;
}

static int op_gemm_silu(struct kern_ctx *c, bf16 *y, bf16 *hidden, const bf16 *gate_up,
                        const bf16 *w, int m, int n, int h) {
    // The fused kernel is the gemv: it goes off with the gemv (KEEL_GEMV=0) too.
    if (m >= 1 && m <= op_env_max_m("KEEL_FUSE_SILU_MAX_M", 4) && !op_env_off("KEEL_FUSE_SILU") &&
        !op_env_off("KEEL_GEMV"))
        return kern_cuda_gemv_silu(y, gate_up, w, m, n, h, 0, c->stream);
    int rc = kern_cuda_silu_mul(hidden, gate_up, m, h, c->stream);
    if (rc) return rc;
    return kern_cuda_gemm(c, y, hidden, w, NULL, m, n, h);
}

static int op_add_rmsnorm_gemm(struct kern_ctx *c, bf16 *y, bf16 *res_out, const bf16 *residual,
                               const bf16 *delta, const bf16 *norm_w, const bf16 *w,
                               const bf16 *bias, bf16 *xn, int m, int n, int k, float eps) {
    const char *fuse_norm = getenv("KEEL_FUSE_NORM");
    if (m >= 1 && m <= op_env_max_m("KEEL_FUSE_NORM_MAX_M", 2) && fuse_norm &&
        strcmp(fuse_norm, "1") == 0 && !op_env_off("KEEL_GEMV"))
        return kern_cuda_gemv_add_rmsnorm(y, res_out, residual, delta, norm_w, w, bias, m, n, k,
                                          eps, 0, c->stream);
    int rc = kern_cuda_add_rmsnorm_to(xn, res_out, residual, delta, norm_w, m, k, eps, c->stream);
    if (rc) return rc;
    return kern_cuda_gemm(c, y, xn, w, bias, m, n, k);
}

static int op_qk_rope_kv(struct kern_ctx *c, bf16 *qkv, bf16 *k_cache, bf16 *v_cache,
                         const bf16 *q_w, const bf16 *k_w, const int32_t *positions,
                         const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                         int head_dim, float eps, float theta) {
    const char *max_n = getenv("KEEL_FUSE_ROPE_KV_MAX_N");
    if (kern_cuda_qk_rope_kv_supported(head_dim) && !op_env_off("KEEL_FUSE_ROPE_KV") &&
        (!max_n || !*max_n || n <= atoi(max_n)))
        return kern_cuda_qk_rope_kv(qkv, k_cache, v_cache, q_w, k_w, positions, slot_mapping, n,
                                    n_heads, n_kv_heads, head_dim, eps, theta, c->stream);
    int rc;
    if (q_w &&
        (rc = kern_cuda_qk_norm(qkv, q_w, k_w, n, n_heads, n_kv_heads, head_dim, eps, c->stream)))
        return rc;
    if ((rc = kern_cuda_rope(qkv, positions, n, n_heads, n_kv_heads, head_dim, theta, c->stream)))
        return rc;
    return kern_cuda_kv_write(k_cache, v_cache, qkv, slot_mapping, n, n_heads, n_kv_heads, head_dim,
                              c->stream);
}

// The decode projections (kern_cuda_proj): every decode step of at most KEEL_FUSE_DECODE_MAX_M
// rows (default 4, as the silu fusion; 0 turns them off, and so does KEEL_GEMV=0: they are the
// gemv).
static int op_proj(struct kern_ctx *c, const struct kern_proj *p) {
    return kern_cuda_proj(p, c->n_sm, c->stream);
}

static int op_proj_max_m(struct kern_ctx *c) {
    (void)c;
    if (op_env_off("KEEL_GEMV")) return 0;
    return op_env_max_m("KEEL_FUSE_DECODE_MAX_M", 4);
}

static int op_gather_rows(struct kern_ctx *c, bf16 *out, const bf16 *x, const int32_t *rows, int m,
                          int dim) {
    return kern_cuda_gather_rows(out, x, rows, m, dim, c->stream);
}

static int op_sample(struct kern_ctx *c, struct kern_sample_out *out, float *logits, int n_rows,
                     int vocab, const struct kern_sample_params *params,
                     const struct kern_sample_adj *adj, int n_adj) {
    return kern_cuda__sample_op(c->op_scratch, c->op_scratch_bytes, out, logits, n_rows, vocab,
                                params, adj, n_adj, c->sample_prob_cache, c->stream);
}

const struct kern_ops kern_cuda_ops = {
    .name = "cuda",
    .embed = op_embed,
    .add_rmsnorm = op_add_rmsnorm,
    .gemm = kern_cuda_gemm,
    .gemm_f32 = kern_cuda_gemm_f32,
    .qk_norm = op_qk_norm,
    .rope = op_rope,
    .kv_write = op_kv_write,
    .attention = op_attention,
    .silu_mul = op_silu_mul,
    .gemm_silu = op_gemm_silu,
    .add_rmsnorm_gemm = op_add_rmsnorm_gemm,
    .qk_rope_kv = op_qk_rope_kv,
    .proj = op_proj,
    .proj_max_m = op_proj_max_m,
    .gather_rows = op_gather_rows,
    .copy_to_backend = kern_cuda__copy_to_backend,
    .copy_to_host = kern_cuda__copy_to_host,
    .sample = op_sample,
    .sync = kern_cuda__sync,
    .debug_fault = kern_cuda__debug_fault,
};

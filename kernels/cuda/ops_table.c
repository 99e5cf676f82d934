// kern_cuda_ops: the op table of kernels/ops.h over the CUDA launchers, each bound to the
// context's stream. The launchers (kern_cuda.h) do the shape checks and the work.
#include "kernels/cuda/ctx.h"
#include "kernels/cuda/kern_cuda.h"

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
    .gather_rows = op_gather_rows,
    .copy_to_backend = kern_cuda__copy_to_backend,
    .copy_to_host = kern_cuda__copy_to_host,
    .sample = op_sample,
    .sync = kern_cuda__sync,
    .debug_fault = kern_cuda__debug_fault,
};

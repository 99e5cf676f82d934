// CPU paged attention for a mixed batch of variable-length spans (prefill chunks and decode
// tokens together), causal, with grouped-query heads. float32 throughout, bf16 out.
//
// One work item is one (query token, query head): it walks the keys of its sequence from
// position 0 to its own position through the block table and keeps an online softmax (running
// max m, running sum l, accumulator acc[head_dim]), so no score row is ever materialised and
// nothing depends on how the batch was assembled. Items are split across threads.
#include "common/err.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"

#include <math.h>

struct attn_job {
    bf16 *out;           // [n_tokens, n_heads * head_dim]
    const bf16 *qkv;     // [n_tokens, (n_heads + 2 n_kv) * head_dim]
    const bf16 *k_cache; // [n_blocks, block_size, n_kv_heads, head_dim]
    const bf16 *v_cache; // same
    const struct kern_attn_batch *b;
    int n_heads, n_kv_heads, head_dim, block_size;
    float scale;
};

// The sequence that query token t belongs to (query_start is ascending).
static int seq_of_token(const struct kern_attn_batch *b, int t) {
    int lo = 0, hi = b->n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (b->query_start[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static void attend_one(const struct attn_job *j, int t, int h) {
    const struct kern_attn_batch *b = j->b;
    int hd = j->head_dim, n_kv = j->n_kv_heads;
    int s = seq_of_token(b, t);
    int q_len = b->query_start[s + 1] - b->query_start[s];
    int pos = b->seq_lens[s] - q_len + (t - b->query_start[s]);
    int kvh = h / (j->n_heads / n_kv);
    const int32_t *table = b->block_tables + (size_t)s * b->max_blocks_per_seq;
    size_t qkv_stride = (size_t)(j->n_heads + 2 * n_kv) * hd;

    float q[KERN_CPU_MAX_HEAD_DIM], acc[KERN_CPU_MAX_HEAD_DIM];
    const bf16 *qr = j->qkv + (size_t)t * qkv_stride + (size_t)h * hd;
    for (int d = 0; d < hd; d++) {
        q[d] = bf16_to_f32(qr[d]) * j->scale;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int p = 0; p <= pos; p++) {
        size_t slot = (size_t)table[p / j->block_size] * j->block_size + p % j->block_size;
        size_t at = (slot * n_kv + kvh) * hd;
        const bf16 *kr = j->k_cache + at, *vr = j->v_cache + at;
        float sc = 0.0f;
        for (int d = 0; d < hd; d++)
            sc += q[d] * bf16_to_f32(kr[d]);
        if (sc > m) {
            // A new maximum rescales what was accumulated so far.
            float r = expf(m - sc);
            l *= r;
            for (int d = 0; d < hd; d++)
                acc[d] *= r;
            m = sc;
        }
        float e = expf(sc - m);
        l += e;
        for (int d = 0; d < hd; d++)
            acc[d] += e * bf16_to_f32(vr[d]);
    }
    bf16 *o = j->out + (size_t)t * j->n_heads * hd + (size_t)h * hd;
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = 0; d < hd; d++)
        o[d] = f32_to_bf16(acc[d] * inv);
}

static void attn_task(void *arg, int tid, int begin, int end) {
    const struct attn_job *j = arg;
    for (int i = begin; i < end; i++)
        attend_one(j, i / j->n_heads, i % j->n_heads);
}

int kern__cpu_attention(struct kern_ctx *c, bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                        const bf16 *v_cache, const struct kern_attn_batch *b, int n_heads,
                        int n_kv_heads, int head_dim, int block_size, float scale) {
    if (!b || n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 ||
        head_dim > KERN_CPU_MAX_HEAD_DIM || block_size <= 0 || b->n_seqs < 0 || b->n_tokens < 0)
        return err_set(ERR_INVAL,
                       "cpu attention: bad shape (heads %d, kv heads %d, head_dim %d (max %d), "
                       "block_size %d)",
                       n_heads, n_kv_heads, head_dim, KERN_CPU_MAX_HEAD_DIM, block_size);
    if (b->n_tokens == 0) return 0;
    if (b->n_seqs == 0 || b->query_start[b->n_seqs] != b->n_tokens)
        return err_set(ERR_INVAL, "cpu attention: query_start[n_seqs] != n_tokens (%d)",
                       b->n_tokens);
    // Validate the metadata once, so a bad batch is an error rather than a wild read.
    for (int s = 0; s < b->n_seqs; s++) {
        int q_len = b->query_start[s + 1] - b->query_start[s];
        if (q_len < 0 || b->seq_lens[s] < q_len ||
            b->seq_lens[s] > b->max_blocks_per_seq * block_size)
            return err_set(ERR_INVAL,
                           "cpu attention: sequence %d has %d query tokens and context %d "
                           "(at most %d blocks of %d)",
                           s, q_len, b->seq_lens[s], b->max_blocks_per_seq, block_size);
    }
    struct attn_job j = {.out = out,
                         .qkv = qkv,
                         .k_cache = k_cache,
                         .v_cache = v_cache,
                         .b = b,
                         .n_heads = n_heads,
                         .n_kv_heads = n_kv_heads,
                         .head_dim = head_dim,
                         .block_size = block_size,
                         .scale = scale};
    kern__cpu_parallel_for(c, b->n_tokens * n_heads, 2, attn_task, &j);
    return 0;
}

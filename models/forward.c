// The forward pass: one scheduled batch of variable-length spans (prefill chunks and decode
// tokens of many sequences together) through the whole network, written once over the op table
// so the CPU and CUDA backends run the same code.
//
//   embed -> per layer: add_rmsnorm -> gemm qkv (+bias, Qwen2) -> qk_norm (Qwen3) -> rope
//            -> kv_write -> paged attention -> gemm wo -> add_rmsnorm -> gemm gate_up
//            -> silu_mul -> gemm down
//   -> gather the last row of each sequence -> add_rmsnorm final -> gemm_f32 logits
//
// The residual stream lives in `residual`; every sublayer writes its output to `x`, and the next
// add_rmsnorm folds it into the residual (vLLM's fused_add_rms_norm), so no separate add runs.
// Only the last position of each sequence is normed and projected to logits: the final norm is
// per row, so gathering first gives the same numbers for a fraction of the work.
//
// Decode steps on one GPU take a shorter path (fuse_dec below): the projections add themselves
// into the residual and carry the norm's statistics to the next one, so a layer is qkv (+rope,
// kv write) -> attention -> wo (+residual) -> gate_up (norm in) -> down (silu in, +residual).
#include "common/err.h"
#include "common/log.h"
#include "models/model.h"
#include "models/graph.h"
#include "models/profile.h"
#include "models/tp.h"
#include "kernels/comm.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- the step's metadata

// Offsets (in int32 elements) of the metadata arrays inside the packed staging buffer, for one
// batch. The arrays are packed tightly for the batch at hand, so one copy moves exactly what this
// step needs, and the backend reads them at the same offsets from the scratch's meta area.
struct fwd_meta {
    size_t ids, positions, slot_mapping, query_start, seq_lens, block_tables, rows, n_ints;
};

// Each array starts on a 64-byte boundary.
static size_t meta_place(size_t *at, size_t n) {
    size_t off = *at;
    *at += (n + 15) / 16 * 16;
    return off;
}

static struct fwd_meta meta_layout(int n_tokens, int n_seqs, int max_blocks_per_seq) {
    struct fwd_meta o;
    size_t at = 0;
    o.ids = meta_place(&at, (size_t)n_tokens);
    o.positions = meta_place(&at, (size_t)n_tokens);
    o.slot_mapping = meta_place(&at, (size_t)n_tokens);
    o.query_start = meta_place(&at, (size_t)n_seqs + 1);
    o.seq_lens = meta_place(&at, (size_t)n_seqs);
    o.block_tables = meta_place(&at, (size_t)n_seqs * max_blocks_per_seq);
    o.rows = meta_place(&at, (size_t)n_seqs);
    o.n_ints = at;
    return o;
}

// ---- init and free

size_t model_tp_logits_layout(const struct model *m, struct mem_logits_layout *ll) {
    struct mem_plan_shape shape;
    model_plan_shape(&m->cfg, &shape);
    shape.tp_size = m->tp.size;
    shape.tp_rank = m->tp.rank;
    shape.full_vocab_size = m->tp.full_vocab_size;
    mem_plan_logits_layout(&shape, m->max_seqs, ll);
    return ll->bytes;
}

#ifdef KEEL_CUDA
static int graphs_init(struct model *m);
#endif

int model_init(struct model *m, const struct model_config *cfg, const struct kern_ops *ops,
               struct kern_ctx *ctx, struct mem_arena *arena, const struct mem_plan *plan,
               const struct mem_plan_settings *set) {
    // m->w was filled by model_weights_load before this call, and m->tp by the tensor-parallel
    // set-up (models/tp.c) when there is one; everything else is set here.
    struct model_weights w = m->w;
    struct model_tp tp = m->tp;
    memset(m, 0, sizeof *m);
    m->w = w;
    m->tp = tp;
    m->cfg = *cfg;
    m->ops = ops;
    m->ctx = ctx;
    m->max_tokens = set->max_num_batched_tokens;
    m->max_seqs = set->max_num_seqs;
    m->max_blocks_per_seq = plan->max_blocks_per_seq;
    m->block_size = set->block_size;
    m->n_kv_blocks = (int)plan->num_kv_blocks;
    if (!m->w.embed || !m->w.layers || !m->w.final_norm || !m->w.lm_head)
        return err_set(ERR_INVAL, "model_init: the weights are not loaded");
    if (m->max_tokens <= 0 || m->max_seqs <= 0 || m->max_blocks_per_seq <= 0 ||
        m->block_size <= 0 || m->n_kv_blocks <= 0)
        return err_set(ERR_INVAL,
                       "model_init: bad limits (max_num_batched_tokens %d, max_num_seqs %d, "
                       "max_blocks_per_seq %d, block_size %d, KV blocks %d)",
                       m->max_tokens, m->max_seqs, m->max_blocks_per_seq, m->block_size,
                       m->n_kv_blocks);

    struct mem_plan_shape shape;
    model_plan_shape(cfg, &shape);
    mem_plan_scratch_layout(&shape, m->max_tokens, m->max_seqs, m->max_blocks_per_seq, &m->scratch);
    // The packed metadata of the largest step must fit the area the plan reserved for it.
    struct fwd_meta most = meta_layout(m->max_tokens, m->max_seqs, m->max_blocks_per_seq);
    if (most.n_ints * sizeof(int32_t) > m->scratch.meta_bytes)
        return err_set(ERR_INTERNAL, "model_init: step metadata needs %zu bytes, the plan has %zu",
                       most.n_ints * sizeof(int32_t), m->scratch.meta_bytes);

    size_t kv_bytes = (size_t)m->n_kv_blocks * m->block_size * cfg->n_kv_heads * cfg->head_dim *
                      sizeof(bf16) * 2 * cfg->n_layers;
    size_t logits_bytes = (size_t)m->max_seqs * cfg->vocab_size * sizeof(float);
    if (m->tp.comm && model_tp_device_sample_on()) {
        // A rank's logits region as the plan lays it out (memory/plan.h mem_logits_layout): the
        // full [S, vocab] rows (rank 0 samples them; the LM head writes its [S, vocab_local]
        // slice at their start) and the all-gather buffer [tp, S, vocab_local] after them. The
        // host assembly (KEEL_TP_DEVICE_SAMPLE=0) needs the slice only and leaves the rest of
        // the plan's region free (models/tp.c then carves the peer-to-peer all-reduce's region
        // from the arena's slack).
        struct mem_logits_layout ll;
        logits_bytes = model_tp_logits_layout(m, &ll);
    }
    void *p;
    int rc = mem_arena_carve(arena, "activations", m->scratch.bytes, &p);
    if (rc) return rc;
    m->scratch_base = p;
    if ((rc = mem_arena_carve(arena, "logits", logits_bytes, &p))) return rc;
    m->logits = p;
    if ((rc = mem_arena_carve(arena, "kv_cache", kv_bytes, &p))) return rc;
    m->kv_cache = p;
#ifdef KEEL_CUDA
    // A rank of a tensor-parallel group runs NCCL collectives inside its step. NCCL can be
    // captured, and every rank captures and replays the same steps (they see the same batches,
    // and the group's warm-up captures the same keys on every rank in lock-step): measured
    // faster on 2 x H200 (docs/TP.md), so on unless KEEL_TP_GRAPHS=0.
    bool graphs_ok = !m->tp.comm || model_tp_graphs_on();
    if (graphs_ok && model_graphs_usable(ops) && (rc = graphs_init(m))) return rc;
#endif
    const char *inject = getenv("KEEL_DEBUG_INJECT_FAULT");
    if (inject && *inject) {
        m->inject_fault_step = strtoll(inject, NULL, 10);
        if (m->inject_fault_step > 0)
            log_warn("KEEL_DEBUG_INJECT_FAULT=%lld: forward step %lld and every later one will "
                     "fail with a simulated sticky device fault (debugging only)",
                     (long long)m->inject_fault_step, (long long)m->inject_fault_step);
    }
    m->host_meta = malloc(m->scratch.meta_bytes);
    if (!m->host_meta)
        return err_set(ERR_NOMEM, "model_init: %zu bytes of metadata staging",
                       m->scratch.meta_bytes);
    return 0;
}

void model_free(struct model *m) {
    if (!m) return;
    free(m->host_meta);
    m->host_meta = NULL;
#ifdef KEEL_CUDA
    model_graphs_free(m->graphs);
#endif
    m->graphs = NULL;
}

// ---- batch checks

// A bad batch is the scheduler's bug, but it must not become a wild write on the device: check
// every index the kernels will follow before anything runs.
static int check_batch(const struct model *m, const struct model_batch *b) {
    const int vocab = m->tp.comm ? m->tp.full_vocab_size : m->cfg.vocab_size;
    if (b->n_tokens <= 0 || b->n_tokens > m->max_tokens || b->n_seqs <= 0 ||
        b->n_seqs > m->max_seqs || b->n_seqs > b->n_tokens)
        return err_set(ERR_INVAL,
                       "model_forward: %d tokens of %d sequences (limits: 1..%d tokens, 1..%d "
                       "sequences)",
                       b->n_tokens, b->n_seqs, m->max_tokens, m->max_seqs);
    if (b->query_start[0] != 0 || b->query_start[b->n_seqs] != b->n_tokens)
        return err_set(ERR_INVAL, "model_forward: query_start must run from 0 to n_tokens (%d)",
                       b->n_tokens);
    int max_ctx = m->max_blocks_per_seq * m->block_size;
    for (int s = 0; s < b->n_seqs; s++) {
        int q0 = b->query_start[s], q_len = b->query_start[s + 1] - q0, len = b->seq_lens[s];
        if (q_len <= 0 || len < q_len || len > max_ctx)
            return err_set(ERR_INVAL,
                           "model_forward: sequence %d has %d new tokens and context %d (each "
                           "needs >= 1 new token, context <= %d)",
                           s, q_len, len, max_ctx);
        const int32_t *table = b->block_tables + (size_t)s * m->max_blocks_per_seq;
        for (int i = 0; i < (len + m->block_size - 1) / m->block_size; i++)
            if (table[i] < 0 || table[i] >= m->n_kv_blocks)
                return err_set(ERR_INVAL, "model_forward: sequence %d block %d is %d (pool %d)", s,
                               i, table[i], m->n_kv_blocks);
        for (int t = q0; t < q0 + q_len; t++)
            if (b->positions[t] != len - q_len + (t - q0))
                return err_set(ERR_INVAL,
                               "model_forward: token %d of sequence %d has position %d, its "
                               "span implies %d",
                               t, s, b->positions[t], len - q_len + (t - q0));
    }
    int64_t n_slots = (int64_t)m->n_kv_blocks * m->block_size;
    for (int t = 0; t < b->n_tokens; t++) {
        if (b->token_ids[t] < 0 || b->token_ids[t] >= vocab)
            return err_set(ERR_INVAL, "model_forward: token id %d is outside the vocabulary (%d)",
                           b->token_ids[t], vocab);
        if (b->slot_mapping[t] >= n_slots)
            return err_set(ERR_INVAL, "model_forward: slot %d is outside the cache (%lld slots)",
                           b->slot_mapping[t], (long long)n_slots);
    }
    return 0;
}

// ---- the forward pass

#define TRY(call)                                                                                  \
    do {                                                                                           \
        int try__rc = (call);                                                                      \
        if (try__rc) return try__rc;                                                               \
    } while (0)

// With KEEL_PROFILE=1 the pass waits for the backend after each op group and charges the time
// to it (models/profile.h); otherwise OP is TRY plus one well-predicted branch.
#define OP(group, call)                                                                            \
    do {                                                                                           \
        TRY(call);                                                                                 \
        if (prof_ops) {                                                                            \
            TRY(op->sync(ctx));                                                                    \
            model_prof_mark(group);                                                                \
        }                                                                                          \
    } while (0)

// The step's shape as the device work needs it: the metadata's layout and the host-side hints.
struct fwd_step {
    int n, S;           // tokens, sequences
    struct fwd_meta o;  // where each metadata array sits in the scratch's meta area
    int max_q, max_len; // longest query span and context (attention launch hints)
};

// Everything between the metadata copy and the logits copy: embeddings, the layers, the final
// norm and the logits, on the backend's stream with no wait (unless profiling per op), so a
// CUDA graph can capture it whole. Every pointer depends only on the model and st->o.
static int network(struct model *m, const struct fwd_step *st, bool prof_ops) {
    const struct kern_ops *op = m->ops;
    struct kern_ctx *ctx = m->ctx;
    const struct model_config *c = &m->cfg;
    const int n = st->n, S = st->S, dim = c->dim, hid = c->hidden_dim;
    const int nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    const int q_dim = nh * hd, qkv_dim = model_config_qkv_dim(c), mb = m->max_blocks_per_seq;
    const float eps = c->rms_norm_eps;
    const struct fwd_meta o = st->o;

    int32_t *meta = (int32_t *)(m->scratch_base + m->scratch.meta);
    const int32_t *ids = meta + o.ids, *pos = meta + o.positions, *slots = meta + o.slot_mapping;
    const int32_t *rows = meta + o.rows;
    struct kern_attn_batch ab = {.n_seqs = S,
                                 .n_tokens = n,
                                 .query_start = meta + o.query_start,
                                 .seq_lens = meta + o.seq_lens,
                                 .block_tables = meta + o.block_tables,
                                 .max_blocks_per_seq = mb,
                                 .max_query_len = st->max_q,
                                 .max_seq_len = st->max_len};

    // Activations, all in the scratch region.
    uint8_t *sb = m->scratch_base;
    bf16 *x = (bf16 *)(sb + m->scratch.x);               // [n, dim] a sublayer's output
    bf16 *residual = (bf16 *)(sb + m->scratch.residual); // [n, dim] the residual stream
    bf16 *xb = (bf16 *)(sb + m->scratch.xb);             // [n, dim] normed sublayer input
    bf16 *qkv = (bf16 *)(sb + m->scratch.qkv);           // [n, qkv_dim]
    bf16 *attn = (bf16 *)(sb + m->scratch.attn_out);     // [n, q_dim]
    bf16 *gate_up = (bf16 *)(sb + m->scratch.gate_up);   // [n, 2 * hid]
    bf16 *hidden = (bf16 *)(sb + m->scratch.hidden);     // [n, hid]
    bf16 *last = (bf16 *)(sb + m->scratch.last_rows);    // [S, dim]

    size_t cache_elems = (size_t)m->n_kv_blocks * m->block_size * nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);

    // With the fused norm + projection op (kernels/ops.h add_rmsnorm_gemm) the normed rows are
    // never stored, so xb is free and the residual stream ping-pongs: the attention norm writes
    // the new residual to xb, the MLP norm writes it back to `residual`, so it is in `residual`
    // after every layer. `hidden` (hid >= dim) is the op's scratch for batches it does not fuse.
    const bool fuse_norm = op->add_rmsnorm_gemm && hid >= dim;

    OP(MODEL_PROF_EMBED, op->embed(ctx, residual, ids, m->w.embed, n, dim));
    // Tensor parallel: each rank embedded the ids of its vocabulary slice (zeros elsewhere), and
    // after each row-parallel GEMM (wo, down) every rank holds a partial sum: all_reduce makes
    // the residual stream whole and identical on every rank.
    struct kern_comm *comm = m->tp.comm;
    if (comm) OP(MODEL_PROF_EMBED, kern_comm_all_reduce_bf16(comm, ctx, residual, (size_t)n * dim));
    // Decode steps of a single-device model go through the fused projections (kernels/ops.h
    // struct kern_proj) when the backend has them: wo and down add themselves into the residual
    // and leave its row statistics in `stats` (the `hidden` buffer, unused then), qkv and
    // gate_up norm their input from those, and qkv also applies rope and writes the cache
    // (models without the q/k norm). Per layer the two add_rmsnorm launches and qk_rope_kv go.
    const bool fuse_dec = op->proj && !comm && n <= op->proj_max_m(ctx);
    float *stats = (float *)hidden; // [n, KERN_PROJ_STATS_PER_ROW(dim)]
    const bool rope_in_qkv = !c->qk_norm && hd % 16 == 0;
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &m->w.layers[l];
        bf16 *k_cache = m->kv_cache + (size_t)l * 2 * cache_elems; // [blocks, bs, nkv, hd]
        bf16 *v_cache = k_cache + cache_elems;

        if (fuse_dec) {
            const struct kern_rope_kv rope = {k_cache, v_cache, pos, slots,
                                              nh,      nkv,     hd,  c->rope_theta};
            struct kern_proj p = {.m = n,
                                  .n = qkv_dim,
                                  .k = dim,
                                  .w = L->wqkv,
                                  .bias = L->bqkv,
                                  .y = qkv,
                                  .rope = rope_in_qkv ? &rope : NULL};
            if (l == 0) { // the embeddings have no statistics: the first norm runs on its own
                OP(MODEL_PROF_NORM,
                   op->add_rmsnorm(ctx, xb, residual, NULL, L->attn_norm, n, dim, eps));
                p.x = xb;
            } else {
                p.norm_in = residual, p.norm_w = L->attn_norm, p.stats_in = stats, p.eps = eps;
            }
            OP(MODEL_PROF_QKV, op->proj(ctx, &p));
            if (!rope_in_qkv)
                OP(MODEL_PROF_QK_ROPE,
                   op->qk_rope_kv(ctx, qkv, k_cache, v_cache, c->qk_norm ? L->q_norm : NULL,
                                  c->qk_norm ? L->k_norm : NULL, pos, slots, n, nh, nkv, hd, eps,
                                  c->rope_theta));
            OP(MODEL_PROF_ATTENTION, op->attention(ctx, attn, qkv, k_cache, v_cache, &ab, nh, nkv,
                                                   hd, m->block_size, scale));
            p = (struct kern_proj){.m = n,
                                   .n = dim,
                                   .k = q_dim,
                                   .w = L->wo,
                                   .x = attn,
                                   .residual = residual,
                                   .stats_out = stats};
            OP(MODEL_PROF_WO, op->proj(ctx, &p));
            p = (struct kern_proj){.m = n,
                                   .n = 2 * hid,
                                   .k = dim,
                                   .w = L->w_gate_up,
                                   .norm_in = residual,
                                   .norm_w = L->ffn_norm,
                                   .stats_in = stats,
                                   .eps = eps,
                                   .y = gate_up};
            OP(MODEL_PROF_GATE_UP, op->proj(ctx, &p));
            p = (struct kern_proj){.m = n,
                                   .n = dim,
                                   .k = hid,
                                   .w = L->w_down,
                                   .gate_up = gate_up,
                                   .residual = residual,
                                   .stats_out = stats};
            OP(MODEL_PROF_DOWN, op->proj(ctx, &p));
            continue;
        }

        // attention
        if (fuse_norm) { // the residual moves to xb (see fuse_norm)
            OP(MODEL_PROF_QKV,
               op->add_rmsnorm_gemm(ctx, qkv, xb, residual, l == 0 ? NULL : x, L->attn_norm,
                                    L->wqkv, L->bqkv, hidden, n, qkv_dim, dim, eps));
        } else {
            OP(MODEL_PROF_NORM,
               op->add_rmsnorm(ctx, xb, residual, l == 0 ? NULL : x, L->attn_norm, n, dim, eps));
            OP(MODEL_PROF_QKV, op->gemm(ctx, qkv, xb, L->wqkv, L->bqkv, n, qkv_dim, dim));
        }
        if (op->qk_rope_kv) { // fused: qk_norm (Qwen3) + rope + kv_write
            OP(MODEL_PROF_QK_ROPE,
               op->qk_rope_kv(ctx, qkv, k_cache, v_cache, c->qk_norm ? L->q_norm : NULL,
                              c->qk_norm ? L->k_norm : NULL, pos, slots, n, nh, nkv, hd, eps,
                              c->rope_theta));
        } else {
            if (c->qk_norm)
                OP(MODEL_PROF_QK_ROPE,
                   op->qk_norm(ctx, qkv, L->q_norm, L->k_norm, n, nh, nkv, hd, eps));
            OP(MODEL_PROF_QK_ROPE, op->rope(ctx, qkv, pos, n, nh, nkv, hd, c->rope_theta));
            OP(MODEL_PROF_KV_WRITE,
               op->kv_write(ctx, k_cache, v_cache, qkv, slots, n, nh, nkv, hd));
        }
        OP(MODEL_PROF_ATTENTION,
           op->attention(ctx, attn, qkv, k_cache, v_cache, &ab, nh, nkv, hd, m->block_size, scale));
        OP(MODEL_PROF_WO, op->gemm(ctx, x, attn, L->wo, NULL, n, dim, q_dim));
        if (comm) OP(MODEL_PROF_WO, kern_comm_all_reduce_bf16(comm, ctx, x, (size_t)n * dim));

        // MLP
        if (fuse_norm) { // and back to residual
            OP(MODEL_PROF_GATE_UP,
               op->add_rmsnorm_gemm(ctx, gate_up, residual, xb, x, L->ffn_norm, L->w_gate_up, NULL,
                                    hidden, n, 2 * hid, dim, eps));
        } else {
            OP(MODEL_PROF_NORM, op->add_rmsnorm(ctx, xb, residual, x, L->ffn_norm, n, dim, eps));
            OP(MODEL_PROF_GATE_UP, op->gemm(ctx, gate_up, xb, L->w_gate_up, NULL, n, 2 * hid, dim));
        }
        if (op->gemm_silu) { // fused: silu_mul + down
            OP(MODEL_PROF_DOWN, op->gemm_silu(ctx, x, hidden, gate_up, L->w_down, n, dim, hid));
        } else {
            OP(MODEL_PROF_SILU, op->silu_mul(ctx, hidden, gate_up, n, hid));
            OP(MODEL_PROF_DOWN, op->gemm(ctx, x, hidden, L->w_down, NULL, n, dim, hid));
        }
        if (comm) OP(MODEL_PROF_DOWN, kern_comm_all_reduce_bf16(comm, ctx, x, (size_t)n * dim));
    }

    // The last position of each sequence: residual + last sublayer output (already added when
    // fused), final norm, logits.
    OP(MODEL_PROF_LOGITS, op->gather_rows(ctx, last, residual, rows, S, dim));
    if (!fuse_dec) OP(MODEL_PROF_LOGITS, op->gather_rows(ctx, xb, x, rows, S, dim));
    OP(MODEL_PROF_LOGITS,
       op->add_rmsnorm(ctx, x, last, fuse_dec ? NULL : xb, m->w.final_norm, S, dim, eps));
    OP(MODEL_PROF_LOGITS, op->gemm_f32(ctx, m->logits, x, m->w.lm_head, S, c->vocab_size, dim));
    return 0;
}

// ---- padded decode steps

// Packs the metadata of b (NULL: the warm-up, no real rows) into the host staging buffer as a
// step of `rows` rows (0: b's own), and fills st: the layout and the launch hints. Rows past b's
// are padding of a decode step: token 0 at position 0, slot -1 (kv_write stores nothing),
// context 1 in block 0 (a valid block, so the attention reads one key of memory the cache owns),
// their logits row their own. Every op works row by row, so a padding row never changes a real
// row's numbers.
static void pack_meta(struct model *m, const struct model_batch *b, int rows, struct fwd_step *st) {
    const int n = b ? b->n_tokens : 0, S = b ? b->n_seqs : 0, mb = m->max_blocks_per_seq;
    const int pad = rows > S ? rows - S : 0;
    *st = (struct fwd_step){.n = n + pad, .S = S + pad, .o = meta_layout(n + pad, S + pad, mb)};
    const struct fwd_meta o = st->o;
    int32_t *h = m->host_meta;
    h[o.query_start] = 0;
    if (S) {
        memcpy(h + o.ids, b->token_ids, sizeof(int32_t) * n);
        memcpy(h + o.positions, b->positions, sizeof(int32_t) * n);
        memcpy(h + o.slot_mapping, b->slot_mapping, sizeof(int32_t) * n);
        memcpy(h + o.query_start, b->query_start, sizeof(int32_t) * (S + 1));
        memcpy(h + o.seq_lens, b->seq_lens, sizeof(int32_t) * S);
        memcpy(h + o.block_tables, b->block_tables, sizeof(int32_t) * S * mb);
    }
    for (int s = 0; s < S; s++) {
        h[o.rows + s] = b->query_start[s + 1] - 1; // the last token of sequence s
        int q_len = b->query_start[s + 1] - b->query_start[s];
        if (q_len > st->max_q) st->max_q = q_len;
        if (b->seq_lens[s] > st->max_len) st->max_len = b->seq_lens[s];
    }
    for (int i = 0; i < pad; i++) {
        int t = n + i, s = S + i;
        // The warm-up's rows (b == NULL, before any sequence owns a block) each store their
        // token's K/V in a block of their own and read it back, so the warm-up step computes
        // finite numbers from real-looking data: the GEMM tuner compares kernels on its output
        // (kernels/cuda/gemm.c), and memory no step has written may hold NaN.
        int blk = b ? 0 : t % m->n_kv_blocks;
        h[o.ids + t] = b ? 0 : t % m->cfg.vocab_size;
        h[o.positions + t] = 0;
        h[o.slot_mapping + t] = b ? -1 : blk * m->block_size;
        h[o.query_start + s + 1] = t + 1;
        h[o.seq_lens + s] = 1;
        memset(h + o.block_tables + (size_t)s * mb, 0, sizeof(int32_t) * mb);
        h[o.block_tables + (size_t)s * mb] = blk;
        h[o.rows + s] = t;
    }
    if (pad && st->max_q < 1) st->max_q = 1;
    if (pad && st->max_len < 1) st->max_len = 1;
}

// The context bucket of a step whose longest context is len: the attention hint of a padded or
// graphed step (the same list the graph table holds).
static int ctx_bucket(const struct model *m, int len, int *index) {
    int b[MODEL_GRAPHS_MAX_BUCKETS];
    int n = model_graphs_ctx_buckets(m->max_blocks_per_seq * m->block_size, b,
                                     MODEL_GRAPHS_MAX_BUCKETS);
    int i = model_graphs_bucket_of(b, n, len);
    if (index) *index = i;
    return i < 0 ? len : b[i];
}

// ---- graphs

#ifdef KEEL_CUDA
static double fwd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// The graph table's buckets from the model's limits; no table when the largest batch bucket is
// set to 0.
static int graphs_init(struct model *m) {
    int bb[MODEL_GRAPHS_MAX_BUCKETS], cb[MODEL_GRAPHS_MAX_BUCKETS];
    int top = m->max_seqs < m->max_tokens ? m->max_seqs : m->max_tokens;
    int nb = model_graphs_batch_buckets(top, model_graphs_max_seqs_setting(), bb,
                                        MODEL_GRAPHS_MAX_BUCKETS);
    int nc = model_graphs_ctx_buckets(m->max_blocks_per_seq * m->block_size, cb,
                                      MODEL_GRAPHS_MAX_BUCKETS);
    if (nb < 1 || nc < 1) return 0;
    return model_graphs_init(&m->graphs, bb, nb, cb, nc, MEM_PLAN_GRAPHS_BYTES);
}

// Runs the padded step st through the graph of (bi, ci): replays it, or on the key's second
// step (when no warm-up captured it) captures it and launches it. Returns 1 when the device
// work was queued, 0 when the caller must run it, or ERR_*.
static int network_graphed(struct model *m, const struct fwd_step *st, int bi, int ci,
                           enum model_fwd_mode mode) {
    int rc = model_graphs_launch(m->graphs, m->ctx, bi, ci);
    if (rc) return rc;
    if (mode == MODEL_FWD_GRAPH)
        return err_set(ERR_INVAL, "model_forward: no graph for %d rows at context bucket %d", st->S,
                       st->max_len);
    // The first step of a key runs eagerly (padded, so cuBLAS loads this shape's kernels
    // outside a capture); the second is captured.
    if (model_graphs_seen(m->graphs, bi, ci) == 0 || !model_graphs_can_capture(m->graphs)) return 0;
    if (!model_graphs_capture_begin(m->graphs, m->ctx)) return 0;
    // A failure under capture turns graphs off and the caller runs the step eagerly: a real
    // fault shows there again.
    rc = network(m, st, false);
    if (!model_graphs_capture_end(m->graphs, m->ctx, bi, ci, rc == 0)) return 0;
    return model_graphs_launch(m->graphs, m->ctx, bi, ci);
}
#endif

int model_graphs_warmup(struct model *m) {
#ifdef KEEL_CUDA
    struct model_graphs *g = m->graphs;
    if (!g) return 0;
    int nb, nc;
    const int *bb = model_graphs_batch(g, &nb), *cb = model_graphs_ctx(g, &nc);
    double t0 = fwd_now();
    int32_t *meta = (int32_t *)(m->scratch_base + m->scratch.meta);
    // Short contexts first, then longer: if the reservation runs out, the buckets left out are
    // the long contexts, whose steps are the longest and gain the least.
    for (int ci = 0; ci < nc && model_graphs_can_capture(g); ci++) {
        for (int bi = 0; bi < nb && model_graphs_can_capture(g); bi++) {
            struct fwd_step st;
            pack_meta(m, NULL, bb[bi], &st);
            st.max_len = cb[ci];
            TRY(m->ops->copy_to_backend(m->ctx, meta, m->host_meta, st.o.n_ints * sizeof(int32_t)));
            // One eager step: cuBLAS picks and loads this shape's kernels outside the capture.
            TRY(network(m, &st, false));
            (void)model_graphs_seen(g, bi, ci);
            // A failure under capture turns graphs off (logged): keel serves eagerly.
            if (!model_graphs_capture_begin(g, m->ctx)) break;
            int rc = network(m, &st, false);
            model_graphs_capture_end(g, m->ctx, bi, ci, rc == 0);
        }
    }
    TRY(m->ops->sync(m->ctx));
    struct model_graphs_stats s;
    model_graphs_get_stats(g, &s);
    log_info("cuda graphs: %d of %d decode graphs captured (batch buckets %d..%d x %d context "
             "buckets %d..%d) in %.2f s; they take %.1f MiB of device memory (the plan reserves "
             "%.1f MiB)",
             s.captured, nb * nc, bb[0], bb[nb - 1], nc, cb[0], cb[nc - 1], fwd_now() - t0,
             (double)s.bytes / (1 << 20), (double)s.limit / (1 << 20));
    return s.captured;
#else
    (void)m;
    return 0;
#endif
}

// ---- the step

// Checks the batch, sends its metadata and queues the network (graphed or not, padded as
// model_forward_padded says); the caller adds the step's one copy to the host (only the real
// rows: a padding row's logits are never read) and ends the profile step.
static int forward_queue(struct model *m, const struct model_batch *b, int pad_to,
                         enum model_fwd_mode mode, bool prof_ops) {
    TRY(check_batch(m, b));
    const int S = b->n_seqs;
    const bool decode = b->n_tokens == S;
    if (mode == MODEL_FWD_AUTO) pad_to = 0;
    if (pad_to && (pad_to < S || pad_to > m->max_seqs || pad_to > m->max_tokens || !decode))
        return err_set(ERR_INVAL,
                       "model_forward: cannot pad %d tokens of %d sequences to %d rows (a "
                       "decode step, at most %d sequences and %d tokens)",
                       b->n_tokens, S, pad_to, m->max_seqs, m->max_tokens);
    // The graph key: the smallest batch bucket that holds the step and its context bucket.
    int bi = -1, ci = -1, rows = pad_to, max_len = 0;
    for (int s = 0; s < S; s++)
        if (b->seq_lens[s] > max_len) max_len = b->seq_lens[s];
#ifdef KEEL_CUDA
    if (m->graphs && decode && !prof_ops && mode != MODEL_FWD_EAGER) {
        int nb;
        const int *bb = model_graphs_batch(m->graphs, &nb);
        bi = model_graphs_bucket_of(bb, nb, pad_to ? pad_to : S);
        ctx_bucket(m, max_len, &ci);
        if (bi >= 0 && pad_to && bb[bi] != pad_to) bi = -1; // no graph of exactly pad_to rows
        if (bi >= 0 && ci >= 0) rows = bb[bi];
    }
#endif
    if (mode == MODEL_FWD_GRAPH && (bi < 0 || ci < 0))
        return err_set(ERR_INVAL,
                       "model_forward: no graph for %d sequences (padded to %d) at context %d", S,
                       pad_to, max_len);

    m->n_steps++;
    if (m->inject_fault_step > 0 && m->n_steps >= m->inject_fault_step) {
        int rc = m->ops->debug_fault(m->ctx);
        log_error("KEEL_DEBUG_INJECT_FAULT: fault injected at forward step %lld",
                  (long long)m->n_steps);
        return rc ? rc
                  : err_set(ERR_CUDA_FAULT, "injected fault at forward step %lld",
                            (long long)m->n_steps);
    }
    const struct kern_ops *op = m->ops;
    struct kern_ctx *ctx = m->ctx;

    model_prof_step_begin(b->n_tokens, S);
    // Pack the metadata into the host staging buffer and send it in one copy.
    struct fwd_step st;
    pack_meta(m, b, rows, &st);
    // Tensor parallel: token ids become rows of this rank's embedding shard.
    if (m->tp.comm) model_tp_map_ids(m, m->host_meta + st.o.ids, st.n);
    if (rows) st.max_len = ctx_bucket(m, st.max_len, NULL); // as the graph was captured
    int32_t *meta = (int32_t *)(m->scratch_base + m->scratch.meta);
    OP(MODEL_PROF_META,
       op->copy_to_backend(ctx, meta, m->host_meta, st.o.n_ints * sizeof(int32_t)));

    int queued = 0;
#ifdef KEEL_CUDA
    if (bi >= 0 && ci >= 0) {
        queued = network_graphed(m, &st, bi, ci, mode);
        if (queued < 0) return queued;
    }
#endif
    if (!queued) TRY(network(m, &st, prof_ops));
    return 0;
}

// ---- a tensor-parallel rank's step (models/tp.c runs it on every rank's thread)

int model_tp_rank_step(struct model *m, const struct model_batch *b, const struct model_sample *s,
                       struct kern_sample_out *out, float *logits, bool *collectives_done) {
    const bool prof_ops = model_prof_mode() == MODEL_PROF_OPS;
    const struct kern_ops *op = m->ops;
    struct kern_ctx *ctx = m->ctx;
    const int S = b->n_seqs, vl = m->cfg.vocab_size, V = m->tp.full_vocab_size;
    *collectives_done = false;
    TRY(forward_queue(m, b, 0, MODEL_FWD_AUTO, prof_ops));
    if (!s) { // host assembly: the rank's slice goes to the host (models/tp.c places it)
        *collectives_done = true;
        OP(MODEL_PROF_COPY_OUT, op->copy_to_host(ctx, logits, m->logits, sizeof(float) * S * vl));
        model_prof_step_end();
        return 0;
    }
    // Every rank's [S, vocab_local] slice into rank 0's full rows (the padding columns of the
    // last rank dropped), then rank 0 samples them as model_forward_sample does at TP=1.
    struct mem_logits_layout ll;
    model_tp_logits_layout(m, &ll);
    float *buf = (float *)((uint8_t *)m->logits + ll.gather); // [tp, S, vocab_local]
    bool root = m->tp.rank == 0;
    OP(MODEL_PROF_COPY_OUT,
       kern_comm_gather_logits(m->tp.comm, ctx, root ? m->logits : NULL, m->logits, buf, S, vl, V));
    *collectives_done = true;
    if (root) {
        OP(MODEL_PROF_COPY_OUT, op->sample(ctx, out, m->logits, S, V, s->params, s->adj, s->n_adj));
    } else {
        // The step's work is queued: wait for it, so a fault shows in this step, and the host
        // staging of the metadata is free for the next one.
        OP(MODEL_PROF_COPY_OUT, op->sync(ctx));
    }
    model_prof_step_end();
    return 0;
}

int model_forward_padded(struct model *m, const struct model_batch *b, int pad_to,
                         enum model_fwd_mode mode, float *logits) {
    if (m->tp.group) {
        // Tensor parallel: the batch is checked here once against the full model, so a bad one
        // fails before any rank starts (a rank failing alone would have to abort the
        // collectives); each rank then pads and graphs its step as model_forward does.
        TRY(check_batch(m, b));
        return model_group_forward(m->tp.group, b, logits);
    }
    const bool prof_ops = model_prof_mode() == MODEL_PROF_OPS;
    const struct kern_ops *op = m->ops;
    struct kern_ctx *ctx = m->ctx;
    TRY(forward_queue(m, b, pad_to, mode, prof_ops));
    OP(MODEL_PROF_COPY_OUT,
       op->copy_to_host(ctx, logits, m->logits, sizeof(float) * b->n_seqs * m->cfg.vocab_size));
    model_prof_step_end();
    return 0;
}

int model_forward(struct model *m, const struct model_batch *b, float *logits) {
    return model_forward_padded(m, b, 0, MODEL_FWD_AUTO, logits);
}

// Sampling runs after the network (and after a graph's replay), on the same stream.
int model_forward_sample(struct model *m, const struct model_batch *b, const struct model_sample *s,
                         struct kern_sample_out *out) {
    const bool prof_ops = model_prof_mode() == MODEL_PROF_OPS;
    const struct kern_ops *op = m->ops;
    struct kern_ctx *ctx = m->ctx;
    if (m->tp.group) {
        // Tensor parallel: checked once against the full model (see model_forward_padded), then
        // every rank runs its step and rank 0 samples the gathered logits on its device.
        TRY(check_batch(m, b));
        return model_group_forward_sample(m->tp.group, b, s, out);
    }
    if (!op) return err_set(ERR_UNSUPPORTED, "this model has no backend to sample on");
    if (!op->sample) return err_set(ERR_UNSUPPORTED, "the %s backend has no sample op", op->name);
    TRY(forward_queue(m, b, 0, MODEL_FWD_AUTO, prof_ops));
    OP(MODEL_PROF_COPY_OUT,
       op->sample(ctx, out, m->logits, b->n_seqs, m->cfg.vocab_size, s->params, s->adj, s->n_adj));
    model_prof_step_end();
    return 0;
}

int model_logits_to_host(struct model *m, int n_seqs, float *logits) {
    if (n_seqs <= 0 || n_seqs > m->max_seqs)
        return err_set(ERR_INVAL, "model_logits_to_host: %d sequences (limit %d)", n_seqs,
                       m->max_seqs);
    if (m->tp.group) {
        // Rank 0's full rows hold the last device-sampled step's logits (the sample op leaves
        // them raw); rank 0 runs on this thread.
        struct model *r0 = model_group_rank(m->tp.group, 0);
        return r0->ops->copy_to_host(r0->ctx, logits, r0->logits,
                                     sizeof(float) * n_seqs * m->cfg.vocab_size);
    }
    return m->ops->copy_to_host(m->ctx, logits, m->logits,
                                sizeof(float) * n_seqs * m->cfg.vocab_size);
}

// Tensor parallelism, the model side (models/tp.h): shard shapes, loading a group of ranks, and
// running one step on all of them in lock-step.
//
// Threads: rank 0 runs on the caller's thread (the engine's), ranks 1..size-1 on workers that
// wait for a new step generation, run model_forward on their own model, and report. Every rank
// writes its [n_seqs, vocab_shard] logits to its own host buffer and then copies its columns
// into the caller's full logits, so the assembly runs in parallel and needs no collective.
#include "common/err.h"
#include "common/log.h"
#include "memory/plan.h"
#include "models/tp.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- shapes

int model_tp_vocab_shard(const struct model_config *full, int tp_size) {
    return (full->vocab_size + tp_size - 1) / tp_size;
}

int model_config_shard(const struct model_config *full, int tp_size, int rank,
                       struct model_config *out) {
    if (tp_size < 1 || rank < 0 || rank >= tp_size)
        return err_set(ERR_INVAL, "tensor parallel: rank %d of %d", rank, tp_size);
    const char *what = NULL;
    int v = 0;
    if (full->n_heads % tp_size) what = "num_attention_heads", v = full->n_heads;
    else if (full->n_kv_heads % tp_size) what = "num_key_value_heads", v = full->n_kv_heads;
    else if (full->hidden_dim % tp_size) what = "intermediate_size", v = full->hidden_dim;
    if (what)
        return err_set(ERR_INVAL,
                       "tensor_parallel_size %d does not divide the model's %s (%d): pick a "
                       "tensor_parallel_size that divides num_attention_heads (%d), "
                       "num_key_value_heads (%d) and intermediate_size (%d)",
                       tp_size, what, v, full->n_heads, full->n_kv_heads, full->hidden_dim);
    *out = *full;
    out->n_heads /= tp_size;
    out->n_kv_heads /= tp_size;
    out->hidden_dim /= tp_size;
    out->vocab_size = model_tp_vocab_shard(full, tp_size);
    return 0;
}

int model_plan_shape_shard(const struct model_config *full, int tp_size, int rank,
                           struct mem_plan_shape *s) {
    struct model_config local;
    int rc = model_config_shard(full, tp_size, rank, &local);
    if (rc) return rc;
    model_plan_shape(&local, s);
    s->weights_bytes = model_weights_bytes_shard(full, tp_size, rank);
    return 0;
}

void model_tp_map_ids(const struct model *m, int32_t *ids, int n) {
    const int32_t lo = m->tp.vocab_offset, rows = m->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        int32_t local = ids[i] - lo;
        ids[i] = local >= 0 && local < rows ? local : rows; // row `rows` is the zero row
    }
}

int model_tp_bind_thread(const struct model_tp_rank *r) {
#ifdef KEEL_CUDA
    if (r->ops == &kern_cuda_ops) return kern_cuda_bind_thread(r->ctx);
#endif
    (void)r;
    return 0;
}

// ---- the group

struct tp_rank_state {
    struct model_group *g;
    int rank;
    struct model m;
    struct model_tp_rank be; // the caller's backend and arena
    float *shard;            // host [max_seqs, vocab_shard]
    int rc;
    char msg[512];
    pthread_t thread;
    bool started;
};

struct model_group {
    int size;
    struct model front; // what the engine drives
    struct tp_rank_state *ranks; // [size]
    pthread_mutex_t mu;
    pthread_cond_t go_cv, done_cv;
    unsigned long long generation;
    int n_pending;
    bool stop;
    // the current step
    const struct model_batch *batch;
    float *logits;
};

// One rank's share of a step: its forward pass, then its columns of the full logits.
static void tp__run_rank(struct tp_rank_state *r, const struct model_batch *b, float *logits) {
    struct model_group *g = r->g;
    r->rc = model_tp_bind_thread(&r->be);
    if (!r->rc) r->rc = model_forward(&r->m, b, r->shard);
    if (r->rc) {
        snprintf(r->msg, sizeof r->msg, "%s", err_msg());
        // The other ranks may be waiting in a collective for this one.
        kern_comm_abort(r->m.tp.comm);
        return;
    }
    const int V = g->front.cfg.vocab_size, per = r->m.cfg.vocab_size, off = r->m.tp.vocab_offset;
    int cols = V - off < per ? V - off : per; // the last shard's padding columns are dropped
    if (cols <= 0) return;
    for (int s = 0; s < b->n_seqs; s++)
        memcpy(logits + (size_t)s * V + off, r->shard + (size_t)s * per, (size_t)cols * sizeof(float));
}

static void *tp__worker_main(void *arg) {
    struct tp_rank_state *r = arg;
    struct model_group *g = r->g;
    unsigned long long seen = 0;
    pthread_mutex_lock(&g->mu);
    for (;;) {
        while (!g->stop && g->generation == seen) pthread_cond_wait(&g->go_cv, &g->mu);
        if (g->stop) break;
        seen = g->generation;
        const struct model_batch *b = g->batch;
        float *logits = g->logits;
        pthread_mutex_unlock(&g->mu);
        tp__run_rank(r, b, logits);
        pthread_mutex_lock(&g->mu);
        if (--g->n_pending == 0) pthread_cond_signal(&g->done_cv);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int model_group_forward(struct model_group *g, const struct model_batch *b, float *logits) {
    pthread_mutex_lock(&g->mu);
    g->batch = b;
    g->logits = logits;
    g->n_pending = g->size - 1;
    g->generation++;
    pthread_cond_broadcast(&g->go_cv);
    pthread_mutex_unlock(&g->mu);

    tp__run_rank(&g->ranks[0], b, logits);

    pthread_mutex_lock(&g->mu);
    while (g->n_pending > 0) pthread_cond_wait(&g->done_cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    g->front.n_steps++;
    // Report the rank that failed first in its own right, not one that was released by the
    // abort (ERR_INTERNAL from the communicator) when another is there.
    int pick = -1;
    for (int r = 0; r < g->size; r++)
        if (g->ranks[r].rc && (pick < 0 || (g->ranks[pick].rc == ERR_INTERNAL &&
                                            g->ranks[r].rc != ERR_INTERNAL)))
            pick = r;
    if (pick < 0) return 0;
    if (g->size == 1) return err_set(g->ranks[pick].rc, "%s", g->ranks[pick].msg);
    return err_set(g->ranks[pick].rc, "tensor parallel rank %d: %s", pick, g->ranks[pick].msg);
}

struct model *model_group_model(struct model_group *g) { return &g->front; }

struct model *model_group_rank(struct model_group *g, int r) {
    return r >= 0 && r < g->size ? &g->ranks[r].m : NULL;
}

void model_group_free(struct model_group *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->go_cv);
    pthread_mutex_unlock(&g->mu);
    for (int r = 0; r < g->size; r++) {
        struct tp_rank_state *s = &g->ranks[r];
        if (s->started) pthread_join(s->thread, NULL);
        model_free(&s->m);
        model_weights_free(&s->m.w);
        kern_comm_free(s->m.tp.comm);
        free(s->shard);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->go_cv);
    pthread_cond_destroy(&g->done_cv);
    free(g->ranks);
    free(g);
}

// KEEL_TP_CUSTOM_AR=1 on CUDA: the one-shot peer-to-peer all-reduce for small messages
// (kernels/cuda/allreduce.cu), each rank's region carved from its arena (the plan's all-gather
// buffer, which the host-side logits assembly leaves unused, has room for it). Anything that
// does not work leaves NCCL in charge, with a warning.
static void tp__custom_all_reduce(struct model_group *g) {
#ifdef KEEL_CUDA
    const char *on = getenv("KEEL_TP_CUSTOM_AR"), *graphs = getenv("KEEL_TP_GRAPHS");
    if (!on || strcmp(on, "1") || g->ranks[0].be.ops != &kern_cuda_ops) return;
    if (graphs && !strcmp(graphs, "1")) {
        log_warn("KEEL_TP_CUSTOM_AR=1 is ignored with KEEL_TP_GRAPHS=1 (its call count is a "
                 "kernel argument, which a graph would freeze)");
        return;
    }
    struct kern_comm *comms[8];
    struct kern_ctx *ctxs[8];
    void *regions[8];
    if (g->size > 8) return;
    for (int r = 0; r < g->size; r++) {
        struct tp_rank_state *s = &g->ranks[r];
        comms[r] = s->m.tp.comm, ctxs[r] = s->be.ctx;
        if (mem_arena_carve(s->be.arena, "tp_allreduce", kern_cuda_allreduce_region_bytes(),
                            &regions[r])) {
            log_warn("KEEL_TP_CUSTOM_AR=1: no room for its region on rank %d (%s); NCCL only",
                     r, err_msg());
            return;
        }
    }
    if (kern_comm_p2p_init(comms, g->size, ctxs, regions))
        log_warn("KEEL_TP_CUSTOM_AR=1: %s; NCCL only", err_msg());
#else
    (void)g;
#endif
}

// Loads rank r's shard and builds its model.
static int tp__load_rank(struct model_group *g, int r, const struct model_config *full,
                         const char *dir, enum model_load_format fmt, uint64_t seed,
                         const struct mem_plan *plan, const struct mem_plan_settings *set) {
    struct tp_rank_state *s = &g->ranks[r];
    struct model_config local;
    int rc = model_config_shard(full, g->size, r, &local);
    if (rc) return rc;
    if ((rc = model_tp_bind_thread(&s->be))) return rc;
    s->m.tp.size = g->size;
    s->m.tp.rank = r;
    s->m.tp.vocab_offset = r * local.vocab_size;
    s->m.tp.full_vocab_size = full->vocab_size;
    if ((rc = model_weights_load_shard(&s->m.w, full, g->size, r, dir, fmt, seed, s->be.ops,
                                       s->be.ctx, s->be.arena)))
        return rc;
    if ((rc = model_init(&s->m, &local, s->be.ops, s->be.ctx, s->be.arena, plan, set))) return rc;
    s->shard = malloc((size_t)set->max_num_seqs * local.vocab_size * sizeof(float));
    if (!s->shard) return err_set(ERR_NOMEM, "tensor parallel: out of memory for logits");
    return 0;
}

int model_group_load(struct model_group **out, const struct model_config *full, const char *dir,
                     enum model_load_format fmt, uint64_t seed, const struct model_tp_rank *ranks,
                     struct kern_comm **comms, int size, const struct mem_plan_settings *set) {
    *out = NULL;
    struct model_group *g = calloc(1, sizeof *g);
    struct tp_rank_state *rs = size >= 1 ? calloc((size_t)size, sizeof *rs) : NULL;
    if (!g || !rs) {
        free(g);
        free(rs);
        for (int r = 0; r < size; r++) kern_comm_free(comms[r]);
        return err_set(size < 1 ? ERR_INVAL : ERR_NOMEM, "tensor parallel: group of %d", size);
    }
    g->size = size;
    g->ranks = rs;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->go_cv, NULL);
    pthread_cond_init(&g->done_cv, NULL);
    int64_t n_blocks = ranks[0].plan->num_kv_blocks;
    for (int r = 0; r < size; r++) {
        rs[r] = (struct tp_rank_state){.g = g, .rank = r, .be = ranks[r]};
        rs[r].m.tp.comm = comms[r];
        if (ranks[r].plan->num_kv_blocks < n_blocks) n_blocks = ranks[r].plan->num_kv_blocks;
    }
    int rc = 0;
    for (int r = 0; r < size && !rc; r++) {
        // Every rank gets the same number of KV blocks (block ids mean the same everywhere).
        struct mem_plan plan = *ranks[r].plan;
        plan.num_kv_blocks = n_blocks;
        rc = tp__load_rank(g, r, full, dir, fmt, seed, &plan, set);
    }
    if (!rc) {
        // The engine's view: the full config and the shared limits, no weights of its own.
        struct model *f = &g->front, *m0 = &rs[0].m;
        f->cfg = *full;
        // No backend of its own: nothing may queue work on it directly (the full logits exist
        // only on the host, so the engine samples there: no backend sample op to call).
        f->ops = NULL;
        f->ctx = NULL;
        f->n_kv_blocks = m0->n_kv_blocks;
        f->block_size = m0->block_size;
        f->max_tokens = m0->max_tokens;
        f->max_seqs = m0->max_seqs;
        f->max_blocks_per_seq = m0->max_blocks_per_seq;
        f->tp.size = size;
        f->tp.full_vocab_size = full->vocab_size;
        f->tp.group = g;
    }
    if (!rc) tp__custom_all_reduce(g);
    for (int r = 1; r < size && !rc; r++) {
        if (pthread_create(&rs[r].thread, NULL, tp__worker_main, &rs[r]) != 0)
            rc = err_set(ERR_INTERNAL, "tensor parallel: cannot start the thread of rank %d", r);
        else
            rs[r].started = true;
    }
    if (rc) {
        model_group_free(g);
        return rc;
    }
    log_info("tensor parallel: %d ranks, %d KV blocks each, %d of %d heads per rank", size,
             g->front.n_kv_blocks, rs[0].m.cfg.n_heads, full->n_heads);
    *out = g;
    return 0;
}

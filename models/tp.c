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
#include "models/graph.h"
#include "models/tp.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

// ---- switches

static bool tp__env_on(const char *name) {
    const char *v = getenv(name);
    return !v || strcmp(v, "0") != 0;
}

bool model_tp_graphs_on(void) { return tp__env_on("KEEL_TP_GRAPHS"); }
bool model_tp_device_sample_on(void) { return tp__env_on("KEEL_TP_DEVICE_SAMPLE"); }

// How long a waiting side spins (yielding) on the step counters before it sleeps on the
// condition variable: a decode step's hand-offs come every few milliseconds, and a wake-up from
// a condition variable costs tens of microseconds on each of them. KEEL_TP_SPIN_US overrides.
#define TP_SPIN_US_DEFAULT 2000

static double tp__now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

// ---- the group

enum tp_job { TP_JOB_HOST, TP_JOB_SAMPLE, TP_JOB_WARMUP };

struct tp_rank_state {
    struct model_group *g;
    int rank;
    struct model m;
    struct model_tp_rank be; // the caller's backend and arena
    float *shard;            // host [max_seqs, vocab_shard] (host assembly only)
    int rc;
    int captured; // graphs of the last warm-up
    char msg[512];
    pthread_t thread;
    bool started;
};

// The lock-step: the engine's thread publishes a job and bumps `generation`; each worker spins
// (then sleeps) until it sees the new generation, runs its rank's share and decrements
// `n_pending`; the engine's thread runs rank 0 meanwhile and then waits for n_pending == 0. The
// counters are sequentially consistent atomics, so a side that goes to sleep (counting itself in
// n_sleeping under the mutex) is never missed by the other's wake-up.
struct model_group {
    int size;
    struct model front;          // what the engine drives
    struct tp_rank_state *ranks; // [size]
    pthread_mutex_t mu;
    pthread_cond_t go_cv, done_cv;
    _Atomic unsigned long long generation;
    _Atomic int n_pending;
    _Atomic int n_sleeping; // workers asleep on go_cv
    _Atomic bool stop;
    double spin_us;
    // the current job (written before generation moves, read after)
    enum tp_job job;
    const struct model_batch *batch;
    const struct model_sample *sample;
    struct kern_sample_out *out;
    float *logits;
};

// Fails rank r's share with the current error; before the rank's last collective the others may
// be waiting in one for it, so the communicator is aborted (the group cannot run again).
static void tp__fail(struct tp_rank_state *r, int rc, bool abort_comm) {
    r->rc = rc;
    snprintf(r->msg, sizeof r->msg, "%s", err_msg());
    if (abort_comm) kern_comm_abort(r->m.tp.comm);
}

// One rank's share of the current job.
static void tp__run_rank(struct tp_rank_state *r) {
    struct model_group *g = r->g;
    const struct model_batch *b = g->batch;
    bool done = false;
    r->rc = 0;
    int rc = model_tp_bind_thread(&r->be);
    if (rc) {
        tp__fail(r, rc, true);
        return;
    }
    if (g->job == TP_JOB_WARMUP) {
        rc = model_graphs_warmup(&r->m);
        r->captured = rc > 0 ? rc : 0;
        if (rc < 0) tp__fail(r, rc, true);
        return;
    }
    if (g->job == TP_JOB_SAMPLE) {
        rc = model_tp_rank_step(&r->m, b, g->sample, r->rank == 0 ? g->out : NULL, NULL, &done);
        if (rc) tp__fail(r, rc, !done || r->rank != 0);
        return;
    }
    rc = model_tp_rank_step(&r->m, b, NULL, NULL, r->shard, &done);
    if (rc) {
        tp__fail(r, rc, true);
        return;
    }
    // Its columns of the full logits; the last shard's padding columns are dropped.
    const int V = g->front.cfg.vocab_size, per = r->m.cfg.vocab_size, off = r->m.tp.vocab_offset;
    int cols = V - off < per ? V - off : per;
    if (cols <= 0) return;
    for (int s = 0; s < b->n_seqs; s++)
        memcpy(g->logits + (size_t)s * V + off, r->shard + (size_t)s * per,
               (size_t)cols * sizeof(float));
}

static void *tp__worker_main(void *arg) {
    struct tp_rank_state *r = arg;
    struct model_group *g = r->g;
    unsigned long long seen = 0;
    for (;;) {
        double t0 = g->spin_us > 0 ? tp__now_us() : 0;
        while (atomic_load(&g->generation) == seen && !atomic_load(&g->stop) &&
               g->spin_us > 0 && tp__now_us() - t0 < g->spin_us)
            sched_yield();
        if (atomic_load(&g->generation) == seen && !atomic_load(&g->stop)) {
            pthread_mutex_lock(&g->mu);
            atomic_fetch_add(&g->n_sleeping, 1);
            while (atomic_load(&g->generation) == seen && !atomic_load(&g->stop))
                pthread_cond_wait(&g->go_cv, &g->mu);
            atomic_fetch_sub(&g->n_sleeping, 1);
            pthread_mutex_unlock(&g->mu);
        }
        if (atomic_load(&g->stop)) break;
        seen = atomic_load(&g->generation);
        tp__run_rank(r);
        if (atomic_fetch_sub(&g->n_pending, 1) == 1) {
            pthread_mutex_lock(&g->mu);
            pthread_cond_signal(&g->done_cv);
            pthread_mutex_unlock(&g->mu);
        }
    }
    return NULL;
}

// Runs the published job on every rank (rank 0 here) and returns the step's error, if any.
static int tp__run_job(struct model_group *g) {
    atomic_store(&g->n_pending, g->size - 1);
    atomic_fetch_add(&g->generation, 1);
    if (atomic_load(&g->n_sleeping) > 0) {
        pthread_mutex_lock(&g->mu);
        pthread_cond_broadcast(&g->go_cv);
        pthread_mutex_unlock(&g->mu);
    }

    tp__run_rank(&g->ranks[0]);

    double t0 = g->spin_us > 0 ? tp__now_us() : 0;
    while (atomic_load(&g->n_pending) > 0 && g->spin_us > 0 && tp__now_us() - t0 < g->spin_us)
        sched_yield();
    if (atomic_load(&g->n_pending) > 0) {
        pthread_mutex_lock(&g->mu);
        while (atomic_load(&g->n_pending) > 0) pthread_cond_wait(&g->done_cv, &g->mu);
        pthread_mutex_unlock(&g->mu);
    }
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

int model_group_forward(struct model_group *g, const struct model_batch *b, float *logits) {
    g->job = TP_JOB_HOST;
    g->batch = b;
    g->logits = logits;
    g->front.n_steps++;
    return tp__run_job(g);
}

int model_group_forward_sample(struct model_group *g, const struct model_batch *b,
                               const struct model_sample *s, struct kern_sample_out *out) {
    // The ranks' logits regions hold the all-gather buffer only when device sampling was on at
    // load (models/forward.c model_init); the front model's backend says so.
    if (!g->front.ops)
        return err_set(ERR_UNSUPPORTED, "tensor parallel: device sampling is off "
                                        "(KEEL_TP_DEVICE_SAMPLE=0 at start-up); sample on the host");
    for (int r = 0; r < g->size; r++)
        if (!g->ranks[r].be.ops->sample)
            return err_set(ERR_UNSUPPORTED, "the %s backend has no sample op",
                           g->ranks[r].be.ops->name);
    g->job = TP_JOB_SAMPLE;
    g->batch = b;
    g->sample = s;
    g->out = out;
    g->front.n_steps++;
    return tp__run_job(g);
}

int model_group_graphs_warmup(struct model_group *g) {
    if (!g->ranks[0].m.graphs) return 0;
    g->job = TP_JOB_WARMUP;
    g->batch = NULL;
    int rc = tp__run_job(g);
    if (rc) return rc;
    // Ranks that captured different keys still meet in every collective (a graph holds the same
    // calls as the eager step), but it says the ranks' graph memory differs: worth a line.
    for (int r = 1; r < g->size; r++)
        if (g->ranks[r].captured != g->ranks[0].captured)
            log_warn("tensor parallel: rank %d captured %d decode graphs, rank 0 %d", r,
                     g->ranks[r].captured, g->ranks[0].captured);
    return g->ranks[0].captured;
}

struct model *model_group_model(struct model_group *g) { return &g->front; }

struct model *model_group_rank(struct model_group *g, int r) {
    return r >= 0 && r < g->size ? &g->ranks[r].m : NULL;
}

void model_group_free(struct model_group *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    atomic_store(&g->stop, true);
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

// The one-shot peer-to-peer all-reduce (kernels/cuda/allreduce.cu) on CUDA, unless
// KEEL_TP_CUSTOM_AR=0: every all-reduce of at most MEM_PLAN_TP_COMM_TOKENS rows (decode steps)
// takes it, eagerly and inside graphs; larger ones (prefill) stay on NCCL. Its areas are the
// plan's `comm` part of the rank's logits region (memory/plan.h mem_logits_layout) when device
// sampling carved that region whole; with host sampling only the LM head's slice of it is carved,
// and the same bytes come from the arena's slack. Anything that does not work leaves NCCL in
// charge, with a warning.
static void tp__custom_all_reduce(struct model_group *g) {
#ifdef KEEL_CUDA
    const char *on = getenv("KEEL_TP_CUSTOM_AR");
    if ((on && !strcmp(on, "0")) || g->ranks[0].be.ops != &kern_cuda_ops || g->size > 8) return;
    struct kern_comm *comms[8];
    struct kern_ctx *ctxs[8];
    void *ctrl[8], *data[8];
    const size_t ctrl_bytes = MEM_PLAN_TP_COMM_CTRL_BYTES;
    if (kern_cuda_allreduce_ctrl_bytes() > ctrl_bytes) {
        log_warn("tensor parallel: the peer-to-peer all-reduce needs %zu control bytes, the plan "
                 "has %zu; NCCL only", kern_cuda_allreduce_ctrl_bytes(), ctrl_bytes);
        return;
    }
    size_t comm_bytes = 0;
    for (int r = 0; r < g->size; r++) {
        struct tp_rank_state *s = &g->ranks[r];
        comms[r] = s->m.tp.comm, ctxs[r] = s->be.ctx;
        struct mem_logits_layout ll;
        model_tp_logits_layout(&s->m, &ll);
        comm_bytes = ll.comm_bytes; // the same on every rank (same shapes)
        if (comm_bytes <= ctrl_bytes) return;
        if (g->front.ops) // device sampling: the logits region was carved whole
            ctrl[r] = (uint8_t *)s->m.logits + ll.comm;
        else if (mem_arena_carve(s->be.arena, "tp_allreduce", comm_bytes, &ctrl[r])) {
            log_warn("tensor parallel: no room for the peer-to-peer all-reduce on rank %d (%s); "
                     "NCCL only", r, err_msg());
            return;
        }
        data[r] = (uint8_t *)ctrl[r] + ctrl_bytes;
    }
    if (kern_comm_p2p_init(comms, g->size, ctxs, ctrl, data, comm_bytes - ctrl_bytes))
        log_warn("tensor parallel: peer-to-peer all-reduce off (%s); NCCL only", err_msg());
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
    atomic_init(&g->generation, 0);
    atomic_init(&g->n_pending, 0);
    atomic_init(&g->n_sleeping, 0);
    atomic_init(&g->stop, false);
    const char *spin = getenv("KEEL_TP_SPIN_US");
    g->spin_us = spin && *spin ? strtod(spin, NULL) : TP_SPIN_US_DEFAULT;
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
        // Device sampling: rank 0's backend, so the engine finds a sample op and calls
        // model_forward_sample (which hands the step to the group; nothing else queues work on
        // the front model). Otherwise none: the full logits exist only on the host, and the
        // engine samples there.
        bool dev = model_tp_device_sample_on() && ranks[0].ops->sample;
        f->ops = dev ? ranks[0].ops : NULL;
        f->ctx = dev ? ranks[0].ctx : NULL;
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
    if (!rc && model_tp_graphs_on() && rs[0].m.graphs) {
        int n = model_group_graphs_warmup(g);
        if (n < 0) rc = n;
    }
    if (rc) {
        model_group_free(g);
        return rc;
    }
    if (!g->front.ops) log_info("tensor parallel: sampling on the host (KEEL_TP_DEVICE_SAMPLE=0)");
    log_info("tensor parallel: %d ranks, %d KV blocks each, %d of %d heads per rank", size,
             g->front.n_kv_blocks, rs[0].m.cfg.n_heads, full->n_heads);
    *out = g;
    return 0;
}

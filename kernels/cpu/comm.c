// The CPU communicator: the ranks of a tensor-parallel group are threads of this process. A
// collective is a few rounds of "publish my buffer, wait at the barrier, work on everyone's".
//
// all_reduce splits the elements into one stretch per rank; each rank sums its stretch over all
// ranks in rank order (float32, one bf16 rounding at the end) into the group's shared result,
// and after a barrier every rank copies the whole result back. Summing in a fixed order makes
// the result identical on every rank and every run, as TP needs: ranks that disagreed about the
// residual stream would drift apart.
//
// A rank that fails mid-step calls kern_comm_abort; the barrier then releases everyone with
// ERR_INTERNAL instead of waiting for a rank that will never come.
#include "common/err.h"
#include "kernels/comm.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define COMM_MAX_RANKS 64

// What a group shares: the barrier and the published buffers.
struct comm_group {
    int size;
    int n_alive; // ends not yet freed; the last one frees the group
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_waiting;
    unsigned long long generation;
    bool aborted;
    const void *bufs[COMM_MAX_RANKS]; // this round's published buffers
    bf16 *result;                     // [result_cap] the all_reduce result
    size_t result_cap;
};

// One rank's end, for both backends: the CPU group, or NCCL's communicator (comm_cuda.c makes
// those through kern__comm_wrap and gets its calls through the kern__nccl_* functions).
struct kern_comm {
    int size, rank;
    int backend;          // 0 = CPU, 1 = NCCL
    struct comm_group *g; // CPU
    void *nccl;           // NCCL: its ncclComm_t
    void *p2p;            // NCCL ends: the peer-to-peer all-reduce's state, or NULL
};

// ---- the barrier

static int comm__barrier(struct comm_group *g) {
    pthread_mutex_lock(&g->mu);
    if (g->aborted) {
        pthread_mutex_unlock(&g->mu);
        return err_set(ERR_INTERNAL, "tensor parallel: another rank failed this step");
    }
    unsigned long long gen = g->generation;
    if (++g->n_waiting == g->size) {
        g->n_waiting = 0;
        g->generation++;
        pthread_cond_broadcast(&g->cv);
    } else {
        while (g->generation == gen && !g->aborted) pthread_cond_wait(&g->cv, &g->mu);
    }
    bool aborted = g->aborted;
    pthread_mutex_unlock(&g->mu);
    return aborted ? err_set(ERR_INTERNAL, "tensor parallel: another rank failed this step") : 0;
}

// ---- collectives

static int cpu__all_reduce(struct kern_comm *c, bf16 *x, size_t n) {
    struct comm_group *g = c->g;
    int rc;
    if (c->rank == 0 && g->result_cap < n) {
        // Grown by rank 0 before the first barrier, so nobody uses it while it moves. Steps
        // repeat the same sizes, so this happens only on the first few collectives.
        bf16 *r = realloc(g->result, n * sizeof(bf16));
        if (!r) {
            kern_comm_abort(c);
            return err_set(ERR_NOMEM, "tensor parallel: %zu bytes of all_reduce buffer", n * 2);
        }
        g->result = r;
        g->result_cap = n;
    }
    g->bufs[c->rank] = x;
    if ((rc = comm__barrier(g))) return rc;
    size_t per = (n + (size_t)g->size - 1) / (size_t)g->size;
    size_t b = per * (size_t)c->rank, e = b + per < n ? b + per : n;
    for (size_t i = b; i < e; i++) {
        float s = 0.0f;
        for (int r = 0; r < g->size; r++) s += bf16_to_f32(((const bf16 *)g->bufs[r])[i]);
        g->result[i] = f32_to_bf16(s);
    }
    if ((rc = comm__barrier(g))) return rc;
    memcpy(x, g->result, n * sizeof(bf16));
    // Nobody may start the next round (and overwrite the result) before everyone has copied.
    return comm__barrier(g);
}

static int cpu__all_gather(struct kern_comm *c, void *out, const void *in, size_t bytes) {
    struct comm_group *g = c->g;
    int rc;
    g->bufs[c->rank] = in;
    if ((rc = comm__barrier(g))) return rc;
    for (int r = 0; r < g->size; r++) {
        uint8_t *dst = (uint8_t *)out + (size_t)r * bytes;
        if (dst != g->bufs[r]) memmove(dst, g->bufs[r], bytes);
    }
    return comm__barrier(g);
}

// ---- the public surface (dispatching to NCCL for its ends)

#ifdef KEEL_CUDA
int kern__nccl_all_reduce_bf16(void *nccl, void *p2p, struct kern_ctx *ctx, bf16 *x, size_t n);
void kern__p2p_free(void *p2p);
int kern__nccl_all_gather(void *nccl, struct kern_ctx *ctx, void *out, const void *in, size_t n,
                          int is_f32);
void kern__nccl_free(void *nccl);
void kern__nccl_abort(void *nccl);

// Wraps an NCCL communicator (comm_cuda.c) as a rank's end; NULL when out of memory.
struct kern_comm *kern__comm_wrap(int size, int rank, void *nccl);
void **kern__comm_p2p_slot(struct kern_comm *c);
void **kern__comm_p2p_slot(struct kern_comm *c) { return c->backend == 1 ? &c->p2p : NULL; }

struct kern_comm *kern__comm_wrap(int size, int rank, void *nccl) {
    struct kern_comm *c = calloc(1, sizeof *c);
    if (c) *c = (struct kern_comm){.size = size, .rank = rank, .backend = 1, .nccl = nccl};
    return c;
}
#endif

int kern_comm_size(const struct kern_comm *c) { return c->size; }
int kern_comm_rank(const struct kern_comm *c) { return c->rank; }

int kern_comm_all_reduce_bf16(struct kern_comm *c, struct kern_ctx *ctx, bf16 *x, size_t n) {
#ifdef KEEL_CUDA
    if (c->backend == 1) return kern__nccl_all_reduce_bf16(c->nccl, c->p2p, ctx, x, n);
#endif
    (void)ctx;
    return cpu__all_reduce(c, x, n);
}

int kern_comm_all_gather_f32(struct kern_comm *c, struct kern_ctx *ctx, float *out,
                             const float *in, size_t n) {
#ifdef KEEL_CUDA
    if (c->backend == 1) return kern__nccl_all_gather(c->nccl, ctx, out, in, n, 1);
#endif
    (void)ctx;
    return cpu__all_gather(c, out, in, n * sizeof(float));
}

int kern_comm_all_gather_bf16(struct kern_comm *c, struct kern_ctx *ctx, bf16 *out, const bf16 *in,
                              size_t n) {
#ifdef KEEL_CUDA
    if (c->backend == 1) return kern__nccl_all_gather(c->nccl, ctx, out, in, n, 0);
#endif
    (void)ctx;
    return cpu__all_gather(c, out, in, n * sizeof(bf16));
}

void kern_comm_abort(struct kern_comm *c) {
    if (!c) return;
#ifdef KEEL_CUDA
    if (c->backend == 1) {
        kern__nccl_abort(c->nccl);
        return;
    }
#endif
    pthread_mutex_lock(&c->g->mu);
    c->g->aborted = true;
    pthread_cond_broadcast(&c->g->cv);
    pthread_mutex_unlock(&c->g->mu);
}

void kern_comm_free(struct kern_comm *c) {
    if (!c) return;
#ifdef KEEL_CUDA
    if (c->backend == 1) {
        kern__nccl_free(c->nccl);
        kern__p2p_free(c->p2p);
        free(c);
        return;
    }
#endif
    struct comm_group *g = c->g;
    pthread_mutex_lock(&g->mu);
    bool last = --g->n_alive == 0;
    pthread_mutex_unlock(&g->mu);
    free(c);
    if (!last) return;
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->result);
    free(g);
}

int kern_cpu_comm_init_all(struct kern_comm **comms, int n_ranks) {
    if (n_ranks < 1 || n_ranks > COMM_MAX_RANKS)
        return err_set(ERR_INVAL, "tensor parallel: %d ranks (1..%d)", n_ranks, COMM_MAX_RANKS);
    struct comm_group *g = calloc(1, sizeof *g);
    if (!g) return err_set(ERR_NOMEM, "tensor parallel: out of memory");
    g->size = n_ranks;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (int r = 0; r < n_ranks; r++) {
        comms[r] = calloc(1, sizeof **comms);
        if (!comms[r]) {
            for (int i = 0; i < r; i++) kern_comm_free(comms[i]);
            if (r == 0) {
                pthread_mutex_destroy(&g->mu);
                pthread_cond_destroy(&g->cv);
                free(g);
            }
            return err_set(ERR_NOMEM, "tensor parallel: out of memory");
        }
        *comms[r] = (struct kern_comm){.size = n_ranks, .rank = r, .backend = 0, .g = g};
        g->n_alive++;
    }
    return 0;
}

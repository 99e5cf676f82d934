// CUDA graphs of small decode steps: capture, a small least-recently-used table, replay.
// See models/graph.h for why and when; the forward pass (models/forward.c) decides what to
// capture. This file only reads the context's stream (kernels/cuda/ctx.h); it launches nothing
// of its own besides the graphs.
#include "models/graph.h"

#include "common/cuda_check.h"
#include "common/err.h"
#include "common/log.h"
#include "kernels/cuda/ctx.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

// ---- the table

// Graphs kept at once: a few batch sizes times a few context buckets.
#define GRAPH_SLOTS 24

struct graph_slot {
    int n_seqs, ctx_bucket; // the key; n_seqs 0 = empty
    int seen;               // times the key was asked for
    unsigned long long used;
    cudaGraphExec_t exec; // NULL until captured
};

struct model_graphs {
    unsigned long long clock;
    bool disabled; // a capture failed once: run eagerly from then on
    struct graph_slot slots[GRAPH_SLOTS];
};

bool model_graphs_usable(const struct kern_ops *ops) {
    if (ops != &kern_cuda_ops) return false;
    const char *v = getenv("KEEL_CUDA_GRAPHS");
    return !(v && !strcmp(v, "0"));
}

int model_graphs_init(struct model_graphs **g) {
    *g = calloc(1, sizeof **g);
    return *g ? 0 : err_set(ERR_NOMEM, "model_graphs_init");
}

static void graph_slot_clear(struct graph_slot *s) {
    if (s->exec) cudaGraphExecDestroy(s->exec);
    memset(s, 0, sizeof *s);
}

void model_graphs_free(struct model_graphs *g) {
    if (!g) return;
    for (int i = 0; i < GRAPH_SLOTS; i++)
        graph_slot_clear(&g->slots[i]);
    free(g);
}

// The slot of key, or a fresh one (the least recently used is evicted).
static struct graph_slot *graph_find(struct model_graphs *g, int n_seqs, int ctx_bucket) {
    struct graph_slot *victim = &g->slots[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        struct graph_slot *s = &g->slots[i];
        if (s->n_seqs == n_seqs && s->ctx_bucket == ctx_bucket) return s;
        if (s->used < victim->used) victim = s;
    }
    graph_slot_clear(victim);
    victim->n_seqs = n_seqs;
    victim->ctx_bucket = ctx_bucket;
    return victim;
}

// ---- replay and capture

int model_graphs_replay(struct model_graphs *g, struct kern_ctx *ctx, int n_seqs, int ctx_bucket,
                        int *seen) {
    *seen = 0;
    if (g->disabled) return 0;
    struct graph_slot *s = graph_find(g, n_seqs, ctx_bucket);
    s->used = ++g->clock;
    *seen = s->seen++;
    if (!s->exec) return 0;
    CUDA_CHECK(cudaGraphLaunch(s->exec, ctx->stream));
    return 1;
}

// Turns graphs off after a failed capture; the step then runs eagerly, so nothing is lost
// but speed. The CUDA error left by the failure is cleared so it does not poison the next call.
static int graph_give_up(struct model_graphs *g, const char *what, cudaError_t e) {
    (void)cudaGetLastError();
    if (!g->disabled)
        log_warn("cuda graphs: %s failed (%s); decode steps run without graphs from now on", what,
                 cudaGetErrorName(e));
    g->disabled = true;
    return 0;
}

int model_graphs_capture_begin(struct model_graphs *g, struct kern_ctx *ctx) {
    // Thread-local mode: other threads (the HTTP loop) are not restricted while this one
    // captures; this thread makes no unsafe calls during the step (no allocation, no sync).
    cudaError_t e = cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) return graph_give_up(g, "cudaStreamBeginCapture", e);
    return 1;
}

int model_graphs_capture_end(struct model_graphs *g, struct kern_ctx *ctx, int n_seqs,
                             int ctx_bucket, bool ok) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(ctx->stream, &graph);
    if (!ok) {
        if (graph) cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        return 0;
    }
    if (e != cudaSuccess || !graph) return graph_give_up(g, "cudaStreamEndCapture", e);
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) return graph_give_up(g, "cudaGraphInstantiate", e);
    struct graph_slot *s = graph_find(g, n_seqs, ctx_bucket);
    if (s->exec) cudaGraphExecDestroy(s->exec);
    s->exec = exec;
    s->used = ++g->clock;
    CUDA_CHECK(cudaGraphLaunch(exec, ctx->stream));
    log_debug("cuda graphs: captured a decode step of %d sequences, context bucket %d", n_seqs,
              ctx_bucket);
    return 1;
}

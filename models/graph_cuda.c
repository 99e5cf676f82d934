// CUDA graphs of decode steps: a table of (batch bucket, context bucket) slots, capture with a
// measured memory budget, and replay. See models/graph.h for why and when; the forward pass
// (models/forward.c) decides what to capture and pads the steps. This file only reads the
// context's stream (kernels/cuda/ctx.h); it launches nothing of its own besides the graphs.
#include "models/graph.h"

#include "common/cuda_check.h"
#include "common/err.h"
#include "common/log.h"
#include "kernels/cuda/ctx.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- the table

struct graph_slot {
    int seen;             // times the key was asked for (lazy capture warms a key first)
    cudaGraphExec_t exec; // NULL until captured
};

struct model_graphs {
    int batch[MODEL_GRAPHS_MAX_BUCKETS], ctx[MODEL_GRAPHS_MAX_BUCKETS];
    int n_batch, n_ctx;
    struct graph_slot *slots; // [n_batch * n_ctx], batch-major
    size_t limit;             // device bytes the executables may take in all
    size_t bytes;             // what they took, measured
    size_t most;              // the largest one graph took: the next capture may take as much
    int captured, replays;
    double capture_s;
    double t0;     // when the capture in flight began
    size_t free0;  // free device memory before the capture in flight
    bool disabled; // a capture failed once: run eagerly from then on
    bool full;     // the reservation is spent: no more captures
};

static double graph_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool model_graphs_usable(const struct kern_ops *ops) {
    return ops == &kern_cuda_ops && model_graphs_enabled();
}

int model_graphs_init(struct model_graphs **g, const int *batch, int n_batch, const int *ctx,
                      int n_ctx, size_t limit) {
    *g = NULL;
    if (n_batch < 1 || n_ctx < 1 || n_batch > MODEL_GRAPHS_MAX_BUCKETS ||
        n_ctx > MODEL_GRAPHS_MAX_BUCKETS)
        return err_set(ERR_INVAL, "model_graphs_init: %d batch and %d context buckets (1..%d)",
                       n_batch, n_ctx, MODEL_GRAPHS_MAX_BUCKETS);
    struct model_graphs *t = calloc(1, sizeof *t);
    if (t) t->slots = calloc((size_t)n_batch * n_ctx, sizeof *t->slots);
    if (!t || !t->slots) {
        free(t);
        return err_set(ERR_NOMEM, "model_graphs_init");
    }
    memcpy(t->batch, batch, sizeof(int) * n_batch);
    memcpy(t->ctx, ctx, sizeof(int) * n_ctx);
    t->n_batch = n_batch;
    t->n_ctx = n_ctx;
    t->limit = limit;
    *g = t;
    return 0;
}

void model_graphs_free(struct model_graphs *g) {
    if (!g) return;
    for (int i = 0; i < g->n_batch * g->n_ctx; i++)
        if (g->slots[i].exec) cudaGraphExecDestroy(g->slots[i].exec);
    free(g->slots);
    free(g);
}

const int *model_graphs_batch(const struct model_graphs *g, int *n) {
    *n = g->n_batch;
    return g->batch;
}

const int *model_graphs_ctx(const struct model_graphs *g, int *n) {
    *n = g->n_ctx;
    return g->ctx;
}

static struct graph_slot *graph_slot(struct model_graphs *g, int bi, int ci) {
    if (bi < 0 || bi >= g->n_batch || ci < 0 || ci >= g->n_ctx) return NULL;
    return &g->slots[(size_t)bi * g->n_ctx + ci];
}

void model_graphs_get_stats(const struct model_graphs *g, struct model_graphs_stats *st) {
    *st = (struct model_graphs_stats){.n_batch = g->n_batch,
                                      .n_ctx = g->n_ctx,
                                      .captured = g->captured,
                                      .replays = g->replays,
                                      .bytes = g->bytes,
                                      .limit = g->limit,
                                      .capture_s = g->capture_s,
                                      .disabled = g->disabled,
                                      .full = g->full};
}

// ---- replay

int model_graphs_launch(struct model_graphs *g, struct kern_ctx *ctx, int bi, int ci) {
    struct graph_slot *s = graph_slot(g, bi, ci);
    if (!s || !s->exec || g->disabled) return 0;
    CUDA_CHECK(cudaGraphLaunch(s->exec, ctx->stream));
    g->replays++;
    return 1;
}

int model_graphs_seen(struct model_graphs *g, int bi, int ci) {
    struct graph_slot *s = graph_slot(g, bi, ci);
    return s ? s->seen++ : 0;
}

// ---- capture

bool model_graphs_can_capture(const struct model_graphs *g) {
    return !g->disabled && !g->full;
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
    if (!model_graphs_can_capture(g)) return 0;
    // The memory this graph will take is measured from here; nothing else allocates device
    // memory in keel after start-up, so the difference is the graph's.
    size_t total = 0;
    g->free0 = 0;
    if (cudaMemGetInfo(&g->free0, &total) != cudaSuccess) g->free0 = 0;
    g->t0 = graph_now();
    // Thread-local mode: other threads (the HTTP loop) are not restricted while this one
    // captures; this thread makes no unsafe calls during the step (no allocation, no sync).
    cudaError_t e = cudaStreamBeginCapture(ctx->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) return graph_give_up(g, "cudaStreamBeginCapture", e);
    return 1;
}

// Adds what the last capture took to the running sum; marks the reservation spent when one
// more graph of the largest size seen would not fit in it.
static void graph_account(struct model_graphs *g) {
    size_t free1 = 0, total = 0;
    if (g->free0 && cudaMemGetInfo(&free1, &total) == cudaSuccess && free1 < g->free0) {
        size_t took = g->free0 - free1;
        g->bytes += took;
        if (took > g->most) g->most = took;
    }
    g->capture_s += graph_now() - g->t0;
    if (!g->full && g->bytes + g->most > g->limit) {
        g->full = true;
        log_warn("cuda graphs: %d graphs took %.1f MiB of the %.1f MiB the plan reserves for "
                 "them; steps of the remaining buckets run without graphs",
                 g->captured, (double)g->bytes / (1 << 20), (double)g->limit / (1 << 20));
    }
}

int model_graphs_capture_end(struct model_graphs *g, struct kern_ctx *ctx, int bi, int ci,
                             bool ok) {
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(ctx->stream, &graph);
    struct graph_slot *s = graph_slot(g, bi, ci);
    if (!ok || !s) {
        // The step failed while capturing (an op that cannot be captured, most likely; a real
        // fault fails the eager step the caller runs next, too): no graphs from now on.
        if (graph) cudaGraphDestroy(graph);
        return graph_give_up(g, "a step under capture", e != cudaSuccess ? e : cudaGetLastError());
    }
    if (e != cudaSuccess || !graph) return graph_give_up(g, "cudaStreamEndCapture", e);
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (e != cudaSuccess) return graph_give_up(g, "cudaGraphInstantiate", e);
    // Upload now, so the executable's device memory is taken here and not at its first launch
    // in a request path.
    e = cudaGraphUpload(exec, ctx->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(ctx->stream);
    if (e != cudaSuccess) {
        cudaGraphExecDestroy(exec);
        return graph_give_up(g, "cudaGraphUpload", e);
    }
    if (s->exec) cudaGraphExecDestroy(s->exec);
    s->exec = exec;
    g->captured++;
    graph_account(g);
    log_debug("cuda graphs: captured a decode step of %d rows, context bucket %d", g->batch[bi],
              g->ctx[ci]);
    return 1;
}

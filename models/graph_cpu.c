// The backend-independent half of the decode graphs: the batch and context buckets. Pure
// functions, built on every backend, so the CPU tests pin the same bucketing the CUDA graphs use
// (models/graph.h says why these buckets).
#include "models/graph.h"

#include "common/log.h"

#include <stdlib.h>
#include <string.h>

// ---- buckets

int model_graphs_batch_buckets(int max_seqs, int cap, int *out, int n_out) {
    int top = max_seqs < cap ? max_seqs : cap;
    int n = 0;
    if (top < 1) return 0;
    // Powers of two below the top, then the top itself: a step pads by less than 2x.
    for (int b = 1; b < top && n < n_out; b *= 2)
        out[n++] = b;
    if (n < n_out) out[n++] = top;
    return n;
}

int model_graphs_ctx_buckets(int max_ctx, int *out, int n_out) {
    int n = 0;
    if (max_ctx < 1) return 0;
    // 1024, then 2048, 3072, 4096, 6144, ...: the hint overshoots a context by at most 1024
    // tokens or 50%, so a split-KV attention sized by the hint keeps most of its slices busy.
    long p = MODEL_GRAPHS_CTX_MIN;
    if (p < max_ctx && n < n_out) out[n++] = (int)p;
    for (p = 2 * MODEL_GRAPHS_CTX_MIN; p < max_ctx && n < n_out; p *= 2) {
        out[n++] = (int)p;
        if (p * 3 / 2 < max_ctx && n < n_out) out[n++] = (int)(p * 3 / 2);
    }
    if (n < n_out) out[n++] = max_ctx;
    return n;
}

int model_graphs_bucket_of(const int *buckets, int n, int x) {
    for (int i = 0; i < n; i++)
        if (buckets[i] >= x) return i;
    return -1;
}

int model_graphs_max_seqs_setting(void) {
    const char *v = getenv("KEEL_CUDA_GRAPH_MAX_SEQS");
    if (!v || !*v) return MODEL_GRAPHS_MAX_SEQS;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (*end || n < 0 || n > 1 << 20) {
        log_warn("KEEL_CUDA_GRAPH_MAX_SEQS=%s is not a count from 0 to 1048576; using %d", v,
                 MODEL_GRAPHS_MAX_SEQS);
        return MODEL_GRAPHS_MAX_SEQS;
    }
    return (int)n;
}

bool model_graphs_enabled(void) {
    const char *v = getenv("KEEL_CUDA_GRAPHS");
    return !(v && !strcmp(v, "0")) && model_graphs_max_seqs_setting() > 0;
}

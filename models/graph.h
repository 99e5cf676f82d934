// CUDA graphs of small decode steps (models/graph_cuda.c), used by the forward pass.
//
// A decode step of a few sequences is a few hundred small launches whose device time is a few
// milliseconds; launched one by one, the gaps between them cost a noticeable share of the step
// (docs/PERF.md). The forward pass captures the network once per key and replays it after:
// every pointer a kernel sees is fixed for a key (weights, KV cache, scratch, and the step's
// metadata, which sits at offsets that depend only on the token and sequence counts and is
// copied into place before the replay), and so are the launch shapes, once the attention's
// longest-context hint is rounded up to a bucket (key slices past a sequence's end are empty).
//
// Key: (n_seqs, context bucket) of a decode step (one new token per sequence). The table is
// fixed-size, least recently used first out. Graph executables are made by the CUDA runtime,
// outside the arena: a few hundred kernel nodes each, kilobytes, not the activations.
// In a CPU-only build the functions exist and do nothing (model_graphs_usable says no).
#ifndef KEEL_MODELS_GRAPH_H
#define KEEL_MODELS_GRAPH_H

#include "kernels/ops.h"

#include <stdbool.h>

struct model_graphs;

// True when ops is the CUDA backend and KEEL_CUDA_GRAPHS is not "0".
bool model_graphs_usable(const struct kern_ops *ops);

// Creates an empty table (host memory). Returns 0 or ERR_NOMEM.
int model_graphs_init(struct model_graphs **g);
void model_graphs_free(struct model_graphs *g); // NULL-safe; destroys the executables

// Replays the graph of `key` on the context's stream. Returns 1 when it ran, 0 when there is no
// graph for key yet (the caller runs the step itself), or a negative ERR_* code.
// `seen` is set to how many times this key was asked for before (capture only warm keys, so the
// first step of a shape loads its cuBLAS kernels outside a capture).
int model_graphs_replay(struct model_graphs *g, struct kern_ctx *ctx, int n_seqs, int ctx_bucket,
                        int *seen);

// Starts capturing the context's stream. Returns 1 when capturing, 0 when it could not start
// (graphs are then off for the process, logged once, and the caller runs the step eagerly).
int model_graphs_capture_begin(struct model_graphs *g, struct kern_ctx *ctx);

// Ends the capture; when ok, instantiates it under key and launches it once (the captured
// work has not run yet). When !ok (the step failed while capturing) the capture is dropped.
// A failure to capture disables graphs for the rest of the process (logged once): the caller
// then runs the step eagerly. Returns 1 when the graph ran, 0 when it did not, or ERR_*.
int model_graphs_capture_end(struct model_graphs *g, struct kern_ctx *ctx, int n_seqs,
                             int ctx_bucket, bool ok);

#endif

// CUDA graphs of decode steps, captured at start-up (models/graph_cuda.c), and the padded decode
// steps that let a few graphs serve every batch size (models/forward.c).
//
// A decode step is a few hundred small launches; launched one by one, the gaps between them cost
// 4-6% of a small step (docs/PERF.md, Change 1). A graph replays the whole network (embed ->
// layers -> logits) in one launch. Every pointer a kernel sees is fixed for a graph (weights, KV
// cache, scratch, and the step's metadata, which sits at offsets that depend only on the row
// count), and so are the launch shapes, once two things are bucketed:
//
// - the batch: a decode step of S sequences runs as B rows, B the smallest batch bucket >= S
//   (1, 2, 4, ... up to the cap, then the cap). Rows S..B-1 are padding: token 0 at position 0,
//   slot -1 (kv_write stores nothing), context 1 in block 0 (a valid block, so attention reads
//   memory the cache owns), their logits computed and ignored. Every op is row-independent, so
//   padding never changes a real row's numbers (pinned on the CPU by test_graph_pad, on the GPU
//   by test_graphs);
// - the context: the attention's longest-context hint is rounded up to a context bucket (1024,
//   2048, 3072, 4096, 6144, ...: each power of two and 1.5x it, the last one the model's longest
//   context); key slices past a sequence's end are empty and the attention skips them.
//
// model_graphs_warmup (cmd_serve, after the weights load, before any request) captures every
// (batch, context) bucket pair: one eager step first (so cuBLAS picks and loads its kernels, and
// keel's GEMM tuner times them, outside a capture; its rows store and read their own KV block, so
// the numbers the tuner compares are finite), then the capture, then an upload, so the
// executables' device memory is taken at start-up and never in a request path. That memory is
// outside the arena but inside the plan: the plan reserves MEM_PLAN_GRAPHS_BYTES for it
// (memory/plan.h), the warm-up measures what each graph takes (cudaMemGetInfo around instantiate +
// upload) and stops capturing before the reservation would be exceeded; the buckets left out then
// run eagerly.
//
// A step whose graph is missing (no warm-up, as in `keel generate`) is captured lazily on its
// key's second step. Steps with more sequences than the largest bucket run eagerly: at 128
// sequences and more a decode step is 10-30 ms of GEMMs and attention, where the ~1 µs gaps of
// ~400 launches are 1-3% and padding up to the next bucket would cost more than that.
//
// Switches: KEEL_CUDA_GRAPHS=0 turns graphs off; KEEL_CUDA_GRAPH_MAX_SEQS=N sets the largest
// batch bucket (default MODEL_GRAPHS_MAX_SEQS, capped by max_num_seqs; 0 = no graphs).
#ifndef KEEL_MODELS_GRAPH_H
#define KEEL_MODELS_GRAPH_H

#include "kernels/ops.h"
#include "models/model.h"

#include <stdbool.h>
#include <stddef.h>

#define MODEL_GRAPHS_MAX_SEQS 128 // default largest batch bucket
#define MODEL_GRAPHS_CTX_MIN 1024 // smallest context bucket
#define MODEL_GRAPHS_MAX_BUCKETS 64

// ---- buckets (pure, both backends: models/graph_cpu.c)

// The batch buckets for steps of at most max_seqs sequences and cap rows: 1, 2, 4, ... below
// min(max_seqs, cap), then min(max_seqs, cap) itself. Returns how many (0 when the minimum is
// < 1), at most n_out.
int model_graphs_batch_buckets(int max_seqs, int cap, int *out, int n_out);

// The context buckets up to max_ctx: 1024, 2048, 3072, 4096, 6144, 8192, ... (1024, then each
// power of two >= 2048 and 1.5x it) below max_ctx, then max_ctx. Returns how many (at most
// n_out; 0 when max_ctx < 1).
int model_graphs_ctx_buckets(int max_ctx, int *out, int n_out);

// The index of the smallest bucket >= x, or -1 when x is larger than all of them.
int model_graphs_bucket_of(const int *buckets, int n, int x);

// The largest batch bucket asked for: KEEL_CUDA_GRAPH_MAX_SEQS or MODEL_GRAPHS_MAX_SEQS.
int model_graphs_max_seqs_setting(void);

// Whether the settings ask for decode graphs (KEEL_CUDA_GRAPHS is not "0" and the largest batch
// bucket is not 0), on any backend: what `keel plan` plans for a GPU; model_graphs_usable adds
// "and the backend is CUDA".
bool model_graphs_enabled(void);

// ---- padded decode steps (models/forward.c)

enum model_fwd_mode {
    MODEL_FWD_AUTO = 0, // what model_forward does: a graph when one fits, else eager
    MODEL_FWD_EAGER,    // eager, padded to pad_to rows (0 = no padding)
    MODEL_FWD_GRAPH,    // replay the captured graph of the step's buckets; ERR_INVAL if none
};

// model_forward with the padding and the path chosen by the caller (tests, playgrounds).
// pad_to: 0, or >= b->n_seqs and <= the model's max_seqs and max_tokens; a padded step must be a
// decode step (one token per sequence), and its attention hint is the context bucket, exactly as
// in a graph. Only the b->n_seqs real rows of logits are written.
int model_forward_padded(struct model *m, const struct model_batch *b, int pad_to,
                         enum model_fwd_mode mode, float *logits);

// Captures the graph of every (batch bucket, context bucket) pair on the model's context.
// Returns how many graphs exist after it (0 when graphs are off or the backend is the CPU), or a
// negative ERR_* code when an eager warm-up step fails. Logs the count, time and memory.
int model_graphs_warmup(struct model *m);

// ---- the graph table (models/graph_cuda.c; CUDA builds only)

struct model_graphs;

// What the table holds, for logs and tests.
struct model_graphs_stats {
    int n_batch, n_ctx;  // bucket counts
    int captured;        // graphs instantiated
    int replays;         // graph launches
    size_t bytes;        // device memory the executables took (measured, summed)
    size_t limit;        // the plan's reservation
    double capture_s;    // seconds spent capturing + instantiating + uploading
    bool disabled, full; // a capture failed / the reservation is spent
};

// True when ops is the CUDA backend and KEEL_CUDA_GRAPHS is not "0".
bool model_graphs_usable(const struct kern_ops *ops);

// A table of n_batch x n_ctx empty slots (host memory); limit = device bytes the executables may
// take in all. Returns 0 or ERR_NOMEM / ERR_INVAL.
int model_graphs_init(struct model_graphs **g, const int *batch, int n_batch, const int *ctx,
                      int n_ctx, size_t limit);
void model_graphs_free(struct model_graphs *g); // NULL-safe; destroys the executables

// The buckets, as given to init.
const int *model_graphs_batch(const struct model_graphs *g, int *n);
const int *model_graphs_ctx(const struct model_graphs *g, int *n);

// Launches the graph of (bi, ci) on the context's stream. Returns 1 when it ran, 0 when there is
// none, or a negative ERR_* code.
int model_graphs_launch(struct model_graphs *g, struct kern_ctx *ctx, int bi, int ci);

// How many times (bi, ci) was asked for before this call (lazy capture warms a key first).
int model_graphs_seen(struct model_graphs *g, int bi, int ci);

// True when a capture may start: graphs not disabled and the reservation not spent.
bool model_graphs_can_capture(const struct model_graphs *g);

// Starts capturing the context's stream. Returns 1 when capturing, 0 when it could not start
// (graphs are then off for the process, logged once, and the caller runs the step eagerly).
int model_graphs_capture_begin(struct model_graphs *g, struct kern_ctx *ctx);

// Ends the capture; when ok, instantiates and uploads it as (bi, ci) and measures the device
// memory it took. Nothing is launched. When !ok (the step failed while capturing) the capture is
// dropped. Returns 1 when the graph exists now, 0 when not (then graphs are off for the rest of
// the process, logged once, and the caller runs the step eagerly).
int model_graphs_capture_end(struct model_graphs *g, struct kern_ctx *ctx, int bi, int ci, bool ok);

void model_graphs_get_stats(const struct model_graphs *g, struct model_graphs_stats *st);

#endif

// Tensor parallelism, the model side: a group of ranks (one per GPU, or per thread on the CPU
// backend), each holding a shard of the weights and of the KV cache (its heads), driven in
// lock-step by one engine. docs/TP.md has the whole picture.
//
// The engine sees one struct model (model_group_model): the full config, the shared KV pool's
// size (block ids mean the same on every rank), the step limits; model_forward on it hands the
// step to the group. The group runs rank 0 on the calling thread and the others on one worker
// thread each (NCCL wants each rank's collectives issued from its own thread), waits for all,
// and assembles every rank's logits shard into the full [n_seqs, vocab_size] logits on the host.
// An error on any rank fails the step; a rank failing inside the network aborts the
// communicator so no other rank waits forever (the group cannot run again after that).
#ifndef KEEL_MODELS_TP_H
#define KEEL_MODELS_TP_H

#include "kernels/comm.h"
#include "models/model.h"

#include <stdbool.h>

// What the caller made for one rank: its backend context and its arena, sized by its plan.
struct model_tp_rank {
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    struct mem_arena *arena;
    const struct mem_plan *plan; // the rank's plan (model_plan_shape_shard shapes)
};

struct model_group;

// Loads every rank's shard (dir/fmt/seed as model_weights_load) and builds its model with the
// smallest num_kv_blocks of all ranks' plans, then starts the worker threads. Takes over
// comms[0..size) (freed by model_group_free, or here on failure). The ranks' contexts and arenas
// stay the caller's and must outlive the group. Returns 0 or an ERR_* code; ERR_INVAL when the
// model does not divide by size.
int model_group_load(struct model_group **g, const struct model_config *full, const char *dir,
                     enum model_load_format fmt, uint64_t seed, const struct model_tp_rank *ranks,
                     struct kern_comm **comms, int size, const struct mem_plan_settings *set);

// The model the engine drives (full config; model_forward runs the group). Owned by the group.
// With device sampling (the default; KEEL_TP_DEVICE_SAMPLE=0 turns it off) its ops and ctx are
// rank 0's, so the engine samples through model_forward_sample: the ranks' logits slices are
// all-gathered into rank 0's full rows and sampled there, and only ids and logprobs reach the
// host. With it off they are NULL: the full logits are assembled on the host and sampled there.
struct model *model_group_model(struct model_group *g);
// Rank r's model (its shard), for tests.
struct model *model_group_rank(struct model_group *g, int r);

// One step on every rank; logits [n_seqs, full vocab_size] into host memory. Same contract as
// model_forward.
int model_group_forward(struct model_group *g, const struct model_batch *b, float *logits);

// One step on every rank, sampled on rank 0's device: model_forward_sample's contract. Needs the
// ranks' backends to have a sample op.
int model_group_forward_sample(struct model_group *g, const struct model_batch *b,
                               const struct model_sample *s, struct kern_sample_out *out);

// Captures every rank's decode graphs (model_graphs_warmup on each rank's thread at once, so
// their collectives meet). Returns the graphs rank 0 captured (0 without graphs) or ERR_*.
// model_group_load runs it when graphs are on.
int model_group_graphs_warmup(struct model_group *g);

void model_group_free(struct model_group *g); // NULL-safe; stops the workers

// Switches, read from the environment: KEEL_TP_GRAPHS (CUDA graphs for ranks; on unless "0")
// and KEEL_TP_DEVICE_SAMPLE (on unless "0").
bool model_tp_graphs_on(void);
bool model_tp_device_sample_on(void);

// A rank's share of one step (models/forward.c), run on the rank's thread: the network, then
// with s (device sampling) the logits gather, and rank 0's sample op into out (other ranks wait
// for their device); without s its [n_seqs, vocab_local] slice copied to host `logits`.
// *collectives_done says whether the rank got past its last collective (a failure before that
// must abort the communicator; after it, e.g. rank 0's ERR_NOSPACE from the sample op, must not).
int model_tp_rank_step(struct model *m, const struct model_batch *b, const struct model_sample *s,
                       struct kern_sample_out *out, float *logits, bool *collectives_done);

// Maps token ids to rows of this rank's embedding shard: ids of its vocabulary slice to
// id - vocab_offset, all others to the shard's zero row. Used by model_forward (internal).
void model_tp_map_ids(const struct model *m, int32_t *ids /* [n] */, int n);

// A rank's logits region as the plan lays it out (memory/plan.h mem_logits_layout: its full
// [S, vocab] rows, then the all-gather buffer); returns its bytes (models/forward.c).
size_t model_tp_logits_layout(const struct model *m, struct mem_logits_layout *ll);

// Makes the calling thread use rank m's device (CUDA); nothing on the CPU backend.
int model_tp_bind_thread(const struct model_tp_rank *r);

#endif

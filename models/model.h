// The model: weights in the arena, the KV cache, per-step scratch, and the forward pass over a
// scheduled batch. The forward pass is written once over the op table (kernels/ops.h) and runs on
// the CPU and CUDA backends alike.
#ifndef KEEL_MODELS_MODEL_H
#define KEEL_MODELS_MODEL_H

#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"

#include <stdint.h>

// One decoder layer's weights, all bf16 in backend memory. QKV and gate/up are fused at load.
struct model_layer {
    bf16 *attn_norm; // [dim]
    bf16 *wqkv;      // [(n_heads + 2 n_kv_heads) * head_dim, dim]: q rows, then k, then v
    bf16 *bqkv;      // [(n_heads + 2 n_kv_heads) * head_dim] or NULL (no QKV bias)
    bf16 *q_norm;    // [head_dim] or NULL (Qwen3 only)
    bf16 *k_norm;    // [head_dim] or NULL
    bf16 *wo;        // [dim, n_heads * head_dim]
    bf16 *ffn_norm;  // [dim]
    bf16 *w_gate_up; // [2 * hidden_dim, dim]: gate rows, then up rows
    bf16 *w_down;    // [dim, hidden_dim]
};

struct model_weights {
    bf16 *embed;              // [vocab_size, dim]
    struct model_layer *layers; // [n_layers], host array (malloc'd) of backend pointers
    bf16 *final_norm;         // [dim]
    bf16 *lm_head;            // [vocab_size, dim]; == embed when tie_word_embeddings
};

enum model_load_format {
    MODEL_LOAD_SAFETENSORS = 0, // read DIR/*.safetensors (single or sharded)
    MODEL_LOAD_DUMMY = 1,       // deterministic random values of the config's shapes
};

// Parses "safetensors" / "auto" / "dummy". Returns 0 or ERR_INVAL.
int model_parse_load_format(const char *s, enum model_load_format *out);

// Exact bytes of the weights region for this config (after fusion, bf16, aligned as carved).
int64_t model_weights_bytes(const struct model_config *cfg);

// Carves the "weights" region from the arena and fills it: from safetensors (validated against
// the config; f16/f32 converted to bf16; streamed through the arena's staging buffer, never a
// second host copy of the model) or dummy values from `seed`. Shows progress on stderr.
// w->layers is malloc'd; model_weights_free() releases it.
int model_weights_load(struct model_weights *w, const struct model_config *cfg, const char *dir,
                       enum model_load_format fmt, uint64_t seed, const struct kern_ops *ops,
                       struct kern_ctx *ctx, struct mem_arena *arena);
void model_weights_free(struct model_weights *w);

// Tensor parallelism (models/tp.c, docs/TP.md): rank `rank` of `tp_size` holds a shard of the
// weights of the full model `cfg` (q/k/v and gate/up rows of its heads and hidden slice, wo and
// down columns of its slice, embedding and LM head rows of its vocabulary slice, norms whole).
// tp_size 1 is the unsharded model. Same codes as model_weights_load, and ERR_INVAL when the
// shapes do not divide by tp_size (model_config_shard).
int64_t model_weights_bytes_shard(const struct model_config *cfg, int tp_size, int rank);
int model_weights_load_shard(struct model_weights *w, const struct model_config *cfg, int tp_size,
                             int rank, const char *dir, enum model_load_format fmt, uint64_t seed,
                             const struct kern_ops *ops, struct kern_ctx *ctx,
                             struct mem_arena *arena);

// A rank's config: n_heads, n_kv_heads and hidden_dim divided by tp_size, vocab_size = the
// vocabulary shard (model_tp_vocab_shard). Returns 0 or ERR_INVAL naming the dimension that
// does not divide (tp_size must be >= 1 and rank in [0, tp_size)).
int model_config_shard(const struct model_config *full, int tp_size, int rank,
                       struct model_config *out);
// Rows of each rank's vocabulary shard: vocab_size rounded up to a multiple of tp_size, divided.
int model_tp_vocab_shard(const struct model_config *full, int tp_size);

struct model {
    struct model_config cfg;
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    struct model_weights w;
    // KV cache: per layer, K then V, each [n_kv_blocks, block_size, n_kv_heads, head_dim]
    bf16 *kv_cache;
    int n_kv_blocks, block_size;
    // limits of one step (the plan's)
    int max_tokens, max_seqs, max_blocks_per_seq;
    struct mem_scratch_layout scratch;
    uint8_t *scratch_base;    // backend memory, scratch.bytes
    float *logits;            // backend memory, float32 [max_seqs, vocab_size]
    int32_t *host_meta;       // host staging for the step's metadata (scratch.meta_bytes)
    struct model_graphs *graphs; // CUDA graphs of small decode steps (models/graph.h) or NULL
    // Debug-only fault injection (KEEL_DEBUG_INJECT_FAULT=N): forward step N and every later one
    // fail with ERR_CUDA_FAULT, as a sticky device fault does. 0 = off.
    int64_t inject_fault_step;
    int64_t n_steps;
    // Tensor parallelism (models/tp.h). A rank's model has comm set (before model_init, which
    // keeps this struct) and runs its shard; the model the engine drives has group set and
    // model_forward hands the step to the group. All zero without tensor parallelism.
    struct model_tp {
        struct kern_comm *comm;     // this rank's end, or NULL
        int size, rank;
        int vocab_offset;           // first global token id of this rank's vocabulary shard
        int full_vocab_size;        // the full model's vocab_size
        struct model_group *group;  // the engine's model only: the ranks it drives
    } tp;
};

// One scheduled batch: variable-length spans of n_seqs sequences, n_tokens tokens in all. All
// arrays are host memory; model_forward copies them to the backend.
struct model_batch {
    int n_tokens, n_seqs;
    const int32_t *token_ids;    // [n_tokens]
    const int32_t *positions;    // [n_tokens]
    const int32_t *slot_mapping; // [n_tokens]
    const int32_t *query_start;  // [n_seqs + 1]
    const int32_t *seq_lens;     // [n_seqs]: context length including this step's tokens
    const int32_t *block_tables; // [n_seqs, max_blocks_per_seq] (the model's stride)
};

// Builds the model over loaded weights: carves scratch, logits and the KV cache (plan's
// num_kv_blocks) from the arena. The model does not own ops/ctx/arena.
int model_init(struct model *m, const struct model_config *cfg, const struct kern_ops *ops,
               struct kern_ctx *ctx, struct mem_arena *arena, const struct mem_plan *plan,
               const struct mem_plan_settings *set);
void model_free(struct model *m); // NULL-safe; frees host-side allocations only

// Runs the batch and writes float32 logits of the last token of each sequence to host memory:
// logits[n_seqs, vocab_size]. Returns 0 or an ERR_* code (ERR_INVAL for a batch beyond the
// model's limits; CUDA errors classified).
int model_forward(struct model *m, const struct model_batch *b, float *logits);

// One step's sampling on the backend (the sample op of kernels/ops.h): a row per sequence of the
// batch, all host memory. Rows with n_valid 0 are not sampled (a prefill chunk that does not reach
// its prompt's end).
struct model_sample {
    const struct kern_sample_params *params; // [n_seqs]
    const struct kern_sample_adj *adj;       // [n_adj]
    int n_adj;
};

// Runs the batch as model_forward does, then samples on the backend, so only out[n_seqs] (token
// ids, logprobs) crosses to the host: the step's one synchronisation. Returns 0 or an ERR_* code
// as model_forward; a row that cannot be sampled says so in its out[i].status.
int model_forward_sample(struct model *m, const struct model_batch *b, const struct model_sample *s,
                         struct kern_sample_out *out /* [n_seqs] host */);

// Copies the last step's float32 logits [n_seqs, vocab_size] to host memory: the fallback when
// model_forward_sample's sampling could not run on the backend (ERR_NOSPACE: the step's penalty
// entries exceed the op's scratch), so the step is sampled on the host without re-running it.
int model_logits_to_host(struct model *m, int n_seqs, float *logits);

// Fills struct mem_plan_shape from a config.
struct mem_plan_shape;
void model_plan_shape(const struct model_config *cfg, struct mem_plan_shape *s);
// The same for rank `rank` of a tensor-parallel group (its local shapes, its shard's exact weight
// bytes). Returns 0 or ERR_INVAL as model_config_shard.
int model_plan_shape_shard(const struct model_config *full, int tp_size, int rank,
                           struct mem_plan_shape *s);

#endif

// The memory plan: a pure function (no CUDA, no I/O) from the model's shapes, the settings and
// the device's memory to the size of every region of the arena. The same code runs in
// `keel plan` on a machine without a GPU and in `keel serve`, so tests pin it exactly.
//
//   budget   = floor(gpu_memory_utilization * total)
//   used     = total - free                      (measured at start, before the arena)
//   overhead = min(used, MEM_PLAN_CONTEXT_MAX_BYTES)  keel's own CUDA context and libraries;
//              whatever is used beyond that belongs to other processes (other_bytes)
//   fixed    = overhead + weights + cublas workspace
//            + activations(max_num_batched_tokens, max_num_seqs) + logits + sampling scratch
//   kv_block = 2 * n_layers * n_kv_heads * head_dim * block_size * 2 bytes
//   n_blocks = (budget - fixed) / kv_block      (capped by num_kv_blocks when that is > 0)
//   arena    = weights + workspace + activations + logits + sampling + n_blocks * kv_block
//
// Every region is a multiple of 256 bytes, so carving them back to back from the arena
// (MEM_ARENA_ALIGN) uses exactly arena_bytes; arena_bytes <= budget - overhead, and the
// difference (less than one KV block, or what num_kv_blocks left out) is never allocated.
//
// It refuses (ERR_NOSPACE) when the arena cannot fit in the free memory (free < budget -
// overhead: someone else holds memory), when the fixed regions alone exceed the budget, or when
// the pool cannot hold one sequence of max_model_len.
//
// Tensor parallelism (tp_size > 1 GPUs, Megatron sharding): each GPU holds one rank's shard
// (mem_plan_shape_shard) and gets its own plan from the same formulas over the shard's shapes,
// with these differences (mem_plan_compute_tp):
//   weights  = the shard exactly as the loader carves it (replicated norms; qkv, bias, wo,
//              gate_up and down split by heads / hidden_dim; embed and lm_head by vocab rows,
//              the embedding with one extra zero row)
//   kv_block = 2 * n_layers * (n_kv_heads / tp) * head_dim * block_size * 2 bytes
//   logits   = float32 [S, vocab] (the full logits, as at tp 1) + float32 [tp, S, vocab_local]
//              (the all-gather buffer; see mem_logits_layout)
//   sampling = sized by the full vocab, as at tp 1 (the sampler works on the full logits)
//   n_blocks = the minimum over GPUs of what each could hold (every GPU carves the same count,
//              since the scheduler and its block ids are shared); the rest is unused_bytes
#ifndef KEEL_MEMORY_PLAN_H
#define KEEL_MEMORY_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_PLAN_WORKSPACE_BYTES ((size_t)32 << 20)  // cuBLAS workspace (32 MiB)
// A CUDA context plus cuBLAS typically holds about this much before the arena; `keel plan`
// without a GPU assumes it (free = total - MEM_PLAN_CONTEXT_BYTES).
#define MEM_PLAN_CONTEXT_BYTES ((size_t)512 << 20)
// Memory used at start beyond this is taken to belong to other processes, not to keel's context.
#define MEM_PLAN_CONTEXT_MAX_BYTES ((size_t)1 << 30)
// Device memory kept free for the CUDA graphs of decode steps (models/graph.h): the CUDA runtime
// allocates their executables outside the arena, so the plan leaves this much of the budget to
// them (graphs_bytes). The start-up capture measures what they take and stops before it is spent.
#define MEM_PLAN_GRAPHS_BYTES ((size_t)128 << 20)
#define MEM_PLAN_SAMPLING_SEQ_BYTES 4096  // per-sequence sampling state (see sampling_bytes)
#define MEM_PLAN_MAX_TP 8                 // tensor_parallel_size at most (one host's GPUs)

// The model's shapes, as the plan needs them (filled from struct model_config by the caller, so
// memory/ does not depend on models/).
struct mem_plan_shape {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size;
    bool tie_word_embeddings, qkv_bias, qk_norm;
    int64_t weights_bytes; // exact bytes from the safetensors headers after fusion, or 0: from shapes
    // Tensor parallelism: 0 (or 1) for the whole model. mem_plan_shape_shard sets them in a
    // shard: tp_size > 1, the rank, and the whole model's vocab_size (a shard's vocab_size is its
    // slice, vocab_local = ceil(full_vocab_size / tp_size)).
    int tp_size, tp_rank;
    int full_vocab_size;
};

// One rank's shard of a model split over tp_size GPUs (Megatron): n_heads / tp, n_kv_heads / tp,
// hidden_dim / tp; vocab_size = vocab_local = ceil(vocab / tp) rows of the embedding and the LM
// head (rank r holds global rows [r * vocab_local, (r + 1) * vocab_local); the last rank's rows
// past vocab, up to vocab_padded = tp * vocab_local, are zero in the embedding and masked out
// of the logits; the embedding has one more zero row for ids outside the slice); dim, head_dim,
// n_layers and the flags unchanged; weights_bytes = exactly the shard's bytes as the loader
// (models/weights.c, wt__layout) carves it: mem_plan_weights_from_shape of the local shape,
// with replicated norms, q_norm and k_norm. tp_size 1 (or 0) copies *full, weights_bytes kept.
// Returns 0 or ERR_INVAL naming the numbers: tp_size outside 1..MEM_PLAN_MAX_TP, rank outside
// 0..tp_size-1, or n_heads, n_kv_heads or hidden_dim not divisible by tp_size.
int mem_plan_shape_shard(const struct mem_plan_shape *full, int tp_size, int rank,
                         struct mem_plan_shape *out);

// vocab_padded = tp_size * ceil(vocab_size / tp_size) of a whole model's shape (= vocab_size at
// tp 1); of a shard, the same for its whole model.
int mem_plan_vocab_padded(const struct mem_plan_shape *s);

struct mem_plan_settings {
    double gpu_memory_utilization; // (0, 1]
    int max_model_len;
    int max_num_seqs;
    int max_num_batched_tokens;
    int block_size;
    int num_kv_blocks;             // > 0 caps the pool (vLLM's num_gpu_blocks_override)
    int tensor_parallel_size;      // GPUs the model is split over; 0 or 1: one GPU
    // CUDA ordinal of each rank, for messages ("GPU 1 (index 3)"); n_device_ids 0: rank r is
    // ordinal r.
    int device_ids[MEM_PLAN_MAX_TP];
    int n_device_ids;
    bool cuda_graphs;              // keep MEM_PLAN_GRAPHS_BYTES for CUDA graphs (models/graph.h)
};

// keel's defaults (`keel plan` and the server): utilization 0.9, block_size 16, max_num_seqs
// 256, max_num_batched_tokens 8192, max_model_len = min(max_position_embeddings, 32768)
// (32768 when max_position_embeddings <= 0), num_kv_blocks 0 (no cap).
void mem_plan_settings_defaults(struct mem_plan_settings *set, int max_position_embeddings);

// The scratch buffers of one forward step, laid out back to back in the activation region.
// The forward pass carves exactly these, so the plan covers every step the scheduler can build
// (at most T = max_num_batched_tokens tokens and S = max_num_seqs sequences; a step never has
// more sequences than tokens). Offsets are from the start of the region, each a multiple of 256:
//
//   x          bf16   [T, dim]                  the hidden state
//   residual   bf16   [T, dim]
//   xb         bf16   [T, dim]                  normed input of a sublayer / its output
//   qkv        bf16   [T, (n_heads + 2 n_kv_heads) * head_dim]
//   attn_out   bf16   [T, n_heads * head_dim]
//   gate_up    bf16   [T, 2 * hidden_dim]
//   hidden     bf16   [T, hidden_dim]           silu(gate) * up
//   last_rows  bf16   [S, dim]                  the last position of each sequence
//   attn_ws    f32    S * n_heads * 16 * (head_dim + 2) + T * n_heads * 2 floats: split-KV
//                                              attention partials (up to 16 splits per head,
//                                              each head_dim outputs plus max and sum)
//   meta       int32  the step's metadata, one block so it is copied in one transfer; its
//                     arrays start at these offsets from `meta` (each a multiple of 256):
//     meta_ids [T], meta_positions [T], meta_slot_mapping [T], meta_query_start [S + 1],
//     meta_seq_lens [S], meta_block_tables [S, max_blocks_per_seq], meta_rows [S]
//
// bytes = the end of meta rounded up to 256.
struct mem_scratch_layout {
    size_t x, residual, xb, qkv, attn_out, gate_up, hidden; // offsets of bf16 activations
    size_t last_rows;   // bf16 [max_num_seqs, dim]: last position of each sequence
    size_t attn_ws;     // float32 split-KV attention workspace
    size_t attn_ws_bytes;
    size_t meta;        // int32 metadata: ids, positions, slot_mapping, query_start, seq_lens,
                        // block tables, row indices
    size_t meta_bytes;
    // offsets inside meta (from `meta`, not from the region's start)
    size_t meta_ids, meta_positions, meta_slot_mapping, meta_query_start, meta_seq_lens,
        meta_block_tables, meta_rows;
    size_t bytes;       // total
};
void mem_plan_scratch_layout(const struct mem_plan_shape *s, int max_tokens, int max_seqs,
                             int max_blocks_per_seq, struct mem_scratch_layout *out);
// Of a shard (tp_size > 1) the same list holds with the local shapes: qkv, attn_out, gate_up,
// hidden and attn_ws use the rank's heads and hidden_dim; x, residual, xb and last_rows stay
// full [T, dim] / [S, dim] (the residual stream is replicated and all-reduced in place).

// The logits region, float32 (S = max_num_seqs; offsets from the region's start, multiples of
// 256):
//   full    [S, vocab]              the logits the sampler reads, as at tp 1 (offset 0)
//   gather  [tp, S, vocab_local]    tp > 1 only: the all-gather destination, rank-major; rank r
//                                   writes its LM-head output [S, vocab_local] into its own
//                                   slice gather + r * S * vocab_local (NCCL's in-place
//                                   all-gather), and the slices are then copied into full
//                                   (dropping the padded columns past vocab)
//   comm    mem_plan_tp_comm_bytes  tp > 1 only: the peer-to-peer all-reduce's areas
//                                   (kernels/cuda/allreduce.cu, models/tp.c), in bytes
// A forward that assembles the logits on the host instead carves only the first
// S * vocab_local floats; the rest is then headroom for a device gather and GPU sampling.
// bytes = the end of the last one rounded up to 256 (= align(S * vocab * 4) at tp 1).
// The peer-to-peer all-reduce's areas on each GPU of tp_size > 1: a 256-byte control block, then
// its message slots for all-reduces of up to MEM_PLAN_TP_COMM_TOKENS rows of dim (larger ones,
// prefill, go through NCCL): 2 slots x tp senders x 4 bytes per element (each pair of bf16
// travels with a 4-byte flag), rounded up to 256. 0 at tp 1.
#define MEM_PLAN_TP_COMM_TOKENS 128
#define MEM_PLAN_TP_COMM_CTRL_BYTES 256
size_t mem_plan_tp_comm_bytes(const struct mem_plan_shape *s, int max_seqs);
struct mem_logits_layout {
    size_t full, gather, comm; // offsets
    size_t gather_bytes;       // 0 at tp 1
    size_t comm_bytes;         // 0 at tp 1
    int vocab_size, vocab_local, vocab_padded;
    size_t bytes;
};
void mem_plan_logits_layout(const struct mem_plan_shape *s, int max_seqs,
                            struct mem_logits_layout *out);

struct mem_plan {
    // inputs, as used
    size_t device_total_bytes, device_free_bytes;
    // regions
    size_t budget_bytes;
    size_t overhead_bytes;     // keel's context and libraries: total - free at start, at most
                               // MEM_PLAN_CONTEXT_MAX_BYTES (the rest is other_bytes)
    size_t weights_bytes;
    size_t workspace_bytes;    // cuBLAS workspace
    size_t activation_bytes;   // scratch of the largest step
    size_t logits_bytes;       // float32 [max_num_seqs, vocab] (tp > 1: mem_logits_layout)
    size_t sampling_bytes;     // sampling scratch: float32 [max_num_seqs, vocab] (probabilities
                               // or sorted candidates) + max_num_seqs * 4096 (per-sequence state)
    size_t kv_bytes;           // n_kv_blocks * kv_block_bytes
    size_t graphs_bytes;       // kept for CUDA graphs, outside the arena: MEM_PLAN_GRAPHS_BYTES
                               // when settings.cuda_graphs, else 0
    size_t arena_bytes;        // everything keel allocates: the sum of the regions above
    size_t other_bytes;        // memory other processes held at start (used - overhead)
    size_t unused_bytes;       // budget - overhead - arena: less than a block (or the cap's rest)
    // the KV pool
    size_t kv_block_bytes;
    int64_t num_kv_blocks;
    int64_t kv_tokens;
    double max_concurrency;    // sequences of max_model_len that fit at once
    int max_blocks_per_seq;
    // tensor parallelism (tp_size 1, rank 0, device_id from the settings at tp 1)
    int tp_size, tp_rank, device_id;
    int64_t kv_blocks_fit;     // blocks this GPU alone could hold (before the cap and, at tp > 1,
                               // the minimum over GPUs); its unused_bytes holds the difference
};

// Computes the plan. Returns 0, ERR_INVAL (a setting out of range, named), or ERR_NOSPACE when
// it does not fit, with every number and the fix in err_msg(): free memory below the budget,
// weights beyond the budget, or a pool that cannot hold one sequence of max_model_len (saying
// which max_model_len or utilization would fit). *out is filled as far as it got either way.
// set->tensor_parallel_size must be 0 or 1 (else ERR_INVAL: use mem_plan_compute_tp).
int mem_plan_compute(const struct mem_plan_shape *shape, const struct mem_plan_settings *set,
                     size_t device_total, size_t device_free, struct mem_plan *out);

// One plan per GPU of a model split over tp_size GPUs (rank r on device_total[r] /
// device_free[r], bytes), out[tp_size]. Every GPU carves the same num_kv_blocks: the minimum
// over GPUs (capped by num_kv_blocks); each plan's unused_bytes says what that leaves unused
// there. The max_model_len check, and the max_model_len / utilization a refusal suggests, come
// from the GPU holding the fewest blocks. Refusals name the GPU, "GPU r (index d): ", with that
// GPU's numbers. set->tensor_parallel_size must be 0, 1 or tp_size. tp_size 1 gives exactly
// mem_plan_compute's result. Returns 0, ERR_INVAL (settings, shapes not divisible by tp_size,
// named) or ERR_NOSPACE; out[] is filled as far as it got either way.
int mem_plan_compute_tp(const struct mem_plan_shape *full, const struct mem_plan_settings *set,
                        int tp_size, const size_t *device_total, const size_t *device_free,
                        struct mem_plan *out);

// Bytes of the weights computed from shapes (after QKV and gate/up fusion; bf16), each tensor
// rounded up to 256 bytes as the loader carves it: embed [vocab, dim]; per layer attn_norm [dim],
// wqkv [qkv_dim, dim], bqkv [qkv_dim] (qkv_bias), q_norm and k_norm [head_dim] (qk_norm),
// wo [dim, n_heads * head_dim], ffn_norm [dim], w_gate_up [2 * hidden_dim, dim],
// w_down [dim, hidden_dim]; final_norm [dim]; lm_head [vocab, dim] unless tied. Of a shard
// (tp_size > 1) the local shapes, and the embedding has vocab_local + 1 rows: the last, zeros,
// is where token ids outside the rank's slice look up (tied, the LM head is that same tensor).
int64_t mem_plan_weights_from_shape(const struct mem_plan_shape *s);

// The human-readable table (GiB and % of budget), and the JSON form (bytes, integers).
// Both return a malloc'd string the caller frees.
char *mem_plan_table(const struct mem_plan *p, const struct mem_plan_settings *set);
char *mem_plan_json(const struct mem_plan *p, const struct mem_plan_settings *set);
// The same for tp_size GPUs: the table has a column per GPU and a total column; the JSON is
// {"tensor_parallel_size": N, settings..., "gpus": [mem_plan_json of each, plus tp_rank and
// device_id], "total": {the byte fields summed}}. tp_size 1 gives the single-GPU forms above.
char *mem_plan_table_tp(const struct mem_plan *p, int tp_size,
                        const struct mem_plan_settings *set);
char *mem_plan_json_tp(const struct mem_plan *p, int tp_size, const struct mem_plan_settings *set);

#endif

// The memory plan: a pure function (no CUDA, no I/O) from the model's shapes, the settings and
// the device's memory to the size of every region of the arena. The same code runs in
// `keel plan` on a machine without a GPU and in `keel serve`, so tests pin it exactly.
//
//   budget   = floor(gpu_memory_utilization * total)
//   fixed    = overhead (total - free before the arena) + weights + cublas workspace
//            + activations(max_num_batched_tokens, max_num_seqs) + logits + sampling scratch
//   kv_block = 2 * n_layers * n_kv_heads * head_dim * block_size * 2 bytes
//   n_blocks = (budget - fixed) / kv_block
#ifndef KEEL_MEMORY_PLAN_H
#define KEEL_MEMORY_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// The model's shapes, as the plan needs them (filled from struct model_config by the caller, so
// memory/ does not depend on models/).
struct mem_plan_shape {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size;
    bool tie_word_embeddings, qkv_bias, qk_norm;
    int64_t weights_bytes; // exact bytes from the safetensors headers after fusion, or 0: from shapes
};

struct mem_plan_settings {
    double gpu_memory_utilization; // (0, 1]
    int max_model_len;
    int max_num_seqs;
    int max_num_batched_tokens;
    int block_size;
    int num_kv_blocks;             // > 0 caps the pool (vLLM's num_gpu_blocks_override)
};

// The scratch buffers of one forward step, laid out back to back in the activation region.
// The forward pass carves exactly these, so the plan covers every step the scheduler can build
// (at most max_num_batched_tokens tokens and max_num_seqs sequences).
struct mem_scratch_layout {
    size_t x, residual, xb, qkv, attn_out, gate_up, hidden; // offsets of bf16 activations
    size_t last_rows;   // bf16 [max_num_seqs, dim]: last position of each sequence
    size_t meta;        // int32 metadata: ids, positions, slot_mapping, query_start, seq_lens,
                        // block tables, row indices
    size_t meta_bytes;
    size_t bytes;       // total
};
void mem_plan_scratch_layout(const struct mem_plan_shape *s, int max_tokens, int max_seqs,
                             int max_blocks_per_seq, struct mem_scratch_layout *out);

struct mem_plan {
    // inputs, as used
    size_t device_total_bytes, device_free_bytes;
    // regions
    size_t budget_bytes;
    size_t overhead_bytes;     // context and libraries (total - free at start)
    size_t weights_bytes;
    size_t workspace_bytes;    // cuBLAS workspace
    size_t activation_bytes;   // scratch of the largest step
    size_t logits_bytes;       // float32 [max_num_seqs, vocab]
    size_t sampling_bytes;     // sampling scratch
    size_t kv_bytes;           // n_kv_blocks * kv_block_bytes
    size_t arena_bytes;        // everything keel allocates: budget - overhead
    // the KV pool
    size_t kv_block_bytes;
    int64_t num_kv_blocks;
    int64_t kv_tokens;
    double max_concurrency;    // sequences of max_model_len that fit at once
    int max_blocks_per_seq;
};

// Computes the plan. Returns 0, ERR_INVAL (a setting out of range, named), or ERR_NOSPACE when
// it does not fit, with every number and the fix in err_msg(): free memory below the budget,
// weights beyond the budget, or a pool that cannot hold one sequence of max_model_len (saying
// which max_model_len or utilization would fit). *out is filled as far as it got either way.
int mem_plan_compute(const struct mem_plan_shape *shape, const struct mem_plan_settings *set,
                     size_t device_total, size_t device_free, struct mem_plan *out);

// Bytes of the weights computed from shapes (after QKV and gate/up fusion; bf16).
int64_t mem_plan_weights_from_shape(const struct mem_plan_shape *s);

// The human-readable table (GiB and % of budget), and the JSON form (bytes, integers).
// Both return a malloc'd string the caller frees.
char *mem_plan_table(const struct mem_plan *p, const struct mem_plan_settings *set);
char *mem_plan_json(const struct mem_plan *p, const struct mem_plan_settings *set);

#endif

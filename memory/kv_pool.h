// The KV-cache block pool: fixed-size blocks handed out by id, never bytes (nano-vllm's
// block_manager, vLLM's block_pool names). Pure C, no device memory: the bytes live in the arena's
// KV region; this pool only decides which block ids are whose.
//
// - Allocation and release are O(1) (a free queue of ids).
// - Blocks carry a ref_cnt, so sequences can share blocks (n > 1 shares the prompt's blocks).
// - A sequence's block_table lists its blocks in order; the slot of its token at position p is
//   block_table[p / block_size] * block_size + p % block_size.
// Not thread-safe: the engine thread owns the pool; readers of the usage numbers take a snapshot
// through mem_kv_pool_usage() under the engine's lock.
#ifndef KEEL_MEMORY_KV_POOL_H
#define KEEL_MEMORY_KV_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct mem_kv_pool {
    int n_blocks;      // total blocks
    int block_size;    // tokens per block
    int n_free;        // blocks with ref_cnt == 0
    int32_t *ref_cnt;  // [n_blocks]
    int32_t *free_queue; // [n_blocks] ring of free ids
    int free_head;
    int n_allocs_total;  // counters for metrics
};

// A sequence's blocks. Owned by the sequence; its ids are references into the pool.
struct mem_block_table {
    int32_t *block_ids; // [cap]
    int n_blocks;
    int cap;
};

enum mem_admit {
    MEM_ADMIT_NOW = 0,   // enough free blocks now
    MEM_ADMIT_LATER = 1, // fits in the pool, but not with what is free now: wait
    MEM_ADMIT_NEVER = 2, // more blocks than the whole pool has: refuse at once
};

int mem_kv_pool_init(struct mem_kv_pool *p, int n_blocks, int block_size);
void mem_kv_pool_free(struct mem_kv_pool *p); // NULL-safe

// Blocks needed to hold n_tokens tokens (computed in 64 bits: n_tokens may be a client's
// prompt + max_tokens, up to INT_MAX).
static inline int mem_kv_blocks_for(const struct mem_kv_pool *p, int n_tokens) {
    return (int)(((int64_t)n_tokens + p->block_size - 1) / p->block_size);
}

// Can a sequence that needs n_tokens of KV be admitted?
enum mem_admit mem_kv_pool_can_admit(const struct mem_kv_pool *p, int n_tokens);

// Grows t so it holds at least n_tokens tokens, all or nothing. Returns 0, or ERR_NOSPACE (t is
// unchanged) when the pool has too few free blocks, or ERR_NOMEM.
int mem_kv_seq_reserve(struct mem_kv_pool *p, struct mem_block_table *t, int n_tokens);

// Makes dst share src's first n_blocks blocks (ref_cnt + 1 each); dst must be empty.
int mem_kv_seq_share(struct mem_kv_pool *p, struct mem_block_table *dst,
                     const struct mem_block_table *src, int n_blocks);

// Drops every block of t (ref_cnt - 1; a block returns to the free queue at 0) and empties t.
// Keeps t's storage for reuse; mem_block_table_free() releases it.
void mem_kv_seq_release(struct mem_kv_pool *p, struct mem_block_table *t);
void mem_block_table_free(struct mem_block_table *t);

// The cache slot of the token at position pos of a sequence with table t.
static inline int32_t mem_kv_slot(const struct mem_kv_pool *p, const struct mem_block_table *t,
                                  int pos) {
    return t->block_ids[pos / p->block_size] * p->block_size + pos % p->block_size;
}

struct mem_kv_usage {
    int n_blocks, n_free, n_used, block_size;
    double usage; // n_used / n_blocks
};
void mem_kv_pool_usage(const struct mem_kv_pool *p, struct mem_kv_usage *u);

// Checks every invariant (each block free xor referenced, free queue holds exactly the free ids,
// counts agree). Returns 0 or ERR_INTERNAL with err_msg() saying what broke. For tests.
int mem_kv_pool_check(const struct mem_kv_pool *p);

#endif

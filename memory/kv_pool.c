// The KV-cache block pool (memory/kv_pool.h): which block ids are whose. Pure C; the bytes live
// in the arena's KV region.
//
// The free queue is a ring of ids: allocation pops at the head, release pushes at the tail, both
// O(1). A FIFO rather than a stack hands out the block that has been free longest, which is what
// prefix caching will want later (a freed block keeps its contents until it is reused).
#include "memory/kv_pool.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

// ---- the pool

int mem_kv_pool_init(struct mem_kv_pool *p, int n_blocks, int block_size) {
    memset(p, 0, sizeof *p);
    if (n_blocks < 1) return err_set(ERR_INVAL, "KV pool: n_blocks must be >= 1, got %d", n_blocks);
    if (block_size < 1)
        return err_set(ERR_INVAL, "KV pool: block_size must be >= 1, got %d", block_size);
    p->ref_cnt = calloc((size_t)n_blocks, sizeof *p->ref_cnt);
    p->free_queue = malloc((size_t)n_blocks * sizeof *p->free_queue);
    if (!p->ref_cnt || !p->free_queue) {
        free(p->ref_cnt);
        free(p->free_queue);
        memset(p, 0, sizeof *p);
        return err_set(ERR_NOMEM, "KV pool: cannot allocate the tables of %d blocks", n_blocks);
    }
    for (int i = 0; i < n_blocks; i++) p->free_queue[i] = i;
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->n_free = n_blocks;
    p->free_head = 0;
    return 0;
}

void mem_kv_pool_free(struct mem_kv_pool *p) {
    if (!p) return;
    free(p->ref_cnt);
    free(p->free_queue);
    memset(p, 0, sizeof *p);
}

static int32_t pool_pop(struct mem_kv_pool *p) {
    int32_t id = p->free_queue[p->free_head];
    p->free_head = p->free_head + 1 == p->n_blocks ? 0 : p->free_head + 1;
    p->n_free--;
    p->ref_cnt[id] = 1;
    p->n_allocs_total++;
    return id;
}

static void pool_push(struct mem_kv_pool *p, int32_t id) {
    int tail = p->free_head + p->n_free;
    if (tail >= p->n_blocks) tail -= p->n_blocks;
    p->free_queue[tail] = id;
    p->n_free++;
}

enum mem_admit mem_kv_pool_can_admit(const struct mem_kv_pool *p, int n_tokens) {
    int need = n_tokens > 0 ? mem_kv_blocks_for(p, n_tokens) : 0;
    if (need > p->n_blocks) return MEM_ADMIT_NEVER;
    if (need > p->n_free) return MEM_ADMIT_LATER;
    return MEM_ADMIT_NOW;
}

// ---- sequences

// Makes room for cap ids in t; t keeps its contents. ERR_NOMEM leaves t as it was.
static int table_grow(struct mem_block_table *t, int cap) {
    if (cap <= t->cap) return 0;
    int new_cap = t->cap ? t->cap : 4;
    while (new_cap < cap) new_cap = new_cap > (1 << 29) ? cap : new_cap * 2;
    int32_t *ids = realloc(t->block_ids, (size_t)new_cap * sizeof *ids);
    if (!ids) return err_set(ERR_NOMEM, "KV pool: cannot grow a block table to %d ids", new_cap);
    t->block_ids = ids;
    t->cap = new_cap;
    return 0;
}

int mem_kv_seq_reserve(struct mem_kv_pool *p, struct mem_block_table *t, int n_tokens) {
    if (n_tokens < 0) return err_set(ERR_INVAL, "KV pool: cannot reserve %d tokens", n_tokens);
    int want = mem_kv_blocks_for(p, n_tokens);
    int need = want - t->n_blocks;
    if (need <= 0) return 0;
    if (need > p->n_free)
        return err_set(ERR_NOSPACE,
                       "KV pool: %d tokens need %d more blocks (the sequence holds %d), only %d "
                       "of %d are free",
                       n_tokens, need, t->n_blocks, p->n_free, p->n_blocks);
    int rc = table_grow(t, want);
    if (rc) return rc;
    for (int i = 0; i < need; i++) t->block_ids[t->n_blocks++] = pool_pop(p);
    return 0;
}

int mem_kv_seq_share(struct mem_kv_pool *p, struct mem_block_table *dst,
                     const struct mem_block_table *src, int n_blocks) {
    if (dst->n_blocks != 0)
        return err_set(ERR_INVAL, "KV pool: share into a table that already holds %d blocks",
                       dst->n_blocks);
    if (n_blocks < 0 || n_blocks > src->n_blocks)
        return err_set(ERR_INVAL, "KV pool: cannot share %d blocks of a table of %d", n_blocks,
                       src->n_blocks);
    int rc = table_grow(dst, n_blocks);
    if (rc) return rc;
    for (int i = 0; i < n_blocks; i++) {
        int32_t id = src->block_ids[i];
        p->ref_cnt[id]++;
        dst->block_ids[i] = id;
    }
    dst->n_blocks = n_blocks;
    return 0;
}

void mem_kv_seq_release(struct mem_kv_pool *p, struct mem_block_table *t) {
    // Last block first, so the tail of a sequence (the least likely to be shared as a prefix)
    // is the first to be reused.
    for (int i = t->n_blocks - 1; i >= 0; i--) {
        int32_t id = t->block_ids[i];
        if (--p->ref_cnt[id] == 0) pool_push(p, id);
    }
    t->n_blocks = 0;
}

void mem_block_table_free(struct mem_block_table *t) {
    if (!t) return;
    free(t->block_ids);
    memset(t, 0, sizeof *t);
}

// ---- accounting

void mem_kv_pool_usage(const struct mem_kv_pool *p, struct mem_kv_usage *u) {
    u->n_blocks = p->n_blocks;
    u->n_free = p->n_free;
    u->n_used = p->n_blocks - p->n_free;
    u->block_size = p->block_size;
    u->usage = p->n_blocks ? (double)u->n_used / (double)p->n_blocks : 0.0;
}

int mem_kv_pool_check(const struct mem_kv_pool *p) {
    if (p->n_free < 0 || p->n_free > p->n_blocks)
        return err_set(ERR_INTERNAL, "KV pool: n_free %d outside [0, %d]", p->n_free, p->n_blocks);
    if (p->n_blocks > 0 && (p->free_head < 0 || p->free_head >= p->n_blocks))
        return err_set(ERR_INTERNAL, "KV pool: free_head %d outside [0, %d)", p->free_head,
                       p->n_blocks);
    uint8_t *queued = calloc((size_t)p->n_blocks + 1, 1);
    if (!queued) return err_set(ERR_NOMEM, "KV pool check: out of memory");
    int rc = 0;
    for (int i = 0; i < p->n_free && !rc; i++) {
        int32_t id = p->free_queue[(p->free_head + i) % p->n_blocks];
        if (id < 0 || id >= p->n_blocks)
            rc = err_set(ERR_INTERNAL, "KV pool: free queue slot %d holds id %d, outside [0, %d)",
                         i, id, p->n_blocks);
        else if (queued[id])
            rc = err_set(ERR_INTERNAL, "KV pool: block %d is in the free queue twice", id);
        else if (p->ref_cnt[id] != 0)
            rc = err_set(ERR_INTERNAL, "KV pool: block %d is in the free queue with ref_cnt %d",
                         id, p->ref_cnt[id]);
        else
            queued[id] = 1;
    }
    for (int id = 0; id < p->n_blocks && !rc; id++) {
        if (p->ref_cnt[id] < 0)
            rc = err_set(ERR_INTERNAL, "KV pool: block %d has ref_cnt %d", id, p->ref_cnt[id]);
        else if (p->ref_cnt[id] == 0 && !queued[id])
            rc = err_set(ERR_INTERNAL, "KV pool: block %d is free (ref_cnt 0) but not queued: "
                                       "leaked", id);
    }
    free(queued);
    return rc;
}

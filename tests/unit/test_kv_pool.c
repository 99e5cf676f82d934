// The KV block pool: exact behaviour on small cases, then long seeded random runs of
// allocate / append / share / free / preempt checked against a shadow count of references.
#include "common/err.h"
#include "memory/kv_pool.h"
#include "tests/test.h"

#include <stdint.h>

// ---- exact cases

TEST(kv_pool_init_rejects_bad_sizes) {
    struct mem_kv_pool p;
    CHECK_EQ(mem_kv_pool_init(&p, 0, 16), ERR_INVAL);
    CHECK(strstr(err_msg(), "n_blocks") != NULL);
    CHECK_EQ(mem_kv_pool_init(&p, 8, 0), ERR_INVAL);
    CHECK(strstr(err_msg(), "block_size") != NULL);
    mem_kv_pool_free(&p); // safe on a failed init
    mem_kv_pool_free(NULL);
    mem_block_table_free(NULL);
}

TEST(kv_pool_reserve_grows_by_whole_blocks_and_maps_slots) {
    struct mem_kv_pool p;
    CHECK_OK(mem_kv_pool_init(&p, 10, 16));
    CHECK_EQ(p.n_free, 10);
    struct mem_block_table t = {0};
    // 1 token needs 1 block; 16 still 1; 17 needs 2; 33 needs 3.
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 1));
    CHECK_EQ(t.n_blocks, 1);
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 16));
    CHECK_EQ(t.n_blocks, 1);
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 17));
    CHECK_EQ(t.n_blocks, 2);
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 33));
    CHECK_EQ(t.n_blocks, 3);
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 20)); // shrinking asks nothing
    CHECK_EQ(t.n_blocks, 3);
    CHECK_EQ(p.n_free, 7);
    CHECK_EQ(p.n_allocs_total, 3);
    // The free queue starts as 0, 1, 2, ...: the blocks are 0, 1, 2 in order.
    CHECK_EQ(t.block_ids[0], 0);
    CHECK_EQ(t.block_ids[1], 1);
    CHECK_EQ(t.block_ids[2], 2);
    // slot(pos) = block_ids[pos / 16] * 16 + pos % 16
    CHECK_EQ(mem_kv_slot(&p, &t, 0), 0);
    CHECK_EQ(mem_kv_slot(&p, &t, 15), 15);
    CHECK_EQ(mem_kv_slot(&p, &t, 16), 16);
    CHECK_EQ(mem_kv_slot(&p, &t, 40), 2 * 16 + 8);
    CHECK_EQ(mem_kv_blocks_for(&p, 0), 0);
    CHECK_EQ(mem_kv_blocks_for(&p, 160), 10);
    CHECK_EQ(mem_kv_blocks_for(&p, 161), 11);
    CHECK_EQ(mem_kv_seq_reserve(&p, &t, -1), ERR_INVAL);
    CHECK_OK(mem_kv_pool_check(&p));
    mem_kv_seq_release(&p, &t);
    CHECK_EQ(t.n_blocks, 0);
    CHECK_EQ(p.n_free, 10);
    CHECK_OK(mem_kv_pool_check(&p));
    mem_block_table_free(&t);
    mem_kv_pool_free(&p);
}

TEST(kv_pool_reserve_is_all_or_nothing) {
    struct mem_kv_pool p;
    CHECK_OK(mem_kv_pool_init(&p, 4, 8));
    struct mem_block_table a = {0}, b = {0};
    CHECK_OK(mem_kv_seq_reserve(&p, &a, 24)); // 3 blocks
    CHECK_OK(mem_kv_seq_reserve(&p, &b, 1));  // 1 block
    CHECK_EQ(p.n_free, 0);
    // b wants 2 more blocks, none are free: nothing changes.
    CHECK_EQ(mem_kv_seq_reserve(&p, &b, 17), ERR_NOSPACE);
    CHECK(strstr(err_msg(), "need 2 more blocks") != NULL);
    CHECK_EQ(b.n_blocks, 1);
    CHECK_EQ(p.n_free, 0);
    // Freeing a gives b room.
    mem_kv_seq_release(&p, &a);
    CHECK_EQ(p.n_free, 3);
    CHECK_OK(mem_kv_seq_reserve(&p, &b, 17));
    CHECK_EQ(b.n_blocks, 3);
    CHECK_EQ(p.n_free, 1);
    CHECK_OK(mem_kv_pool_check(&p));
    mem_kv_seq_release(&p, &b);
    mem_block_table_free(&a);
    mem_block_table_free(&b);
    mem_kv_pool_free(&p);
}

TEST(kv_pool_admission_now_later_never) {
    struct mem_kv_pool p;
    CHECK_OK(mem_kv_pool_init(&p, 8, 16)); // 128 tokens in all
    struct mem_block_table t = {0};
    CHECK_EQ(mem_kv_pool_can_admit(&p, 128), MEM_ADMIT_NOW);
    CHECK_EQ(mem_kv_pool_can_admit(&p, 129), MEM_ADMIT_NEVER);
    CHECK_EQ(mem_kv_pool_can_admit(&p, 0), MEM_ADMIT_NOW);
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 80)); // 5 blocks, 3 free
    CHECK_EQ(mem_kv_pool_can_admit(&p, 48), MEM_ADMIT_NOW);   // 3 blocks
    CHECK_EQ(mem_kv_pool_can_admit(&p, 49), MEM_ADMIT_LATER); // 4 blocks
    CHECK_EQ(mem_kv_pool_can_admit(&p, 128), MEM_ADMIT_LATER);
    CHECK_EQ(mem_kv_pool_can_admit(&p, 1000), MEM_ADMIT_NEVER);
    // A client's huge max_tokens must not wrap around into "fits".
    CHECK_EQ(mem_kv_pool_can_admit(&p, 2147483647), MEM_ADMIT_NEVER);
    CHECK_EQ(mem_kv_blocks_for(&p, 2147483647), 134217728); // ceil((2^31 - 1) / 16) = 2^27
    CHECK_EQ(mem_kv_seq_reserve(&p, &t, 2147483647), ERR_NOSPACE);
    struct mem_kv_usage u;
    mem_kv_pool_usage(&p, &u);
    CHECK_EQ(u.n_blocks, 8);
    CHECK_EQ(u.n_free, 3);
    CHECK_EQ(u.n_used, 5);
    CHECK_EQ(u.block_size, 16);
    CHECK_NEAR(u.usage, 5.0 / 8.0, 1e-12);
    mem_kv_seq_release(&p, &t);
    mem_kv_pool_usage(&p, &u);
    CHECK_NEAR(u.usage, 0.0, 0);
    mem_block_table_free(&t);
    mem_kv_pool_free(&p);
}

TEST(kv_pool_share_counts_references) {
    struct mem_kv_pool p;
    CHECK_OK(mem_kv_pool_init(&p, 6, 4));
    struct mem_block_table a = {0}, b = {0}, c = {0};
    CHECK_OK(mem_kv_seq_reserve(&p, &a, 10)); // blocks 0, 1, 2 (the last partly filled)
    // b shares a's two full blocks, then gets its own third block.
    CHECK_OK(mem_kv_seq_share(&p, &b, &a, 2));
    CHECK_EQ(b.n_blocks, 2);
    CHECK_EQ(b.block_ids[0], a.block_ids[0]);
    CHECK_EQ(b.block_ids[1], a.block_ids[1]);
    CHECK_EQ(p.ref_cnt[a.block_ids[0]], 2);
    CHECK_EQ(p.ref_cnt[a.block_ids[2]], 1);
    CHECK_EQ(p.n_free, 3); // sharing takes no block
    CHECK_OK(mem_kv_seq_reserve(&p, &b, 10));
    CHECK_EQ(b.n_blocks, 3);
    CHECK(b.block_ids[2] != a.block_ids[2]);
    CHECK_EQ(p.n_free, 2);
    CHECK_OK(mem_kv_pool_check(&p));
    // Sharing into a non-empty table, or more blocks than the source has, is refused.
    CHECK_EQ(mem_kv_seq_share(&p, &b, &a, 1), ERR_INVAL);
    CHECK_EQ(mem_kv_seq_share(&p, &c, &a, 4), ERR_INVAL);
    CHECK_EQ(mem_kv_seq_share(&p, &c, &a, -1), ERR_INVAL);
    CHECK_EQ(c.n_blocks, 0);
    // Releasing a keeps the shared blocks alive for b; releasing b frees everything.
    mem_kv_seq_release(&p, &a);
    CHECK_EQ(p.n_free, 3);
    CHECK_EQ(p.ref_cnt[b.block_ids[0]], 1);
    CHECK_OK(mem_kv_pool_check(&p));
    mem_kv_seq_release(&p, &b);
    CHECK_EQ(p.n_free, 6);
    CHECK_OK(mem_kv_pool_check(&p));
    mem_block_table_free(&a);
    mem_block_table_free(&b);
    mem_block_table_free(&c);
    mem_kv_pool_free(&p);
}

TEST(kv_pool_free_queue_is_fifo) {
    // A released block goes to the back of the queue: the block free longest is reused first.
    struct mem_kv_pool p;
    CHECK_OK(mem_kv_pool_init(&p, 4, 1));
    struct mem_block_table a = {0}, b = {0};
    CHECK_OK(mem_kv_seq_reserve(&p, &a, 2)); // 0, 1
    mem_kv_seq_release(&p, &a);             // queue: 2, 3, 1, 0 (last block first)
    CHECK_OK(mem_kv_seq_reserve(&p, &b, 4));
    CHECK_EQ(b.block_ids[0], 2);
    CHECK_EQ(b.block_ids[1], 3);
    CHECK_EQ(b.block_ids[2], 1);
    CHECK_EQ(b.block_ids[3], 0);
    CHECK_EQ(p.n_free, 0);
    CHECK_OK(mem_kv_pool_check(&p));
    mem_kv_seq_release(&p, &b);
    mem_block_table_free(&a);
    mem_block_table_free(&b);
    mem_kv_pool_free(&p);
}

TEST(kv_pool_check_catches_broken_invariants) {
    struct mem_kv_pool p;
    CHECK_OK(mem_kv_pool_init(&p, 4, 16));
    struct mem_block_table t = {0};
    CHECK_OK(mem_kv_seq_reserve(&p, &t, 17)); // blocks 0, 1; queue 2, 3
    CHECK_OK(mem_kv_pool_check(&p));
    // A block in use that also sits in the free queue: handed out twice.
    int32_t saved = p.free_queue[p.free_head];
    p.free_queue[p.free_head] = t.block_ids[0];
    CHECK_EQ(mem_kv_pool_check(&p), ERR_INTERNAL);
    CHECK(strstr(err_msg(), "ref_cnt 1") != NULL);
    p.free_queue[p.free_head] = saved;
    // The same free id queued twice.
    p.free_queue[(p.free_head + 1) % 4] = saved;
    CHECK_EQ(mem_kv_pool_check(&p), ERR_INTERNAL);
    CHECK(strstr(err_msg(), "twice") != NULL);
    p.free_queue[(p.free_head + 1) % 4] = 3;
    CHECK_OK(mem_kv_pool_check(&p));
    // A block whose references dropped to 0 without being queued: leaked.
    p.ref_cnt[t.block_ids[1]] = 0;
    CHECK_EQ(mem_kv_pool_check(&p), ERR_INTERNAL);
    CHECK(strstr(err_msg(), "leaked") != NULL);
    p.ref_cnt[t.block_ids[1]] = 1;
    p.n_free = 5;
    CHECK_EQ(mem_kv_pool_check(&p), ERR_INTERNAL);
    p.n_free = 2;
    CHECK_OK(mem_kv_pool_check(&p));
    mem_kv_seq_release(&p, &t);
    mem_block_table_free(&t);
    mem_kv_pool_free(&p);
}

// ---- random runs against a shadow model

// xorshift64*: seeded, so a failure reproduces exactly.
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}
static int rng_int(uint64_t *s, int n) { return (int)(rng_next(s) % (uint64_t)n); }

#define MAX_SEQS 24

struct shadow {
    struct mem_kv_pool pool;
    struct mem_block_table t[MAX_SEQS];
    int n_tokens[MAX_SEQS];
    int age[MAX_SEQS]; // admission order, for preempting the newest
    bool live[MAX_SEQS];
    int32_t *refs;     // [n_blocks] references counted from the live tables
    int clock;
};

// Recounts every block's references from the live tables and compares with the pool.
static void shadow_verify(struct shadow *sh) {
    int n = sh->pool.n_blocks;
    memset(sh->refs, 0, (size_t)n * sizeof *sh->refs);
    for (int i = 0; i < MAX_SEQS; i++) {
        if (!sh->live[i]) {
            CHECK_EQ(sh->t[i].n_blocks, 0);
            continue;
        }
        CHECK_EQ(sh->t[i].n_blocks, mem_kv_blocks_for(&sh->pool, sh->n_tokens[i]));
        for (int k = 0; k < sh->t[i].n_blocks; k++) {
            int32_t id = sh->t[i].block_ids[k];
            CHECK_MSG(id >= 0 && id < n, "seq %d holds id %d", i, id);
            sh->refs[id]++;
        }
    }
    int n_zero = 0;
    for (int id = 0; id < n; id++) {
        CHECK_MSG(sh->refs[id] == sh->pool.ref_cnt[id], "block %d: %d references, ref_cnt %d",
                  id, sh->refs[id], sh->pool.ref_cnt[id]);
        n_zero += sh->refs[id] == 0;
    }
    CHECK_EQ(n_zero, sh->pool.n_free);
}

// Grows sequence i to n_tokens; checks the admission answer against what reserve does and that
// every newly handed-out block had no references.
static void shadow_grow(struct shadow *sh, int i, int n_tokens) {
    struct mem_kv_pool *p = &sh->pool;
    int before = sh->t[i].n_blocks, free_before = p->n_free;
    int extra = mem_kv_blocks_for(p, n_tokens) - before;
    int rc = mem_kv_seq_reserve(p, &sh->t[i], n_tokens);
    if (extra <= 0) {
        CHECK_EQ(rc, 0);
        return;
    }
    if (extra > free_before) {
        CHECK_EQ(rc, ERR_NOSPACE);
        CHECK_EQ(sh->t[i].n_blocks, before);
        CHECK_EQ(p->n_free, free_before);
        return;
    }
    CHECK_OK(rc);
    for (int k = before; k < sh->t[i].n_blocks; k++) {
        int32_t id = sh->t[i].block_ids[k];
        CHECK_MSG(sh->refs[id] == 0, "block %d handed out while %d references held", id,
                  sh->refs[id]);
        sh->refs[id] = 1; // until the next verify recounts
    }
    CHECK_EQ(p->n_free, free_before - extra);
    sh->n_tokens[i] = n_tokens;
}

static int free_slot(struct shadow *sh) {
    for (int i = 0; i < MAX_SEQS; i++)
        if (!sh->live[i]) return i;
    return -1;
}

static int random_live(struct shadow *sh, uint64_t *rng) {
    int start = rng_int(rng, MAX_SEQS);
    for (int k = 0; k < MAX_SEQS; k++) {
        int i = (start + k) % MAX_SEQS;
        if (sh->live[i]) return i;
    }
    return -1;
}

static void shadow_release(struct shadow *sh, int i) {
    for (int k = 0; k < sh->t[i].n_blocks; k++) sh->refs[sh->t[i].block_ids[k]]--;
    mem_kv_seq_release(&sh->pool, &sh->t[i]);
    sh->live[i] = false;
    sh->n_tokens[i] = 0;
}

static void run_random(uint64_t seed, int n_blocks, int block_size, int n_ops) {
    struct shadow sh = {0};
    CHECK_OK(mem_kv_pool_init(&sh.pool, n_blocks, block_size));
    sh.refs = calloc((size_t)n_blocks, sizeof *sh.refs);
    CHECK(sh.refs != NULL);
    uint64_t rng = seed;
    int n_admitted = 0, n_later = 0, n_never = 0, n_preempt = 0, n_share = 0;
    int max_tokens = n_blocks * block_size;
    for (int op = 0; op < n_ops; op++) {
        int kind = rng_int(&rng, 100);
        if (kind < 30) { // admit a new sequence
            int i = free_slot(&sh);
            if (i < 0) continue;
            // Mostly a third of the pool at most; one in eight up to 1.5 pools (some never fit).
            int span = rng_int(&rng, 8) == 0 ? max_tokens * 3 / 2 : max_tokens / 3;
            int want = 1 + rng_int(&rng, span);
            enum mem_admit a = mem_kv_pool_can_admit(&sh.pool, want);
            int need = mem_kv_blocks_for(&sh.pool, want);
            CHECK_EQ(a, need > n_blocks ? MEM_ADMIT_NEVER
                        : need > sh.pool.n_free ? MEM_ADMIT_LATER : MEM_ADMIT_NOW);
            if (a == MEM_ADMIT_NEVER) { n_never++; continue; }
            if (a == MEM_ADMIT_LATER) {
                n_later++;
                CHECK_EQ(mem_kv_seq_reserve(&sh.pool, &sh.t[i], want), ERR_NOSPACE);
                CHECK_EQ(sh.t[i].n_blocks, 0);
                continue;
            }
            sh.live[i] = true;
            sh.age[i] = ++sh.clock;
            shadow_grow(&sh, i, want);
            CHECK_EQ(sh.n_tokens[i], want);
            n_admitted++;
        } else if (kind < 65) { // append tokens (decode or a prefill chunk); preempt if short
            int i = random_live(&sh, &rng);
            if (i < 0) continue;
            int want = sh.n_tokens[i] + 1 + (rng_int(&rng, 4) == 0 ? rng_int(&rng, 3 * block_size) : 0);
            if (want > max_tokens) { shadow_release(&sh, i); continue; }
            shadow_grow(&sh, i, want);
            while (sh.n_tokens[i] < want) { // preempt the newest other sequence, then retry
                int newest = -1;
                for (int k = 0; k < MAX_SEQS; k++)
                    if (sh.live[k] && k != i && (newest < 0 || sh.age[k] > sh.age[newest]))
                        newest = k;
                if (newest < 0) break;
                shadow_release(&sh, newest);
                n_preempt++;
                shadow_grow(&sh, i, want);
            }
        } else if (kind < 75) { // fork: share the full blocks of a live sequence
            int src = random_live(&sh, &rng), i = free_slot(&sh);
            if (src < 0 || i < 0) continue;
            int full = sh.n_tokens[src] / block_size;
            CHECK_OK(mem_kv_seq_share(&sh.pool, &sh.t[i], &sh.t[src], full));
            for (int k = 0; k < full; k++) sh.refs[sh.t[i].block_ids[k]]++;
            sh.live[i] = true;
            sh.age[i] = ++sh.clock;
            sh.n_tokens[i] = full * block_size;
            n_share++;
        } else if (kind < 95) { // finish
            int i = random_live(&sh, &rng);
            if (i >= 0) shadow_release(&sh, i);
        } else { // preempt the newest
            int newest = -1;
            for (int k = 0; k < MAX_SEQS; k++)
                if (sh.live[k] && (newest < 0 || sh.age[k] > sh.age[newest])) newest = k;
            if (newest >= 0) { shadow_release(&sh, newest); n_preempt++; }
        }
        shadow_verify(&sh);
        if (op % 64 == 0) CHECK_OK(mem_kv_pool_check(&sh.pool));
    }
    // Everything released: every block is back, in the queue exactly once.
    for (int i = 0; i < MAX_SEQS; i++)
        if (sh.live[i]) shadow_release(&sh, i);
    CHECK_EQ(sh.pool.n_free, n_blocks);
    CHECK_OK(mem_kv_pool_check(&sh.pool));
    // Each path ran often enough to mean something.
    CHECK_MSG(n_admitted > n_ops / 20 && n_later > 0 && n_never > 0 && n_preempt > 0 &&
                  n_share > n_ops / 50,
              "seed %llu: admitted %d, later %d, never %d, preempted %d, shared %d",
              (unsigned long long)seed, n_admitted, n_later, n_never, n_preempt, n_share);
    for (int i = 0; i < MAX_SEQS; i++) mem_block_table_free(&sh.t[i]);
    free(sh.refs);
    mem_kv_pool_free(&sh.pool);
}

TEST(kv_pool_random_100k_ops_small_pool) { run_random(0x9e3779b97f4a7c15ULL, 37, 4, 100000); }

TEST(kv_pool_random_100k_ops_larger_pool) { run_random(12345, 500, 16, 100000); }

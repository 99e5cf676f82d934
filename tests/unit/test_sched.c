// The scheduler without a model: a simulated KV cache records which token each slot holds, and a
// fake forward pass reads every sequence's whole context back through its block table, so a
// wrong slot, a block shared or freed too early, or a lost token after preemption shows up as a
// wrong context (and a wrong next token).
#include "common/err.h"
#include "memory/kv_pool.h"
#include "server/sched.h"
#include "tests/test.h"

#include <stdint.h>

// ---- the simulator

struct sim {
    struct mem_kv_pool pool;
    struct sched s;
    struct sched_plan p;
    int32_t *cache; // [n_blocks * block_size] the token stored in each slot, -1 if none
};

static void sim_init(struct sim *m, int n_blocks, int block_size, int max_seqs, int max_tokens,
                     int max_blocks_per_seq) {
    CHECK_OK(mem_kv_pool_init(&m->pool, n_blocks, block_size));
    struct sched_config cfg = {max_seqs, max_tokens, max_blocks_per_seq};
    CHECK_OK(sched_init(&m->s, &m->pool, &cfg));
    CHECK_OK(sched_plan_init(&m->p, &cfg));
    m->cache = malloc((size_t)n_blocks * block_size * sizeof(int32_t));
    for (int i = 0; i < n_blocks * block_size; i++)
        m->cache[i] = -1;
}

static void sim_free(struct sim *m) {
    sched_plan_free(&m->p);
    sched_free(&m->s);
    mem_kv_pool_free(&m->pool);
    free(m->cache);
}

// The fake model's next token: a hash of the whole context.
static int32_t next_token(const int32_t *ctx, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++)
        h = (h ^ (uint64_t)(ctx[i] + 7)) * 1099511628211ull;
    return (int32_t)(h % 1000);
}

// Writes the step's tokens into their slots, checks every context read back through the block
// tables, commits, and returns in next[i] the token each sampling sequence gets (-1 otherwise).
static void sim_forward(struct sim *m, int32_t *next) {
    struct sched_plan *p = &m->p;
    int bs = m->pool.block_size, stride = m->s.cfg.max_blocks_per_seq;
    CHECK(p->n_tokens <= m->s.cfg.max_num_batched_tokens);
    CHECK(p->n_seqs <= m->s.cfg.max_num_seqs);
    for (int t = 0; t < p->n_tokens; t++)
        m->cache[p->slot_mapping[t]] = p->token_ids[t];
    int32_t *ctx = malloc(4096 * sizeof(int32_t));
    for (int i = 0; i < p->n_seqs; i++) {
        struct sched_seq *seq = p->seqs[i];
        CHECK_EQ(p->query_start[i + 1] - p->query_start[i], p->n_new[i]);
        for (int pos = 0; pos < p->seq_lens[i]; pos++) {
            int32_t slot = p->block_tables[i * stride + pos / bs] * bs + pos % bs;
            ctx[pos] = m->cache[slot];
            CHECK_MSG(ctx[pos] == seq->token_ids[pos],
                      "seq %llu pos %d: cache holds %d, sequence has %d",
                      (unsigned long long)seq->seq_id, pos, ctx[pos], seq->token_ids[pos]);
        }
        next[i] = p->sample[i] ? next_token(ctx, p->seq_lens[i]) : -1;
    }
    free(ctx);
    sched_commit(&m->s, p);
}

static void make_prompt(int32_t *out, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = (int32_t)((seed >> 33) % 1000);
    }
}

// ---- tests

TEST(sched_chunked_prefill_keeps_decodes_flowing) {
    struct sim m;
    sim_init(&m, 64, 4, 8, 8, 16);
    int32_t prompt[20], next[8];
    make_prompt(prompt, 20, 1);
    struct sched_seq a, b;
    CHECK_OK(sched_seq_init(&a, 1, prompt, 3, 16));
    CHECK_OK(sched_seq_init(&b, 2, prompt, 20, 30));
    CHECK_OK(sched_add(&m.s, &a));
    // Step 1: a's whole prompt (3) and 5 of b's 20.
    CHECK_OK(sched_add(&m.s, &b));
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK_EQ(m.p.n_seqs, 2);
    CHECK_EQ(m.p.n_new[0], 3);
    CHECK_EQ(m.p.n_new[1], 5);
    CHECK(m.p.sample[0] && !m.p.sample[1]);
    sim_forward(&m, next);
    CHECK_OK(sched_seq_append(&a, next[0]));
    // Following steps: a's decode comes first, then 7 tokens of b's prompt, until b is done.
    int chunks[] = {7, 7, 1};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(sched_step(&m.s, &m.p));
        CHECK_EQ(m.p.n_seqs, 2);
        CHECK(m.p.seqs[0] == &a && m.p.seqs[1] == &b);
        CHECK_EQ(m.p.n_new[0], 1);
        CHECK_EQ(m.p.n_new[1], chunks[k]);
        CHECK_EQ(m.p.positions[1], 5 + 7 * k);
        CHECK_EQ(m.p.sample[1], k == 2);
        sim_forward(&m, next);
        CHECK_OK(sched_seq_append(&a, next[0]));
        if (m.p.sample[1]) CHECK_OK(sched_seq_append(&b, next[1]));
    }
    CHECK_EQ(b.num_computed_tokens, 20);
    CHECK_EQ(b.token_ids[20], next_token(prompt, 20));
    sched_finish(&m.s, &a);
    sched_finish(&m.s, &b);
    CHECK_EQ(m.pool.n_free, 64);
    CHECK_OK(mem_kv_pool_check(&m.pool));
    sched_seq_free(&a);
    sched_seq_free(&b);
    sim_free(&m);
}

TEST(sched_preempts_newest_and_requeues_at_head) {
    struct sim m;
    // 4 blocks of 2 tokens: two sequences of 4 tokens take 2 blocks each; the older one's next
    // token needs a third block, so the newer one must go.
    sim_init(&m, 4, 2, 4, 64, 8);
    int32_t prompt[5], next[4];
    make_prompt(prompt, 5, 2);
    struct sched_seq a, b, c;
    CHECK_OK(sched_seq_init(&a, 1, prompt, 4, 8));
    CHECK_OK(sched_seq_init(&b, 2, prompt + 1, 4, 8));
    CHECK_OK(sched_seq_init(&c, 3, prompt, 2, 8));
    CHECK_OK(sched_add(&m.s, &a));
    CHECK_OK(sched_add(&m.s, &b));
    CHECK_OK(sched_add(&m.s, &c));
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK_EQ(m.p.n_seqs, 2); // c waits for blocks
    CHECK_EQ(m.s.n_waiting, 1);
    sim_forward(&m, next);
    CHECK_OK(sched_seq_append(&a, next[0]));
    CHECK_OK(sched_seq_append(&b, next[1]));
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK_EQ(m.p.n_preempted, 1);
    CHECK_EQ(m.s.n_preemptions, 1);
    CHECK_EQ(b.state, SCHED_WAITING);
    CHECK_EQ(b.num_computed_tokens, 0);
    CHECK_EQ(b.n_preemptions, 1);
    CHECK(m.s.waiting[0] == &b && m.s.waiting[1] == &c);
    CHECK_EQ(m.p.n_seqs, 1);
    CHECK(m.p.seqs[0] == &a);
    sim_forward(&m, next);
    CHECK_OK(sched_seq_append(&a, next[0]));
    sched_finish(&m.s, &a);
    // b comes back first and recomputes its prompt and its generated token.
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK(m.p.seqs[0] == &b);
    CHECK_EQ(m.p.n_new[0], 5);
    CHECK(m.p.sample[0]);
    sim_forward(&m, next);
    int32_t ctx[5] = {prompt[1], prompt[2], prompt[3], prompt[4], b.token_ids[4]};
    CHECK_EQ(next[0], next_token(ctx, 5));
    sched_finish(&m.s, &b);
    sched_finish(&m.s, &c);
    CHECK_EQ(m.pool.n_free, 4);
    CHECK_OK(mem_kv_pool_check(&m.pool));
    sched_seq_free(&a);
    sched_seq_free(&b);
    sched_seq_free(&c);
    sim_free(&m);
}

TEST(sched_fcfs_admission_does_not_starve_big_requests) {
    struct sim m;
    sim_init(&m, 6, 4, 8, 64, 8);
    int32_t prompt[24], next[8];
    make_prompt(prompt, 24, 3);
    struct sched_seq a, big, small;
    CHECK_OK(sched_seq_init(&a, 1, prompt, 8, 9));     // 2 blocks, then 3
    CHECK_OK(sched_seq_init(&big, 2, prompt, 16, 17)); // needs 4 (5 with its token)
    CHECK_OK(sched_seq_init(&small, 3, prompt, 2, 3)); // would fit now
    CHECK_OK(sched_add(&m.s, &a));
    CHECK_OK(sched_step(&m.s, &m.p));
    sim_forward(&m, next);
    CHECK_OK(sched_seq_append(&a, next[0]));
    CHECK_OK(sched_add(&m.s, &big));
    CHECK_OK(sched_add(&m.s, &small));
    CHECK_OK(sched_step(&m.s, &m.p));
    // a's decode takes a third block; big needs 4 of the 3 left and small must wait behind it.
    CHECK_EQ(m.p.n_seqs, 1);
    CHECK_EQ(m.s.n_waiting, 2);
    CHECK(m.s.waiting[0] == &big);
    sim_forward(&m, next);
    sched_finish(&m.s, &a);
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK_EQ(m.p.n_seqs, 2);
    CHECK(m.p.seqs[0] == &big && m.p.seqs[1] == &small);
    sched_finish(&m.s, &big);
    sched_finish(&m.s, &small);
    CHECK_EQ(m.pool.n_free, 6);
    sched_seq_free(&a);
    sched_seq_free(&big);
    sched_seq_free(&small);
    sim_free(&m);
}

TEST(sched_refuses_what_can_never_fit) {
    struct sim m;
    sim_init(&m, 4, 4, 4, 64, 3);
    int32_t prompt[20] = {1, 2, 3};
    struct sched_seq a, b, c;
    CHECK_OK(sched_seq_init(&a, 1, prompt, 3, 17)); // 5 blocks > pool of 4
    CHECK_EQ(sched_add(&m.s, &a), ERR_INVAL);
    CHECK(strstr(err_msg(), "pool has 4") != NULL);
    CHECK_OK(sched_seq_init(&b, 2, prompt, 3, 13)); // 4 blocks > 3 per sequence
    CHECK_EQ(sched_add(&m.s, &b), ERR_INVAL);
    CHECK_OK(sched_seq_init(&c, 3, prompt, 3, 12));
    CHECK_OK(sched_add(&m.s, &c));
    CHECK_EQ(sched_add(&m.s, &c), ERR_INVAL); // twice
    CHECK_EQ(sched_seq_init(&a, 4, prompt, 0, 4), ERR_INVAL);
    sched_finish(&m.s, &c);
    sched_finish(&m.s, &c); // idempotent
    CHECK(sched_idle(&m.s));
    sched_seq_free(&a);
    sched_seq_free(&b);
    sched_seq_free(&c);
    sim_free(&m);
}

TEST(sched_cancel_frees_blocks) {
    struct sim m;
    sim_init(&m, 16, 4, 4, 64, 8);
    int32_t prompt[10], next[4];
    make_prompt(prompt, 10, 4);
    struct sched_seq a, b;
    CHECK_OK(sched_seq_init(&a, 1, prompt, 10, 20));
    CHECK_OK(sched_seq_init(&b, 2, prompt, 10, 20));
    CHECK_OK(sched_add(&m.s, &a));
    CHECK_OK(sched_add(&m.s, &b));
    CHECK_OK(sched_step(&m.s, &m.p));
    sim_forward(&m, next);
    CHECK_EQ(m.pool.n_free, 16 - 6);
    sched_finish(&m.s, &b); // running
    CHECK_EQ(m.pool.n_free, 16 - 3);
    CHECK_EQ(m.s.n_running, 1);
    sched_finish(&m.s, &a);
    CHECK_EQ(m.pool.n_free, 16);
    CHECK_OK(mem_kv_pool_check(&m.pool));
    sched_seq_free(&a);
    sched_seq_free(&b);
    sim_free(&m);
}

TEST(sched_siblings_share_prompt_blocks) {
    struct sim m;
    sim_init(&m, 32, 4, 8, 64, 8);
    int32_t prompt[10], next[8];
    make_prompt(prompt, 10, 5);
    struct sched_seq c[3];
    for (int i = 0; i < 3; i++) {
        CHECK_OK(sched_seq_init(&c[i], 10 + i, prompt, 10, 14));
        c[i].share_from = i ? &c[0] : NULL;
        CHECK_OK(sched_add(&m.s, &c[i]));
    }
    // The children wait for choice 0's prompt, then share its 2 full blocks and compute the last
    // partial block (2 tokens) themselves.
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK_EQ(m.p.n_seqs, 1);
    sim_forward(&m, next);
    CHECK_OK(sched_seq_append(&c[0], next[0]));
    CHECK_OK(sched_step(&m.s, &m.p));
    CHECK_EQ(m.p.n_seqs, 3);
    CHECK_EQ(m.p.n_new[1], 2);
    CHECK_EQ(m.p.positions[1], 8);
    CHECK_EQ(c[1].block_table.block_ids[0], c[0].block_table.block_ids[0]);
    CHECK_EQ(c[2].block_table.block_ids[1], c[0].block_table.block_ids[1]);
    CHECK(c[1].block_table.block_ids[2] != c[0].block_table.block_ids[2]);
    CHECK_EQ(m.pool.ref_cnt[c[0].block_table.block_ids[0]], 3);
    CHECK_EQ(m.pool.n_free, 32 - 3 - 1 - 1);
    sim_forward(&m, next);
    CHECK_EQ(next[1], next_token(prompt, 10));
    CHECK_EQ(next[2], next[1]);
    sched_finish(&m.s, &c[0]);
    CHECK_EQ(m.pool.ref_cnt[c[1].block_table.block_ids[0]], 2);
    sched_finish(&m.s, &c[1]);
    sched_finish(&m.s, &c[2]);
    CHECK_EQ(m.pool.n_free, 32);
    CHECK_OK(mem_kv_pool_check(&m.pool));
    for (int i = 0; i < 3; i++)
        sched_seq_free(&c[i]);
    sim_free(&m);
}

// Hundreds of sequences (some with siblings) against a pool that holds only a few: every
// sequence must get exactly the tokens it would get alone, and the pool must be whole after.
TEST(sched_stress_tiny_pool_matches_solo) {
    enum { N = 300, BS = 4 };
    struct sim m;
    sim_init(&m, 24, BS, 16, 24, 8);
    struct sched_seq *seqs = calloc(N, sizeof(*seqs));
    int *max_new = calloc(N, sizeof(int));
    int32_t prompt[20], next[16];
    uint64_t rng = 99;
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ull + 1;
        int n_prompt = 1 + (int)((rng >> 40) % 16);
        max_new[i] = 1 + (int)((rng >> 20) % 12);
        bool sibling = i > 0 && (rng >> 10) % 4 == 0 && seqs[i - 1].share_from == NULL;
        if (sibling) {
            n_prompt = seqs[i - 1].n_prompt;
            memcpy(prompt, seqs[i - 1].token_ids, (size_t)n_prompt * sizeof(int32_t));
        } else {
            make_prompt(prompt, n_prompt, rng);
        }
        if (n_prompt + max_new[i] > 8 * BS) max_new[i] = 8 * BS - n_prompt;
        CHECK_OK(sched_seq_init(&seqs[i], (uint64_t)i, prompt, n_prompt, n_prompt + max_new[i]));
        if (sibling) seqs[i].share_from = &seqs[i - 1];
    }
    int added = 0, done = 0, steps = 0;
    while (done < N) {
        // Requests keep arriving while others run.
        for (int k = 0; k < 7 && added < N; k++)
            CHECK_OK(sched_add(&m.s, &seqs[added++]));
        CHECK_OK(sched_step(&m.s, &m.p));
        CHECK_MSG(m.p.n_seqs > 0, "step %d planned nothing with %d waiting", steps, m.s.n_waiting);
        sim_forward(&m, next);
        for (int i = 0; i < m.p.n_seqs; i++) {
            struct sched_seq *seq = m.p.seqs[i];
            if (!m.p.sample[i]) continue;
            CHECK_OK(sched_seq_append(seq, next[i]));
            if (seq->n_tokens - seq->n_prompt == max_new[seq->seq_id]) {
                sched_finish(&m.s, seq);
                done++;
            }
        }
        CHECK_OK(mem_kv_pool_check(&m.pool));
        steps++;
    }
    int64_t preempted = 0;
    for (int i = 0; i < N; i++) {
        struct sched_seq *seq = &seqs[i];
        for (int t = seq->n_prompt; t < seq->n_tokens; t++)
            CHECK_MSG(seq->token_ids[t] == next_token(seq->token_ids, t),
                      "seq %d token %d: %d, alone %d", i, t, seq->token_ids[t],
                      next_token(seq->token_ids, t));
        preempted += seq->n_preemptions;
    }
    fprintf(stderr, "  %d sequences, %d steps, %lld preemptions\n", N, steps,
            (long long)m.s.n_preemptions);
    CHECK(m.s.n_preemptions > 20);
    CHECK_EQ(preempted, m.s.n_preemptions);
    CHECK_EQ(m.pool.n_free, 24);
    CHECK(sched_idle(&m.s));
    for (int i = 0; i < N; i++)
        sched_seq_free(&seqs[i]);
    free(seqs);
    free(max_new);
    sim_free(&m);
}

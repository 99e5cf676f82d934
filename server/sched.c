// The scheduler (see sched.h): sequences, the waiting and running queues, and the step planner
// that turns them into a model_batch.
#include "server/sched.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

// ---- sequences

int sched_seq_init(struct sched_seq *s, uint64_t seq_id, const int32_t *prompt, int n_prompt,
                   int cap_tokens) {
    memset(s, 0, sizeof(*s));
    if (n_prompt < 1 || cap_tokens < n_prompt)
        return err_set(ERR_INVAL, "sequence needs 1..%d prompt tokens, got %d", cap_tokens,
                       n_prompt);
    s->token_ids = malloc((size_t)cap_tokens * sizeof(int32_t));
    if (!s->token_ids) return err_set(ERR_NOMEM, "out of memory for a sequence's tokens");
    memcpy(s->token_ids, prompt, (size_t)n_prompt * sizeof(int32_t));
    s->seq_id = seq_id;
    s->n_prompt = s->n_tokens = n_prompt;
    s->cap = cap_tokens;
    s->state = SCHED_NEW;
    return 0;
}

void sched_seq_free(struct sched_seq *s) {
    if (!s) return;
    free(s->token_ids);
    s->token_ids = NULL;
    mem_block_table_free(&s->block_table);
}

int sched_seq_append(struct sched_seq *s, int32_t token) {
    if (s->n_tokens >= s->cap)
        return err_set(ERR_RANGE, "sequence %llu is at its cap of %d tokens",
                       (unsigned long long)s->seq_id, s->cap);
    s->token_ids[s->n_tokens++] = token;
    return 0;
}

// ---- scheduler and plan storage

int sched_init(struct sched *s, struct mem_kv_pool *pool, const struct sched_config *cfg) {
    memset(s, 0, sizeof(*s));
    if (cfg->max_num_seqs < 1 || cfg->max_num_batched_tokens < 1 || cfg->max_blocks_per_seq < 1)
        return err_set(ERR_INVAL,
                       "scheduler limits must be >= 1 (max_num_seqs %d, "
                       "max_num_batched_tokens %d, max_blocks_per_seq %d)",
                       cfg->max_num_seqs, cfg->max_num_batched_tokens, cfg->max_blocks_per_seq);
    s->pool = pool;
    s->cfg = *cfg;
    s->cap_running = cfg->max_num_seqs;
    s->running = malloc((size_t)s->cap_running * sizeof(*s->running));
    if (!s->running) return err_set(ERR_NOMEM, "out of memory for the running queue");
    return 0;
}

void sched_free(struct sched *s) {
    if (!s) return;
    free(s->waiting);
    free(s->running);
    memset(s, 0, sizeof(*s));
}

int sched_plan_init(struct sched_plan *p, const struct sched_config *cfg) {
    memset(p, 0, sizeof(*p));
    size_t ns = (size_t)cfg->max_num_seqs, nt = (size_t)cfg->max_num_batched_tokens;
    p->seqs = calloc(ns, sizeof(*p->seqs));
    p->n_new = calloc(ns, sizeof(int32_t));
    p->sample = calloc(ns, sizeof(bool));
    p->token_ids = calloc(nt, sizeof(int32_t));
    p->positions = calloc(nt, sizeof(int32_t));
    p->slot_mapping = calloc(nt, sizeof(int32_t));
    p->query_start = calloc(ns + 1, sizeof(int32_t));
    p->seq_lens = calloc(ns, sizeof(int32_t));
    p->block_tables = calloc(ns * (size_t)cfg->max_blocks_per_seq, sizeof(int32_t));
    if (!p->seqs || !p->n_new || !p->sample || !p->token_ids || !p->positions || !p->slot_mapping ||
        !p->query_start || !p->seq_lens || !p->block_tables) {
        sched_plan_free(p);
        return err_set(ERR_NOMEM, "out of memory for the step plan");
    }
    return 0;
}

void sched_plan_free(struct sched_plan *p) {
    if (!p) return;
    free(p->seqs);
    free(p->n_new);
    free(p->sample);
    free(p->token_ids);
    free(p->positions);
    free(p->slot_mapping);
    free(p->query_start);
    free(p->seq_lens);
    free(p->block_tables);
    memset(p, 0, sizeof(*p));
}

// ---- queues

static int push_waiting(struct sched *s, struct sched_seq *seq, bool at_head) {
    if (s->n_waiting == s->cap_waiting) {
        int cap = s->cap_waiting ? 2 * s->cap_waiting : 64;
        struct sched_seq **w = realloc(s->waiting, (size_t)cap * sizeof(*w));
        if (!w) return err_set(ERR_NOMEM, "out of memory for the waiting queue");
        s->waiting = w;
        s->cap_waiting = cap;
    }
    if (at_head) {
        memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof(*s->waiting));
        s->waiting[0] = seq;
    } else {
        s->waiting[s->n_waiting] = seq;
    }
    s->n_waiting++;
    seq->state = SCHED_WAITING;
    return 0;
}

static void remove_at(struct sched_seq **q, int *n, int i) {
    memmove(q + i, q + i + 1, (size_t)(*n - i - 1) * sizeof(*q));
    (*n)--;
}

static void remove_seq(struct sched_seq **q, int *n, const struct sched_seq *seq) {
    for (int i = 0; i < *n; i++) {
        if (q[i] == seq) {
            remove_at(q, n, i);
            return;
        }
    }
}

// Running stays sorted by arrival, so the newest running sequence, the one preemption takes,
// is always the last.
static void insert_running(struct sched *s, struct sched_seq *seq) {
    int i = s->n_running;
    while (i > 0 && s->running[i - 1]->arrival > seq->arrival) {
        s->running[i] = s->running[i - 1];
        i--;
    }
    s->running[i] = seq;
    s->n_running++;
    seq->state = SCHED_RUNNING;
}

int sched_add(struct sched *s, struct sched_seq *seq) {
    if (seq->state != SCHED_NEW)
        return err_set(ERR_INVAL, "sequence %llu was already given to the scheduler",
                       (unsigned long long)seq->seq_id);
    int need = mem_kv_blocks_for(s->pool, seq->cap);
    if (need > s->pool->n_blocks || need > s->cfg.max_blocks_per_seq)
        return err_set(ERR_INVAL,
                       "a sequence of up to %d tokens needs %d KV blocks of %d tokens; "
                       "the pool has %d and a sequence may hold %d",
                       seq->cap, need, s->pool->block_size, s->pool->n_blocks,
                       s->cfg.max_blocks_per_seq);
    seq->arrival = s->next_arrival++;
    return push_waiting(s, seq, false);
}

void sched_finish(struct sched *s, struct sched_seq *seq) {
    if (!seq) return;
    if (seq->state == SCHED_WAITING) remove_seq(s->waiting, &s->n_waiting, seq);
    if (seq->state == SCHED_RUNNING) remove_seq(s->running, &s->n_running, seq);
    mem_kv_seq_release(s->pool, &seq->block_table);
    seq->state = SCHED_FINISHED;
}

// Preemption by recompute: the sequence keeps its tokens but none of its cache.
static int preempt(struct sched *s, struct sched_seq *seq) {
    remove_seq(s->running, &s->n_running, seq);
    mem_kv_seq_release(s->pool, &seq->block_table);
    seq->num_computed_tokens = 0;
    seq->n_preemptions++;
    s->n_preemptions++;
    return push_waiting(s, seq, true);
}

// ---- the step planner

static void plan_add(struct sched *s, struct sched_plan *p, struct sched_seq *seq, int n) {
    int i = p->n_seqs++, start = seq->num_computed_tokens, stride = s->cfg.max_blocks_per_seq;
    p->seqs[i] = seq;
    p->n_new[i] = n;
    p->query_start[i] = p->n_tokens;
    for (int j = 0; j < n; j++) {
        int t = p->n_tokens + j;
        p->token_ids[t] = seq->token_ids[start + j];
        p->positions[t] = start + j;
        p->slot_mapping[t] = mem_kv_slot(s->pool, &seq->block_table, start + j);
    }
    p->n_tokens += n;
    p->query_start[i + 1] = p->n_tokens;
    p->seq_lens[i] = start + n;
    p->sample[i] = start + n == seq->n_tokens;
    int32_t *row = p->block_tables + (size_t)i * stride;
    memcpy(row, seq->block_table.block_ids, (size_t)seq->block_table.n_blocks * sizeof(int32_t));
    memset(row + seq->block_table.n_blocks, 0,
           (size_t)(stride - seq->block_table.n_blocks) * sizeof(int32_t));
}

// Decodes of running sequences, oldest first. A decode that cannot get its block preempts the
// newest running sequence (possibly itself) until it can. Victims are always newer than the
// sequence being served, so none of them is already in this step's plan.
static int plan_decodes(struct sched *s, struct sched_plan *p, int *budget) {
    for (int i = 0; i<s->n_running && * budget> 0; i++) {
        struct sched_seq *seq = s->running[i];
        if (seq->n_tokens - seq->num_computed_tokens != 1) continue;
        bool self = false;
        for (;;) {
            int rc = mem_kv_seq_reserve(s->pool, &seq->block_table, seq->n_tokens);
            if (rc == 0) break;
            if (rc != ERR_NOSPACE) return rc;
            struct sched_seq *victim = s->running[s->n_running - 1];
            self = victim == seq;
            if ((rc = preempt(s, victim)) != 0) return rc;
            p->n_preempted++;
            if (self) break;
        }
        if (self) break; // it was the newest: nothing after it is running
        plan_add(s, p, seq, 1);
        (*budget)--;
    }
    return 0;
}

// Chunks of prompts already admitted (their blocks are reserved).
static void plan_prefills(struct sched *s, struct sched_plan *p, int *budget) {
    for (int i = 0; i<s->n_running && * budget> 0; i++) {
        struct sched_seq *seq = s->running[i];
        int left = seq->n_tokens - seq->num_computed_tokens;
        if (left <= 1) continue;
        int n = left < *budget ? left : *budget;
        plan_add(s, p, seq, n);
        *budget -= n;
    }
}

// The number of a sequence's leading prompt blocks it may share with a sibling: full blocks
// only, and never the whole prompt, so at least one prompt token is computed per choice and
// yields that choice's first logits.
static int share_blocks(const struct sched *s, const struct sched_seq *seq) {
    return (seq->n_prompt - 1) / s->pool->block_size;
}

// First-come-first-served admission: stops at the first waiting sequence that cannot be admitted
// so a large request is never starved by smaller ones behind it.
static int plan_admissions(struct sched *s, struct sched_plan *p, int *budget) {
    while (s->n_waiting > 0 && *budget > 0 && s->n_running < s->cfg.max_num_seqs) {
        struct sched_seq *seq = s->waiting[0];
        struct sched_seq *from = seq->share_from;
        int n_share = from ? share_blocks(s, seq) : 0;
        if (n_share > 0) {
            // Wait for a running sibling's prompt to be computed rather than computing it twice
            // (it progresses every step: prefills are planned before admissions). A sibling
            // that is not running has nothing to share, and waiting on it could deadlock.
            if (from->state == SCHED_RUNNING &&
                from->num_computed_tokens < n_share * s->pool->block_size)
                break;
            if (from->state != SCHED_RUNNING) n_share = 0;
        }
        if (n_share > 0) {
            int rc = mem_kv_seq_share(s->pool, &seq->block_table, &from->block_table, n_share);
            if (rc != 0) return rc;
            seq->num_computed_tokens = n_share * s->pool->block_size;
        }
        int rc = mem_kv_seq_reserve(s->pool, &seq->block_table, seq->n_tokens);
        if (rc != 0) {
            mem_kv_seq_release(s->pool, &seq->block_table);
            seq->num_computed_tokens = 0;
            if (rc == ERR_NOSPACE) break;
            return rc;
        }
        remove_at(s->waiting, &s->n_waiting, 0);
        insert_running(s, seq);
        int left = seq->n_tokens - seq->num_computed_tokens;
        int n = left < *budget ? left : *budget;
        plan_add(s, p, seq, n);
        *budget -= n;
    }
    return 0;
}

int sched_step(struct sched *s, struct sched_plan *p) {
    p->n_seqs = p->n_tokens = p->n_preempted = 0;
    p->query_start[0] = 0;
    int budget = s->cfg.max_num_batched_tokens;
    int rc = plan_decodes(s, p, &budget);
    if (rc == 0) plan_prefills(s, p, &budget);
    if (rc == 0) rc = plan_admissions(s, p, &budget);
    p->batch = (struct model_batch){
        .n_tokens = p->n_tokens,
        .n_seqs = p->n_seqs,
        .token_ids = p->token_ids,
        .positions = p->positions,
        .slot_mapping = p->slot_mapping,
        .query_start = p->query_start,
        .seq_lens = p->seq_lens,
        .block_tables = p->block_tables,
    };
    return rc;
}

void sched_commit(struct sched *s, const struct sched_plan *p) {
    (void)s;
    for (int i = 0; i < p->n_seqs; i++)
        p->seqs[i]->num_computed_tokens += p->n_new[i];
}

// The scheduler: continuous batching over KV block ids (pure C, no model, no threads).
//
// Each step fills two budgets, max_num_batched_tokens and max_num_seqs: the decode tokens of
// running sequences first, then chunks of prompts still being prefilled (chunked prefill: a long
// prompt is split across steps while decodes keep flowing), then first-come-first-served
// admission of waiting sequences. Admission reserves the blocks of every token the sequence
// already knows, so a prefill in progress never needs a block; only decodes grow. When a decode
// cannot get its block, the newest running sequence is preempted by recompute: it releases its
// blocks and goes back to the head of the waiting queue with its tokens kept, to be prefilled
// again (prompt and generated tokens alike) when it is admitted again.
//
// Ownership: sequences belong to the caller (the engine); the scheduler holds pointers to them
// between sched_add() and sched_finish()/sched_abort(). Their block tables hold references into
// the pool, released by the scheduler. Not thread-safe: the engine thread owns it.
#ifndef KEEL_SERVER_SCHED_H
#define KEEL_SERVER_SCHED_H

#include "memory/kv_pool.h"
#include "models/model.h"

#include <stdbool.h>
#include <stdint.h>

enum sched_seq_state {
    SCHED_NEW = 0,      // not yet given to the scheduler
    SCHED_WAITING = 1,  // queued (new or preempted)
    SCHED_RUNNING = 2,  // holds blocks for all its known tokens (but possibly not yet computed)
    SCHED_FINISHED = 3, // finished or aborted; holds no blocks
};

struct sched_seq {
    uint64_t seq_id;
    int32_t *token_ids; // [cap]: the prompt, then the generated tokens
    int n_prompt, n_tokens, cap;
    int num_computed_tokens; // tokens whose K/V are in the cache
    struct mem_block_table block_table;
    enum sched_seq_state state;
    int64_t arrival; // order of arrival (set by sched_add); smaller = older
    // n > 1: a sibling with the same prompt whose full prompt blocks this sequence shares by
    // reference when admitted (NULL: none). It must outlive this sequence.
    struct sched_seq *share_from;
    int n_preemptions;
    void *user; // the caller's cookie
};

// Initialises a sequence over a copy of the prompt. cap_tokens bounds prompt + generated tokens
// (the engine passes the smaller of max_model_len and n_prompt + max_tokens). Returns 0,
// ERR_INVAL or ERR_NOMEM.
int sched_seq_init(struct sched_seq *s, uint64_t seq_id, const int32_t *prompt, int n_prompt,
                   int cap_tokens);
void sched_seq_free(struct sched_seq *s); // frees its arrays; it must hold no blocks
// Appends a sampled token. ERR_RANGE when the sequence is at its cap.
int sched_seq_append(struct sched_seq *s, int32_t token);

struct sched_config {
    int max_num_seqs;           // sequences running at once (and per step)
    int max_num_batched_tokens; // tokens per step
    int max_blocks_per_seq;     // block table stride of the batch (the model's)
};

struct sched {
    struct mem_kv_pool *pool; // not owned
    struct sched_config cfg;
    struct sched_seq **waiting; // [n_waiting] head first
    struct sched_seq **running; // [n_running] oldest arrival first
    int n_waiting, n_running, cap_waiting, cap_running;
    int64_t next_arrival;
    int64_t n_preemptions; // total, for metrics
};

// One step's work, and the model_batch arrays built from it.
struct sched_plan {
    int n_seqs, n_tokens;
    struct sched_seq **seqs;  // [max_num_seqs]
    int32_t *n_new;           // [max_num_seqs] tokens of each sequence in this step
    bool *sample;             // [max_num_seqs] whether the step reaches its last known token
    int32_t *token_ids;       // [max_num_batched_tokens]
    int32_t *positions;       // [max_num_batched_tokens]
    int32_t *slot_mapping;    // [max_num_batched_tokens]
    int32_t *query_start;     // [max_num_seqs + 1]
    int32_t *seq_lens;        // [max_num_seqs]
    int32_t *block_tables;    // [max_num_seqs, max_blocks_per_seq], unused entries 0
    int n_preempted;          // sequences preempted while building this plan
    struct model_batch batch; // points into the arrays above
};

int sched_init(struct sched *s, struct mem_kv_pool *pool, const struct sched_config *cfg);
void sched_free(struct sched *s); // NULL-safe; the sequences are the caller's

int sched_plan_init(struct sched_plan *p, const struct sched_config *cfg);
void sched_plan_free(struct sched_plan *p); // NULL-safe

// Queues a sequence at the tail of the waiting queue. Returns 0, ERR_INVAL (already queued, or
// it can never fit in the pool or the block table stride) or ERR_NOMEM.
int sched_add(struct sched *s, struct sched_seq *seq);

// Builds the next step into *p (empty when there is nothing to run). Returns 0, or ERR_NOMEM.
int sched_step(struct sched *s, struct sched_plan *p);

// After the forward pass of plan p: marks each sequence's new tokens computed.
void sched_commit(struct sched *s, const struct sched_plan *p);

// Removes a finished or cancelled sequence (waiting or running) and releases its blocks.
// NULL-safe and idempotent.
void sched_finish(struct sched *s, struct sched_seq *seq);

static inline bool sched_idle(const struct sched *s) {
    return s->n_waiting + s->n_running == 0;
}

#endif

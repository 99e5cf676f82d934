// The engine: one thread that owns the model and the device, runs the scheduler step after step
// (continuous batching, chunked prefill, preemption by recompute) and samples tokens.
//
// Threads: the HTTP loop submits and cancels from its thread; the engine thread pushes events
// to an output queue and calls notify_cb (which does uv_async_send) so the loop drains them with
// srv_engine_poll(). Every function here is safe to call from any thread unless noted.
// Ownership: a request passed to srv_engine_submit() belongs to the engine from then on (it frees
// it); events returned by srv_engine_poll() belong to the caller (srv_event_free()).
#ifndef KEEL_SERVER_ENGINE_H
#define KEEL_SERVER_ENGINE_H

#include "memory/kv_pool.h"
#include "models/model.h"
#include "models/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

// Sampling parameters with their OpenAI/vLLM meanings. srv_sampling_defaults() gives OpenAI's
// defaults (temperature 1, top_p 1, no penalties, max_tokens = what fits).
struct srv_sampling {
    float temperature;        // 0 = greedy
    float top_p;              // (0, 1]
    int top_k;                // <= 0: off
    float min_p;              // [0, 1]; 0 = off
    bool has_seed;
    uint64_t seed;            // same seed + same prompt = same output, whatever else is batched
    float presence_penalty;   // [-2, 2]
    float frequency_penalty;  // [-2, 2]
    float repetition_penalty; // > 0; 1 = off
    int max_tokens;           // > 0; tokens to generate at most (<= 0: up to max_model_len)
    int min_tokens;           // eos and stop ids are suppressed before this many tokens
    bool ignore_eos;
    int logprobs;             // -1: none; 0..20: sampled token's logprob plus this many top ones
    char **stop;              // stop strings (never emitted; matched across token boundaries)
    int n_stop;
    int32_t *stop_token_ids;
    int n_stop_token_ids;
    bool skip_special_tokens; // default true
    bool include_stop_str_in_output;
};
void srv_sampling_defaults(struct srv_sampling *sp);

struct srv_request {
    uint64_t id;            // unique per engine, chosen by the caller
    int32_t *prompt_ids;    // [n_prompt], malloc'd, owned by the request
    int n_prompt;
    int n;                  // choices (>= 1); choices share the prompt's KV blocks
    struct srv_sampling sp; // its arrays and strings are owned by the request
    void *user;             // the caller's cookie, echoed in events
};
// Frees a request and everything it owns (for callers whose submit failed). NULL-safe.
void srv_request_free(struct srv_request *r);

enum srv_finish {
    SRV_FINISH_NONE = 0,   // more to come
    SRV_FINISH_STOP = 1,   // eos, a stop string or a stop token id
    SRV_FINISH_LENGTH = 2, // max_tokens or max_model_len
    SRV_FINISH_ABORT = 3,  // cancelled (client gone, timeout, shutdown)
    SRV_FINISH_ERROR = 4,  // the engine failed (error_code / error_msg say why)
};

struct srv_top_logprob {
    int32_t id;
    float logprob;
};

// What happened to one choice since its last event: new tokens and their text.
struct srv_event {
    uint64_t req_id;
    void *user;
    int index;                  // choice index
    char *text;                 // new text (complete UTF-8), malloc'd, NUL-terminated (may be "")
    size_t text_len;
    int32_t *token_ids;         // [n_tokens] new tokens (malloc'd or NULL)
    int n_tokens;
    float *logprobs;            // [n_tokens] or NULL (logprobs < 0)
    struct srv_top_logprob *top; // [n_tokens * n_top] or NULL
    int n_top;
    enum srv_finish finish;
    int32_t stop_token;         // the stop token id that ended it, or -1
    char *stop_str;             // the stop string that ended it, or NULL (malloc'd)
    int n_prompt_tokens;        // usage: on every event
    int n_completion_tokens;    // tokens generated so far for this choice
    int error_code;             // ERR_* on SRV_FINISH_ERROR
    char *error_msg;            // malloc'd or NULL
    double first_token_time;    // seconds (CLOCK_MONOTONIC) of this choice's first token, 0 if none
};
void srv_event_free(struct srv_event *ev); // frees the members, not ev itself

struct srv_engine_config {
    int max_num_seqs;
    int max_num_batched_tokens;
    int max_model_len;
    int max_queue;              // waiting requests beyond this: ERR_BUSY (503)
};

struct srv_engine_stats {
    int n_running, n_waiting;
    int64_t n_preemptions, n_steps;
    int64_t prompt_tokens_total, generation_tokens_total;
    int64_t requests_finished[5]; // by enum srv_finish
    struct mem_kv_usage kv;
    bool dead;                    // a sticky fault stopped the engine
    bool draining;
};

struct srv_engine;

// Builds the engine over a loaded model (it owns the KV pool of model->n_kv_blocks blocks).
// notify_cb(notify_arg) is called from the engine thread whenever events are ready.
int srv_engine_init(struct srv_engine **e, struct model *m, const struct tok_tokenizer *tok,
                    const struct srv_engine_config *cfg, void (*notify_cb)(void *arg),
                    void *notify_arg);
int srv_engine_start(struct srv_engine *e); // starts the engine thread

// Replaces model_forward with forward_cb (same contract: logits [n_seqs, vocab_size] of each
// sequence's last token into host memory; 0 or an ERR_* code). For tests with a fake model,
// whose struct model needs only cfg, n_kv_blocks, block_size, max_tokens, max_seqs and
// max_blocks_per_seq. Call before srv_engine_start() or srv_engine_run_sync().
void srv_engine_set_forward(struct srv_engine *e,
                            int (*forward_cb)(void *arg, const struct model_batch *b, float *logits),
                            void *arg);

// Checks a request against the limits: ERR_INVAL with a client-facing message when its prompt
// plus max_tokens can never fit (max_model_len, or the whole pool). Does not take ownership.
int srv_engine_validate(struct srv_engine *e, const struct srv_request *r);

// Queues a request; on success the engine owns it. ERR_INVAL: it can never fit (see validate);
// ERR_BUSY: the queue is full; ERR_CUDA_FAULT: the engine is dead or draining.
int srv_engine_submit(struct srv_engine *e, struct srv_request *r);

// Cancels a request (its choices end with SRV_FINISH_ABORT; blocks are freed on the next step).
void srv_engine_cancel(struct srv_engine *e, uint64_t req_id);

// Moves up to max queued events into out[]; returns how many.
int srv_engine_poll(struct srv_engine *e, struct srv_event *out, int max);

void srv_engine_stats(struct srv_engine *e, struct srv_engine_stats *s);

// Stops accepting, cancels what is queued or running (their choices end with ABORT), joins the
// thread. Idempotent.
void srv_engine_stop(struct srv_engine *e);
void srv_engine_free(struct srv_engine *e); // NULL-safe; stops first

// Synchronous helper for tests and `keel generate`: runs one request to completion on an engine
// that has not been started, collecting its events (caller frees each and the array).
int srv_engine_run_sync(struct srv_engine *e, struct srv_request *r, struct srv_event **events,
                        int *n_events);

#endif

// Sampling on host float logits, with OpenAI/vLLM meanings: repetition, frequency and presence
// penalties, temperature (0 = greedy), min_p, top_k, top_p, then a draw from a per-sequence RNG,
// so a seeded sequence gets the same tokens whatever else is in the batch.
//
// Order (vLLM's): penalties -> greedy argmax if temperature is 0 -> temperature -> min_p ->
// top_k -> top_p -> draw. Logprobs are the raw log_softmax of the model's logits (vLLM's default,
// "raw logprobs"): what the model said, before penalties, temperature or truncation.
#ifndef KEEL_SERVER_SAMPLE_H
#define KEEL_SERVER_SAMPLE_H

#include "server/engine.h"

#include <stdint.h>

// xoshiro256**, seeded through splitmix64: small, fast, and the same on every platform.
struct srv_sample_rng {
    uint64_t s[4];
};
void srv_sample_rng_seed(struct srv_sample_rng *r, uint64_t seed);
uint64_t srv_sample_rng_next(struct srv_sample_rng *r);
double srv_sample_uniform(struct srv_sample_rng *r); // [0, 1)

// Working memory for one sampling call at a time (the engine thread's).
struct srv_sample_cand {
    float v;
    int32_t id;
};
struct srv_sample_scratch {
    int vocab;
    float *w;                     // [vocab] the processed logits
    struct srv_sample_cand *cand; // [vocab]
    int32_t *counts;              // [vocab] all zero between calls
    double *block_mass;           // [vocab / 256 + 1] probability mass per block of ids
};
int srv_sample_scratch_init(struct srv_sample_scratch *s, int vocab);
void srv_sample_scratch_free(struct srv_sample_scratch *s); // NULL-safe

// What one sequence brings to a draw besides its parameters.
struct srv_sample_input {
    const float *logits;   // [n_vocab] raw logits of the sequence's last position (not modified)
    int n_vocab;           // ids >= n_vocab are never sampled (the tokenizer's size)
    const int32_t *tokens; // [n_tokens] prompt then output (penalties)
    int n_prompt, n_tokens;
    const int32_t *banned; // [n_banned] ids suppressed for this draw (min_tokens), or NULL
    int n_banned;
};

// Picks the next token. Returns 0, or ERR_INVAL when nothing can be sampled (every id banned).
int srv_sample_token(const struct srv_sample_input *in, const struct srv_sampling *sp,
                     struct srv_sample_rng *rng, struct srv_sample_scratch *s, int32_t *token);

// Raw logprob of `token`, and the n_top most likely ids with theirs (descending; ties by id).
void srv_sample_logprobs(const float *logits, int n_vocab, int32_t token, int n_top, float *lp,
                         struct srv_top_logprob *top);

// A small pool of threads for the sampling phase of a step: rows are independent (each choice has
// its own RNG), so spreading them over threads changes no result. Each thread, the caller
// included, has its own scratch.
struct srv_sample_pool;
// n_threads counts the caller; <= 1 makes a pool that runs everything on the caller.
int srv_sample_pool_init(struct srv_sample_pool **p, int n_threads, int vocab);
void srv_sample_pool_free(struct srv_sample_pool *p); // NULL-safe; joins the threads
// Runs fn(arg, i, scratch) for every i in [0, n) and returns when all are done.
void srv_sample_pool_run(struct srv_sample_pool *p, int n,
                         void (*fn_cb)(void *arg, int i, struct srv_sample_scratch *s), void *arg);

// Stop strings over decoded text (byte offsets; the strings and the text are UTF-8, so a match
// starts on a character boundary).
// The earliest stop string of sp that ends after byte `from` of text[0, len) (so each new piece
// of text is searched once): its offset, with *which set to its index; -1 when none.
long srv_sample_find_stop(const struct srv_sampling *sp, const char *text, size_t len, size_t from,
                          int *which);
// How many bytes at the end of text could be the beginning of a stop string: they are held back
// until the next tokens tell whether the stop string completes.
size_t srv_sample_stop_holdback(const struct srv_sampling *sp, const char *text, size_t len);

#endif

// Sampling's host side, with OpenAI/vLLM meanings: each sequence's RNG (so a seeded sequence gets
// the same tokens whatever else is in the batch), turning a sequence's settings and history into
// one row of the backend's sample op (kernels/ops.h, which holds the math and its exact order:
// penalties -> greedy -> temperature -> min_p -> top_k -> top_p -> draw; raw logprobs), a host
// draw over the CPU reference for host logits, and stop strings.
#ifndef KEEL_SERVER_SAMPLE_H
#define KEEL_SERVER_SAMPLE_H

#include "kernels/ops.h"
#include "server/engine.h"

#include <stdint.h>

// xoshiro256**, seeded through splitmix64: small, fast, and the same on every platform.
struct srv_sample_rng {
    uint64_t s[4];
};
void srv_sample_rng_seed(struct srv_sample_rng *r, uint64_t seed);
uint64_t srv_sample_rng_next(struct srv_sample_rng *r);
double srv_sample_uniform(struct srv_sample_rng *r); // [0, 1)

// Working memory for one host sampling call at a time (its thread's).
struct srv_sample_scratch {
    int vocab;
    float *w;                    // [vocab] the processed logits of the last draw (== k.w)
    int32_t *counts;             // [vocab] all zero between calls (marks while building a row)
    struct kern_sample_adj *adj; // [vocab] the row's adjustments
    struct kern_sample_scratch k; // the kernel reference's own scratch
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

// Builds one row of the sample op (kernels/ops.h) from a sequence: its parameters, with u drawn
// from rng unless the row is greedy, and its adjustments appended at adj[*n_adj]: one per
// distinct id among the banned ids and, when penalties are on, the tokens of prompt and output.
// adj needs room for min(n_vocab, n_tokens + n_banned) more entries. marks: [>= n_vocab] int32,
// all zero, and zero again on return. in->logits is not read. n_logprobs: sp->logprobs.
void srv_sample_row(const struct srv_sample_input *in, const struct srv_sampling *sp,
                    struct srv_sample_rng *rng, int32_t *marks, struct kern_sample_params *p,
                    struct kern_sample_adj *adj, int *n_adj);

// Picks the next token on the host (kern_sample_row over srv_sample_row). Returns 0, or ERR_INVAL
// when nothing can be sampled (every id banned).
int srv_sample_token(const struct srv_sample_input *in, const struct srv_sampling *sp,
                     struct srv_sample_rng *rng, struct srv_sample_scratch *s, int32_t *token);

// Raw logprob of `token`, and the n_top most likely ids with theirs (descending; ties by id).
void srv_sample_logprobs(const float *logits, int n_vocab, int32_t token, int n_top, float *lp,
                         struct srv_top_logprob *top);

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

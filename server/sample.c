// Sampling's host side (see sample.h): the RNG, a sequence's row of the sample op, the host draw
// over the CPU reference (kernels/cpu/sample.c), and stop strings.
#include "server/sample.h"

#include "common/err.h"
#include "common/rng.h"

#include <stdlib.h>
#include <string.h>

void srv_sampling_defaults(struct srv_sampling *sp) {
    memset(sp, 0, sizeof(*sp));
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->top_k = 0;
    sp->repetition_penalty = 1.0f;
    sp->max_tokens = 0;
    sp->logprobs = -1;
    sp->skip_special_tokens = true;
}

// ---- the RNG

void srv_sample_rng_seed(struct srv_sample_rng *r, uint64_t seed) { rng_seed(r->s, seed); }

uint64_t srv_sample_rng_next(struct srv_sample_rng *r) { return rng_next(r->s); }

double srv_sample_uniform(struct srv_sample_rng *r) { return rng_uniform(r->s); }

// ---- scratch

int srv_sample_scratch_init(struct srv_sample_scratch *s, int vocab) {
    memset(s, 0, sizeof(*s));
    s->vocab = vocab;
    int rc = kern_sample_scratch_init(&s->k, vocab);
    if (rc != 0) return rc;
    s->w = s->k.w;
    s->counts = calloc((size_t)vocab, sizeof(int32_t));
    s->adj = malloc((size_t)vocab * sizeof(*s->adj));
    if (!s->counts || !s->adj) {
        srv_sample_scratch_free(s);
        return err_set(ERR_NOMEM, "out of memory for sampling scratch (vocab %d)", vocab);
    }
    return 0;
}

void srv_sample_scratch_free(struct srv_sample_scratch *s) {
    if (!s) return;
    kern_sample_scratch_free(&s->k);
    free(s->counts);
    free(s->adj);
    memset(s, 0, sizeof(*s));
}

// ---- one row of the sample op

// The entry of `id` in the row being built (adj[base..*n)), made on first sight; NULL for ids
// outside the vocabulary. marks[id] is 1 + the entry's offset from base.
static struct kern_sample_adj *row_entry(int32_t id, int n_vocab, int32_t *marks,
                                         struct kern_sample_adj *adj, int base, int *n) {
    if (id < 0 || id >= n_vocab) return NULL;
    if (!marks[id]) {
        adj[*n] = (struct kern_sample_adj){id, 0, 0};
        marks[id] = ++*n - base;
    }
    return &adj[base + marks[id] - 1];
}

void srv_sample_row(const struct srv_sample_input *in, const struct srv_sampling *sp,
                    struct srv_sample_rng *rng, int32_t *marks, struct kern_sample_params *p,
                    struct kern_sample_adj *adj, int *n_adj) {
    *p = (struct kern_sample_params){
        .temperature = sp->temperature,
        .top_p = sp->top_p,
        .min_p = sp->min_p,
        .top_k = sp->top_k,
        .n_valid = in->n_vocab,
        .n_logprobs = sp->logprobs < KERN_SAMPLE_MAX_TOP ? sp->logprobs : KERN_SAMPLE_MAX_TOP,
        .repetition_penalty = sp->repetition_penalty,
        .frequency_penalty = sp->frequency_penalty,
        .presence_penalty = sp->presence_penalty,
        .adj_start = *n_adj,
    };
    if (sp->temperature >= KERN_SAMPLE_EPS) {
        // A double just below 1 may round up to 1.0f: keep u inside [0, 1).
        float u = (float)srv_sample_uniform(rng);
        p->u = u < 1.0f ? u : 0x1.fffffep-1f;
    }
    int base = *n_adj, n = *n_adj;
    for (int i = 0; i < in->n_banned; i++) {
        struct kern_sample_adj *a = row_entry(in->banned[i], in->n_vocab, marks, adj, base, &n);
        if (a) a->flags |= KERN_SAMPLE_BANNED;
    }
    // Penalties need the history; rows without them carry none of it.
    if (sp->repetition_penalty > 0 && sp->repetition_penalty != 1.0f)
        for (int i = 0; i < in->n_tokens; i++) {
            struct kern_sample_adj *a = row_entry(in->tokens[i], in->n_vocab, marks, adj, base, &n);
            if (a) a->flags |= KERN_SAMPLE_HISTORY;
        }
    if (sp->frequency_penalty != 0 || sp->presence_penalty != 0)
        for (int i = in->n_prompt; i < in->n_tokens; i++) {
            struct kern_sample_adj *a = row_entry(in->tokens[i], in->n_vocab, marks, adj, base, &n);
            if (a) a->count++;
        }
    for (int i = base; i < n; i++)
        marks[adj[i].id] = 0;
    p->n_adj = n - base;
    *n_adj = n;
}

// ---- the host draw

int srv_sample_token(const struct srv_sample_input *in, const struct srv_sampling *sp,
                     struct srv_sample_rng *rng, struct srv_sample_scratch *s, int32_t *token) {
    struct srv_sample_input row = *in;
    if (row.n_vocab > s->vocab) row.n_vocab = s->vocab;
    struct kern_sample_params p;
    int n_adj = 0;
    srv_sample_row(&row, sp, rng, s->counts, &p, s->adj, &n_adj);
    p.n_logprobs = -1;
    struct kern_sample_out out;
    int rc = kern_sample_row(&out, in->logits, &p, s->adj, &s->k);
    if (rc != 0) return rc;
    if (out.status != 0) return err_set(out.status, "every token is suppressed");
    *token = out.token;
    return 0;
}

// ---- logprobs

void srv_sample_logprobs(const float *logits, int n_vocab, int32_t token, int n_top, float *lp,
                         struct srv_top_logprob *top) {
    double lse = kern_sample_lse(logits, n_vocab);
    if (lp) *lp = (float)(logits[token] - lse);
    int32_t ids[KERN_SAMPLE_MAX_TOP];
    float lps[KERN_SAMPLE_MAX_TOP];
    if (n_top > KERN_SAMPLE_MAX_TOP) n_top = KERN_SAMPLE_MAX_TOP;
    if (n_top > n_vocab) n_top = n_vocab;
    kern_sample_top(logits, n_vocab, n_top, lse, ids, lps);
    for (int i = 0; i < n_top; i++)
        top[i] = (struct srv_top_logprob){ids[i], lps[i]};
}

// ---- stop strings

// Looks for a stop string that ends in the text added since `from`; returns the earliest match's
// offset and which string, or -1.
long srv_sample_find_stop(const struct srv_sampling *sp, const char *text, size_t len, size_t from,
                          int *which) {
    long best = -1;
    for (int i = 0; i < sp->n_stop; i++) {
        size_t sl = strlen(sp->stop[i]);
        if (sl == 0 || sl > len) continue;
        size_t start = from + 1 > sl ? from + 1 - sl : 0;
        for (size_t p = start; p + sl <= len; p++) {
            if (memcmp(text + p, sp->stop[i], sl) == 0) {
                if (best < 0 || (long)p < best) {
                    best = (long)p;
                    *which = i;
                }
                break;
            }
        }
    }
    return best;
}

// Bytes at the end of text that could be the beginning of a stop string: held back until the
// next tokens say whether the stop string completes.
size_t srv_sample_stop_holdback(const struct srv_sampling *sp, const char *text, size_t len) {
    size_t hold = 0;
    for (int i = 0; i < sp->n_stop; i++) {
        size_t sl = strlen(sp->stop[i]);
        if (sl == 0) continue;
        for (size_t k = sl > len + 1 ? len : sl - 1; k > hold; k--) {
            if (memcmp(text + len - k, sp->stop[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

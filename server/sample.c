// Sampling (see sample.h): the RNG, penalties, truncation by partial selection, the draw, and
// raw logprobs.
#include "server/sample.h"

#include "common/err.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// Temperatures below this are greedy (vLLM's _SAMPLING_EPS).
#define SAMPLE_EPS 1e-5f
// Ids per block of the draw's two-level walk.
#define SAMPLE_BLOCK 256

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

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void srv_sample_rng_seed(struct srv_sample_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t srv_sample_rng_next(struct srv_sample_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double srv_sample_uniform(struct srv_sample_rng *r) {
    return (double)(srv_sample_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

// ---- scratch

int srv_sample_scratch_init(struct srv_sample_scratch *s, int vocab) {
    memset(s, 0, sizeof(*s));
    s->vocab = vocab;
    s->w = malloc((size_t)vocab * sizeof(float));
    s->cand = malloc((size_t)vocab * sizeof(*s->cand));
    s->counts = calloc((size_t)vocab, sizeof(int32_t));
    s->block_mass = malloc(((size_t)vocab / SAMPLE_BLOCK + 1) * sizeof(double));
    if (!s->w || !s->cand || !s->counts || !s->block_mass) {
        srv_sample_scratch_free(s);
        return err_set(ERR_NOMEM, "out of memory for sampling scratch (vocab %d)", vocab);
    }
    return 0;
}

void srv_sample_scratch_free(struct srv_sample_scratch *s) {
    if (!s) return;
    free(s->w);
    free(s->cand);
    free(s->counts);
    free(s->block_mass);
    memset(s, 0, sizeof(*s));
}

// ---- penalties

// vLLM semantics: the repetition penalty divides positive logits and multiplies negative ones,
// once per distinct token of prompt and output; frequency and presence penalties count output
// tokens only. counts[] is left all zero.
static void apply_penalties(const struct srv_sample_input *in, const struct srv_sampling *sp,
                            struct srv_sample_scratch *s) {
    float *w = s->w;
    int32_t *cnt = s->counts;
    float rp = sp->repetition_penalty;
    if (rp > 0 && rp != 1.0f) {
        for (int i = 0; i < in->n_tokens; i++) {
            int32_t t = in->tokens[i];
            if (t < 0 || t >= in->n_vocab || cnt[t]) continue;
            cnt[t] = 1;
            w[t] = w[t] > 0 ? w[t] / rp : w[t] * rp;
        }
        for (int i = 0; i < in->n_tokens; i++)
            if (in->tokens[i] >= 0 && in->tokens[i] < in->n_vocab) cnt[in->tokens[i]] = 0;
    }
    if (sp->frequency_penalty != 0 || sp->presence_penalty != 0) {
        for (int i = in->n_prompt; i < in->n_tokens; i++)
            if (in->tokens[i] >= 0 && in->tokens[i] < in->n_vocab) cnt[in->tokens[i]]++;
        for (int i = in->n_prompt; i < in->n_tokens; i++) {
            int32_t t = in->tokens[i];
            if (t < 0 || t >= in->n_vocab || !cnt[t]) continue;
            w[t] -= sp->frequency_penalty * (float)cnt[t] + sp->presence_penalty;
            cnt[t] = 0;
        }
    }
}

// ---- partial selection

// Total order for candidates: larger value first, then smaller id, so results never depend on
// the selection algorithm's internal order.
static int cand_before(const struct srv_sample_cand *a, const struct srv_sample_cand *b) {
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const struct srv_sample_cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static void cand_swap(struct srv_sample_cand *a, struct srv_sample_cand *b) {
    struct srv_sample_cand t = *a;
    *a = *b;
    *b = t;
}

// Rearranges c[0..n) so its k first elements are the k first in the total order (unsorted):
// quickselect, O(n) on average, instead of sorting a 152k vocabulary.
static void select_top(struct srv_sample_cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cand_before(&c[mid], &c[lo])) cand_swap(&c[mid], &c[lo]);
        if (cand_before(&c[hi], &c[lo])) cand_swap(&c[hi], &c[lo]);
        if (cand_before(&c[hi], &c[mid])) cand_swap(&c[hi], &c[mid]);
        struct srv_sample_cand pivot = c[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_before(&c[i], &pivot))
                i++;
            while (cand_before(&pivot, &c[j]))
                j--;
            if (i <= j) cand_swap(&c[i++], &c[j--]);
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            return;
    }
}

// top_p: the smallest prefix (by probability) whose mass reaches top_p of the total. Selects a
// growing head of the candidates until it holds enough mass, then sorts only that head, which is
// small whenever the distribution is peaked.
static int top_p_cut(struct srv_sample_cand *c, int n, float top_p, double total) {
    double target = (double)top_p * total;
    for (int head = n < 64 ? n : 64;; head = head * 4 < n ? head * 4 : n) {
        if (head < n) select_top(c, n, head);
        double mass = 0;
        for (int i = 0; i < head; i++)
            mass += c[i].v;
        if (mass < target && head < n) continue;
        qsort(c, (size_t)head, sizeof(*c), cand_cmp);
        double cum = 0;
        for (int i = 0; i < head; i++) {
            cum += c[i].v;
            if (cum >= target) return i + 1;
        }
        return head;
    }
}

// ---- the draw

// The first index of the largest value. Eight independent running maxima (no dependency chain
// from one element to the next) find the value, then one scan finds its first index: about four
// times faster than the one-pass loop on a 152k row. NaN logits are never the maximum.
static int32_t argmax(const float *w, int n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                  -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            m[k] = w[i + k] > m[k] ? w[i + k] : m[k];
    for (; i < n; i++)
        m[0] = w[i] > m[0] ? w[i] : m[0];
    float best = m[0];
    for (int k = 1; k < 8; k++)
        best = m[k] > best ? m[k] : best;
    for (i = 0; i < n; i++)
        if (w[i] == best) return i;
    return 0; // every value is NaN or -inf
}

int srv_sample_token(const struct srv_sample_input *in, const struct srv_sampling *sp,
                     struct srv_sample_rng *rng, struct srv_sample_scratch *s, int32_t *token) {
    int n = in->n_vocab < s->vocab ? in->n_vocab : s->vocab;
    bool penalties = (sp->repetition_penalty > 0 && sp->repetition_penalty != 1.0f) ||
                     sp->frequency_penalty != 0 || sp->presence_penalty != 0;
    if (sp->temperature < SAMPLE_EPS && !penalties && in->n_banned == 0) {
        // Plain greedy, the common case of large batches: no copy of the row.
        *token = argmax(in->logits, n);
        return 0;
    }
    float *w = s->w;
    memcpy(w, in->logits, (size_t)n * sizeof(float));
    for (int i = 0; i < in->n_banned; i++)
        if (in->banned[i] >= 0 && in->banned[i] < n) w[in->banned[i]] = -INFINITY;
    apply_penalties(in, sp, s);
    int32_t best = argmax(w, n);
    if (!(w[best] > -INFINITY)) return err_set(ERR_INVAL, "every token is suppressed");
    if (sp->temperature < SAMPLE_EPS) {
        *token = best;
        return 0;
    }
    // Unnormalised probabilities relative to the best: p = exp((w - max) / T), in (0, 1].
    float inv_t = 1.0f / sp->temperature, max = w[best];
    float min_p = sp->min_p > 0 ? sp->min_p : 0;
    bool truncate = min_p > 0 || sp->top_k > 0 || sp->top_p < 1.0f;
    double total = 0;
    if (!truncate) {
        // Probabilities in place, then the mass of each block of SAMPLE_BLOCK ids, so the draw
        // walks blocks and then one block instead of the whole vocabulary.
        for (int i = 0; i < n; i++)
            w[i] = expf((w[i] - max) * inv_t);
        int n_blocks = (n + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
        for (int b = 0; b < n_blocks; b++) {
            int lo = b * SAMPLE_BLOCK, hi = lo + SAMPLE_BLOCK < n ? lo + SAMPLE_BLOCK : n;
            float lanes[8] = {0};
            int i = lo;
            for (; i + 8 <= hi; i += 8)
                for (int k = 0; k < 8; k++)
                    lanes[k] += w[i + k];
            for (; i < hi; i++)
                lanes[0] += w[i];
            double m = 0;
            for (int k = 0; k < 8; k++)
                m += lanes[k];
            s->block_mass[b] = m;
            total += m;
        }
        double u = srv_sample_uniform(rng) * total, cum = 0;
        int b = 0;
        while (b < n_blocks - 1 && cum + s->block_mass[b] <= u)
            cum += s->block_mass[b++];
        int hi = (b + 1) * SAMPLE_BLOCK < n ? (b + 1) * SAMPLE_BLOCK : n;
        *token = best; // if rounding leaves u above the last block's running sum
        for (int i = b * SAMPLE_BLOCK; i < hi; i++) {
            cum += w[i];
            if (w[i] > 0) *token = i;
            if (u < cum && w[i] > 0) break;
        }
        return 0;
    }
    struct srv_sample_cand *c = s->cand;
    int n_cand = 0;
    for (int i = 0; i < n; i++) {
        float p = expf((w[i] - max) * inv_t);
        if (p > 0 && p >= min_p) c[n_cand++] = (struct srv_sample_cand){p, i};
    }
    if (sp->top_k > 0 && sp->top_k < n_cand) {
        select_top(c, n_cand, sp->top_k);
        n_cand = sp->top_k;
    }
    if (sp->top_p < 1.0f) {
        for (int i = 0; i < n_cand; i++)
            total += c[i].v;
        n_cand = top_p_cut(c, n_cand, sp->top_p, total);
    }
    total = 0;
    for (int i = 0; i < n_cand; i++)
        total += c[i].v;
    double u = srv_sample_uniform(rng) * total, cum = 0;
    *token = c[0].id;
    for (int i = 0; i < n_cand; i++) {
        cum += c[i].v;
        if (u < cum) {
            *token = c[i].id;
            break;
        }
    }
    return 0;
}

// ---- logprobs

void srv_sample_logprobs(const float *logits, int n_vocab, int32_t token, int n_top, float *lp,
                         struct srv_top_logprob *top) {
    float max = logits[argmax(logits, n_vocab)];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++)
        sum += exp((double)logits[i] - max);
    double lse = max + log(sum);
    if (lp) *lp = (float)(logits[token] - lse);
    // n_top is at most 20: an insertion into a short sorted list per better logit.
    int have = 0;
    for (int i = 0; i < n_vocab && n_top > 0; i++) {
        float v = logits[i];
        if (have == n_top && !(v > top[have - 1].logprob)) continue;
        int j = have < n_top ? have++ : have - 1;
        while (j > 0 && v > top[j - 1].logprob) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (struct srv_top_logprob){i, v};
    }
    for (int i = 0; i < have; i++)
        top[i].logprob = (float)(top[i].logprob - lse);
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

// ---- the pool

struct srv_sample_pool {
    int n_threads; // including the caller
    pthread_t *threads;
    struct srv_sample_scratch *scratch; // [n_threads]; 0 is the caller's
    pthread_mutex_t mu;
    pthread_cond_t go_cv, done_cv;
    uint64_t generation; // bumped per run; workers wait for a change
    int n_busy;
    bool stop;
    // the current run
    void (*fn_cb)(void *arg, int i, struct srv_sample_scratch *s);
    void *arg;
    int n_items;
    int next; // atomic: the next item to take
};

struct pool_worker {
    struct srv_sample_pool *p;
    int tid;
};

static void pool_work(struct srv_sample_pool *p, int tid) {
    for (;;) {
        int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
        if (i >= p->n_items) return;
        p->fn_cb(p->arg, i, &p->scratch[tid]);
    }
}

static void *pool_main(void *arg) {
    struct pool_worker *w = arg;
    struct srv_sample_pool *p = w->p;
    int tid = w->tid;
    free(w);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->go_cv, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        pool_work(p, tid);
        pthread_mutex_lock(&p->mu);
        if (--p->n_busy == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int srv_sample_pool_init(struct srv_sample_pool **out, int n_threads, int vocab) {
    *out = NULL;
    struct srv_sample_pool *p = calloc(1, sizeof(*p));
    if (!p) return err_set(ERR_NOMEM, "out of memory for the sampling pool");
    if (n_threads < 1) n_threads = 1;
    p->scratch = calloc((size_t)n_threads, sizeof(*p->scratch));
    p->threads = calloc((size_t)n_threads, sizeof(*p->threads));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (!p->scratch || !p->threads) {
        srv_sample_pool_free(p);
        return err_set(ERR_NOMEM, "out of memory for the sampling pool");
    }
    for (int t = 0; t < n_threads; t++) {
        int rc = srv_sample_scratch_init(&p->scratch[t], vocab);
        if (rc != 0) {
            srv_sample_pool_free(p);
            return rc;
        }
    }
    p->n_threads = 1;
    for (int t = 1; t < n_threads; t++) {
        struct pool_worker *w = malloc(sizeof(*w));
        if (!w) break;
        *w = (struct pool_worker){p, t};
        if (pthread_create(&p->threads[t], NULL, pool_main, w) != 0) {
            free(w);
            break; // fewer threads is still correct
        }
        p->n_threads++;
    }
    *out = p;
    return 0;
}

void srv_sample_pool_free(struct srv_sample_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->go_cv);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->n_threads; t++)
        pthread_join(p->threads[t], NULL);
    for (int t = 0; p->scratch && t < p->n_threads; t++)
        srv_sample_scratch_free(&p->scratch[t]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->scratch);
    free(p->threads);
    free(p);
}

void srv_sample_pool_run(struct srv_sample_pool *p, int n,
                         void (*fn_cb)(void *arg, int i, struct srv_sample_scratch *s), void *arg) {
    p->fn_cb = fn_cb;
    p->arg = arg;
    p->n_items = n;
    p->next = 0;
    // A single row is not worth waking anyone.
    if (p->n_threads == 1 || n < 2) {
        pool_work(p, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->n_busy = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->go_cv);
    pthread_mutex_unlock(&p->mu);
    pool_work(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->n_busy > 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

// The sample op's CPU reference (kernels/ops.h has the semantics): one row at a time on host
// logits, rows spread over the context's threads. The same row function serves host code that
// samples without a backend (server/sample.c), so the CPU backend, the host fallback and the
// CUDA op's test oracle are one implementation of the math.
//
// Per row: copy the logits (only when the row has adjustments or samples), ban and penalise in
// the copy, then greedy argmax, or probabilities p = exp((w - max) / T) with min_p, top_k by
// quickselect (no sort of the vocabulary), top_p by sorting a growing head only, and the draw
// walking ids in ascending order.
#include "common/err.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

// ---- scratch

int kern_sample_scratch_init(struct kern_sample_scratch *s, int vocab) {
    memset(s, 0, sizeof(*s));
    if (vocab <= 0) return err_set(ERR_INVAL, "sampling scratch: bad vocab %d", vocab);
    s->vocab = vocab;
    s->w = malloc((size_t)vocab * sizeof(float));
    s->cand = malloc((size_t)vocab * sizeof(*s->cand));
    s->block_mass = malloc(((size_t)vocab / KERN_SAMPLE_BLOCK + 1) * sizeof(double));
    if (!s->w || !s->cand || !s->block_mass) {
        kern_sample_scratch_free(s);
        return err_set(ERR_NOMEM, "out of memory for sampling scratch (vocab %d)", vocab);
    }
    return 0;
}

void kern_sample_scratch_free(struct kern_sample_scratch *s) {
    if (!s) return;
    free(s->w);
    free(s->cand);
    free(s->block_mass);
    memset(s, 0, sizeof(*s));
}

// ---- argmax and raw logprobs

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

double kern_sample_lse(const float *logits, int n_valid) {
    float max = logits[argmax(logits, n_valid)];
    double sum = 0;
    for (int i = 0; i < n_valid; i++)
        sum += exp((double)logits[i] - max);
    return max + log(sum);
}

// n_top is at most 20: an insertion into a short sorted list per better logit. NaN never enters.
void kern_sample_top(const float *logits, int n_valid, int n_top, double lse, int32_t *top_id,
                     float *top_lp) {
    int have = 0;
    for (int i = 0; i < n_valid && n_top > 0; i++) {
        float v = logits[i];
        if (v != v) continue;
        if (have == n_top && !(v > top_lp[have - 1])) continue;
        int j = have < n_top ? have++ : have - 1;
        while (j > 0 && v > top_lp[j - 1]) {
            top_lp[j] = top_lp[j - 1];
            top_id[j] = top_id[j - 1];
            j--;
        }
        top_lp[j] = v;
        top_id[j] = i;
    }
    for (int i = 0; i < have; i++)
        top_lp[i] = (float)(top_lp[i] - lse);
}

// ---- partial selection

// Total order for candidates: larger probability first, then smaller id.
static int cand_before(const struct kern_sample_cand *a, const struct kern_sample_cand *b) {
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb) {
    const struct kern_sample_cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static void cand_swap(struct kern_sample_cand *a, struct kern_sample_cand *b) {
    struct kern_sample_cand t = *a;
    *a = *b;
    *b = t;
}

// Rearranges c[0..n) so its k first elements are the k first in the total order (unsorted):
// quickselect, O(n) on average, instead of sorting a 152k vocabulary.
static void select_top(struct kern_sample_cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cand_before(&c[mid], &c[lo])) cand_swap(&c[mid], &c[lo]);
        if (cand_before(&c[hi], &c[lo])) cand_swap(&c[hi], &c[lo]);
        if (cand_before(&c[hi], &c[mid])) cand_swap(&c[hi], &c[mid]);
        struct kern_sample_cand pivot = c[mid];
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

// The last candidate (in the total order) of c[0..n), which is unsorted.
static struct kern_sample_cand worst_of(const struct kern_sample_cand *c, int n) {
    struct kern_sample_cand w = c[0];
    for (int i = 1; i < n; i++)
        if (cand_before(&w, &c[i])) w = c[i];
    return w;
}

// top_p: the shortest prefix (in the total order) whose mass reaches top_p of the total. Selects
// a growing head of the candidates until it holds enough mass, then sorts only that head, which
// is small whenever the distribution is peaked. Returns the prefix length; c[0..len) is sorted.
static int top_p_cut(struct kern_sample_cand *c, int n, float top_p, double total) {
    double target = (double)top_p * total;
    for (int head = n < 64 ? n : 64;; head = head * 4 < n ? head * 4 : n) {
        if (head < n) select_top(c, n, head);
        double mass = 0;
        for (int i = 0; i < head; i++)
            mass += c[i].p;
        if (mass < target && head < n) continue;
        qsort(c, (size_t)head, sizeof(*c), cand_cmp);
        double cum = 0;
        for (int i = 0; i < head; i++) {
            cum += c[i].p;
            if (cum >= target) return i + 1;
        }
        return head;
    }
}

// ---- one row

// Bans and penalties, in vLLM's meaning, on the row's copy w.
static void apply_adj(float *w, int n, const struct kern_sample_params *p,
                      const struct kern_sample_adj *adj) {
    float rp = p->repetition_penalty;
    bool rep = rp > 0 && rp != 1.0f;
    bool freq = p->frequency_penalty != 0 || p->presence_penalty != 0;
    for (int e = 0; e < p->n_adj; e++) {
        const struct kern_sample_adj *a = &adj[p->adj_start + e];
        if (a->id < 0 || a->id >= n) continue;
        float v = w[a->id];
        if (a->flags & KERN_SAMPLE_BANNED) {
            v = -INFINITY;
        } else {
            if (rep && (a->flags & KERN_SAMPLE_HISTORY)) v = v > 0 ? v / rp : v * rp;
            if (freq && a->count > 0)
                v -= p->frequency_penalty * (float)a->count + p->presence_penalty;
        }
        w[a->id] = v;
    }
}

// The draw without truncation: probabilities in place, the mass of each block of ids, then a walk
// over blocks and inside one block.
static int32_t draw_all(float *w, int n, float max, float inv_t, float u, int32_t best,
                        double *block_mass) {
    for (int i = 0; i < n; i++) {
        float e = expf((w[i] - max) * inv_t);
        w[i] = e > 0 ? e : 0; // NaN logits weigh nothing
    }
    int n_blocks = (n + KERN_SAMPLE_BLOCK - 1) / KERN_SAMPLE_BLOCK;
    double total = 0;
    for (int b = 0; b < n_blocks; b++) {
        int lo = b * KERN_SAMPLE_BLOCK,
            hi = lo + KERN_SAMPLE_BLOCK < n ? lo + KERN_SAMPLE_BLOCK : n;
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
        block_mass[b] = m;
        total += m;
    }
    double x = (double)u * total, cum = 0;
    int b = 0;
    while (b < n_blocks - 1 && cum + block_mass[b] <= x)
        cum += block_mass[b++];
    int hi = (b + 1) * KERN_SAMPLE_BLOCK < n ? (b + 1) * KERN_SAMPLE_BLOCK : n;
    int32_t token = best; // if rounding leaves x above the last block's running sum
    for (int i = b * KERN_SAMPLE_BLOCK; i < hi; i++) {
        cum += w[i];
        if (w[i] > 0) token = i;
        if (x < cum && w[i] > 0) break;
    }
    return token;
}

// The draw with min_p, top_k and top_p: w[i] becomes p (0 for non-candidates); the kept set is
// every candidate up to the threshold candidate `last` in the total order.
static int32_t draw_truncated(float *w, int n, const struct kern_sample_params *p, float max,
                              float inv_t, int32_t best, struct kern_sample_cand *c) {
    float min_p = p->min_p > 0 ? p->min_p : 0;
    int n_cand = 0;
    for (int i = 0; i < n; i++) {
        float e = expf((w[i] - max) * inv_t);
        bool keep = e > 0 && e >= min_p;
        w[i] = keep ? e : 0;
        if (keep) c[n_cand++] = (struct kern_sample_cand){e, i};
    }
    struct kern_sample_cand last = {0, 0x7fffffff}; // keeps every candidate
    if (p->top_k > 0 && p->top_k < n_cand) {
        select_top(c, n_cand, p->top_k);
        n_cand = p->top_k;
        last = worst_of(c, n_cand);
    }
    if (p->top_p < 1.0f) {
        double total = 0;
        for (int i = 0; i < n_cand; i++)
            total += c[i].p;
        n_cand = top_p_cut(c, n_cand, p->top_p, total);
        last = c[n_cand - 1];
    }
    double total = 0;
    for (int i = 0; i < n; i++)
        if (w[i] > 0 && (w[i] > last.p || (w[i] == last.p && i <= last.id))) total += w[i];
    double x = (double)p->u * total, cum = 0;
    for (int i = 0; i < n; i++) {
        if (!(w[i] > 0 && (w[i] > last.p || (w[i] == last.p && i <= last.id)))) continue;
        cum += w[i];
        if (x < cum) return i;
    }
    return best; // rounding left x at the very end
}

int kern_sample_check(const char *who, int n_rows, int vocab, const struct kern_sample_params *params,
                      int n_adj) {
    if (n_rows < 0 || vocab <= 0 || n_adj < 0)
        return err_set(ERR_INVAL, "%s: bad sizes rows=%d vocab=%d adj=%d", who, n_rows, vocab,
                       n_adj);
    for (int r = 0; r < n_rows; r++) {
        const struct kern_sample_params *p = &params[r];
        if (p->n_valid > vocab || p->n_adj < 0 || p->adj_start < 0 ||
            (p->n_adj > 0 && p->adj_start + p->n_adj > n_adj) ||
            p->n_logprobs > KERN_SAMPLE_MAX_TOP)
            return err_set(ERR_INVAL,
                           "%s: row %d has n_valid %d (vocab %d), adjustments [%d, +%d) of %d, %d "
                           "logprobs (at most %d)",
                           who, r, p->n_valid, vocab, p->adj_start, p->n_adj, n_adj, p->n_logprobs,
                           KERN_SAMPLE_MAX_TOP);
    }
    return 0;
}

int kern_sample_row(struct kern_sample_out *out, const float *logits,
                    const struct kern_sample_params *p, const struct kern_sample_adj *adj,
                    struct kern_sample_scratch *s) {
    memset(out, 0, sizeof(*out));
    out->token = -1;
    int n = p->n_valid;
    if (n <= 0) return 0;
    if (n > s->vocab)
        return err_set(ERR_INVAL, "sample: n_valid %d is beyond the scratch's vocab %d", n,
                       s->vocab);
    double lse = 0;
    if (p->n_logprobs >= 0) {
        int n_top = p->n_logprobs < KERN_SAMPLE_MAX_TOP ? p->n_logprobs : KERN_SAMPLE_MAX_TOP;
        out->n_top = n_top < n ? n_top : n;
        lse = kern_sample_lse(logits, n);
        kern_sample_top(logits, n, out->n_top, lse, out->top_id, out->top_lp);
    }
    bool greedy = p->temperature < KERN_SAMPLE_EPS;
    if (greedy && p->n_adj == 0) {
        // Plain greedy, the common case of large batches: no copy of the row.
        out->token = argmax(logits, n);
    } else {
        float *w = s->w;
        memcpy(w, logits, (size_t)n * sizeof(float));
        apply_adj(w, n, p, adj);
        int32_t best = argmax(w, n);
        if (!(w[best] > -INFINITY)) {
            out->status = ERR_INVAL;
            return 0;
        }
        float inv_t = greedy ? 0 : 1.0f / p->temperature, max = w[best];
        bool truncate = p->min_p > 0 || p->top_k > 0 || p->top_p < 1.0f;
        if (greedy)
            out->token = best;
        else if (!truncate)
            out->token = draw_all(w, n, max, inv_t, p->u, best, s->block_mass);
        else
            out->token = draw_truncated(w, n, p, max, inv_t, best, s->cand);
    }
    if (p->n_logprobs >= 0) out->logprob = (float)(logits[out->token] - lse);
    return 0;
}

// ---- the op

struct sample_job {
    struct kern_ctx *c;
    struct kern_sample_out *out;
    const float *logits;
    int vocab;
    const struct kern_sample_params *params;
    const struct kern_sample_adj *adj;
    int rc;
};

static void sample_task(void *arg, int tid, int begin, int end) {
    struct sample_job *j = arg;
    for (int r = begin; r < end; r++) {
        int rc = kern_sample_row(&j->out[r], j->logits + (size_t)r * j->vocab, &j->params[r],
                                 j->adj, &j->c->sample_scratch[tid]);
        if (rc) j->rc = rc;
    }
}

// The per-thread scratch is sized for the largest vocabulary seen: made on the first call (a
// model's first step), reused after. This is the one place a CPU op allocates; the CPU backend
// has no arena to carve it from.
static int grow_scratch(struct kern_ctx *c, int vocab) {
    if (c->sample_scratch && c->sample_vocab >= vocab) return 0;
    kern__cpu_sample_free(c);
    c->sample_scratch = calloc((size_t)c->n_threads, sizeof(*c->sample_scratch));
    if (!c->sample_scratch) return err_set(ERR_NOMEM, "out of memory for sampling scratch");
    for (int t = 0; t < c->n_threads; t++) {
        int rc = kern_sample_scratch_init(&c->sample_scratch[t], vocab);
        if (rc) {
            kern__cpu_sample_free(c);
            return rc;
        }
    }
    c->sample_vocab = vocab;
    return 0;
}

void kern__cpu_sample_free(struct kern_ctx *c) {
    for (int t = 0; c->sample_scratch && t < c->n_threads; t++)
        kern_sample_scratch_free(&c->sample_scratch[t]);
    free(c->sample_scratch);
    c->sample_scratch = NULL;
    c->sample_vocab = 0;
}

int kern__cpu_sample(struct kern_ctx *c, struct kern_sample_out *out, float *logits, int n_rows,
                     int vocab, const struct kern_sample_params *params,
                     const struct kern_sample_adj *adj, int n_adj) {
    int rc = kern_sample_check("cpu sample", n_rows, vocab, params, n_adj);
    if (rc) return rc;
    rc = grow_scratch(c, vocab);
    if (rc) return rc;
    struct sample_job j = {c, out, logits, vocab, params, adj, 0};
    kern__cpu_parallel_for(c, n_rows, 1, sample_task, &j);
    return j.rc;
}

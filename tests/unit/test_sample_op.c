// The sample op's CPU reference (kernels/cpu/sample.c through kern_cpu_ops.sample) against a
// naive oracle written here from the contract in kernels/ops.h (full sort, no selection tricks),
// on random logits with every parameter mix; batch and thread independence; the host-side row
// builder (server/sample.c); and the unhappy paths.
#include "common/err.h"
#include "common/rng.h"
#include "kernels/ops.h"
#include "server/sample.h"
#include "tests/test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- the oracle

struct ocand {
    float p;
    int32_t id;
};

static int ocand_cmp(const void *pa, const void *pb) {
    const struct ocand *a = pa, *b = pb;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int32_t oracle_argmax(const float *w, int n) {
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (w[i] == w[i] && (best < 0 || w[i] > w[best])) best = i;
    return best < 0 ? 0 : best;
}

// The token for one row at uniform u, straight from the contract: 0 ok, else ERR_INVAL.
static int oracle(const float *logits, const struct kern_sample_params *p,
                  const struct kern_sample_adj *adj, float u, int32_t *token) {
    int n = p->n_valid;
    float *w = malloc(sizeof(float) * n);
    memcpy(w, logits, sizeof(float) * n);
    for (int e = 0; e < p->n_adj; e++) {
        const struct kern_sample_adj *a = &adj[p->adj_start + e];
        float rp = p->repetition_penalty;
        if (a->flags & KERN_SAMPLE_BANNED) {
            w[a->id] = -INFINITY;
            continue;
        }
        if (rp > 0 && rp != 1.0f && (a->flags & KERN_SAMPLE_HISTORY))
            w[a->id] = w[a->id] > 0 ? w[a->id] / rp : w[a->id] * rp;
        if ((p->frequency_penalty != 0 || p->presence_penalty != 0) && a->count > 0)
            w[a->id] -= p->frequency_penalty * (float)a->count + p->presence_penalty;
    }
    int32_t best = oracle_argmax(w, n);
    int rc = 0;
    if (p->temperature < KERN_SAMPLE_EPS && p->n_adj == 0) {
        *token = best;
    } else if (!(w[best] > -INFINITY)) {
        rc = ERR_INVAL;
    } else if (p->temperature < KERN_SAMPLE_EPS) {
        *token = best;
    } else {
        float inv_t = 1.0f / p->temperature, max = w[best];
        struct ocand *c = malloc(sizeof(*c) * n);
        int nc = 0;
        for (int i = 0; i < n; i++) {
            float e = expf((w[i] - max) * inv_t);
            if (e > 0 && e >= (p->min_p > 0 ? p->min_p : 0)) c[nc++] = (struct ocand){e, i};
        }
        qsort(c, nc, sizeof(*c), ocand_cmp);
        if (p->top_k > 0 && p->top_k < nc) nc = p->top_k;
        if (p->top_p < 1.0f) {
            double total = 0, cum = 0;
            for (int i = 0; i < nc; i++)
                total += c[i].p;
            int cut = nc;
            for (int i = 0; i < nc; i++) {
                cum += c[i].p;
                if (cum >= (double)p->top_p * total) {
                    cut = i + 1;
                    break;
                }
            }
            nc = cut;
        }
        // The draw walks the kept ids in ascending order.
        float *kept = calloc(n, sizeof(float));
        for (int i = 0; i < nc; i++)
            kept[c[i].id] = c[i].p;
        double total = 0, cum = 0;
        for (int i = 0; i < n; i++)
            total += kept[i];
        *token = best;
        for (int i = 0; i < n; i++) {
            if (kept[i] <= 0) continue;
            cum += kept[i];
            if ((double)u * total < cum) {
                *token = i;
                break;
            }
        }
        free(kept);
        free(c);
    }
    free(w);
    return rc;
}

// ---- random rows

static float frand(uint64_t s[4]) {
    return (float)((double)(rng_next(s) >> 11) * 0x1.0p-53);
}

// Logits of several characters: flat noise, a peaked head, exact ties, -inf and huge values.
static void fill_row(float *l, int vocab, int kind, uint64_t s[4]) {
    for (int i = 0; i < vocab; i++)
        l[i] = (frand(s) * 2 - 1) * (kind == 0 ? 3.0f : 6.0f);
    if (kind == 1)
        for (int j = 0; j < 8; j++)
            l[rng_next(s) % vocab] = 14.0f + frand(s) * 3;
    if (kind == 2) // ties: many ids share a few values
        for (int i = 0; i < vocab; i++)
            l[i] = (float)(int)(l[i] * 2) * 0.5f;
    if (kind == 3)
        for (int j = 0; j < vocab / 10; j++)
            l[rng_next(s) % vocab] = -INFINITY;
}

// Random parameters and (for some rows) adjustments appended to adj.
static void fill_params(struct kern_sample_params *p, int vocab, struct kern_sample_adj *adj,
                        int *n_adj, int32_t *marks, uint64_t s[4]) {
    static const float temps[] = {0, 0.5f, 1.0f, 1.3f};
    static const int ks[] = {0, 0, 1, 5, 50, 1000};
    static const float ps[] = {1, 1, 0.9f, 0.5f, 0.1f};
    static const float mps[] = {0, 0, 0.05f, 0.3f};
    memset(p, 0, sizeof(*p));
    p->temperature = temps[rng_next(s) % 4];
    p->top_k = ks[rng_next(s) % 6];
    p->top_p = ps[rng_next(s) % 5];
    p->min_p = mps[rng_next(s) % 4];
    p->n_valid = rng_next(s) % 4 == 0 ? vocab - 7 : vocab;
    p->n_logprobs = (int)(rng_next(s) % 23) - 2; // -2..20: -2 and -1 mean none
    if (p->n_logprobs < -1) p->n_logprobs = -1;
    p->u = frand(s);
    p->repetition_penalty = 1.0f;
    p->adj_start = *n_adj;
    if (rng_next(s) % 2) {
        p->repetition_penalty = rng_next(s) % 2 ? 1.3f : 0.8f;
        p->frequency_penalty = rng_next(s) % 2 ? 0.4f : -0.3f;
        p->presence_penalty = rng_next(s) % 2 ? 0.5f : 0.0f;
        int m = 1 + (int)(rng_next(s) % 60);
        for (int e = 0; e < m; e++) {
            int32_t id = (int32_t)(rng_next(s) % (uint64_t)p->n_valid);
            if (marks[id]) continue;
            marks[id] = 1;
            int fl = KERN_SAMPLE_HISTORY | (rng_next(s) % 8 == 0 ? KERN_SAMPLE_BANNED : 0);
            adj[(*n_adj)++] = (struct kern_sample_adj){id, (int32_t)(rng_next(s) % 4), fl};
        }
        for (int e = p->adj_start; e < *n_adj; e++)
            marks[adj[e].id] = 0;
    }
    p->n_adj = *n_adj - p->adj_start;
}

// ---- checks

// Runs n_rows random rows of `vocab` through the CPU op and the oracle. A mismatch counts as a
// boundary case when the oracle gives the op's token for some u within 1e-5 of the row's (the
// reference's fast draw sums in float lanes); anything else fails.
static void check_vs_oracle(int vocab, int n_rows, int threads, uint64_t seed) {
    uint64_t s[4];
    rng_seed(s, seed);
    float *logits = malloc(sizeof(float) * (size_t)n_rows * vocab);
    float *copy = malloc(sizeof(float) * (size_t)n_rows * vocab);
    struct kern_sample_params *P = calloc(n_rows, sizeof(*P));
    struct kern_sample_adj *adj = malloc(sizeof(*adj) * n_rows * 64);
    int32_t *marks = calloc(vocab, sizeof(int32_t));
    struct kern_sample_out *out = calloc(n_rows, sizeof(*out));
    int n_adj = 0;
    for (int r = 0; r < n_rows; r++) {
        fill_row(logits + (size_t)r * vocab, vocab, r % 4, s);
        fill_params(&P[r], vocab, adj, &n_adj, marks, s);
    }
    memcpy(copy, logits, sizeof(float) * (size_t)n_rows * vocab);
    struct kern_ctx *c;
    CHECK_OK(kern_cpu_ctx_init(&c, threads));
    CHECK_OK(kern_cpu_ops.sample(c, out, logits, n_rows, vocab, P, adj, n_adj));
    CHECK_MSG(memcmp(copy, logits, sizeof(float) * (size_t)n_rows * vocab) == 0,
              "the op changed its logits");
    int boundary = 0, sampled = 0;
    for (int r = 0; r < n_rows; r++) {
        const float *l = logits + (size_t)r * vocab;
        int32_t want = -1;
        int rc = oracle(l, &P[r], adj, P[r].u, &want);
        CHECK_MSG(out[r].status == rc, "row %d: status %d, oracle %d", r, out[r].status, rc);
        if (rc) {
            CHECK_EQ(out[r].token, -1);
            continue;
        }
        sampled += P[r].temperature >= KERN_SAMPLE_EPS;
        if (out[r].token != want) {
            int32_t lo = -1, hi = -1;
            oracle(l, &P[r], adj, fmaxf(0, P[r].u - 1e-5f), &lo);
            oracle(l, &P[r], adj, fminf(0x1.fffffep-1f, P[r].u + 1e-5f), &hi);
            CHECK_MSG(out[r].token >= lo && out[r].token <= hi,
                      "row %d (T %.2f k %d p %.2f min_p %.2f adj %d u %.6f): token %d, oracle %d "
                      "(%d..%d near u)",
                      r, P[r].temperature, P[r].top_k, P[r].top_p, P[r].min_p, P[r].n_adj, P[r].u,
                      out[r].token, want, lo, hi);
            boundary++;
        }
        if (P[r].n_logprobs >= 0) {
            double z = 0, mx = -INFINITY;
            for (int i = 0; i < P[r].n_valid; i++)
                mx = l[i] > mx ? l[i] : mx;
            for (int i = 0; i < P[r].n_valid; i++)
                z += exp(l[i] - mx);
            double lse = mx + log(z);
            CHECK_NEAR(out[r].logprob, l[out[r].token] - lse, 1e-4);
            CHECK_EQ(out[r].n_top, P[r].n_logprobs);
            for (int t = 0; t < out[r].n_top; t++) {
                int32_t id = out[r].top_id[t];
                CHECK_NEAR(out[r].top_lp[t], l[id] - lse, 1e-4);
                if (t > 0) {
                    int32_t pid = out[r].top_id[t - 1];
                    CHECK_MSG(l[pid] > l[id] || (l[pid] == l[id] && pid < id),
                              "row %d: top %d (id %d, %g) after (id %d, %g)", r, t, id, l[id], pid,
                              l[pid]);
                }
            }
        }
    }
    fprintf(stderr, "  vocab %d: %d rows (%d drawn), %d boundary cases\n", vocab, n_rows, sampled,
            boundary);
    CHECK_MSG(boundary * 100 <= n_rows, "%d boundary cases in %d rows", boundary, n_rows);
    kern_cpu_ctx_free(c);
    free(logits), free(copy), free(P), free(adj), free(marks), free(out);
}

TEST(sample_op_matches_oracle) {
    check_vs_oracle(3001, 400, 2, 1);
    check_vs_oracle(37, 300, 1, 2);
    check_vs_oracle(151936, 12, 2, 3);
}

// A row's output depends on that row only: alone, among others, at another position, on one or
// several threads.
TEST(sample_op_is_batch_independent) {
    enum { V = 5000, R = 16 };
    uint64_t s[4];
    rng_seed(s, 11);
    float *logits = malloc(sizeof(float) * R * V);
    struct kern_sample_params P[R];
    struct kern_sample_adj adj[R * 64];
    int32_t *marks = calloc(V, sizeof(int32_t));
    int n_adj = 0;
    for (int r = 0; r < R; r++) {
        fill_row(logits + (size_t)r * V, V, r % 4, s);
        fill_params(&P[r], V, adj, &n_adj, marks, s);
        P[r].temperature = 0.9f; // every row draws
    }
    struct kern_ctx *one, *four;
    CHECK_OK(kern_cpu_ctx_init(&one, 1));
    CHECK_OK(kern_cpu_ctx_init(&four, 4));
    struct kern_sample_out all[R], all4[R], alone;
    CHECK_OK(kern_cpu_ops.sample(one, all, logits, R, V, P, adj, n_adj));
    CHECK_OK(kern_cpu_ops.sample(four, all4, logits, R, V, P, adj, n_adj));
    for (int r = 0; r < R; r++) {
        CHECK_OK(kern_cpu_ops.sample(one, &alone, logits + (size_t)r * V, 1, V, &P[r], adj, n_adj));
        CHECK_MSG(alone.token == all[r].token && all4[r].token == all[r].token,
                  "row %d: alone %d, in the batch %d, on four threads %d", r, alone.token,
                  all[r].token, all4[r].token);
        CHECK(memcmp(&alone, &all[r], sizeof(alone)) == 0);
    }
    kern_cpu_ctx_free(one);
    kern_cpu_ctx_free(four);
    free(logits);
    free(marks);
}

TEST(sample_op_unhappy_paths) {
    enum { V = 16 };
    float logits[2 * V];
    for (int i = 0; i < 2 * V; i++)
        logits[i] = (float)((i * 7) % 11) - 3.0f;
    struct kern_ctx *c;
    CHECK_OK(kern_cpu_ctx_init(&c, 2));
    struct kern_sample_params P[2] = {
        {.temperature = 0, .top_p = 1, .n_valid = V, .n_logprobs = -1, .repetition_penalty = 1},
        {.temperature = 0.8f,
         .top_p = 1,
         .n_valid = V,
         .n_logprobs = 2,
         .u = 0.5f,
         .repetition_penalty = 1}};
    struct kern_sample_adj adj[V];
    struct kern_sample_out out[2];
    CHECK_EQ(kern_cpu_ops.sample(c, out, logits, -1, V, P, adj, 0), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.sample(c, out, logits, 2, 0, P, adj, 0), ERR_INVAL);
    P[1].n_valid = V + 1;
    CHECK_EQ(kern_cpu_ops.sample(c, out, logits, 2, V, P, adj, 0), ERR_INVAL);
    P[1].n_valid = V;
    P[1].n_logprobs = KERN_SAMPLE_MAX_TOP + 1;
    CHECK_EQ(kern_cpu_ops.sample(c, out, logits, 2, V, P, adj, 0), ERR_INVAL);
    P[1].n_logprobs = 2;
    P[1].n_adj = 3; // entries beyond the array
    CHECK_EQ(kern_cpu_ops.sample(c, out, logits, 2, V, P, adj, 2), ERR_INVAL);
    // Every id banned in row 1: its status says so, row 0 is unaffected.
    for (int i = 0; i < V; i++)
        adj[i] = (struct kern_sample_adj){i, 0, KERN_SAMPLE_BANNED};
    P[1].n_adj = V;
    CHECK_OK(kern_cpu_ops.sample(c, out, logits, 2, V, P, adj, V));
    CHECK_EQ(out[1].status, ERR_INVAL);
    CHECK_EQ(out[1].token, -1);
    CHECK_EQ(out[0].status, 0);
    CHECK_EQ(out[0].token, oracle_argmax(logits, V));
    // Greedy with every id banned but the worst picks that one.
    P[0].adj_start = 1;
    P[0].n_adj = V - 1;
    // entries 1..15 ban ids 1..15: id 0 is left, the only choice
    CHECK_OK(kern_cpu_ops.sample(c, out, logits, 1, V, P, adj, V));
    CHECK_EQ(out[0].token, 0);
    // A skipped row (n_valid 0) has token -1 and no error; zero rows is nothing to do.
    P[0].n_valid = 0;
    CHECK_OK(kern_cpu_ops.sample(c, out, logits, 1, V, P, adj, V));
    CHECK_EQ(out[0].token, -1);
    CHECK_EQ(out[0].status, 0);
    CHECK_OK(kern_cpu_ops.sample(c, out, logits, 0, V, P, adj, 0));
    kern_cpu_ctx_free(c);
}

// srv_sample_row: one entry per distinct id, bans flagged, history only with penalties, output
// counts, u drawn only for rows that draw, marks zero again, rows appended one after another.
TEST(sample_row_builds_entries) {
    enum { V = 50 };
    int32_t marks[V] = {0};
    struct kern_sample_adj adj[64];
    int n_adj = 0;
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    sp.temperature = 0;
    int32_t toks[] = {3, 3, 7, 9, 9, 9, 60}; // prompt {3, 3, 7}; output {9, 9, 9, 60 (outside)}
    int32_t banned[] = {7, 49, 49};
    struct srv_sample_input in = {NULL, V, toks, 3, 7, banned, 3};
    struct srv_sample_rng r1, r2;
    srv_sample_rng_seed(&r1, 5);
    srv_sample_rng_seed(&r2, 5);
    struct kern_sample_params p;
    srv_sample_row(&in, &sp, &r1, marks, &p, adj, &n_adj);
    // Greedy without penalties: the bans only, and no u drawn.
    CHECK_EQ(p.n_adj, 2);
    CHECK_EQ(p.adj_start, 0);
    CHECK_EQ(adj[0].id, 7);
    CHECK_EQ(adj[0].flags, KERN_SAMPLE_BANNED);
    CHECK_EQ(adj[1].id, 49);
    CHECK(r1.s[0] == r2.s[0]);
    sp.temperature = 0.7f;
    sp.repetition_penalty = 1.2f;
    sp.frequency_penalty = 0.5f;
    sp.logprobs = 3;
    srv_sample_row(&in, &sp, &r1, marks, &p, adj, &n_adj);
    CHECK_EQ(p.adj_start, 2);
    CHECK_EQ(p.n_adj, 4); // 7 (banned, history), 49 (banned), 3, 9
    CHECK_EQ(p.n_logprobs, 3);
    CHECK_NEAR(p.u, srv_sample_uniform(&r2), 1e-7);
    int seen = 0;
    for (int e = p.adj_start; e < n_adj; e++) {
        const struct kern_sample_adj *a = &adj[e];
        seen++;
        if (a->id == 7) {
            CHECK_EQ(a->flags, KERN_SAMPLE_BANNED | KERN_SAMPLE_HISTORY);
        } else if (a->id == 49) {
            CHECK_EQ(a->flags, KERN_SAMPLE_BANNED);
        } else if (a->id == 3) {
            CHECK_EQ(a->count, 0);
            CHECK_EQ(a->flags, KERN_SAMPLE_HISTORY);
        } else {
            CHECK_EQ(a->id, 9);
            CHECK_EQ(a->count, 3);
            CHECK_EQ(a->flags, KERN_SAMPLE_HISTORY);
        }
    }
    CHECK_EQ(seen, 4);
    for (int i = 0; i < V; i++)
        CHECK_EQ(marks[i], 0);
}

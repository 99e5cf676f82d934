// The CUDA sample op against the CPU reference (kern_cpu_ops.sample) on the same random logits
// and parameters: vocab 151936 (Qwen), 152064 and odd sizes; 1..256 rows; every mix of greedy,
// temperature, top_k, top_p, min_p, penalties, bans and logprobs. For the same u both must pick
// the same token. The two backends' exp and sums round differently, so a mismatch is accepted
// only as a boundary case: the CPU reference gives the GPU's token for some u within 1e-5 of the
// row's (the draw walks ids in order, so tokens are monotone in u); at most 1% of rows may be
// such cases, and any other mismatch fails. Logprobs within 1e-4, top ids exact, the logits
// unchanged afterwards ("sample logits"), the probability cache changing nothing ("sample
// cache"), greedy rows equal to the argmax kernel, and the op's error paths. The default kernel
// (radix select, candidate buffer, coalesced argmax and draw) against the one it replaced
// (KEEL_SAMPLE_RADIX=0) and the radix select alone (=1): rows without top_p equal bit for bit
// where the counting is the same, other rows the same tokens but for rounding boundaries
// ("sample radix"); the sweep (mode 3) covers top_k 1..1000, top_p 0.01..0.999, min_p mixes and
// heavy ties at 1..256 rows and odd vocabularies.
#include "common/err.h"
#include "common/rng.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float gs_frand(uint64_t s[4]) {
    return (float)((double)(rng_next(s) >> 11) * 0x1.0p-53);
}

// Logits of several characters: flat noise, a peaked head, exact ties, -inf entries, and
// (kind 4) six values only, so every threshold falls inside a run of thousands of ties.
static void gs_row(float *l, int vocab, int kind, uint64_t s[4]) {
    for (int i = 0; i < vocab; i++)
        l[i] = (gs_frand(s) * 2 - 1) * (kind == 0 ? 3.0f : 6.0f);
    if (kind == 1)
        for (int j = 0; j < 8; j++)
            l[rng_next(s) % vocab] = 14.0f + gs_frand(s) * 3;
    if (kind == 2)
        for (int i = 0; i < vocab; i++)
            l[i] = (float)(int)(l[i] * 2) * 0.5f;
    if (kind == 3)
        for (int j = 0; j < vocab / 10; j++)
            l[rng_next(s) % vocab] = -INFINITY;
    if (kind == 4)
        for (int i = 0; i < vocab; i++)
            l[i] = (float)(rng_next(s) % 6) * 0.75f;
}

// The truncation sweep: every row truncates, with wide top_k / top_p / min_p ranges.
static void gs_params_sweep(struct kern_sample_params *p, int vocab, uint64_t s[4]) {
    static const float temps[] = {0.3f, 0.7f, 1.0f, 1.5f};
    static const int ks[] = {0, 1, 2, 7, 50, 333, 1000};
    static const float ps[] = {1, 0.01f, 0.3f, 0.9f, 0.95f, 0.999f};
    static const float mps[] = {0, 0, 0.01f, 0.2f};
    p->temperature = temps[rng_next(s) % 4];
    p->top_k = ks[rng_next(s) % 7];
    p->top_p = ps[rng_next(s) % 6];
    p->min_p = mps[rng_next(s) % 4];
    if (p->top_k == 0 && p->top_p == 1 && p->min_p == 0) p->top_p = 0.5f;
    p->n_valid = rng_next(s) % 5 == 0 ? vocab - 3 : vocab;
    p->n_logprobs = (int)(rng_next(s) % 4) - 1;
}

// mode 0: every mix; 1: greedy only; 2: top_p only (the playground's two cases); 3: the sweep.
static void gs_params(struct kern_sample_params *p, int vocab, int mode,
                      struct kern_sample_adj *adj, int *n_adj, int32_t *marks, uint64_t s[4]) {
    static const float temps[] = {0, 0.5f, 1.0f, 1.3f};
    static const int ks[] = {0, 0, 1, 5, 50, 1000};
    static const float ps[] = {1, 1, 0.9f, 0.5f, 0.1f};
    static const float mps[] = {0, 0, 0.05f, 0.3f};
    memset(p, 0, sizeof(*p));
    p->temperature = mode == 1 ? 0 : mode == 2 ? 1.0f : temps[rng_next(s) % 4];
    p->top_k = mode ? 0 : ks[rng_next(s) % 6];
    p->top_p = mode == 2 ? 0.9f : mode ? 1 : ps[rng_next(s) % 5];
    p->min_p = mode ? 0 : mps[rng_next(s) % 4];
    p->n_valid = mode == 0 && rng_next(s) % 4 == 0 ? vocab - 7 : vocab;
    p->n_logprobs = mode ? -1 : (int)(rng_next(s) % 22) - 1;
    p->u = gs_frand(s);
    p->repetition_penalty = 1.0f;
    p->adj_start = *n_adj;
    if (mode == 3) gs_params_sweep(p, vocab, s);
    if (mode == 0 && rng_next(s) % 2) {
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

// The CPU reference's token for row r at another u (for the boundary check).
static int32_t gs_cpu_at(const float *l, const struct kern_sample_params *p,
                         const struct kern_sample_adj *adj, float u,
                         struct kern_sample_scratch *sc) {
    struct kern_sample_params q = *p;
    q.u = u;
    q.n_logprobs = -1;
    struct kern_sample_out o;
    CHECK_OK(kern_sample_row(&o, l, &q, adj, sc));
    return o.token;
}

static void gs_check(int vocab, int n_rows, int mode, uint64_t seed) {
    uint64_t s[4];
    rng_seed(s, seed);
    size_t n = (size_t)n_rows * vocab;
    float *logits = malloc(sizeof(float) * n), *after = malloc(sizeof(float) * n);
    struct kern_sample_params *P = calloc(n_rows, sizeof(*P));
    struct kern_sample_adj *adj = malloc(sizeof(*adj) * ((size_t)n_rows * 64 + 1));
    int32_t *marks = calloc(vocab, sizeof(int32_t));
    struct kern_sample_out *want = calloc(n_rows, sizeof(*want));
    struct kern_sample_out *got = calloc(n_rows, sizeof(*got));
    int n_adj = 0;
    for (int r = 0; r < n_rows; r++) {
        gs_row(logits + (size_t)r * vocab, vocab, (r + (int)seed) % (mode == 3 ? 5 : 4), s);
        gs_params(&P[r], vocab, mode, adj, &n_adj, marks, s);
    }
    CHECK_OK(kern_cpu_ops.sample(gt_cpu(), want, logits, n_rows, vocab, P, adj, n_adj));
    float *d_l = gt_up(logits, sizeof(float) * n);
    memset(got, 0xff, sizeof(*got) * n_rows);
    CHECK_OK(kern_cuda_ops.sample(gt_ctx(), got, d_l, n_rows, vocab, P, adj, n_adj));
    // The probability cache (on in the context; the test scratch holds it for some rows only)
    // changes speed, never results: without it every output is the same, bit for bit.
    struct kern_sample_out *nocache = calloc(n_rows, sizeof(*nocache));
    CHECK_OK(kern_cuda__sample_op(gt_scratch(), gt_scratch_bytes(), nocache, d_l, n_rows, vocab, P,
                                  adj, n_adj, false, kern_cuda_stream(gt_ctx())));
    size_t cache_diff = 0;
    for (int r = 0; r < n_rows; r++)
        cache_diff += memcmp(&nocache[r], &got[r], sizeof(got[r])) != 0;
    free(nocache);
    // The reference variant (KEEL_SAMPLE_RADIX=0: bisection, one-load argmax and draw) and the
    // radix select alone (=1) against each other and against the default of `got` (=2: radix
    // select, candidate buffer, coalesced argmax and draw). 1 and 0 count the same way, so rows
    // without top_p must agree bit for bit; elsewhere sums round in other orders, so a token may
    // differ at a boundary (at most 1% of rows); greedy rows and logprobs never.
    struct kern_sample_out *alg[2];
    for (int a = 0; a < 2; a++) {
        alg[a] = calloc(n_rows, sizeof(*alg[a]));
        CHECK(setenv("KEEL_SAMPLE_RADIX", a ? "1" : "0", 1) == 0);
        int a_rc = kern_cuda_ops.sample(gt_ctx(), alg[a], d_l, n_rows, vocab, P, adj, n_adj);
        unsetenv("KEEL_SAMPLE_RADIX");
        CHECK_OK(a_rc);
    }
    size_t radix_exact_bad = 0, radix_p_diff = 0;
    for (int r = 0; r < n_rows; r++) {
        struct kern_sample_out *o0 = &alg[0][r], *o1 = &alg[1][r], *o2 = &got[r];
        bool greedy = P[r].temperature < KERN_SAMPLE_EPS;
        if (P[r].top_p >= 1.0f || greedy)
            radix_exact_bad += memcmp(o0, o1, sizeof(*o0)) != 0;
        else
            radix_p_diff += o0->token != o1->token || o0->status != o1->status;
        if (greedy || o0->status)
            radix_exact_bad += memcmp(o0, o2, sizeof(*o0)) != 0;
        else if (o0->token != o2->token)
            radix_p_diff++;
        else
            radix_exact_bad += o0->n_top != o2->n_top || o0->logprob != o2->logprob ||
                               memcmp(o0->top_id, o2->top_id, sizeof(o0->top_id)) != 0;
    }
    free(alg[0]);
    free(alg[1]);
    gt_down(after, d_l, sizeof(float) * n);
    size_t changed = 0;
    for (size_t i = 0; i < n; i++)
        changed += memcmp(&after[i], &logits[i], sizeof(float)) != 0;

    struct kern_sample_scratch sc;
    CHECK_OK(kern_sample_scratch_init(&sc, vocab));
    size_t boundary = 0, wrong = 0, status_bad = 0, top_bad = 0;
    double lp_err = 0;
    for (int r = 0; r < n_rows; r++) {
        const float *l = logits + (size_t)r * vocab;
        if (got[r].status != want[r].status) {
            status_bad++;
            continue;
        }
        if (got[r].token != want[r].token) {
            float du = 1e-5f;
            int32_t lo = gs_cpu_at(l, &P[r], adj, fmaxf(0, P[r].u - du), &sc);
            int32_t hi = gs_cpu_at(l, &P[r], adj, fminf(0x1.fffffep-1f, P[r].u + du), &sc);
            if (got[r].token >= lo && got[r].token <= hi && P[r].temperature >= KERN_SAMPLE_EPS) {
                boundary++;
            } else {
                wrong++;
                printf("  row %d (T %.2f k %d p %.2f min_p %.2f adj %d u %.7f): gpu %d, cpu %d "
                       "(%d..%d near u)\n",
                       r, P[r].temperature, P[r].top_k, P[r].top_p, P[r].min_p, P[r].n_adj, P[r].u,
                       got[r].token, want[r].token, lo, hi);
            }
        }
        if (P[r].n_logprobs >= 0 && got[r].token == want[r].token && want[r].token >= 0) {
            lp_err = fmax(lp_err, fabs(got[r].logprob - want[r].logprob));
            if (got[r].n_top != want[r].n_top) top_bad++;
            for (int t = 0; t < want[r].n_top && t < KERN_SAMPLE_MAX_TOP; t++) {
                top_bad += got[r].top_id[t] != want[r].top_id[t];
                lp_err = fmax(lp_err, fabs(got[r].top_lp[t] - want[r].top_lp[t]));
            }
        }
    }
    char shape[96];
    const char *mname = mode == 1   ? "greedy"
                        : mode == 2 ? "top_p 0.9"
                        : mode == 3 ? "sweep"
                                    : "mixed";
    snprintf(shape, sizeof shape, "rows=%d vocab=%d %s", n_rows, vocab, mname);
    printf("  %s: %zu boundary, %zu wrong, %zu status, %zu top ids, logprob err %.2e\n", shape,
           boundary, wrong, status_bad, top_bad, lp_err);
    gt_row_exact("sample tokens", shape,
                 wrong + status_bad + (boundary * 100 > (size_t)n_rows ? boundary : 0));
    if (mode == 0 || mode == 3) {
        gt_row_exact("sample top ids", shape, top_bad);
        struct gt_err e = {lp_err, lp_err, 0};
        gt_row("sample logprob", shape, e, 1e-4);
    }
    printf("  %s: variants 0/1/2 (KEEL_SAMPLE_RADIX): %zu exact mismatches, %zu boundary "
           "tokens\n",
           shape, radix_exact_bad, radix_p_diff);
    gt_row_exact("sample radix", shape,
                 radix_exact_bad + (radix_p_diff * 50 > (size_t)n_rows ? radix_p_diff : 0));
    gt_row_exact("sample logits", shape, changed);
    gt_row_exact("sample cache", shape, cache_diff);
    kern_sample_scratch_free(&sc);
    gt_free(d_l);
    free(logits), free(after), free(P), free(adj), free(marks), free(want), free(got);
}

TEST(gpu_sample_mixed) {
    gs_check(151936, 1, 0, 1);
    gs_check(151936, 64, 0, 2);
    gs_check(152064, 256, 0, 3);
    gs_check(1000, 200, 0, 4);
    gs_check(4097, 33, 0, 5);
    gs_check(37, 100, 0, 6);
}

TEST(gpu_sample_greedy_and_top_p) {
    gs_check(151936, 128, 1, 7);
    gs_check(151936, 128, 2, 8);
    gs_check(33, 5, 1, 9);
}

// The radix select on truncating rows of every kind, small to large batches, odd vocabularies.
TEST(gpu_sample_radix_sweep) {
    gs_check(151936, 1, 3, 11);
    gs_check(152064, 7, 3, 12);
    gs_check(151936, 64, 3, 13);
    gs_check(152064, 256, 3, 14);
    gs_check(4097, 33, 3, 15);
    gs_check(1001, 100, 3, 16);
    gs_check(37, 60, 3, 17);
}

// Greedy rows agree with the argmax kernel that greedy decoding used before the op existed.
TEST(gpu_sample_greedy_equals_argmax) {
    enum { M = 9, V = 151936 };
    uint64_t s[4];
    rng_seed(s, 10);
    float *l = malloc(sizeof(float) * M * V);
    for (int r = 0; r < M; r++)
        gs_row(l + (size_t)r * V, V, r % 4, s);
    l[2 * (size_t)V + 5] = 40, l[2 * (size_t)V + 70000] = 40; // a tie: the lower id
    struct kern_sample_params P[M];
    for (int r = 0; r < M; r++)
        P[r] = (struct kern_sample_params){
            .top_p = 1, .n_valid = V, .n_logprobs = -1, .repetition_penalty = 1};
    float *d_l = gt_up(l, sizeof(float) * M * V);
    int32_t *d_ids = gt_dev(sizeof(int32_t) * M), ids[M];
    CHECK_OK(kern_cuda_argmax(d_ids, d_l, M, V, kern_cuda_stream(gt_ctx())));
    gt_down(ids, d_ids, sizeof ids);
    struct kern_sample_out out[M];
    CHECK_OK(kern_cuda_ops.sample(gt_ctx(), out, d_l, M, V, P, NULL, 0));
    size_t bad = 0;
    for (int r = 0; r < M; r++)
        bad += out[r].token != ids[r];
    CHECK_EQ(out[2].token, 5);
    gt_row_exact("sample=argmax", "rows=9 vocab=151936 greedy", bad);
    gt_free(d_l), gt_free(d_ids);
    free(l);
}

TEST(gpu_sample_errors) {
    enum { V = 64 };
    float l[2 * V];
    for (int i = 0; i < 2 * V; i++)
        l[i] = (float)(i % 13);
    float *d_l = gt_up(l, sizeof l);
    struct kern_sample_params P[2];
    for (int r = 0; r < 2; r++)
        P[r] = (struct kern_sample_params){.temperature = 0.7f,
                                           .top_p = 1,
                                           .n_valid = V,
                                           .n_logprobs = -1,
                                           .u = 0.3f,
                                           .repetition_penalty = 1};
    struct kern_sample_adj adj[V];
    for (int i = 0; i < V; i++)
        adj[i] = (struct kern_sample_adj){i, 0, KERN_SAMPLE_BANNED};
    struct kern_sample_out out[2];
    struct kern_ctx *c = gt_ctx();
    cudaStream_t st = kern_cuda_stream(c);
    P[1].n_valid = V + 1;
    CHECK_EQ(kern_cuda_ops.sample(c, out, d_l, 2, V, P, adj, 0), ERR_INVAL);
    P[1].n_valid = V;
    P[1].adj_start = 0;
    P[1].n_adj = V;
    CHECK_EQ(kern_cuda_ops.sample(c, out, d_l, 2, V, P, adj, V - 1), ERR_INVAL);
    CHECK_EQ(kern_cuda__sample_op(gt_scratch(), 256, out, d_l, 2, V, P, adj, V, true, st),
             ERR_NOSPACE);
    // Every id banned in row 1: its status, not the op, reports it; row 0 still samples.
    CHECK_OK(kern_cuda_ops.sample(c, out, d_l, 2, V, P, adj, V));
    CHECK_EQ(out[1].status, ERR_INVAL);
    CHECK_EQ(out[1].token, -1);
    CHECK_EQ(out[0].status, 0);
    CHECK(out[0].token >= 0 && out[0].token < V);
    float back[2 * V];
    gt_down(back, d_l, sizeof back);
    CHECK(memcmp(back, l, sizeof l) == 0);
    P[0].n_valid = 0; // a skipped row
    CHECK_OK(kern_cuda_ops.sample(c, out, d_l, 1, V, P, adj, 0));
    CHECK_EQ(out[0].token, -1);
    gt_row_exact("sample errors", "bad rows, no scratch, all banned", 0);
    gt_free(d_l);
}

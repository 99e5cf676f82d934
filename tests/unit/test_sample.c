// Sampling: greedy, penalties with vLLM's semantics, truncation (top_k, top_p, min_p) against
// exact expectations, draw frequencies, seeds, logprobs.
#include "common/err.h"
#include "server/sample.h"
#include "tests/test.h"

#include <time.h>

static int32_t draw(const float *logits, int n, const int32_t *tokens, int n_prompt, int n_tokens,
                    const struct srv_sampling *sp, struct srv_sample_rng *rng,
                    struct srv_sample_scratch *s) {
    struct srv_sample_input in = {logits, n, tokens, n_prompt, n_tokens, NULL, 0};
    int32_t t = -1;
    CHECK_OK(srv_sample_token(&in, sp, rng, s, &t));
    CHECK(t >= 0 && t < n);
    return t;
}

TEST(sample_greedy_ties_bans_and_unsampleable) {
    struct srv_sample_scratch s;
    CHECK_OK(srv_sample_scratch_init(&s, 8));
    struct srv_sample_rng rng;
    srv_sample_rng_seed(&rng, 1);
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    sp.temperature = 0;
    float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 3.0f};
    // id 5 is best but beyond the tokenizer's ids (n_vocab 5): the tie 1 vs 3 goes to 1.
    CHECK_EQ(draw(logits, 5, NULL, 0, 0, &sp, &rng, &s), 1);
    CHECK_EQ(draw(logits, 6, NULL, 0, 0, &sp, &rng, &s), 5);
    int32_t banned[] = {5, 1};
    struct srv_sample_input in = {logits, 6, NULL, 0, 0, banned, 2};
    int32_t t = -1;
    CHECK_OK(srv_sample_token(&in, &sp, &rng, &s, &t));
    CHECK_EQ(t, 3);
    int32_t all[] = {0, 1, 2, 3};
    struct srv_sample_input none = {logits, 4, NULL, 0, 0, all, 4};
    CHECK_EQ(srv_sample_token(&none, &sp, &rng, &s, &t), ERR_INVAL);
    sp.temperature = 0.7f;
    CHECK_EQ(srv_sample_token(&none, &sp, &rng, &s, &t), ERR_INVAL);
    srv_sample_scratch_free(&s);
    srv_sample_scratch_free(&s); // twice is fine
}

TEST(sample_penalties_follow_vllm) {
    struct srv_sample_scratch s;
    CHECK_OK(srv_sample_scratch_init(&s, 4));
    struct srv_sample_rng rng;
    srv_sample_rng_seed(&rng, 1);
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    sp.temperature = 0;
    float logits[4] = {3.0f, 2.0f, -1.0f, -1.2f};
    int32_t toks[] = {0, 0, 2, 1, 1}; // prompt {0, 0, 2}, output {1, 1}
    // Repetition 2: 3 -> 1.5 (positive: divided, once although 0 appears twice), 2 -> 1,
    // -1 -> -2 (negative: multiplied); token 3 untouched at -1.2, 0 still best.
    sp.repetition_penalty = 2.0f;
    CHECK_EQ(draw(logits, 4, toks, 3, 5, &sp, &rng, &s), 0);
    CHECK_NEAR(s.w[0], 1.5, 1e-6);
    CHECK_NEAR(s.w[1], 1.0, 1e-6);
    CHECK_NEAR(s.w[2], -2.0, 1e-6);
    CHECK_NEAR(s.w[3], -1.2, 1e-6);
    // Frequency counts output tokens only: token 1 -> 2 - 2 * 0.3 = 1.4; prompt token 0 untouched.
    sp.repetition_penalty = 1.0f;
    sp.frequency_penalty = 0.3f;
    sp.presence_penalty = 0.5f;
    CHECK_EQ(draw(logits, 4, toks, 3, 5, &sp, &rng, &s), 0);
    CHECK_NEAR(s.w[1], 2.0 - 0.6 - 0.5, 1e-6);
    CHECK_NEAR(s.w[0], 3.0, 1e-6);
    // A strong presence penalty turns greedy away from a repeated output token.
    float flat[4] = {1.0f, 2.0f, 1.9f, 0.0f};
    sp.frequency_penalty = 0;
    sp.presence_penalty = 0.2f;
    CHECK_EQ(draw(flat, 4, toks, 3, 5, &sp, &rng, &s), 2);
    // The scratch counters are zero again afterwards.
    for (int i = 0; i < 4; i++)
        CHECK_EQ(s.counts[i], 0);
    srv_sample_scratch_free(&s);
}

// Draws many times and compares each id's frequency with the expected probability.
static void check_freqs(const float *logits, int n, const struct srv_sampling *sp,
                        const double *expect) {
    struct srv_sample_scratch s;
    CHECK_OK(srv_sample_scratch_init(&s, n));
    struct srv_sample_rng rng;
    srv_sample_rng_seed(&rng, 12345);
    enum { DRAWS = 40000 };
    int counts[16] = {0};
    for (int i = 0; i < DRAWS; i++)
        counts[draw(logits, n, NULL, 0, 0, sp, &rng, &s)]++;
    for (int i = 0; i < n; i++) {
        double f = (double)counts[i] / DRAWS;
        CHECK_MSG(fabs(f - expect[i]) < 0.012, "id %d: drawn %.4f, expected %.4f", i, f, expect[i]);
    }
    srv_sample_scratch_free(&s);
}

TEST(sample_truncation_and_frequencies) {
    float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    check_freqs(logits, 4, &sp, (double[]){0.5, 0.3, 0.15, 0.05});
    sp.top_p = 0.6f; // 0.5 < 0.6 <= 0.8: keep two
    check_freqs(logits, 4, &sp, (double[]){0.625, 0.375, 0, 0});
    sp.top_p = 0.85f; // keep three
    check_freqs(logits, 4, &sp, (double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
    srv_sampling_defaults(&sp);
    sp.top_k = 3;
    check_freqs(logits, 4, &sp, (double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
    sp.top_k = 1; // greedy
    check_freqs(logits, 4, &sp, (double[]){1, 0, 0, 0});
    srv_sampling_defaults(&sp);
    sp.min_p = 0.5f; // keep p >= 0.25
    check_freqs(logits, 4, &sp, (double[]){0.625, 0.375, 0, 0});
    // Temperature 2 flattens: p ~ sqrt(p).
    srv_sampling_defaults(&sp);
    sp.temperature = 2.0f;
    double r[4] = {sqrt(0.5), sqrt(0.3), sqrt(0.15), sqrt(0.05)}, z = r[0] + r[1] + r[2] + r[3];
    check_freqs(logits, 4, &sp, (double[]){r[0] / z, r[1] / z, r[2] / z, r[3] / z});
}

TEST(sample_seed_reproduces) {
    enum { V = 1000, N = 200 };
    float *logits = malloc(V * sizeof(float));
    struct srv_sample_rng r0;
    srv_sample_rng_seed(&r0, 7);
    for (int i = 0; i < V; i++)
        logits[i] = (float)(srv_sample_uniform(&r0) * 4.0);
    struct srv_sample_scratch s;
    CHECK_OK(srv_sample_scratch_init(&s, V));
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    sp.top_p = 0.9f;
    sp.top_k = 200;
    int32_t a[N], b[N], c[N];
    struct srv_sample_rng ra, rb, rc;
    srv_sample_rng_seed(&ra, 42);
    srv_sample_rng_seed(&rb, 42);
    srv_sample_rng_seed(&rc, 43);
    for (int i = 0; i < N; i++)
        a[i] = draw(logits, V, NULL, 0, 0, &sp, &ra, &s);
    for (int i = 0; i < N; i++)
        b[i] = draw(logits, V, NULL, 0, 0, &sp, &rb, &s);
    for (int i = 0; i < N; i++)
        c[i] = draw(logits, V, NULL, 0, 0, &sp, &rc, &s);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < N; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
    }
    CHECK_EQ(same_ab, N);
    CHECK_MSG(same_ac < N / 4, "seeds 42 and 43 agree on %d of %d draws", same_ac, N);
    srv_sample_scratch_free(&s);
    free(logits);
}

struct cand {
    float v;
    int32_t id;
};

// Descending by value, then ascending id.
static int cand_desc(const void *pa, const void *pb) {
    const struct cand *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

// A Qwen-sized vocabulary: the nucleus found by partial selection equals the one a full sort
// finds, and a draw is quick.
TEST(sample_top_p_large_vocab_matches_full_sort) {
    enum { V = 151936 };
    float *logits = malloc(V * sizeof(float));
    struct srv_sample_rng r0;
    srv_sample_rng_seed(&r0, 3);
    for (int i = 0; i < V; i++)
        logits[i] = (float)(srv_sample_uniform(&r0) * 12.0);
    // The exact nucleus for top_p 0.5, by a full sort.
    struct cand *all = malloc(V * sizeof(*all));
    double z = 0;
    for (int i = 0; i < V; i++)
        z += exp(logits[i] - 12.0);
    for (int i = 0; i < V; i++)
        all[i] = (struct cand){logits[i], i};
    qsort(all, V, sizeof(*all), cand_desc);
    bool *in_nucleus = calloc(V, sizeof(bool));
    double cum = 0;
    int n_nucleus = 0;
    for (int i = 0; i < V && cum < 0.5 * z; i++) {
        cum += exp(all[i].v - 12.0);
        in_nucleus[all[i].id] = true;
        n_nucleus++;
    }
    struct srv_sample_scratch s;
    CHECK_OK(srv_sample_scratch_init(&s, V));
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    sp.top_p = 0.5f;
    struct srv_sample_rng rng;
    srv_sample_rng_seed(&rng, 9);
    struct timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    enum { DRAWS = 50 };
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = draw(logits, V, NULL, 0, 0, &sp, &rng, &s);
        CHECK_MSG(in_nucleus[t], "token %d (logit %.4f) outside the nucleus of %d", t, logits[t],
                  n_nucleus);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    double ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / DRAWS;
    // CPU time of this thread, not wall time: CI machines are shared and loaded.
    fprintf(stderr, "  nucleus of %d tokens, %.2f ms of CPU per draw\n", n_nucleus, ms);
    CHECK(n_nucleus > 1000);
    CHECK_MSG(ms < 100, "%.2f ms per draw", ms);
    srv_sample_scratch_free(&s);
    free(in_nucleus);
    free(all);
    free(logits);
}

TEST(sample_logprobs_are_raw_log_softmax) {
    float logits[5] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
    double z = 0;
    for (int i = 0; i < 5; i++)
        z += exp(logits[i]);
    float lp = 0;
    struct srv_top_logprob top[3];
    srv_sample_logprobs(logits, 5, 4, 3, &lp, top);
    CHECK_NEAR(lp, 0.5 - log(z), 1e-5);
    CHECK_EQ(top[0].id, 1); // tie with 3: smaller id first
    CHECK_EQ(top[1].id, 3);
    CHECK_EQ(top[2].id, 0);
    CHECK_NEAR(top[0].logprob, 3.0 - log(z), 1e-5);
    CHECK_NEAR(top[2].logprob, 1.0 - log(z), 1e-5);
    double total = 0;
    for (int i = 0; i < 5; i++) {
        float l;
        srv_sample_logprobs(logits, 5, i, 0, &l, NULL);
        total += exp(l);
    }
    CHECK_NEAR(total, 1.0, 1e-5);
}

TEST(sample_stop_strings_find_and_hold_back) {
    char *stops[] = {"END", "\xc3\xa9t\xc3\xa9", "xx"};
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    sp.stop = stops;
    sp.n_stop = 3;
    int which = -1;
    const char *t = "abc EN";
    CHECK_EQ(srv_sample_find_stop(&sp, t, strlen(t), 0, &which), -1);
    // "EN" could start "END": held back; "N" alone starts nothing.
    CHECK_EQ(srv_sample_stop_holdback(&sp, t, strlen(t)), 2);
    CHECK_EQ(srv_sample_stop_holdback(&sp, "abc N", 5), 0);
    CHECK_EQ(srv_sample_stop_holdback(&sp, "abc x", 5), 1);
    t = "abc END and xx";
    // Searching only text added after byte 12 finds the later "xx", not the earlier "END".
    CHECK_EQ(srv_sample_find_stop(&sp, t, strlen(t), 12, &which), 12);
    CHECK_EQ(which, 2);
    CHECK_EQ(srv_sample_find_stop(&sp, t, strlen(t), 5, &which), 4);
    CHECK_EQ(which, 0);
    // A multi-byte stop string: a match across its characters, and a held-back prefix that ends
    // inside it but on a character boundary.
    t = "summer \xc3\xa9t\xc3\xa9!";
    CHECK_EQ(srv_sample_find_stop(&sp, t, strlen(t), 9, &which), 7);
    CHECK_EQ(which, 1);
    CHECK_EQ(srv_sample_stop_holdback(&sp, "un \xc3\xa9t", 6), 3);
    // Without stop strings nothing is held or found; an empty text holds nothing.
    CHECK_EQ(srv_sample_stop_holdback(&sp, "", 0), 0);
    sp.n_stop = 0;
    CHECK_EQ(srv_sample_find_stop(&sp, "END", 3, 0, &which), -1);
    CHECK_EQ(srv_sample_stop_holdback(&sp, "EN", 2), 0);
}

// The draw walks blocks of ids and then one block: mass spread over several blocks (and ids
// with no mass at all) must come out in proportion.
TEST(sample_draw_across_blocks) {
    enum { V = 1000, DRAWS = 40000 };
    float logits[V];
    for (int i = 0; i < V; i++)
        logits[i] = -INFINITY;
    logits[10] = logf(0.25f);
    logits[300] = logf(0.25f);
    logits[511] = logf(0.125f);
    logits[999] = logf(0.375f);
    struct srv_sample_scratch s;
    CHECK_OK(srv_sample_scratch_init(&s, V));
    struct srv_sampling sp;
    srv_sampling_defaults(&sp);
    struct srv_sample_rng rng;
    srv_sample_rng_seed(&rng, 77);
    int c10 = 0, c300 = 0, c511 = 0, c999 = 0;
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = draw(logits, V, NULL, 0, 0, &sp, &rng, &s);
        CHECK_MSG(t == 10 || t == 300 || t == 511 || t == 999, "drew %d, which has no mass", t);
        c10 += t == 10, c300 += t == 300, c511 += t == 511, c999 += t == 999;
    }
    CHECK_NEAR((double)c10 / DRAWS, 0.25, 0.012);
    CHECK_NEAR((double)c300 / DRAWS, 0.25, 0.012);
    CHECK_NEAR((double)c511 / DRAWS, 0.125, 0.012);
    CHECK_NEAR((double)c999 / DRAWS, 0.375, 0.012);
    srv_sample_scratch_free(&s);
}

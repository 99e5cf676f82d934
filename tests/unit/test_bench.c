// keel-bench's pure parts: percentiles and metrics against numpy's definitions, the summary of
// a run with known timings, the vLLM result block byte for byte, the SSE parser fed in every
// split, chunk meanings, the arrival process's statistics, prompt files, request bodies,
// base URLs, and the sweep's CSV and SVG.
//
// keel-bench's sources are not part of libkeel (the Makefile links them only into
// build/keel-bench), so this file compiles them in directly; each keeps its statics private to
// this translation unit.
#include "tests/test.h"

#include "bench/client.c"
#include "bench/dataset.c"
#include "bench/sse.c"
#include "bench/stats.c"
#include "bench/sweep.c"

#include <unistd.h>

// ---- statistics

TEST(bench_percentile_matches_numpy) {
    const double v[] = {15, 20, 35, 40, 50};
    // numpy.percentile(v, p) with the default linear method.
    CHECK_NEAR(bench_percentile(v, 5, 40), 29.0, 1e-12);
    CHECK_NEAR(bench_percentile(v, 5, 90), 46.0, 1e-12);
    CHECK_NEAR(bench_percentile(v, 5, 50), 35.0, 1e-12);
    CHECK_NEAR(bench_percentile(v, 5, 99), 49.6, 1e-12);
    CHECK_NEAR(bench_percentile(v, 5, 0), 15.0, 0);
    CHECK_NEAR(bench_percentile(v, 5, 100), 50.0, 0);
    CHECK_NEAR(bench_percentile(v, 1, 99), 15.0, 0);
    CHECK_NEAR(bench_percentile(v, 0, 50), 0.0, 0); // vLLM reports 0 for an empty metric
}

TEST(bench_metric_in_milliseconds) {
    double v[] = {0.3, 0.1, 0.2, 0.4};
    const double pcts[] = {90, 99};
    struct bench_metric m;
    bench_metric_compute(v, 4, pcts, 2, &m);
    CHECK_EQ(m.n, 4);
    CHECK_NEAR(m.mean, 250.0, 1e-9);
    CHECK_NEAR(m.median, 250.0, 1e-9);
    CHECK_NEAR(m.std, 111.80339887, 1e-6); // population deviation, as numpy.std
    CHECK_NEAR(m.pct[0], 370.0, 1e-9);
    CHECK_NEAR(m.pct[1], 397.0, 1e-9);
    CHECK_NEAR(v[0], 0.1, 0); // sorted in place
    bench_metric_compute(v, 0, pcts, 2, &m);
    CHECK_NEAR(m.mean, 0.0, 0);
    CHECK_NEAR(m.pct[1], 0.0, 0);
}

// Three requests whose every time is known; the third fails and must not count.
static void make_results(struct bench_result r[4]) {
    memset(r, 0, 4 * sizeof(*r));
    r[0] = (struct bench_result){.success = true,
                                 .prompt_len = 10,
                                 .output_tokens = 3,
                                 .has_usage = true,
                                 .start_s = 0,
                                 .ttft_s = 0.1,
                                 .latency_s = 0.5};
    bench_result_add_itl(&r[0], 0.2);
    bench_result_add_itl(&r[0], 0.2);
    // Five tokens in two chunks: TPOT uses the usage count, ITL the chunks.
    r[1] = (struct bench_result){.success = true,
                                 .prompt_len = 20,
                                 .output_tokens = 5,
                                 .has_usage = true,
                                 .start_s = 0.25,
                                 .ttft_s = 0.05,
                                 .latency_s = 0.4};
    bench_result_add_itl(&r[1], 0.1);
    r[2] = (struct bench_result){.success = false, .prompt_len = 99, .start_s = 0.1};
    bench_result_set_error(&r[2], "HTTP %d: %s", 503, "overloaded");
    bench_result_set_error(&r[2], "a later reason"); // the first reason stays
    // Starts exactly when r[0] ends: half-open intervals, so never concurrent with it.
    r[3] = (struct bench_result){.success = true,
                                 .prompt_len = 5,
                                 .output_tokens = 1,
                                 .has_usage = false,
                                 .start_s = 0.5,
                                 .ttft_s = 1.0,
                                 .latency_s = 1.0};
}

TEST(bench_summary_of_known_timings) {
    struct bench_result r[4];
    make_results(r);
    const double pcts[] = {90, 99};
    struct bench_summary s;
    CHECK_OK(bench_summarize(r, 4, 2.0, pcts, 2, &s));
    CHECK_EQ(s.completed, 3);
    CHECK_EQ(s.failed, 1);
    CHECK_EQ(s.total_input, 35);
    CHECK_EQ(s.total_output, 9);
    CHECK_EQ(s.n_missing_usage, 1);
    CHECK_NEAR(s.request_throughput, 1.5, 1e-12);
    CHECK_NEAR(s.output_throughput, 4.5, 1e-12);
    CHECK_NEAR(s.total_token_throughput, 22.0, 1e-12);
    CHECK_NEAR(s.ttft.mean, (100 + 50 + 1000) / 3.0, 1e-9);
    // TPOT = (latency - ttft) / (tokens - 1), only for requests with more than one token.
    CHECK_EQ(s.tpot.n, 2);
    CHECK_NEAR(s.tpot.mean, (200 + 87.5) / 2, 1e-9);
    CHECK_EQ(s.itl.n, 3);
    CHECK_NEAR(s.itl.mean, (200 + 200 + 100) / 3.0, 1e-9);
    CHECK_NEAR(s.e2el.median, 500, 1e-9);
    // Overlap of r0 [0, 0.5) and r1 [0.25, 0.65) and r3 [0.5, 1.5): at most 2 at once.
    CHECK_EQ(s.peak_concurrent, 2);
    // Token chunks at 0.1, 0.3, 0.5 (r0), 0.3, 0.4 (r1) in second 0; 1.5 (r3) in second 1.
    CHECK_NEAR(s.peak_output_tps, 5, 0);
    CHECK_STR(r[2].error, "HTTP 503: overloaded");
    for (int i = 0; i < 4; i++)
        bench_result_clear(&r[i]);
}

// ---- the result block

static char *print_block(const struct bench_summary *s, const struct bench_run_info *info) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    bench_print_result(f, s, info);
    fclose(f);
    return buf;
}

TEST(bench_result_block_matches_vllm_layout) {
    struct bench_result r[4];
    make_results(r);
    const double pcts[] = {90, 99};
    struct bench_summary s;
    CHECK_OK(bench_summarize(r, 4, 2.0, pcts, 2, &s));
    struct bench_run_info info = {.max_concurrency = 8, .request_rate = INFINITY, .burstiness = 1};
    char *out = print_block(&s, &info);
    // Python's "{:<40} {:<10}" and "{:<40} {:<10.2f}": trailing spaces are part of the format.
    const char *want[] = {
        "============ Serving Benchmark Result ============\n",
        "\nSuccessful requests:                     3         \n",
        "\nFailed requests:                         1         \n",
        "\nMaximum request concurrency:             8         \n",
        "\nBenchmark duration (s):                  2.00      \n",
        "\nTotal input tokens:                      35        \n",
        "\nTotal generated tokens:                  9         \n",
        "\nRequest throughput (req/s):              1.50      \n",
        "\nOutput token throughput (tok/s):         4.50      \n",
        "\nPeak output token throughput (tok/s):    5.00      \n",
        "\nPeak concurrent requests:                2.00      \n",
        "\nTotal Token throughput (tok/s):          22.00     \n",
        "\n---------------Time to First Token----------------\nMean TTFT (ms):",
        "\nP90 TTFT (ms):",
        "\n-----Time per Output Token (excl. 1st token)------\nMean TPOT (ms):                     "
        "     143.75    \n",
        "\n---------------Inter-token Latency----------------\nMean ITL (ms):",
        "\n----------------End-to-end Latency----------------\nMean E2EL (ms):",
        "\nMedian E2EL (ms):                        500.00    \nP90 E2EL (ms):",
        "\nP99 E2EL (ms):",
        "\n==================================================\n",
    };
    const char *at = out;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const char *hit = strstr(at, want[i]);
        CHECK_MSG(hit, "missing (in order) %s\n--- got:\n%s", want[i], out);
        at = hit + 1;
    }
    CHECK(strstr(out, "Request rate configured") == NULL);
    CHECK(strstr(out, "warning: 1 successful requests streamed no usage") != NULL);
    free(out);
    // With a rate and no concurrency limit the lines change as vLLM's do.
    info.max_concurrency = 0;
    info.request_rate = 4;
    out = print_block(&s, &info);
    CHECK(strstr(out, "Maximum request concurrency") == NULL);
    CHECK_MSG(strstr(out, "\nRequest rate configured (RPS):           4.00      \n"), "%s", out);
    free(out);
    for (int i = 0; i < 4; i++)
        bench_result_clear(&r[i]);
}

TEST(bench_header_and_failures) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct bench_run_info info = {.request_rate = INFINITY, .burstiness = 1};
    bench_print_header(f, &info);
    info = (struct bench_run_info){.request_rate = 2.5, .burstiness = 0.5, .max_concurrency = 3};
    bench_print_header(f, &info);
    struct bench_result r[4];
    make_results(r);
    bench_result_set_error(&r[1], "connect: connection refused");
    r[1].success = false;
    bench_print_failures(f, r, 4);
    fclose(f);
    const char *want = "Traffic request rate: inf\nBurstiness factor: 1.0 (Poisson process)\n"
                       "Maximum request concurrency: None\n"
                       "Traffic request rate: 2.5\nBurstiness factor: 0.5 (Gamma distribution)\n"
                       "Maximum request concurrency: 3\n"
                       "Failed requests during benchmark run detected (capping to 10):\n"
                       "Error 0: connect: connection refused (1 request)\n"
                       "Error 1: HTTP 503: overloaded (1 request)\n";
    CHECK_STR(buf, want);
    free(buf);
    for (int i = 0; i < 4; i++)
        bench_result_clear(&r[i]);
}

// ---- server-sent events

struct events {
    char got[8][256];
    int n;
};

static int collect(void *user, const char *data, size_t len) {
    struct events *e = user;
    CHECK(e->n < 8);
    CHECK_EQ(strlen(data), len); // NUL-terminated at len
    snprintf(e->got[e->n++], sizeof(e->got[0]), "%s", data);
    return 0;
}

static const char sse_stream[] = ": ping\n\n"
                                 "data: {\"a\":1}\n\n"
                                 "event: x\r\ndata: {\"b\":\r\ndata:2}\r\n\r\n"
                                 "id: 7\ndata:[DONE]\n\n"
                                 "data: tail-without-blank-line";

static void check_events(const struct events *e) {
    CHECK_EQ(e->n, 4);
    CHECK_STR(e->got[0], "{\"a\":1}");
    CHECK_STR(e->got[1], "{\"b\":\n2}"); // two data lines joined by "\n"
    CHECK_STR(e->got[2], "[DONE]");
    CHECK_STR(e->got[3], "tail-without-blank-line");
}

TEST(bench_sse_events_split_anywhere) {
    size_t n = sizeof(sse_stream) - 1;
    // Every single split point, then byte by byte.
    for (size_t cut = 0; cut <= n; cut++) {
        struct events e = {0};
        struct bench_sse s;
        bench_sse_init(&s);
        CHECK_OK(bench_sse_feed(&s, sse_stream, cut, collect, &e));
        CHECK_OK(bench_sse_feed(&s, sse_stream + cut, n - cut, collect, &e));
        CHECK_MSG(e.n == 3, "split at %zu: %d events before the end, want 3", cut, e.n);
        CHECK_OK(bench_sse_finish(&s, collect, &e));
        check_events(&e);
        bench_sse_free(&s);
    }
    struct events e = {0};
    struct bench_sse s;
    bench_sse_init(&s);
    for (size_t i = 0; i < n; i++)
        CHECK_OK(bench_sse_feed(&s, sse_stream + i, 1, collect, &e));
    CHECK_OK(bench_sse_finish(&s, collect, &e));
    check_events(&e);
    bench_sse_free(&s);
}

static int stop_at_second(void *user, const char *data, size_t len) {
    int *n = user;
    return ++*n == 2 ? ERR_CANCELLED : 0;
}

TEST(bench_sse_callback_stops_feed) {
    struct bench_sse s;
    bench_sse_init(&s);
    int n = 0;
    CHECK_EQ(bench_sse_feed(&s, sse_stream, sizeof(sse_stream) - 1, stop_at_second, &n),
             ERR_CANCELLED);
    CHECK_EQ(n, 2);
    bench_sse_free(&s);
    bench_sse_free(NULL);
}

TEST(bench_chunk_meanings) {
    struct bench_chunk c;
    const char *comp = "{\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":null}]}";
    CHECK_OK(bench_chunk_parse(comp, strlen(comp), BENCH_EP_COMPLETIONS, &c));
    CHECK(c.token && !c.usage && !c.done); // an empty text is still a token (held-back bytes)
    const char *usage =
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}}";
    CHECK_OK(bench_chunk_parse(usage, strlen(usage), BENCH_EP_COMPLETIONS, &c));
    CHECK(!c.token && c.usage);
    CHECK_EQ(c.prompt_tokens, 12);
    CHECK_EQ(c.completion_tokens, 34);
    const char *both = "{\"choices\":[{\"text\":\"x\"}],\"usage\":{\"completion_tokens\":3}}";
    CHECK_OK(bench_chunk_parse(both, strlen(both), BENCH_EP_COMPLETIONS, &c));
    CHECK(c.token && c.usage);
    CHECK_EQ(c.prompt_tokens, -1);
    const char *null_usage = "{\"choices\":[{\"text\":\"x\"}],\"usage\":null}";
    CHECK_OK(bench_chunk_parse(null_usage, strlen(null_usage), BENCH_EP_COMPLETIONS, &c));
    CHECK(c.token && !c.usage);
    CHECK_OK(bench_chunk_parse("[DONE]\r\n", 8, BENCH_EP_COMPLETIONS, &c));
    CHECK(c.done && !c.token);
    const char *role =
        "{\"choices\":[{\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}";
    CHECK_OK(bench_chunk_parse(role, strlen(role), BENCH_EP_CHAT, &c));
    CHECK(!c.token); // announcing the role is not a token
    const char *content = "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}";
    CHECK_OK(bench_chunk_parse(content, strlen(content), BENCH_EP_CHAT, &c));
    CHECK(c.token);
    const char *err = "{\"error\":{\"message\":\"engine died\",\"code\":500}}";
    CHECK_OK(bench_chunk_parse(err, strlen(err), BENCH_EP_CHAT, &c));
    CHECK_STR(c.error, "engine died");
    CHECK(!c.token);
    CHECK_EQ(bench_chunk_parse("{\"choices\":", 11, BENCH_EP_COMPLETIONS, &c), ERR_FORMAT);
    CHECK(strstr(err_msg(), "not a JSON object") != NULL);
    CHECK_EQ(bench_chunk_parse("[1,2]", 5, BENCH_EP_COMPLETIONS, &c), ERR_FORMAT);
}

// ---- the arrival process

static void gap_stats(const double *t, int n, double *mean, double *cv) {
    double sum = 0, sq = 0, prev = 0;
    for (int i = 0; i < n; i++) {
        double g = t[i] - prev;
        prev = t[i];
        sum += g;
        sq += g * g;
    }
    *mean = sum / n;
    *cv = sqrt(sq / n - *mean * *mean) / *mean;
}

TEST(bench_arrivals_poisson_and_gamma) {
    enum { N = 4000 };
    static double t[N], u[N];
    struct bench_rng rng;
    double mean, cv;
    // Burstiness 1: Poisson, gaps exponential (coefficient of variation 1); the schedule is
    // rescaled so the last request goes out at exactly N / rate.
    bench_rng_seed(&rng, 1);
    CHECK_OK(bench_arrivals(&rng, N, 10.0, 1.0, t));
    CHECK_NEAR(t[N - 1], N / 10.0, 1e-9);
    for (int i = 1; i < N; i++)
        CHECK(t[i] >= t[i - 1]);
    gap_stats(t, N, &mean, &cv);
    CHECK_NEAR(mean, 0.1, 1e-9);
    CHECK_NEAR(cv, 1.0, 0.08);
    // Gamma shape k has CV 1/sqrt(k): smoother above 1, burstier below (the shape < 1 path).
    CHECK_OK(bench_arrivals(&rng, N, 10.0, 4.0, t));
    gap_stats(t, N, &mean, &cv);
    CHECK_NEAR(cv, 0.5, 0.05);
    CHECK_OK(bench_arrivals(&rng, N, 10.0, 0.25, t));
    gap_stats(t, N, &mean, &cv);
    CHECK_NEAR(cv, 2.0, 0.25);
    CHECK_OK(bench_arrivals(&rng, N, 5.0, INFINITY, t)); // constant gaps
    CHECK_NEAR(t[0], 0.2, 1e-12);
    CHECK_NEAR(t[N - 1] - t[N - 2], 0.2, 1e-9);
    CHECK_OK(bench_arrivals(&rng, N, INFINITY, 1.0, t)); // all at once
    CHECK_NEAR(t[0], 0, 0);
    CHECK_NEAR(t[N - 1], 0, 0);
    // The same seed gives the same schedule; another seed another one.
    bench_rng_seed(&rng, 42);
    bench_arrivals(&rng, N, 3.0, 1.0, t);
    bench_rng_seed(&rng, 42);
    bench_arrivals(&rng, N, 3.0, 1.0, u);
    CHECK(memcmp(t, u, sizeof(t)) == 0);
    bench_rng_seed(&rng, 43);
    bench_arrivals(&rng, N, 3.0, 1.0, u);
    CHECK(memcmp(t, u, sizeof(t)) != 0);
    CHECK_EQ(bench_arrivals(&rng, 5, 0.0, 1.0, t), ERR_INVAL);
    CHECK_EQ(bench_arrivals(&rng, 5, -1.0, 1.0, t), ERR_INVAL);
    CHECK_EQ(bench_arrivals(&rng, 5, 1.0, 0.0, t), ERR_INVAL);
}

// ---- workloads

TEST(bench_random_dataset) {
    struct bench_rng rng;
    bench_rng_seed(&rng, 7);
    struct bench_random_opts o = {
        .input_len = 100, .output_len = 40, .range_ratio = 0.5, .id_lo = 100, .id_hi = 200};
    struct bench_dataset ds;
    CHECK_OK(bench_dataset_random(&o, &rng, 200, &ds));
    CHECK_EQ(ds.n, 200);
    int min_in = 1 << 30, max_in = 0, min_id = 1 << 30, max_id = 0;
    for (int i = 0; i < ds.n; i++) {
        const struct bench_prompt *p = &ds.items[i];
        CHECK(p->ids && !p->text);
        CHECK_EQ(p->n_ids, p->prompt_len);
        CHECK_MSG(p->output_len >= 20 && p->output_len <= 60, "output_len %d", p->output_len);
        min_in = p->prompt_len < min_in ? p->prompt_len : min_in;
        max_in = p->prompt_len > max_in ? p->prompt_len : max_in;
        for (int j = 0; j < p->n_ids; j++) {
            min_id = p->ids[j] < min_id ? p->ids[j] : min_id;
            max_id = p->ids[j] > max_id ? p->ids[j] : max_id;
        }
    }
    CHECK_MSG(min_in >= 50 && max_in <= 150 && max_in - min_in > 50, "lengths %d..%d", min_in,
              max_in);
    CHECK_MSG(min_id == 100 && max_id == 199, "ids %d..%d", min_id, max_id);
    bench_dataset_free(&ds);
    o.text = true;
    o.range_ratio = 0;
    CHECK_OK(bench_dataset_random(&o, &rng, 3, &ds));
    int words = 1;
    for (const char *c = ds.items[2].text; *c; c++)
        words += *c == ' ';
    CHECK_EQ(words, 100);
    CHECK_EQ(ds.items[2].output_len, 40);
    bench_dataset_free(&ds);
    bench_dataset_free(NULL);
    o.input_len = 0;
    CHECK_EQ(bench_dataset_random(&o, &rng, 3, &ds), ERR_INVAL);
    o.input_len = 10;
    o.range_ratio = 1.0;
    CHECK_EQ(bench_dataset_random(&o, &rng, 3, &ds), ERR_INVAL);
    o.range_ratio = 0;
    CHECK_EQ(bench_dataset_random(&o, &rng, 0, &ds), ERR_INVAL);
}

TEST(bench_dataset_jsonl_and_sharegpt) {
    struct bench_rng rng;
    bench_rng_seed(&rng, 3);
    struct bench_dataset ds;
    const char *jsonl = "{\"prompt\": \"one two three four\", \"output_len\": 7}\n"
                        "\n"
                        "{\"prompt\": \"alpha\", \"max_tokens\": 9}\r\n";
    CHECK_OK(bench_dataset_parse(jsonl, strlen(jsonl), "t.jsonl", 5, 0, &rng, &ds));
    CHECK_EQ(ds.n, 5); // two prompts, repeated to fill five
    int n7 = 0, n9 = 0;
    for (int i = 0; i < 5; i++) {
        n7 += ds.items[i].output_len == 7 && !strcmp(ds.items[i].text, "one two three four");
        n9 += ds.items[i].output_len == 9 && !strcmp(ds.items[i].text, "alpha");
    }
    CHECK_EQ(n7 + n9, 5);
    CHECK(n7 >= 2 && n9 >= 2);
    bench_dataset_free(&ds);
    CHECK_OK(bench_dataset_parse(jsonl, strlen(jsonl), "t.jsonl", 2, 50, &rng, &ds));
    CHECK_EQ(ds.items[0].output_len, 50); // --output-len wins
    bench_dataset_free(&ds);

    const char *sharegpt =
        "[{\"id\": \"a\", \"conversations\": [{\"from\": \"human\", \"value\": \"hello there\"},"
        "  {\"from\": \"gpt\", \"value\": \"0123456789abcdef0123\"}]},"
        " {\"id\": \"b\", \"conversations\": [{\"from\": \"human\", \"value\": \"no reply\"}]},"
        " {\"id\": \"c\", \"messages\": [{\"role\": \"system\", \"content\": \"sys\"},"
        "  {\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": "
        "\"yo\"}]}]";
    CHECK_OK(bench_dataset_parse(sharegpt, strlen(sharegpt), "sg.json", 2, 0, &rng, &ds));
    CHECK_EQ(ds.n, 2);
    for (int i = 0; i < 2; i++) {
        const struct bench_prompt *p = &ds.items[i];
        if (!strcmp(p->text, "hello there"))
            CHECK_EQ(p->output_len, 20 / 4 + 1);
        else
            CHECK_MSG(!strcmp(p->text, "hi") && p->output_len == 1, "%s %d", p->text,
                      p->output_len);
    }
    bench_dataset_free(&ds);

    const char *bad = "{\"prompt\": \"ok\", \"output_len\": 3}\n{\"prompt\": \n";
    CHECK_EQ(bench_dataset_parse(bad, strlen(bad), "bad.jsonl", 2, 0, &rng, &ds), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "bad.jsonl:2") != NULL, "message: %s", err_msg());
    const char *no_len = "{\"prompt\": \"ok\"}\n";
    CHECK_EQ(bench_dataset_parse(no_len, strlen(no_len), "n.jsonl", 2, 0, &rng, &ds), ERR_FORMAT);
    CHECK(strstr(err_msg(), "--output-len") != NULL);
    const char *wrong = "{\"text\": \"x\"}\n";
    CHECK_EQ(bench_dataset_parse(wrong, strlen(wrong), "w.jsonl", 2, 5, &rng, &ds), ERR_FORMAT);
    const char *none = "[{\"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}]}]";
    CHECK_EQ(bench_dataset_parse(none, strlen(none), "e.json", 2, 0, &rng, &ds), ERR_FORMAT);
    CHECK(strstr(err_msg(), "no usable prompts") != NULL);
    CHECK_EQ(bench_dataset_load("tests/data/bench/does-not-exist.jsonl", 2, 0, &rng, &ds),
             ERR_NOT_FOUND);
}

TEST(bench_request_bodies) {
    int32_t ids[] = {11, 22, 33};
    struct bench_prompt p = {.ids = ids, .n_ids = 3, .prompt_len = 3, .output_len = 16};
    struct bench_body_opts o = {.endpoint = BENCH_EP_COMPLETIONS, .model = "m", .ignore_eos = true};
    char *s = bench_body_build(&o, &p);
    CHECK(s != NULL);
    cJSON *j = cJSON_Parse(s);
    CHECK_STR(cJSON_GetObjectItem(j, "model")->valuestring, "m");
    cJSON *pr = cJSON_GetObjectItem(j, "prompt");
    CHECK_EQ(cJSON_GetArraySize(pr), 3);
    CHECK_EQ(cJSON_GetArrayItem(pr, 2)->valueint, 33);
    CHECK_EQ(cJSON_GetObjectItem(j, "max_tokens")->valueint, 16);
    CHECK_EQ(cJSON_GetObjectItem(j, "min_tokens")->valueint, 16);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "ignore_eos")));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    CHECK(cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "stream_options"), "include_usage")));
    cJSON_Delete(j);
    free(s);
    o.endpoint = BENCH_EP_CHAT;
    o.ignore_eos = false;
    CHECK(bench_body_build(&o, &p) == NULL); // chat takes text, not ids
    p = (struct bench_prompt){.text = "say \"hi\"", .prompt_len = 2, .output_len = 4};
    s = bench_body_build(&o, &p);
    j = cJSON_Parse(s);
    cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "messages"), 0);
    CHECK_STR(cJSON_GetObjectItem(m, "role")->valuestring, "user");
    CHECK_STR(cJSON_GetObjectItem(m, "content")->valuestring, "say \"hi\"");
    CHECK(cJSON_GetObjectItem(j, "ignore_eos") == NULL);
    CHECK(cJSON_GetObjectItem(j, "min_tokens") == NULL);
    cJSON_Delete(j);
    free(s);
}

TEST(bench_base_urls) {
    struct bench_target t;
    CHECK_OK(bench_target_parse("http://localhost:8000", "/v1/completions", &t));
    CHECK_STR(t.host, "localhost");
    CHECK_EQ(t.port, 8000);
    CHECK_STR(t.path, "/v1/completions");
    CHECK_STR(t.host_hdr, "localhost:8000");
    CHECK_OK(bench_target_parse("http://10.0.0.2:9/v1/", "/v1/chat/completions", &t));
    CHECK_STR(t.path, "/v1/chat/completions"); // an OpenAI-style base is not doubled
    CHECK_OK(bench_target_parse("http://[::1]:8080/prefix/", "/v1/completions", &t));
    CHECK_STR(t.host, "::1");
    CHECK_STR(t.path, "/prefix/v1/completions");
    CHECK_STR(t.host_hdr, "[::1]:8080");
    CHECK_OK(bench_target_parse("http://example.com", "/v1/completions", &t));
    CHECK_EQ(t.port, 80);
    CHECK_EQ(bench_target_parse("https://example.com", "/v1/completions", &t), ERR_INVAL);
    CHECK(strstr(err_msg(), "https") != NULL);
    CHECK_EQ(bench_target_parse("example.com:80", "/v1/completions", &t), ERR_INVAL);
    CHECK_EQ(bench_target_parse("http://h:99999", "/v1/completions", &t), ERR_INVAL);
    CHECK_EQ(bench_target_parse("http://h:80x", "/v1/completions", &t), ERR_INVAL);
    CHECK_EQ(bench_target_parse("http://:80", "/v1/completions", &t), ERR_INVAL);
    CHECK_EQ(bench_target_parse("http://[::1:80", "/v1/completions", &t), ERR_INVAL);
}

// ---- outputs

static void make_sweep(struct bench_sweep_point pts[3]) {
    memset(pts, 0, 3 * sizeof(*pts));
    for (int k = 0; k < 3; k++) {
        pts[k].concurrency = 1 << (2 * k);
        struct bench_summary *s = &pts[k].s;
        s->completed = 10 + k;
        s->duration_s = 2.0;
        s->output_throughput = 100.0 * (k + 1);
        s->n_pcts = 2;
        s->pcts[0] = 90, s->pcts[1] = 99;
        s->tpot.median = 20.0 + 10 * k;
        s->ttft.median = 100.0 * (k + 1);
        s->ttft.pct[0] = 123.5 + k;
    }
}

TEST(bench_sweep_csv_and_svg) {
    struct bench_sweep_point pts[3];
    make_sweep(pts);
    char path[] = "/tmp/keel-bench-test-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_OK(bench_sweep_write_csv(path, pts, 3));
    FILE *f = fopen(path, "r");
    char line[2048];
    int rows = 0;
    CHECK(fgets(line, sizeof(line), f) != NULL);
    CHECK(strncmp(line, "max_concurrency,completed,failed,duration_s,", 44) == 0);
    CHECK(strstr(line, ",mean_ttft_ms,median_ttft_ms,p90_ttft_ms,p99_ttft_ms,") != NULL);
    while (fgets(line, sizeof(line), f)) {
        int conc, completed;
        CHECK_EQ(sscanf(line, "%d,%d,", &conc, &completed), 2);
        CHECK_EQ(conc, 1 << (2 * rows));
        CHECK_EQ(completed, 10 + rows);
        CHECK(strstr(line, rows == 2 ? ",300.0000," : ",") != NULL);
        rows++;
    }
    fclose(f);
    unlink(path);
    CHECK_EQ(rows, 3);
    char *svg = bench_sweep_svg(pts, 3, "a <b> & c");
    CHECK(svg && strncmp(svg, "<?xml", 5) == 0);
    CHECK(strstr(svg, "a &lt;b&gt; &amp; c") != NULL);
    int circles = 0;
    for (const char *p = svg; (p = strstr(p, "<circle")); p++)
        circles++;
    CHECK_EQ(circles, 6); // three points in each of the two panels
    CHECK(strstr(svg, ">c=16<") != NULL);
    CHECK(strstr(svg, "Median TPOT (ms)") && strstr(svg, "Median TTFT (ms)"));
    CHECK(strstr(svg, "</svg>") != NULL);
    free(svg);
    CHECK_EQ(bench_sweep_write_csv("/nonexistent-dir/x.csv", pts, 3), ERR_IO);
    CHECK_EQ(bench_sweep_write_svg("/nonexistent-dir/x.svg", pts, 3, NULL), ERR_IO);
}

TEST(bench_sweep_axis_maxima) {
    CHECK_NEAR(nice_ceil(10445), 15000, 1e-9);
    CHECK_NEAR(nice_ceil(5.5), 6, 1e-12);
    CHECK_NEAR(nice_ceil(21.9), 25, 1e-12);
    CHECK_NEAR(nice_ceil(100), 100, 1e-9);
    CHECK_NEAR(nice_ceil(8.1), 10, 1e-12);
    CHECK_NEAR(nice_ceil(0.042), 0.05, 1e-12);
    CHECK_NEAR(nice_ceil(0), 1, 0); // an empty sweep still gets an axis
    CHECK_NEAR(nice_ceil(NAN), 1, 0);
}

TEST(bench_json_result) {
    struct bench_result r[4];
    make_results(r);
    const double pcts[] = {90, 99};
    struct bench_summary s;
    CHECK_OK(bench_summarize(r, 4, 2.0, pcts, 2, &s));
    struct bench_run_info info = {
        .model = "m", .request_rate = INFINITY, .burstiness = 1, .num_prompts = 4};
    cJSON *j = bench_result_json(&s, &info, r, 4);
    CHECK(j != NULL);
    CHECK_EQ(cJSON_GetObjectItem(j, "completed")->valueint, 3);
    CHECK_EQ(cJSON_GetObjectItem(j, "failed")->valueint, 1);
    CHECK_STR(cJSON_GetObjectItem(j, "request_rate")->valuestring, "inf");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "max_concurrency")));
    CHECK_NEAR(cJSON_GetObjectItem(j, "mean_tpot_ms")->valuedouble, 143.75, 1e-9);
    CHECK(cJSON_GetObjectItem(j, "p99_itl_ms") != NULL);
    CHECK(cJSON_GetObjectItem(j, "std_e2el_ms") != NULL);
    cJSON *itls = cJSON_GetObjectItem(j, "itls");
    CHECK_EQ(cJSON_GetArraySize(itls), 4);
    CHECK_EQ(cJSON_GetArraySize(cJSON_GetArrayItem(itls, 0)), 2);
    CHECK_EQ(cJSON_GetArraySize(cJSON_GetArrayItem(itls, 2)), 0); // failed: an empty list
    CHECK_STR(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "errors"), 2)->valuestring,
              "HTTP 503: overloaded");
    CHECK_EQ(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "output_lens"), 2)->valueint, 0);
    char path[] = "/tmp/keel-bench-json-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_OK(bench_write_json(path, j));
    FILE *f = fopen(path, "r");
    char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    cJSON *back = cJSON_Parse(buf);
    CHECK(back != NULL);
    CHECK_EQ(cJSON_GetObjectItem(back, "completed")->valueint, 3);
    cJSON_Delete(back);
    CHECK_EQ(bench_write_json("/nonexistent-dir/x.json", j), ERR_IO);
    cJSON_Delete(j);
    for (int i = 0; i < 4; i++)
        bench_result_clear(&r[i]);
}

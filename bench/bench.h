// keel-bench: the load generator. It sends a workload of streamed completions to any
// OpenAI-compatible server, times every server-sent event with uv_hrtime, and prints the same
// result block as vLLM's `vllm bench serve` so the two can be compared line by line.
//
// Files: dataset.c (prompts, the seeded RNG, the arrival process), sse.c (the server-sent-event
// line parser and the meaning of one streamed chunk), stats.c (metrics, the result block, JSON),
// client.c (one libuv loop, keep-alive connections, llhttp), sweep.c (CSV and SVG),
// main.c (options and the order of the phases).
//
// The pure parts (dataset, sse, stats, sweep) depend only on libc, cJSON and common/, so the unit
// tests compile them in directly (tests/unit/test_bench.c).
#ifndef KEEL_BENCH_BENCH_H
#define KEEL_BENCH_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ---- the seeded random generator (xoshiro256**, seeded through splitmix64)

struct bench_rng {
    uint64_t s[4];
};
void bench_rng_seed(struct bench_rng *rng, uint64_t seed);
uint64_t bench_rng_next(struct bench_rng *rng);
double bench_rng_uniform(struct bench_rng *rng);            // [0, 1)
int bench_rng_range(struct bench_rng *rng, int lo, int hi); // [lo, hi], inclusive
double bench_rng_gamma(struct bench_rng *rng, double shape, double scale);

// ---- the arrival process

// Fills out_s[0..n) with the send time of each request, in seconds after the start, following
// vLLM: the gaps are gamma(shape = burstiness, scale = 1 / (rate * burstiness)) (exponential,
// i.e. Poisson arrivals, at burstiness 1), accumulated and then rescaled so the last request is
// sent at exactly n / rate. rate = INFINITY sends everything at 0. Returns 0 or ERR_INVAL.
int bench_arrivals(struct bench_rng *rng, int n, double rate, double burstiness, double *out_s);

// ---- workloads

enum bench_endpoint { BENCH_EP_COMPLETIONS = 0, BENCH_EP_CHAT = 1 };

// One prompt. Exactly one of `ids` and `text` is set. `prompt_len` is the expected number of
// input tokens (exact for ids, an estimate for text); the reported totals come from the server's
// usage instead.
struct bench_prompt {
    int32_t *ids; // [n_ids] token ids, owned
    int n_ids;
    char *text; // UTF-8, owned
    int prompt_len;
    int output_len; // max_tokens to ask for
};

struct bench_dataset {
    struct bench_prompt *items; // [n], owned
    int n;
};

struct bench_random_opts {
    int input_len;      // mean input tokens (> 0)
    int output_len;     // mean output tokens (> 0)
    double range_ratio; // lengths are uniform in [len * (1 - r), len * (1 + r)], 0 <= r < 1
    bool text;          // prompts as words instead of token ids
    int id_lo, id_hi;   // token ids are drawn from [id_lo, id_hi)
};

// n random prompts (token ids or words). Returns 0, ERR_INVAL (bad options) or ERR_NOMEM.
int bench_dataset_random(const struct bench_random_opts *o, struct bench_rng *rng, int n,
                         struct bench_dataset *out);

// Parses a prompt file held in memory: JSON Lines of {"prompt": "..."} (optional "output_len"
// or "max_tokens"), or ShareGPT conversations ({"conversations": [{"from": "human", "value":
// ...}, {"from": "gpt", "value": ...}]}, as one JSON array or one per line; "messages" with
// role/content works too). The prompt is the first user turn; the output length is
// `output_len` when > 0, else the line's own length, else the reply's length in bytes / 4.
// The prompts are shuffled with `rng` and repeated until there are n. `what` names the source
// in error messages. Returns 0, ERR_FORMAT (with the line number) or ERR_NOMEM.
int bench_dataset_parse(const char *text, size_t len, const char *what, int n, int output_len,
                        struct bench_rng *rng, struct bench_dataset *out);
// Reads the file, then bench_dataset_parse(). Adds ERR_IO and ERR_NOT_FOUND.
int bench_dataset_load(const char *path, int n, int output_len, struct bench_rng *rng,
                       struct bench_dataset *out);
void bench_dataset_free(struct bench_dataset *ds);

// ---- request bodies

struct bench_body_opts {
    enum bench_endpoint endpoint;
    const char *model;
    bool ignore_eos; // sends "ignore_eos": true and "min_tokens" = max_tokens (vLLM style)
};
// The JSON body for one prompt, always streamed with usage in the final chunk. Caller frees.
// Chat sends the prompt as one user message (token ids are rejected: chat takes text).
char *bench_body_build(const struct bench_body_opts *o, const struct bench_prompt *p);

// ---- server-sent events

// Incremental SSE parser: bytes in any pieces, one callback per complete event (the joined
// data lines, NUL-terminated). A non-zero return from the callback stops the feed and is
// returned. Comments (":...") and fields other than data are ignored.
typedef int (*bench_sse_cb)(void *user, const char *data, size_t len);
struct bench_sse {
    char *line; // the unfinished line
    size_t line_len, line_cap;
    char *data; // the data of the unfinished event
    size_t data_len, data_cap;
    bool has_data;
};
void bench_sse_init(struct bench_sse *s);
int bench_sse_feed(struct bench_sse *s, const char *p, size_t n, bench_sse_cb cb, void *user);
// The end of the stream: dispatches an event left without its blank line.
int bench_sse_finish(struct bench_sse *s, bench_sse_cb cb, void *user);
void bench_sse_free(struct bench_sse *s);

// What one streamed chunk says.
struct bench_chunk {
    bool done;             // "[DONE]"
    bool token;            // carries a generated token (a choice with text or content)
    bool usage;            // carries usage
    int prompt_tokens;     // from usage
    int completion_tokens; // from usage
    char error[256];       // an {"error": ...} chunk's message, else ""
};
// Parses one event's data. Returns 0, or ERR_FORMAT when it is not JSON (message set).
int bench_chunk_parse(const char *data, size_t len, enum bench_endpoint ep,
                      struct bench_chunk *out);

// ---- per-request results

struct bench_result {
    bool success;
    char *error;       // why it failed, owned; NULL on success
    int prompt_len;    // from usage when the server sent it, else the expected length
    int output_tokens; // from usage when the server sent it, else the token chunks
    bool has_usage;
    double start_s;   // sent, seconds after the run started
    double ttft_s;    // first token chunk - start
    double latency_s; // last token chunk - start (vLLM's E2EL)
    double *itl_s;    // [n_itl] gaps between token chunks, owned
    int n_itl, cap_itl;
};
int bench_result_add_itl(struct bench_result *r, double itl_s);
void bench_result_set_error(struct bench_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void bench_result_clear(struct bench_result *r);

// ---- statistics

#define BENCH_MAX_PCT 8

// numpy.percentile with linear interpolation on an ascending array; 0 when n == 0.
double bench_percentile(const double *sorted, int n, double p);

struct bench_metric {
    int n;
    double mean, median, std;  // milliseconds
    double pct[BENCH_MAX_PCT]; // at bench_summary.pcts
};
// Sorts values (seconds) in place and fills m in milliseconds (all 0 when n == 0, as vLLM).
void bench_metric_compute(double *values, int n, const double *pcts, int n_pcts,
                          struct bench_metric *m);

struct bench_summary {
    int completed, failed;
    long long total_input, total_output;
    double duration_s;
    double request_throughput, output_throughput, total_token_throughput; // per second
    double peak_output_tps; // most token chunks in one whole second of the run (vLLM)
    int peak_concurrent;    // most requests in flight at once
    int n_missing_usage;    // successful requests whose server sent no usage
    int n_pcts;
    double pcts[BENCH_MAX_PCT];
    struct bench_metric ttft, tpot, itl, e2el;
};
// Computes every figure from the results of one run. Returns 0 or ERR_NOMEM.
int bench_summarize(const struct bench_result *res, int n, double duration_s, const double *pcts,
                    int n_pcts, struct bench_summary *out);

// What the run was asked to do, for the header lines and the JSON file.
struct bench_run_info {
    const char *base_url, *endpoint_path, *model, *dataset;
    int num_prompts;
    int max_concurrency; // 0 = unlimited
    double request_rate; // INFINITY = all at once
    double burstiness;
    uint64_t seed;
    bool ignore_eos;
};

// The lines vLLM prints before its block ("Traffic request rate: ...").
void bench_print_header(FILE *f, const struct bench_run_info *info);
// Failed requests, grouped by reason, as vLLM's "Error i: ..." lines (at most 10 reasons).
void bench_print_failures(FILE *f, const struct bench_result *res, int n);
// The result block, label for label as `vllm bench serve`.
void bench_print_result(FILE *f, const struct bench_summary *s, const struct bench_run_info *info);

// Every figure plus per-request arrays (vLLM's result-file keys) as a cJSON object (a cJSON *,
// returned as void * so this header needs no cJSON). Caller deletes with cJSON_Delete.
void *bench_result_json(const struct bench_summary *s, const struct bench_run_info *info,
                        const struct bench_result *res, int n);
// Writes a cJSON value to a file, pretty-printed. Returns 0 or ERR_IO.
int bench_write_json(const char *path, const void *json);

// ---- sweeps

struct bench_sweep_point {
    int concurrency;
    struct bench_summary s;
};
// The CSV: one row per concurrency. Returns 0 or ERR_IO.
int bench_sweep_write_csv(const char *path, const struct bench_sweep_point *pts, int n);
// The SVG: output token throughput against latency (median TPOT and median TTFT), one point
// per concurrency. Returns 0 or ERR_IO.
int bench_sweep_write_svg(const char *path, const struct bench_sweep_point *pts, int n,
                          const char *title);
// The SVG as a string (tests); caller frees. NULL on allocation failure.
char *bench_sweep_svg(const struct bench_sweep_point *pts, int n, const char *title);

// ---- the client (client.c)

struct bench_target {
    char host[256];
    int port;
    char path[512];      // the request path, e.g. "/v1/completions"
    char host_hdr[300];  // "host:port"
    const char *api_key; // NULL = no Authorization header
};
// Parses "http://host[:port][/prefix]" and appends the endpoint path. Returns 0 or ERR_INVAL
// (https and other schemes are refused with a message).
int bench_target_parse(const char *base_url, const char *endpoint_path, struct bench_target *t);

struct bench_client_opts {
    const struct bench_target *target;
    enum bench_endpoint endpoint;
    int max_concurrency; // 0 = unlimited
    double timeout_s;    // per request; 0 = none
    bool progress;       // draw a progress bar on stderr
    const char *label;   // the progress bar's label
};

// Sends bodies[i] at arrival_s[i] (seconds after the start) and fills results[i]. prompt_lens
// gives each result's expected input length until the server's usage replaces it. Blocks
// until every request has finished. *duration_s is the wall time of the whole run. Returns 0;
// ERR_CANCELLED when SIGINT cut the run short (results and duration are still filled: the
// unfinished requests failed as interrupted); or another ERR_* when the run could not happen
// at all (address resolution, loop).
int bench_client_run(const struct bench_client_opts *o, char *const *bodies, const int *prompt_lens,
                     const double *arrival_s, int n, struct bench_result *results,
                     double *duration_s);

// GETs base path + "/v1/models" and returns the first model id (caller frees). Returns 0,
// ERR_IO (no connection, timeout) or ERR_FORMAT (not the expected JSON).
int bench_first_model(const struct bench_target *t, char **out_id);

#endif

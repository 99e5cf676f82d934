// Prometheus text format for keel's counters, gauges and histograms.
#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

// Bucket bounds as vLLM uses them for the same metrics (seconds and token counts).
static const double met__ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
                                          0.5,   0.75,  1.0,  2.5,  5.0,  7.5,  10.0, 20.0, 40.0,
                                          80.0,  160.0, 640.0, 2560.0};
static const double met__itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                                         0.5,  0.75,  1.0,  2.5,   5.0, 7.5,  10.0, 20.0, 40.0, 80.0};
static const double met__e2e_bounds[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,
                                         10.0, 15.0, 20.0, 30.0, 40.0,  50.0,  60.0,  120.0,
                                         240.0, 480.0, 960.0, 1920.0, 7680.0};
static const double met__len_bounds[] = {1,    2,    5,     10,    20,    50,    100,   200,
                                         500,  1000, 2000,  5000,  10000, 20000, 50000, 100000};

static void met__hist_init(struct srv_histogram *h, const double *bounds, int n) {
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n < SRV_HIST_MAX_BUCKETS ? n : SRV_HIST_MAX_BUCKETS;
}

#define MET__N(a) ((int)(sizeof(a) / sizeof((a)[0])))

void srv_metrics_init(struct srv_metrics *m) {
    memset(m, 0, sizeof *m);
    met__hist_init(&m->ttft, met__ttft_bounds, MET__N(met__ttft_bounds));
    met__hist_init(&m->itl, met__itl_bounds, MET__N(met__itl_bounds));
    met__hist_init(&m->e2e, met__e2e_bounds, MET__N(met__e2e_bounds));
    met__hist_init(&m->prompt_len, met__len_bounds, MET__N(met__len_bounds));
    met__hist_init(&m->generation_len, met__len_bounds, MET__N(met__len_bounds));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    m->start_time = (double)tv.tv_sec + tv.tv_usec / 1e6;
}

void srv_histogram_observe(struct srv_histogram *h, double v) {
    if (v != v) return; // NaN would poison the sum forever
    for (int i = 0; i < h->n_bounds; i++)
        if (v <= h->bounds[i]) h->counts[i]++;
    h->count++;
    h->sum += v;
}

void srv_metrics_count_response(struct srv_metrics *m, int status) {
    int cls = status / 100;
    if (cls >= 1 && cls <= 5) m->http_responses[cls]++;
}

// ---- rendering into a growing buffer

struct met__buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void met__printf(struct met__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void met__printf(struct met__buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void met__head(struct met__buf *b, const char *name, const char *type, const char *help) {
    met__printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void met__gauge(struct met__buf *b, const char *name, const char *help, const char *labels,
                       double v) {
    met__head(b, name, "gauge", help);
    met__printf(b, "%s{%s} %.17g\n", name, labels, v);
}

static void met__counter(struct met__buf *b, const char *name, const char *help,
                         const char *labels, double v) {
    met__head(b, name, "counter", help);
    met__printf(b, "%s{%s} %.17g\n", name, labels, v);
}

static void met__hist(struct met__buf *b, const char *name, const char *help, const char *labels,
                      const struct srv_histogram *h) {
    met__head(b, name, "histogram", help);
    for (int i = 0; i < h->n_bounds; i++)
        met__printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, h->bounds[i],
                    (unsigned long long)h->counts[i]);
    met__printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)h->count);
    met__printf(b, "%s_sum{%s} %.17g\n", name, labels, h->sum);
    met__printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

// Escapes a label value as the exposition format requires (backslash, quote, newline).
static void met__escape(char *out, size_t cap, const char *in) {
    size_t n = 0;
    for (; *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') out[n++] = '\\', out[n++] = *in;
        else if (*in == '\n') out[n++] = '\\', out[n++] = 'n';
        else out[n++] = *in;
    }
    out[n] = '\0';
}

char *srv_metrics_render(const struct srv_metrics *m, const struct srv_engine_stats *stats,
                         const char *model_name, size_t *len) {
    struct srv_engine_stats zero;
    if (!stats) {
        memset(&zero, 0, sizeof zero);
        stats = &zero;
    }
    char esc[512], lab[600];
    met__escape(esc, sizeof esc, model_name ? model_name : "");
    snprintf(lab, sizeof lab, "model_name=\"%s\"", esc);
    struct met__buf b = {.p = malloc(16384), .cap = 16384};
    if (!b.p) return NULL;

    met__gauge(&b, "keel_num_requests_running", "Number of requests in model execution batches.",
               lab, stats->n_running);
    met__gauge(&b, "keel_num_requests_waiting", "Number of requests waiting to be processed.", lab,
               stats->n_waiting);
    met__gauge(&b, "keel_kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab,
               stats->kv.usage);
    met__gauge(&b, "keel_kv_cache_num_blocks", "KV-cache blocks in the pool.", lab,
               stats->kv.n_blocks);
    met__gauge(&b, "keel_kv_cache_blocks_free", "KV-cache blocks free now.", lab,
               stats->kv.n_free);
    met__gauge(&b, "keel_engine_dead", "1 once a sticky fault stopped the engine.", lab,
               stats->dead ? 1 : 0);
    met__counter(&b, "keel_num_preemptions_total", "Cumulative number of preemptions.", lab,
                 (double)stats->n_preemptions);
    met__counter(&b, "keel_engine_steps_total", "Cumulative number of engine steps.", lab,
                 (double)stats->n_steps);
    met__counter(&b, "keel_prompt_tokens_total", "Number of prefill tokens processed.", lab,
                 (double)stats->prompt_tokens_total);
    met__counter(&b, "keel_generation_tokens_total", "Number of generation tokens processed.",
                 lab, (double)stats->generation_tokens_total);

    // One series per finish reason, as vLLM's request_success_total.
    static const char *reasons[] = {NULL, "stop", "length", "abort", "error"};
    met__head(&b, "keel_request_success_total", "counter",
              "Count of finished requests by finish reason.");
    for (int i = 1; i < 5; i++)
        met__printf(&b, "keel_request_success_total{%s,finished_reason=\"%s\"} %llu\n", lab,
                    reasons[i], (unsigned long long)m->request_success[i]);

    met__hist(&b, "keel_time_to_first_token_seconds", "Histogram of time to first token in seconds.",
              lab, &m->ttft);
    met__hist(&b, "keel_inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
              lab, &m->itl);
    met__hist(&b, "keel_e2e_request_latency_seconds",
              "Histogram of end to end request latency in seconds.", lab, &m->e2e);
    met__hist(&b, "keel_request_prompt_tokens", "Number of prefill tokens per finished request.",
              lab, &m->prompt_len);
    met__hist(&b, "keel_request_generation_tokens",
              "Number of generation tokens per finished request.", lab, &m->generation_len);

    met__head(&b, "keel_http_responses_total", "counter", "HTTP responses sent, by status class.");
    for (int i = 1; i <= 5; i++)
        met__printf(&b, "keel_http_responses_total{code=\"%dxx\"} %llu\n", i,
                    (unsigned long long)m->http_responses[i]);
    met__head(&b, "keel_http_connections", "gauge", "Open HTTP connections.");
    met__printf(&b, "keel_http_connections %llu\n", (unsigned long long)m->n_open_connections);
    met__head(&b, "keel_process_start_time_seconds", "gauge",
              "Start time of the process since the Unix epoch in seconds.");
    met__printf(&b, "keel_process_start_time_seconds %.3f\n", m->start_time);

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

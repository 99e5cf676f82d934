// The figures of one run, computed the way vLLM's benchmark computes them (numpy's linear
// percentiles, TPOT excluding the first token, ITL per token chunk, peak figures over whole
// seconds), the result block with vLLM's labels and layout, and the JSON result file.
#include "bench/bench.h"

#include "common/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- percentiles and one metric

double bench_percentile(const double *sorted, int n, double p) {
    if (n <= 0) return 0;
    if (p <= 0) return sorted[0];
    if (p >= 100) return sorted[n - 1];
    double pos = (n - 1) * p / 100.0;
    int lo = (int)floor(pos);
    int hi = lo + 1 < n ? lo + 1 : lo;
    double frac = pos - lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_metric_compute(double *values, int n, const double *pcts, int n_pcts,
                          struct bench_metric *m) {
    memset(m, 0, sizeof(*m));
    m->n = n;
    if (n <= 0) return;
    qsort(values, (size_t)n, sizeof(*values), cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += values[i];
    double mean = sum / n, var = 0;
    for (int i = 0; i < n; i++)
        var += (values[i] - mean) * (values[i] - mean);
    m->mean = mean * 1000;
    m->std = sqrt(var / n) * 1000; // population deviation, as numpy.std
    m->median = bench_percentile(values, n, 50) * 1000;
    for (int i = 0; i < n_pcts && i < BENCH_MAX_PCT; i++)
        m->pct[i] = bench_percentile(values, n, pcts[i]) * 1000;
}

// ---- the summary of a run

// vLLM's peak output rate: token chunk times counted in whole-second buckets from the first
// successful request's start.
static double peak_tokens_per_s(const struct bench_result *res, int n, double t0, double t1) {
    int n_buckets = (int)ceil(t1 - t0) + 1;
    double *bucket = calloc((size_t)n_buckets, sizeof(*bucket)), best = 0;
    if (!bucket) return 0;
    for (int i = 0; i < n; i++) {
        const struct bench_result *r = &res[i];
        if (!r->success) continue;
        double t = r->start_s + r->ttft_s;
        for (int k = -1; k < r->n_itl; k++) {
            if (k >= 0) t += r->itl_s[k];
            int b = (int)(t - t0);
            if (b >= 0 && b < n_buckets) bucket[b] += 1;
        }
    }
    for (int b = 0; b < n_buckets; b++)
        best = bucket[b] > best ? bucket[b] : best;
    free(bucket);
    return best;
}

struct conc_event {
    double t;
    int delta;
};

static int cmp_event(const void *a, const void *b) {
    const struct conc_event *x = a, *y = b;
    if (x->t != y->t) return (x->t > y->t) - (x->t < y->t);
    return x->delta - y->delta; // a departure before an arrival at the same instant
}

// The most successful requests in flight at once, over half-open [start, start + latency).
static int peak_concurrency(const struct bench_result *res, int n) {
    struct conc_event *ev = malloc((size_t)(2 * n + 1) * sizeof(*ev));
    if (!ev) return 0;
    int k = 0, cur = 0, best = 0;
    for (int i = 0; i < n; i++) {
        if (!res[i].success) continue;
        ev[k++] = (struct conc_event){res[i].start_s, +1};
        ev[k++] = (struct conc_event){res[i].start_s + res[i].latency_s, -1};
    }
    qsort(ev, (size_t)k, sizeof(*ev), cmp_event);
    for (int i = 0; i < k; i++) {
        cur += ev[i].delta;
        best = cur > best ? cur : best;
    }
    free(ev);
    return best;
}

int bench_summarize(const struct bench_result *res, int n, double duration_s, const double *pcts,
                    int n_pcts, struct bench_summary *out) {
    memset(out, 0, sizeof(*out));
    out->n_pcts = n_pcts < BENCH_MAX_PCT ? n_pcts : BENCH_MAX_PCT;
    memcpy(out->pcts, pcts, (size_t)out->n_pcts * sizeof(*pcts));
    out->duration_s = duration_s;
    long long n_itl = 0;
    for (int i = 0; i < n; i++)
        n_itl += res[i].success ? res[i].n_itl : 0;
    double *ttft = malloc((size_t)(n + 1) * sizeof(double));
    double *tpot = malloc((size_t)(n + 1) * sizeof(double));
    double *e2el = malloc((size_t)(n + 1) * sizeof(double));
    double *itl = malloc((size_t)(n_itl + 1) * sizeof(double));
    if (!ttft || !tpot || !e2el || !itl) {
        free(ttft), free(tpot), free(e2el), free(itl);
        return err_set(ERR_NOMEM, "out of memory summarizing %d requests", n);
    }
    int n_tpot = 0;
    long long k_itl = 0;
    double t0 = INFINITY, t1 = -INFINITY;
    for (int i = 0; i < n; i++) {
        const struct bench_result *r = &res[i];
        if (!r->success) {
            out->failed++;
            continue;
        }
        ttft[out->completed] = r->ttft_s;
        e2el[out->completed] = r->latency_s;
        out->completed++;
        out->total_input += r->prompt_len;
        out->total_output += r->output_tokens;
        if (!r->has_usage) out->n_missing_usage++;
        if (r->output_tokens > 1)
            tpot[n_tpot++] = (r->latency_s - r->ttft_s) / (r->output_tokens - 1);
        if (r->n_itl > 0) memcpy(itl + k_itl, r->itl_s, (size_t)r->n_itl * sizeof(double));
        k_itl += r->n_itl;
        t0 = fmin(t0, r->start_s);
        t1 = fmax(t1, r->start_s + r->latency_s);
    }
    if (duration_s > 0) {
        out->request_throughput = out->completed / duration_s;
        out->output_throughput = (double)out->total_output / duration_s;
        out->total_token_throughput = (double)(out->total_input + out->total_output) / duration_s;
    }
    if (out->completed > 0) {
        out->peak_output_tps = peak_tokens_per_s(res, n, t0, t1);
        out->peak_concurrent = peak_concurrency(res, n);
    }
    bench_metric_compute(ttft, out->completed, pcts, out->n_pcts, &out->ttft);
    bench_metric_compute(tpot, n_tpot, pcts, out->n_pcts, &out->tpot);
    bench_metric_compute(itl, (int)k_itl, pcts, out->n_pcts, &out->itl);
    bench_metric_compute(e2el, out->completed, pcts, out->n_pcts, &out->e2el);
    free(ttft), free(tpot), free(e2el), free(itl);
    return 0;
}

// ---- the result block

// Python's "{s:{c}^{n}}": centred, the odd fill character going to the right.
static void print_centered(FILE *f, const char *s, char c, int width) {
    int len = (int)strlen(s), pad = width > len ? width - len : 0, left = pad / 2;
    for (int i = 0; i < left; i++)
        fputc(c, f);
    fputs(s, f);
    for (int i = 0; i < pad - left; i++)
        fputc(c, f);
    fputc('\n', f);
}

// "{:<40} {:<10}" and "{:<40} {:<10.2f}", trailing spaces included, as vLLM prints them.
static void print_int(FILE *f, const char *label, long long v) {
    fprintf(f, "%-40s %-10lld\n", label, v);
}
static void print_f2(FILE *f, const char *label, double v) {
    fprintf(f, "%-40s %-10.2f\n", label, v);
}

// "P99", "P99.9": the percentile's shortest spelling, as vLLM names it.
static void pct_word(double p, char *buf, size_t n) {
    if (p == floor(p))
        snprintf(buf, n, "%d", (int)p);
    else
        snprintf(buf, n, "%g", p);
}

static void print_metric(FILE *f, const struct bench_summary *s, const struct bench_metric *m,
                         const char *name, const char *header) {
    char label[64], pw[16];
    print_centered(f, header, '-', 50);
    snprintf(label, sizeof(label), "Mean %s (ms):", name);
    print_f2(f, label, m->mean);
    snprintf(label, sizeof(label), "Median %s (ms):", name);
    print_f2(f, label, m->median);
    for (int i = 0; i < s->n_pcts; i++) {
        pct_word(s->pcts[i], pw, sizeof(pw));
        snprintf(label, sizeof(label), "P%s %s (ms):", pw, name);
        print_f2(f, label, m->pct[i]);
    }
}

// A float as Python's str() spells the usual values: "inf", "1.0", "0.25".
static const char *py_float(double x, char *buf, size_t n) {
    if (isinf(x))
        snprintf(buf, n, "inf");
    else if (x == floor(x) && fabs(x) < 1e15)
        snprintf(buf, n, "%.1f", x);
    else
        snprintf(buf, n, "%.15g", x);
    return buf;
}

void bench_print_header(FILE *f, const struct bench_run_info *info) {
    char a[32], b[32];
    fprintf(f, "Traffic request rate: %s\n", py_float(info->request_rate, a, sizeof(a)));
    fprintf(f, "Burstiness factor: %s (%s)\n", py_float(info->burstiness, b, sizeof(b)),
            info->burstiness == 1.0 ? "Poisson process" : "Gamma distribution");
    if (info->max_concurrency > 0)
        fprintf(f, "Maximum request concurrency: %d\n", info->max_concurrency);
    else
        fprintf(f, "Maximum request concurrency: None\n");
}

void bench_print_failures(FILE *f, const struct bench_result *res, int n) {
    const char *reason[10];
    int count[10], n_reasons = 0, n_failed = 0, n_other = 0;
    for (int i = 0; i < n; i++) {
        if (res[i].success) continue;
        n_failed++;
        const char *e = res[i].error ? res[i].error : "unknown error";
        int k = 0;
        while (k < n_reasons && strcmp(reason[k], e) != 0)
            k++;
        if (k < n_reasons)
            count[k]++;
        else if (n_reasons < 10)
            reason[n_reasons] = e, count[n_reasons++] = 1;
        else
            n_other++;
    }
    if (n_failed == 0) return;
    fprintf(f, "Failed requests during benchmark run detected (capping to 10):\n");
    for (int k = 0; k < n_reasons; k++)
        fprintf(f, "Error %d: %s (%d request%s)\n", k, reason[k], count[k],
                count[k] == 1 ? "" : "s");
    if (n_other) fprintf(f, "... and %d more failed requests with other reasons\n", n_other);
}

void bench_print_result(FILE *f, const struct bench_summary *s, const struct bench_run_info *info) {
    print_centered(f, " Serving Benchmark Result ", '=', 50);
    print_int(f, "Successful requests:", s->completed);
    print_int(f, "Failed requests:", s->failed);
    if (info->max_concurrency > 0)
        print_int(f, "Maximum request concurrency:", info->max_concurrency);
    if (!isinf(info->request_rate))
        print_f2(f, "Request rate configured (RPS):", info->request_rate);
    print_f2(f, "Benchmark duration (s):", s->duration_s);
    print_int(f, "Total input tokens:", s->total_input);
    print_int(f, "Total generated tokens:", s->total_output);
    print_f2(f, "Request throughput (req/s):", s->request_throughput);
    print_f2(f, "Output token throughput (tok/s):", s->output_throughput);
    print_f2(f, "Peak output token throughput (tok/s):", s->peak_output_tps);
    print_f2(f, "Peak concurrent requests:", s->peak_concurrent);
    print_f2(f, "Total Token throughput (tok/s):", s->total_token_throughput);
    print_metric(f, s, &s->ttft, "TTFT", "Time to First Token");
    print_metric(f, s, &s->tpot, "TPOT", "Time per Output Token (excl. 1st token)");
    print_metric(f, s, &s->itl, "ITL", "Inter-token Latency");
    print_metric(f, s, &s->e2el, "E2EL", "End-to-end Latency");
    for (int i = 0; i < 50; i++)
        fputc('=', f);
    fputc('\n', f);
    if (s->n_missing_usage > 0)
        fprintf(f,
                "warning: %d successful requests streamed no usage; their output tokens are "
                "counted as token chunks\n",
                s->n_missing_usage);
}

// ---- the JSON result file

static void add_metric(cJSON *o, const struct bench_summary *s, const struct bench_metric *m,
                       const char *key) {
    char name[64], pw[16];
    snprintf(name, sizeof(name), "mean_%s_ms", key);
    cJSON_AddNumberToObject(o, name, m->mean);
    snprintf(name, sizeof(name), "median_%s_ms", key);
    cJSON_AddNumberToObject(o, name, m->median);
    snprintf(name, sizeof(name), "std_%s_ms", key);
    cJSON_AddNumberToObject(o, name, m->std);
    for (int i = 0; i < s->n_pcts; i++) {
        pct_word(s->pcts[i], pw, sizeof(pw));
        snprintf(name, sizeof(name), "p%s_%s_ms", pw, key);
        cJSON_AddNumberToObject(o, name, m->pct[i]);
    }
}

void *bench_result_json(const struct bench_summary *s, const struct bench_run_info *info,
                        const struct bench_result *res, int n) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char date[32];
    time_t now = time(NULL);
    strftime(date, sizeof(date), "%Y%m%d-%H%M%S", gmtime(&now));
    cJSON_AddStringToObject(o, "date", date);
    cJSON_AddStringToObject(o, "backend", "openai");
    cJSON_AddStringToObject(o, "base_url", info->base_url ? info->base_url : "");
    cJSON_AddStringToObject(o, "endpoint", info->endpoint_path ? info->endpoint_path : "");
    cJSON_AddStringToObject(o, "model_id", info->model ? info->model : "");
    cJSON_AddStringToObject(o, "dataset", info->dataset ? info->dataset : "");
    cJSON_AddNumberToObject(o, "num_prompts", info->num_prompts);
    if (isinf(info->request_rate))
        cJSON_AddStringToObject(o, "request_rate", "inf");
    else
        cJSON_AddNumberToObject(o, "request_rate", info->request_rate);
    cJSON_AddNumberToObject(o, "burstiness", info->burstiness);
    if (info->max_concurrency > 0)
        cJSON_AddNumberToObject(o, "max_concurrency", info->max_concurrency);
    else
        cJSON_AddNullToObject(o, "max_concurrency");
    cJSON_AddNumberToObject(o, "seed", (double)info->seed);
    cJSON_AddBoolToObject(o, "ignore_eos", info->ignore_eos);
    cJSON_AddNumberToObject(o, "duration", s->duration_s);
    cJSON_AddNumberToObject(o, "completed", s->completed);
    cJSON_AddNumberToObject(o, "failed", s->failed);
    cJSON_AddNumberToObject(o, "total_input_tokens", (double)s->total_input);
    cJSON_AddNumberToObject(o, "total_output_tokens", (double)s->total_output);
    cJSON_AddNumberToObject(o, "request_throughput", s->request_throughput);
    cJSON_AddNumberToObject(o, "output_throughput", s->output_throughput);
    cJSON_AddNumberToObject(o, "total_token_throughput", s->total_token_throughput);
    cJSON_AddNumberToObject(o, "max_output_tokens_per_s", s->peak_output_tps);
    cJSON_AddNumberToObject(o, "max_concurrent_requests", s->peak_concurrent);
    cJSON_AddNumberToObject(o, "missing_usage", s->n_missing_usage);
    add_metric(o, s, &s->ttft, "ttft");
    add_metric(o, s, &s->tpot, "tpot");
    add_metric(o, s, &s->itl, "itl");
    add_metric(o, s, &s->e2el, "e2el");
    // Per-request arrays in seconds, index for index, under vLLM's names.
    cJSON *in = cJSON_AddArrayToObject(o, "input_lens"),
          *outl = cJSON_AddArrayToObject(o, "output_lens");
    cJSON *tt = cJSON_AddArrayToObject(o, "ttfts"), *itls = cJSON_AddArrayToObject(o, "itls");
    cJSON *lat = cJSON_AddArrayToObject(o, "latencies"),
          *st = cJSON_AddArrayToObject(o, "start_times");
    cJSON *errs = cJSON_AddArrayToObject(o, "errors");
    for (int i = 0; i < n; i++) {
        const struct bench_result *r = &res[i];
        cJSON_AddItemToArray(in, cJSON_CreateNumber(r->prompt_len));
        cJSON_AddItemToArray(outl, cJSON_CreateNumber(r->success ? r->output_tokens : 0));
        cJSON_AddItemToArray(tt, cJSON_CreateNumber(r->ttft_s));
        cJSON_AddItemToArray(itls, r->n_itl > 0 ? cJSON_CreateDoubleArray(r->itl_s, r->n_itl)
                                                : cJSON_CreateArray());
        cJSON_AddItemToArray(lat, cJSON_CreateNumber(r->latency_s));
        cJSON_AddItemToArray(st, cJSON_CreateNumber(r->start_s));
        cJSON_AddItemToArray(errs, cJSON_CreateString(r->error ? r->error : ""));
    }
    return o;
}

int bench_write_json(const char *path, const void *json) {
    char *text = json ? cJSON_Print(json) : NULL;
    if (!text) return err_set(ERR_NOMEM, "out of memory writing %s", path);
    FILE *f = fopen(path, "w");
    if (!f) {
        free(text);
        return err_set(ERR_IO, "cannot write %s", path);
    }
    int bad = fputs(text, f) < 0 || fputc('\n', f) < 0;
    bad |= fclose(f) != 0;
    free(text);
    return bad ? err_set(ERR_IO, "cannot write %s", path) : 0;
}

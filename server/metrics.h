// Server metrics in the Prometheus text exposition format (GET /metrics).
//
// Names follow vLLM's (vllm:num_requests_running -> keel_num_requests_running). vLLM's ':'
// separator is replaced by '_' because Prometheus reserves colons for recording rules and
// `promtool check metrics` rejects them; the rest of each name is vLLM's.
//
// Threads: the HTTP loop thread owns struct srv_metrics and is the only writer and reader; the
// engine's numbers come in as a struct srv_engine_stats snapshot at render time.
#ifndef KEEL_SERVER_METRICS_H
#define KEEL_SERVER_METRICS_H

#include "server/engine.h"

#include <stddef.h>
#include <stdint.h>

#define SRV_HIST_MAX_BUCKETS 24

// A cumulative histogram: counts[i] observations <= bounds[i]; the +Inf bucket is count.
struct srv_histogram {
    const double *bounds; // [n_bounds], ascending, static storage
    int n_bounds;
    uint64_t counts[SRV_HIST_MAX_BUCKETS];
    uint64_t count;
    double sum;
};

struct srv_metrics {
    struct srv_histogram ttft;      // seconds from arrival to first token
    struct srv_histogram itl;       // seconds between tokens of one choice
    struct srv_histogram e2e;       // seconds from arrival to the last event
    struct srv_histogram prompt_len;     // prompt tokens of finished requests
    struct srv_histogram generation_len; // generated tokens of finished requests
    uint64_t request_success[5];    // finished requests by enum srv_finish (STOP, LENGTH, ABORT)
    uint64_t http_responses[6];     // by status class: [1]=1xx ... [5]=5xx
    uint64_t n_open_connections;    // gauge
    double start_time;              // process start (Unix seconds)
};

void srv_metrics_init(struct srv_metrics *m);

// Adds one observation.
void srv_histogram_observe(struct srv_histogram *h, double v);

// Counts a response by its status code.
void srv_metrics_count_response(struct srv_metrics *m, int status);

// Renders every metric with HELP and TYPE lines. stats may be NULL (engine numbers are then 0).
// model_name labels every engine series (model_name="..."). Returns a malloc'd NUL-terminated
// string (*len its length), or NULL when out of memory.
char *srv_metrics_render(const struct srv_metrics *m, const struct srv_engine_stats *stats,
                         const char *model_name, size_t *len);

#endif

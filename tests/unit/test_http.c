// The HTTP layer against raw sockets: keep-alive, pipelining in order, chunked bodies, limits,
// timeouts, async and streamed answers, and aborts when clients leave. The server runs its loop
// on a thread; the test talks to it with blocking sockets and a receive timeout.
#include "common/err.h"
#include "server/http.h"
#include "server/metrics.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

// ---- a small server with a few routes

struct th_server {
    uv_loop_t loop;
    uv_async_t stop;
    uv_timer_t timer;
    struct srv_http_server *http;
    pthread_t thread;
    int port;
    atomic_int n_aborts;
    struct srv_http_conn *pending; // the /slow or /stream answer in progress
    int stream_left;
    bool aborted_pending;
};

static void th_abort_cb(void *ctx) {
    struct th_server *t = ctx;
    atomic_fetch_add(&t->n_aborts, 1);
    if (t->pending) {
        t->pending = NULL;
        uv_timer_stop(&t->timer);
    }
}

static void th_timer_cb(uv_timer_t *tm) {
    struct th_server *t = tm->data;
    struct srv_http_conn *c = t->pending;
    if (!c) return;
    if (t->stream_left < 0) { // /slow
        t->pending = NULL;
        srv_http_respond(c, 200, "text/plain", NULL, "slow", 4);
        return;
    }
    if (t->stream_left == 0) {
        t->pending = NULL;
        srv_http_stream_end(c);
        return;
    }
    char chunk[32];
    int n = snprintf(chunk, sizeof chunk, "data: %d\n\n", t->stream_left--);
    srv_http_stream_write(c, chunk, (size_t)n);
    uv_timer_start(&t->timer, th_timer_cb, 10, 0);
}

static void th_handler(struct srv_http_conn *c, const struct srv_http_request *r, void *arg) {
    struct th_server *t = arg;
    char body[256];
    if (strcmp(r->path, "/echo") == 0) {
        srv_http_respond(c, 200, "text/plain", NULL, r->body, r->body_len);
    } else if (strcmp(r->path, "/hello") == 0) {
        const char *ua = srv_http_header(r, "x-test");
        int n = snprintf(body, sizeof body, "%s %s %s x=%s", r->method, r->path, r->url,
                         ua ? ua : "(none)");
        srv_http_respond(c, 200, "text/plain", "X-Extra: 1\r\n", body, (size_t)n);
    } else if (strcmp(r->path, "/slow") == 0 || strcmp(r->path, "/stream") == 0 ||
               strcmp(r->path, "/hang") == 0) {
        t->pending = c;
        srv_http_set_abort(c, th_abort_cb, t);
        if (strcmp(r->path, "/hang") == 0) return;
        t->stream_left = strcmp(r->path, "/slow") == 0 ? -1 : 3;
        if (t->stream_left > 0) srv_http_stream_start(c, 200, "text/event-stream", NULL);
        uv_timer_start(&t->timer, th_timer_cb, 50, 0);
    } else {
        srv_http_respond(c, 404, "text/plain", NULL, "nope", 4);
    }
}

static void th_walk_close_cb(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void th_stop_cb(uv_async_t *a) {
    struct th_server *t = a->data;
    srv_http_close(t->http);
    uv_walk(&t->loop, th_walk_close_cb, NULL);
}

static void *th_run(void *arg) {
    struct th_server *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    return NULL;
}

static struct th_server *th_start(size_t max_body, size_t max_header, double idle_s,
                                  double header_s, int max_conns, const char *cors) {
    struct th_server *t = calloc(1, sizeof *t);
    CHECK(t != NULL);
    uv_loop_init(&t->loop);
    uv_async_init(&t->loop, &t->stop, th_stop_cb);
    t->stop.data = t;
    uv_timer_init(&t->loop, &t->timer);
    t->timer.data = t;
    struct srv_http_config cfg = {.host = "127.0.0.1", .port = 0, .max_body_bytes = max_body,
                                  .max_header_bytes = max_header, .idle_timeout_s = idle_s,
                                  .header_timeout_s = header_s, .max_connections = max_conns,
                                  .cors_allow_origin = cors};
    CHECK_OK(srv_http_init(&t->http, &t->loop, &cfg, th_handler, t));
    CHECK_OK(srv_http_listen(t->http));
    t->port = srv_http_port(t->http);
    CHECK(t->port > 0);
    CHECK_EQ(pthread_create(&t->thread, NULL, th_run, t), 0);
    return t;
}

static void th_stop(struct th_server *t) {
    uv_async_send(&t->stop);
    pthread_join(t->thread, NULL);
    srv_http_free(t->http);
    CHECK_EQ(uv_loop_close(&t->loop), 0);
    free(t);
}

// ---- a blocking client

static int cl_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void cl_send(int fd, const char *s, size_t n) {
    CHECK_EQ(send(fd, s, n, MSG_NOSIGNAL), (long long)n);
}

static void cl_sends(int fd, const char *s) { cl_send(fd, s, strlen(s)); }

// Reads until `want` appears (or the peer closes / times out). Returns what was read (static).
static char *cl_read_until(int fd, const char *want) {
    static char buf[1 << 16];
    size_t n = 0;
    buf[0] = '\0';
    while (n + 1 < sizeof buf && !(want && strstr(buf, want))) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = '\0';
    }
    return buf;
}

static bool cl_closed(int fd) {
    char b[256];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0) return true;
        if (r < 0) return false; // timed out: still open
    }
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

// ---- tests

TEST(http_keepalive_and_headers) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    for (int i = 0; i < 3; i++) {
        cl_sends(fd, "GET /hello?q=1 HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Test: abc\r\n\r\n");
        char *r = cl_read_until(fd, "x=abc");
        CHECK_MSG(strstr(r, "HTTP/1.1 200 OK\r\n") && strstr(r, "GET /hello /hello?q=1 x=abc") &&
                      strstr(r, "X-Extra: 1\r\n") && !strstr(r, "Connection: close"),
                  "response %d: %s", i, r);
    }
    cl_sends(fd, "GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    char *r = cl_read_until(fd, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 404") && strstr(r, "Connection: close"), "got: %s", r);
    close(fd);
    th_stop(t);
}

TEST(http_pipelined_requests_answer_in_order) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    const char *req = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst"
                      "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    cl_send(fd, req, strlen(req));
    char *r = cl_read_until(fd, "x=(none)");
    char *a = strstr(r, "slow"), *b = strstr(r, "first"), *c = strstr(r, "GET /hello");
    CHECK_MSG(a && b && c && a < b && b < c, "out of order or missing: %s", r);
    CHECK_EQ(count(r, "HTTP/1.1 200 OK"), 3);
    close(fd);
    th_stop(t);
}

TEST(http_chunked_request_body) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    cl_send(fd, req, strlen(req));
    char *r = cl_read_until(fd, "world");
    CHECK_MSG(strstr(r, "Content-Length: 12\r\n") && strstr(r, "\r\n\r\nhello, world"), "got: %s", r);
    close(fd);
    th_stop(t);
}

TEST(http_body_too_large_is_413) {
    struct th_server *t = th_start(100, 8192, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    cl_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n");
    char *r = cl_read_until(fd, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 413") && strstr(r, "max_body_bytes (100)"), "got: %s", r);
    close(fd);
    // A chunked body that grows past the limit is cut off the same way.
    fd = cl_connect(t->port);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "64\r\n";
    cl_send(fd, req, strlen(req));
    char big[101];
    memset(big, 'a', 100);
    cl_send(fd, big, 100);
    cl_sends(fd, "\r\n1\r\nb\r\n0\r\n\r\n");
    r = cl_read_until(fd, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 413"), "got: %s", r);
    close(fd);
    th_stop(t);
}

TEST(http_headers_too_large_is_431_and_garbage_is_400) {
    struct th_server *t = th_start(1 << 20, 1024, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    char req[4096];
    int n = snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'z', 2000);
    n += 2000;
    n += snprintf(req + n, sizeof req - (size_t)n, "\r\n\r\n");
    cl_send(fd, req, (size_t)n);
    char *r = cl_read_until(fd, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 431"), "got: %s", r);
    close(fd);
    fd = cl_connect(t->port);
    cl_sends(fd, "\x01\x02garbage\r\n\r\n");
    r = cl_read_until(fd, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 400") && strstr(r, "malformed"), "got: %s", r);
    CHECK(cl_closed(fd));
    close(fd);
    th_stop(t);
}

TEST(http_slow_client_gets_408_and_idle_connection_closes) {
    struct th_server *t = th_start(1 << 20, 8192, 0.3, 0.3, 100, NULL);
    int fd = cl_connect(t->port);
    cl_sends(fd, "GET /hello HTTP/1.1\r\nHost:");
    char *r = cl_read_until(fd, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 408"), "got: %s", r);
    close(fd);
    // The slow client did not block others meanwhile; an idle one is closed silently.
    int idle = cl_connect(t->port);
    int busy = cl_connect(t->port);
    cl_sends(busy, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    r = cl_read_until(busy, "x=(none)");
    CHECK_MSG(strstr(r, "200 OK"), "got: %s", r);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    CHECK(cl_closed(idle));
    gettimeofday(&t1, NULL);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_usec - t0.tv_usec) / 1e6;
    CHECK_MSG(secs < 2.0, "idle connection closed after %.2f s (idle_timeout_s 0.3)", secs);
    close(idle);
    close(busy);
    th_stop(t);
}

TEST(http_streamed_answer_is_chunked) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    cl_sends(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    char *r = cl_read_until(fd, "0\r\n\r\n");
    CHECK_MSG(strstr(r, "Transfer-Encoding: chunked") && strstr(r, "9\r\ndata: 3\n\n\r\n") &&
                  strstr(r, "9\r\ndata: 1\n\n\r\n0\r\n\r\n"),
              "got: %s", r);
    // The connection is still usable afterwards.
    cl_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    r = cl_read_until(fd, "x=(none)");
    CHECK_MSG(strstr(r, "200 OK"), "got: %s", r);
    close(fd);
    th_stop(t);
}

TEST(http_client_leaving_aborts_its_request) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    int fd = cl_connect(t->port);
    cl_sends(fd, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(100 * 1000);
    CHECK_EQ(atomic_load(&t->n_aborts), 0);
    close(fd);
    for (int i = 0; i < 100 && atomic_load(&t->n_aborts) == 0; i++) usleep(10 * 1000);
    CHECK_EQ(atomic_load(&t->n_aborts), 1);
    th_stop(t);
}

TEST(http_too_many_connections_get_503) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 2, NULL);
    int a = cl_connect(t->port), b = cl_connect(t->port);
    usleep(50 * 1000);
    int c = cl_connect(t->port);
    char *r = cl_read_until(c, NULL);
    CHECK_MSG(strstr(r, "HTTP/1.1 503") && strstr(r, "Retry-After: 1"), "got: %s", r);
    close(c);
    cl_sends(a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    r = cl_read_until(a, "x=(none)");
    CHECK_MSG(strstr(r, "200 OK"), "got: %s", r);
    close(a);
    close(b);
    th_stop(t);
}

TEST(http_cors_preflight_only_when_configured) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, "https://app.example");
    int fd = cl_connect(t->port);
    cl_sends(fd, "OPTIONS /v1/models HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n");
    char *r = cl_read_until(fd, "Max-Age: 600\r\n\r\n");
    CHECK_MSG(strstr(r, "HTTP/1.1 204") &&
                  strstr(r, "Access-Control-Allow-Origin: https://app.example\r\n") &&
                  strstr(r, "Access-Control-Allow-Headers: Authorization"),
              "got: %s", r);
    close(fd);
    th_stop(t);
    t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    fd = cl_connect(t->port);
    cl_sends(fd, "OPTIONS /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    r = cl_read_until(fd, "x=(none)");
    CHECK_MSG(strstr(r, "200 OK") && !strstr(r, "Access-Control"), "got: %s", r);
    close(fd);
    th_stop(t);
}

TEST(http_listen_on_a_busy_port_says_so) {
    struct th_server *t = th_start(1 << 20, 8192, 5, 5, 100, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct srv_http_server *s;
    struct srv_http_config cfg = {.host = "127.0.0.1", .port = t->port, .max_body_bytes = 1024,
                                  .max_header_bytes = 1024, .idle_timeout_s = 1,
                                  .header_timeout_s = 1, .max_connections = 1};
    CHECK_OK(srv_http_init(&s, &loop, &cfg, th_handler, NULL));
    CHECK_EQ(srv_http_listen(s), ERR_IO);
    CHECK_MSG(strstr(err_msg(), "address already in use"), "message: %s", err_msg());
    srv_http_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    srv_http_free(s);
    CHECK_EQ(uv_loop_close(&loop), 0);
    th_stop(t);
}

TEST(http_fuzz_random_bytes_never_crash) {
    struct th_server *t = th_start(4096, 2048, 5, 5, 1000, NULL);
    unsigned seed = 12345;
    for (int i = 0; i < 200; i++) {
        int fd = cl_connect(t->port);
        char buf[600];
        int n = 1 + (int)(rand_r(&seed) % (sizeof buf - 1));
        // Half of the inputs start like a real request, so the parser gets past the first line.
        int off = 0;
        if (i % 2 == 0) off = snprintf(buf, sizeof buf, "POST /echo HTTP/1.1\r\n");
        for (int j = off; j < n; j++) buf[j] = (char)(rand_r(&seed) & 0xff);
        if (n > off) send(fd, buf, (size_t)n, MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    // Still serving.
    int fd = cl_connect(t->port);
    cl_sends(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    char *r = cl_read_until(fd, "x=(none)");
    CHECK_MSG(strstr(r, "200 OK"), "got: %s", r);
    close(fd);
    th_stop(t);
}

// ---- metrics rendering (the /metrics body)

TEST(metrics_render_has_help_type_and_cumulative_buckets) {
    struct srv_metrics m;
    srv_metrics_init(&m);
    srv_histogram_observe(&m.ttft, 0.003);
    srv_histogram_observe(&m.ttft, 0.3);
    srv_histogram_observe(&m.ttft, 5000.0); // beyond the last bound: only +Inf
    m.request_success[SRV_FINISH_LENGTH] = 7;
    srv_metrics_count_response(&m, 404);
    struct srv_engine_stats st;
    memset(&st, 0, sizeof st);
    st.n_running = 3;
    st.n_waiting = 2;
    st.kv.usage = 0.25;
    st.prompt_tokens_total = 1234;
    size_t len = 0;
    char *txt = srv_metrics_render(&m, &st, "my \"model\"", &len);
    CHECK(txt != NULL);
    CHECK_EQ(len, strlen(txt));
    const char *want[] = {
        "# TYPE keel_num_requests_running gauge\n",
        "keel_num_requests_running{model_name=\"my \\\"model\\\"\"} 3\n",
        "keel_num_requests_waiting{model_name=\"my \\\"model\\\"\"} 2\n",
        "keel_kv_cache_usage_perc{model_name=\"my \\\"model\\\"\"} 0.25\n",
        "keel_prompt_tokens_total{model_name=\"my \\\"model\\\"\"} 1234\n",
        "finished_reason=\"length\"} 7\n",
        "keel_time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"0.001\"} 0\n",
        "keel_time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"0.005\"} 1\n",
        "keel_time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"0.5\"} 2\n",
        "keel_time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"2560\"} 2\n",
        "keel_time_to_first_token_seconds_bucket{model_name=\"my \\\"model\\\"\",le=\"+Inf\"} 3\n",
        "keel_time_to_first_token_seconds_count{model_name=\"my \\\"model\\\"\"} 3\n",
        "# TYPE keel_inter_token_latency_seconds histogram\n",
        "# TYPE keel_e2e_request_latency_seconds histogram\n",
        "keel_http_responses_total{code=\"4xx\"} 1\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strstr(txt, want[i]), "missing %s in:\n%s", want[i], txt);
    CHECK_MSG(!strchr(txt, ':') || !strstr(txt, "keel:"), "colon in a metric name");
    // Every sample line's metric has a TYPE line before it.
    free(txt);
    txt = srv_metrics_render(&m, NULL, "x", NULL);
    CHECK_MSG(strstr(txt, "keel_num_requests_running{model_name=\"x\"} 0\n"), "%s", txt);
    free(txt);
}

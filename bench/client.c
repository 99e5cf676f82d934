// The HTTP client of keel-bench: one libuv loop, a connection per in-flight request with
// keep-alive reuse, llhttp for responses and the SSE parser for the streamed events. Every
// event is stamped with uv_hrtime() taken once per read, before any parsing, so the client's
// own work never shows up in the figures it reports.
#include "bench/bench.h"

#include "common/err.h"

#include <cjson/cJSON.h>
#include <llhttp.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#define READ_BUF_BYTES (256 * 1024)
#define ERR_BODY_BYTES 1024
#define TICK_MS 100

struct conn;

struct client {
    uv_loop_t loop;
    const struct bench_client_opts *o;
    struct sockaddr_storage addr;
    char *const *bodies;
    const int *prompt_lens;
    const double *arrival_s;
    int n;
    struct bench_result *results;
    uint64_t t0_ns, end_ns;
    int n_arrived, n_started, n_done, n_failed, in_flight;
    long long n_chunks; // token chunks so far, for the progress bar
    struct conn *idle;  // connections waiting for their next request
    struct conn *all;   // every open connection
    uv_timer_t arrival_timer, tick_timer;
    uv_signal_t sigint;
    bool interrupted;
    bool finished, dispatching;
    llhttp_settings_t settings;
    char read_buf[READ_BUF_BYTES];
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    llhttp_t parser;
    struct client *c;
    struct conn *next_idle, *prev, *next;
    bool connected, closing;
    // The request in flight (req < 0: none).
    int req;
    uint64_t start_ns, last_token_ns, read_ns;
    int n_token_chunks, n_events, status;
    bool got_token, complete, keep_alive;
    struct bench_sse sse;
    char hdr[1024];
    char err_body[ERR_BODY_BYTES];
    size_t err_len;
};

static void client_dispatch(struct client *c);
static void conn_close(struct conn *k);

// ---- targets

int bench_target_parse(const char *base_url, const char *endpoint_path, struct bench_target *t) {
    memset(t, 0, sizeof(*t));
    const char *p = base_url;
    if (strncmp(p, "https://", 8) == 0)
        return err_set(ERR_INVAL,
                       "https is not supported (%s): put a plain-http proxy in front "
                       "or use the server's http port",
                       base_url);
    if (strncmp(p, "http://", 7) != 0)
        return err_set(ERR_INVAL, "--base-url must start with http:// (got '%s')", base_url);
    p += 7;
    const char *host_end;
    if (*p == '[') { // an IPv6 literal
        host_end = strchr(p, ']');
        if (!host_end) return err_set(ERR_INVAL, "unclosed '[' in --base-url '%s'", base_url);
        p++;
    } else {
        host_end = p + strcspn(p, ":/");
    }
    size_t hl = (size_t)(host_end - p);
    if (hl == 0 || hl >= sizeof(t->host))
        return err_set(ERR_INVAL, "no host in --base-url '%s'", base_url);
    memcpy(t->host, p, hl);
    p = host_end + (*host_end == ']');
    t->port = 80;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535 || (*end && *end != '/'))
            return err_set(ERR_INVAL, "bad port in --base-url '%s'", base_url);
        t->port = (int)port;
        p = end;
    }
    // The prefix, without a trailing '/'; an OpenAI-style ".../v1" base is not doubled.
    size_t pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/')
        pl--;
    if (pl >= 3 && memcmp(p + pl - 3, "/v1", 3) == 0 && strncmp(endpoint_path, "/v1/", 4) == 0)
        pl -= 3;
    int k = snprintf(t->path, sizeof(t->path), "%.*s%s", (int)pl, p, endpoint_path);
    if (k < 0 || (size_t)k >= sizeof(t->path))
        return err_set(ERR_INVAL, "--base-url path is too long");
    if (strchr(t->host, ':'))
        snprintf(t->host_hdr, sizeof(t->host_hdr), "[%s]:%d", t->host, t->port);
    else
        snprintf(t->host_hdr, sizeof(t->host_hdr), "%s:%d", t->host, t->port);
    return 0;
}

// Resolves the host, preferring IPv4 ("localhost" often resolves to ::1 first while servers
// listen on 127.0.0.1).
static int resolve(const struct bench_target *t, struct sockaddr_storage *out) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", t->port);
    int rc = getaddrinfo(t->host, port, &hints, &res);
    if (rc != 0) return err_set(ERR_IO, "cannot resolve %s: %s", t->host, gai_strerror(rc));
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    memcpy(out, pick->ai_addr, pick->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

// ---- finishing a request

static double ns_to_s(uint64_t ns) {
    return (double)ns * 1e-9;
}

// The reason a non-200 response gives: its OpenAI-style error message, else the raw body.
static void http_error(struct conn *k, struct bench_result *r) {
    k->err_body[k->err_len] = '\0';
    cJSON *j = cJSON_Parse(k->err_body);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
    if (!cJSON_IsString(m)) m = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (!cJSON_IsString(m)) m = cJSON_GetObjectItemCaseSensitive(j, "detail");
    if (cJSON_IsString(m))
        bench_result_set_error(r, "HTTP %d: %s", k->status, m->valuestring);
    else
        bench_result_set_error(r, "HTTP %d: %.200s", k->status, k->err_body);
    cJSON_Delete(j);
}

static void client_finish_run(struct client *c) {
    c->finished = true;
    c->end_ns = uv_hrtime();
    uv_timer_stop(&c->arrival_timer);
    uv_timer_stop(&c->tick_timer);
    uv_signal_stop(&c->sigint);
    while (c->all)
        conn_close(c->all); // conn_close unlinks it
}

static int on_event(void *user, const char *data, size_t len);

// Records how k's request ended in its result and frees the slot; the connection is the
// caller's business.
static void request_end(struct conn *k) {
    struct client *c = k->c;
    struct bench_result *r = &c->results[k->req];
    if (k->complete && k->status == 200) bench_sse_finish(&k->sse, on_event, k);
    if (k->complete && k->status != 200)
        http_error(k, r);
    else if (k->complete && k->n_events == 0)
        bench_result_set_error(r, "the response had no server-sent events (does the server "
                                  "stream? keel-bench needs \"stream\": true)");
    else if (k->complete && !k->got_token)
        bench_result_set_error(r, "the stream ended without a token chunk");
    else if (!k->complete)
        bench_result_set_error(r, "connection closed by the server after %d token chunk%s",
                               k->n_token_chunks, k->n_token_chunks == 1 ? "" : "s");
    r->success = r->error == NULL;
    c->n_failed += !r->success;
    if (k->got_token) r->latency_s = ns_to_s(k->last_token_ns - k->start_ns);
    if (!r->has_usage) r->output_tokens = k->n_token_chunks;
    k->req = -1;
    c->in_flight--;
    c->n_done++;
}

// After a request ended: the run is over, or the freed slot takes the next waiting request.
static void client_after_end(struct client *c) {
    if (c->finished) return;
    if (c->n_done == c->n)
        client_finish_run(c);
    else
        client_dispatch(c);
}

// A complete response: the connection waits for the next request unless either side closes.
static void request_done(struct conn *k, bool reusable) {
    struct client *c = k->c;
    request_end(k);
    if (reusable && k->keep_alive && !k->closing) {
        k->next_idle = c->idle;
        c->idle = k;
    } else {
        conn_close(k);
    }
    client_after_end(c);
}

// Fails the request on k (if any) with a reason and drops the connection.
static void conn_fail(struct conn *k, const char *what, int uv_err) {
    if (k->req >= 0) {
        struct bench_result *r = &k->c->results[k->req];
        if (uv_err)
            bench_result_set_error(r, "%s: %s", what, uv_strerror(uv_err));
        else
            bench_result_set_error(r, "%s", what);
    }
    conn_close(k);
}

// ---- connections

static void on_close(uv_handle_t *h) {
    struct conn *k = h->data;
    bench_sse_free(&k->sse);
    free(k);
}

static void conn_close(struct conn *k) {
    if (k->closing) return;
    k->closing = true;
    struct client *c = k->c;
    for (struct conn **p = &c->idle; *p; p = &(*p)->next_idle)
        if (*p == k) {
            *p = k->next_idle;
            break;
        }
    if (k->prev)
        k->prev->next = k->next;
    else
        c->all = k->next;
    if (k->next) k->next->prev = k->prev;
    bool in_flight = k->req >= 0;
    if (in_flight) request_end(k); // the close is the end of its request
    uv_close((uv_handle_t *)&k->tcp, on_close);
    if (in_flight) client_after_end(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    struct conn *k = h->data;
    *buf = uv_buf_init(k->c->read_buf, sizeof(k->c->read_buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    struct conn *k = s->data;
    if (k->closing) return;
    k->read_ns = uv_hrtime(); // before parsing: the client's own work is not the server's time
    if (nread > 0 && k->req < 0) { // bytes on an idle connection answer nobody: drop it
        conn_close(k);
        return;
    }
    if (nread > 0) {
        llhttp_errno_t e = llhttp_execute(&k->parser, buf->base, (size_t)nread);
        if (e != HPE_OK) {
            char why[200];
            snprintf(why, sizeof(why), "bad HTTP response: %s",
                     llhttp_get_error_reason(&k->parser));
            conn_fail(k, why, 0);
            return;
        }
        if (k->complete) request_done(k, true);
        return;
    }
    if (nread == 0) return;
    if (nread == UV_EOF && k->req >= 0) {
        llhttp_finish(&k->parser); // a body delimited by the end of the connection ends here
        if (k->complete) {
            request_done(k, false);
            return;
        }
    }
    if (nread == UV_EOF)
        conn_close(k); // mid-response, request_end says so
    else
        conn_fail(k, "read", (int)nread);
}

static void on_write(uv_write_t *w, int status) {
    struct conn *k = w->data;
    if (status < 0 && !k->closing) conn_fail(k, "write", status);
}

static void conn_send(struct conn *k) {
    struct client *c = k->c;
    const struct bench_target *t = c->o->target;
    const char *body = c->bodies[k->req];
    size_t body_len = strlen(body);
    int hl = snprintf(k->hdr, sizeof(k->hdr),
                      "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: keel-bench\r\n"
                      "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                      "%s%s%sContent-Length: %zu\r\n\r\n",
                      t->path, t->host_hdr, t->api_key ? "Authorization: Bearer " : "",
                      t->api_key ? t->api_key : "", t->api_key ? "\r\n" : "", body_len);
    if (hl < 0 || (size_t)hl >= sizeof(k->hdr)) {
        conn_fail(k, "request header too long", 0);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(k->hdr, (unsigned)hl),
                        uv_buf_init((char *)body, (unsigned)body_len)};
    k->write_req.data = k;
    int rc = uv_write(&k->write_req, (uv_stream_t *)&k->tcp, bufs, 2, on_write);
    if (rc < 0) conn_fail(k, "write", rc);
}

static void on_connect(uv_connect_t *req, int status) {
    struct conn *k = req->data;
    if (k->closing) return;
    if (status < 0) {
        conn_fail(k, "connect", status);
        return;
    }
    k->connected = true;
    int rc = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (rc < 0) {
        conn_fail(k, "read", rc);
        return;
    }
    conn_send(k);
}

// ---- llhttp callbacks

static int on_headers_complete(llhttp_t *p) {
    struct conn *k = p->data;
    k->status = p->status_code;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    struct conn *k = p->data;
    if (k->req < 0) return HPE_USER; // bytes nobody asked for
    if (k->status != 200) {
        size_t room = sizeof(k->err_body) - 1 - k->err_len;
        size_t take = len < room ? len : room;
        memcpy(k->err_body + k->err_len, at, take);
        k->err_len += take;
        return 0;
    }
    return bench_sse_feed(&k->sse, at, len, on_event, k) == 0 ? 0 : HPE_USER;
}

static int on_message_complete(llhttp_t *p) {
    struct conn *k = p->data;
    k->complete = true;
    k->keep_alive = llhttp_should_keep_alive(p);
    return 0;
}

// One streamed event: the clock for tokens, the usage for the counts.
static int on_event(void *user, const char *data, size_t len) {
    struct conn *k = user;
    struct bench_result *r = &k->c->results[k->req];
    struct bench_chunk ch;
    k->n_events++;
    if (bench_chunk_parse(data, len, k->c->o->endpoint, &ch) != 0) {
        bench_result_set_error(r, "%s", err_msg());
        return 0; // keep reading: the request failed, the connection may still be fine
    }
    if (ch.error[0]) bench_result_set_error(r, "error in the stream: %s", ch.error);
    if (ch.token) {
        if (!k->got_token)
            r->ttft_s = ns_to_s(k->read_ns - k->start_ns);
        else if (bench_result_add_itl(r, ns_to_s(k->read_ns - k->last_token_ns)) != 0)
            return ERR_NOMEM;
        k->got_token = true;
        k->last_token_ns = k->read_ns;
        k->n_token_chunks++;
        k->c->n_chunks++;
    }
    if (ch.usage) {
        r->has_usage = true;
        r->output_tokens = ch.completion_tokens;
        if (ch.prompt_tokens >= 0) r->prompt_len = ch.prompt_tokens;
    }
    return 0;
}

// ---- scheduling

static struct conn *conn_new(struct client *c) {
    struct conn *k = calloc(1, sizeof(*k));
    if (!k) return NULL;
    k->c = c;
    k->req = -1;
    if (uv_tcp_init(&c->loop, &k->tcp) != 0) {
        free(k);
        return NULL;
    }
    k->tcp.data = k;
    k->connect_req.data = k;
    uv_tcp_nodelay(&k->tcp, 1);
    llhttp_init(&k->parser, HTTP_RESPONSE, &c->settings);
    k->parser.data = k;
    bench_sse_init(&k->sse);
    k->next = c->all;
    if (c->all) c->all->prev = k;
    c->all = k;
    return k;
}

static void request_start(struct client *c, int i) {
    struct bench_result *r = &c->results[i];
    r->prompt_len = c->prompt_lens[i];
    c->in_flight++;
    struct conn *k = c->idle;
    if (k)
        c->idle = k->next_idle;
    else
        k = conn_new(c);
    uint64_t now = uv_hrtime();
    r->start_s = ns_to_s(now - c->t0_ns);
    if (!k) {
        bench_result_set_error(r, "out of memory for a connection");
        c->in_flight--;
        c->n_done++;
        c->n_failed++;
        if (c->n_done == c->n) client_finish_run(c);
        return;
    }
    k->req = i;
    k->start_ns = now;
    k->status = 0;
    k->n_token_chunks = k->n_events = 0;
    k->got_token = k->complete = false;
    k->err_len = 0;
    bench_sse_free(&k->sse);
    bench_sse_init(&k->sse);
    if (k->connected) {
        conn_send(k);
        return;
    }
    int rc =
        uv_tcp_connect(&k->connect_req, &k->tcp, (const struct sockaddr *)&c->addr, on_connect);
    if (rc == UV_EMFILE || rc == UV_ENFILE)
        conn_fail(
            k, "connect: out of file descriptors (raise `ulimit -n` or set --max-concurrency)", 0);
    else if (rc < 0)
        conn_fail(k, "connect", rc);
}

static void client_dispatch(struct client *c) {
    // A request that fails at once (no file descriptor left) ends inside request_start and
    // dispatches again; the loop below takes that slot instead, so the stack stays flat.
    if (c->dispatching) return;
    c->dispatching = true;
    int maxc = c->o->max_concurrency;
    while (!c->finished && c->n_started < c->n_arrived && (maxc <= 0 || c->in_flight < maxc))
        request_start(c, c->n_started++);
    c->dispatching = false;
}

static void on_arrival(uv_timer_t *t) {
    struct client *c = t->data;
    double now_s = ns_to_s(uv_hrtime() - c->t0_ns);
    while (c->n_arrived < c->n && c->arrival_s[c->n_arrived] <= now_s)
        c->n_arrived++;
    client_dispatch(c);
    if (c->n_arrived < c->n && !c->finished) {
        double wait_ms = (c->arrival_s[c->n_arrived] - now_s) * 1000;
        uv_timer_start(&c->arrival_timer, on_arrival, (uint64_t)ceil(wait_ms), 0);
    }
}

static void draw_progress(struct client *c, bool last) {
    const struct bench_client_opts *o = c->o;
    int width = 30, fill = c->n ? (int)((long long)c->n_done * width / c->n) : width;
    double el = ns_to_s((last ? c->end_ns : uv_hrtime()) - c->t0_ns);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%s [%s] %d/%d  %.1fs  in flight %d  failed %d  %.0f chunks/s ",
            o->label ? o->label : "", bar, c->n_done, c->n, el, c->in_flight, c->n_failed,
            el > 0 ? c->n_chunks / el : 0.0);
    if (last) fputc('\n', stderr);
    fflush(stderr);
}

// Ctrl-C ends the run early but keeps what was measured: requests not yet sent and those in
// flight fail as "interrupted", and the caller still gets every result.
static void on_sigint(uv_signal_t *h, int signum) {
    struct client *c = h->data;
    if (c->finished) return;
    c->interrupted = true;
    for (int i = c->n_started; i < c->n; i++) {
        bench_result_set_error(&c->results[i], "not sent: interrupted");
        c->results[i].prompt_len = c->prompt_lens[i];
        c->n_done++;
        c->n_failed++;
    }
    c->n_started = c->n_arrived = c->n;
    for (struct conn *k = c->all, *next; k; k = next) {
        next = k->next; // conn_fail unlinks k
        if (k->req >= 0) conn_fail(k, "interrupted", 0);
        if (c->finished) return;
    }
    client_after_end(c);
}

static void on_tick(uv_timer_t *t) {
    struct client *c = t->data;
    if (c->o->timeout_s > 0) {
        uint64_t now = uv_hrtime(), limit = (uint64_t)(c->o->timeout_s * 1e9);
        for (struct conn *k = c->all, *next; k; k = next) {
            next = k->next; // conn_fail unlinks k
            if (k->req >= 0 && now - k->start_ns > limit) {
                char why[64];
                snprintf(why, sizeof(why), "timed out after %g s", c->o->timeout_s);
                conn_fail(k, why, 0);
                if (c->finished) return;
            }
        }
    }
    if (c->o->progress) draw_progress(c, false);
}

int bench_client_run(const struct bench_client_opts *o, char *const *bodies, const int *prompt_lens,
                     const double *arrival_s, int n, struct bench_result *results,
                     double *duration_s) {
    *duration_s = 0;
    struct client *c = calloc(1, sizeof(*c));
    if (!c) return err_set(ERR_NOMEM, "out of memory for the client");
    int rc = resolve(o->target, &c->addr);
    if (rc) {
        free(c);
        return rc;
    }
    if (uv_loop_init(&c->loop) != 0) {
        free(c);
        return err_set(ERR_IO, "cannot start the event loop");
    }
    c->o = o;
    c->bodies = bodies;
    c->prompt_lens = prompt_lens;
    c->arrival_s = arrival_s;
    c->n = n;
    c->results = results;
    llhttp_settings_init(&c->settings);
    c->settings.on_headers_complete = on_headers_complete;
    c->settings.on_body = on_body;
    c->settings.on_message_complete = on_message_complete;
    uv_timer_init(&c->loop, &c->arrival_timer);
    uv_timer_init(&c->loop, &c->tick_timer);
    uv_signal_init(&c->loop, &c->sigint);
    c->arrival_timer.data = c->tick_timer.data = c->sigint.data = c;
    c->t0_ns = uv_hrtime();
    if (n == 0)
        client_finish_run(c);
    else {
        uv_timer_start(&c->tick_timer, on_tick, TICK_MS, TICK_MS);
        uv_signal_start(&c->sigint, on_sigint, SIGINT);
        on_arrival(&c->arrival_timer);
    }
    uv_run(&c->loop, UV_RUN_DEFAULT);
    if (o->progress) draw_progress(c, true);
    uv_close((uv_handle_t *)&c->arrival_timer, NULL);
    uv_close((uv_handle_t *)&c->tick_timer, NULL);
    uv_close((uv_handle_t *)&c->sigint, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&c->loop) == 0 ? 0 : err_set(ERR_INTERNAL, "the event loop did not close");
    if (rc == 0 && c->interrupted) rc = err_set(ERR_CANCELLED, "interrupted");
    *duration_s = ns_to_s(c->end_ns - c->t0_ns);
    free(c);
    return rc;
}

// ---- the model list (one blocking GET before the run)

struct get_ctx {
    char *body;
    size_t len, cap;
    bool complete;
};

static int get_on_body(llhttp_t *p, const char *at, size_t len) {
    struct get_ctx *g = p->data;
    if (g->len + len + 1 > g->cap) {
        size_t ncap = (g->len + len + 1) * 2;
        char *nb = realloc(g->body, ncap);
        if (!nb) return HPE_USER;
        g->body = nb;
        g->cap = ncap;
    }
    memcpy(g->body + g->len, at, len);
    g->len += len;
    g->body[g->len] = '\0';
    return 0;
}

static int get_on_complete(llhttp_t *p) {
    ((struct get_ctx *)p->data)->complete = true;
    return 0;
}

int bench_first_model(const struct bench_target *t, char **out_id) {
    *out_id = NULL;
    struct sockaddr_storage addr;
    int rc = resolve(t, &addr);
    if (rc) return rc;
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return err_set(ERR_IO, "socket failed");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    socklen_t alen =
        addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (connect(fd, (struct sockaddr *)&addr, alen) != 0) {
        close(fd);
        return err_set(ERR_IO, "cannot connect to %s to list models", t->host_hdr);
    }
    // The models path sits beside the endpoint: the prefix before "/v1/...".
    const char *v1 = strstr(t->path, "/v1/");
    int pl = v1 ? (int)(v1 - t->path) : 0;
    char req[1200];
    int n = snprintf(req, sizeof(req),
                     "GET %.*s/v1/models HTTP/1.1\r\nHost: %s\r\nUser-Agent: keel-bench\r\n"
                     "%s%s%sConnection: close\r\n\r\n",
                     pl, t->path, t->host_hdr, t->api_key ? "Authorization: Bearer " : "",
                     t->api_key ? t->api_key : "", t->api_key ? "\r\n" : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return err_set(ERR_IO, "cannot send the model list request to %s", t->host_hdr);
    }
    struct get_ctx g = {0};
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_body = get_on_body;
    s.on_message_complete = get_on_complete;
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &s);
    p.data = &g;
    char buf[8192];
    ssize_t k;
    while (!g.complete && (k = read(fd, buf, sizeof(buf))) > 0)
        if (llhttp_execute(&p, buf, (size_t)k) != HPE_OK) break;
    if (!g.complete) llhttp_finish(&p);
    close(fd);
    int status = p.status_code;
    cJSON *j = g.body ? cJSON_Parse(g.body) : NULL;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(data, 0), "id");
    if (status == 200 && cJSON_IsString(id))
        *out_id = strdup(id->valuestring);
    else
        rc = err_set(status == 200 ? ERR_FORMAT : ERR_IO,
                     "GET /v1/models on %s gave HTTP %d%s; pass --model", t->host_hdr, status,
                     status == 200 ? " without a model id" : "");
    cJSON_Delete(j);
    free(g.body);
    return rc;
}

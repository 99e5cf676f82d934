// HTTP/1.1 on libuv + llhttp. One struct srv_http_conn per TCP connection: its llhttp parser,
// the bytes received but not parsed yet, the request being assembled, one timer (idle, header
// or none, by state) and the answer in progress. See http.h for the contract with the handler.
#include "server/http.h"

#include "common/err.h"
#include "common/log.h"
#include "server/metrics.h"

#include <ctype.h>
#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// Received bytes kept while an answer is in progress (the next pipelined requests). Beyond
// this the connection stops reading until the answer is done.
#define HTTP__INFLIGHT_BUFFER (64 * 1024)
#define HTTP__MAX_HEADERS 256

// ---- the structures

enum http__state {
    HTTP__IDLE = 0,   // waiting for a request's first byte (idle timer)
    HTTP__READING,    // a request has started (header timer)
    HTTP__BUSY,       // the handler has the request; answer not finished
};

struct srv_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening, draining, closed;
    struct srv_http_config cfg;
    char host[256], cors[512];
    srv_http_request_cb cb;
    void *cb_arg;
    llhttp_settings_t settings;
    struct srv_http_conn *conns; // doubly linked list of open connections
    int n_conns, n_busy;
    int bound_port;
    uint64_t last_refusal_log_ms;
};

struct http__hdr_span {
    size_t name_off, value_off;
};

struct srv_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int n_open_handles;          // tcp + timer; freed when both have closed
    struct srv_http_server *srv;
    struct srv_http_conn *prev, *next;
    llhttp_t parser;
    enum http__state state;
    bool closing, reading, processing;
    // received bytes not parsed yet
    char *in;
    size_t in_len, in_cap;
    // the request being assembled: url and headers as NUL-separated strings in hbuf
    char *hbuf;
    size_t hbuf_len, hbuf_cap;
    size_t header_bytes;         // what counts against max_header_bytes
    struct http__hdr_span spans[HTTP__MAX_HEADERS];
    int n_spans;
    bool in_value;
    char *body;
    size_t body_len, body_cap;
    int error_status;            // 413/431/... set by a callback that stopped the parser
    struct srv_http_header headers[HTTP__MAX_HEADERS];
    struct srv_http_request req;
    // the answer
    bool keep_alive, streaming, raw_stream, close_after;
    void (*abort_cb)(void *ctx);
    void *abort_ctx;
};

struct http__write {
    uv_write_t req;
    struct srv_http_conn *c;
    size_t len;
    char data[];
};

static void http__conn_close(struct srv_http_conn *c);
static void http__timer_cb(uv_timer_t *t);
static void http__start_reading(struct srv_http_conn *c);
static void http__process(struct srv_http_conn *c);

// ---- small helpers

const char *srv_http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static int http__grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 1024;
    while (n < need) n *= 2;
    char *p = realloc(*buf, n);
    if (!p) return ERR_NOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

static int http__append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
    if (http__grow(buf, cap, *len + n + 1)) return ERR_NOMEM;
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

const char *srv_http_header(const struct srv_http_request *r, const char *name) {
    for (int i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

struct srv_http_server *srv_http_conn_server(struct srv_http_conn *c) { return c->srv; }

static void http__set_timer(struct srv_http_conn *c, double secs);

// ---- writing

static void http__write_cb(uv_write_t *req, int status) {
    struct http__write *w = (struct http__write *)req;
    struct srv_http_conn *c = w->c;
    free(w);
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        log_debug("http: write failed: %s", uv_strerror(status));
        http__conn_close(c);
    }
}

// Queues bytes (copied). On failure the connection is closed and ERR_IO returned.
static int http__write(struct srv_http_conn *c, const char *a, size_t na, const char *b,
                       size_t nb, const char *tail, size_t nt) {
    if (c->closing) return ERR_IO;
    size_t cap = c->srv->cfg.max_write_queue_bytes ? c->srv->cfg.max_write_queue_bytes
                                                   : (size_t)16 << 20;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) + na + nb + nt > cap) {
        log_warn("http: client is not reading (over %zu bytes queued), closing", cap);
        http__conn_close(c);
        return ERR_IO;
    }
    struct http__write *w = malloc(sizeof *w + na + nb + nt);
    if (!w) {
        http__conn_close(c);
        return ERR_IO;
    }
    w->c = c;
    w->len = na + nb + nt;
    if (na) memcpy(w->data, a, na);
    if (nb) memcpy(w->data + na, b, nb);
    if (nt) memcpy(w->data + na + nb, tail, nt);
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, http__write_cb);
    if (rc < 0) {
        free(w);
        http__conn_close(c);
        return ERR_IO;
    }
    return 0;
}

// Lingering close: once our answer and FIN are out, keep reading (and discarding) until the client
// closes too, at most HTTP__LINGER_MS. Closing with unread bytes in the socket (a body past
// max_body_bytes, say) would make the kernel send a reset, which can destroy the 413 before the
// client reads it.
#define HTTP__LINGER_MS 2000

static void http__shutdown_cb(uv_shutdown_t *req, int status) {
    struct srv_http_conn *c = req->data;
    free(req);
    if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        http__conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, http__timer_cb, HTTP__LINGER_MS, 0); // closes when it fires
}

// Closes after everything queued has been written (see the lingering close above).
static void http__close_after_writes(struct srv_http_conn *c) {
    if (c->closing) return;
    c->in_len = 0; // what is still buffered is discarded, and reads land at the start
    if (!c->reading) http__start_reading(c);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, http__shutdown_cb) < 0) {
        free(req);
        http__conn_close(c);
        return;
    }
    req->data = c;
    // The socket stays open until the shutdown completes (everything queued is written); a
    // client that never reads it cannot hold it longer than idle_timeout_s.
    http__set_timer(c, c->srv->cfg.idle_timeout_s);
    c->closing = true;
}

static int http__head(struct srv_http_conn *c, char *out, size_t cap, int status,
                      const char *content_type, const char *extra, const char *framing) {
    struct srv_http_server *s = c->srv;
    bool close = !c->keep_alive || s->draining || c->close_after;
    if (close) c->close_after = true;
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\n%s%s%s%s%s%s%s%s%s", status,
                     srv_http_reason(status), content_type ? "Content-Type: " : "",
                     content_type ? content_type : "", content_type ? "\r\n" : "", framing,
                     close ? "Connection: close\r\n" : "", s->cors[0] ? "Access-Control-Allow-Origin: " : "",
                     s->cors[0] ? s->cors : "", s->cors[0] ? "\r\n" : "", extra ? extra : "");
    if (n < 0 || (size_t)n + 3 > cap) return -1;
    memcpy(out + n, "\r\n", 3);
    if (s->cfg.metrics) srv_metrics_count_response(s->cfg.metrics, status);
    return n + 2;
}

// The answer is complete: close or go on with the next request.
static void http__answer_done(struct srv_http_conn *c) {
    c->abort_cb = NULL;
    c->abort_ctx = NULL;
    c->streaming = false;
    if (c->state == HTTP__BUSY) c->srv->n_busy--;
    c->state = HTTP__IDLE;
    if (c->closing) return;
    if (c->close_after || c->srv->draining) {
        http__close_after_writes(c);
        return;
    }
    llhttp_resume(&c->parser);
    http__set_timer(c, c->srv->cfg.idle_timeout_s);
    http__process(c); // the pipelined requests buffered meanwhile, then reading again
}

int srv_http_respond(struct srv_http_conn *c, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t len) {
    if (c->closing) return ERR_IO;
    char head[2048], framing[64];
    snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", len);
    int n = http__head(c, head, sizeof head, status, content_type, extra_headers, framing);
    if (n < 0) {
        n = http__head(c, head, sizeof head, 500, NULL, NULL, "Content-Length: 0\r\n");
        len = 0;
    }
    int rc = http__write(c, head, (size_t)n, body, len, NULL, 0);
    if (rc == 0) http__answer_done(c);
    return rc;
}

int srv_http_stream_start(struct srv_http_conn *c, int status, const char *content_type,
                          const char *extra_headers) {
    if (c->closing) return ERR_IO;
    char head[2048];
    // HTTP/1.0 has no chunked encoding: send the raw body and mark its end by closing.
    c->raw_stream = llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0;
    if (c->raw_stream) c->close_after = true;
    int n = http__head(c, head, sizeof head, status, content_type, extra_headers,
                       c->raw_stream ? "Cache-Control: no-cache\r\n"
                                     : "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    if (n < 0) return err_set(ERR_INVAL, "response headers too long");
    c->streaming = true;
    return http__write(c, head, (size_t)n, NULL, 0, NULL, 0);
}

int srv_http_stream_write(struct srv_http_conn *c, const char *data, size_t len) {
    if (c->closing || !c->streaming) return ERR_IO;
    if (len == 0) return 0; // a zero-length chunk would end the body
    if (c->raw_stream) return http__write(c, data, len, NULL, 0, NULL, 0);
    char size[32];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    return http__write(c, size, (size_t)n, data, len, "\r\n", 2);
}

int srv_http_stream_end(struct srv_http_conn *c) {
    if (c->closing || !c->streaming) return ERR_IO;
    int rc = c->raw_stream ? 0 : http__write(c, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    if (rc == 0) http__answer_done(c);
    return rc;
}

void srv_http_set_abort(struct srv_http_conn *c, void (*abort_cb)(void *ctx), void *ctx) {
    c->abort_cb = abort_cb;
    c->abort_ctx = ctx;
}

// An answer the server gives by itself (errors found while parsing, timeouts, overload).
static void http__error(struct srv_http_conn *c, int status, const char *msg) {
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\","
                     "\"param\":null,\"code\":%d}}",
                     msg, status);
    c->close_after = true;
    c->keep_alive = false;
    if (c->state != HTTP__BUSY) {
        c->state = HTTP__BUSY; // answer_done balances n_busy
        c->srv->n_busy++;
    }
    srv_http_respond(c, status, "application/json", status == 503 ? "Retry-After: 1\r\n" : NULL,
                     body, (size_t)n);
}

// ---- connection lifetime

static void http__handle_closed_cb(uv_handle_t *h) {
    struct srv_http_conn *c = h->data;
    if (--c->n_open_handles > 0) return;
    struct srv_http_server *s = c->srv;
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    if (s->cfg.metrics) s->cfg.metrics->n_open_connections = (uint64_t)s->n_conns;
    free(c->in);
    free(c->hbuf);
    free(c->body);
    free(c);
}

static void http__conn_close(struct srv_http_conn *c) {
    if (c->n_open_handles == 0 || uv_is_closing((uv_handle_t *)&c->tcp)) return;
    c->closing = true;
    if (c->state == HTTP__BUSY) {
        c->srv->n_busy--;
        c->state = HTTP__IDLE;
        void (*cb)(void *) = c->abort_cb;
        void *ctx = c->abort_ctx;
        c->abort_cb = NULL;
        c->abort_ctx = NULL;
        if (cb) cb(ctx);
    }
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, http__handle_closed_cb);
    uv_close((uv_handle_t *)&c->timer, http__handle_closed_cb);
}

static void http__timer_cb(uv_timer_t *t) {
    struct srv_http_conn *c = t->data;
    if (c->closing) {
        http__conn_close(c); // a shutdown that did not complete in time
    } else if (c->state == HTTP__READING) {
        log_debug("http: request not complete within header_timeout_s, closing");
        http__error(c, 408, "request not received in time");
    } else if (c->state == HTTP__IDLE) {
        http__conn_close(c);
    }
}

static void http__set_timer(struct srv_http_conn *c, double secs) {
    if (c->closing) return;
    uint64_t ms = secs > 0 ? (uint64_t)(secs * 1000.0 + 0.5) : 0;
    if (ms == 0) uv_timer_stop(&c->timer);
    else uv_timer_start(&c->timer, http__timer_cb, ms, 0);
}

// ---- parser callbacks (they only collect; the handler runs outside llhttp_execute)

static int http__count(struct srv_http_conn *c, size_t n) {
    c->header_bytes += n;
    if (c->header_bytes > c->srv->cfg.max_header_bytes) {
        c->error_status = 431;
        return HPE_USER;
    }
    return 0;
}

static int http__on_message_begin(llhttp_t *p) {
    struct srv_http_conn *c = p->data;
    c->hbuf_len = 0;
    c->header_bytes = 0;
    c->n_spans = 0;
    c->in_value = false;
    c->body_len = 0;
    c->error_status = 0;
    if (c->state == HTTP__IDLE) {
        c->state = HTTP__READING;
        http__set_timer(c, c->srv->cfg.header_timeout_s);
    }
    return 0;
}

static int http__on_url(llhttp_t *p, const char *at, size_t n) {
    struct srv_http_conn *c = p->data;
    if (http__count(c, n)) return HPE_USER;
    return http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, at, n) ? HPE_USER : 0;
}

static int http__on_url_complete(llhttp_t *p) {
    struct srv_http_conn *c = p->data;
    // hbuf: url '\0' (then the headers); append keeps a NUL after the data, so make it count.
    return http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, "", 1) ? HPE_USER : 0;
}

static int http__on_header_field(llhttp_t *p, const char *at, size_t n) {
    struct srv_http_conn *c = p->data;
    if (http__count(c, n + 4)) return HPE_USER;
    if (c->n_spans == 0 || c->in_value) {
        if (c->n_spans == HTTP__MAX_HEADERS) {
            c->error_status = 431;
            return HPE_USER;
        }
        c->spans[c->n_spans].name_off = c->hbuf_len;
        c->spans[c->n_spans].value_off = SIZE_MAX;
        c->n_spans++;
        c->in_value = false;
    }
    return http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, at, n) ? HPE_USER : 0;
}

static int http__on_header_field_complete(llhttp_t *p) {
    struct srv_http_conn *c = p->data;
    if (http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, "", 1)) return HPE_USER;
    c->spans[c->n_spans - 1].value_off = c->hbuf_len; // an empty value stays ""
    c->in_value = true;
    return 0;
}

static int http__on_header_value(llhttp_t *p, const char *at, size_t n) {
    struct srv_http_conn *c = p->data;
    if (http__count(c, n)) return HPE_USER;
    return http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, at, n) ? HPE_USER : 0;
}

static int http__on_header_value_complete(llhttp_t *p) {
    struct srv_http_conn *c = p->data;
    c->in_value = true;
    return http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, "", 1) ? HPE_USER : 0;
}

static int http__on_headers_complete(llhttp_t *p) {
    struct srv_http_conn *c = p->data;
    // Refuse a declared body that is too large before reading it.
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->srv->cfg.max_body_bytes) {
        c->error_status = 413;
        return -1;
    }
    // curl and others wait for "100 Continue" before sending a large body.
    for (int i = 0; i < c->n_spans; i++) {
        const char *name = c->hbuf + c->spans[i].name_off;
        const char *value = c->spans[i].value_off == SIZE_MAX ? "" : c->hbuf + c->spans[i].value_off;
        if (strcasecmp(name, "expect") == 0 && strcasecmp(value, "100-continue") == 0)
            http__write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, NULL, 0);
    }
    return 0;
}

static int http__on_body(llhttp_t *p, const char *at, size_t n) {
    struct srv_http_conn *c = p->data;
    if (c->body_len + n > c->srv->cfg.max_body_bytes) {
        c->error_status = 413;
        return HPE_USER;
    }
    return http__append(&c->body, &c->body_len, &c->body_cap, at, n) ? HPE_USER : 0;
}

static int http__on_message_complete(llhttp_t *p) {
    struct srv_http_conn *c = p->data;
    struct srv_http_request *r = &c->req;
    if (http__append(&c->body, &c->body_len, &c->body_cap, "", 0)) return HPE_USER;
    // The path: the url up to '?', as its own string after the headers.
    size_t path_len = strcspn(c->hbuf, "?#");
    size_t path_off = c->hbuf_len;
    // The copy's source is hbuf itself: grow first so realloc cannot move it mid-copy.
    if (http__grow(&c->hbuf, &c->hbuf_cap, c->hbuf_len + path_len + 2)) return HPE_USER;
    if (http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, c->hbuf, path_len) ||
        http__append(&c->hbuf, &c->hbuf_len, &c->hbuf_cap, "", 1))
        return HPE_USER;
    for (int i = 0; i < c->n_spans; i++) {
        char *name = c->hbuf + c->spans[i].name_off;
        for (char *q = name; *q; q++) *q = (char)tolower((unsigned char)*q);
        c->headers[i].name = name;
        c->headers[i].value = c->spans[i].value_off == SIZE_MAX ? "" : c->hbuf + c->spans[i].value_off;
    }
    r->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    r->url = c->hbuf;
    r->path = c->hbuf + path_off;
    r->headers = c->headers;
    r->n_headers = c->n_spans;
    r->body = c->body ? c->body : "";
    r->body_len = c->body_len;
    r->keep_alive = llhttp_should_keep_alive(p);
    c->keep_alive = r->keep_alive;
    return HPE_PAUSED;
}

// ---- reading and dispatch

static void http__dispatch(struct srv_http_conn *c) {
    struct srv_http_server *s = c->srv;
    c->state = HTTP__BUSY;
    s->n_busy++;
    uv_timer_stop(&c->timer);
    c->close_after = !c->keep_alive;
    // CORS preflight is answered here when configured; otherwise it reaches the handler.
    if (s->cors[0] && strcmp(c->req.method, "OPTIONS") == 0) {
        srv_http_respond(c, 204, NULL,
                         "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
                         "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                         "Access-Control-Max-Age: 600\r\n",
                         NULL, 0);
        return;
    }
    s->cb(c, &c->req, s->cb_arg);
}

// Parses what is buffered, dispatching each complete request in turn while no answer is open.
static void http__process(struct srv_http_conn *c) {
    if (c->processing) return; // an answer given inside the handler; the outer loop goes on
    c->processing = true;
    size_t off = 0;
    while (!c->closing && c->state != HTTP__BUSY && off < c->in_len) {
        const char *data = c->in + off;
        llhttp_errno_t e = llhttp_execute(&c->parser, data, c->in_len - off);
        if (e == HPE_OK) {
            off = c->in_len;
        } else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            const char *pos = llhttp_get_error_pos(&c->parser);
            off += pos && pos >= data ? (size_t)(pos - data) : c->in_len - off;
            if (e == HPE_PAUSED_UPGRADE) c->keep_alive = false; // no protocol switch here
            http__dispatch(c);
        } else {
            int status = c->error_status ? c->error_status : 400;
            char msg[256];
            if (status == 413)
                snprintf(msg, sizeof msg, "request body is larger than max_body_bytes (%zu)",
                         c->srv->cfg.max_body_bytes);
            else if (status == 431)
                snprintf(msg, sizeof msg, "request headers are larger than max_header_bytes (%zu)",
                         c->srv->cfg.max_header_bytes);
            else
                snprintf(msg, sizeof msg, "malformed HTTP request (%s)", llhttp_errno_name(e));
            log_debug("http: %s", msg);
            c->in_len = 0;
            http__error(c, status, msg);
            c->processing = false;
            return;
        }
    }
    if (off > 0 && !c->closing) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    c->processing = false;
    // Keep reading while busy (to see the client leave), but only so much.
    if (!c->closing && !c->reading && c->in_len < HTTP__INFLIGHT_BUFFER) http__start_reading(c);
}

static void http__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    struct srv_http_conn *c = h->data;
    (void)suggested;
    if (http__grow(&c->in, &c->in_cap, c->in_len + 65536)) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = c->in + c->in_len;
    buf->len = c->in_cap - c->in_len;
}

static void http__read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
    struct srv_http_conn *c = st->data;
    (void)buf;
    if (nread < 0) {
        // EOF or an error: the client is gone; an unfinished answer is aborted.
        http__conn_close(c);
        return;
    }
    if (nread == 0 || c->closing) return; // closing: lingering, what arrives is discarded
    c->in_len += (size_t)nread;
    if (c->state == HTTP__BUSY) {
        if (c->in_len >= HTTP__INFLIGHT_BUFFER) {
            uv_read_stop(st);
            c->reading = false;
        }
        return;
    }
    http__process(c);
    if (!c->closing && c->state == HTTP__BUSY && c->in_len >= HTTP__INFLIGHT_BUFFER) {
        uv_read_stop(st);
        c->reading = false;
    }
}

static void http__start_reading(struct srv_http_conn *c) {
    if (c->closing) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, http__alloc_cb, http__read_cb) == 0)
        c->reading = true;
}

// ---- accepting

static void http__on_connection(uv_stream_t *server, int status) {
    struct srv_http_server *s = server->data;
    if (status < 0) {
        log_warn("http: accept failed: %s", uv_strerror(status));
        return;
    }
    struct srv_http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->n_open_handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (s->cfg.metrics) s->cfg.metrics->n_open_connections = (uint64_t)s->n_conns;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        http__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->keep_alive = true;
    if (s->n_conns > s->cfg.max_connections || s->draining) {
        // At most one line a second: a flood of connections must not become a flood of logs.
        if (uv_now(s->loop) >= s->last_refusal_log_ms + 1000) {
            s->last_refusal_log_ms = uv_now(s->loop);
            log_warn("http: %d connections open (max_connections %d): refusing one", s->n_conns - 1,
                     s->cfg.max_connections);
        }
        http__error(c, 503, "too many connections, try again later");
        return;
    }
    http__set_timer(c, s->cfg.idle_timeout_s);
    http__start_reading(c);
}

// ---- the server

int srv_http_init(struct srv_http_server **out, uv_loop_t *loop, const struct srv_http_config *cfg,
                  srv_http_request_cb cb, void *arg) {
    *out = NULL;
    if (!cfg || !cb || !cfg->host || cfg->max_connections < 1)
        return err_set(ERR_INVAL, "http: incomplete configuration");
    struct srv_http_server *s = calloc(1, sizeof *s);
    if (!s) return err_set(ERR_NOMEM, "http: out of memory");
    s->loop = loop;
    s->cfg = *cfg;
    snprintf(s->host, sizeof s->host, "%s", cfg->host);
    snprintf(s->cors, sizeof s->cors, "%s", cfg->cors_allow_origin ? cfg->cors_allow_origin : "");
    // Header values cannot carry line breaks: a configured origin with one is cut there.
    s->cors[strcspn(s->cors, "\r\n")] = '\0';
    s->cfg.host = s->host;
    s->cfg.cors_allow_origin = s->cors;
    s->cb = cb;
    s->cb_arg = arg;
    s->bound_port = -1;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = http__on_message_begin;
    s->settings.on_url = http__on_url;
    s->settings.on_url_complete = http__on_url_complete;
    s->settings.on_header_field = http__on_header_field;
    s->settings.on_header_field_complete = http__on_header_field_complete;
    s->settings.on_header_value = http__on_header_value;
    s->settings.on_header_value_complete = http__on_header_value_complete;
    s->settings.on_headers_complete = http__on_headers_complete;
    s->settings.on_body = http__on_body;
    s->settings.on_message_complete = http__on_message_complete;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    *out = s;
    return 0;
}

int srv_http_listen(struct srv_http_server *s) {
    struct sockaddr_storage addr;
    if (uv_ip4_addr(s->host, s->cfg.port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(s->host, s->cfg.port, (struct sockaddr_in6 *)&addr) != 0)
        return err_set(ERR_INVAL, "host '%s' is not an IPv4 or IPv6 address", s->host);
    int rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, 1024, http__on_connection);
    if (rc < 0)
        return err_set(ERR_IO, "cannot listen on %s:%d: %s%s", s->host, s->cfg.port,
                       uv_strerror(rc),
                       rc == UV_EADDRINUSE ? " (another server is using the port; pick another "
                                             "with --port)" : "");
    struct sockaddr_storage name;
    int len = sizeof name;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len) == 0)
        s->bound_port = name.ss_family == AF_INET6
                            ? ntohs(((struct sockaddr_in6 *)&name)->sin6_port)
                            : ntohs(((struct sockaddr_in *)&name)->sin_port);
    s->listening = true;
    return 0;
}

int srv_http_port(const struct srv_http_server *s) { return s->bound_port; }
bool srv_http_draining(const struct srv_http_server *s) { return s->draining; }
int srv_http_n_busy(const struct srv_http_server *s) { return s->n_busy; }
int srv_http_n_connections(const struct srv_http_server *s) { return s->n_conns; }

static void http__listener_closed_cb(uv_handle_t *h) { (void)h; }

void srv_http_drain(struct srv_http_server *s) {
    if (s->draining) return;
    s->draining = true;
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, http__listener_closed_cb);
    for (struct srv_http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == HTTP__IDLE) http__conn_close(c);
    }
}

void srv_http_close(struct srv_http_server *s) {
    s->draining = true;
    s->closed = true;
    if (!uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, http__listener_closed_cb);
    for (struct srv_http_conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        http__conn_close(c);
    }
}

void srv_http_free(struct srv_http_server *s) { free(s); }

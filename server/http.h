// HTTP/1.1 server on libuv with llhttp: keep-alive, pipelining answered in order, Content-Length
// and chunked request bodies, limits (413 body, 431 headers, 503 beyond max_connections), idle
// and header timeouts, optional CORS, plain and chunked (streaming) responses with a bounded
// write queue.
//
// Threads: everything here runs on the loop thread; no function is thread-safe.
//
// Request flow: when a request is complete, the server calls the handler with it. The handler
// answers exactly once, now or later (srv_http_respond, or srv_http_stream_start + writes +
// srv_http_stream_end). Until it has answered, the connection reads no further request (later
// pipelined requests wait, in order). If the connection closes before the answer is complete
// (client gone, write error, slow reader, shutdown), the abort callback set with
// srv_http_set_abort() is called once and the handler must not use the connection again.
//
// Lifetimes: struct srv_http_request and everything it points to is valid until the handler
// answers (the end of the response) or the abort callback runs, whichever comes first.
#ifndef KEEL_SERVER_HTTP_H
#define KEEL_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct srv_metrics;

struct srv_http_config {
    const char *host;           // listen address (IPv4 or IPv6 literal)
    int port;                   // 0: any free port (see srv_http_port)
    size_t max_body_bytes;      // 413 beyond
    size_t max_header_bytes;    // request line + headers; 431 beyond
    double idle_timeout_s;      // keep-alive connection with no request in progress
    double header_timeout_s;    // from a request's first byte to its last
    int max_connections;        // beyond: 503 and close
    size_t max_write_queue_bytes; // a reader this far behind is dropped (0: 16 MiB)
    const char *cors_allow_origin; // NULL or "": CORS off (preflight answered 405 by the handler)
    struct srv_metrics *metrics;   // responses and connections are counted here (may be NULL)
};

struct srv_http_header {
    const char *name;  // lower-cased
    const char *value;
};

struct srv_http_request {
    const char *method;   // "GET", "POST", ...
    const char *url;      // as sent: path and query
    const char *path;     // url without the query string (NUL-terminated copy)
    const struct srv_http_header *headers;
    int n_headers;
    const char *body;     // NUL-terminated after body_len bytes (for convenience)
    size_t body_len;
    bool keep_alive;
};

// A header's value by lower-case name, or NULL.
const char *srv_http_header(const struct srv_http_request *r, const char *name);

struct srv_http_conn;
struct srv_http_server;

typedef void (*srv_http_request_cb)(struct srv_http_conn *c, const struct srv_http_request *r,
                                    void *arg);

// Creates the server on `loop` (not yet listening). Returns 0, ERR_INVAL or ERR_NOMEM.
int srv_http_init(struct srv_http_server **s, uv_loop_t *loop, const struct srv_http_config *cfg,
                  srv_http_request_cb cb, void *arg);

// Binds and listens. Returns 0, or ERR_IO with err_msg() naming the address and the reason
// ("address already in use"), or ERR_INVAL for an address that does not parse.
int srv_http_listen(struct srv_http_server *s);

// The port actually bound (useful with port 0), or -1.
int srv_http_port(const struct srv_http_server *s);

// Stops accepting connections; idle keep-alive connections are closed, busy ones get
// "Connection: close" on their current answer and close after it. Idempotent.
void srv_http_drain(struct srv_http_server *s);
bool srv_http_draining(const struct srv_http_server *s);

// Requests whose answer is not finished yet, and open connections.
int srv_http_n_busy(const struct srv_http_server *s);
int srv_http_n_connections(const struct srv_http_server *s);

// Closes every connection now (aborting unfinished answers) and the listening socket. The
// handles finish closing when the loop runs; srv_http_free() must come after that.
void srv_http_close(struct srv_http_server *s);
void srv_http_free(struct srv_http_server *s); // NULL-safe

// ---- answering (loop thread)

// Sets the callback for "the connection closed before the answer was complete" (see above).
void srv_http_set_abort(struct srv_http_conn *c, void (*abort_cb)(void *ctx), void *ctx);

// A whole response. extra_headers: "Name: value\r\n" lines or NULL. Returns 0, or ERR_IO when
// the connection is already gone (the answer is dropped; the connection is being closed).
int srv_http_respond(struct srv_http_conn *c, int status, const char *content_type,
                     const char *extra_headers, const char *body, size_t len);

// A streamed response: headers now, then chunks, then the end (chunked transfer encoding, or
// the raw body and a close for HTTP/1.0 clients). Same return codes; a write that would put the
// connection past max_write_queue_bytes closes it (ERR_IO, abort callback called).
int srv_http_stream_start(struct srv_http_conn *c, int status, const char *content_type,
                          const char *extra_headers);
int srv_http_stream_write(struct srv_http_conn *c, const char *data, size_t len);
int srv_http_stream_end(struct srv_http_conn *c);

// The server a connection belongs to.
struct srv_http_server *srv_http_conn_server(struct srv_http_conn *c);

// The reason phrase of a status code ("Not Found").
const char *srv_http_reason(int status);

#endif

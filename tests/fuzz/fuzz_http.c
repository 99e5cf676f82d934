// libFuzzer target: the HTTP/1.1 server (server/http.c) fed over a real loopback socket. The
// server runs on a libuv loop in this thread with small limits (so 413 and 431 are reachable) and
// a trivial handler that answers at once, answers a turn of the loop later, or streams a chunked
// answer over several turns. Each input is sent on a fresh connection, split into up to four
// writes with the loop run between them (so requests arrive in pieces, as from a slow client);
// then the loop runs until the server has gone quiet, the client closes, and the connection must
// be gone within a bounded number of turns (a connection that never closes is a finding). Every
// 64 inputs a well-formed request must still get its 200.
//
// Input layout: byte 0 chooses the number of pieces (1..4) and where they are cut; the rest is
// what the client sends.
#include "common/err.h"
#include "common/log.h"
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

// Turns of the loop a connection may take to settle or to close before it counts as hung.
#define FUZZ__MAX_TURNS 20000
// Turns with nothing received and nothing in progress after which the server is "quiet".
#define FUZZ__QUIET_TURNS 8

static uv_loop_t fuzz__loop;
static struct srv_http_server *fuzz__srv;
static int fuzz__port;
static uint64_t fuzz__n_inputs;

// ---- the handler: answers now, a turn later, or as a stream over several turns

struct fuzz__deferred {
    uv_timer_t timer;
    struct srv_http_conn *conn; // NULL once the connection aborted the answer
    bool stream;
    int step;
};

static void fuzz__deferred_closed(uv_handle_t *h) { free(h->data); }

static void fuzz__deferred_finish(struct fuzz__deferred *d) {
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, fuzz__deferred_closed);
}

static void fuzz__abort(void *ctx) {
    struct fuzz__deferred *d = ctx;
    d->conn = NULL;
    fuzz__deferred_finish(d);
}

// One step of a deferred answer; a non-zero return means the connection is gone (the abort
// callback has already run and freed nothing yet: the close above is asynchronous).
static void fuzz__deferred_step(uv_timer_t *t) {
    struct fuzz__deferred *d = t->data;
    if (!d->conn) return;
    struct srv_http_conn *c = d->conn;
    int rc = 0;
    if (!d->stream) {
        d->conn = NULL;
        srv_http_set_abort(c, NULL, NULL);
        srv_http_respond(c, 200, "text/plain", NULL, "later", 5);
        fuzz__deferred_finish(d);
        return;
    }
    switch (d->step++) {
    case 0: rc = srv_http_stream_start(c, 200, "text/event-stream", "Cache-Control: no-cache\r\n"); break;
    case 1: rc = srv_http_stream_write(c, "data: one\n\n", 11); break;
    case 2: rc = srv_http_stream_write(c, "data: two\n\n", 11); break;
    default:
        d->conn = NULL;
        srv_http_set_abort(c, NULL, NULL);
        srv_http_stream_end(c);
        fuzz__deferred_finish(d);
        return;
    }
    // On ERR_IO the abort callback has run (d->conn is NULL and the timer is closing).
    if (rc == 0 && d->conn) uv_timer_start(&d->timer, fuzz__deferred_step, 0, 0);
}

static void fuzz__handle(struct srv_http_conn *c, const struct srv_http_request *r, void *arg) {
    (void)arg;
    // Touch everything the request exposes, so the sanitizers check its lifetime.
    size_t sum = strlen(r->method) + strlen(r->url) + strlen(r->path) + r->body_len;
    for (int i = 0; i < r->n_headers; i++)
        sum += strlen(r->headers[i].name) + strlen(r->headers[i].value);
    if (r->body[r->body_len] != '\0') abort(); // the promised NUL after the body
    const char *ct = srv_http_header(r, "content-type");
    if (strcmp(r->path, "/later") == 0 || strcmp(r->path, "/stream") == 0) {
        struct fuzz__deferred *d = calloc(1, sizeof *d);
        if (!d) abort();
        d->conn = c;
        d->stream = strcmp(r->path, "/stream") == 0;
        uv_timer_init(&fuzz__loop, &d->timer);
        d->timer.data = d;
        srv_http_set_abort(c, fuzz__abort, d);
        uv_timer_start(&d->timer, fuzz__deferred_step, 0, 0);
        return;
    }
    if (strcmp(r->path, "/echo") == 0) {
        srv_http_respond(c, 200, ct ? ct : "application/octet-stream", NULL, r->body, r->body_len);
        return;
    }
    if (strcmp(r->path, "/ok") == 0) {
        srv_http_respond(c, 200, "text/plain", "X-Fuzz: 1\r\n", "ok", 2);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof body, "{\"n\":%zu}", sum);
    srv_http_respond(c, 404, "application/json", NULL, body, (size_t)n);
}

// ---- the client side: a plain non-blocking socket in this thread

static int fuzz__connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) abort();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fuzz__port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // Non-blocking, so libFuzzer's SIGALRM (its -timeout check) cannot interrupt it half-way;
    // loopback connects complete from the listen backlog, before the loop accepts.
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        perror("fuzz_http: connect");
        abort();
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof err;
    for (int i = 0; i < 1000 && poll(&p, 1, 10) <= 0; i++) uv_run(&fuzz__loop, UV_RUN_NOWAIT);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        fprintf(stderr, "fuzz_http: connect: %s\n", strerror(err));
        abort();
    }
    return fd;
}

// Reads whatever is there. Returns bytes read (>= 0), or -1 when the server closed.
static ssize_t fuzz__drain(int fd, char *keep, size_t keep_cap, size_t *keep_len) {
    char buf[16384];
    ssize_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            total += n;
            if (keep && *keep_len < keep_cap) {
                size_t m = (size_t)n < keep_cap - *keep_len ? (size_t)n : keep_cap - *keep_len;
                memcpy(keep + *keep_len, buf, m);
                *keep_len += m;
            }
            continue;
        }
        if (n == 0) return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return total;
        if (errno == EINTR) continue;
        return -1; // reset
    }
}

static void fuzz__send(int fd, const uint8_t *p, size_t n) {
    int turns = 0;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            uv_run(&fuzz__loop, UV_RUN_NOWAIT);
            fuzz__drain(fd, NULL, 0, NULL);
            if (++turns > FUZZ__MAX_TURNS) abort(); // the server stopped reading for good
        } else {
            return; // the server closed on us (an error answer): fine
        }
    }
    uv_run(&fuzz__loop, UV_RUN_NOWAIT);
}

// Runs the loop until the server has answered what it will answer and gone quiet (or closed).
// Copies the first keep_cap received bytes to keep.
static void fuzz__settle(int fd, char *keep, size_t keep_cap, size_t *keep_len) {
    int quiet = 0;
    for (int turn = 0; turn < FUZZ__MAX_TURNS; turn++) {
        uv_run(&fuzz__loop, UV_RUN_NOWAIT);
        ssize_t got = fuzz__drain(fd, keep, keep_cap, keep_len);
        if (got < 0) return;
        if (got == 0 && srv_http_n_busy(fuzz__srv) == 0) {
            if (++quiet >= FUZZ__QUIET_TURNS) return;
        } else {
            quiet = 0;
        }
    }
    fprintf(stderr, "fuzz_http: the server never went quiet (busy %d)\n", srv_http_n_busy(fuzz__srv));
    abort();
}

// After the client has closed, every connection must be gone within a bounded number of turns.
static void fuzz__expect_no_connections(void) {
    for (int turn = 0; turn < FUZZ__MAX_TURNS; turn++) {
        if (srv_http_n_connections(fuzz__srv) == 0 && srv_http_n_busy(fuzz__srv) == 0) return;
        uv_run(&fuzz__loop, UV_RUN_NOWAIT);
    }
    fprintf(stderr, "fuzz_http: %d connection(s) still open (%d busy) after the client closed\n",
            srv_http_n_connections(fuzz__srv), srv_http_n_busy(fuzz__srv));
    abort();
}

// A well-formed request on a fresh connection must get its 200 "ok".
static void fuzz__check_alive(void) {
    static const char req[] = "GET /ok HTTP/1.1\r\nHost: fuzz\r\n\r\n";
    int fd = fuzz__connect();
    fuzz__send(fd, (const uint8_t *)req, sizeof req - 1);
    char got[512];
    size_t len = 0;
    for (int turn = 0; turn < FUZZ__MAX_TURNS; turn++) {
        uv_run(&fuzz__loop, UV_RUN_NOWAIT);
        if (fuzz__drain(fd, got, sizeof got - 1, &len) < 0) break;
        got[len] = '\0';
        if (strstr(got, "\r\n\r\nok")) break;
    }
    got[len] = '\0';
    if (strncmp(got, "HTTP/1.1 200 ", 13) != 0 || !strstr(got, "\r\n\r\nok")) {
        fprintf(stderr, "fuzz_http: the server no longer answers a plain GET; got %zu bytes:\n%s\n",
                len, got);
        abort();
    }
    close(fd);
    fuzz__expect_no_connections();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    // As in keel serve: a write to a client that has gone is EPIPE for that connection, not a
    // process-killing SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&fuzz__loop) != 0) abort();
    struct srv_http_config cfg = {
        .host = "127.0.0.1",
        .port = 0,
        .max_body_bytes = 2048,
        .max_header_bytes = 1024,
        .idle_timeout_s = 60,
        .header_timeout_s = 60,
        .max_connections = 4,
        .max_write_queue_bytes = 1 << 20,
    };
    if (srv_http_init(&fuzz__srv, &fuzz__loop, &cfg, fuzz__handle, NULL) != 0 ||
        srv_http_listen(fuzz__srv) != 0) {
        fprintf(stderr, "fuzz_http: cannot listen on loopback: %s\n", err_msg());
        exit(1);
    }
    fuzz__port = srv_http_port(fuzz__srv);
    fuzz__check_alive();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    int fd = fuzz__connect();
    // Cut points from the mode byte: 1 + (mode & 3) pieces, cut at fractions set by mode >> 2.
    int pieces = 1 + (mode & 3);
    size_t off = 0;
    for (int i = 1; i <= pieces; i++) {
        size_t end = i == pieces ? size : size * (size_t)(i * 4 + ((mode >> 2) & 3)) / (size_t)(pieces * 4 + 4);
        if (end < off) end = off;
        if (end > size) end = size;
        fuzz__send(fd, data + off, end - off);
        off = end;
    }
    size_t dummy = 0;
    fuzz__settle(fd, NULL, 0, &dummy);
    close(fd);
    fuzz__expect_no_connections();
    if (++fuzz__n_inputs % 64 == 0) fuzz__check_alive();
    return 0;
}

// Server-sent events for keel-bench: an incremental line parser that survives events split
// across reads at any byte, the meaning of one streamed completion chunk, and the per-request
// result record the client fills.
#include "bench/bench.h"

#include "common/err.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

// ---- the SSE line parser

void bench_sse_init(struct bench_sse *s) {
    memset(s, 0, sizeof(*s));
}

void bench_sse_free(struct bench_sse *s) {
    if (!s) return;
    free(s->line);
    free(s->data);
    memset(s, 0, sizeof(*s));
}

static int grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb) return err_set(ERR_NOMEM, "out of memory in the SSE parser");
    *buf = nb;
    *cap = ncap;
    return 0;
}

static int dispatch(struct bench_sse *s, bench_sse_cb cb, void *user) {
    if (!s->has_data) return 0;
    s->has_data = false;
    size_t n = s->data_len;
    s->data_len = 0;
    s->data[n] = '\0';
    return cb(user, s->data, n);
}

// One complete line (without its end-of-line bytes).
static int handle_line(struct bench_sse *s, const char *line, size_t n, bench_sse_cb cb,
                       void *user) {
    if (n == 0) return dispatch(s, cb, user);
    if (line[0] == ':') return 0; // a comment, often a keep-alive ping
    const char *colon = memchr(line, ':', n);
    size_t name_len = colon ? (size_t)(colon - line) : n;
    if (name_len != 4 || memcmp(line, "data", 4) != 0) return 0; // event:, id:, retry:
    const char *v = colon ? colon + 1 : line + n;
    size_t vn = (size_t)(line + n - v);
    if (vn > 0 && v[0] == ' ') v++, vn--;
    // Several data lines of one event are joined with "\n", as the SSE specification says.
    size_t need = s->data_len + (s->has_data ? 1 : 0) + vn + 1;
    int rc = grow(&s->data, &s->data_cap, need);
    if (rc) return rc;
    if (s->has_data) s->data[s->data_len++] = '\n';
    memcpy(s->data + s->data_len, v, vn);
    s->data_len += vn;
    s->has_data = true;
    return 0;
}

int bench_sse_feed(struct bench_sse *s, const char *p, size_t n, bench_sse_cb cb, void *user) {
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (!nl) { // keep the unfinished line for the next read
            int rc = grow(&s->line, &s->line_cap, s->line_len + take + 1);
            if (rc) return rc;
            memcpy(s->line + s->line_len, p, take);
            s->line_len += take;
            return 0;
        }
        const char *line = p;
        size_t ll = take;
        if (s->line_len > 0) { // complete the line started in an earlier read
            int rc = grow(&s->line, &s->line_cap, s->line_len + take + 1);
            if (rc) return rc;
            memcpy(s->line + s->line_len, p, take);
            line = s->line;
            ll = s->line_len + take;
            s->line_len = 0;
        }
        if (ll > 0 && line[ll - 1] == '\r') ll--;
        int rc = handle_line(s, line, ll, cb, user);
        if (rc) return rc;
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

int bench_sse_finish(struct bench_sse *s, bench_sse_cb cb, void *user) {
    if (s->line_len > 0) {
        size_t ll = s->line_len;
        s->line_len = 0;
        if (ll > 0 && s->line[ll - 1] == '\r') ll--;
        int rc = handle_line(s, s->line, ll, cb, user);
        if (rc) return rc;
    }
    return dispatch(s, cb, user);
}

// ---- one streamed chunk

static bool nonempty_string(const cJSON *v) {
    return cJSON_IsString(v) && v->valuestring[0] != '\0';
}

int bench_chunk_parse(const char *data, size_t len, enum bench_endpoint ep,
                      struct bench_chunk *out) {
    memset(out, 0, sizeof(*out));
    while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\r' || data[len - 1] == '\n'))
        len--;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        out->done = true;
        return 0;
    }
    cJSON *j = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return err_set(ERR_FORMAT, "a streamed event is not a JSON object: %.80s", data);
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (err) {
        const cJSON *m =
            cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "message") : err;
        snprintf(out->error, sizeof(out->error), "%s",
                 cJSON_IsString(m) ? m->valuestring : "error event without a message");
    }
    // Completions: any choice counts as a token event, as in vLLM's client (a token may
    // detokenize to "" while its bytes are held back). Chat: a delta that only announces the
    // role carries no token, so it must not start the first-token clock.
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    const cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    if (c0 && ep == BENCH_EP_COMPLETIONS) {
        out->token = true;
    } else if (c0) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(c0, "delta");
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
        out->token = nonempty_string(cJSON_GetObjectItemCaseSensitive(d, "content")) ||
                     nonempty_string(cJSON_GetObjectItemCaseSensitive(d, "reasoning_content")) ||
                     nonempty_string(fin);
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
    if (cJSON_IsObject(usage)) {
        const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
        if (cJSON_IsNumber(ct)) {
            out->usage = true;
            out->completion_tokens = (int)ct->valuedouble;
            out->prompt_tokens = cJSON_IsNumber(pt) ? (int)pt->valuedouble : -1;
        }
    }
    cJSON_Delete(j);
    return 0;
}

// ---- per-request results

int bench_result_add_itl(struct bench_result *r, double itl_s) {
    if (r->n_itl == r->cap_itl) {
        int ncap = r->cap_itl ? r->cap_itl * 2 : 64;
        double *n = realloc(r->itl_s, (size_t)ncap * sizeof(*n));
        if (!n) return err_set(ERR_NOMEM, "out of memory for inter-token latencies");
        r->itl_s = n;
        r->cap_itl = ncap;
    }
    r->itl_s[r->n_itl++] = itl_s;
    return 0;
}

void bench_result_set_error(struct bench_result *r, const char *fmt, ...) {
    r->success = false;
    if (r->error) return; // the first reason is the real one
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    r->error = strdup(buf);
}

void bench_result_clear(struct bench_result *r) {
    if (!r) return;
    free(r->error);
    free(r->itl_s);
    memset(r, 0, sizeof(*r));
}

// The way back from ids to text: tok_decode and the streaming decoder. Both concatenate the bytes
// of the ids (the byte-level decoder's output, precomputed per id at load) and turn them into
// UTF-8 the way Rust's String::from_utf8_lossy does, which is what HF decode returns: every
// maximal ill-formed subsequence becomes one U+FFFD. The streaming decoder holds back only a
// truncated but still valid character, so its pieces always add up to the full decode.
#include "models/tok_internal.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

// ---- decoding -----------------------------------------------------------------------------------

// A growable output buffer.
struct obuf {
    char *p;
    size_t len, cap;
};

static int obuf_put(struct obuf *b, const void *src, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return err_set(ERR_NOMEM, "tokenizer: out of memory decoding");
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

// Copies s[0..n) to b as UTF-8, each maximal ill-formed subsequence replaced by one U+FFFD (the
// Unicode-recommended practice that Rust's from_utf8_lossy and Python's errors="replace" share).
// Unless final, a truncated but so far valid sequence at the end is left unconsumed; returns the
// number of bytes consumed through *used.
static int put_lossy(struct obuf *b, const uint8_t *s, size_t n, bool final, size_t *used) {
    static const char fffd[] = "\xEF\xBF\xBD";
    size_t i = 0, run = 0; // s[run..i) is valid text not yet copied
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int len = tok__utf8_len(s + i, n - i);
        if (len) {
            i += len;
            continue;
        }
        // Invalid or truncated: measure the longest valid prefix of a sequence starting here.
        size_t k = 1;
        uint8_t c = s[i];
        int need = (c >= 0xC2 && c <= 0xDF)   ? 2
                   : (c >= 0xE0 && c <= 0xEF) ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4
                                              : 1;
        for (; (int)k < need && i + k < n; k++) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (k == 1) {
                if (c == 0xE0)
                    lo = 0xA0;
                else if (c == 0xED)
                    hi = 0x9F;
                else if (c == 0xF0)
                    lo = 0x90;
                else if (c == 0xF4)
                    hi = 0x8F;
            }
            if (s[i + k] < lo || s[i + k] > hi) break;
        }
        if ((int)k < need && i + k == n && !final) break; // may still complete
        int rc = obuf_put(b, s + run, i - run);
        if (rc || (rc = obuf_put(b, fffd, 3))) return rc;
        i += k;
        run = i;
    }
    *used = i;
    return obuf_put(b, s + run, i - run);
}

int tok_decode(const struct tok_tokenizer *t, const int32_t *ids, int n, bool skip_special,
               char **text, size_t *len) {
    *text = NULL;
    struct obuf raw = {0}, out = {0};
    int rc = obuf_put(&raw, "", 0);
    for (int i = 0; !rc && i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->present[id]) {
            rc = err_set(ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", id,
                         t->n_vocab - 1);
            break;
        }
        if (skip_special && t->special[id]) continue;
        rc = obuf_put(&raw, t->bytes_blob + t->bytes_off[id], t->bytes_len[id]);
    }
    size_t used;
    if (!rc) rc = obuf_put(&out, "", 0);
    if (!rc) rc = put_lossy(&out, (const uint8_t *)raw.p, raw.len, true, &used);
    free(raw.p);
    if (rc) {
        free(out.p);
        return rc;
    }
    *text = out.p;
    if (len) *len = out.len;
    return 0;
}

// ---- streaming ----------------------------------------------------------------------------------

void tok_stream_init(struct tok_stream *s, const struct tok_tokenizer *t, bool skip_special) {
    memset(s, 0, sizeof(*s));
    s->t = t;
    s->skip_special = skip_special;
}

int tok_stream_push(struct tok_stream *s, int32_t id, char **out, size_t *out_len) {
    const struct tok_tokenizer *t = s->t;
    if (id < 0 || id >= t->n_vocab || !t->present[id])
        return err_set(ERR_RANGE, "token id %d is outside the vocabulary (0..%d)", id,
                       t->n_vocab - 1);
    if (s->skip_special && t->special[id]) return 0;
    size_t n = (size_t)s->n_pending + t->bytes_len[id];
    uint8_t stackbuf[256], *buf = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
    if (!buf) return err_set(ERR_NOMEM, "tokenizer: out of memory decoding");
    memcpy(buf, s->pending, s->n_pending);
    memcpy(buf + s->n_pending, t->bytes_blob + t->bytes_off[id], t->bytes_len[id]);
    struct obuf b = {*out, *out ? *out_len : 0, 0};
    if (*out) b.cap = *out_len + 1; // the caller's buffer holds at least len + NUL
    size_t used = 0;
    int rc = put_lossy(&b, buf, n, false, &used);
    if (!rc) {
        // What is left is a truncated but valid prefix: at most 3 bytes.
        s->n_pending = (int)(n - used);
        memcpy(s->pending, buf + used, n - used);
        *out = b.p;
        *out_len = b.len;
    }
    if (buf != stackbuf) free(buf);
    return rc;
}

int tok_stream_flush(struct tok_stream *s, char **out, size_t *out_len) {
    if (s->n_pending == 0) return 0;
    struct obuf b = {*out, *out ? *out_len : 0, 0};
    if (*out) b.cap = *out_len + 1;
    size_t used;
    int rc = put_lossy(&b, s->pending, s->n_pending, true, &used);
    if (!rc) {
        s->n_pending = 0;
        *out = b.p;
        *out_len = b.len;
    }
    return rc;
}

// Encoding text to ids, step for step as Hugging Face `tokenizers` runs a byte-level BPE
// tokenizer.json:
//   1. added tokens are split off the raw text (leftmost-longest, honouring single_word, lstrip,
//      rstrip; special ones only when allowed);
//   2. each remaining segment is normalized (NFC for Qwen, via utf8proc), and added tokens marked
//      `normalized` are split off the normalized text;
//   3. the pre-tokenizer regexes split each segment into pieces (PCRE2 with Unicode properties);
//   4. each piece's bytes are merged by rank (a heap of candidate pairs over a linked list of
//      symbols), through a word cache shared by all threads.
#include "models/tok_internal.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

// ---- output -------------------------------------------------------------------------------------

struct ivec {
    int32_t *p;
    int n, cap;
};

static int ivec_push(struct ivec *v, const int32_t *ids, int n) {
    if (v->n + n > v->cap) {
        int cap = v->cap ? v->cap : 64;
        while (cap < v->n + n)
            cap *= 2;
        int32_t *p = realloc(v->p, (size_t)cap * sizeof(int32_t));
        if (!p) return err_set(ERR_NOMEM, "tokenizer: out of memory encoding");
        v->p = p, v->cap = cap;
    }
    memcpy(v->p + v->n, ids, (size_t)n * sizeof(int32_t));
    v->n += n;
    return 0;
}

// ---- BPE ----------------------------------------------------------------------------------------

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

// Rank and merged id of the pair (a, b); rank -1 when the pair never merges.
static int32_t merge_of(const struct tok_tokenizer *t, int32_t a, int32_t b, int32_t *merged) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = t->merge_cap - 1;
    uint64_t h = 1469598103934665603ull;
    const uint8_t *k = (const uint8_t *)&key;
    for (int i = 0; i < 8; i++)
        h = (h ^ k[i]) * 1099511628211ull;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        if (t->merge_key[i] == key) {
            *merged = t->merge_id[i];
            return t->merge_rank[i];
        }
        if (t->merge_key[i] == UINT64_MAX) return -1;
    }
}

struct bpe_sym {
    int32_t id;
    int prev, next; // -1 at the ends
};
struct bpe_cand {
    int32_t rank;
    int pos;
};

static bool cand_less(struct bpe_cand a, struct bpe_cand b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

static void heap_push(struct bpe_cand *h, int *n, struct bpe_cand c) {
    int i = (*n)++;
    while (i > 0 && cand_less(c, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static struct bpe_cand heap_pop(struct bpe_cand *h, int *n) {
    struct bpe_cand top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(h[c + 1], h[c])) c++;
        if (!cand_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static void push_pair(const struct tok_tokenizer *t, const struct bpe_sym *sym, int pos,
                      struct bpe_cand *heap, int *n_heap) {
    if (pos < 0 || sym[pos].next < 0) return;
    int32_t merged;
    int32_t rank = merge_of(t, sym[pos].id, sym[sym[pos].next].id, &merged);
    if (rank >= 0) heap_push(heap, n_heap, (struct bpe_cand){rank, pos});
}

// Merges the bytes of one piece: always the lowest-ranked adjacent pair, leftmost among equals,
// which is the order HF's BPE applies its merges in.
static int bpe_merge(const struct tok_tokenizer *t, const uint8_t *s, int n, struct ivec *out) {
    struct bpe_sym stack_sym[64];
    struct bpe_cand stack_heap[192];
    struct bpe_sym *sym = n <= 64 ? stack_sym : malloc((size_t)n * sizeof(*sym));
    struct bpe_cand *heap = n <= 64 ? stack_heap : malloc((size_t)3 * n * sizeof(*heap));
    if (!sym || !heap) {
        if (sym != stack_sym) free(sym);
        if (heap != stack_heap) free(heap);
        return err_set(ERR_NOMEM, "tokenizer: out of memory encoding");
    }
    int n_heap = 0;
    for (int i = 0; i < n; i++)
        sym[i] = (struct bpe_sym){t->byte_id[s[i]], i - 1, i + 1 < n ? i + 1 : -1};
    for (int i = 0; i + 1 < n; i++)
        push_pair(t, sym, i, heap, &n_heap);
    while (n_heap > 0) {
        struct bpe_cand c = heap_pop(heap, &n_heap);
        int pos = c.pos, next = sym[pos].next;
        if (sym[pos].id < 0 || next < 0) continue;
        int32_t merged;
        if (merge_of(t, sym[pos].id, sym[next].id, &merged) != c.rank) continue; // stale
        sym[pos].id = merged;
        sym[pos].next = sym[next].next;
        if (sym[next].next >= 0) sym[sym[next].next].prev = pos;
        sym[next].id = -1;
        push_pair(t, sym, sym[pos].prev, heap, &n_heap);
        push_pair(t, sym, pos, heap, &n_heap);
    }
    int rc = 0;
    for (int i = 0; i >= 0 && !rc; i = sym[i].next)
        rc = ivec_push(out, &sym[i].id, 1);
    if (sym != stack_sym) free(sym);
    if (heap != stack_heap) free(heap);
    return rc;
}

// With ignore_merges, a piece that is itself a token is taken whole.
static int32_t whole_piece_id(const struct tok_tokenizer *t, const uint8_t *s, int n) {
    char stackbuf[256] = {0};
    char *buf = 2 * (size_t)n <= sizeof(stackbuf) ? stackbuf : malloc(2 * (size_t)n);
    if (!buf) return -1;
    buf[0] = 0;
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        // The byte's token text is the UTF-8 of its byte-level character.
        int32_t id = t->byte_id[s[i]];
        memcpy(buf + m, t->text_blob + t->text_off[id], t->text_len[id]);
        m += t->text_len[id];
    }
    int32_t id = tok__lookup(t, buf, m);
    if (buf != stackbuf) free(buf);
    return id;
}

static int bpe_piece(const struct tok_tokenizer *t, const char *s, int n, struct ivec *out) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int32_t id = whole_piece_id(t, (const uint8_t *)s, n);
        if (id >= 0) return ivec_push(out, &id, 1);
    }
    if (n == 1) return ivec_push(out, &t->byte_id[(uint8_t)s[0]], 1);
    struct tok_tokenizer *mt = (struct tok_tokenizer *)t; // the cache is the one mutable part
    bool cacheable = n <= TOK__CACHE_MAX_KEY;
    uint64_t h = 0;
    struct tok__cache_slot *slot = NULL;
    if (cacheable) {
        h = hash_bytes(s, n);
        slot = &mt->cache[h & (TOK__CACHE_SLOTS - 1)];
        pthread_mutex_lock(&mt->cache_mu);
        if (slot->key && slot->hash == h && slot->key_len == n && memcmp(slot->key, s, n) == 0) {
            int rc = ivec_push(out, slot->ids, slot->n_ids);
            pthread_mutex_unlock(&mt->cache_mu);
            return rc;
        }
        pthread_mutex_unlock(&mt->cache_mu);
    }
    int start = out->n;
    int rc = bpe_merge(t, (const uint8_t *)s, n, out);
    if (rc || !cacheable) return rc;
    int n_ids = out->n - start;
    char *key = malloc(n);
    int32_t *ids = malloc((size_t)n_ids * sizeof(int32_t));
    if (!key || !ids) { // the cache is only an optimisation
        free(key);
        free(ids);
        return 0;
    }
    memcpy(key, s, n);
    memcpy(ids, out->p + start, (size_t)n_ids * sizeof(int32_t));
    pthread_mutex_lock(&mt->cache_mu);
    free(slot->key);
    free(slot->ids);
    *slot = (struct tok__cache_slot){h, key, n, ids, n_ids};
    pthread_mutex_unlock(&mt->cache_mu);
    return 0;
}

// ---- pre-tokenizer ------------------------------------------------------------------------------

// Applies split step `step` to s[0..n) and passes each piece on to the next step, the last
// step's pieces to BPE. Matches never cross the segment: lookarounds see its ends, as in HF.
static int pretok(const struct tok_tokenizer *t, pcre2_match_data *md, int step, const char *s,
                  size_t n, struct ivec *out) {
    if (n == 0) return 0;
    if (step == t->n_splits) return bpe_piece(t, s, (int)n, out);
    const struct tok__split *sp = &t->splits[step];
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t pos = 0, last = 0;
    while (pos <= n) {
        int rc = pcre2_match(sp->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return err_set(ERR_INTERNAL, "tokenizer: pre-tokenizer regex failed (%d)", rc);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { // an empty match splits nothing; step over one character
            if (ms >= n) break;
            pos = ms + 1;
            while (pos < n && ((uint8_t)s[pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        if (ms > last && (rc = pretok(t, md, step + 1, s + last, ms - last, out))) return rc;
        if (sp->behavior == TOK__ISOLATED && (rc = pretok(t, md, step + 1, s + ms, me - ms, out)))
            return rc;
        last = pos = me;
    }
    if (last < n) return pretok(t, md, step + 1, s + last, n - last, out);
    return 0;
}

// ---- added tokens -------------------------------------------------------------------------------

static bool is_white_space(int32_t c) { // Unicode White_Space, as Rust's char::is_whitespace
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// Rust regex's Unicode \w, which HF uses for single_word: alphabetic (letters and letter
// numbers), marks, decimal digits, connector punctuation, joiners. (Other_Alphabetic symbols such
// as circled letters are the rare characters this approximation misses.)
static bool is_word_char(int32_t c) {
    if (c == 0x200C || c == 0x200D) return true;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

// The character that ends at s[end) (end > 0) and the one that starts at s[pos].
static int32_t cp_before(const char *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80)
        i--;
    return tok__utf8_cp((const uint8_t *)s + i, (int)(end - i));
}
static int32_t cp_at(const char *s, size_t n, size_t pos) {
    int len = tok__utf8_len((const uint8_t *)s + pos, n - pos);
    return len ? tok__utf8_cp((const uint8_t *)s + pos, len) : -1;
}

// The first added token match at or after pos: leftmost, and longest there (t->added is sorted
// longest first). Only tokens of the given `normalized` pass, and special ones only if allowed.
static const struct tok__added *find_added(const struct tok_tokenizer *t, const char *s, size_t n,
                                           size_t pos, bool normalized, bool allow_special,
                                           size_t *at) {
    for (size_t i = pos; i < n; i++) {
        if (!t->added_first[(uint8_t)s[i]]) continue;
        for (int k = 0; k < t->n_added; k++) {
            const struct tok__added *a = &t->added[k];
            if (a->content[0] != s[i] || a->normalized != normalized ||
                (a->special && !allow_special))
                continue;
            if ((size_t)a->len <= n - i && memcmp(s + i, a->content, a->len) == 0) {
                *at = i;
                return a;
            }
        }
    }
    return NULL;
}

// Splits s[0..n) around added tokens, as HF's AddedVocabulary does: `seg` is called for each
// stretch of plain text, the token ids go straight to out.
typedef int (*segment_cb)(const struct tok_tokenizer *t, const char *s, size_t n, void *ctx);

static int split_added(const struct tok_tokenizer *t, const char *s, size_t n, bool normalized,
                       bool allow_special, segment_cb seg, void *ctx, struct ivec *out) {
    size_t pos = 0, start_offset = 0, at;
    const struct tok__added *a;
    int rc;
    while (pos < n && (a = find_added(t, s, n, pos, normalized, allow_special, &at))) {
        size_t start = at, stop = at + a->len;
        pos = stop;
        if (a->single_word) {
            bool word_before = start > 0 && is_word_char(cp_before(s, start));
            bool word_after = stop < n && is_word_char(cp_at(s, n, stop));
            if (word_before || word_after) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t i = ns - 1;
                while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80)
                    i--;
                if (!is_white_space(tok__utf8_cp((const uint8_t *)s + i, (int)(ns - i)))) break;
                ns = i;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                int len = tok__utf8_len((const uint8_t *)s + stop, n - stop);
                if (!len || !is_white_space(tok__utf8_cp((const uint8_t *)s + stop, len))) break;
                stop += len;
            }
        }
        if (start_offset < start && (rc = seg(t, s + start_offset, start - start_offset, ctx)))
            return rc;
        if ((rc = ivec_push(out, &a->id, 1))) return rc;
        start_offset = stop;
    }
    if (start_offset < n) return seg(t, s + start_offset, n - start_offset, ctx);
    return 0;
}

// ---- the pipeline -------------------------------------------------------------------------------

struct enc_ctx {
    pcre2_match_data *md;
    bool allow_special;
    struct ivec *out;
};

static int seg_pretok(const struct tok_tokenizer *t, const char *s, size_t n, void *ctx) {
    struct enc_ctx *c = ctx;
    return pretok(t, c->md, 0, s, n, c->out);
}

static bool has_normalized_added(const struct tok_tokenizer *t) {
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].normalized) return true;
    return false;
}

// Normalizes s[0..n) with one form into *out (malloc'd). Only the stretches around non-ASCII
// text go through utf8proc: a cut just before an ASCII character never changes the result (no
// composition has an ASCII second character, and nothing after a starter reorders across it),
// so ASCII runs are copied as they are.
static int normalize_form(const char *s, size_t n, utf8proc_option_t opts, char **out,
                          size_t *out_n) {
    size_t cap = n + n / 4 + 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) return err_set(ERR_NOMEM, "tokenizer: out of memory normalizing");
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (uint8_t)s[j] < 0x80)
            j++;
        size_t start = j > i ? j - 1 : j; // the ASCII character before may take combining marks
        size_t end = j;
        while (end < n && (uint8_t)s[end] >= 0x80)
            end++;
        size_t need = len + (start - i);
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t m = 0;
        if (end > start) {
            m = utf8proc_map((const utf8proc_uint8_t *)s + start, (utf8proc_ssize_t)(end - start),
                             &dst, opts);
            if (m < 0) {
                free(buf);
                return err_set(ERR_INVAL, "tokenizer: normalization failed: %s",
                               utf8proc_errmsg(m));
            }
        }
        need += (size_t)m;
        if (need + 1 > cap) {
            while (cap < need + 1)
                cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                free(dst);
                return err_set(ERR_NOMEM, "tokenizer: out of memory normalizing");
            }
            buf = nb;
        }
        memcpy(buf + len, s + i, start - i);
        len += start - i;
        memcpy(buf + len, dst, (size_t)m);
        len += (size_t)m;
        free(dst);
        i = end;
    }
    *out = buf;
    *out_n = len;
    return 0;
}

int tok__normalize(const struct tok_tokenizer *t, const char *s, size_t n, char **out,
                   size_t *out_n) {
    static const utf8proc_option_t opts[] = {
        UTF8PROC_STABLE | UTF8PROC_COMPOSE, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE,
        UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
    *out = NULL;
    *out_n = 0;
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++)
        ascii = (uint8_t)s[i] < 0x80;
    // Every normalization form leaves ASCII text as it is.
    for (int k = 0; !ascii && k < t->n_norms; k++) {
        char *next = NULL;
        size_t next_n = 0;
        int rc = normalize_form(s, n, opts[t->norms[k]], &next, &next_n);
        free(*out);
        *out = NULL;
        if (rc) return rc;
        *out = next, *out_n = next_n;
        s = next, n = next_n;
    }
    return 0;
}

// A stretch of raw text between non-normalized added tokens: normalize it, split off the
// normalized added tokens, pre-tokenize and merge the rest.
static int seg_normalize(const struct tok_tokenizer *t, const char *s, size_t n, void *ctx) {
    struct enc_ctx *c = ctx;
    char *norm;
    size_t norm_n;
    int rc = tok__normalize(t, s, n, &norm, &norm_n);
    if (rc) return rc;
    if (norm) s = norm, n = norm_n;
    rc = has_normalized_added(t)
             ? split_added(t, s, n, true, c->allow_special, seg_pretok, c, c->out)
             : seg_pretok(t, s, n, c);
    free(norm);
    return rc;
}

static int validate_utf8(const char *text, size_t len) {
    const uint8_t *s = (const uint8_t *)text;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int l = tok__utf8_len(s + i, len - i);
        if (!l)
            return err_set(ERR_INVAL, "text is not valid UTF-8 (byte 0x%02x at offset %zu)", s[i],
                           i);
        i += l;
    }
    return 0;
}

int tok_encode(const struct tok_tokenizer *t, const char *text, size_t len, bool allow_special,
               int32_t **ids, int *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return err_set(ERR_INVAL, "tok_encode: NULL text");
    if (len > (size_t)1 << 30)
        return err_set(ERR_RANGE, "tok_encode: text of %zu bytes is too long", len);
    int rc = validate_utf8(text, len);
    if (rc) return rc;
    struct ivec out = {0};
    struct enc_ctx c = {pcre2_match_data_create(1, NULL), allow_special, &out};
    if (!c.md) return err_set(ERR_NOMEM, "tokenizer: out of memory encoding");
    rc = split_added(t, text, len, false, allow_special, seg_normalize, &c, &out);
    pcre2_match_data_free(c.md);
    if (rc) {
        free(out.p);
        return rc;
    }
    if (!out.p) out.p = malloc(sizeof(int32_t)); // a valid pointer even for no ids
    if (!out.p) return err_set(ERR_NOMEM, "tokenizer: out of memory encoding");
    *ids = out.p;
    *n_ids = out.n;
    return 0;
}

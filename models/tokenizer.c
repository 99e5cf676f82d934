// The tokenizer's tables: loading tokenizer.json (vocab, merges, added tokens, normalizer,
// pre-tokenizer, decoder) and tokenizer_config.json (chat template), and the lookups. Encoding
// lives in tok_encode.c, decoding in tok_decode.c, the chat template in chat.c.
//
// Every component type of tokenizer.json is checked against what keel implements; anything else
// is refused with ERR_UNSUPPORTED naming the component, so a model whose tokenizer keel would get
// wrong never loads silently.
#include "models/tok_internal.h"

#include "common/err.h"
#include "common/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- small helpers ------------------------------------------------------------------------------

static uint64_t fnv1a(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

int tok__utf8_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xBF; // allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF)
        len = 2;
    else if (b == 0xE0)
        len = 3, lo = 0xA0;
    else if (b == 0xED)
        len = 3, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF)
        len = 3;
    else if (b == 0xF0)
        len = 4, lo = 0x90;
    else if (b == 0xF4)
        len = 4, hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3)
        len = 4;
    else
        return 0;
    if ((size_t)len > n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

int32_t tok__utf8_cp(const uint8_t *s, int len) {
    switch (len) {
    case 1:
        return s[0];
    case 2:
        return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

static int read_file(const char *path, char **out, size_t *out_len) {
    return file_read_all(path, (size_t)1 << 30, out, out_len);
}

static int load_json(const char *dir, const char *name, cJSON **out) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len);
    if (rc) return rc;
    *out = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!*out) return err_set(ERR_FORMAT, "%s: not valid JSON", path);
    return 0;
}

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool json_true(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

// ---- the byte-level alphabet
// ---------------------------------------------------------------------

// GPT-2's reversible map from bytes to printable code points: printable Latin-1 bytes stand for
// themselves, the rest are shifted to U+0100 and up.
static void byte_level_table(int32_t byte_cp[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        byte_cp[b] = printable ? b : 256 + n++;
    }
}

// ---- vocab --------------------------------------------------------------------------------------

int32_t tok__lookup(const struct tok_tokenizer *t, const char *s, size_t len) {
    uint32_t mask = t->vocab_ht_cap - 1;
    for (uint32_t i = (uint32_t)fnv1a(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vocab_ht[i];
        if (id < 0) return -1;
        if (t->text_len[id] == len && memcmp(t->text_blob + t->text_off[id], s, len) == 0)
            return id;
    }
}

static void vocab_insert(struct tok_tokenizer *t, int32_t id) {
    const char *s = t->text_blob + t->text_off[id];
    uint32_t len = t->text_len[id], mask = t->vocab_ht_cap - 1;
    for (uint32_t i = (uint32_t)fnv1a(s, len) & mask;; i = (i + 1) & mask) {
        int32_t cur = t->vocab_ht[i];
        if (cur < 0 ||
            (t->text_len[cur] == len && memcmp(t->text_blob + t->text_off[cur], s, len) == 0)) {
            t->vocab_ht[i] = id;
            return;
        }
    }
}

// Fills the id -> text arrays from the model vocab and the added tokens, then the lookup table.
static int load_vocab(struct tok_tokenizer *t, const cJSON *vocab, const cJSON *added) {
    int n = 0;
    size_t blob = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 16777216)
            return err_set(ERR_FORMAT, "tokenizer.json: vocab entry '%s' has no valid id",
                           it->string);
        if (it->valueint + 1 > n) n = it->valueint + 1;
        blob += strlen(it->string);
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *content = json_str(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 16777216 || !content)
            return err_set(ERR_FORMAT, "tokenizer.json: an added token lacks id or content");
        if (id->valueint + 1 > n) n = id->valueint + 1;
        blob += strlen(content);
    }
    if (n == 0) return err_set(ERR_FORMAT, "tokenizer.json: empty vocab");
    t->n_vocab = n;
    t->text_blob = malloc(blob + 1);
    t->text_off = calloc((unsigned)n, sizeof(uint32_t));
    t->text_len = calloc((unsigned)n, sizeof(uint32_t));
    t->present = calloc((unsigned)n, sizeof(bool));
    t->special = calloc((unsigned)n, sizeof(bool));
    t->vocab_ht_cap = 1;
    while (t->vocab_ht_cap < 2u * (uint32_t)n)
        t->vocab_ht_cap <<= 1;
    t->vocab_ht = malloc(t->vocab_ht_cap * sizeof(int32_t));
    if (!t->text_blob || !t->text_off || !t->text_len || !t->present || !t->special || !t->vocab_ht)
        return err_set(ERR_NOMEM, "tokenizer: out of memory for the vocab");
    memset(t->vocab_ht, 0xff, t->vocab_ht_cap * sizeof(int32_t));
    size_t off = 0;
    cJSON_ArrayForEach(it, vocab) {
        size_t len = strlen(it->string);
        memcpy(t->text_blob + off, it->string, len);
        t->text_off[it->valueint] = (uint32_t)off;
        t->text_len[it->valueint] = (uint32_t)len;
        t->present[it->valueint] = true;
        off += len;
    }
    // Added tokens override the vocab's text for their id, as the added vocabulary does in HF.
    cJSON_ArrayForEach(it, added) {
        int id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        const char *content = json_str(it, "content");
        size_t len = strlen(content);
        memcpy(t->text_blob + off, content, len);
        t->text_off[id] = (uint32_t)off;
        t->text_len[id] = (uint32_t)len;
        t->present[id] = true;
        off += len;
    }
    for (int id = 0; id < n; id++)
        if (t->present[id]) vocab_insert(t, id);
    return 0;
}

// The bytes each id decodes to: the byte-level decoder maps every character of a token back to
// its byte; a token with any character outside the alphabet (an added token such as "<|x|>" is
// inside it, "中" is not) keeps its UTF-8 text as is, which is what HF's ByteLevel decoder does.
static int load_decoded_bytes(struct tok_tokenizer *t) {
    int32_t byte_cp[256], cp_byte[512];
    byte_level_table(byte_cp);
    for (int i = 0; i < 512; i++)
        cp_byte[i] = -1;
    for (int b = 0; b < 256; b++)
        cp_byte[byte_cp[b]] = b;
    size_t total = 0;
    for (int id = 0; id < t->n_vocab; id++)
        total += t->text_len[id];
    t->bytes_blob = malloc(total + 1);
    t->bytes_off = calloc((unsigned)t->n_vocab, sizeof(uint32_t));
    t->bytes_len = calloc((unsigned)t->n_vocab, sizeof(uint32_t));
    if (!t->bytes_blob || !t->bytes_off || !t->bytes_len)
        return err_set(ERR_NOMEM, "tokenizer: out of memory for the decoder");
    size_t off = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        const uint8_t *s = (const uint8_t *)t->text_blob + t->text_off[id];
        size_t len = t->text_len[id], start = off;
        bool mapped = true;
        for (size_t i = 0; i < len;) {
            int cl = tok__utf8_len(s + i, len - i);
            if (cl == 0) return err_set(ERR_FORMAT, "tokenizer.json: token %d is not UTF-8", id);
            int32_t cp = tok__utf8_cp(s + i, cl);
            if (cp >= 512 || cp_byte[cp] < 0) {
                mapped = false;
                break;
            }
            t->bytes_blob[off++] = (uint8_t)cp_byte[cp];
            i += cl;
        }
        if (!mapped) {
            off = start;
            memcpy(t->bytes_blob + off, s, len);
            off += len;
        }
        t->bytes_off[id] = (uint32_t)start;
        t->bytes_len[id] = (uint32_t)(off - start);
    }
    for (int b = 0; b < 256; b++) {
        char buf[4];
        int cp = byte_cp[b], n = cp < 0x80 ? 1 : 2;
        if (n == 1)
            buf[0] = (char)cp;
        else
            buf[0] = (char)(0xC0 | (cp >> 6)), buf[1] = (char)(0x80 | (cp & 0x3F));
        t->byte_id[b] = tok__lookup(t, buf, n);
        if (t->byte_id[b] < 0)
            return err_set(ERR_UNSUPPORTED,
                           "tokenizer.json: byte-level BPE without a token for byte 0x%02x", b);
    }
    return 0;
}

// ---- merges -------------------------------------------------------------------------------------

static int merge_insert(struct tok_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = t->merge_cap - 1;
    for (uint32_t i = (uint32_t)fnv1a(&key, 8) & mask;; i = (i + 1) & mask) {
        if (t->merge_key[i] == key) return 0; // a repeated pair keeps its first (best) rank
        if (t->merge_key[i] == UINT64_MAX) {
            t->merge_key[i] = key;
            t->merge_rank[i] = rank;
            t->merge_id[i] = id;
            return 0;
        }
    }
}

static int load_merges(struct tok_tokenizer *t, const cJSON *merges) {
    int n = cJSON_GetArraySize(merges);
    t->merge_cap = 1;
    while (t->merge_cap < 2u * (uint32_t)n + 2)
        t->merge_cap <<= 1;
    t->merge_key = malloc(t->merge_cap * sizeof(uint64_t));
    t->merge_rank = malloc(t->merge_cap * sizeof(int32_t));
    t->merge_id = malloc(t->merge_cap * sizeof(int32_t));
    if (!t->merge_key || !t->merge_rank || !t->merge_id)
        return err_set(ERR_NOMEM, "tokenizer: out of memory for the merges");
    memset(t->merge_key, 0xff, t->merge_cap * sizeof(uint64_t));
    char *buf = NULL;
    size_t cap = 0;
    int rank = 0, rc = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) { // the older "a b" form
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = err_set(ERR_FORMAT, "tokenizer.json: merge %d '%s' is not 'a b'", rank,
                             it->valuestring);
                break;
            }
            a = it->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring, la = strlen(a);
            b = cJSON_GetArrayItem(it, 1)->valuestring, lb = strlen(b);
        } else {
            rc =
                err_set(ERR_FORMAT, "tokenizer.json: merge %d is neither \"a b\" nor [a, b]", rank);
            break;
        }
        if (la + lb > cap) {
            cap = 2 * (la + lb);
            free(buf);
            if (!(buf = malloc(cap))) {
                rc = err_set(ERR_NOMEM, "tokenizer: out of memory for the merges");
                break;
            }
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int32_t ia = tok__lookup(t, a, la), ib = tok__lookup(t, b, lb),
                im = tok__lookup(t, buf, la + lb);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = err_set(ERR_FORMAT,
                         "tokenizer.json: merge %d ('%.*s' '%.*s') names a token not in the vocab",
                         rank, (int)la, a, (int)lb, b);
            break;
        }
        merge_insert(t, ia, ib, rank++, im);
    }
    free(buf);
    return rc;
}

// ---- components ---------------------------------------------------------------------------------

static int check_model(const cJSON *model) {
    const char *type = json_str(model, "type");
    if (!type || strcmp(type, "BPE") != 0)
        return err_set(ERR_UNSUPPORTED, "tokenizer.json: model type '%s' (keel supports BPE)",
                       type ? type : "?");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return err_set(ERR_UNSUPPORTED, "tokenizer.json: BPE dropout");
    if (json_true(model, "byte_fallback"))
        return err_set(ERR_UNSUPPORTED,
                       "tokenizer.json: BPE byte_fallback (keel supports byte-level BPE)");
    const char *pre = json_str(model, "continuing_subword_prefix");
    const char *suf = json_str(model, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        return err_set(ERR_UNSUPPORTED,
                       "tokenizer.json: BPE continuing_subword_prefix/end_of_word_suffix");
    return 0;
}

static int add_norm(struct tok_tokenizer *t, const cJSON *n) {
    const char *type = json_str(n, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers")) {
            int rc = add_norm(t, it);
            if (rc) return rc;
        }
        return 0;
    }
    static const char *const names[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int i = 0; i < 4; i++) {
        if (type && strcmp(type, names[i]) == 0) {
            if (t->n_norms == TOK__MAX_NORMS)
                return err_set(ERR_UNSUPPORTED, "tokenizer.json: too many normalizers");
            t->norms[t->n_norms++] = (enum tok__norm)i;
            return 0;
        }
    }
    return err_set(ERR_UNSUPPORTED, "tokenizer.json: normalizer type '%s'", type ? type : "?");
}

static int add_split(struct tok_tokenizer *t, const char *pattern, bool literal,
                     enum tok__split_behavior beh) {
    if (t->n_splits == TOK__MAX_SPLITS)
        return err_set(ERR_UNSUPPORTED, "tokenizer.json: too many pre-tokenizers");
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        return err_set(ERR_UNSUPPORTED,
                       "tokenizer.json: pre-tokenizer regex does not compile at %zu: %s",
                       (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // falls back to the interpreter when JIT is missing
    t->splits[t->n_splits].re = re;
    t->splits[t->n_splits++].behavior = beh;
    return 0;
}

// GPT-2's split, which a ByteLevel pre-tokenizer applies when use_regex is true.
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int add_pretok(struct tok_tokenizer *t, const cJSON *p) {
    const char *type = json_str(p, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")) {
            int rc = add_pretok(t, it);
            if (rc) return rc;
        }
        return 0;
    }
    if (type && strcmp(type, "ByteLevel") == 0) {
        if (json_true(p, "add_prefix_space"))
            return err_set(ERR_UNSUPPORTED,
                           "tokenizer.json: ByteLevel pre-tokenizer with add_prefix_space");
        // use_regex defaults to true in HF when the key is absent.
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        if (!ur || cJSON_IsTrue(ur)) return add_split(t, gpt2_pattern, false, TOK__ISOLATED);
        return 0; // the byte mapping itself is implicit: BPE runs on bytes
    }
    if (type && strcmp(type, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = json_str(pat, "Regex"), *lit = json_str(pat, "String");
        const char *beh = json_str(p, "behavior");
        if (!re && !lit)
            return err_set(ERR_FORMAT, "tokenizer.json: Split pre-tokenizer without a pattern");
        if (json_true(p, "invert"))
            return err_set(ERR_UNSUPPORTED, "tokenizer.json: Split with invert");
        enum tok__split_behavior b;
        if (beh && strcmp(beh, "Isolated") == 0)
            b = TOK__ISOLATED;
        else if (beh && strcmp(beh, "Removed") == 0)
            b = TOK__REMOVED;
        else
            return err_set(ERR_UNSUPPORTED, "tokenizer.json: Split behavior '%s'", beh ? beh : "?");
        return add_split(t, re ? re : lit, re == NULL, b);
    }
    return err_set(ERR_UNSUPPORTED, "tokenizer.json: pre_tokenizer type '%s'", type ? type : "?");
}

static int check_decoder(const cJSON *d) {
    const char *type = json_str(d, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(d, "decoders")) {
            int rc = check_decoder(it);
            if (rc) return rc;
        }
        return 0;
    }
    if (type && strcmp(type, "ByteLevel") == 0) return 0;
    return err_set(ERR_UNSUPPORTED, "tokenizer.json: decoder type '%s' (keel supports ByteLevel)",
                   type ? type : "?");
}

// keel never adds special tokens (add_special_tokens=False), so a post-processor only has to be
// one whose other effects (offsets) keel does not use.
static int check_post(const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = json_str(p, "type");
    if (type && (strcmp(type, "ByteLevel") == 0 || strcmp(type, "TemplateProcessing") == 0))
        return 0;
    return err_set(ERR_UNSUPPORTED, "tokenizer.json: post_processor type '%s'", type ? type : "?");
}

static int cmp_added(const void *a, const void *b) {
    const struct tok__added *x = a, *y = b;
    if (x->len != y->len) return y->len - x->len;
    return x->id - y->id;
}

static int load_added(struct tok_tokenizer *t, const cJSON *added) {
    int n = cJSON_GetArraySize(added);
    t->added = calloc(n > 0 ? n : 1, sizeof(*t->added));
    if (!t->added) return err_set(ERR_NOMEM, "tokenizer: out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, added) {
        struct tok__added *a = &t->added[t->n_added];
        const char *content = json_str(it, "content");
        if (!*content) continue; // an empty token can never match
        a->normalized = json_true(it, "normalized");
        // A normalized token is matched in normalized text, so HF normalizes its content too.
        char *norm = NULL;
        size_t norm_n = 0;
        int rc = a->normalized ? tok__normalize(t, content, strlen(content), &norm, &norm_n) : 0;
        if (rc) return rc;
        a->content = norm ? norm : strdup(content);
        if (!a->content) return err_set(ERR_NOMEM, "tokenizer: out of memory");
        if (norm) a->content[norm_n] = 0;
        a->len = (int)strlen(a->content);
        a->id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        a->special = json_true(it, "special");
        a->lstrip = json_true(it, "lstrip");
        a->rstrip = json_true(it, "rstrip");
        a->single_word = json_true(it, "single_word");
        t->special[a->id] = a->special;
        t->added_first[(uint8_t)a->content[0]] = true;
        t->n_added++;
    }
    qsort(t->added, t->n_added, sizeof(*t->added), cmp_added);
    return 0;
}

static int load_tokenizer_json(struct tok_tokenizer *t, const cJSON *root) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(model)) return err_set(ERR_FORMAT, "tokenizer.json: no model");
    if (added && !cJSON_IsArray(added))
        return err_set(ERR_FORMAT, "tokenizer.json: added_tokens is not a list");
    int rc = check_model(model);
    if (rc) return rc;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return err_set(ERR_FORMAT,
                       "tokenizer.json: BPE model without vocab object and merges list");
    t->ignore_merges = json_true(model, "ignore_merges");
    // The components first: an unsupported one is reported before any table is built.
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm) && (rc = add_norm(t, norm))) return rc;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (pre && !cJSON_IsNull(pre) && (rc = add_pretok(t, pre))) return rc;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!dec || cJSON_IsNull(dec))
        return err_set(ERR_UNSUPPORTED, "tokenizer.json: no decoder (keel supports ByteLevel)");
    if ((rc = check_decoder(dec)) ||
        (rc = check_post(cJSON_GetObjectItemCaseSensitive(root, "post_processor"))))
        return rc;
    if ((rc = load_vocab(t, vocab, added)) || (rc = load_merges(t, merges)) ||
        (rc = load_decoded_bytes(t)) || (rc = load_added(t, added)))
        return rc;
    return 0;
}

// The chat template: a string, or a list of {name, template} of which "default" is the one used.
static void load_chat_template(struct tok_tokenizer *t, const cJSON *cfg) {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const char *tmpl = cJSON_IsString(ct) ? ct->valuestring : NULL;
    if (cJSON_IsArray(ct)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, ct) {
            const char *name = json_str(it, "name");
            if (name && strcmp(name, "default") == 0) tmpl = json_str(it, "template");
        }
    }
    tok__chat_detect(t, tmpl);
}

// ---- public: load / free / lookups ------------------------------------------------------------

int tok_load(struct tok_tokenizer **out, const char *dir) {
    *out = NULL;
    struct tok_tokenizer *t = calloc(1, sizeof(*t));
    if (!t) return err_set(ERR_NOMEM, "tokenizer: out of memory");
    pthread_mutex_init(&t->cache_mu, NULL);
    cJSON *root = NULL, *cfg = NULL;
    int rc = load_json(dir, "tokenizer.json", &root);
    if (!rc) rc = load_tokenizer_json(t, root);
    cJSON_Delete(root);
    if (!rc) {
        t->cache = calloc(TOK__CACHE_SLOTS, sizeof(*t->cache));
        if (!t->cache) rc = err_set(ERR_NOMEM, "tokenizer: out of memory for the word cache");
    }
    if (!rc) {
        // A model folder without tokenizer_config.json still encodes; it just has no chat template.
        int crc = load_json(dir, "tokenizer_config.json", &cfg);
        if (crc == ERR_NOT_FOUND) {
            tok__chat_detect(t, NULL);
            snprintf(t->chat_why, sizeof(t->chat_why), "%s/tokenizer_config.json is missing", dir);
            err_clear();
        } else if (crc) {
            rc = crc;
        } else {
            load_chat_template(t, cfg);
        }
        cJSON_Delete(cfg);
    }
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tok_free(struct tok_tokenizer *t) {
    if (!t) return;
    free(t->text_blob);
    free(t->text_off);
    free(t->text_len);
    free(t->present);
    free(t->vocab_ht);
    free(t->bytes_blob);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->merge_key);
    free(t->merge_rank);
    free(t->merge_id);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->special);
    for (int i = 0; i < t->n_splits; i++)
        pcre2_code_free(t->splits[i].re);
    if (t->cache) {
        for (int i = 0; i < TOK__CACHE_SLOTS; i++) {
            free(t->cache[i].key);
            free(t->cache[i].ids);
        }
        free(t->cache);
    }
    pthread_mutex_destroy(&t->cache_mu);
    free(t);
}

int tok_n_vocab(const struct tok_tokenizer *t) {
    return t->n_vocab;
}

bool tok_is_special(const struct tok_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->special[id];
}

int32_t tok_special_id(const struct tok_tokenizer *t, const char *text) {
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, text) == 0) return t->added[i].id;
    return -1;
}

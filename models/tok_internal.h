// Private to the tokenizer (models/tokenizer.c, tok_encode.c, tok_decode.c, chat.c): the loaded
// tokenizer's tables. Nothing outside those files may include this header.
#ifndef KEEL_MODELS_TOK_INTERNAL_H
#define KEEL_MODELS_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8

#include "models/tokenizer.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// ---- component descriptions (from tokenizer.json) ----------------------------------------------

// Unicode normalization forms, applied in order (a Sequence normalizer lists several).
enum tok__norm { TOK__NFC, TOK__NFD, TOK__NFKC, TOK__NFKD };
#define TOK__MAX_NORMS 4

// One pre-tokenizer step: a regex split (Split, or ByteLevel with use_regex) with its behaviour.
enum tok__split_behavior { TOK__ISOLATED, TOK__REMOVED };
struct tok__split {
    pcre2_code *re;
    enum tok__split_behavior behavior;
};
#define TOK__MAX_SPLITS 4

struct tok__added {
    char *content; // the token's text, NUL-terminated
    int len;       // bytes of content
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
};

// The chat template families keel renders by hand (models/chat.c).
enum tok__chat_kind { TOK__CHAT_NONE, TOK__CHAT_QWEN3, TOK__CHAT_QWEN25, TOK__CHAT_QWEN2 };

// One slot of the word cache: a pre-tokenized piece and its BPE ids.
struct tok__cache_slot {
    uint64_t hash;
    char *key; // [key_len] bytes, malloc'd
    int key_len;
    int32_t *ids; // [n_ids], malloc'd
    int n_ids;
};
#define TOK__CACHE_SLOTS 65536
#define TOK__CACHE_MAX_KEY 128

struct tok_tokenizer {
    int n_vocab; // max id + 1 over the model vocab and the added tokens

    // Token text as written in tokenizer.json (byte-level characters), by id.
    char *text_blob;
    uint32_t *text_off; // [n_vocab]
    uint32_t *text_len; // [n_vocab]; 0 for ids that have no token
    bool *present;      // [n_vocab]: the id names a token
    // Text -> id, open addressing over the model vocab and the added tokens.
    int32_t *vocab_ht; // [vocab_ht_cap], -1 = empty
    uint32_t vocab_ht_cap;

    // The bytes each id decodes to (after the byte-level decoder), by id.
    uint8_t *bytes_blob;
    uint32_t *bytes_off; // [n_vocab]
    uint32_t *bytes_len; // [n_vocab]

    int32_t byte_id[256]; // id of the single-byte token of each byte value

    // Merges: (left id, right id) -> rank and merged id, open addressing.
    uint64_t *merge_key; // [merge_cap], UINT64_MAX = empty
    int32_t *merge_rank; // [merge_cap]
    int32_t *merge_id;   // [merge_cap]
    uint32_t merge_cap;
    bool ignore_merges;

    struct tok__added *added; // [n_added], longest content first (matching order)
    int n_added;
    bool added_first[256]; // a byte that starts some added token
    bool *special;         // [n_vocab]: added token with special = true

    enum tok__norm norms[TOK__MAX_NORMS];
    int n_norms;
    struct tok__split splits[TOK__MAX_SPLITS];
    int n_splits;

    enum tok__chat_kind chat_kind;
    char chat_why[256]; // why the template is not supported (when chat_kind is NONE)

    pthread_mutex_t cache_mu;
    struct tok__cache_slot *cache; // [TOK__CACHE_SLOTS]
};

// ---- shared helpers ----------------------------------------------------------------------------

// Looks up the token whose tokenizer.json text is s[0..len); -1 when absent.
int32_t tok__lookup(const struct tok_tokenizer *t, const char *s, size_t len);

// Length of the valid UTF-8 sequence starting at s[0..n), or 0 when it is invalid or truncated.
int tok__utf8_len(const uint8_t *s, size_t n);
// Decodes one valid UTF-8 character (as measured by tok__utf8_len) at s.
int32_t tok__utf8_cp(const uint8_t *s, int len);

// Applies the tokenizer's normalizers to s[0..n) (valid UTF-8). *out is a malloc'd result, or
// NULL when the text is unchanged (ASCII, or no normalizer).
int tok__normalize(const struct tok_tokenizer *t, const char *s, size_t n, char **out,
                   size_t *out_n);

// Recognises the chat template text (models/chat.c); sets t->chat_kind and t->chat_why.
void tok__chat_detect(struct tok_tokenizer *t, const char *tmpl);

#endif

// libFuzzer target: the tokenizer on arbitrary bytes (models/tokenizer*.c): encode (with and
// without special tokens), decode of the ids back to the same text, decode of arbitrary ids, and
// the streaming decoder, whose pieces must equal the full decode. Needs the Qwen3 tokenizer from
// scripts/setup (.cache/qwen3-tokenizer, or KEEL_FUZZ_TOKENIZER=DIR).
#include "common/err.h"
#include "models/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tok_tokenizer *fuzz__tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("KEEL_FUZZ_TOKENIZER");
    if (!dir) dir = ".cache/qwen3-tokenizer";
    if (tok_load(&fuzz__tok, dir) != 0) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", dir, err_msg());
        exit(1);
    }
    return 0;
}

static void fuzz__stream_equals_decode(const int32_t *ids, int n, bool skip) {
    char *full = NULL;
    size_t full_len = 0;
    if (tok_decode(fuzz__tok, ids, n, skip, &full, &full_len) != 0) return;
    struct tok_stream s;
    tok_stream_init(&s, fuzz__tok, skip);
    char *out = NULL;
    size_t out_len = 0;
    for (int i = 0; i < n; i++)
        if (tok_stream_push(&s, ids[i], &out, &out_len) != 0) abort();
    if (tok_stream_flush(&s, &out, &out_len) != 0) abort();
    if (out_len != full_len || (full_len && memcmp(out, full, full_len) != 0)) abort();
    free(out);
    free(full);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    for (int special = 0; special <= 1; special++) {
        int32_t *ids = NULL;
        int n = 0;
        int rc = tok_encode(fuzz__tok, text, size, special, &ids, &n);
        if (rc == 0) {
            // Valid UTF-8 round-trips exactly, after NFC (which the encoder applies).
            fuzz__stream_equals_decode(ids, n, false);
        } else if (rc != ERR_INVAL) {
            abort();
        }
        free(ids);
    }
    // The same bytes read as token ids (any in range) must decode and stream identically.
    int n_vocab = tok_n_vocab(fuzz__tok);
    int n = (int)(size / 4);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    for (int i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = (int32_t)(v % (uint32_t)n_vocab);
    }
    fuzz__stream_equals_decode(ids, n, false);
    fuzz__stream_equals_decode(ids, n, true);
    free(ids);
    return 0;
}

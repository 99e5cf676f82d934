// The tokenizer against Hugging Face goldens (tests/data/tokenizer/, written by
// tests/gen/gen_tokenizer_goldens.py with tokenizers / transformers): ids of every corpus line,
// decode with and without special tokens, streaming decode = full decode, the error paths, and
// the encoding speed.
#include "common/err.h"
#include "models/tokenizer.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TOK_DIR ".cache/qwen3-tokenizer"
#define DATA "tests/data/tokenizer/"

// ---- helpers ------------------------------------------------------------------------------------

static struct tok_tokenizer *load_real(void) {
    if (!test_file_exists(TOK_DIR "/tokenizer.json"))
        TEST_SKIP("%s missing (run scripts/setup)", TOK_DIR);
    struct tok_tokenizer *t = NULL;
    CHECK_OK(tok_load(&t, TOK_DIR));
    return t;
}

// Reads a JSON-lines file into an array of parsed lines, skipping the {"meta": ...} header.
static cJSON **read_jsonl(const char *path, int *n) {
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    cJSON **lines = NULL;
    int cap = 0;
    *n = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) > 0) {
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        CHECK_MSG(j != NULL, "%s: line %d is not JSON", path, *n + 1);
        if (cJSON_GetObjectItem(j, "meta")) {
            cJSON_Delete(j);
            continue;
        }
        if (*n == cap) lines = realloc(lines, sizeof(*lines) * (cap = cap ? 2 * cap : 512));
        lines[(*n)++] = j;
    }
    free(line);
    fclose(f);
    return lines;
}

static void free_jsonl(cJSON **lines, int n) {
    for (int i = 0; i < n; i++)
        cJSON_Delete(lines[i]);
    free(lines);
}

static int32_t *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (*n + 1));
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, arr) ids[i++] = (int32_t)it->valueint;
    return ids;
}

// Prints both id lists from their first difference on; returns whether they are equal.
static bool ids_equal(const char *what, int line, const char *text, const int32_t *got, int n_got,
                      const int32_t *want, int n_want) {
    int k = 0;
    while (k < n_got && k < n_want && got[k] == want[k])
        k++;
    if (k == n_got && k == n_want) return true;
    fprintf(stderr,
            "  %s line %d \"%.80s\": differs at id %d (got %d ids, want %d)\n    got :", what, line,
            text, k, n_got, n_want);
    for (int i = k; i < n_got && i < k + 8; i++)
        fprintf(stderr, " %d", got[i]);
    fprintf(stderr, "\n    want:");
    for (int i = k; i < n_want && i < k + 8; i++)
        fprintf(stderr, " %d", want[i]);
    fprintf(stderr, "\n");
    return false;
}

// ---- goldens ------------------------------------------------------------------------------------

TEST(tok_ids_match_hf) {
    struct tok_tokenizer *t = load_real();
    int n_corpus, n_gold;
    cJSON **corpus = read_jsonl(DATA "corpus.jsonl", &n_corpus);
    cJSON **gold = read_jsonl(DATA "ids.jsonl", &n_gold);
    CHECK_EQ(n_corpus, n_gold);
    CHECK(n_corpus >= 300);
    int bad = 0, n_plain = 0;
    for (int i = 0; i < n_corpus; i++) {
        const char *text = cJSON_GetObjectItem(corpus[i], "text")->valuestring;
        CHECK_EQ(cJSON_GetObjectItem(gold[i], "i")->valueint, i);
        int n_want, n_got;
        int32_t *want = json_ids(cJSON_GetObjectItem(gold[i], "ids"), &n_want), *got;
        CHECK_OK(tok_encode(t, text, strlen(text), true, &got, &n_got));
        if (!ids_equal("allow_special", i, text, got, n_got, want, n_want)) bad++;
        free(got);
        // Without special tokens: HF's encode_special_tokens; the golden is given where it differs.
        const cJSON *plain = cJSON_GetObjectItem(gold[i], "ids_plain");
        if (plain) {
            free(want);
            want = json_ids(plain, &n_want);
            n_plain++;
        }
        CHECK_OK(tok_encode(t, text, strlen(text), false, &got, &n_got));
        if (!ids_equal("plain", i, text, got, n_got, want, n_want)) bad++;
        free(got);
        free(want);
    }
    fprintf(stderr, "  %d corpus lines (%d with special tokens), %d mismatches\n", n_corpus,
            n_plain, bad);
    CHECK_EQ(bad, 0);
    CHECK(n_plain >= 5);
    free_jsonl(corpus, n_corpus);
    free_jsonl(gold, n_gold);
    tok_free(t);
}

TEST(tok_decode_matches_hf) {
    struct tok_tokenizer *t = load_real();
    int n;
    cJSON **gold = read_jsonl(DATA "decode.jsonl", &n);
    CHECK(n >= 300);
    int bad = 0, n_fffd = 0, n_skip_differs = 0;
    for (int i = 0; i < n; i++) {
        int n_ids;
        int32_t *ids = json_ids(cJSON_GetObjectItem(gold[i], "ids"), &n_ids);
        for (int skip = 0; skip < 2; skip++) {
            const char *want =
                cJSON_GetObjectItem(gold[i], skip ? "text_skip" : "text")->valuestring;
            char *got;
            size_t len;
            CHECK_OK(tok_decode(t, ids, n_ids, skip, &got, &len));
            CHECK_EQ(len, strlen(got));
            if (strcmp(got, want) != 0) {
                fprintf(stderr, "  line %d skip=%d:\n    got : \"%s\"\n    want: \"%s\"\n", i, skip,
                        got, want);
                bad++;
            }
            if (!skip && strstr(want, "\xEF\xBF\xBD")) n_fffd++;
            if (skip && strcmp(want, cJSON_GetObjectItem(gold[i], "text")->valuestring) != 0)
                n_skip_differs++;
            free(got);
        }
        free(ids);
    }
    fprintf(stderr,
            "  %d sequences (%d with U+FFFD, %d where skip_special matters), %d mismatches\n", n,
            n_fffd, n_skip_differs, bad);
    CHECK_EQ(bad, 0);
    CHECK(n_fffd >= 20);
    CHECK(n_skip_differs >= 10);
    free_jsonl(gold, n);
    tok_free(t);
}

// Streams ids one at a time and checks each delta is whole UTF-8 and the total equals tok_decode.
static void check_stream(const struct tok_tokenizer *t, const int32_t *ids, int n, bool skip,
                         int line) {
    struct tok_stream s;
    tok_stream_init(&s, t, skip);
    char *all = NULL;
    size_t all_len = 0;
    for (int i = 0; i < n; i++) {
        size_t before = all_len;
        CHECK_OK(tok_stream_push(&s, ids[i], &all, &all_len));
        for (size_t k = before; k < all_len;) { // every delta ends on a character boundary
            uint8_t c = (uint8_t)all[k];
            size_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            CHECK_MSG(k + cl <= all_len, "line %d: delta after id %d ends inside a character", line,
                      i);
            k += cl;
        }
        CHECK_MSG(s.n_pending <= 3, "line %d: %d bytes pending", line, s.n_pending);
    }
    CHECK_OK(tok_stream_flush(&s, &all, &all_len));
    CHECK_EQ(s.n_pending, 0);
    char *full;
    size_t full_len;
    CHECK_OK(tok_decode(t, ids, n, skip, &full, &full_len));
    CHECK_MSG(all_len == full_len && (full_len == 0 || memcmp(all, full, full_len) == 0),
              "line %d skip=%d: stream \"%.*s\" != decode \"%s\"", line, skip, (int)all_len,
              all ? all : "", full);
    free(all);
    free(full);
}

TEST(tok_stream_equals_decode) {
    struct tok_tokenizer *t = load_real();
    int n;
    cJSON **gold = read_jsonl(DATA "decode.jsonl", &n);
    for (int i = 0; i < n; i++) {
        int n_ids;
        int32_t *ids = json_ids(cJSON_GetObjectItem(gold[i], "ids"), &n_ids);
        check_stream(t, ids, n_ids, false, i);
        check_stream(t, ids, n_ids, true, i);
        free(ids);
    }
    // "中" (E4 B8 AD) split over its three byte tokens, with a special token in between: nothing
    // comes out until the last byte arrives, and the special token waits behind the character
    // only in the sense that bytes are concatenated first (as HF decodes).
    struct tok_stream s;
    tok_stream_init(&s, t, true);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(tok_stream_push(&s, 160, &text, &len)); // byte E4
    CHECK_EQ(len, 0);
    CHECK_EQ(s.n_pending, 1);
    CHECK_OK(tok_stream_push(&s, 116, &text, &len)); // byte B8
    CHECK_EQ(len, 0);
    CHECK_OK(tok_stream_push(&s, 151644, &text, &len)); // <|im_start|>, skipped
    CHECK_EQ(len, 0);
    CHECK_OK(tok_stream_push(&s, 255, &text, &len)); // byte AD
    CHECK_STR(text, "\xE4\xB8\xAD");
    CHECK_EQ(s.n_pending, 0);
    // A truncated character at the end is flushed as one U+FFFD.
    CHECK_OK(tok_stream_push(&s, 160, &text, &len));
    CHECK_STR(text, "\xE4\xB8\xAD");
    CHECK_OK(tok_stream_flush(&s, &text, &len));
    CHECK_STR(text, "\xE4\xB8\xAD\xEF\xBF\xBD");
    CHECK_EQ(tok_stream_push(&s, -1, &text, &len), ERR_RANGE);
    CHECK_EQ(tok_stream_push(&s, tok_n_vocab(t), &text, &len), ERR_RANGE);
    free(text);
    free_jsonl(gold, n);
    tok_free(t);
}

// ---- added-token flags --------------------------------------------------------------------------

// A copy of the real tokenizer.json with its added tokens changed and extended by
// flags_tokens.json (lstrip, rstrip, single_word, normalized, new tokens), as the generator does.
static void write_flags_tokenizer(const char *dir) {
    FILE *f = fopen(TOK_DIR "/tokenizer.json", "rb");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    CHECK_EQ(fread(text, 1, (size_t)n, f), n);
    fclose(f);
    cJSON *root = cJSON_ParseWithLength(text, (size_t)n);
    free(text);
    CHECK(root != NULL);
    f = fopen(DATA "flags_tokens.json", "rb");
    CHECK(f != NULL);
    char buf[8192];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    buf[len] = 0;
    fclose(f);
    cJSON *flags = cJSON_Parse(buf), *added = cJSON_GetObjectItem(root, "added_tokens"), *fl;
    CHECK(flags != NULL && added != NULL);
    cJSON_ArrayForEach(fl, flags) {
        const char *content = cJSON_GetObjectItem(fl, "content")->valuestring;
        cJSON *tok = NULL, *it;
        cJSON_ArrayForEach(it, added) if (strcmp(cJSON_GetObjectItem(it, "content")->valuestring,
                                                 content) == 0) tok = it;
        if (!tok) {
            tok = cJSON_CreateObject();
            cJSON_AddNumberToObject(tok, "id", cJSON_GetObjectItem(fl, "id")->valuedouble);
            cJSON_AddStringToObject(tok, "content", content);
            cJSON_AddItemToArray(added, tok);
        }
        cJSON_ArrayForEach(it, fl) {
            if (!cJSON_IsBool(it)) continue;
            cJSON_DeleteItemFromObject(tok, it->string);
            cJSON_AddBoolToObject(tok, it->string, cJSON_IsTrue(it));
        }
    }
    char *out = cJSON_PrintUnformatted(root);
    char path[256];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    f = fopen(path, "wb");
    fputs(out, f);
    fclose(f);
    free(out);
    cJSON_Delete(flags);
    cJSON_Delete(root);
}

TEST(tok_added_token_flags_match_hf) {
    if (!test_file_exists(TOK_DIR "/tokenizer.json"))
        TEST_SKIP("%s missing (run scripts/setup)", TOK_DIR);
    char dir[] = "/tmp/keel-tokflags-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    write_flags_tokenizer(dir);
    struct tok_tokenizer *t;
    CHECK_OK(tok_load(&t, dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    unlink(path);
    rmdir(dir);
    CHECK_EQ(tok_n_vocab(t), 151673);
    CHECK(tok_is_special(t, 151670) && !tok_is_special(t, 151669));
    int n_corpus, n_gold;
    cJSON **corpus = read_jsonl(DATA "flags_corpus.jsonl", &n_corpus);
    cJSON **gold = read_jsonl(DATA "flags.jsonl", &n_gold);
    int bad = 0;
    for (int i = 0; i < n_gold; i++) {
        int line = cJSON_GetObjectItem(gold[i], "i")->valueint, n_want, n_got;
        int32_t *want = json_ids(cJSON_GetObjectItem(gold[i], "ids"), &n_want), *got;
        if (line >= 0) {
            CHECK(line < n_corpus);
            const char *text = cJSON_GetObjectItem(corpus[line], "text")->valuestring;
            CHECK_OK(tok_encode(t, text, strlen(text), true, &got, &n_got));
            if (!ids_equal("flags", line, text, got, n_got, want, n_want)) bad++;
            free(got);
            int n_plain;
            int32_t *plain = json_ids(cJSON_GetObjectItem(gold[i], "ids_plain"), &n_plain);
            CHECK_OK(tok_encode(t, text, strlen(text), false, &got, &n_got));
            if (!ids_equal("flags plain", line, text, got, n_got, plain, n_plain)) bad++;
            free(got);
            free(plain);
        }
        for (int skip = 0; skip < 2; skip++) {
            const char *want_text =
                cJSON_GetObjectItem(gold[i], skip ? "text_skip" : "text")->valuestring;
            char *text;
            size_t len;
            CHECK_OK(tok_decode(t, want, n_want, skip, &text, &len));
            if (strcmp(text, want_text) != 0) {
                fprintf(stderr, "  flags decode %d skip=%d: got \"%s\", want \"%s\"\n", i, skip,
                        text, want_text);
                bad++;
            }
            free(text);
        }
        free(want);
    }
    fprintf(stderr, "  %d lines with lstrip/rstrip/single_word/normalized tokens, %d mismatches\n",
            n_gold, bad);
    CHECK_EQ(bad, 0);
    free_jsonl(corpus, n_corpus);
    free_jsonl(gold, n_gold);
    tok_free(t);
}

// ---- threads ------------------------------------------------------------------------------------

struct thread_job {
    const struct tok_tokenizer *t;
    cJSON **corpus, **gold;
    int n, mismatches;
};

static void *encode_all(void *arg) {
    struct thread_job *j = arg;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < j->n; i++) {
            const char *text = cJSON_GetObjectItem(j->corpus[i], "text")->valuestring;
            int n_want, n_got;
            int32_t *want = json_ids(cJSON_GetObjectItem(j->gold[i], "ids"), &n_want), *got;
            if (tok_encode(j->t, text, strlen(text), true, &got, &n_got) != 0) {
                j->mismatches++;
            } else {
                if (n_got != n_want || memcmp(got, want, sizeof(int32_t) * (size_t)n_got) != 0)
                    j->mismatches++;
                free(got);
            }
            free(want);
        }
    }
    return NULL;
}

// One tokenizer shared by four threads (the word cache is the only shared mutable state).
TEST(tok_threads_share_tokenizer) {
    struct tok_tokenizer *t = load_real();
    int n_corpus, n_gold;
    cJSON **corpus = read_jsonl(DATA "corpus.jsonl", &n_corpus);
    cJSON **gold = read_jsonl(DATA "ids.jsonl", &n_gold);
    pthread_t th[4];
    struct thread_job jobs[4];
    for (int k = 0; k < 4; k++) {
        jobs[k] = (struct thread_job){t, corpus, gold, n_corpus, 0};
        CHECK_EQ(pthread_create(&th[k], NULL, encode_all, &jobs[k]), 0);
    }
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        bad += jobs[k].mismatches;
    }
    fprintf(stderr, "  4 threads x 3 rounds x %d lines: %d mismatches\n", n_corpus, bad);
    CHECK_EQ(bad, 0);
    free_jsonl(corpus, n_corpus);
    free_jsonl(gold, n_gold);
    tok_free(t);
}

// ---- lookups and specials -----------------------------------------------------------------------

TEST(tok_specials) {
    struct tok_tokenizer *t = load_real();
    CHECK_EQ(tok_n_vocab(t), 151669);
    CHECK_EQ(tok_special_id(t, "<|im_end|>"), 151645);
    CHECK_EQ(tok_special_id(t, "<|endoftext|>"), 151643);
    CHECK_EQ(tok_special_id(t, "<think>"), 151667);
    CHECK_EQ(tok_special_id(t, "<|nope|>"), -1);
    CHECK(tok_is_special(t, 151645));
    CHECK(!tok_is_special(t, 151667)); // <think> is an added token but not special
    CHECK(!tok_is_special(t, 9707));
    CHECK(!tok_is_special(t, -3));
    CHECK(!tok_is_special(t, 1 << 30));
    // allow_special decides whether "<|im_end|>" in the text is one token or plain text.
    const char *s = "a<|im_end|>";
    int32_t *ids;
    int n;
    CHECK_OK(tok_encode(t, s, strlen(s), true, &ids, &n));
    CHECK_EQ(n, 2);
    CHECK_EQ(ids[1], 151645);
    free(ids);
    CHECK_OK(tok_encode(t, s, strlen(s), false, &ids, &n));
    CHECK(n > 2);
    for (int i = 0; i < n; i++)
        CHECK(ids[i] != 151645);
    free(ids);
    // Empty text: zero ids and a freeable pointer.
    CHECK_OK(tok_encode(t, "", 0, true, &ids, &n));
    CHECK_EQ(n, 0);
    free(ids);
    tok_free(t);
}

// ---- error paths --------------------------------------------------------------------------------

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

TEST(tok_load_errors) {
    struct tok_tokenizer *t = (struct tok_tokenizer *)1;
    CHECK_EQ(tok_load(&t, "/nonexistent/keel-tokenizer"), ERR_NOT_FOUND);
    CHECK(t == NULL);
    CHECK(strstr(err_msg(), "tokenizer.json") != NULL);

    char dir[] = "/tmp/keel-tok-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0");
    CHECK_EQ(tok_load(&t, dir), ERR_FORMAT);
    fprintf(stderr, "  truncated JSON: %s\n", err_msg());

    write_file(path, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}");
    CHECK_EQ(tok_load(&t, dir), ERR_UNSUPPORTED);
    CHECK(strstr(err_msg(), "WordPiece") != NULL);
    fprintf(stderr, "  WordPiece: %s\n", err_msg());

    write_file(path, "{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": \"BPE\", "
                     "\"vocab\": {\"a\": 0},"
                     " \"merges\": []}}");
    CHECK_EQ(tok_load(&t, dir), ERR_UNSUPPORTED);
    CHECK(strstr(err_msg(), "Lowercase") != NULL);
    fprintf(stderr, "  unknown normalizer: %s\n", err_msg());

    write_file(path, "{\"pre_tokenizer\": {\"type\": \"Metaspace\"}, \"model\": {\"type\": "
                     "\"BPE\", \"vocab\": {},"
                     " \"merges\": []}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    CHECK_EQ(tok_load(&t, dir), ERR_UNSUPPORTED);
    CHECK(strstr(err_msg(), "Metaspace") != NULL);

    write_file(
        path,
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": "
        "{\"type\": \"WordPiece\"}}");
    CHECK_EQ(tok_load(&t, dir), ERR_UNSUPPORTED);
    CHECK(strstr(err_msg(), "decoder") != NULL);

    write_file(
        path,
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": "
        "{\"type\": \"ByteLevel\"}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
        "{\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}}");
    CHECK_EQ(tok_load(&t, dir), ERR_UNSUPPORTED);
    fprintf(stderr, "  bad regex: %s\n", err_msg());

    write_file(path,
               "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}, "
               "\"decoder\": {\"type\": \"ByteLevel\"}}");
    CHECK_EQ(tok_load(&t, dir), ERR_FORMAT);
    fprintf(stderr, "  bad merge: %s\n", err_msg());
    unlink(path);
    rmdir(dir);
}

TEST(tok_encode_decode_errors) {
    struct tok_tokenizer *t = load_real();
    int32_t *ids = (int32_t *)1;
    int n = 7;
    static const char *const bad[] = {
        "\xFF", "ab\xC3", "\xC0\xAF", "\xED\xA0\x80", "ok \xF4\x90\x80\x80", "\xE4\xB8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ(tok_encode(t, bad[i], strlen(bad[i]), true, &ids, &n), ERR_INVAL);
        CHECK(ids == NULL);
        CHECK_EQ(n, 0);
    }
    fprintf(stderr, "  invalid UTF-8: %s\n", err_msg());
    int32_t bad_ids[] = {9707, 151669};
    char *text = (char *)1;
    size_t len;
    CHECK_EQ(tok_decode(t, bad_ids, 2, false, &text, &len), ERR_RANGE);
    CHECK(text == NULL);
    bad_ids[1] = -5;
    CHECK_EQ(tok_decode(t, bad_ids, 2, true, &text, &len), ERR_RANGE);
    fprintf(stderr, "  bad id: %s\n", err_msg());
    CHECK_OK(tok_decode(t, bad_ids, 0, false, &text, &len)); // no ids is an empty string
    CHECK_STR(text, "");
    free(text);
    tok_free(t);
}

// ---- speed --------------------------------------------------------------------------------------

static double clock_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

TEST_TIMEOUT(tok_encode_speed, 120) {
    struct tok_tokenizer *t = load_real();
    // About 1 MB of English prose, made of varied sentences so the word cache sees a realistic mix.
    static const char *const words[] = {"the",
                                        "of",
                                        "and",
                                        "to",
                                        "in",
                                        "is",
                                        "that",
                                        "for",
                                        "it",
                                        "as",
                                        "was",
                                        "with",
                                        "be",
                                        "by",
                                        "on",
                                        "not",
                                        "he",
                                        "I",
                                        "this",
                                        "are",
                                        "or",
                                        "his",
                                        "from",
                                        "at",
                                        "which",
                                        "but",
                                        "have",
                                        "an",
                                        "had",
                                        "they",
                                        "you",
                                        "were",
                                        "their",
                                        "one",
                                        "all",
                                        "we",
                                        "can",
                                        "her",
                                        "has",
                                        "there",
                                        "been",
                                        "if",
                                        "more",
                                        "when",
                                        "will",
                                        "would",
                                        "who",
                                        "so",
                                        "no",
                                        "model",
                                        "server",
                                        "memory",
                                        "tokenizer",
                                        "throughput",
                                        "latency",
                                        "scheduling",
                                        "continuous",
                                        "batching",
                                        "allocation",
                                        "everything",
                                        "understanding",
                                        "Photosynthesis",
                                        "Washington",
                                        "University",
                                        "approximately",
                                        "1984",
                                        "42,",
                                        "don't",
                                        "it's",
                                        "we'll",
                                        "(see",
                                        "above)",
                                        "e.g.",
                                        "—",
                                        "\"quoted\"",
                                        "well-known",
                                        "state-of-the-art"};
    const size_t target = 1 << 20;
    char *text = malloc(target + 64);
    size_t len = 0;
    uint32_t rng = 12345;
    int in_sentence = 0;
    while (len < target) {
        rng = rng * 1103515245u + 12345u;
        const char *w = words[(rng >> 8) % (sizeof(words) / sizeof(words[0]))];
        if (in_sentence++ == 0) text[len++] = (char)('A' + (rng >> 20) % 26);
        len += (size_t)sprintf(text + len, "%s", w);
        text[len++] = (rng >> 16) % 13 == 0 ? '.' : ' ';
        if (text[len - 1] == '.') text[len++] = (rng >> 24) % 5 == 0 ? '\n' : ' ', in_sentence = 0;
    }
    int32_t *ids;
    int n;
    CHECK_OK(tok_encode(t, text, 4096, true, &ids, &n)); // warm up
    free(ids);
    // The best of three; CPU time of this thread too, which a loaded machine (CI runs other
    // tests beside this one) distorts far less than wall time.
    double secs = 1e30, cpu = 1e30;
    for (int r = 0; r < 3; r++) {
        double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        CHECK_OK(tok_encode(t, text, len, true, &ids, &n));
        double w = clock_s(CLOCK_MONOTONIC) - w0, c = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
        if (w < secs) secs = w;
        if (c < cpu) cpu = c;
        if (r < 2) free(ids);
    }
    double mbps = (double)len / 1e6 / secs;
    fprintf(
        stderr,
        "  encoded %.2f MB of English: %.1f MB/s wall (%.3f s), %.1f MB/s of one core's CPU time, "
        "%d ids (%.2f bytes/id)\n",
        len / 1e6, mbps, secs, (double)len / 1e6 / cpu, n, (double)len / n);
    CHECK(n > (int)(len / 10) && n < (int)(len / 2));
    // The ids decode back to the text exactly.
    char *back;
    size_t back_len;
    CHECK_OK(tok_decode(t, ids, n, false, &back, &back_len));
    CHECK_EQ(back_len, len);
    CHECK(memcmp(back, text, len) == 0);
    // A loose floor that still catches a pathological slowdown, also under the sanitizers.
    CHECK_MSG(mbps > 0.5, "encoding at %.2f MB/s", mbps);
    free(back);
    free(ids);
    free(text);
    tok_free(t);
}

// ---- keel tokenize ------------------------------------------------------------------------------

// Runs build/keel tokenize over every corpus line plus bad lines: one output line per input line,
// ids as HF gives them, errors for the bad ones, and the tool carries on after each.
TEST_TIMEOUT(tok_cli_tokenize, 60) {
    if (!test_file_exists(TOK_DIR "/tokenizer.json"))
        TEST_SKIP("%s missing (run scripts/setup)", TOK_DIR);
    const char *build = getenv("KEEL_BUILD") ? getenv("KEEL_BUILD") : "build";
    char keel[512];
    snprintf(keel, sizeof(keel), "%s/keel", build);
    if (access(keel, X_OK) != 0) TEST_SKIP("%s not built", keel);
    char in_path[] = "/tmp/keel-tokcli-XXXXXX";
    int fd = mkstemp(in_path);
    CHECK(fd >= 0);
    FILE *in = fdopen(fd, "wb");
    int n_corpus, n_gold;
    cJSON **corpus = read_jsonl(DATA "corpus.jsonl", &n_corpus);
    cJSON **gold = read_jsonl(DATA "ids.jsonl", &n_gold);
    static const char *const bad[] = {"not json",
                                      "{\"text\": 5}",
                                      "{\"text\": \"\xff\xfe\"}",
                                      "[1, 2]",
                                      "{\"ids\": [1, 999999999]}",
                                      "{\"text\": \"a\\u0000b\"}",
                                      ""};
    const int n_bad = (int)(sizeof(bad) / sizeof(bad[0]));
    for (int i = 0; i < n_corpus; i++) {
        char *line = cJSON_PrintUnformatted(corpus[i]);
        fprintf(in, "%s\n", line);
        free(line);
        if (i % 50 == 0) fprintf(in, "%s\n", bad[(i / 50) % n_bad]); // bad lines among good ones
    }
    for (int k = 0; k < n_bad; k++)
        fprintf(in, "%s\n", bad[k]);
    fprintf(in, "{\"ids\": [9707, 1879, 151645], \"skip_special_tokens\": true}\n");
    fclose(in);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s tokenize --model %s < %s", keel, TOK_DIR, in_path);
    FILE *out = popen(cmd, "r");
    CHECK(out != NULL);
    char *line = NULL;
    size_t cap = 0;
    int corpus_i = 0, n_errors = 0, n_lines = 0, bad_ids = 0;
    cJSON *last = NULL;
    while (getline(&line, &cap, out) > 0) {
        cJSON *j = cJSON_Parse(line);
        CHECK_MSG(j != NULL, "output line %d is not JSON: %s", n_lines, line);
        n_lines++;
        if (cJSON_GetObjectItem(j, "error")) {
            n_errors++;
            cJSON_Delete(j);
            continue;
        }
        if (corpus_i < n_corpus) {
            int n_want, n_got;
            int32_t *want = json_ids(cJSON_GetObjectItem(gold[corpus_i], "ids"), &n_want);
            int32_t *got = json_ids(cJSON_GetObjectItem(j, "ids"), &n_got);
            const char *text = cJSON_GetObjectItem(corpus[corpus_i], "text")->valuestring;
            if (!ids_equal("cli", corpus_i, text, got, n_got, want, n_want)) bad_ids++;
            free(want);
            free(got);
            corpus_i++;
            cJSON_Delete(j);
        } else {
            cJSON_Delete(last);
            last = j;
        }
    }
    free(line);
    int status = pclose(out);
    unlink(in_path);
    int n_bad_lines = n_bad + (n_corpus + 49) / 50;
    fprintf(stderr, "  %d output lines: %d corpus lines, %d errors, %d id mismatches\n", n_lines,
            corpus_i, n_errors, bad_ids);
    CHECK_EQ(status, 0);
    CHECK_EQ(n_lines, n_corpus + n_bad_lines + 1);
    CHECK_EQ(corpus_i, n_corpus);
    CHECK_EQ(n_errors, n_bad_lines);
    CHECK_EQ(bad_ids, 0);
    CHECK(last != NULL);
    CHECK_STR(cJSON_GetObjectItem(last, "text")->valuestring, "Hello world");
    cJSON_Delete(last);
    // A missing model folder is exit status 4 with the reason on stderr.
    snprintf(cmd, sizeof(cmd), "%s tokenize --model /nonexistent/model </dev/null 2>/dev/null",
             keel);
    status = system(cmd);
    CHECK_EQ(WEXITSTATUS(status), 4);
    free_jsonl(corpus, n_corpus);
    free_jsonl(gold, n_gold);
}

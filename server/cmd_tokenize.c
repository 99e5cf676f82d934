// `keel tokenize`: the tokenizer on the command line, one JSON object per line.
//
//   {"text": "..."}                      -> {"ids": [...]}   (as HF with add_special_tokens=False)
//   {"text": "...", "special": false}    -> special tokens in the text encoded as plain text
//   {"ids": [...]}                       -> {"text": "..."}  (add "skip_special_tokens": true)
//
// A line that cannot be handled gets {"error": "..."} and the tool goes on, so output line i
// always answers input line i. `--bench FILE` encodes FILE and prints the speed instead.
#include "common/err.h"
#include "models/tokenizer.h"
#include "server/cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: keel tokenize [--model DIR] [--bench FILE [--repeat N]]\n"
        "\n"
        "Reads JSON lines on stdin and writes one JSON line per input line on stdout:\n"
        "  {\"text\": \"...\"}                   -> {\"ids\": [...]}  (no special tokens added)\n"
        "  {\"text\": \"...\", \"special\": false} -> special tokens in the text encoded as text\n"
        "  {\"ids\": [...]}                     -> {\"text\": \"...\"} (\"skip_special_tokens\": "
        "true to drop them)\n"
        "A bad line is answered with {\"error\": \"...\"}; the tool goes on.\n"
        "\n"
        "options:\n"
        "  --model DIR     folder with tokenizer.json and tokenizer_config.json (default "
        ".cache/keel-default)\n"
        "  --bench FILE    encode FILE (UTF-8 text) on one thread and print MB/s\n"
        "  --repeat N      with --bench: encode N times and report the best (default 5)\n");
}

// ---- one line ----------------------------------------------------------------------------------

static void put_error(FILE *out, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(out, "%s\n", s ? s : "{\"error\": \"out of memory\"}");
    free(s);
    cJSON_Delete(o);
}

// cJSON ends strings at U+0000, so a text that contains one would be cut short silently; such
// lines are refused instead. An escape counts only when its backslash is not itself escaped.
static bool has_escaped_nul(const char *line) {
    for (const char *p = line; *p; p++) {
        if (*p != '\\') continue;
        if (p[1] == 'u' && strncmp(p + 2, "0000", 4) == 0) return true;
        if (p[1]) p++;
    }
    return false;
}

static void put_ids(FILE *out, const int32_t *ids, int n) {
    fputs("{\"ids\": [", out);
    for (int i = 0; i < n; i++)
        fprintf(out, i ? ", %d" : "%d", ids[i]);
    fputs("]}\n", out);
}

static void encode_line(const struct tok_tokenizer *t, const cJSON *text, const cJSON *req,
                        FILE *out) {
    bool allow_special = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(req, "special"));
    int32_t *ids;
    int n;
    int rc = tok_encode(t, text->valuestring, strlen(text->valuestring), allow_special, &ids, &n);
    if (rc) {
        put_error(out, err_msg());
        return;
    }
    put_ids(out, ids, n);
    free(ids);
}

static void decode_line(const struct tok_tokenizer *t, const cJSON *arr, const cJSON *req,
                        FILE *out) {
    int n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (!ids) {
        put_error(out, "out of memory");
        return;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int32_t)it->valuedouble) {
            free(ids);
            put_error(out, "\"ids\" must be a list of integers");
            return;
        }
        ids[i++] = (int32_t)it->valuedouble;
    }
    bool skip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "skip_special_tokens"));
    char *text;
    size_t len;
    int rc = tok_decode(t, ids, n, skip, &text, &len);
    free(ids);
    if (rc) {
        put_error(out, err_msg());
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", text);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(out, "%s\n", s ? s : "{\"error\": \"out of memory\"}");
    free(s);
    cJSON_Delete(o);
    free(text);
}

static void handle_line(const struct tok_tokenizer *t, const char *line, size_t len, FILE *out) {
    cJSON *req = cJSON_ParseWithLength(line, len);
    if (!req || !cJSON_IsObject(req)) {
        put_error(out, "not a JSON object (expected {\"text\": \"...\"} or {\"ids\": [...]})");
        cJSON_Delete(req);
        return;
    }
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(req, "text");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(req, "ids");
    if (cJSON_IsString(text)) {
        if (has_escaped_nul(line))
            put_error(out, "text contains U+0000, which keel tokenize does not accept");
        else
            encode_line(t, text, req, out);
    } else if (cJSON_IsArray(ids)) {
        decode_line(t, ids, req, out);
    } else {
        put_error(out, "expected a string \"text\" or a list \"ids\"");
    }
    cJSON_Delete(req);
}

// ---- --bench ------------------------------------------------------------------------------------

static int bench(const struct tok_tokenizer *t, const char *path, int repeat) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "keel tokenize: cannot open %s\n", path);
        return SRV_EXIT_USAGE;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(size > 0 ? (size_t)size : 1);
    size_t len = text ? fread(text, 1, (size_t)(size > 0 ? size : 0), f) : 0;
    fclose(f);
    if (!text) return SRV_EXIT_FAILURE;
    double best = 1e30, best_cpu = 1e30;
    int n_ids = 0;
    for (int r = 0; r < repeat; r++) {
        struct timespec a, b, ca, cb;
        int32_t *ids;
        clock_gettime(CLOCK_MONOTONIC, &a);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ca);
        int rc = tok_encode(t, text, len, true, &ids, &n_ids);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cb);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (rc) {
            fprintf(stderr, "keel tokenize: %s: %s\n", path, err_msg());
            free(text);
            return srv_exit_code(rc);
        }
        free(ids);
        double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
        double c = (double)(cb.tv_sec - ca.tv_sec) + (double)(cb.tv_nsec - ca.tv_nsec) * 1e-9;
        if (s < best) best = s;
        if (c < best_cpu) best_cpu = c;
    }
    printf("{\"bytes\": %zu, \"ids\": %d, \"seconds\": %.6f, \"mb_per_s\": %.2f, \"cpu_seconds\": "
           "%.6f, "
           "\"mb_per_cpu_s\": %.2f, \"repeat\": %d}\n",
           len, n_ids, best, (double)len / 1e6 / best, best_cpu, (double)len / 1e6 / best_cpu,
           repeat);
    free(text);
    return SRV_EXIT_OK;
}

// ---- the command --------------------------------------------------------------------------------

int srv_cmd_tokenize(int argc, char **argv) {
    const char *model = ".cache/keel-default", *bench_file = NULL;
    int repeat = 5;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return SRV_EXIT_OK;
        } else if (strcmp(a, "--model") == 0 && i + 1 < argc) {
            model = argv[++i];
        } else if (strcmp(a, "--bench") == 0 && i + 1 < argc) {
            bench_file = argv[++i];
        } else if (strcmp(a, "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]);
            if (repeat < 1 || repeat > 1000) {
                fprintf(stderr, "keel tokenize: --repeat must be 1..1000\n");
                return SRV_EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "keel tokenize: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return SRV_EXIT_USAGE;
        }
    }
    struct tok_tokenizer *t;
    int rc = tok_load(&t, model);
    if (rc) {
        fprintf(stderr, "keel tokenize: %s\n", err_msg());
        return srv_exit_code(rc);
    }
    if (bench_file) {
        rc = bench(t, bench_file, repeat);
        tok_free(t);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        handle_line(t, line, (size_t)len, stdout);
    }
    free(line);
    tok_free(t);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "keel tokenize: error writing the output\n");
        return SRV_EXIT_FAILURE;
    }
    return SRV_EXIT_OK;
}

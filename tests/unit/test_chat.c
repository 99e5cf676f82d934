// The chat template renderer against transformers' apply_chat_template (tests/data/tokenizer/
// chat.jsonl: the Qwen3 template of .cache/qwen3-tokenizer and the classic Qwen2.5 / Qwen2 ChatML
// templates), template recognition, and the refusals.
#include "common/err.h"
#include "models/tokenizer.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdint.h>
#include <unistd.h>

#define TOK_DIR ".cache/qwen3-tokenizer"
#define DATA "tests/data/tokenizer/"

// ---- helpers ------------------------------------------------------------------------------------

// A temporary model folder: the real tokenizer.json (linked) and a tokenizer_config.json whose
// chat_template is `tmpl` (no config at all when tmpl is NULL).
static void make_dir(char *dir, const char *tmpl) {
    strcpy(dir, "/tmp/keel-chat-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char src[PATH_MAX], path[PATH_MAX + 64];
    CHECK(realpath(TOK_DIR "/tokenizer.json", src) != NULL);
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    CHECK_EQ(symlink(src, path), 0);
    if (!tmpl) return;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "chat_template", tmpl);
    char *text = cJSON_Print(cfg);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(cfg);
}

static void remove_dir(const char *dir) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
}

static struct tok_tokenizer *load_with_template(const char *tmpl) {
    char dir[64];
    make_dir(dir, tmpl);
    struct tok_tokenizer *t = NULL;
    CHECK_OK(tok_load(&t, dir));
    remove_dir(dir);
    return t;
}

static struct tok_tokenizer *load_real(void) {
    if (!test_file_exists(TOK_DIR "/tokenizer.json"))
        TEST_SKIP("%s missing (run scripts/setup)", TOK_DIR);
    struct tok_tokenizer *t = NULL;
    CHECK_OK(tok_load(&t, TOK_DIR));
    return t;
}

static const char *str_or_null(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// Messages from the golden's JSON (pointers into it, arrays malloc'd).
static struct tok_chat_msg *json_msgs(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    struct tok_chat_msg *msgs = calloc((size_t)*n + 1, sizeof(*msgs));
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        struct tok_chat_msg *o = &msgs[i++];
        o->role = str_or_null(m, "role");
        o->content = str_or_null(m, "content");
        o->reasoning_content = str_or_null(m, "reasoning_content");
        const cJSON *tcs = cJSON_GetObjectItem(m, "tool_calls");
        o->n_tool_calls = cJSON_GetArraySize(tcs);
        struct tok_chat_tool_call *calls = calloc((size_t)o->n_tool_calls + 1, sizeof(*calls));
        int k = 0;
        const cJSON *tc;
        cJSON_ArrayForEach(tc, tcs) {
            const cJSON *fn = cJSON_GetObjectItem(tc, "function");
            calls[k].name = str_or_null(fn, "name");
            calls[k++].arguments = str_or_null(fn, "arguments");
        }
        o->tool_calls = calls;
    }
    return msgs;
}

static void free_msgs(struct tok_chat_msg *msgs, int n) {
    for (int i = 0; i < n; i++)
        free((void *)msgs[i].tool_calls);
    free(msgs);
}

// ---- goldens ------------------------------------------------------------------------------------

TEST(chat_matches_transformers) {
    struct tok_tokenizer *qwen3 = load_real();
    char *t25 = test_read_file(DATA "qwen25_template.jinja"), *t2 = test_read_file(DATA "qwen2_template.jinja");
    struct tok_tokenizer *qwen25 = load_with_template(t25), *qwen2 = load_with_template(t2);
    CHECK(tok_chat_supported(qwen3) && tok_chat_supported(qwen25) && tok_chat_supported(qwen2));
    FILE *f = fopen(DATA "chat.jsonl", "rb");
    CHECK(f != NULL);
    char *line = NULL;
    size_t cap = 0;
    int n_cases = 0, bad = 0, per_template[3] = {0}, n_tools = 0, n_nothink = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        CHECK(j != NULL);
        if (cJSON_GetObjectItem(j, "meta")) {
            cJSON_Delete(j);
            continue;
        }
        const char *tname = str_or_null(j, "template"), *name = str_or_null(j, "name");
        int which = strcmp(tname, "qwen3") == 0 ? 0 : strcmp(tname, "qwen2.5") == 0 ? 1 : 2;
        struct tok_tokenizer *t = which == 0 ? qwen3 : which == 1 ? qwen25 : qwen2;
        int n;
        struct tok_chat_msg *msgs = json_msgs(cJSON_GetObjectItem(j, "messages"), &n);
        const cJSON *th = cJSON_GetObjectItem(j, "enable_thinking");
        int thinking = cJSON_IsTrue(th) ? 1 : cJSON_IsFalse(th) ? 0 : -1;
        bool agp = cJSON_IsTrue(cJSON_GetObjectItem(j, "add_generation_prompt"));
        const char *tools = str_or_null(j, "tools_json");
        char *got;
        CHECK_OK(tok_chat_render(t, msgs, n, agp, thinking, tools, &got));
        const char *want = str_or_null(j, "text");
        if (strcmp(got, want) != 0) {
            size_t k = 0;
            while (got[k] && got[k] == want[k])
                k++;
            fprintf(stderr,
                    "  %s/%s agp=%d thinking=%d differs at byte %zu:\n    got : \"%.120s\"\n    "
                    "want: \"%.120s\"\n",
                    tname, name, agp, thinking, k, got + (k > 20 ? k - 20 : 0),
                    want + (k > 20 ? k - 20 : 0));
            bad++;
        }
        n_cases++;
        per_template[which]++;
        n_tools += tools != NULL;
        n_nothink += thinking == 0 && agp;
        free(got);
        free_msgs(msgs, n);
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    fprintf(stderr,
            "  %d renders (qwen3 %d, qwen2.5 %d, qwen2 %d; %d with tools, %d thinking off), %d "
            "mismatches\n",
            n_cases, per_template[0], per_template[1], per_template[2], n_tools, n_nothink, bad);
    CHECK_EQ(bad, 0);
    CHECK(per_template[0] >= 25 * 6 && per_template[1] >= 25 && per_template[2] >= 10);
    free(t25);
    free(t2);
    tok_free(qwen3);
    tok_free(qwen25);
    tok_free(qwen2);
}

// The tojson of tool definitions: Python's number and string formatting, checked on values whose
// expected text comes from json.dumps(json.loads(x), ensure_ascii=False) in Python 3.12.
TEST(chat_tools_json_like_python) {
    struct tok_tokenizer *t = load_real();
    struct tok_chat_msg user = {.role = "user", .content = "hi"};
    static const char *const cases[][2] = {
        {"[[1.0, 1e-07, 1e5, 1E+16, 1e15, 123.456, -0.0, 0.0001, 0.00001, 5e-324, "
         "1.7976931348623157e308, 1e400, "
         "-0, 12345678901234567890, 0.1, 2.5e-5, 100.0, 1e22]]",
         "[1.0, 1e-07, 100000.0, 1e+16, 1000000000000000.0, 123.456, -0.0, 0.0001, 1e-05, 5e-324, "
         "1.7976931348623157e+308, Infinity, 0, 12345678901234567890, 0.1, 2.5e-05, 100.0, 1e+22]"},
        {"[{\"a\\u0000b\" : "
         "\"\\u001f\\u007f\\ud83d\\ude00\\/\",\"t\":true,\"f\":false,\"n\":null}]",
         "{\"a\\u0000b\": \"\\u001f\x7f\xF0\x9F\x98\x80/\", \"t\": true, \"f\": false, \"n\": "
         "null}"},
        {" [ { } , [ ] ] ", "{}\n[]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out;
        CHECK_OK(tok_chat_render(t, &user, 1, false, -1, cases[i][0], &out));
        const char *start = strstr(out, "<tools>\n"), *end = strstr(out, "\n</tools>");
        CHECK(start && end);
        start += strlen("<tools>\n");
        CHECK_MSG((size_t)(end - start) == strlen(cases[i][1]) &&
                      memcmp(start, cases[i][1], strlen(cases[i][1])) == 0,
                  "case %zu:\n    got : %.*s\n    want: %s", i, (int)(end - start), start,
                  cases[i][1]);
        free(out);
    }
    // An empty tools list is no tools at all.
    char *a, *b;
    CHECK_OK(tok_chat_render(t, &user, 1, true, -1, "[]", &a));
    CHECK_OK(tok_chat_render(t, &user, 1, true, -1, NULL, &b));
    CHECK_STR(a, b);
    CHECK_STR(a, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    free(a);
    free(b);
    tok_free(t);
}

// ---- refusals -----------------------------------------------------------------------------------

TEST(chat_bad_input) {
    struct tok_tokenizer *t = load_real();
    char *out = (char *)1;
    struct tok_chat_msg bad_role[] = {{.role = "user", .content = "a"},
                                      {.role = "developer", .content = "b"}};
    CHECK_EQ(tok_chat_render(t, bad_role, 2, true, -1, NULL, &out), ERR_INVAL);
    CHECK(out == NULL);
    CHECK(strstr(err_msg(), "developer") != NULL);
    fprintf(stderr, "  %s\n", err_msg());
    struct tok_chat_msg no_role = {.content = "x"};
    CHECK_EQ(tok_chat_render(t, &no_role, 1, true, -1, NULL, &out), ERR_INVAL);
    struct tok_chat_msg user = {.role = "user", .content = "hi"};
    static const char *const bad_tools[] = {"{\"a\": 1}",    "[1,",   "[{\"a\": tru}]",
                                            "[\"\\ud800\"]", "[1] x", "[\"a\nb\"]",
                                            "[01]",          "[1.]",  "[\"\\q\"]"};
    for (size_t i = 0; i < sizeof(bad_tools) / sizeof(bad_tools[0]); i++) {
        CHECK_MSG(tok_chat_render(t, &user, 1, true, -1, bad_tools[i], &out) == ERR_INVAL,
                  "tools %s accepted", bad_tools[i]);
        CHECK(out == NULL);
    }
    fprintf(stderr, "  %s\n", err_msg());
    struct tok_chat_tool_call nameless = {.name = NULL, .arguments = "{}"};
    struct tok_chat_msg call = {
        .role = "assistant", .content = "", .tool_calls = &nameless, .n_tool_calls = 1};
    CHECK_EQ(tok_chat_render(t, &call, 1, false, -1, NULL, &out), ERR_INVAL);
    struct tok_chat_tool_call named = {.name = "f", .arguments = "{\"x\": 1}"};
    struct tok_chat_msg user_call = {
        .role = "user", .content = "", .tool_calls = &named, .n_tool_calls = 1};
    CHECK_EQ(tok_chat_render(t, &user_call, 1, false, -1, NULL, &out), ERR_INVAL);
    // A NULL content (an assistant message with only tool calls) renders as empty content. With
    // no user message before it, the last query is the last message and no think block is added.
    call.tool_calls = &named;
    call.content = NULL;
    CHECK_OK(tok_chat_render(t, &call, 1, false, -1, NULL, &out));
    CHECK_STR(out, "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", \"arguments\": "
                   "{\"x\": 1}}\n</tool_call><|im_end|>\n");
    free(out);
    struct tok_chat_msg turn[] = {{.role = "user", .content = "q"}, call};
    CHECK_OK(tok_chat_render(t, turn, 2, false, -1, NULL, &out));
    CHECK_STR(
        out,
        "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n"
        "{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n");
    free(out);
    // No messages: only the generation prompt.
    CHECK_OK(tok_chat_render(t, NULL, 0, true, 0, NULL, &out));
    CHECK_STR(out, "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    free(out);
    tok_free(t);
}

TEST(chat_unrecognised_templates) {
    if (!test_file_exists(TOK_DIR "/tokenizer.json"))
        TEST_SKIP("%s missing (run scripts/setup)", TOK_DIR);
    static const char *const templates[] = {
        // Llama 3: not ChatML.
        "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
        "{{ message['content'] }}<|eot_id|>{% endfor %}",
        // ChatML, but a variant keel has no renderer for.
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' "
        "+ '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif "
        "%}",
        NULL, // no tokenizer_config.json at all
    };
    for (int i = 0; i < 3; i++) {
        struct tok_tokenizer *t;
        char dir[64];
        make_dir(dir, templates[i]);
        CHECK_OK(tok_load(&t, dir)); // encoding still works without a usable template
        remove_dir(dir);
        err_clear();
        CHECK(!tok_chat_supported(t));
        CHECK_EQ(err_code(), ERR_UNSUPPORTED);
        fprintf(stderr, "  template %d: %s\n", i, err_msg());
        CHECK(strlen(err_msg()) > 10);
        struct tok_chat_msg user = {.role = "user", .content = "hi"};
        char *out = (char *)1;
        CHECK_EQ(tok_chat_render(t, &user, 1, true, -1, NULL, &out), ERR_UNSUPPORTED);
        CHECK(out == NULL);
        int32_t *ids;
        int n;
        CHECK_OK(tok_encode(t, "hi", 2, true, &ids, &n));
        CHECK_EQ(n, 1);
        free(ids);
        tok_free(t);
    }
}

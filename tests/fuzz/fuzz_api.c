// libFuzzer target: request validation of the OpenAI endpoints (server/api_request.c). Every
// body is parsed as a completion request and as a chat request. A refusal must be a 4xx with a
// message whose error JSON parses; an accepted request must hold what validation promised
// (prompts or messages present, token ids inside the vocabulary, sampling values in range), its
// sampling parameters must survive a deep copy, and a chat request must render through the real
// chat template and encode (as the server does on its thread pool). Needs the Qwen3 tokenizer from
// scripts/setup (.cache/qwen3-tokenizer, or KEEL_FUZZ_TOKENIZER=DIR).
#include "common/err.h"
#include "common/log.h"
#include "models/tokenizer.h"
#include "server/api.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tok_tokenizer *fuzz__tok;
static int fuzz__n_vocab;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    const char *dir = getenv("KEEL_FUZZ_TOKENIZER");
    if (!dir) dir = ".cache/qwen3-tokenizer";
    if (tok_load(&fuzz__tok, dir) != 0) {
        fprintf(stderr, "fuzz_api: cannot load %s: %s\n", dir, err_msg());
        exit(1);
    }
    fuzz__n_vocab = tok_n_vocab(fuzz__tok);
    return 0;
}

static void fuzz__fail(const char *what, enum api_kind kind) {
    fprintf(stderr, "fuzz_api: %s (%s request)\n", what, kind == API_CHAT ? "chat" : "completion");
    abort();
}

// The refusal must be a client error with a message, and its JSON must be OpenAI's shape.
static void fuzz__check_error(const struct api_error *e, int status, enum api_kind kind) {
    if (status < 400 || status > 499 || e->status != status) fuzz__fail("refusal is not a 4xx", kind);
    if (e->message[0] == '\0') fuzz__fail("refusal without a message", kind);
    char *json = api_error_json(e);
    if (!json) return; // out of memory
    cJSON *root = cJSON_Parse(json);
    const cJSON *err = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    const cJSON *msg = err ? cJSON_GetObjectItemCaseSensitive(err, "message") : NULL;
    if (!cJSON_IsString(msg) || strcmp(msg->valuestring, e->message) != 0)
        fuzz__fail("error JSON does not parse back to its message", kind);
    cJSON_Delete(root);
    free(json);
}

static void fuzz__check_sampling(const struct srv_sampling *sp, enum api_kind kind) {
    if (!(sp->temperature >= 0) || !(sp->top_p > 0 && sp->top_p <= 1) ||
        !(sp->min_p >= 0 && sp->min_p <= 1) || !(sp->presence_penalty >= -2 && sp->presence_penalty <= 2) ||
        !(sp->frequency_penalty >= -2 && sp->frequency_penalty <= 2) || !(sp->repetition_penalty > 0))
        fuzz__fail("accepted sampling value out of range", kind);
    if (sp->n_stop < 0 || (sp->n_stop > 0 && !sp->stop) || sp->n_stop_token_ids < 0 ||
        (sp->n_stop_token_ids > 0 && !sp->stop_token_ids))
        fuzz__fail("stop lists inconsistent", kind);
    for (int i = 0; i < sp->n_stop; i++)
        if (!sp->stop[i]) fuzz__fail("NULL stop string", kind);
    struct srv_sampling copy;
    if (api_sampling_copy(&copy, sp) == 0) {
        if (copy.n_stop != sp->n_stop || copy.n_stop_token_ids != sp->n_stop_token_ids)
            fuzz__fail("sampling copy differs", kind);
        for (int i = 0; i < sp->n_stop; i++)
            if (strcmp(copy.stop[i], sp->stop[i]) != 0) fuzz__fail("stop string copy differs", kind);
        api_sampling_free(&copy);
    }
}

static void fuzz__render_chat(const struct api_gen *g) {
    struct tok_chat_msg *msgs = calloc((size_t)g->n_msgs, sizeof *msgs);
    if (!msgs) return;
    for (int i = 0; i < g->n_msgs; i++) {
        if (!g->msgs[i].role) fuzz__fail("accepted message without a role", API_CHAT);
        msgs[i].role = g->msgs[i].role;
        msgs[i].content = g->msgs[i].content;
        msgs[i].reasoning_content = g->msgs[i].reasoning_content;
    }
    char *text = NULL;
    int rc = tok_chat_render(fuzz__tok, msgs, g->n_msgs, g->add_generation_prompt,
                             g->enable_thinking, g->tools_json, &text);
    if (rc == 0) {
        int32_t *ids = NULL;
        int n = 0;
        // Bounded: long renders only cost time, not coverage.
        size_t len = strlen(text);
        if (len > 8192) len = 8192;
        if (tok_encode(fuzz__tok, text, len, true, &ids, &n) == 0) free(ids);
        free(text);
    } else if (err_msg()[0] == '\0') {
        fuzz__fail("chat render failed without a message", API_CHAT);
    }
    free(msgs);
}

static void fuzz__one(enum api_kind kind, const char *body, size_t len) {
    struct api_gen g;
    struct api_error e;
    memset(&e, 0, sizeof e);
    err_clear();
    int status = api_parse_gen(kind, body, len, fuzz__n_vocab, &g, &e);
    if (status != 0) {
        fuzz__check_error(&e, status, kind);
        api_gen_free(&g);
        return;
    }
    if (g.kind != kind || g.n < 1) fuzz__fail("accepted request with n < 1", kind);
    if (kind == API_COMPLETION) {
        if (g.n_prompts < 1 || !g.prompts) fuzz__fail("accepted completion without a prompt", kind);
        for (int p = 0; p < g.n_prompts; p++) {
            const struct api_prompt *pr = &g.prompts[p];
            if (!pr->text && pr->n_ids < 1) fuzz__fail("accepted empty prompt", kind);
            if (pr->text && !api_utf8_valid(pr->text, pr->text_len)) fuzz__fail("prompt not UTF-8", kind);
            for (int i = 0; i < pr->n_ids; i++)
                if (pr->ids[i] < 0 || pr->ids[i] >= fuzz__n_vocab) fuzz__fail("token id out of range", kind);
        }
    } else {
        if (g.n_msgs < 1 || !g.msgs) fuzz__fail("accepted chat without messages", kind);
        if (g.tools_json) {
            cJSON *tools = cJSON_Parse(g.tools_json);
            if (!cJSON_IsArray(tools)) fuzz__fail("tools_json is not a JSON array", kind);
            cJSON_Delete(tools);
        }
        fuzz__render_chat(&g);
    }
    fuzz__check_sampling(&g.sp, kind);
    api_gen_free(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // api_parse_gen takes a length, but the server also promises a NUL after the body: copy so
    // that ASan sees a read past len as an overflow rather than a lucky NUL.
    char *body = malloc(size + 1);
    if (!body) return 0;
    memcpy(body, data, size);
    body[size] = '\0';
    fuzz__one(API_COMPLETION, body, size);
    fuzz__one(API_CHAT, body, size);
    free(body);
    return 0;
}

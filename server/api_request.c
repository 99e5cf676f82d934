// Parsing and validation of /v1/completions and /v1/chat/completions bodies: every field's type
// and range, with a message that says what was wrong and what is allowed, and `param` naming it.
// Pure: cJSON only, so tests need neither a tokenizer nor an engine.
#include "server/api.h"
#include "server/settings.h"

#include "common/err.h"
#include "common/log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API__MAX_N 128         // choices per prompt
#define API__MAX_STOP 64       // stop strings
#define API__MAX_LOGPROBS 20   // as OpenAI and vLLM

// ---- errors

int api_error_set(struct api_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    switch (status) {
    case 401: e->type = "authentication_error"; break;
    case 404: e->type = "not_found_error"; break;
    case 413: e->type = "invalid_request_error"; break;
    case 503: e->type = "service_unavailable"; break;
    case 504: e->type = "timeout_error"; break;
    default: e->type = status >= 500 ? "internal_server_error" : "invalid_request_error"; break;
    }
    return status;
}

char *api_error_json(const struct api_error *e) {
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    cJSON_AddNumberToObject(o, "code", e->status);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

// ---- UTF-8

bool api_utf8_valid(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) n = 1, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) n = 2, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) n = 3, cp = c & 0x07;
        else return false;
        if (i + (size_t)n >= len) return false; // the character is cut off
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += (size_t)n + 1;
    }
    return true;
}

// ---- typed field readers

// Absent and null mean "not given" for every optional field, as OpenAI's clients send nulls.
static const cJSON *api__field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

int api_json_bool(const cJSON *o, const char *key, bool *out, struct api_error *e) {
    const cJSON *v = api__field(o, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v))
        return api_error_set(e, 400, key, "'%s' must be a boolean, got %s", key, srv_json_type_name(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

int api_json_int(const cJSON *o, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 bool *present, struct api_error *e) {
    const cJSON *v = api__field(o, key);
    if (present) *present = v != NULL;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return api_error_set(e, 400, key, "'%s' must be an integer, got %s", key,
                             cJSON_IsNumber(v) ? "a fraction" : srv_json_type_name(v));
    if (!(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi))
        return api_error_set(e, 400, key, "'%s' must be in [%lld, %lld], got %.17g", key,
                             (long long)lo, (long long)hi, v->valuedouble);
    *out = (int64_t)v->valuedouble;
    return 0;
}

int api_json_num(const cJSON *o, const char *key, double lo, double hi, double *out,
                 struct api_error *e) {
    const cJSON *v = api__field(o, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v))
        return api_error_set(e, 400, key, "'%s' must be a number, got %s", key, srv_json_type_name(v));
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return api_error_set(e, 400, key, "'%s' must be in [%g, %g], got %.17g", key, lo, hi,
                             v->valuedouble);
    *out = v->valuedouble;
    return 0;
}

static char *api__strdup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

// ---- sampling parameters (shared by both endpoints)

static void api__sampling_defaults(struct srv_sampling *sp) {
    memset(sp, 0, sizeof *sp);
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->top_k = 0;
    sp->min_p = 0.0f;
    sp->repetition_penalty = 1.0f;
    sp->max_tokens = 0;
    sp->logprobs = -1;
    sp->skip_special_tokens = true;
}

static int api__stop(const cJSON *root, struct srv_sampling *sp, struct api_error *e) {
    const cJSON *v = api__field(root, "stop");
    if (!v) return 0;
    int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (n < 0)
        return api_error_set(e, 400, "stop", "'stop' must be a string or an array of strings, got %s",
                             srv_json_type_name(v));
    if (n > API__MAX_STOP)
        return api_error_set(e, 400, "stop", "'stop' has %d strings, at most %d are allowed", n,
                             API__MAX_STOP);
    if (n == 0) return 0;
    sp->stop = calloc((size_t)n, sizeof *sp->stop);
    if (!sp->stop) return api_error_set(e, 500, NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_IsString(v) ? v : cJSON_GetArrayItem(v, i);
        if (!cJSON_IsString(s))
            return api_error_set(e, 400, "stop", "'stop[%d]' must be a string, got %s", i,
                                 srv_json_type_name(s));
        if (s->valuestring[0] == '\0')
            return api_error_set(e, 400, "stop", "'stop[%d]' must not be empty", i);
        if (!(sp->stop[i] = strdup(s->valuestring)))
            return api_error_set(e, 500, NULL, "out of memory");
        sp->n_stop = i + 1;
    }
    return 0;
}

static int api__stop_ids(const cJSON *root, int n_vocab, struct srv_sampling *sp,
                         struct api_error *e) {
    const cJSON *v = api__field(root, "stop_token_ids");
    if (!v) return 0;
    if (!cJSON_IsArray(v))
        return api_error_set(e, 400, "stop_token_ids", "'stop_token_ids' must be an array of "
                             "integers, got %s", srv_json_type_name(v));
    int n = cJSON_GetArraySize(v);
    if (n > API__MAX_STOP)
        return api_error_set(e, 400, "stop_token_ids", "'stop_token_ids' has %d ids, at most %d",
                             n, API__MAX_STOP);
    if (n == 0) return 0;
    sp->stop_token_ids = malloc((size_t)n * sizeof *sp->stop_token_ids);
    if (!sp->stop_token_ids) return api_error_set(e, 500, NULL, "out of memory");
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            it->valuedouble < 0 || it->valuedouble >= n_vocab)
            return api_error_set(e, 400, "stop_token_ids", "'stop_token_ids[%d]' must be a token "
                                 "id in [0, %d)", i, n_vocab);
        sp->stop_token_ids[i++] = (int32_t)it->valuedouble;
        sp->n_stop_token_ids = i;
    }
    return 0;
}

static int api__sampling(const cJSON *root, enum api_kind kind, int n_vocab, struct api_gen *g,
                         struct api_error *e) {
    struct srv_sampling *sp = &g->sp;
    double d;
    int64_t x;
    bool have;
    int rc;
    d = sp->temperature;
    if ((rc = api_json_num(root, "temperature", 0, 100, &d, e))) return rc;
    sp->temperature = (float)d;
    d = sp->top_p;
    if ((rc = api_json_num(root, "top_p", 1e-9, 1, &d, e))) return rc;
    sp->top_p = (float)d;
    d = sp->min_p;
    if ((rc = api_json_num(root, "min_p", 0, 1, &d, e))) return rc;
    sp->min_p = (float)d;
    d = 0;
    if ((rc = api_json_num(root, "presence_penalty", -2, 2, &d, e))) return rc;
    sp->presence_penalty = (float)d;
    d = 0;
    if ((rc = api_json_num(root, "frequency_penalty", -2, 2, &d, e))) return rc;
    sp->frequency_penalty = (float)d;
    d = 1;
    if ((rc = api_json_num(root, "repetition_penalty", 1e-6, 100, &d, e))) return rc;
    sp->repetition_penalty = (float)d;
    x = 0;
    if ((rc = api_json_int(root, "top_k", -1, 1 << 30, &x, NULL, e))) return rc;
    sp->top_k = x < 0 ? 0 : (int)x;
    if ((rc = api_json_int(root, "seed", INT64_MIN, INT64_MAX, &x, &have, e))) return rc;
    if (have) sp->has_seed = true, sp->seed = (uint64_t)x;
    // max_completion_tokens is the chat API's newer name; it wins when both are given.
    g->has_max_tokens = false;
    if ((rc = api_json_int(root, "max_tokens", 1, 1 << 30, &x, &have, e))) return rc;
    if (have) sp->max_tokens = (int)x, g->has_max_tokens = true;
    if (kind == API_CHAT) {
        if ((rc = api_json_int(root, "max_completion_tokens", 1, 1 << 30, &x, &have, e))) return rc;
        if (have) sp->max_tokens = (int)x, g->has_max_tokens = true;
    } else if (!g->has_max_tokens) {
        sp->max_tokens = 16; // OpenAI's and vLLM's default for completions
        g->has_max_tokens = true;
    }
    x = 0;
    if ((rc = api_json_int(root, "min_tokens", 0, 1 << 30, &x, NULL, e))) return rc;
    sp->min_tokens = (int)x;
    if (g->has_max_tokens && sp->min_tokens > sp->max_tokens)
        return api_error_set(e, 400, "min_tokens", "'min_tokens' (%d) must not exceed 'max_tokens' "
                             "(%d)", sp->min_tokens, sp->max_tokens);
    if ((rc = api_json_bool(root, "ignore_eos", &sp->ignore_eos, e))) return rc;
    if ((rc = api_json_bool(root, "skip_special_tokens", &sp->skip_special_tokens, e))) return rc;
    if ((rc = api_json_bool(root, "include_stop_str_in_output", &sp->include_stop_str_in_output, e)))
        return rc;
    if ((rc = api__stop(root, sp, e))) return rc;
    if ((rc = api__stop_ids(root, n_vocab, sp, e))) return rc;

    x = 1;
    if ((rc = api_json_int(root, "n", 1, API__MAX_N, &x, NULL, e))) return rc;
    g->n = (int)x;
    if ((rc = api_json_bool(root, "stream", &g->stream, e))) return rc;
    const cJSON *so = api__field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return api_error_set(e, 400, "stream_options", "'stream_options' must be an object, "
                                 "got %s", srv_json_type_name(so));
        if (!g->stream)
            return api_error_set(e, 400, "stream_options", "'stream_options' is only allowed "
                                 "when 'stream' is true");
        if ((rc = api_json_bool(so, "include_usage", &g->include_usage, e))) return rc;
    }
    // logprobs: an integer for completions; a boolean plus top_logprobs for chat.
    g->logprobs = -1;
    if (kind == API_COMPLETION) {
        if ((rc = api_json_int(root, "logprobs", 0, API__MAX_LOGPROBS, &x, &have, e))) return rc;
        if (have) g->logprobs = (int)x;
        if ((rc = api_json_bool(root, "echo", &g->echo, e))) return rc;
    } else {
        bool lp = false;
        if ((rc = api_json_bool(root, "logprobs", &lp, e))) return rc;
        x = 0;
        if ((rc = api_json_int(root, "top_logprobs", 0, API__MAX_LOGPROBS, &x, &have, e))) return rc;
        if (have && x > 0 && !lp)
            return api_error_set(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (lp) g->logprobs = (int)x;
    }
    sp->logprobs = g->logprobs;
    const cJSON *user = api__field(root, "user");
    if (user && !cJSON_IsString(user))
        return api_error_set(e, 400, "user", "'user' must be a string, got %s", srv_json_type_name(user));
    return 0;
}

// ---- prompts (completions)

static int api__ids(const cJSON *arr, int n_vocab, const char *param, struct api_prompt *p,
                    struct api_error *e) {
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return api_error_set(e, 400, param, "'%s' must not be an empty list of tokens", param);
    p->ids = malloc((size_t)n * sizeof *p->ids);
    if (!p->ids) return api_error_set(e, 500, NULL, "out of memory");
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
            return api_error_set(e, 400, param, "'%s' token %d must be an integer, got %s", param,
                                 i, srv_json_type_name(it));
        if (it->valuedouble < 0 || it->valuedouble >= n_vocab)
            return api_error_set(e, 400, param, "'%s' token %d is %.17g, outside the vocabulary "
                                 "[0, %d)", param, i, it->valuedouble, n_vocab);
        p->ids[i++] = (int32_t)it->valuedouble;
    }
    p->n_ids = n;
    return 0;
}

static int api__text(const cJSON *s, const char *param, struct api_prompt *p, struct api_error *e) {
    size_t n = strlen(s->valuestring);
    if (n == 0) return api_error_set(e, 400, param, "'%s' must not be empty", param);
    if (!api_utf8_valid(s->valuestring, n))
        return api_error_set(e, 400, param, "'%s' is not valid UTF-8", param);
    if (!(p->text = api__strdup(s->valuestring, n))) return api_error_set(e, 500, NULL, "out of memory");
    p->text_len = n;
    return 0;
}

static int api__prompts(const cJSON *root, int n_vocab, struct api_gen *g, struct api_error *e) {
    const cJSON *v = api__field(root, "prompt");
    if (!v) return api_error_set(e, 400, "prompt", "'prompt' is required");
    if (cJSON_IsString(v)) {
        g->prompts = calloc(1, sizeof *g->prompts);
        if (!g->prompts) return api_error_set(e, 500, NULL, "out of memory");
        g->n_prompts = 1;
        return api__text(v, "prompt", &g->prompts[0], e);
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0)
        return api_error_set(e, 400, "prompt", "'prompt' must be a string, a list of strings, a "
                             "list of token ids or a list of such lists, got %s",
                             cJSON_IsArray(v) ? "an empty list" : srv_json_type_name(v));
    const cJSON *first = cJSON_GetArrayItem(v, 0);
    if (cJSON_IsNumber(first)) { // one prompt of token ids
        g->prompts = calloc(1, sizeof *g->prompts);
        if (!g->prompts) return api_error_set(e, 500, NULL, "out of memory");
        g->n_prompts = 1;
        return api__ids(v, n_vocab, "prompt", &g->prompts[0], e);
    }
    int n = cJSON_GetArraySize(v);
    if (n > 1024) return api_error_set(e, 400, "prompt", "'prompt' has %d prompts, at most 1024", n);
    g->prompts = calloc((size_t)n, sizeof *g->prompts);
    if (!g->prompts) return api_error_set(e, 500, NULL, "out of memory");
    g->n_prompts = n;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        int rc;
        if (cJSON_IsString(it)) rc = api__text(it, "prompt", &g->prompts[i], e);
        else if (cJSON_IsArray(it)) rc = api__ids(it, n_vocab, "prompt", &g->prompts[i], e);
        else
            rc = api_error_set(e, 400, "prompt", "'prompt[%d]' must be a string or a list of "
                               "token ids, got %s", i, srv_json_type_name(it));
        if (rc) return rc;
        i++;
    }
    return 0;
}

// ---- messages (chat)

// Message content: a string, or a list of {"type": "text", "text": ...} parts (joined).
static int api__content(const cJSON *c, int i, char **out, struct api_error *e) {
    if (cJSON_IsString(c)) {
        if (!api_utf8_valid(c->valuestring, strlen(c->valuestring)))
            return api_error_set(e, 400, "messages", "'messages[%d].content' is not valid UTF-8", i);
        *out = strdup(c->valuestring);
        return *out ? 0 : api_error_set(e, 500, NULL, "out of memory");
    }
    if (!cJSON_IsArray(c))
        return api_error_set(e, 400, "messages", "'messages[%d].content' must be a string or a "
                             "list of text parts, got %s", i, srv_json_type_name(c));
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") ||
            !cJSON_IsString(text))
            return api_error_set(e, 400, "messages", "'messages[%d].content' parts must be "
                                 "{\"type\": \"text\", \"text\": ...} (only text is supported)", i);
        len += strlen(text->valuestring);
    }
    char *s = malloc(len + 1);
    if (!s) return api_error_set(e, 500, NULL, "out of memory");
    size_t off = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        memcpy(s + off, t, strlen(t));
        off += strlen(t);
    }
    s[off] = '\0';
    *out = s;
    if (!api_utf8_valid(s, off))
        return api_error_set(e, 400, "messages", "'messages[%d].content' is not valid UTF-8", i);
    return 0;
}


// An assistant message's "tool_calls": [{"id", "type": "function", "function": {"name",
// "arguments"}}], as OpenAI clients send them back in the history. "arguments" is JSON text (a
// string, as OpenAI sends it) or a JSON object (printed compactly).
static int api__tool_calls(const cJSON *calls, int i, struct api_msg *msg, struct api_error *e) {
    if (!cJSON_IsArray(calls))
        return api_error_set(e, 400, "messages", "'messages[%d].tool_calls' must be an array", i);
    int n = cJSON_GetArraySize(calls);
    if (n == 0) return 0;
    msg->tool_calls = calloc((size_t)n, sizeof *msg->tool_calls);
    if (!msg->tool_calls) return api_error_set(e, 500, NULL, "out of memory");
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        int k = msg->n_tool_calls;
        const cJSON *fn = cJSON_IsObject(c) ? cJSON_GetObjectItemCaseSensitive(c, "function") : NULL;
        const cJSON *name = fn ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
        const cJSON *args = fn ? cJSON_GetObjectItemCaseSensitive(fn, "arguments") : NULL;
        if (!cJSON_IsString(name))
            return api_error_set(e, 400, "messages", "'messages[%d].tool_calls[%d].function.name' "
                                 "must be a string", i, k);
        char *a = NULL;
        if (!args || cJSON_IsNull(args)) a = strdup("{}");
        else if (cJSON_IsString(args)) a = strdup(args->valuestring);
        else if (cJSON_IsObject(args)) a = cJSON_PrintUnformatted(args);
        else
            return api_error_set(e, 400, "messages", "'messages[%d].tool_calls[%d].function."
                                 "arguments' must be a JSON string or object", i, k);
        char *nm = strdup(name->valuestring);
        if (!a || !nm) {
            free(a);
            free(nm);
            return api_error_set(e, 500, NULL, "out of memory");
        }
        msg->tool_calls[k].name = nm;
        msg->tool_calls[k].arguments = a;
        msg->n_tool_calls++;
    }
    return 0;
}

static int api__messages(const cJSON *root, struct api_gen *g, struct api_error *e) {
    const cJSON *v = api__field(root, "messages");
    if (!v) return api_error_set(e, 400, "messages", "'messages' is required");
    if (!cJSON_IsArray(v))
        return api_error_set(e, 400, "messages", "'messages' must be an array, got %s",
                             srv_json_type_name(v));
    int n = cJSON_GetArraySize(v);
    if (n == 0) return api_error_set(e, 400, "messages", "'messages' must not be empty");
    g->msgs = calloc((size_t)n, sizeof *g->msgs);
    if (!g->msgs) return api_error_set(e, 500, NULL, "out of memory");
    g->n_msgs = n;
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, v) {
        if (!cJSON_IsObject(m))
            return api_error_set(e, 400, "messages", "'messages[%d]' must be an object, got %s", i,
                                 srv_json_type_name(m));
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return api_error_set(e, 400, "messages", "'messages[%d].role' must be a string", i);
        const char *r = role->valuestring;
        // "developer" is OpenAI's newer name for "system".
        if (!strcmp(r, "developer")) r = "system";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool"))
            return api_error_set(e, 400, "messages", "'messages[%d].role' is '%s'; allowed: "
                                 "system, developer, user, assistant, tool", i, role->valuestring);
        if (!(g->msgs[i].role = strdup(r))) return api_error_set(e, 500, NULL, "out of memory");
        const cJSON *content = api__field(m, "content");
        if (content) {
            int rc = api__content(content, i, &g->msgs[i].content, e);
            if (rc) return rc;
        } else if (strcmp(r, "assistant") != 0) {
            return api_error_set(e, 400, "messages", "'messages[%d].content' is required", i);
        }
        const cJSON *calls = api__field(m, "tool_calls");
        if (calls) {
            int rc = api__tool_calls(calls, i, &g->msgs[i], e);
            if (rc) return rc;
        }
        const cJSON *rc_ = api__field(m, "reasoning_content");
        if (rc_ && cJSON_IsString(rc_) && !(g->msgs[i].reasoning_content = strdup(rc_->valuestring)))
            return api_error_set(e, 500, NULL, "out of memory");
        i++;
    }
    g->add_generation_prompt = true;
    int rc = api_json_bool(root, "add_generation_prompt", &g->add_generation_prompt, e);
    if (rc) return rc;
    g->enable_thinking = -1;
    const cJSON *kw = api__field(root, "chat_template_kwargs");
    if (kw) {
        if (!cJSON_IsObject(kw))
            return api_error_set(e, 400, "chat_template_kwargs", "'chat_template_kwargs' must be "
                                 "an object");
        bool think = false;
        const cJSON *t = api__field(kw, "enable_thinking");
        if (t) {
            if ((rc = api_json_bool(kw, "enable_thinking", &think, e))) return rc;
            g->enable_thinking = think ? 1 : 0;
        }
    }
    const cJSON *tools = api__field(root, "tools");
    if (tools) {
        if (!cJSON_IsArray(tools))
            return api_error_set(e, 400, "tools", "'tools' must be an array, got %s",
                                 srv_json_type_name(tools));
        if (cJSON_GetArraySize(tools) > 0 && !(g->tools_json = cJSON_PrintUnformatted(tools)))
            return api_error_set(e, 500, NULL, "out of memory");
    }
    return 0;
}

// ---- the whole request

// Fields each endpoint understands; anything else is ignored (clients send many) and logged.
static const char *api__known[] = {
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "seed",
    "stop", "stop_token_ids", "n", "stream", "stream_options", "logprobs", "top_logprobs", "echo",
    "min_tokens", "ignore_eos", "skip_special_tokens", "include_stop_str_in_output", "user",
    "add_generation_prompt", "chat_template_kwargs", "tools", NULL};

int api_parse_gen(enum api_kind kind, const char *body, size_t len, int n_vocab,
                  struct api_gen *g, struct api_error *e) {
    memset(g, 0, sizeof *g);
    g->kind = kind;
    api__sampling_defaults(&g->sp);
    g->n = 1;
    g->logprobs = -1;
    g->enable_thinking = -1;
    if (!api_utf8_valid(body, len))
        return api_error_set(e, 400, NULL, "the request body is not valid UTF-8");
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= body && at <= body + len ? (long)(at - body) : -1;
        return api_error_set(e, 400, NULL, "the request body is not valid JSON (error near byte "
                             "%ld)", off);
    }
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = api_error_set(e, 400, NULL, "the request body must be a JSON object, got %s",
                           srv_json_type_name(root));
        goto out;
    }
    const cJSON *model = api__field(root, "model");
    if (model) {
        if (!cJSON_IsString(model)) {
            rc = api_error_set(e, 400, "model", "'model' must be a string, got %s",
                               srv_json_type_name(model));
            goto out;
        }
        if (!(g->model = strdup(model->valuestring))) {
            rc = api_error_set(e, 500, NULL, "out of memory");
            goto out;
        }
    }
    if ((rc = kind == API_CHAT ? api__messages(root, g, e) : api__prompts(root, n_vocab, g, e)))
        goto out;
    if ((rc = api__sampling(root, kind, n_vocab, g, e))) goto out;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        bool known = false;
        for (int i = 0; api__known[i] && !known; i++) known = !strcmp(it->string, api__known[i]);
        if (!known) {
            g->n_ignored++;
            log_debug("api: ignoring unknown field '%.64s'", it->string);
        }
    }
out:
    cJSON_Delete(root);
    if (rc) {
        api_gen_free(g);
        g->kind = kind;
    }
    return rc;
}

void api_sampling_free(struct srv_sampling *sp) {
    for (int i = 0; i < sp->n_stop; i++) free(sp->stop[i]);
    free(sp->stop);
    free(sp->stop_token_ids);
    sp->stop = NULL;
    sp->n_stop = 0;
    sp->stop_token_ids = NULL;
    sp->n_stop_token_ids = 0;
}

int api_sampling_copy(struct srv_sampling *dst, const struct srv_sampling *src) {
    *dst = *src;
    dst->stop = NULL;
    dst->n_stop = 0;
    dst->stop_token_ids = NULL;
    dst->n_stop_token_ids = 0;
    if (src->n_stop > 0) {
        if (!(dst->stop = calloc((size_t)src->n_stop, sizeof *dst->stop))) return ERR_NOMEM;
        for (int i = 0; i < src->n_stop; i++) {
            if (!(dst->stop[i] = strdup(src->stop[i]))) {
                api_sampling_free(dst);
                return ERR_NOMEM;
            }
            dst->n_stop = i + 1;
        }
    }
    if (src->n_stop_token_ids > 0) {
        size_t bytes = (size_t)src->n_stop_token_ids * sizeof *src->stop_token_ids;
        if (!(dst->stop_token_ids = malloc(bytes))) {
            api_sampling_free(dst);
            return ERR_NOMEM;
        }
        memcpy(dst->stop_token_ids, src->stop_token_ids, bytes);
        dst->n_stop_token_ids = src->n_stop_token_ids;
    }
    return 0;
}

void api_gen_free(struct api_gen *g) {
    if (!g) return;
    free(g->model);
    for (int i = 0; i < g->n_prompts; i++) {
        free(g->prompts[i].text);
        free(g->prompts[i].ids);
    }
    free(g->prompts);
    for (int i = 0; i < g->n_msgs; i++) {
        free(g->msgs[i].role);
        free(g->msgs[i].content);
        free(g->msgs[i].reasoning_content);
        for (int k = 0; k < g->msgs[i].n_tool_calls; k++) {
            free((char *)g->msgs[i].tool_calls[k].name);
            free((char *)g->msgs[i].tool_calls[k].arguments);
        }
        free(g->msgs[i].tool_calls);
    }
    free(g->msgs);
    free(g->tools_json);
    api_sampling_free(&g->sp);
    memset(g, 0, sizeof *g);
}

// Response bodies of the generation endpoints: OpenAI's completion and chat shapes, logprobs in
// both of their forms, server-sent event chunks, and the final body or the stream's end.
#include "server/api_internal.h"

#include "common/err.h"
#include "models/tokenizer.h"
#include "server/settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *api__finish_name(enum srv_finish f) {
    switch (f) {
    case SRV_FINISH_STOP: return "stop";
    case SRV_FINISH_LENGTH: return "length";
    case SRV_FINISH_ABORT: return "abort";
    case SRV_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static cJSON *api__usage(const struct api_req *r) {
    int prompt = 0, completion = 0;
    for (int i = 0; i < r->n_sub; i++) prompt += r->prompt_tokens[i];
    for (int i = 0; i < r->n_choices; i++) completion += r->ch[i].n_completion;
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt);
    cJSON_AddNumberToObject(u, "total_tokens", prompt + completion);
    cJSON_AddNumberToObject(u, "completion_tokens", completion);
    return u;
}

static cJSON *api__envelope(const struct api_req *r, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", r->a->model_name);
    return o;
}

// A token's text for logprobs (special tokens included, as OpenAI shows them).
static char *api__token_text(const struct api_server *a, int32_t id) {
    char *s = NULL;
    size_t n = 0;
    if (tok_decode(a->tok, &id, 1, false, &s, &n) != 0) return strdup("");
    return s;
}

static cJSON *api__bytes(const char *s) {
    cJSON *b = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber(*p));
    return b;
}

// Appends an event's tokens to a logprobs object: completions' {tokens, token_logprobs,
// top_logprobs, text_offset} or chat's {content: [...]}.
static void api__logprobs_add(struct api_req *r, struct api_choice *ch, const struct srv_event *ev,
                              cJSON *lp) {
    struct api_server *a = r->a;
    for (int t = 0; t < ev->n_tokens; t++) {
        char *text = api__token_text(a, ev->token_ids[t]);
        float logprob = ev->logprobs ? ev->logprobs[t] : 0.0f;
        if (r->g.kind == API_COMPLETION) {
            cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "tokens"), cJSON_CreateString(text));
            cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "token_logprobs"), cJSON_CreateNumber(logprob));
            cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "text_offset"),
                                 cJSON_CreateNumber((double)ch->text_offset));
            cJSON *top = cJSON_CreateObject();
            for (int k = 0; ev->top && k < ev->n_top; k++) {
                const struct srv_top_logprob *tp = &ev->top[t * ev->n_top + k];
                char *tt = api__token_text(a, tp->id);
                if (!cJSON_GetObjectItemCaseSensitive(top, tt))
                    cJSON_AddNumberToObject(top, tt, tp->logprob);
                free(tt);
            }
            cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "top_logprobs"), top);
        } else {
            cJSON *item = cJSON_CreateObject();
            cJSON_AddStringToObject(item, "token", text);
            cJSON_AddNumberToObject(item, "logprob", logprob);
            cJSON_AddItemToObject(item, "bytes", api__bytes(text));
            cJSON *top = cJSON_AddArrayToObject(item, "top_logprobs");
            for (int k = 0; ev->top && k < ev->n_top; k++) {
                const struct srv_top_logprob *tp = &ev->top[t * ev->n_top + k];
                char *tt = api__token_text(a, tp->id);
                cJSON *ti = cJSON_CreateObject();
                cJSON_AddStringToObject(ti, "token", tt);
                cJSON_AddNumberToObject(ti, "logprob", tp->logprob);
                cJSON_AddItemToObject(ti, "bytes", api__bytes(tt));
                cJSON_AddItemToArray(top, ti);
                free(tt);
            }
            cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "content"), item);
        }
        ch->text_offset += strlen(text);
        free(text);
    }
}

static cJSON *api__logprobs_new(enum api_kind kind) {
    cJSON *lp = cJSON_CreateObject();
    if (kind == API_COMPLETION) {
        cJSON_AddArrayToObject(lp, "tokens");
        cJSON_AddArrayToObject(lp, "token_logprobs");
        cJSON_AddArrayToObject(lp, "top_logprobs");
        cJSON_AddArrayToObject(lp, "text_offset");
    } else {
        cJSON_AddArrayToObject(lp, "content");
    }
    return lp;
}

static void api__add_stop_reason(cJSON *c, const struct api_choice *ch) {
    if (ch->stop_str) cJSON_AddStringToObject(c, "stop_reason", ch->stop_str);
    else if (ch->stop_token >= 0 && ch->finish == SRV_FINISH_STOP)
        cJSON_AddNumberToObject(c, "stop_reason", ch->stop_token);
    else cJSON_AddNullToObject(c, "stop_reason");
}

static void api__sse(struct api_req *r, cJSON *chunk) {
    char *s = cJSON_PrintUnformatted(chunk);
    cJSON_Delete(chunk);
    if (!s || !r->conn) {
        free(s);
        return;
    }
    size_t n = strlen(s);
    char *line = malloc(n + 9);
    if (line) {
        memcpy(line, "data: ", 6);
        memcpy(line + 6, s, n);
        memcpy(line + 6 + n, "\n\n", 2);
        srv_http_stream_write(r->conn, line, n + 8);
    }
    free(line);
    free(s);
}

// One streamed chunk for choice ci: its new text (and logprobs), and the finish when it ended.
void api__stream_event(struct api_req *r, int ci, const struct srv_event *ev) {
    struct api_choice *ch = &r->ch[ci];
    bool chat = r->g.kind == API_CHAT;
    if (!ch->started) {
        ch->started = true;
        const char *echo = !chat && r->g.echo ? r->echo[ci / r->g.n] : NULL;
        if (chat || echo) {
            cJSON *o = api__envelope(r, chat ? "chat.completion.chunk" : "text_completion");
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "index", ci);
            if (chat) {
                cJSON *d = cJSON_AddObjectToObject(c, "delta");
                cJSON_AddStringToObject(d, "role", "assistant");
                cJSON_AddStringToObject(d, "content", "");
            } else {
                cJSON_AddStringToObject(c, "text", echo);
            }
            cJSON_AddNullToObject(c, "logprobs");
            cJSON_AddNullToObject(c, "finish_reason");
            cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), c);
            api__sse(r, o);
        }
    }
    if (ev->text_len == 0 && ev->finish == SRV_FINISH_NONE) return;
    cJSON *o = api__envelope(r, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", ci);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (ev->text_len > 0 || ev->finish == SRV_FINISH_NONE)
            cJSON_AddStringToObject(d, "content", ev->text ? ev->text : "");
    } else {
        cJSON_AddStringToObject(c, "text", ev->text ? ev->text : "");
    }
    if (r->g.logprobs >= 0 && ev->n_tokens > 0) {
        cJSON *lp = api__logprobs_new(r->g.kind);
        api__logprobs_add(r, ch, ev, lp);
        cJSON_AddItemToObject(c, "logprobs", lp);
    } else {
        cJSON_AddNullToObject(c, "logprobs");
    }
    const char *fin = api__finish_name(ev->finish);
    if (fin) cJSON_AddStringToObject(c, "finish_reason", fin);
    else cJSON_AddNullToObject(c, "finish_reason");
    if (fin) api__add_stop_reason(c, ch);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"), c);
    api__sse(r, o);
}

void api__accumulate(struct api_req *r, int ci, const struct srv_event *ev) {
    struct api_choice *ch = &r->ch[ci];
    if (ev->text_len > 0) {
        if (ch->len + ev->text_len + 1 > ch->cap) {
            size_t cap = (ch->len + ev->text_len + 1) * 2;
            char *p = realloc(ch->text, cap);
            if (!p) return;
            ch->text = p;
            ch->cap = cap;
        }
        memcpy(ch->text + ch->len, ev->text, ev->text_len);
        ch->len += ev->text_len;
        ch->text[ch->len] = '\0';
    }
    if (r->g.logprobs >= 0 && ev->n_tokens > 0) {
        if (!ch->logprobs) ch->logprobs = api__logprobs_new(r->g.kind);
        api__logprobs_add(r, ch, ev, ch->logprobs);
    }
}

// The first error among the choices, if any (engine failure or timeout).
static bool api__req_error(const struct api_req *r, struct api_error *e) {
    if (r->err.status) {
        *e = r->err;
        return true;
    }
    if (r->timed_out) {
        api_error_set(e, 504, NULL, "the request took longer than request_timeout_s (%g s)",
                      r->a->set ? r->a->set->request_timeout_s : 0.0);
        return true;
    }
    for (int i = 0; i < r->n_choices; i++) {
        if (r->ch[i].finish == SRV_FINISH_ERROR) {
            int code = r->ch[i].error_code;
            // A request the engine accepted and then lost (a device fault included) is the
            // server's failure: 500. New requests to a dead engine get 503 at submit.
            api_error_set(e, code == ERR_BUSY ? 503 : 500, NULL,
                          "generation failed: %s",
                          r->ch[i].error_msg ? r->ch[i].error_msg : err_name(code));
            return true;
        }
    }
    return false;
}

void api__answer(struct api_req *r) {
    if (!r->conn || r->answered) return;
    r->answered = true;
    bool chat = r->g.kind == API_CHAT;
    struct api_error e;
    bool failed = api__req_error(r, &e);
    if (r->g.stream) {
        if (failed) {
            char *s = api_error_json(&e);
            if (s) {
                char *line = malloc(strlen(s) + 9);
                if (line) {
                    int n = sprintf(line, "data: %s\n\n", s);
                    srv_http_stream_write(r->conn, line, (size_t)n);
                }
                free(line);
            }
            free(s);
        }
        if (r->g.include_usage) {
            cJSON *o = api__envelope(r, chat ? "chat.completion.chunk" : "text_completion");
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", api__usage(r));
            api__sse(r, o);
        }
        if (r->conn) srv_http_stream_write(r->conn, "data: [DONE]\n\n", 14);
        if (r->conn) srv_http_stream_end(r->conn);
        return;
    }
    if (failed) {
        api__send_error(r->conn, &e);
        return;
    }
    cJSON *o = api__envelope(r, chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < r->n_choices; i++) {
        struct api_choice *ch = &r->ch[i];
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", i);
        const char *text = ch->text ? ch->text : "";
        if (chat) {
            cJSON *m = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", text);
        } else if (r->g.echo) {
            const char *echo = r->echo[i / r->g.n];
            size_t n = strlen(echo) + strlen(text);
            char *both = malloc(n + 1);
            if (both) {
                snprintf(both, n + 1, "%s%s", echo, text);
                cJSON_AddStringToObject(c, "text", both);
            }
            free(both);
        } else {
            cJSON_AddStringToObject(c, "text", text);
        }
        if (ch->logprobs) {
            cJSON_AddItemToObject(c, "logprobs", ch->logprobs);
            ch->logprobs = NULL;
        } else if (r->g.logprobs >= 0) {
            cJSON_AddItemToObject(c, "logprobs", api__logprobs_new(r->g.kind));
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
        cJSON_AddStringToObject(c, "finish_reason", api__finish_name(ch->finish) ? api__finish_name(ch->finish) : "stop");
        api__add_stop_reason(c, ch);
        cJSON_AddItemToArray(choices, c);
    }
    cJSON_AddItemToObject(o, "usage", api__usage(r));
    api__send_json(r->conn, 200, o, NULL);
}


// The OpenAI-compatible endpoints and the engine glue, on the loop thread.
//
// A generation request's life: api_handle parses and validates the body (api_request.c), the
// libuv thread pool renders the chat template and tokenizes, the loop checks the lengths and
// submits one engine request per prompt, and engine events (routed by their `user` cookie, the
// struct api_req, and req_id for the prompt) become SSE chunks or one JSON body. A struct
// api_req lives until every choice has finished in the engine, even when its client has gone,
// so an event can never reach freed memory.
#include "server/api.h"
#include "server/api_internal.h"

#include "common/err.h"
#include "common/log.h"
#include "models/tokenizer.h"
#include "server/settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double api__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

// ---- small answers

void api__send_json(struct srv_http_conn *c, int status, cJSON *body, const char *extra) {
    char *s = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!s) {
        srv_http_respond(c, 500, "application/json", NULL, "{}", 2);
        return;
    }
    srv_http_respond(c, status, "application/json", extra, s, strlen(s));
    free(s);
}

void api__send_error(struct srv_http_conn *c, const struct api_error *e) {
    char *s = api_error_json(e);
    const char *extra = e->status == 503 ? "Retry-After: 1\r\n"
                        : e->status == 401 ? "WWW-Authenticate: Bearer\r\n" : NULL;
    srv_http_respond(c, e->status, "application/json", extra, s ? s : "{}", s ? strlen(s) : 2);
    free(s);
}

static void api__fail(struct srv_http_conn *c, int status, const char *param, const char *fmt,
                      const char *arg) {
    struct api_error e;
    api_error_set(&e, status, param, fmt, arg);
    api__send_error(c, &e);
}

// ---- requests: creation and release

static void api__req_free_cb(uv_handle_t *h) {
    struct api_req *r = h->data;
    free(r);
}

static void api__req_free(struct api_req *r) {
    struct api_server *a = r->a;
    if (r->prev) r->prev->next = r->next;
    else if (a->reqs == r) a->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    a->n_active--;
    for (int i = 0; i < r->n_sub; i++) {
        if (r->ids) free(r->ids[i]);
        if (r->echo) free(r->echo[i]);
    }
    free(r->ids);
    free(r->n_ids);
    free(r->echo);
    free(r->prompt_tokens);
    for (int i = 0; i < r->n_choices; i++) {
        free(r->ch[i].text);
        free(r->ch[i].stop_str);
        free(r->ch[i].error_msg);
        cJSON_Delete(r->ch[i].logprobs);
    }
    free(r->ch);
    api_gen_free(&r->g);
    // The timer handle dies in its close callback, which frees the request.
    uv_close((uv_handle_t *)&r->timer, api__req_free_cb);
}

static void api__abort_cb(void *ctx) {
    struct api_req *r = ctx;
    r->conn = NULL;
    if (r->stage == API_RUNNING) {
        log_debug("api: %s: client gone, cancelling", r->id);
        for (int i = 0; i < r->n_submitted; i++) srv_engine_cancel(r->a->engine, r->first_id + (uint64_t)i);
    }
    // Tokenizing: the after-work callback sees conn == NULL and frees the request.
}

static void api__timeout_cb(uv_timer_t *t) {
    struct api_req *r = t->data;
    r->timed_out = true;
    log_warn("api: %s exceeded request_timeout_s, cancelling", r->id);
    for (int i = 0; i < r->n_submitted; i++) srv_engine_cancel(r->a->engine, r->first_id + (uint64_t)i);
}

// Every choice has finished: metrics, the answer (if the client is still there), release.
static void api__req_done(struct api_req *r) {
    struct api_server *a = r->a;
    struct srv_metrics *m = a->metrics;
    if (m) {
        int prompt = 0, gen = 0;
        for (int i = 0; i < r->n_sub; i++) prompt += r->prompt_tokens[i];
        for (int i = 0; i < r->n_choices; i++) {
            gen += r->ch[i].n_completion;
            if (r->ch[i].finish > 0 && r->ch[i].finish < 5) m->request_success[r->ch[i].finish]++;
        }
        srv_histogram_observe(&m->e2e, api__now() - r->t_arrival);
        srv_histogram_observe(&m->prompt_len, prompt);
        srv_histogram_observe(&m->generation_len, gen);
    }
    if (a->set && a->set->log_requests) {
        for (int i = 0; i < r->n_choices; i++)
            log_info("api: %s choice %d output: %.2000s", r->id, i, r->ch[i].text ? r->ch[i].text : "");
    }
    int completion = 0;
    for (int i = 0; i < r->n_choices; i++) completion += r->ch[i].n_completion;
    log_info("api: %s done: %d choice(s), %d completion tokens, %.3f s%s", r->id, r->n_choices,
             completion, api__now() - r->t_arrival, r->conn ? "" : " (client gone)");
    api__answer(r);
    api__req_free(r);
}

static void api__on_event(struct api_server *a, struct srv_event *ev) {
    struct api_req *r = ev->user;
    if (!r) return;
    int p = (int)(ev->req_id - r->first_id);
    if (p < 0 || p >= r->n_sub || ev->index < 0 || ev->index >= r->g.n) {
        log_error("api: event for unknown choice (req %llu index %d)", (unsigned long long)ev->req_id,
                  ev->index);
        return;
    }
    int ci = p * r->g.n + ev->index;
    struct api_choice *ch = &r->ch[ci];
    if (ch->finish != SRV_FINISH_NONE) return; // nothing follows a finish
    r->prompt_tokens[p] = ev->n_prompt_tokens;
    ch->n_completion = ev->n_completion_tokens;
    if (ev->n_tokens > 0 && a->metrics) {
        double now = api__now();
        if (!r->got_first_token) {
            r->got_first_token = true;
            double first = ev->first_token_time > 0 ? ev->first_token_time : now;
            srv_histogram_observe(&a->metrics->ttft, first - r->t_arrival);
        } else if (ch->last_time > 0) {
            double dt = (now - ch->last_time) / ev->n_tokens;
            for (int t = 0; t < ev->n_tokens; t++) srv_histogram_observe(&a->metrics->itl, dt);
        }
        ch->last_time = now;
    }
    if (ev->finish != SRV_FINISH_NONE) {
        ch->finish = ev->finish;
        ch->stop_token = ev->stop_token;
        if (ev->stop_str) ch->stop_str = strdup(ev->stop_str);
        ch->error_code = ev->error_code;
        if (ev->error_msg) ch->error_msg = strdup(ev->error_msg);
    }
    if (r->conn && !r->answered && !r->timed_out) {
        if (r->g.stream) api__stream_event(r, ci, ev);
        else api__accumulate(r, ci, ev);
    }
    if (ev->finish != SRV_FINISH_NONE && ++r->n_done == r->n_choices) api__req_done(r);
}

void api_poll_events(struct api_server *a) {
    if (!a->engine) return;
    struct srv_event evs[64];
    for (;;) {
        int n = srv_engine_poll(a->engine, evs, 64);
        for (int i = 0; i < n; i++) {
            api__on_event(a, &evs[i]);
            srv_event_free(&evs[i]);
        }
        if (n < 64) break;
    }
}

static void api__async_cb(uv_async_t *h) { api_poll_events(h->data); }

void api_engine_notify(void *arg) {
    struct api_server *a = arg;
    uv_async_send(&a->async);
}

// ---- tokenizing (thread pool) and submitting (loop)

static int api__render_chat(struct api_req *r, char **text) {
    struct api_gen *g = &r->g;
    struct tok_chat_msg *msgs = calloc((size_t)g->n_msgs, sizeof *msgs);
    if (!msgs) return err_set(ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->n_msgs; i++) {
        msgs[i].role = g->msgs[i].role;
        msgs[i].content = g->msgs[i].content;
        msgs[i].reasoning_content = g->msgs[i].reasoning_content;
        msgs[i].tool_calls = g->msgs[i].tool_calls;
        msgs[i].n_tool_calls = g->msgs[i].n_tool_calls;
    }
    int rc = tok_chat_render(r->a->tok, msgs, g->n_msgs, g->add_generation_prompt,
                             g->enable_thinking, g->tools_json, text);
    free(msgs);
    return rc;
}

// Runs on a thread-pool thread: touches only the request and the (immutable) tokenizer.
static void api__tokenize_work(uv_work_t *w) {
    struct api_req *r = w->data;
    const struct tok_tokenizer *tok = r->a->tok;
    struct api_gen *g = &r->g;
    for (int p = 0; p < r->n_sub; p++) {
        int rc = 0;
        if (g->kind == API_CHAT) {
            char *text = NULL;
            rc = api__render_chat(r, &text);
            if (rc == 0) rc = tok_encode(tok, text, strlen(text), true, &r->ids[p], &r->n_ids[p]);
            if (rc == 0 && r->a->set && r->a->set->log_requests)
                log_info("api: %s prompt: %.4000s", r->id, text);
            free(text);
            if (rc) {
                api_error_set(&r->err, rc == ERR_NOMEM ? 500 : 400, "messages", "%s", err_msg());
                return;
            }
        } else {
            struct api_prompt *pr = &g->prompts[p];
            if (pr->text) {
                rc = tok_encode(tok, pr->text, pr->text_len, true, &r->ids[p], &r->n_ids[p]);
                if (rc == 0 && g->echo && !(r->echo[p] = strdup(pr->text))) rc = ERR_NOMEM;
                if (rc == 0 && r->a->set && r->a->set->log_requests)
                    log_info("api: %s prompt %d: %.4000s", r->id, p, pr->text);
            } else {
                r->ids[p] = pr->ids;
                r->n_ids[p] = pr->n_ids;
                pr->ids = NULL;
                if (g->echo) {
                    size_t n;
                    rc = tok_decode(tok, r->ids[p], r->n_ids[p], false, &r->echo[p], &n);
                }
            }
            if (rc) {
                api_error_set(&r->err, rc == ERR_NOMEM ? 500 : 400, "prompt", "%s", err_msg());
                return;
            }
        }
        if (r->n_ids[p] == 0) {
            api_error_set(&r->err, 400, g->kind == API_CHAT ? "messages" : "prompt",
                          "the prompt is empty after tokenization");
            return;
        }
    }
}

// The checks that need token counts: the context limit, then the engine's own (the pool).
static int api__check_lengths(struct api_req *r) {
    struct api_server *a = r->a;
    const char *param = r->g.kind == API_CHAT ? "messages" : "prompt";
    for (int p = 0; p < r->n_sub; p++) {
        int n = r->n_ids[p], max = a->max_model_len;
        if (n >= max)
            return api_error_set(&r->err, 400, param, "This model's maximum context length is %d "
                                 "tokens (max_model_len), but the prompt has %d tokens. Shorten "
                                 "the prompt.", max, n);
        if (r->g.has_max_tokens && (long)n + r->g.sp.max_tokens > max)
            return api_error_set(&r->err, 400, param, "This model's maximum context length is %d "
                                 "tokens (max_model_len), but %ld tokens were requested (%d in the "
                                 "prompt, %d for the completion). Shorten the prompt or lower "
                                 "max_tokens.", max, (long)n + r->g.sp.max_tokens, n,
                                 r->g.sp.max_tokens);
    }
    return 0;
}

static int api__submit(struct api_req *r) {
    struct api_server *a = r->a;
    r->first_id = a->next_id;
    a->next_id += (uint64_t)r->n_sub;
    for (int p = 0; p < r->n_sub; p++) {
        struct srv_request *q = calloc(1, sizeof *q);
        if (!q || api_sampling_copy(&q->sp, &r->g.sp) != 0) {
            free(q);
            return api_error_set(&r->err, 500, NULL, "out of memory");
        }
        q->id = r->first_id + (uint64_t)p;
        q->prompt_ids = r->ids[p];
        q->n_prompt = r->n_ids[p];
        q->n = r->g.n;
        q->user = r;
        r->ids[p] = NULL;
        int rc = srv_engine_validate(a->engine, q);
        if (rc == 0) rc = srv_engine_submit(a->engine, q);
        if (rc != 0) {
            srv_request_free(q);
            if (rc == ERR_BUSY)
                return api_error_set(&r->err, 503, NULL, "the server is overloaded (max_queue "
                                     "requests waiting); retry later");
            if (rc == ERR_CUDA_FAULT)
                return api_error_set(&r->err, 503, NULL, "the engine is not accepting requests: %s",
                                     err_msg());
            return api_error_set(&r->err, rc == ERR_NOMEM ? 500 : 400,
                                 r->g.kind == API_CHAT ? "messages" : "prompt", "%s", err_msg());
        }
        r->n_submitted = p + 1;
    }
    return 0;
}

static void api__tokenize_done(uv_work_t *w, int status) {
    struct api_req *r = w->data;
    struct api_server *a = r->a;
    if (!r->conn) { // the client left while we tokenized
        api__req_free(r);
        return;
    }
    if (!r->err.status && a->draining)
        api_error_set(&r->err, 503, NULL, "the server is shutting down");
    if (!r->err.status) api__check_lengths(r);
    if (!r->err.status) {
        r->stage = API_RUNNING;
        api__submit(r);
    }
    if (r->err.status && r->n_submitted == 0) {
        api__send_error(r->conn, &r->err);
        r->answered = true;
        api__req_free(r);
        return;
    }
    // Choices of prompts that were not submitted are finished already.
    for (int i = r->n_submitted * r->g.n; i < r->n_choices; i++) {
        r->ch[i].finish = SRV_FINISH_ERROR;
        r->n_done++;
    }
    if (r->err.status) { // a later prompt failed: cancel the earlier ones, answer the error at the end
        for (int i = 0; i < r->n_submitted; i++) srv_engine_cancel(a->engine, r->first_id + (uint64_t)i);
        return;
    }
    if (r->g.stream && srv_http_stream_start(r->conn, 200, "text/event-stream", NULL) != 0) return;
    if (a->set && a->set->request_timeout_s > 0) {
        uv_timer_start(&r->timer, api__timeout_cb, (uint64_t)(a->set->request_timeout_s * 1000), 0);
        r->timer_on = true;
    }
    (void)status;
}

static void api__generate(struct api_server *a, struct srv_http_conn *c,
                          const struct srv_http_request *hr, enum api_kind kind) {
    struct api_error e;
    memset(&e, 0, sizeof e);
    if (a->draining || !a->engine) {
        api__fail(c, 503, NULL, "%s", "the server is shutting down");
        return;
    }
    struct api_req *r = calloc(1, sizeof *r);
    if (!r) {
        api__fail(c, 500, NULL, "%s", "out of memory");
        return;
    }
    if (api_parse_gen(kind, hr->body, hr->body_len, tok_n_vocab(a->tok), &r->g, &e) != 0) {
        api__send_error(c, &e);
        free(r);
        return;
    }
    if (r->g.model && strcmp(r->g.model, a->model_name) != 0) {
        api_error_set(&e, 404, "model", "The model `%.200s` does not exist. This server serves "
                      "`%.200s` (GET /v1/models).", r->g.model, a->model_name);
        api__send_error(c, &e);
        api_gen_free(&r->g);
        free(r);
        return;
    }
    r->a = a;
    r->conn = c;
    r->stage = API_TOKENIZING;
    r->t_arrival = api__now();
    r->created = (int64_t)time(NULL);
    r->n_sub = kind == API_CHAT ? 1 : r->g.n_prompts;
    r->n_choices = r->n_sub * r->g.n;
    r->ids = calloc((size_t)r->n_sub, sizeof *r->ids);
    r->n_ids = calloc((size_t)r->n_sub, sizeof *r->n_ids);
    r->echo = calloc((size_t)r->n_sub, sizeof *r->echo);
    r->prompt_tokens = calloc((size_t)r->n_sub, sizeof *r->prompt_tokens);
    r->ch = calloc((size_t)r->n_choices, sizeof *r->ch);
    uv_timer_init(a->loop, &r->timer);
    r->timer.data = r;
    r->work.data = r;
    r->next = a->reqs;
    if (a->reqs) a->reqs->prev = r;
    a->reqs = r;
    a->n_active++;
    snprintf(r->id, sizeof r->id, "%s-%llx%06llx", kind == API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)a->started, (unsigned long long)++a->n_requests);
    for (int i = 0; i < r->n_choices; i++) r->ch[i].stop_token = -1;
    if (!r->ids || !r->n_ids || !r->echo || !r->prompt_tokens || !r->ch) {
        api_error_set(&e, 500, NULL, "out of memory");
        api__send_error(c, &e);
        r->conn = NULL;
        api__req_free(r);
        return;
    }
    srv_http_set_abort(c, api__abort_cb, r);
    if (uv_queue_work(a->loop, &r->work, api__tokenize_work, api__tokenize_done) != 0) {
        srv_http_set_abort(c, NULL, NULL);
        api__fail(c, 500, NULL, "%s", "cannot queue tokenization");
        r->conn = NULL;
        api__req_free(r);
    }
}

// ---- the other endpoints

static void api__models(struct api_server *a, struct srv_http_conn *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", a->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)a->started);
    cJSON_AddStringToObject(m, "owned_by", "keel");
    cJSON_AddStringToObject(m, "root", a->set && a->set->model[0] ? a->set->model : a->model_name);
    cJSON_AddNullToObject(m, "parent");
    cJSON_AddNumberToObject(m, "max_model_len", a->max_model_len);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), m);
    api__send_json(c, 200, o, NULL);
}

static void api__health(struct api_server *a, struct srv_http_conn *c) {
    struct srv_engine_stats st;
    memset(&st, 0, sizeof st);
    if (a->engine) srv_engine_stats(a->engine, &st);
    const char *why = !a->engine ? "starting" : st.dead ? "engine dead" : (st.draining || a->draining) ? "draining" : NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", why ? why : "ok");
    api__send_json(c, why ? 503 : 200, o, NULL);
}

static void api__metrics(struct api_server *a, struct srv_http_conn *c) {
    struct srv_engine_stats st;
    memset(&st, 0, sizeof st);
    if (a->engine) srv_engine_stats(a->engine, &st);
    size_t len = 0;
    char *txt = a->metrics ? srv_metrics_render(a->metrics, &st, a->model_name, &len) : NULL;
    if (!txt) {
        api__fail(c, 500, NULL, "%s", "cannot render metrics");
        return;
    }
    srv_http_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, txt, len);
    free(txt);
}

static void api__memory(struct api_server *a, struct srv_http_conn *c) {
    struct srv_engine_stats st;
    memset(&st, 0, sizeof st);
    if (a->engine) srv_engine_stats(a->engine, &st);
    cJSON *o = cJSON_CreateObject();
    cJSON *plan = a->plan_json ? cJSON_Parse(a->plan_json) : NULL;
    cJSON_AddItemToObject(o, "plan", plan ? plan : cJSON_CreateNull());
    cJSON *kv = cJSON_AddObjectToObject(o, "kv_pool");
    cJSON_AddNumberToObject(kv, "n_blocks", st.kv.n_blocks);
    cJSON_AddNumberToObject(kv, "n_free", st.kv.n_free);
    cJSON_AddNumberToObject(kv, "n_used", st.kv.n_used);
    cJSON_AddNumberToObject(kv, "block_size", st.kv.block_size);
    cJSON_AddNumberToObject(kv, "usage", st.kv.usage);
    cJSON *rq = cJSON_AddObjectToObject(o, "requests");
    cJSON_AddNumberToObject(rq, "running", st.n_running);
    cJSON_AddNumberToObject(rq, "waiting", st.n_waiting);
    cJSON_AddNumberToObject(rq, "preemptions", (double)st.n_preemptions);
    api__send_json(c, 200, o, NULL);
}

// POST /tokenize: {"prompt": "..."} or {"messages": [...]} -> {"count", "max_model_len", "tokens"}.
static void api__tokenize(struct api_server *a, struct srv_http_conn *c, const struct srv_http_request *hr) {
    struct api_error e;
    memset(&e, 0, sizeof e);
    cJSON *root = api_utf8_valid(hr->body, hr->body_len) ? cJSON_ParseWithLength(hr->body, hr->body_len) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        api__fail(c, 400, NULL, "%s", "the request body must be a JSON object in UTF-8");
        return;
    }
    bool add_special = true;
    if (api_json_bool(root, "add_special_tokens", &add_special, &e) != 0) {
        cJSON_Delete(root);
        api__send_error(c, &e);
        return;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (cJSON_IsString(model) && strcmp(model->valuestring, a->model_name) != 0) {
        api_error_set(&e, 404, "model", "The model `%.200s` does not exist.", model->valuestring);
        cJSON_Delete(root);
        api__send_error(c, &e);
        return;
    }
    char *text = NULL;
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    int rc = 0;
    if (cJSON_GetObjectItemCaseSensitive(root, "messages")) {
        struct api_req tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.a = a;
        char *body = cJSON_PrintUnformatted(root);
        // The chat parser validates messages exactly as /v1/chat/completions does.
        rc = body ? api_parse_gen(API_CHAT, body, strlen(body), tok_n_vocab(a->tok), &tmp.g, &e) : 500;
        free(body);
        if (rc == 0 && api__render_chat(&tmp, &text) != 0)
            rc = api_error_set(&e, 400, "messages", "%s", err_msg());
        api_gen_free(&tmp.g);
    } else if (cJSON_IsString(prompt)) {
        text = strdup(prompt->valuestring);
    } else {
        rc = api_error_set(&e, 400, "prompt", "'prompt' (a string) or 'messages' is required");
    }
    cJSON_Delete(root);
    int32_t *ids = NULL;
    int n = 0;
    if (rc == 0 && (!text || tok_encode(a->tok, text, strlen(text), add_special, &ids, &n) != 0))
        rc = api_error_set(&e, 400, "prompt", "%s", text ? err_msg() : "out of memory");
    free(text);
    if (rc) {
        api__send_error(c, &e);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", n);
    cJSON_AddNumberToObject(o, "max_model_len", a->max_model_len);
    cJSON *arr = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    cJSON_AddNullToObject(o, "token_strs");
    free(ids);
    api__send_json(c, 200, o, NULL);
}

// POST /detokenize: {"tokens": [...]} -> {"prompt": "..."}.
static void api__detokenize(struct api_server *a, struct srv_http_conn *c, const struct srv_http_request *hr) {
    struct api_error e;
    cJSON *root = cJSON_ParseWithLength(hr->body, hr->body_len);
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(toks)) {
        cJSON_Delete(root);
        api__fail(c, 400, "tokens", "%s", "'tokens' (an array of token ids) is required");
        return;
    }
    int n = cJSON_GetArraySize(toks), i = 0;
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    const cJSON *it;
    int rc = ids ? 0 : api_error_set(&e, 500, NULL, "out of memory");
    cJSON_ArrayForEach(it, toks) {
        if (rc) break;
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= tok_n_vocab(a->tok) ||
            it->valuedouble != (double)(int32_t)it->valuedouble)
            rc = api_error_set(&e, 400, "tokens", "'tokens[%d]' must be a token id in [0, %d)", i,
                               tok_n_vocab(a->tok));
        else ids[i++] = (int32_t)it->valuedouble;
    }
    cJSON_Delete(root);
    char *text = NULL;
    size_t len = 0;
    if (rc == 0 && tok_decode(a->tok, ids, n, false, &text, &len) != 0)
        rc = api_error_set(&e, 400, "tokens", "%s", err_msg());
    free(ids);
    if (rc) {
        api__send_error(c, &e);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", text);
    free(text);
    api__send_json(c, 200, o, NULL);
}

// ---- routing and auth

// Compares in time that depends only on the lengths, so the key cannot be guessed byte by byte.
static bool api__key_ok(const char *given, const char *key) {
    size_t ng = strlen(given), nk = strlen(key);
    unsigned char diff = (unsigned char)(ng != nk);
    for (size_t i = 0; i < nk; i++) diff |= (unsigned char)(key[i] ^ (i < ng ? given[i] : 0));
    return diff == 0;
}

void api_handle(struct srv_http_conn *c, const struct srv_http_request *r, void *arg) {
    struct api_server *a = arg;
    const char *path = r->path;
    bool get = !strcmp(r->method, "GET"), post = !strcmp(r->method, "POST");
    if (a->set && a->set->api_key[0] && !strncmp(path, "/v1/", 4)) {
        const char *auth = srv_http_header(r, "authorization");
        if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !api__key_ok(auth + 7, a->set->api_key)) {
            api__fail(c, 401, NULL, "%s", "invalid or missing API key (send 'Authorization: Bearer KEY')");
            return;
        }
    }
    static const struct { const char *path; bool post; } routes[] = {
        {"/v1/completions", true}, {"/v1/chat/completions", true}, {"/v1/models", false},
        {"/health", false}, {"/tokenize", true}, {"/detokenize", true}, {"/metrics", false},
        {"/v1/memory", false}};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(path, routes[i].path) != 0) continue;
        if (routes[i].post ? !post : !get) {
            char allow[64];
            snprintf(allow, sizeof allow, "Allow: %s\r\n", routes[i].post ? "POST" : "GET");
            struct api_error e;
            api_error_set(&e, 405, NULL, "%s %s is not allowed; use %s", r->method, path,
                          routes[i].post ? "POST" : "GET");
            char *s = api_error_json(&e);
            srv_http_respond(c, 405, "application/json", allow, s ? s : "{}", s ? strlen(s) : 2);
            free(s);
            return;
        }
        switch (i) {
        case 0: api__generate(a, c, r, API_COMPLETION); return;
        case 1: api__generate(a, c, r, API_CHAT); return;
        case 2: api__models(a, c); return;
        case 3: api__health(a, c); return;
        case 4: api__tokenize(a, c, r); return;
        case 5: api__detokenize(a, c, r); return;
        case 6: api__metrics(a, c); return;
        default: api__memory(a, c); return;
        }
    }
    api__fail(c, 404, NULL, "no route for %s", path);
}

// ---- lifetime

int api_init(struct api_server **out, uv_loop_t *loop, const struct api_config *cfg) {
    struct api_server *a = calloc(1, sizeof *a);
    if (!a) return err_set(ERR_NOMEM, "out of memory");
    a->loop = loop;
    a->set = cfg->settings;
    snprintf(a->model_name, sizeof a->model_name, "%s", cfg->model_name ? cfg->model_name : "keel");
    a->tok = cfg->tok;
    a->max_model_len = cfg->max_model_len;
    a->plan_json = cfg->plan_json ? strdup(cfg->plan_json) : NULL;
    a->metrics = cfg->metrics;
    a->next_id = 1;
    a->started = (int64_t)time(NULL);
    if (uv_async_init(loop, &a->async, api__async_cb) != 0) {
        free(a->plan_json);
        free(a);
        return err_set(ERR_INTERNAL, "cannot create the engine wake-up handle");
    }
    a->async.data = a;
    *out = a;
    return 0;
}

void api_set_engine(struct api_server *a, struct srv_engine *e) { a->engine = e; }
void api_set_http(struct api_server *a, struct srv_http_server *http) { a->http = http; }
void api_drain(struct api_server *a) { a->draining = true; }
int api_n_active(const struct api_server *a) { return a->n_active; }

void api_close(struct api_server *a) {
    api_poll_events(a);
    // Requests the engine never finished (it was stopped): release them; their clients are
    // closed by the HTTP layer.
    for (struct api_req *r = a->reqs, *next; r; r = next) {
        next = r->next;
        if (r->stage == API_TOKENIZING) continue; // its after-work callback still owns it
        r->conn = NULL;
        api__req_free(r);
    }
    if (!uv_is_closing((uv_handle_t *)&a->async)) uv_close((uv_handle_t *)&a->async, NULL);
}

void api_free(struct api_server *a) {
    if (!a) return;
    free(a->plan_json);
    free(a);
}

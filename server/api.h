// The OpenAI-compatible API over the HTTP layer: routing, bearer auth, request validation with
// OpenAI-style errors, tokenization (on the libuv thread pool), the hand-off to the engine, and
// the answers (one JSON body, or server-sent events when "stream" is true).
//
// Two halves:
// - server/api_request.c: pure parsing and validation of completion and chat requests (cJSON
//   only; no tokenizer, no engine), so it is unit-tested on its own.
// - server/api.c: the endpoints and the engine glue (loop thread).
//
// Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
// POST /tokenize, POST /detokenize, GET /metrics, GET /v1/memory. With an api_key, /v1/* needs
// "Authorization: Bearer KEY" (401 otherwise).
#ifndef KEEL_SERVER_API_H
#define KEEL_SERVER_API_H

#include "models/tokenizer.h"
#include "server/engine.h"
#include "server/http.h"
#include "server/metrics.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

// ---- errors, OpenAI's shape: {"error": {"message", "type", "param", "code"}}

struct api_error {
    int status;         // HTTP status
    char message[1024];
    const char *type;   // "invalid_request_error", "not_found_error", ...
    char param[64];     // "" = null
};

// Fills e and returns its status. type NULL: chosen from the status.
int api_error_set(struct api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// The error body as JSON (malloc'd, NUL-terminated).
char *api_error_json(const struct api_error *e);

// ---- a parsed generation request (api_request.c)

enum api_kind { API_COMPLETION = 0, API_CHAT = 1 };

// One prompt of a completion request: text, or token ids.
struct api_prompt {
    char *text;       // malloc'd or NULL
    size_t text_len;
    int32_t *ids;     // malloc'd or NULL
    int n_ids;
};

// One chat message; the strings are malloc'd.
struct api_msg {
    char *role, *content, *reasoning_content;
    struct tok_chat_tool_call *tool_calls; // [n_tool_calls], names and arguments owned here
    int n_tool_calls;
};

struct api_gen {
    enum api_kind kind;
    char *model;             // as sent, or NULL
    struct api_prompt *prompts; // [n_prompts] (completions)
    int n_prompts;
    struct api_msg *msgs;    // [n_msgs] (chat)
    int n_msgs;
    bool add_generation_prompt;
    int enable_thinking;     // -1 = the template's default
    char *tools_json;        // the "tools" array as JSON text, or NULL
    struct srv_sampling sp;  // its stop strings and ids are owned here
    bool has_max_tokens;
    int n;
    bool stream, include_usage, echo;
    int logprobs;            // -1 none; completions: the integer; chat: top_logprobs (0 when only
                             // "logprobs": true)
    int n_ignored;           // unknown fields seen (logged at debug level)
};

// Parses and validates a request body. n_vocab bounds token ids. Returns 0, or an HTTP status
// (400) with *e filled: malformed JSON, wrong types, out-of-range values, invalid UTF-8, empty
// prompts or messages. On error g is left empty (api_gen_free is still safe).
int api_parse_gen(enum api_kind kind, const char *body, size_t len, int n_vocab,
                  struct api_gen *g, struct api_error *e);
void api_gen_free(struct api_gen *g);

// Deep copy of sampling parameters (their arrays and strings), for one engine request each.
int api_sampling_copy(struct srv_sampling *dst, const struct srv_sampling *src);
void api_sampling_free(struct srv_sampling *sp);

// Whether s[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool api_utf8_valid(const char *s, size_t len);

// Reads an optional field of a JSON object with its type checked. Each returns 0 when absent
// (out untouched) or of the right type (out set), or fills e (param = key) and returns 400.
int api_json_bool(const cJSON *o, const char *key, bool *out, struct api_error *e);
int api_json_int(const cJSON *o, const char *key, int64_t lo, int64_t hi, int64_t *out,
                 bool *present, struct api_error *e);
int api_json_num(const cJSON *o, const char *key, double lo, double hi, double *out,
                 struct api_error *e);

// ---- the server side (api.c)

struct tok_tokenizer;
struct srv_settings;

struct api_config {
    const struct srv_settings *settings;
    const char *model_name;          // served name
    const struct tok_tokenizer *tok;
    int max_model_len;
    const char *plan_json;           // mem_plan_json() of the start-up plan (copied), or NULL
    struct srv_metrics *metrics;
};

struct api_server;

// Creates the API on the loop (its uv_async for engine events included). The engine comes
// later (api_set_engine), because the engine needs api_engine_notify at its own init.
int api_init(struct api_server **a, uv_loop_t *loop, const struct api_config *cfg);
void api_set_engine(struct api_server *a, struct srv_engine *e);
void api_set_http(struct api_server *a, struct srv_http_server *http);

// The HTTP handler (srv_http_request_cb; arg = the api_server).
void api_handle(struct srv_http_conn *c, const struct srv_http_request *r, void *arg);

// The engine's notify_cb: wakes the loop to drain events. Safe from any thread.
void api_engine_notify(void *arg);

// Drains the engine's events now (the async callback does this; also used at shutdown).
void api_poll_events(struct api_server *a);

// New generation requests get 503 from now on; /health says 503.
void api_drain(struct api_server *a);

// Generation requests not finished yet (tokenizing, queued, running, or being answered).
int api_n_active(const struct api_server *a);

// Closes the loop handles (async, timers of pending requests) and frees what is left once the
// loop has run their close callbacks; call after the engine has been stopped.
void api_close(struct api_server *a);
void api_free(struct api_server *a); // NULL-safe; after api_close and a final uv_run

#endif

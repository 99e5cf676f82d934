// Internals shared by server/api.c (endpoints, engine glue) and server/api_answer.c (response
// bodies and server-sent events). Not part of the API's contract; loop thread only.
#ifndef KEEL_SERVER_API_INTERNAL_H
#define KEEL_SERVER_API_INTERNAL_H

#include "server/api.h"

struct api_server {
    uv_loop_t *loop;
    uv_async_t async;
    struct srv_engine *engine;
    struct srv_http_server *http;
    const struct srv_settings *set;
    char model_name[256];
    const struct tok_tokenizer *tok;
    int max_model_len;
    char *plan_json;
    struct srv_metrics *metrics;
    uint64_t next_id;       // engine request ids
    uint64_t n_requests;    // for response ids
    bool draining;
    struct api_req *reqs; // active generation requests (doubly linked)
    int n_active;
    int64_t started;
};

struct api_choice {
    char *text;             // non-streamed text so far (malloc'd)
    size_t len, cap;
    cJSON *logprobs;        // accumulated logprobs (non-streamed), or NULL
    enum srv_finish finish;
    char *stop_str;
    int32_t stop_token;
    int n_completion;
    size_t text_offset;     // completions logprobs: offset of the next token's text
    double last_time;       // monotonic seconds of the last token (inter-token latency)
    bool started;           // streamed: the first chunk (role, echo) has been sent
    int error_code;
    char *error_msg;
};

enum api_stage { API_TOKENIZING, API_RUNNING };

struct api_req {
    struct api_server *a;
    struct api_req *prev, *next;
    struct srv_http_conn *conn; // NULL once the client left
    struct api_gen g;
    enum api_stage stage;
    char id[48];
    int64_t created;
    double t_arrival;
    bool got_first_token, answered, timed_out, timer_on;
    // tokenization results (thread pool), per prompt
    int n_sub;
    int32_t **ids;
    int *n_ids;
    char **echo;           // completions with echo: the prompt's text
    struct api_error err;  // set by the worker or a failed submit
    uv_work_t work;
    uv_timer_t timer;
    // in the engine
    uint64_t first_id;
    int n_submitted;
    struct api_choice *ch; // [n_sub * g.n]
    int n_choices, n_done;
    int *prompt_tokens;    // [n_sub]
};

// api.c: whole answers on a connection.
void api__send_json(struct srv_http_conn *c, int status, cJSON *body, const char *extra);
void api__send_error(struct srv_http_conn *c, const struct api_error *e);

// api_answer.c: one engine event of choice ci, streamed as SSE or accumulated for the final body.
void api__stream_event(struct api_req *r, int ci, const struct srv_event *ev);
void api__accumulate(struct api_req *r, int ci, const struct srv_event *ev);
// The answer once every choice has finished (the JSON body, or the stream's end).
void api__answer(struct api_req *r);

#endif

// The engine (see engine.h): the request and event queues, the thread loop around the scheduler
// and the forward pass, and what happens to each sampled token (detokenization, stop rules,
// events).
#include "server/engine.h"

#include "common/err.h"
#include "common/log.h"
#include "server/sample.h"
#include "server/sched.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// ---- state

struct eng_req;

// One choice of a request: a scheduler sequence plus its sampler and detokenizer state.
struct eng_choice {
    struct sched_seq seq; // seq.user points back here
    struct eng_req *req;
    int index;
    struct srv_sample_rng rng;
    struct tok_stream ts;
    char *text; // the decoded output so far (tok_stream appends here)
    size_t text_len;
    size_t n_emitted; // bytes of text already sent in events
    bool done;
    double first_token_time;
    // this step's draw (the sample op's output row)
    int32_t s_token;
    int s_rc;
    float s_logprob;
    struct srv_top_logprob s_top[20];
};

struct eng_req {
    struct srv_request *r;
    struct eng_choice *ch; // [r->n]
    int n_live;            // choices not yet finished
    int32_t *banned;       // [n_banned] eos (unless ignore_eos) and stop ids, for min_tokens
    int n_banned;
    int cap_tokens;       // prompt + generated tokens at most
    struct eng_req *next; // intake queue, then the active list
    struct eng_req *prev;
};

struct srv_engine {
    struct model *m;
    const struct tok_tokenizer *tok;
    struct srv_engine_config cfg;
    void (*notify_cb)(void *arg);
    void *notify_arg;
    int (*forward_cb)(void *arg, const struct model_batch *b, float *logits);
    void *forward_arg;
    // engine thread only
    struct mem_kv_pool pool;
    struct sched sched;
    struct sched_plan plan;
    // The step's sampling rows (kernels/ops.h's sample op), built on the host: a row per plan
    // sequence, the penalties' and bans' sparse entries, and what comes back.
    struct kern_sample_params *rows;   // [max_num_seqs]
    struct kern_sample_out *outs;      // [max_num_seqs]
    struct kern_sample_adj *adj;       // [cap_adj], grown as histories grow
    int n_adj, cap_adj;
    int32_t *marks;                    // [vocab_size] all zero between rows
    // Host sampling, for forward_cb (tests) and KEEL_GPU_SAMPLE=0: the logits come to the host
    // and the CPU reference of the same op samples them on a small thread pool of its own.
    bool host_sample;
    struct kern_ctx *host_ctx;         // made on first use
    float *logits;                     // [max_num_seqs, vocab_size] host, made on first use
    int vocab_size, n_sample_vocab;
    struct eng_req *active; // requests given to the scheduler
    struct eng_req *ended;  // requests whose last choice finished, freed at the end of a step
    struct srv_sample_rng seed_rng;
    struct srv_event *pend; // this step's events, published with the stats at its end
    int n_pend, cap_pend;
    int64_t n_steps, prompt_tokens_total, generation_tokens_total, requests_finished[5];
    // shared, under mu
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stopping, stopped;
    struct eng_req *in_head, *in_tail;
    int n_in;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    struct srv_event *out;
    int n_out, cap_out;
    struct srv_engine_stats st;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// ---- requests and events

void srv_request_free(struct srv_request *r) {
    if (!r) return;
    free(r->prompt_ids);
    for (int i = 0; i < r->sp.n_stop; i++)
        free(r->sp.stop[i]);
    free(r->sp.stop);
    free(r->sp.stop_token_ids);
    free(r);
}

void srv_event_free(struct srv_event *ev) {
    if (!ev) return;
    free(ev->text);
    free(ev->token_ids);
    free(ev->logprobs);
    free(ev->top);
    free(ev->stop_str);
    free(ev->error_msg);
    memset(ev, 0, sizeof(*ev));
}

static void req_free(struct eng_req *q) {
    if (!q) return;
    for (int i = 0; q->ch && i < q->r->n; i++) {
        sched_seq_free(&q->ch[i].seq);
        free(q->ch[i].text);
    }
    free(q->ch);
    free(q->banned);
    srv_request_free(q->r);
    free(q);
}

// Queues an event (taking ownership of its members) for the end of the step, when publish()
// makes it visible together with the stats it belongs with.
static void push_event(struct srv_engine *e, struct srv_event *ev) {
    if (e->n_pend == e->cap_pend) {
        int cap = e->cap_pend ? 2 * e->cap_pend : 256;
        struct srv_event *o = realloc(e->pend, (size_t)cap * sizeof(*o));
        if (!o) {
            // Nothing sane to do with an event we cannot queue; drop it loudly.
            log_error("engine: out of memory queueing an event for request %llu",
                      (unsigned long long)ev->req_id);
            srv_event_free(ev);
            return;
        }
        e->pend = o;
        e->cap_pend = cap;
    }
    e->pend[e->n_pend++] = *ev;
}

// Moves the step's events to the output queue and refreshes the stats, in one critical section
// so a reader that sees an event also sees the blocks it released.
static void publish(struct srv_engine *e) {
    pthread_mutex_lock(&e->mu);
    if (e->n_out + e->n_pend > e->cap_out) {
        int cap = e->cap_out ? e->cap_out : 256;
        while (cap < e->n_out + e->n_pend)
            cap *= 2;
        struct srv_event *o = realloc(e->out, (size_t)cap * sizeof(*o));
        if (o) {
            e->out = o;
            e->cap_out = cap;
        }
    }
    if (e->n_pend == 0) {
        // nothing to move
    } else if (e->n_out + e->n_pend <= e->cap_out) {
        memcpy(e->out + e->n_out, e->pend, (size_t)e->n_pend * sizeof(*e->pend));
        e->n_out += e->n_pend;
    } else {
        log_error("engine: out of memory publishing %d events", e->n_pend);
        for (int i = 0; i < e->n_pend; i++)
            srv_event_free(&e->pend[i]);
    }
    e->n_pend = 0;
    e->st.n_running = e->sched.n_running;
    e->st.n_waiting = e->sched.n_waiting + e->n_in;
    e->st.n_preemptions = e->sched.n_preemptions;
    e->st.n_steps = e->n_steps;
    e->st.prompt_tokens_total = e->prompt_tokens_total;
    e->st.generation_tokens_total = e->generation_tokens_total;
    memcpy(e->st.requests_finished, e->requests_finished, sizeof(e->requests_finished));
    mem_kv_pool_usage(&e->pool, &e->st.kv);
    pthread_mutex_unlock(&e->mu);
}

static void event_base(struct srv_event *ev, const struct eng_choice *c) {
    memset(ev, 0, sizeof(*ev));
    ev->req_id = c->req->r->id;
    ev->user = c->req->r->user;
    ev->index = c->index;
    ev->stop_token = -1;
    ev->n_prompt_tokens = c->seq.n_prompt;
    ev->n_completion_tokens = c->seq.n_tokens - c->seq.n_prompt;
    ev->first_token_time = c->first_token_time;
}

static void count_finish(struct srv_engine *e, enum srv_finish f) {
    e->requests_finished[f]++;
}

// Moves a request from the active list to the ended list: the step may still hold pointers to
// its choices, so it is freed only when the step is over (free_ended).
static void req_retire(struct srv_engine *e, struct eng_req *q) {
    if (q->prev)
        q->prev->next = q->next;
    else if (e->active == q)
        e->active = q->next;
    if (q->next) q->next->prev = q->prev;
    q->prev = NULL;
    q->next = e->ended;
    e->ended = q;
}

static void free_ended(struct srv_engine *e) {
    while (e->ended) {
        struct eng_req *q = e->ended;
        e->ended = q->next;
        req_free(q);
    }
}

// Marks a choice finished and releases its blocks; the request goes when its last choice does.
static void choice_done(struct srv_engine *e, struct eng_choice *c, enum srv_finish f) {
    c->done = true;
    sched_finish(&e->sched, &c->seq);
    struct eng_req *q = c->req;
    if (--q->n_live > 0) return;
    count_finish(e, f);
    req_retire(e, q);
}

// Ends every live choice of a request with an event of `f` (abort or error), no new tokens.
static void req_end(struct srv_engine *e, struct eng_req *q, enum srv_finish f, int code,
                    const char *msg) {
    int n = q->r->n;
    for (int i = 0; i < n; i++) {
        struct eng_choice *c = &q->ch[i];
        if (c->done) continue;
        struct srv_event ev;
        event_base(&ev, c);
        // Text held back for a possible stop string is the client's after all.
        size_t n_text = c->text_len - c->n_emitted;
        ev.text = malloc(n_text + 1);
        if (ev.text) {
            memcpy(ev.text, c->text ? c->text + c->n_emitted : "", n_text);
            ev.text[n_text] = 0;
            ev.text_len = n_text;
        }
        ev.finish = f;
        if (f == SRV_FINISH_ERROR) {
            ev.error_code = code;
            ev.error_msg = strdup(msg ? msg : "engine error");
        }
        push_event(e, &ev);
        choice_done(e, c, f);
    }
}

// ---- intake: new requests become choices in the scheduler

static int req_setup(struct srv_engine *e, struct eng_req *q) {
    struct srv_request *r = q->r;
    const struct srv_sampling *sp = &r->sp;
    int max_len = e->cfg.max_model_len;
    q->cap_tokens = sp->max_tokens > 0 && r->n_prompt + sp->max_tokens < max_len
                        ? r->n_prompt + sp->max_tokens
                        : max_len;
    const struct model_config *mc = &e->m->cfg;
    q->banned = malloc((size_t)(mc->n_eos + sp->n_stop_token_ids + 1) * sizeof(int32_t));
    q->ch = calloc((size_t)r->n, sizeof(*q->ch));
    if (!q->banned || !q->ch) return err_set(ERR_NOMEM, "out of memory for a request");
    if (!sp->ignore_eos)
        for (int i = 0; i < mc->n_eos; i++)
            q->banned[q->n_banned++] = mc->eos_ids[i];
    for (int i = 0; i < sp->n_stop_token_ids; i++)
        q->banned[q->n_banned++] = sp->stop_token_ids[i];
    uint64_t seed = sp->has_seed ? sp->seed : srv_sample_rng_next(&e->seed_rng);
    for (int i = 0; i < r->n; i++) {
        struct eng_choice *c = &q->ch[i];
        int rc = sched_seq_init(&c->seq, r->id, r->prompt_ids, r->n_prompt, q->cap_tokens);
        if (rc != 0) return rc;
        c->seq.user = c;
        c->seq.share_from = i > 0 ? &q->ch[0].seq : NULL;
        c->req = q;
        c->index = i;
        // Choice 0 uses the seed itself; the others mix in their index.
        srv_sample_rng_seed(&c->rng, seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull));
        if (e->tok) tok_stream_init(&c->ts, e->tok, sp->skip_special_tokens);
    }
    q->n_live = r->n;
    for (int i = 0; i < r->n; i++) {
        int rc = sched_add(&e->sched, &q->ch[i].seq);
        if (rc != 0) return rc;
    }
    return 0;
}

// Ends a request that never reached the scheduler (its setup failed, or it was still queued):
// one event per choice, built without choice state.
static void req_end_unadmitted(struct srv_engine *e, struct eng_req *q, enum srv_finish f, int code,
                               const char *msg) {
    for (int i = 0; i < q->r->n; i++) {
        if (q->ch) sched_finish(&e->sched, &q->ch[i].seq);
        struct srv_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.req_id = q->r->id;
        ev.user = q->r->user;
        ev.index = i;
        ev.stop_token = -1;
        ev.n_prompt_tokens = q->r->n_prompt;
        ev.text = strdup("");
        ev.finish = f;
        if (f == SRV_FINISH_ERROR) {
            ev.error_code = code;
            ev.error_msg = strdup(msg ? msg : "engine error");
        }
        push_event(e, &ev);
    }
    count_finish(e, f);
    req_retire(e, q);
}


// Links a request taken from the intake queue into the engine's active list.
static void activate(struct srv_engine *e, struct eng_req *q) {
    q->next = e->active;
    q->prev = NULL;
    if (e->active) e->active->prev = q;
    e->active = q;
}

static void intake(struct srv_engine *e) {
    pthread_mutex_lock(&e->mu);
    struct eng_req *list = e->in_head;
    e->in_head = e->in_tail = NULL;
    e->n_in = 0;
    int n_cancels = e->n_cancels;
    uint64_t *cancels = n_cancels ? malloc((size_t)n_cancels * sizeof(uint64_t)) : NULL;
    if (cancels) memcpy(cancels, e->cancels, (size_t)n_cancels * sizeof(uint64_t));
    e->n_cancels = 0;
    pthread_mutex_unlock(&e->mu);
    while (list) {
        struct eng_req *q = list;
        list = q->next;
        activate(e, q);
        int rc = req_setup(e, q);
        if (rc != 0) {
            req_end_unadmitted(e, q, SRV_FINISH_ERROR, rc, err_msg());
            continue;
        }
        e->prompt_tokens_total += q->r->n_prompt;
    }
    for (int k = 0; cancels && k < n_cancels; k++) {
        for (struct eng_req *q = e->active; q; q = q->next) {
            if (q->r->id != cancels[k]) continue;
            req_end(e, q, SRV_FINISH_ABORT, ERR_CANCELLED, NULL);
            break;
        }
    }
    free(cancels);
}

// ---- after the forward pass: one sampled token of one choice

static bool has_id(const int32_t *ids, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

// Makes room for `more` adjustment entries.
static int adj_reserve(struct srv_engine *e, int more) {
    if (e->n_adj + more <= e->cap_adj) return 0;
    int cap = e->cap_adj ? e->cap_adj : 4096;
    while (cap < e->n_adj + more)
        cap *= 2;
    struct kern_sample_adj *a = realloc(e->adj, (size_t)cap * sizeof(*a));
    if (!a) return err_set(ERR_NOMEM, "out of memory for %d sampling adjustments", cap);
    e->adj = a;
    e->cap_adj = cap;
    return 0;
}

// Row i of the step's sampling: the choice's parameters, u from its own RNG, its bans (before
// min_tokens) and its penalties' history. Rows that do not sample this step stay empty.
static int choice_row(struct srv_engine *e, int i) {
    struct kern_sample_params *p = &e->rows[i];
    memset(p, 0, sizeof(*p));
    if (!e->plan.sample[i]) return 0;
    struct eng_choice *c = e->plan.seqs[i]->user;
    struct eng_req *q = c->req;
    const struct srv_sampling *sp = &q->r->sp;
    struct sched_seq *seq = &c->seq;
    bool suppress = seq->n_tokens - seq->n_prompt < sp->min_tokens;
    struct srv_sample_input in = {NULL,
                                  e->n_sample_vocab,
                                  seq->token_ids,
                                  seq->n_prompt,
                                  seq->n_tokens,
                                  suppress ? q->banned : NULL,
                                  suppress ? q->n_banned : 0};
    int most = in.n_tokens + in.n_banned;
    int rc = adj_reserve(e, most < e->n_sample_vocab ? most : e->n_sample_vocab);
    if (rc != 0) return rc;
    srv_sample_row(&in, sp, &c->rng, e->marks, p, e->adj, &e->n_adj);
    return 0;
}

// Host sampling's buffers, made on first use (most engines never need them).
static int host_ready(struct srv_engine *e) {
    if (!e->logits) {
        e->logits = malloc((size_t)e->cfg.max_num_seqs * (size_t)e->vocab_size * sizeof(float));
        if (!e->logits)
            return err_set(ERR_NOMEM, "out of memory for %d x %d logits", e->cfg.max_num_seqs,
                           e->vocab_size);
    }
    if (!e->host_ctx) {
        // A 152k row takes a fraction of a millisecond; a batch of hundreds is worth the cores.
        long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
        int rc = kern_cpu_ctx_init(&e->host_ctx, n_cpu < 1 ? 1 : n_cpu > 16 ? 16 : (int)n_cpu);
        if (rc != 0) return rc;
    }
    return 0;
}

// The step's one call into the model: the network and the sampling of every row, on the backend
// (only ids and logprobs come back) or, for forward_cb and KEEL_GPU_SAMPLE=0, with the logits
// brought to the host and sampled there by the same op's CPU reference.
static int eng_forward(struct srv_engine *e) {
    struct sched_plan *p = &e->plan;
    int S = p->n_seqs, rc;
    if (!e->forward_cb && !e->host_sample) {
        struct model_sample ms = {e->rows, e->adj, e->n_adj};
        rc = model_forward_sample(e->m, &p->batch, &ms, e->outs);
        if (rc != ERR_NOSPACE) return rc;
        // The penalties' entries did not fit the device scratch: the network has run, so sample
        // this step's logits on the host instead.
        log_warn("engine: %d sampling entries exceed the device scratch; this step samples on "
                 "the host",
                 e->n_adj);
        if ((rc = host_ready(e)) != 0) return rc;
        rc = model_logits_to_host(e->m, S, e->logits);
    } else {
        if ((rc = host_ready(e)) != 0) return rc;
        rc = e->forward_cb ? e->forward_cb(e->forward_arg, &p->batch, e->logits)
                           : model_forward(e->m, &p->batch, e->logits);
    }
    if (rc != 0) return rc;
    return kern_cpu_ops.sample(e->host_ctx, e->outs, e->logits, S, e->vocab_size, e->rows, e->adj,
                               e->n_adj);
}

// What follows a choice's draw, on the engine thread: the token joins the sequence, is
// detokenized and checked against the stop rules, and an event goes out.
static int choice_token(struct srv_engine *e, struct eng_choice *c) {
    struct eng_req *q = c->req;
    const struct srv_sampling *sp = &q->r->sp;
    struct sched_seq *seq = &c->seq;
    int n_out = seq->n_tokens - seq->n_prompt;
    int32_t tok = c->s_token;
    int rc = c->s_rc;
    if (rc != 0) return err_set(rc, "nothing can be sampled: every token is suppressed");
    struct srv_event ev;
    event_base(&ev, c);
    ev.token_ids = malloc(sizeof(int32_t));
    if (!ev.token_ids) return err_set(ERR_NOMEM, "out of memory for an event");
    ev.token_ids[0] = tok;
    ev.n_tokens = 1;
    if (sp->logprobs >= 0) {
        ev.n_top = sp->logprobs;
        ev.logprobs = malloc(sizeof(float));
        ev.top = ev.n_top ? malloc((size_t)ev.n_top * sizeof(*ev.top)) : NULL;
        if (!ev.logprobs || (ev.n_top && !ev.top)) {
            srv_event_free(&ev);
            return err_set(ERR_NOMEM, "out of memory for logprobs");
        }
        ev.logprobs[0] = c->s_logprob;
        if (ev.n_top) memcpy(ev.top, c->s_top, (size_t)ev.n_top * sizeof(*ev.top));
    }
    if ((rc = sched_seq_append(seq, tok)) != 0) {
        srv_event_free(&ev);
        return rc;
    }
    n_out++;
    if (n_out == 1) c->first_token_time = now_s();
    ev.first_token_time = c->first_token_time;
    ev.n_completion_tokens = n_out;

    // Stop token ids and eos end the choice; their text is not output unless asked for.
    enum srv_finish fin = SRV_FINISH_NONE;
    if (has_id(sp->stop_token_ids, sp->n_stop_token_ids, tok) ||
        (!sp->ignore_eos && has_id(e->m->cfg.eos_ids, e->m->cfg.n_eos, tok))) {
        fin = SRV_FINISH_STOP;
        ev.stop_token = tok;
    }
    size_t old_len = c->text_len;
    if (e->tok && (fin == SRV_FINISH_NONE || sp->include_stop_str_in_output)) {
        if ((rc = tok_stream_push(&c->ts, tok, &c->text, &c->text_len)) != 0) {
            srv_event_free(&ev);
            return rc;
        }
    }
    // Stop strings count only once min_tokens are out (vLLM).
    if (fin == SRV_FINISH_NONE && sp->n_stop > 0 && n_out >= sp->min_tokens) {
        int which = -1;
        long at = srv_sample_find_stop(sp, c->text, c->text_len, old_len, &which);
        if (at >= 0) {
            fin = SRV_FINISH_STOP;
            ev.stop_str = strdup(sp->stop[which]);
            size_t cut =
                (size_t)at + (sp->include_stop_str_in_output ? strlen(sp->stop[which]) : 0);
            c->text_len = cut > c->n_emitted ? cut : c->n_emitted;
        }
    }
    if (fin == SRV_FINISH_NONE && seq->n_tokens >= q->cap_tokens) fin = SRV_FINISH_LENGTH;
    if (fin != SRV_FINISH_NONE && !ev.stop_str && e->tok) {
        if ((rc = tok_stream_flush(&c->ts, &c->text, &c->text_len)) != 0) {
            srv_event_free(&ev);
            return rc;
        }
    }
    size_t end = c->text_len;
    if (fin == SRV_FINISH_NONE && sp->n_stop > 0) {
        size_t hold = srv_sample_stop_holdback(sp, c->text, c->text_len);
        end = c->text_len - hold > c->n_emitted ? c->text_len - hold : c->n_emitted;
    }
    ev.text_len = end - c->n_emitted;
    ev.text = malloc(ev.text_len + 1);
    if (!ev.text) {
        srv_event_free(&ev);
        return err_set(ERR_NOMEM, "out of memory for an event");
    }
    if (ev.text_len) memcpy(ev.text, c->text + c->n_emitted, ev.text_len);
    ev.text[ev.text_len] = 0;
    c->n_emitted = end;
    ev.finish = fin;
    push_event(e, &ev);
    e->generation_tokens_total++;
    if (fin != SRV_FINISH_NONE) choice_done(e, c, fin);
    return 0;
}

// ---- one step

// Ends every request (running, waiting or still in the intake queue) with `f`.
static void end_all(struct srv_engine *e, enum srv_finish f, int code, const char *msg) {
    pthread_mutex_lock(&e->mu);
    struct eng_req *list = e->in_head;
    e->in_head = e->in_tail = NULL;
    e->n_in = 0;
    pthread_mutex_unlock(&e->mu);
    while (list) {
        struct eng_req *q = list;
        list = q->next;
        activate(e, q);
        req_end_unadmitted(e, q, f, code, msg);
    }
    while (e->active)
        req_end(e, e->active, f, code, msg);
}

static void notify(struct srv_engine *e, int n_events) {
    if (n_events > 0 && e->notify_cb) e->notify_cb(e->notify_arg);
}

// Takes new requests and cancellations, runs one scheduled batch and handles its tokens.
// Returns whether it ran a batch.
static bool eng_step(struct srv_engine *e) {
    intake(e);
    bool ran = false;
    if (!sched_idle(&e->sched) && !e->st.dead) {
        int rc = sched_step(&e->sched, &e->plan);
        struct sched_plan *p = &e->plan;
        if (rc == 0 && p->n_seqs > 0) {
            e->n_adj = 0;
            for (int i = 0; i < p->n_seqs && rc == 0; i++)
                rc = choice_row(e, i);
            if (rc == 0) rc = eng_forward(e);
            ran = true;
        }
        if (rc == ERR_CUDA_FAULT) {
            // The device context is gone: nothing can run again in this process.
            char msg[512];
            snprintf(msg, sizeof(msg), "the engine stopped after a device fault: %s", err_msg());
            log_error("engine: %s", msg);
            pthread_mutex_lock(&e->mu);
            e->st.dead = true;
            pthread_mutex_unlock(&e->mu);
            end_all(e, SRV_FINISH_ERROR, rc, msg);
        } else if (rc != 0) {
            // A failed step fails the requests in it, not the engine.
            char msg[512];
            snprintf(msg, sizeof(msg), "%s", err_msg());
            log_error("engine: step failed (%s): %s", err_name(rc), msg);
            for (int i = 0; i < p->n_seqs; i++) {
                struct eng_choice *c = p->seqs[i]->user;
                if (!c->done) req_end(e, c->req, SRV_FINISH_ERROR, rc, msg);
            }
        } else if (ran) {
            sched_commit(&e->sched, p);
            for (int i = 0; i < p->n_seqs; i++) {
                if (!p->sample[i]) continue;
                struct eng_choice *c = p->seqs[i]->user;
                if (c->done) continue; // its request ended earlier in this loop
                const struct kern_sample_out *o = &e->outs[i];
                c->s_token = o->token;
                c->s_rc = o->status;
                c->s_logprob = o->logprob;
                for (int k = 0; k < o->n_top; k++)
                    c->s_top[k] = (struct srv_top_logprob){o->top_id[k], o->top_lp[k]};
                rc = choice_token(e, c);
                if (rc != 0) req_end(e, c->req, SRV_FINISH_ERROR, rc, err_msg());
            }
            e->n_steps++;
        }
    }
    free_ended(e);
    int n_events = e->n_pend;
    publish(e);
    notify(e, n_events);
    return ran;
}

// ---- the thread

static void *engine_main(void *arg) {
    struct srv_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stopping && e->n_in == 0 && e->n_cancels == 0 &&
               (sched_idle(&e->sched) || e->st.dead))
            pthread_cond_wait(&e->cv, &e->mu);
        if (e->stopping) break;
        pthread_mutex_unlock(&e->mu);
        bool ran = eng_step(e);
        pthread_mutex_lock(&e->mu);
        if (!ran && !e->stopping && e->n_in == 0 && e->n_cancels == 0) {
            // Work exists but none could be planned this step (it should not happen: whatever
            // waits fits once the pool drains); do not spin on it.
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 2000000;
            if (until.tv_nsec >= 1000000000) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &until);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

// ---- the API

int srv_engine_init(struct srv_engine **out, struct model *m, const struct tok_tokenizer *tok,
                    const struct srv_engine_config *cfg, void (*notify_cb)(void *arg),
                    void *notify_arg) {
    *out = NULL;
    struct srv_engine *e = calloc(1, sizeof(*e));
    if (!e) return err_set(ERR_NOMEM, "out of memory for the engine");
    e->m = m;
    e->tok = tok;
    e->cfg = *cfg;
    e->notify_cb = notify_cb;
    e->notify_arg = notify_arg;
    e->vocab_size = m->cfg.vocab_size;
    e->n_sample_vocab = e->vocab_size;
    if (tok && tok_n_vocab(tok) < e->n_sample_vocab) e->n_sample_vocab = tok_n_vocab(tok);
    // The step's limits are the smaller of the settings and what the model was planned for.
    int model_len = m->max_blocks_per_seq * m->block_size;
    if (e->cfg.max_model_len <= 0 || e->cfg.max_model_len > model_len)
        e->cfg.max_model_len = model_len;
    struct sched_config sc = {
        .max_num_seqs = cfg->max_num_seqs > 0 && cfg->max_num_seqs < m->max_seqs ? cfg->max_num_seqs
                                                                                 : m->max_seqs,
        .max_num_batched_tokens =
            cfg->max_num_batched_tokens > 0 && cfg->max_num_batched_tokens < m->max_tokens
                ? cfg->max_num_batched_tokens
                : m->max_tokens,
        .max_blocks_per_seq = m->max_blocks_per_seq,
    };
    e->cfg.max_num_seqs = sc.max_num_seqs;
    e->cfg.max_num_batched_tokens = sc.max_num_batched_tokens;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    srv_sample_rng_seed(&e->seed_rng, (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)e);
    int rc = mem_kv_pool_init(&e->pool, m->n_kv_blocks, m->block_size);
    if (rc == 0) rc = sched_init(&e->sched, &e->pool, &sc);
    if (rc == 0) rc = sched_plan_init(&e->plan, &sc);
    if (rc == 0) {
        e->rows = calloc((size_t)sc.max_num_seqs, sizeof(*e->rows));
        e->outs = calloc((size_t)sc.max_num_seqs, sizeof(*e->outs));
        e->marks = calloc((size_t)e->vocab_size, sizeof(*e->marks));
        if (!e->rows || !e->outs || !e->marks)
            rc = err_set(ERR_NOMEM, "out of memory for the engine");
    }
    const char *gs = getenv("KEEL_GPU_SAMPLE");
    e->host_sample = gs && strcmp(gs, "0") == 0;
    if (e->host_sample) log_info("KEEL_GPU_SAMPLE=0: sampling on the host");
    if (!m->ops || !m->ops->sample) e->host_sample = true;
    if (rc != 0) {
        srv_engine_free(e);
        return rc;
    }
    publish(e);
    *out = e;
    return 0;
}

void srv_engine_set_forward(struct srv_engine *e,
                            int (*forward_cb)(void *arg, const struct model_batch *b,
                                              float *logits),
                            void *arg) {
    e->forward_cb = forward_cb;
    e->forward_arg = arg;
}

int srv_engine_start(struct srv_engine *e) {
    if (e->started) return err_set(ERR_INVAL, "the engine is already started");
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
        return err_set(ERR_INTERNAL, "cannot start the engine thread");
    e->started = true;
    return 0;
}

int srv_engine_validate(struct srv_engine *e, const struct srv_request *r) {
    const struct srv_sampling *sp = &r->sp;
    int max_len = e->cfg.max_model_len;
    if (r->n_prompt < 1 || !r->prompt_ids) return err_set(ERR_INVAL, "the prompt is empty");
    if (r->n < 1 || r->n > 128) return err_set(ERR_INVAL, "n must be 1..128, got %d", r->n);
    for (int i = 0; i < r->n_prompt; i++)
        if (r->prompt_ids[i] < 0 || r->prompt_ids[i] >= e->vocab_size)
            return err_set(ERR_INVAL,
                           "prompt token %d at position %d is outside the vocabulary "
                           "(0..%d)",
                           r->prompt_ids[i], i, e->vocab_size - 1);
    if (!(sp->temperature >= 0)) return err_set(ERR_INVAL, "temperature must be >= 0");
    if (!(sp->top_p > 0 && sp->top_p <= 1)) return err_set(ERR_INVAL, "top_p must be in (0, 1]");
    if (!(sp->min_p >= 0 && sp->min_p <= 1)) return err_set(ERR_INVAL, "min_p must be in [0, 1]");
    if (!(sp->repetition_penalty > 0)) return err_set(ERR_INVAL, "repetition_penalty must be > 0");
    if (!(sp->presence_penalty >= -2 && sp->presence_penalty <= 2))
        return err_set(ERR_INVAL, "presence_penalty must be in [-2, 2]");
    if (!(sp->frequency_penalty >= -2 && sp->frequency_penalty <= 2))
        return err_set(ERR_INVAL, "frequency_penalty must be in [-2, 2]");
    if (sp->logprobs > 20) return err_set(ERR_INVAL, "logprobs must be at most 20");
    if (sp->min_tokens < 0) return err_set(ERR_INVAL, "min_tokens must be >= 0");
    if (sp->max_tokens > 0 && sp->min_tokens > sp->max_tokens)
        return err_set(ERR_INVAL, "min_tokens (%d) must not exceed max_tokens (%d)", sp->min_tokens,
                       sp->max_tokens);
    for (int i = 0; i < sp->n_stop_token_ids; i++)
        if (sp->stop_token_ids[i] < 0 || sp->stop_token_ids[i] >= e->vocab_size)
            return err_set(ERR_INVAL, "stop_token_ids: %d is outside the vocabulary",
                           sp->stop_token_ids[i]);
    int want = r->n_prompt + (sp->max_tokens > 0 ? sp->max_tokens : 1);
    if (want > max_len)
        return err_set(ERR_INVAL,
                       "This model's maximum context length is %d tokens. However, "
                       "you requested %d tokens (%d in the prompt, %d for the completion). Please "
                       "reduce the prompt or max_tokens.",
                       max_len, want, r->n_prompt, want - r->n_prompt);
    int cap = sp->max_tokens > 0 ? want : max_len;
    if (mem_kv_pool_can_admit(&e->pool, cap) == MEM_ADMIT_NEVER)
        return err_set(ERR_INVAL,
                       "the request needs up to %d tokens of KV cache (%d blocks) but "
                       "the whole pool holds %d blocks of %d tokens; reduce the prompt or "
                       "max_tokens",
                       cap, mem_kv_blocks_for(&e->pool, cap), e->pool.n_blocks, e->pool.block_size);
    return 0;
}

int srv_engine_submit(struct srv_engine *e, struct srv_request *r) {
    int rc = srv_engine_validate(e, r);
    if (rc != 0) return rc;
    struct eng_req *q = calloc(1, sizeof(*q));
    if (!q) return err_set(ERR_NOMEM, "out of memory for a request");
    q->r = r;
    pthread_mutex_lock(&e->mu);
    if (e->st.dead || e->stopping) {
        bool dead = e->st.dead;
        pthread_mutex_unlock(&e->mu);
        free(q);
        return err_set(ERR_CUDA_FAULT, dead ? "the engine stopped after a device fault"
                                            : "the server is shutting down");
    }
    if (e->cfg.max_queue > 0 && e->st.n_waiting >= e->cfg.max_queue) {
        pthread_mutex_unlock(&e->mu);
        free(q);
        return err_set(ERR_BUSY, "too many requests are waiting (max_queue %d); retry later",
                       e->cfg.max_queue);
    }
    if (e->in_tail)
        e->in_tail->next = q;
    else
        e->in_head = q;
    e->in_tail = q;
    e->n_in++;
    e->st.n_waiting++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void srv_engine_cancel(struct srv_engine *e, uint64_t req_id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int cap = e->cap_cancels ? 2 * e->cap_cancels : 64;
        uint64_t *c = realloc(e->cancels, (size_t)cap * sizeof(*c));
        if (!c) {
            pthread_mutex_unlock(&e->mu);
            log_error("engine: out of memory queueing a cancellation");
            return;
        }
        e->cancels = c;
        e->cap_cancels = cap;
    }
    e->cancels[e->n_cancels++] = req_id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

int srv_engine_poll(struct srv_engine *e, struct srv_event *out, int max) {
    pthread_mutex_lock(&e->mu);
    int n = e->n_out < max ? e->n_out : max;
    if (n > 0) {
        memcpy(out, e->out, (size_t)n * sizeof(*out));
        memmove(e->out, e->out + n, (size_t)(e->n_out - n) * sizeof(*out));
        e->n_out -= n;
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

void srv_engine_stats(struct srv_engine *e, struct srv_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->st;
    pthread_mutex_unlock(&e->mu);
}

void srv_engine_stop(struct srv_engine *e) {
    pthread_mutex_lock(&e->mu);
    if (e->stopped) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    e->stopping = true;
    e->st.draining = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    // The thread is gone (or never ran): this thread owns the scheduler now.
    intake(e);
    end_all(e, SRV_FINISH_ABORT, ERR_CANCELLED, NULL);
    free_ended(e);
    int n_events = e->n_pend;
    publish(e);
    notify(e, n_events);
    pthread_mutex_lock(&e->mu);
    e->stopped = true;
    pthread_mutex_unlock(&e->mu);
}

void srv_engine_free(struct srv_engine *e) {
    if (!e) return;
    if (e->sched.running) srv_engine_stop(e);
    for (int i = 0; i < e->n_out; i++)
        srv_event_free(&e->out[i]);
    for (int i = 0; i < e->n_pend; i++)
        srv_event_free(&e->pend[i]);
    free(e->out);
    free(e->pend);
    free(e->cancels);
    free(e->logits);
    free(e->rows);
    free(e->outs);
    free(e->adj);
    free(e->marks);
    kern_cpu_ctx_free(e->host_ctx);
    sched_plan_free(&e->plan);
    sched_free(&e->sched);
    mem_kv_pool_free(&e->pool);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

int srv_engine_run_sync(struct srv_engine *e, struct srv_request *r, struct srv_event **events,
                        int *n_events) {
    *events = NULL;
    *n_events = 0;
    if (e->started) return err_set(ERR_INVAL, "srv_engine_run_sync needs an engine not started");
    int rc = srv_engine_submit(e, r);
    if (rc != 0) return rc;
    int n = 0, cap = 64;
    struct srv_event *evs = malloc((size_t)cap * sizeof(*evs));
    if (!evs) return err_set(ERR_NOMEM, "out of memory for events");
    for (;;) {
        eng_step(e);
        for (;;) {
            if (n == cap) {
                struct srv_event *g = realloc(evs, (size_t)(cap *= 2) * sizeof(*evs));
                if (!g) {
                    for (int i = 0; i < n; i++)
                        srv_event_free(&evs[i]);
                    free(evs);
                    return err_set(ERR_NOMEM, "out of memory for events");
                }
                evs = g;
            }
            int got = srv_engine_poll(e, evs + n, cap - n);
            n += got;
            if (got == 0) break;
        }
        pthread_mutex_lock(&e->mu);
        bool pending = e->n_in > 0;
        pthread_mutex_unlock(&e->mu);
        if (!pending && (sched_idle(&e->sched) || e->st.dead)) break;
    }
    *events = evs;
    *n_events = n;
    return 0;
}

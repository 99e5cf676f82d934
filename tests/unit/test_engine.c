// The engine with a fake model: the fake forward pass keeps a token-level copy of the KV cache,
// reads every sequence's context back through its block table (so a wrong slot or a block freed
// too early changes the logits), and derives logits from that context. Greedy results must then
// be the same alone or among hundreds of sequences fighting over a tiny pool.
#include "common/err.h"
#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "server/engine.h"
#include "tests/unit/cpu_model.h"
#include "tests/test.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

// ---- the fake model

struct fake {
    struct model m;
    int32_t *cache;        // [n_blocks * block_size] token in each slot, -1 if none
    const int32_t *script; // when set: the token to favour at output position i (by context len)
    int n_script, script_prompt;
    int fail_at_step, fail_code; // make step fail_at_step (1-based) return fail_code
    int n_steps;
    int64_t n_tokens_total; // tokens computed
    int usleep_per_step;
};

static uint64_t mix(uint64_t h, uint64_t v) {
    return (h ^ (v + 0x9e3779b97f4a7c15ull)) * 1099511628211ull;
}

static int fake_forward(void *arg, const struct model_batch *b, float *logits) {
    struct fake *f = arg;
    f->n_steps++;
    if (f->usleep_per_step) usleep((useconds_t)f->usleep_per_step);
    if (f->fail_at_step == f->n_steps)
        return err_set(f->fail_code, "fake failure at step %d", f->n_steps);
    int bs = f->m.block_size, stride = f->m.max_blocks_per_seq, V = f->m.cfg.vocab_size;
    if (b->n_tokens > f->m.max_tokens || b->n_seqs > f->m.max_seqs)
        return err_set(ERR_INVAL, "batch beyond the fake's limits");
    for (int t = 0; t < b->n_tokens; t++)
        f->cache[b->slot_mapping[t]] = b->token_ids[t];
    f->n_tokens_total += b->n_tokens;
    for (int i = 0; i < b->n_seqs; i++) {
        uint64_t h = 1469598103934665603ull;
        int len = b->seq_lens[i];
        int32_t last = -1;
        for (int pos = 0; pos < len; pos++) {
            int32_t slot = b->block_tables[i * stride + pos / bs] * bs + pos % bs;
            last = f->cache[slot];
            h = mix(h, (uint64_t)last);
        }
        CHECK_EQ(last, b->token_ids[b->query_start[i + 1] - 1]);
        float *row = logits + (size_t)i * V;
        for (int v = 0; v < V; v++) {
            uint64_t x = mix(h, (uint64_t)v);
            x ^= x >> 29;
            row[v] = (float)(x % 4096) / 512.0f; // [0, 8)
        }
        int out_pos = len - f->script_prompt;
        if (f->script && out_pos >= 0 && out_pos < f->n_script) row[f->script[out_pos]] = 50.0f;
    }
    return 0;
}

static void fake_init(struct fake *f, int vocab, int n_blocks, int block_size, int max_seqs,
                      int max_tokens, int max_model_len) {
    memset(f, 0, sizeof(*f));
    f->m.cfg.vocab_size = vocab;
    f->m.cfg.n_eos = 1;
    f->m.cfg.eos_ids[0] = vocab - 1;
    f->m.n_kv_blocks = n_blocks;
    f->m.block_size = block_size;
    f->m.max_seqs = max_seqs;
    f->m.max_tokens = max_tokens;
    f->m.max_blocks_per_seq = (max_model_len + block_size - 1) / block_size;
    f->cache = malloc((size_t)n_blocks * block_size * sizeof(int32_t));
    for (int i = 0; i < n_blocks * block_size; i++)
        f->cache[i] = -1;
}

static struct srv_engine *engine_new(struct fake *f, const struct tok_tokenizer *tok,
                                     int max_queue) {
    struct srv_engine_config cfg = {f->m.max_seqs, f->m.max_tokens,
                                    f->m.max_blocks_per_seq * f->m.block_size, max_queue};
    struct srv_engine *e = NULL;
    CHECK_OK(srv_engine_init(&e, &f->m, tok, &cfg, NULL, NULL));
    srv_engine_set_forward(e, fake_forward, f);
    return e;
}

static struct srv_request *request(uint64_t id, const int32_t *prompt, int n_prompt,
                                   int max_tokens) {
    struct srv_request *r = calloc(1, sizeof(*r));
    r->id = id;
    r->n = 1;
    r->prompt_ids = malloc((size_t)n_prompt * sizeof(int32_t));
    memcpy(r->prompt_ids, prompt, (size_t)n_prompt * sizeof(int32_t));
    r->n_prompt = n_prompt;
    srv_sampling_defaults(&r->sp);
    r->sp.temperature = 0;
    r->sp.max_tokens = max_tokens;
    return r;
}

static void add_stop(struct srv_request *r, const char *s) {
    r->sp.stop = realloc(r->sp.stop, (size_t)(r->sp.n_stop + 1) * sizeof(char *));
    r->sp.stop[r->sp.n_stop++] = strdup(s);
}

// ---- collecting events

struct result {
    int32_t ids[512];
    int n_ids;
    char text[4096];
    size_t text_len;
    int n_events;
    enum srv_finish finish;
    int32_t stop_token;
    char stop_str[64];
    int error_code;
    float logprob0;
    struct srv_top_logprob top0[4];
};

static void take_event(struct result *res, struct srv_event *ev) {
    CHECK_MSG(res->finish == SRV_FINISH_NONE, "event after the finish (req %llu)",
              (unsigned long long)ev->req_id);
    CHECK(ev->text != NULL);
    CHECK_EQ(strlen(ev->text), ev->text_len);
    for (int i = 0; i < ev->n_tokens; i++)
        res->ids[res->n_ids++] = ev->token_ids[i];
    if (ev->logprobs && res->n_ids == ev->n_tokens) {
        res->logprob0 = ev->logprobs[0];
        for (int k = 0; k < ev->n_top && k < 4; k++)
            res->top0[k] = ev->top[k];
    }
    memcpy(res->text + res->text_len, ev->text, ev->text_len);
    res->text_len += ev->text_len;
    res->text[res->text_len] = 0;
    res->n_events++;
    CHECK_EQ(ev->n_completion_tokens, res->n_ids);
    res->finish = ev->finish;
    res->stop_token = ev->stop_token;
    if (ev->stop_str) snprintf(res->stop_str, sizeof(res->stop_str), "%s", ev->stop_str);
    res->error_code = ev->error_code;
    srv_event_free(ev);
}

static void run_one(struct srv_engine *e, struct srv_request *r, struct result *res, int n) {
    struct srv_event *evs;
    int n_evs;
    memset(res, 0, (size_t)n * sizeof(*res));
    CHECK_OK(srv_engine_run_sync(e, r, &evs, &n_evs));
    for (int i = 0; i < n_evs; i++) {
        CHECK(evs[i].index >= 0 && evs[i].index < n);
        take_event(&res[evs[i].index], &evs[i]);
    }
    free(evs);
    for (int i = 0; i < n; i++)
        CHECK(res[i].finish != SRV_FINISH_NONE);
}

// Polls a started engine until `n_want` results of ids [0, n_want) have finished.
static void wait_all(struct srv_engine *e, struct result *res, int n_want) {
    int done = 0;
    struct srv_event evs[64];
    for (int spins = 0; done < n_want; spins++) {
        CHECK_MSG(spins < 200000, "timed out with %d of %d finished", done, n_want);
        int got = srv_engine_poll(e, evs, 64);
        if (got == 0) usleep(200);
        for (int i = 0; i < got; i++) {
            CHECK((int)evs[i].req_id < n_want);
            struct result *r = &res[evs[i].req_id];
            take_event(r, &evs[i]);
            done += r->finish != SRV_FINISH_NONE;
        }
    }
}

static void make_prompt(int32_t *out, int n, uint64_t seed, int vocab) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = (int32_t)((seed >> 33) % (uint64_t)(vocab - 1));
    }
}

// ---- tests

TEST_TIMEOUT(engine_hundreds_of_sequences_tiny_pool_match_solo, 120) {
    enum { N = 240, V = 500 };
    struct fake big, tiny;
    fake_init(&big, V, 512, 4, 8, 64, 64);
    fake_init(&tiny, V, 20, 4, 16, 24, 64); // 80 tokens of KV for 240 sequences
    struct srv_engine *solo = engine_new(&big, NULL, 0);
    struct srv_engine *e = engine_new(&tiny, NULL, 0);
    struct result *want = calloc(N, sizeof(*want)), *got = calloc(N, sizeof(*got));
    int32_t prompt[40];
    uint64_t rng = 5;
    CHECK_OK(srv_engine_start(e));
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ull + 1;
        int n_prompt = 1 + (int)((rng >> 40) % 30), max_tokens = 1 + (int)((rng >> 20) % 24);
        make_prompt(prompt, n_prompt, rng, V);
        run_one(solo, request((uint64_t)i, prompt, n_prompt, max_tokens), &want[i], 1);
        CHECK_OK(srv_engine_submit(e, request((uint64_t)i, prompt, n_prompt, max_tokens)));
    }
    wait_all(e, got, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(got[i].finish, want[i].finish);
        CHECK_EQ(got[i].n_ids, want[i].n_ids);
        for (int t = 0; t < got[i].n_ids; t++)
            CHECK_MSG(got[i].ids[t] == want[i].ids[t], "request %d token %d: %d batched, %d alone",
                      i, t, got[i].ids[t], want[i].ids[t]);
    }
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    fprintf(stderr, "  %d requests, %lld steps, %lld preemptions, %d/%d blocks free\n", N,
            (long long)st.n_steps, (long long)st.n_preemptions, st.kv.n_free, st.kv.n_blocks);
    CHECK(st.n_preemptions > 10);
    CHECK_EQ(st.kv.n_free, 20);
    CHECK_EQ(st.n_running + st.n_waiting, 0);
    CHECK_EQ(st.requests_finished[SRV_FINISH_LENGTH] + st.requests_finished[SRV_FINISH_STOP], N);
    srv_engine_free(e);
    srv_engine_free(solo);
    free(want);
    free(got);
    free(big.cache);
    free(tiny.cache);
}

TEST(engine_seed_reproduces_whatever_the_batch) {
    enum { V = 300, N = 30 };
    struct fake a, b;
    fake_init(&a, V, 256, 4, 8, 32, 64);
    fake_init(&b, V, 16, 4, 8, 16, 64);
    struct srv_engine *solo = engine_new(&a, NULL, 0), *e = engine_new(&b, NULL, 0);
    int32_t prompt[12];
    make_prompt(prompt, 12, 77, V);
    struct srv_request *r = request(0, prompt, 12, 20);
    r->sp.temperature = 0.9f;
    r->sp.top_p = 0.95f;
    r->sp.top_k = 50;
    r->sp.has_seed = true;
    r->sp.seed = 1234;
    r->sp.ignore_eos = true;
    struct result alone, again, other;
    run_one(solo, r, &alone, 1);
    r = request(0, prompt, 12, 20);
    r->sp = (struct srv_sampling){.temperature = 0.9f,
                                  .top_p = 0.95f,
                                  .top_k = 50,
                                  .repetition_penalty = 1,
                                  .has_seed = true,
                                  .seed = 1234,
                                  .max_tokens = 20,
                                  .ignore_eos = true,
                                  .logprobs = -1};
    run_one(solo, r, &again, 1);
    CHECK_EQ(again.n_ids, alone.n_ids);
    CHECK(memcmp(again.ids, alone.ids, sizeof(int32_t) * (size_t)alone.n_ids) == 0);
    // Now the same request among others, in a pool small enough to preempt.
    struct result *res = calloc(N, sizeof(*res));
    CHECK_OK(srv_engine_start(e));
    for (int i = 0; i < N; i++) {
        int32_t p2[12];
        make_prompt(p2, 12, 100 + (uint64_t)i, V);
        struct srv_request *q = request((uint64_t)i, i == 7 ? prompt : p2, 12, 20);
        q->sp.temperature = 0.9f;
        q->sp.top_p = 0.95f;
        q->sp.top_k = 50;
        q->sp.ignore_eos = true;
        if (i == 7) {
            q->sp.has_seed = true;
            q->sp.seed = 1234;
        }
        CHECK_OK(srv_engine_submit(e, q));
    }
    wait_all(e, res, N);
    CHECK_EQ(res[7].n_ids, alone.n_ids);
    for (int t = 0; t < alone.n_ids; t++)
        CHECK_EQ(res[7].ids[t], alone.ids[t]);
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    CHECK(st.n_preemptions > 0);
    // Another seed gives another completion.
    r = request(0, prompt, 12, 20);
    r->sp.temperature = 0.9f;
    r->sp.has_seed = true;
    r->sp.seed = 99;
    r->sp.ignore_eos = true;
    run_one(solo, r, &other, 1);
    CHECK(memcmp(other.ids, alone.ids, sizeof(int32_t) * (size_t)alone.n_ids) != 0);
    srv_engine_free(e);
    srv_engine_free(solo);
    free(res);
    free(a.cache);
    free(b.cache);
}

// The fake model follows a script of token ids that spell text through the tokenizer.
static void script_of(const struct tok_tokenizer *tok, const char **pieces, int n, int32_t *out,
                      int *n_out) {
    *n_out = 0;
    for (int i = 0; i < n; i++) {
        int32_t *ids;
        int n_ids;
        CHECK_OK(tok_encode(tok, pieces[i], strlen(pieces[i]), false, &ids, &n_ids));
        memcpy(out + *n_out, ids, (size_t)n_ids * sizeof(int32_t));
        *n_out += n_ids;
        free(ids);
    }
}

TEST(engine_stop_strings_across_tokens) {
    struct tok_tokenizer *tok;
    if (!test_file_exists(".cache/qwen3-tokenizer/tokenizer.json")) TEST_SKIP("no tokenizer");
    CHECK_OK(tok_load(&tok, ".cache/qwen3-tokenizer"));
    struct fake f;
    fake_init(&f, tok_n_vocab(tok) + 64, 64, 4, 4, 64, 128);
    struct srv_engine *e = engine_new(&f, tok, 0);
    const char *pieces[] = {"Hello wo", "rld. EN", "D of it", " and more text after"};
    int32_t script[64];
    int n_script;
    script_of(tok, pieces, 4, script, &n_script);
    f.script = script;
    f.n_script = n_script;
    int32_t prompt[3] = {10, 20, 30};
    f.script_prompt = 3;
    struct result res;
    // "END" spans the second and third pieces: output stops before it, and nothing of it
    // (not even "EN") was ever sent.
    struct srv_request *r = request(1, prompt, 3, 40);
    add_stop(r, "xyz");
    add_stop(r, ". END");
    run_one(e, r, &res, 1);
    CHECK_EQ(res.finish, SRV_FINISH_STOP);
    CHECK_STR(res.text, "Hello world");
    CHECK_STR(res.stop_str, ". END");
    CHECK_EQ(res.stop_token, -1);
    // With include_stop_str_in_output the stop string is part of the text.
    r = request(2, prompt, 3, 40);
    add_stop(r, "END");
    r->sp.include_stop_str_in_output = true;
    run_one(e, r, &res, 1);
    CHECK_STR(res.text, "Hello world. END");
    // A stop string that never appears: held-back text is released, max_tokens ends it.
    r = request(3, prompt, 3, n_script);
    add_stop(r, "after!");
    run_one(e, r, &res, 1);
    CHECK_EQ(res.finish, SRV_FINISH_LENGTH);
    CHECK_STR(res.text, "Hello world. END of it and more text after");
    CHECK_EQ(res.n_ids, n_script);
    srv_engine_free(e);
    tok_free(tok);
    free(f.cache);
}

TEST(engine_eos_stop_ids_min_tokens_ignore_eos) {
    enum { V = 200 };
    struct fake f;
    fake_init(&f, V, 64, 4, 4, 64, 64);
    int32_t eos = V - 1, script[] = {5, 6, V - 1, 7, 8, 9, 10, 11};
    f.script = script;
    f.n_script = 8;
    f.script_prompt = 2;
    struct srv_engine *e = engine_new(&f, NULL, 0);
    int32_t prompt[2] = {1, 2};
    struct result res;
    run_one(e, request(1, prompt, 2, 20), &res, 1);
    CHECK_EQ(res.finish, SRV_FINISH_STOP);
    CHECK_EQ(res.stop_token, eos);
    CHECK_EQ(res.n_ids, 3);
    CHECK_EQ(res.ids[2], eos);
    // min_tokens 5: eos is suppressed at the third token, so something else comes.
    struct srv_request *r = request(2, prompt, 2, 6);
    r->sp.min_tokens = 5;
    run_one(e, r, &res, 1);
    CHECK(res.ids[2] != eos);
    CHECK_EQ(res.n_ids, 6);
    CHECK_EQ(res.finish, SRV_FINISH_LENGTH);
    // ignore_eos: eos is just a token.
    r = request(3, prompt, 2, 6);
    r->sp.ignore_eos = true;
    run_one(e, r, &res, 1);
    CHECK_EQ(res.ids[2], eos);
    CHECK_EQ(res.n_ids, 6);
    // A stop token id ends it like eos does.
    r = request(4, prompt, 2, 6);
    r->sp.stop_token_ids = malloc(sizeof(int32_t));
    r->sp.stop_token_ids[0] = 6;
    r->sp.n_stop_token_ids = 1;
    run_one(e, r, &res, 1);
    CHECK_EQ(res.finish, SRV_FINISH_STOP);
    CHECK_EQ(res.stop_token, 6);
    CHECK_EQ(res.n_ids, 2);
    // Logprobs: the scripted token dominates, so its logprob is near 0 and it tops the list.
    r = request(5, prompt, 2, 1);
    r->sp.logprobs = 3;
    run_one(e, r, &res, 1);
    CHECK_EQ(res.top0[0].id, 5);
    CHECK_NEAR(res.logprob0, 0.0, 1e-3);
    CHECK_NEAR(res.top0[0].logprob, res.logprob0, 1e-6);
    CHECK(res.top0[1].logprob < -30);
    srv_engine_free(e);
    free(f.cache);
}

TEST(engine_n_choices_share_the_prompt) {
    enum { V = 300 };
    struct fake f;
    fake_init(&f, V, 64, 4, 8, 64, 64);
    struct srv_engine *e = engine_new(&f, NULL, 0);
    int32_t prompt[18];
    make_prompt(prompt, 18, 3, V);
    struct result one, three[3];
    struct srv_request *r = request(1, prompt, 18, 5);
    r->sp.ignore_eos = true;
    run_one(e, r, &one, 1);
    int64_t solo_tokens = f.n_tokens_total;
    f.n_tokens_total = 0;
    r = request(2, prompt, 18, 5);
    r->sp.ignore_eos = true;
    r->n = 3;
    run_one(e, r, three, 3);
    // Greedy choices agree with the single run; the prompt's 4 full blocks (16 tokens) were
    // computed once, each other choice computing only the last 2 prompt tokens.
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(three[i].n_ids, 5);
        CHECK(memcmp(three[i].ids, one.ids, 5 * sizeof(int32_t)) == 0);
    }
    CHECK_EQ(f.n_tokens_total, solo_tokens + 2 * (2 + 4));
    // Sampled choices with one seed differ from one another.
    r = request(3, prompt, 18, 8);
    r->sp.ignore_eos = true;
    r->sp.temperature = 1.0f;
    r->sp.has_seed = true;
    r->sp.seed = 5;
    r->n = 3;
    run_one(e, r, three, 3);
    CHECK(memcmp(three[0].ids, three[1].ids, 8 * sizeof(int32_t)) != 0);
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    CHECK_EQ(st.kv.n_free, 64);
    srv_engine_free(e);
    free(f.cache);
}

TEST(engine_cancel_frees_blocks) {
    enum { V = 200 };
    struct fake f;
    fake_init(&f, V, 64, 4, 4, 64, 256);
    f.usleep_per_step = 2000;
    struct srv_engine *e = engine_new(&f, NULL, 0);
    CHECK_OK(srv_engine_start(e));
    int32_t prompt[30];
    make_prompt(prompt, 30, 8, V);
    struct srv_request *r = request(0, prompt, 30, 200);
    r->sp.ignore_eos = true;
    CHECK_OK(srv_engine_submit(e, r));
    struct result res[1];
    memset(res, 0, sizeof(res));
    struct srv_event ev;
    int spins = 0;
    while (res[0].n_ids < 3 && spins++ < 100000) {
        if (srv_engine_poll(e, &ev, 1) == 1)
            take_event(&res[0], &ev);
        else
            usleep(100);
    }
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    CHECK(st.kv.n_free < 64);
    srv_engine_cancel(e, 0);
    srv_engine_cancel(e, 12345); // unknown ids are ignored
    wait_all(e, res, 1);
    CHECK_EQ(res[0].finish, SRV_FINISH_ABORT);
    CHECK(res[0].n_ids < 200);
    srv_engine_stats(e, &st);
    CHECK_EQ(st.kv.n_free, 64);
    CHECK_EQ(st.requests_finished[SRV_FINISH_ABORT], 1);
    srv_engine_free(e);
    free(f.cache);
}

TEST(engine_refuses_what_can_never_fit_and_when_full) {
    enum { V = 200 };
    struct fake f;
    fake_init(&f, V, 8, 4, 4, 64, 64); // pool: 32 tokens; max_model_len 64
    struct srv_engine *e = engine_new(&f, NULL, 2);
    int32_t prompt[70] = {0};
    struct srv_request *r = request(1, prompt, 60, 10);
    CHECK_EQ(srv_engine_submit(e, r), ERR_INVAL);
    CHECK(strstr(err_msg(), "maximum context length is 64") != NULL);
    r->n_prompt = 20;
    r->sp.max_tokens = 20; // 40 tokens: 10 blocks > 8
    CHECK_EQ(srv_engine_submit(e, r), ERR_INVAL);
    CHECK(strstr(err_msg(), "whole pool holds 8 blocks") != NULL);
    r->sp.max_tokens = 0; // "up to max_model_len" can never fit this pool either
    CHECK_EQ(srv_engine_submit(e, r), ERR_INVAL);
    r->sp.max_tokens = 4;
    r->sp.top_p = 0;
    CHECK_EQ(srv_engine_submit(e, r), ERR_INVAL);
    r->sp.top_p = 1;
    r->prompt_ids[3] = V;
    CHECK_EQ(srv_engine_submit(e, r), ERR_INVAL);
    r->prompt_ids[3] = 1;
    r->n_prompt = 0;
    CHECK_EQ(srv_engine_submit(e, r), ERR_INVAL);
    r->n_prompt = 20;
    CHECK_OK(srv_engine_submit(e, r));
    CHECK_OK(srv_engine_submit(e, request(2, prompt, 4, 4)));
    struct srv_request *third = request(3, prompt, 4, 4);
    CHECK_EQ(srv_engine_submit(e, third), ERR_BUSY);
    srv_request_free(third);
    // Stopping aborts what is queued.
    srv_engine_stop(e);
    struct srv_event evs[4];
    int n = srv_engine_poll(e, evs, 4);
    CHECK_EQ(n, 2);
    for (int i = 0; i < n; i++) {
        CHECK_EQ(evs[i].finish, SRV_FINISH_ABORT);
        srv_event_free(&evs[i]);
    }
    third = request(3, prompt, 4, 4);
    CHECK_EQ(srv_engine_submit(e, third), ERR_CUDA_FAULT);
    srv_request_free(third);
    srv_engine_stop(e); // idempotent
    srv_engine_free(e);
    free(f.cache);
}

TEST(engine_device_fault_ends_everything) {
    enum { V = 200, N = 6 };
    struct fake f;
    fake_init(&f, V, 64, 4, 4, 16, 64);
    f.fail_at_step = 4;
    f.fail_code = ERR_CUDA_FAULT;
    struct srv_engine *e = engine_new(&f, NULL, 0);
    int32_t prompt[10];
    make_prompt(prompt, 10, 1, V);
    // All queued before the thread starts, so none can arrive after the fault.
    for (int i = 0; i < N; i++) {
        struct srv_request *r = request((uint64_t)i, prompt, 10, 30);
        r->sp.ignore_eos = true;
        CHECK_OK(srv_engine_submit(e, r));
    }
    CHECK_OK(srv_engine_start(e));
    struct result res[N];
    memset(res, 0, sizeof(res));
    wait_all(e, res, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(res[i].finish, SRV_FINISH_ERROR);
        CHECK_EQ(res[i].error_code, ERR_CUDA_FAULT);
    }
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    CHECK(st.dead);
    CHECK_EQ(st.kv.n_free, 64);
    struct srv_request *r = request(9, prompt, 10, 3);
    CHECK_EQ(srv_engine_submit(e, r), ERR_CUDA_FAULT);
    srv_request_free(r);
    srv_engine_free(e);
    free(f.cache);
}

TEST(engine_step_error_fails_only_that_step) {
    enum { V = 200 };
    struct fake f;
    fake_init(&f, V, 64, 4, 4, 16, 64);
    f.fail_at_step = 2;
    f.fail_code = ERR_CUDA;
    struct srv_engine *e = engine_new(&f, NULL, 0);
    int32_t prompt[4] = {1, 2, 3, 4};
    struct result res;
    struct srv_request *r = request(1, prompt, 4, 5);
    r->sp.ignore_eos = true;
    run_one(e, r, &res, 1);
    CHECK_EQ(res.finish, SRV_FINISH_ERROR);
    CHECK_EQ(res.error_code, ERR_CUDA);
    CHECK_EQ(res.n_ids, 1);
    r = request(2, prompt, 4, 5);
    r->sp.ignore_eos = true;
    run_one(e, r, &res, 1);
    CHECK_EQ(res.finish, SRV_FINISH_LENGTH);
    CHECK_EQ(res.n_ids, 5);
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    CHECK(!st.dead);
    CHECK_EQ(st.kv.n_free, 64);
    srv_engine_free(e);
    free(f.cache);
}

// ---- the engine over the real forward pass on the CPU backend

static struct srv_engine *cpu_engine(struct cpu_model *c, const struct tok_tokenizer *tok) {
    struct srv_engine_config cfg = {c->m.max_seqs, c->m.max_tokens,
                                    c->m.max_blocks_per_seq * c->m.block_size, 0};
    struct srv_engine *e = NULL;
    CHECK_OK(srv_engine_init(&e, &c->m, tok, &cfg, NULL, NULL));
    return e;
}

// The test: many concurrent sequences against a deliberately tiny pool, forcing
// preemption again and again, produce greedily exactly the tokens each produces alone.
TEST_TIMEOUT(engine_cpu_tiny_pool_greedy_matches_solo, 120) {
    const char *dir = "tests/data/tiny-qwen3";
    if (!test_file_exists("tests/data/tiny-qwen3/model.safetensors")) TEST_SKIP("no tiny-qwen3");
    enum { N = 240 };
    struct cpu_model big, tiny;
    cpu_model_open(&big, dir, MODEL_LOAD_SAFETENSORS, 64, 4, 4, 64, 48);
    cpu_model_open(&tiny, dir, MODEL_LOAD_SAFETENSORS, 12, 4, 8, 32, 48); // 48 tokens of KV
    struct srv_engine *solo = cpu_engine(&big, NULL), *e = cpu_engine(&tiny, NULL);
    struct result *want = calloc(N, sizeof(*want)), *got = calloc(N, sizeof(*got));
    int32_t prompt[32];
    uint64_t rng = 11;
    int V = big.m.cfg.vocab_size;
    CHECK_OK(srv_engine_start(e));
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ull + 1;
        int n_prompt = 1 + (int)((rng >> 40) % 24), max_tokens = 1 + (int)((rng >> 20) % 12);
        make_prompt(prompt, n_prompt, rng, V - 2);
        run_one(solo, request((uint64_t)i, prompt, n_prompt, max_tokens), &want[i], 1);
        CHECK_OK(srv_engine_submit(e, request((uint64_t)i, prompt, n_prompt, max_tokens)));
    }
    wait_all(e, got, N);
    int64_t n_tokens = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(got[i].finish, want[i].finish);
        CHECK_EQ(got[i].n_ids, want[i].n_ids);
        for (int t = 0; t < got[i].n_ids; t++)
            CHECK_MSG(got[i].ids[t] == want[i].ids[t], "request %d token %d: %d batched, %d alone",
                      i, t, got[i].ids[t], want[i].ids[t]);
        n_tokens += got[i].n_ids;
    }
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    fprintf(stderr, "  %d requests, %lld tokens, %lld steps, %lld preemptions, %d/%d blocks free\n",
            N, (long long)n_tokens, (long long)st.n_steps, (long long)st.n_preemptions,
            st.kv.n_free, st.kv.n_blocks);
    CHECK(st.n_preemptions > 5);
    CHECK_EQ(st.kv.n_free, 12);
    CHECK_EQ(st.generation_tokens_total, n_tokens);
    srv_engine_free(e);
    srv_engine_free(solo);
    cpu_model_close(&big);
    cpu_model_close(&tiny);
    free(want);
    free(got);
}

// The default model (dummy weights, the real tokenizer): events carry text that adds up to the
// decoded ids, and a seeded sampled run repeats.
TEST_TIMEOUT(engine_cpu_default_model_text_and_seed, 60) {
    const char *dir = ".cache/keel-default";
    if (!test_file_exists(".cache/keel-default/tokenizer.json")) TEST_SKIP("no default model");
    struct tok_tokenizer *tok;
    CHECK_OK(tok_load(&tok, dir));
    struct cpu_model c;
    cpu_model_open(&c, dir, MODEL_LOAD_DUMMY, 32, 16, 2, 64, 256);
    struct srv_engine *e = cpu_engine(&c, tok);
    int32_t *ids;
    int n_ids;
    const char *text = "The quick brown fox";
    CHECK_OK(tok_encode(tok, text, strlen(text), true, &ids, &n_ids));
    struct result a, b;
    for (int k = 0; k < 2; k++) {
        struct srv_request *r = request(1, ids, n_ids, 6);
        r->sp.temperature = 0.8f;
        r->sp.has_seed = true;
        r->sp.seed = 3;
        r->sp.ignore_eos = true;
        run_one(e, r, k ? &b : &a, 1);
    }
    CHECK_EQ(a.n_ids, 6);
    CHECK(memcmp(a.ids, b.ids, sizeof(int32_t) * 6) == 0);
    for (int i = 0; i < a.n_ids; i++)
        CHECK(a.ids[i] < tok_n_vocab(tok));
    char *dec;
    size_t dec_len;
    CHECK_OK(tok_decode(tok, a.ids, a.n_ids, true, &dec, &dec_len));
    CHECK_STR(a.text, dec);
    free(dec);
    free(ids);
    srv_engine_free(e);
    cpu_model_close(&c);
    tok_free(tok);
}

static void count_cb(void *arg) {
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
}

TEST(engine_notifies_and_counts) {
    enum { V = 200, N = 5 };
    struct fake f;
    fake_init(&f, V, 64, 4, 4, 16, 64);
    struct srv_engine_config cfg = {4, 16, 64, 0};
    struct srv_engine *e = NULL;
    int n_notified = 0;
    CHECK_OK(srv_engine_init(&e, &f.m, NULL, &cfg, count_cb, &n_notified));
    srv_engine_set_forward(e, fake_forward, &f);
    CHECK_OK(srv_engine_start(e));
    int32_t prompt[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < N; i++) {
        struct srv_request *r = request((uint64_t)i, prompt, 6, 3 + i);
        r->sp.ignore_eos = true;
        CHECK_OK(srv_engine_submit(e, r));
    }
    struct result res[N];
    memset(res, 0, sizeof(res));
    wait_all(e, res, N);
    struct srv_engine_stats st;
    srv_engine_stats(e, &st);
    CHECK(__atomic_load_n(&n_notified, __ATOMIC_SEQ_CST) > 0);
    CHECK_EQ(st.prompt_tokens_total, 6 * N);
    CHECK_EQ(st.generation_tokens_total, 3 + 4 + 5 + 6 + 7);
    CHECK_EQ(st.requests_finished[SRV_FINISH_LENGTH], N);
    CHECK_EQ(st.n_running + st.n_waiting, 0);
    CHECK(st.n_steps >= 7);
    CHECK(!st.dead && !st.draining);
    srv_engine_free(e);
    free(f.cache);
}

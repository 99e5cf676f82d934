// The engine's sampling through the backend op (model_forward_sample) over the real forward pass
// on the CPU backend: the same requests (greedy, seeded temperature/top_k/top_p/min_p, penalties,
// logprobs, n > 1, min_tokens) give exactly the tokens and logprobs of the host path
// (KEEL_GPU_SAMPLE=0: model_forward, then the CPU op on host logits), and seeded sampled requests
// give the same tokens alone as among many others.
#include "common/err.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "server/engine.h"
#include "tests/unit/cpu_model.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void se_open(struct cpu_model *c, int n_blocks, int max_seqs) {
    cpu_model_open(c, "tests/data/tiny-qwen3", MODEL_LOAD_SAFETENSORS, n_blocks, 4, max_seqs, 64,
                   64);
}

static struct srv_engine *se_engine(struct cpu_model *c, bool host) {
    struct srv_engine_config cfg = {c->m.max_seqs, c->m.max_tokens,
                                    c->m.max_blocks_per_seq * c->m.block_size, 0};
    if (host) setenv("KEEL_GPU_SAMPLE", "0", 1);
    struct srv_engine *e = NULL;
    CHECK_OK(srv_engine_init(&e, &c->m, NULL, &cfg, NULL, NULL));
    unsetenv("KEEL_GPU_SAMPLE");
    return e;
}

// Request i of a fixed mix: every sampling feature, seeded so that two runs can be compared.
static struct srv_request *se_request(int i, int vocab) {
    struct srv_request *r = calloc(1, sizeof(*r));
    r->id = (uint64_t)i;
    r->n = i % 5 == 4 ? 3 : 1;
    r->n_prompt = 3 + i % 9;
    r->prompt_ids = malloc(sizeof(int32_t) * r->n_prompt);
    for (int t = 0; t < r->n_prompt; t++)
        r->prompt_ids[t] = (int32_t)((i * 131 + t * 17) % (vocab - 2));
    srv_sampling_defaults(&r->sp);
    r->sp.max_tokens = 4 + i % 7;
    r->sp.has_seed = true;
    r->sp.seed = 1000 + (uint64_t)i;
    r->sp.ignore_eos = i % 2 == 0;
    switch (i % 6) {
    case 0:
        r->sp.temperature = 0;
        break;
    case 1:
        r->sp.temperature = 0.9f, r->sp.top_k = 20;
        break;
    case 2:
        r->sp.temperature = 1.1f, r->sp.top_p = 0.8f, r->sp.min_p = 0.02f;
        break;
    case 3:
        r->sp.temperature = 0.7f, r->sp.repetition_penalty = 1.3f;
        r->sp.frequency_penalty = 0.5f, r->sp.presence_penalty = 0.2f;
        break;
    case 4:
        r->sp.temperature = 1.0f, r->sp.logprobs = 5;
        break;
    default:
        r->sp.temperature = 0, r->sp.repetition_penalty = 1.5f, r->sp.min_tokens = 3;
        break;
    }
    if (i % 3 == 0) r->sp.logprobs = 2;
    return r;
}

struct se_out {
    int32_t ids[3][64];
    float lps[3][64];
    int n[3];
    int finish[3];
};

static void se_take(struct se_out *o, struct srv_event *ev) {
    int c = ev->index;
    for (int t = 0; t < ev->n_tokens; t++) {
        o->ids[c][o->n[c]] = ev->token_ids[t];
        o->lps[c][o->n[c]] = ev->logprobs ? ev->logprobs[t] : 0;
        o->n[c]++;
    }
    if (ev->finish) o->finish[c] = ev->finish;
    srv_event_free(ev);
}

static void se_run_sync(struct srv_engine *e, struct srv_request *r, struct se_out *o) {
    struct srv_event *evs;
    int n;
    memset(o, 0, sizeof(*o));
    CHECK_OK(srv_engine_run_sync(e, r, &evs, &n));
    for (int i = 0; i < n; i++)
        se_take(o, &evs[i]);
    free(evs);
}

static void se_same(const struct se_out *a, const struct se_out *b, int req, const char *what) {
    for (int c = 0; c < 3; c++) {
        CHECK_MSG(a->n[c] == b->n[c] && a->finish[c] == b->finish[c],
                  "request %d choice %d (%s): %d tokens (finish %d) vs %d (finish %d)", req, c,
                  what, a->n[c], a->finish[c], b->n[c], b->finish[c]);
        for (int t = 0; t < a->n[c]; t++) {
            CHECK_MSG(a->ids[c][t] == b->ids[c][t], "request %d choice %d token %d (%s): %d vs %d",
                      req, c, t, what, a->ids[c][t], b->ids[c][t]);
            CHECK_MSG(a->lps[c][t] == b->lps[c][t], "request %d token %d logprob (%s): %g vs %g",
                      req, t, what, a->lps[c][t], b->lps[c][t]);
        }
    }
}

TEST_TIMEOUT(sample_engine_device_path_equals_host_path, 60) {
    if (!test_file_exists("tests/data/tiny-qwen3/model.safetensors")) TEST_SKIP("no tiny-qwen3");
    enum { N = 24 };
    struct cpu_model a, b;
    se_open(&a, 64, 8);
    se_open(&b, 64, 8);
    struct srv_engine *dev = se_engine(&a, false), *host = se_engine(&b, true);
    int V = a.m.cfg.vocab_size, n_logprob_rows = 0, n_sampled = 0;
    for (int i = 0; i < N; i++) {
        struct se_out x, y;
        se_run_sync(dev, se_request(i, V), &x);
        se_run_sync(host, se_request(i, V), &y);
        se_same(&x, &y, i, "backend op vs host");
        CHECK(x.n[0] > 0);
        n_logprob_rows += i % 3 == 0 || i % 6 == 4;
        n_sampled += i % 6 >= 1 && i % 6 <= 4;
    }
    CHECK(n_logprob_rows > 0 && n_sampled > 0);
    srv_engine_free(dev);
    srv_engine_free(host);
    cpu_model_close(&a);
    cpu_model_close(&b);
}

TEST_TIMEOUT(sample_engine_seeded_alone_equals_batched, 60) {
    if (!test_file_exists("tests/data/tiny-qwen3/model.safetensors")) TEST_SKIP("no tiny-qwen3");
    enum { N = 30 };
    struct cpu_model solo_m, many_m;
    se_open(&solo_m, 64, 8);
    se_open(&many_m, 64, 8);
    struct srv_engine *solo = se_engine(&solo_m, false), *many = se_engine(&many_m, false);
    int V = solo_m.m.cfg.vocab_size;
    struct se_out *want = calloc(N, sizeof(*want)), *got = calloc(N, sizeof(*got));
    for (int i = 0; i < N; i++)
        se_run_sync(solo, se_request(i, V), &want[i]);
    CHECK_OK(srv_engine_start(many));
    for (int i = 0; i < N; i++)
        CHECK_OK(srv_engine_submit(many, se_request(i, V)));
    int live = 0;
    for (int i = 0; i < N; i++)
        live += i % 5 == 4 ? 3 : 1;
    struct srv_event evs[64];
    for (int spins = 0; live > 0; spins++) {
        CHECK_MSG(spins < 200000, "timed out with %d choices live", live);
        int n = srv_engine_poll(many, evs, 64);
        if (n == 0) usleep(200);
        for (int k = 0; k < n; k++) {
            live -= evs[k].finish != SRV_FINISH_NONE;
            se_take(&got[evs[k].req_id], &evs[k]);
        }
    }
    for (int i = 0; i < N; i++)
        se_same(&want[i], &got[i], i, "alone vs batched");
    srv_engine_free(solo);
    srv_engine_free(many);
    cpu_model_close(&solo_m);
    cpu_model_close(&many_m);
    free(want);
    free(got);
}

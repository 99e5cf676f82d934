// Tensor parallelism on the CPU backend (ranks are threads, kernels/cpu/comm.c):
// - the communicator: all_reduce and all_gather give the exact rank-order results on every rank,
//   and an aborted group releases its waiting ranks with an error;
// - TP=2 (and TP=4 where the heads divide) logits equal TP=1 within bf16 tolerance, and greedy
//   ids are equal, on the committed tiny checkpoints (safetensors) and on dummy weights (which
//   must be shards of the same full tensors), including a vocabulary that needs padding;
// - the same through the engine (the group behind struct model);
// - shapes that do not divide by tp_size are refused, naming the dimension.
#include "common/err.h"
#include "kernels/comm.h"
#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "models/tp.h"
#include "server/engine.h"
#include "tests/test.h"

#include <pthread.h>
#include <stdint.h>

// ---- the communicator

struct comm_job {
    struct kern_comm *c;
    bf16 x[1000];
    float g[4 * 7];
    int rc_reduce, rc_gather;
};

static void *comm_job_main(void *p) {
    struct comm_job *j = p;
    int r = kern_comm_rank(j->c);
    for (int i = 0; i < 1000; i++) j->x[i] = f32_to_bf16((float)(r + 1) * 0.25f + (float)i);
    j->rc_reduce = kern_comm_all_reduce_bf16(j->c, NULL, j->x, 1000);
    float in[7];
    for (int i = 0; i < 7; i++) in[i] = (float)(100 * r + i);
    j->rc_gather = kern_comm_all_gather_f32(j->c, NULL, j->g, in, 7);
    return NULL;
}

TEST(tp_cpu_comm_all_reduce_and_gather) {
    for (int n = 1; n <= 4; n++) {
        struct kern_comm *comms[4];
        CHECK_OK(kern_cpu_comm_init_all(comms, n));
        struct comm_job jobs[4];
        pthread_t th[4];
        for (int r = 0; r < n; r++) {
            jobs[r].c = comms[r];
            CHECK_EQ(kern_comm_size(comms[r]), n);
            CHECK(pthread_create(&th[r], NULL, comm_job_main, &jobs[r]) == 0);
        }
        for (int r = 0; r < n; r++) pthread_join(th[r], NULL);
        for (int r = 0; r < n; r++) {
            CHECK_OK(jobs[r].rc_reduce);
            CHECK_OK(jobs[r].rc_gather);
            for (int i = 0; i < 1000; i += 37) {
                float want = 0;
                for (int k = 0; k < n; k++)
                    want += bf16_to_f32(f32_to_bf16((float)(k + 1) * 0.25f + (float)i));
                CHECK_NEAR(bf16_to_f32(jobs[r].x[i]), bf16_to_f32(f32_to_bf16(want)), 0);
            }
            for (int k = 0; k < n; k++)
                for (int i = 0; i < 7; i++) CHECK_NEAR(jobs[r].g[k * 7 + i], 100 * k + i, 0);
        }
        for (int r = 0; r < n; r++) kern_comm_free(comms[r]);
    }
    CHECK(kern_cpu_comm_init_all((struct kern_comm *[1]){0}, 0) == ERR_INVAL);
}

static void *comm_wait_main(void *p) {
    struct comm_job *j = p;
    j->rc_reduce = kern_comm_all_reduce_bf16(j->c, NULL, j->x, 10);
    return NULL;
}

TEST(tp_cpu_comm_abort_releases_waiting_ranks) {
    struct kern_comm *comms[2];
    CHECK_OK(kern_cpu_comm_init_all(comms, 2));
    struct comm_job j = {.c = comms[0]};
    memset(j.x, 0, sizeof j.x);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, comm_wait_main, &j) == 0);
    kern_comm_abort(comms[1]); // rank 1 failed and will never join
    pthread_join(th, NULL);
    CHECK_EQ(j.rc_reduce, ERR_INTERNAL);
    CHECK(strstr(err_msg(), "") != NULL);
    CHECK_EQ(kern_comm_all_reduce_bf16(comms[1], NULL, j.x, 10), ERR_INTERNAL);
    kern_comm_free(comms[0]);
    kern_comm_free(comms[1]);
}

// ---- a model of tp_size ranks on the CPU backend

#define TP_MAX 4
#define TP_TOKENS 32
#define TP_SEQS 2
#define TP_BS 4
#define TP_BLOCKS 48
#define TP_MAX_BLOCKS 12

struct tp_fx {
    int size;
    struct mem_arena arena[TP_MAX];
    struct kern_ctx *ctx[TP_MAX];
    struct mem_plan plan[TP_MAX];
    struct mem_plan_settings set;
    struct model single;     // size 1: the plain path, no group
    struct model_group *g;   // size > 1
    struct model *m;         // what to call model_forward on
};

static void tp_settings(struct mem_plan_settings *set) {
    memset(set, 0, sizeof *set);
    set->gpu_memory_utilization = 0.9;
    set->max_num_batched_tokens = TP_TOKENS;
    set->max_num_seqs = TP_SEQS;
    set->block_size = TP_BS;
    set->max_model_len = TP_MAX_BLOCKS * TP_BS;
    set->num_kv_blocks = TP_BLOCKS;
}

// Rank r's arena: its shard's weights, scratch, logits and KV cache of its heads.
static size_t tp_arena_bytes(const struct model_config *full, int size, int r) {
    struct mem_plan_shape s;
    CHECK_OK(model_plan_shape_shard(full, size, r, &s));
    struct mem_scratch_layout lay;
    mem_plan_scratch_layout(&s, TP_TOKENS, TP_SEQS, TP_MAX_BLOCKS, &lay);
    size_t kv = (size_t)2 * s.n_layers * TP_BLOCKS * TP_BS * s.n_kv_heads * s.head_dim * 2;
    return (size_t)s.weights_bytes + lay.bytes + kv + (size_t)TP_SEQS * s.vocab_size * 4 +
           (size_t)8 * MEM_ARENA_ALIGN;
}

static int tp_open(struct tp_fx *f, const struct model_config *cfg, const char *dir, int size) {
    memset(f, 0, sizeof *f);
    struct model_config local;
    int rc = model_config_shard(cfg, size, 0, &local);
    if (rc) return rc; // nothing made yet
    f->size = size;
    tp_settings(&f->set);
    enum model_load_format fmt = dir ? MODEL_LOAD_SAFETENSORS : MODEL_LOAD_DUMMY;
    struct model_tp_rank ranks[TP_MAX];
    for (int r = 0; r < size; r++) {
        f->plan[r].num_kv_blocks = TP_BLOCKS;
        f->plan[r].max_blocks_per_seq = TP_MAX_BLOCKS;
        size_t bytes = size == 1 ? tp_arena_bytes(cfg, 1, 0) : tp_arena_bytes(cfg, size, r);
        CHECK_OK(mem_arena_init(&f->arena[r], MEM_HOST, 0, bytes, 0));
        CHECK_OK(kern_cpu_ctx_init(&f->ctx[r], 1));
        ranks[r] = (struct model_tp_rank){&kern_cpu_ops, f->ctx[r], &f->arena[r], &f->plan[r]};
    }
    if (size == 1) {
        CHECK_OK(model_weights_load(&f->single.w, cfg, dir, fmt, 7, &kern_cpu_ops, f->ctx[0],
                                    &f->arena[0]));
        CHECK_OK(model_init(&f->single, cfg, &kern_cpu_ops, f->ctx[0], &f->arena[0], &f->plan[0],
                            &f->set));
        f->m = &f->single;
        return 0;
    }
    struct kern_comm *comms[TP_MAX];
    CHECK_OK(kern_cpu_comm_init_all(comms, size));
    rc = model_group_load(&f->g, cfg, dir, fmt, 7, ranks, comms, size, &f->set);
    if (rc == 0) f->m = model_group_model(f->g);
    return rc;
}

static void tp_close(struct tp_fx *f) {
    if (f->size == 1) {
        model_free(&f->single);
        model_weights_free(&f->single.w);
    }
    model_group_free(f->g);
    for (int r = 0; r < f->size; r++) {
        kern_cpu_ctx_free(f->ctx[r]);
        mem_arena_free(&f->arena[r]);
    }
}

// ---- running sequences

// Two sequences: a prefill step of both prompts, then greedy decode steps; the logits of every
// step go to out[step][seq][vocab] and the greedy ids to ids[seq][step].
#define TP_STEPS 8
static void tp_run(struct model *m, const int32_t *p0, int n0, const int32_t *p1, int n1,
                   float *out, int32_t ids[2][TP_STEPS]) {
    const int V = m->cfg.vocab_size;
    int32_t toks[TP_TOKENS], pos[TP_TOKENS], slots[TP_TOKENS], qs[3], lens[2];
    int32_t tables[2 * TP_MAX_BLOCKS];
    for (int b = 0; b < TP_MAX_BLOCKS; b++) {
        tables[b] = 2 * b + 1; // interleaved, so the two sequences share no block
        tables[TP_MAX_BLOCKS + b] = 2 * b + 2;
    }
    int len[2] = {n0, n1};
    const int32_t *prompt[2] = {p0, p1};
    for (int step = 0; step < TP_STEPS; step++) {
        int n = 0;
        qs[0] = 0;
        for (int s = 0; s < 2; s++) {
            int first = step == 0 ? 0 : len[s] - 1, last = len[s];
            for (int p = first; p < last; p++, n++) {
                toks[n] = step == 0 ? prompt[s][p] : ids[s][step - 1];
                pos[n] = p;
                slots[n] = tables[s * TP_MAX_BLOCKS + p / TP_BS] * TP_BS + p % TP_BS;
            }
            qs[s + 1] = n;
            lens[s] = len[s];
        }
        struct model_batch b = {.n_tokens = n, .n_seqs = 2, .token_ids = toks, .positions = pos,
                                .slot_mapping = slots, .query_start = qs, .seq_lens = lens,
                                .block_tables = tables};
        float *lg = out + (size_t)step * 2 * V;
        CHECK_OK(model_forward(m, &b, lg));
        for (int s = 0; s < 2; s++) {
            ids[s][step] = test_argmax(lg + (size_t)s * V, V);
            len[s]++;
        }
    }
}

// TP=size against TP=1 on the same weights: every step's logits within tolerance (relative to
// the logits' spread), and the greedy ids equal.
static void tp_compare(const struct model_config *cfg, const char *dir, int size) {
    const int32_t p0[] = {3, 17, 250, 9, 101}, p1[] = {400, 2, 77, 77, 5, 311, 60};
    const int V = cfg->vocab_size;
    float *ref = malloc(sizeof(float) * TP_STEPS * 2 * V), *got = malloc(sizeof(float) * TP_STEPS * 2 * V);
    int32_t ids_ref[2][TP_STEPS], ids_got[2][TP_STEPS];
    struct tp_fx f1, fp;
    CHECK_OK(tp_open(&f1, cfg, dir, 1));
    tp_run(f1.m, p0, 5, p1, 7, ref, ids_ref);
    tp_close(&f1);
    CHECK_OK(tp_open(&fp, cfg, dir, size));
    CHECK_EQ(fp.m->cfg.vocab_size, V);
    CHECK_EQ(model_group_rank(fp.g, 0)->cfg.n_heads, cfg->n_heads / size);
    tp_run(fp.m, p0, 5, p1, 7, got, ids_got);
    tp_close(&fp);

    double max_abs = 0, max_diff = 0;
    for (size_t i = 0; i < (size_t)TP_STEPS * 2 * V; i++) {
        double a = fabs(ref[i]), d = fabs(ref[i] - got[i]);
        if (a > max_abs) max_abs = a;
        if (d > max_diff) max_diff = d;
    }
    printf("  %s TP=%d vs TP=1: max |logit| %.4f, max |diff| %.5f, ids %d %d %d ... / %d %d %d ...\n",
           dir ? dir : "dummy", size, max_abs, max_diff, ids_ref[0][0], ids_ref[0][1],
           ids_ref[0][2], ids_got[0][0], ids_got[0][1], ids_got[0][2]);
    CHECK(max_abs > 0.1); // never compare zeros
    // Partial sums are rounded to bf16 before the all_reduce adds them: a few bf16 ulps of the
    // activations, which the logits see as about 2% of their range at most.
    CHECK_MSG(max_diff <= 0.02 * max_abs + 1e-3, "logits differ by %.5f (max |logit| %.4f)",
              max_diff, max_abs);
    for (int s = 0; s < 2; s++)
        for (int t = 0; t < TP_STEPS; t++)
            CHECK_MSG(ids_ref[s][t] == ids_got[s][t], "seq %d step %d: TP=1 greedy id %d, TP=%d %d",
                      s, t, ids_ref[s][t], size, ids_got[s][t]);
    free(ref);
    free(got);
}

TEST(tp2_matches_tp1_tiny_qwen2) {
    struct model_config cfg;
    CHECK_OK(model_config_load("tests/data/tiny-qwen2", &cfg));
    tp_compare(&cfg, "tests/data/tiny-qwen2", 2);
}

TEST(tp2_matches_tp1_tiny_qwen3_tied) {
    struct model_config cfg;
    CHECK_OK(model_config_load("tests/data/tiny-qwen3", &cfg));
    tp_compare(&cfg, "tests/data/tiny-qwen3", 2);
}

TEST(tp_dummy_shards_are_views_of_tp1_padded_vocab) {
    // An odd vocabulary: the last rank's shard has a zero padding row, whose logit is dropped.
    struct model_config cfg;
    CHECK_OK(model_config_load("tests/data/tiny-qwen2", &cfg));
    cfg.vocab_size = 509;
    tp_compare(&cfg, NULL, 2);
}

TEST(tp4_matches_tp1_dummy) {
    struct model_config cfg;
    CHECK_OK(model_config_load("tests/data/tiny-qwen3", &cfg));
    cfg.n_kv_heads = 4; // 4 heads, 4 kv heads: TP=4 gives each rank one of each
    cfg.vocab_size = 510; // 510 = 4 * 128 - 2: two padding rows on the last rank
    tp_compare(&cfg, NULL, 4);
}

TEST(tp2_matches_tp1_default_model_dummy) {
    if (!test_file_exists(".cache/keel-default/config.json")) {
        printf("  skipped: .cache/keel-default is missing (run scripts/setup)\n");
        return;
    }
    struct model_config cfg;
    CHECK_OK(model_config_load(".cache/keel-default", &cfg));
    tp_compare(&cfg, NULL, 2);
}

// ---- refusals

TEST(tp_refuses_shapes_that_do_not_divide) {
    struct model_config cfg, local;
    CHECK_OK(model_config_load("tests/data/tiny-qwen2", &cfg)); // 4 heads, 2 kv heads, 128 hidden
    CHECK_EQ(model_config_shard(&cfg, 4, 0, &local), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "num_key_value_heads (2)") != NULL, "message: %s", err_msg());
    CHECK_EQ(model_config_shard(&cfg, 3, 0, &local), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "num_attention_heads (4)") != NULL, "message: %s", err_msg());
    CHECK_EQ(model_config_shard(&cfg, 2, 2, &local), ERR_INVAL); // no rank 2 of 2
    CHECK_EQ(model_config_shard(&cfg, 0, 0, &local), ERR_INVAL);
    cfg.hidden_dim = 130;
    CHECK_EQ(model_config_shard(&cfg, 4, 0, &local), ERR_INVAL);
    cfg.n_kv_heads = 4;
    CHECK_EQ(model_config_shard(&cfg, 4, 0, &local), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "intermediate_size (130)") != NULL, "message: %s", err_msg());
    cfg.hidden_dim = 128;
    CHECK_OK(model_config_shard(&cfg, 4, 3, &local));
    CHECK_EQ(local.n_heads, 1);
    CHECK_EQ(local.hidden_dim, 32);
    CHECK_EQ(local.vocab_size, 128);

    // The loader refuses too, before carving anything.
    CHECK_OK(model_config_load("tests/data/tiny-qwen2", &cfg));
    struct mem_arena a;
    struct kern_ctx *ctx;
    struct model_weights w;
    CHECK_OK(mem_arena_init(&a, MEM_HOST, 0, 1 << 20, 0));
    CHECK_OK(kern_cpu_ctx_init(&ctx, 1));
    CHECK_EQ(model_weights_load_shard(&w, &cfg, 4, 1, "tests/data/tiny-qwen2",
                                      MODEL_LOAD_SAFETENSORS, 0, &kern_cpu_ops, ctx, &a),
             ERR_INVAL);
    CHECK_EQ(a.used, 0);
    kern_cpu_ctx_free(ctx);
    mem_arena_free(&a);
}

// A bad batch fails the step on every rank with the same message, and the group still runs.
TEST(tp_bad_batch_fails_the_step_not_the_group) {
    struct model_config cfg;
    CHECK_OK(model_config_load("tests/data/tiny-qwen2", &cfg));
    struct tp_fx f;
    CHECK_OK(tp_open(&f, &cfg, NULL, 2));
    int32_t tok = 600, pos = 0, slot = 4, qs[2] = {0, 1}, len = 1, table[TP_MAX_BLOCKS] = {1};
    struct model_batch b = {.n_tokens = 1, .n_seqs = 1, .token_ids = &tok, .positions = &pos,
                            .slot_mapping = &slot, .query_start = qs, .seq_lens = &len,
                            .block_tables = table};
    float *lg = malloc(sizeof(float) * TP_SEQS * cfg.vocab_size);
    CHECK_EQ(model_forward(f.m, &b, lg), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "outside the vocabulary (512)") != NULL, "message: %s", err_msg());
    tok = 511; // the last id, on rank 1
    CHECK_OK(model_forward(f.m, &b, lg));
    float mx = 0;
    for (int i = 0; i < cfg.vocab_size; i++) mx = fabsf(lg[i]) > mx ? fabsf(lg[i]) : mx;
    CHECK(mx > 0.1f);
    free(lg);
    tp_close(&f);
}

// ---- through the engine

static void tp_engine_greedy(struct model *m, int32_t *out, int *n_out) {
    struct srv_engine *e;
    struct srv_engine_config ecfg = {.max_num_seqs = TP_SEQS, .max_num_batched_tokens = TP_TOKENS,
                                     .max_model_len = TP_MAX_BLOCKS * TP_BS, .max_queue = 4};
    CHECK_OK(srv_engine_init(&e, m, NULL, &ecfg, NULL, NULL));
    struct srv_request *r = calloc(1, sizeof *r);
    r->id = 1;
    r->n = 1;
    r->n_prompt = 6;
    r->prompt_ids = malloc(6 * sizeof(int32_t));
    for (int i = 0; i < 6; i++) r->prompt_ids[i] = 11 + 40 * i;
    srv_sampling_defaults(&r->sp);
    r->sp.temperature = 0;
    r->sp.max_tokens = 10;
    r->sp.ignore_eos = true;
    struct srv_event *evs;
    int n_evs;
    CHECK_OK(srv_engine_run_sync(e, r, &evs, &n_evs));
    *n_out = 0;
    for (int i = 0; i < n_evs; i++) {
        CHECK_EQ(evs[i].error_code, 0);
        for (int k = 0; k < evs[i].n_tokens; k++) out[(*n_out)++] = evs[i].token_ids[k];
        srv_event_free(&evs[i]);
    }
    free(evs);
    srv_engine_free(e);
}

TEST(tp2_engine_greedy_equals_tp1) {
    struct model_config cfg;
    CHECK_OK(model_config_load("tests/data/tiny-qwen3", &cfg));
    int32_t a[16], b[16];
    int na, nb;
    struct tp_fx f;
    CHECK_OK(tp_open(&f, &cfg, "tests/data/tiny-qwen3", 1));
    tp_engine_greedy(f.m, a, &na);
    tp_close(&f);
    CHECK_OK(tp_open(&f, &cfg, "tests/data/tiny-qwen3", 2));
    tp_engine_greedy(f.m, b, &nb);
    tp_close(&f);
    CHECK_EQ(na, 10);
    CHECK_EQ(nb, na);
    printf("  engine greedy ids: %d %d %d %d ... (TP=1) / %d %d %d %d ... (TP=2)\n", a[0], a[1],
           a[2], a[3], b[0], b[1], b[2], b[3]);
    for (int i = 0; i < na; i++) CHECK_MSG(a[i] == b[i], "token %d: TP=1 %d, TP=2 %d", i, a[i], b[i]);
}

#ifdef KEEL_CUDA
// Without NCCL, tensor parallelism on CUDA is refused with what to set (keel still starts on
// one GPU: NCCL is loaded only here). The dlopen fails before any CUDA call, so this runs here.
TEST(tp_nccl_missing_says_what_to_set) {
    setenv("KEEL_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
    struct kern_comm *comms[2] = {0};
    int devs[2] = {0, 1};
    CHECK_EQ(kern_nccl_comm_init_all(comms, 2, devs), ERR_NOT_FOUND);
    CHECK_MSG(strstr(err_msg(), "KEEL_NCCL_LIBRARY") && strstr(err_msg(), "nvidia.nccl") &&
                  strstr(err_msg(), "/nonexistent/libnccl.so.2"),
              "message: %s", err_msg());
    CHECK(comms[0] == NULL && comms[1] == NULL);
    CHECK_EQ(kern_nccl_comm_init_all(comms, 0, devs), ERR_INVAL);
}
#endif

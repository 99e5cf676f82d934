// The forward pass on the CPU backend:
// - against Hugging Face transformers on the committed tiny checkpoints (tests/data/tiny-qwen2:
//   QKV bias, untied head; tests/data/tiny-qwen3: q/k norm, head_dim != dim / n_heads, tied):
//   teacher-forced logits within the tolerance recorded by tests/gen/gen_tiny_models.py and
//   greedy continuations exactly;
// - batches that mix sequences, chunked prompts and decode steps give the logits each sequence
//   gets when it runs alone;
// - bad batches are refused before anything runs.
#include "common/err.h"
#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <stdint.h>

// ---- a model on the CPU backend

struct fx {
    struct mem_arena arena;
    struct kern_ctx *ctx;
    struct model m;
    int block_size, n_blocks, max_blocks;
    bool own_weights;
};

// Settings and the parts of the plan model_init reads, chosen by hand so the tests do not depend
// on the plan's sizing policy.
static void fx_limits(struct mem_plan *plan, struct mem_plan_settings *set, int max_tokens,
                      int max_seqs, int block_size, int n_blocks, int max_blocks) {
    memset(plan, 0, sizeof *plan);
    memset(set, 0, sizeof *set);
    set->gpu_memory_utilization = 0.9;
    set->max_num_batched_tokens = max_tokens;
    set->max_num_seqs = max_seqs;
    set->block_size = block_size;
    set->max_model_len = max_blocks * block_size;
    set->num_kv_blocks = n_blocks;
    plan->num_kv_blocks = n_blocks;
    plan->max_blocks_per_seq = max_blocks;
}

static size_t fx_arena_bytes(const struct model_config *cfg, int max_tokens, int max_seqs,
                             int block_size, int n_blocks, int max_blocks) {
    struct mem_plan_shape s;
    struct mem_scratch_layout lay;
    model_plan_shape(cfg, &s);
    mem_plan_scratch_layout(&s, max_tokens, max_seqs, max_blocks, &lay);
    size_t kv = (size_t)2 * cfg->n_layers * n_blocks * block_size * cfg->n_kv_heads *
                cfg->head_dim * sizeof(bf16);
    return (size_t)model_weights_bytes(cfg) + lay.bytes + kv +
           (size_t)max_seqs * cfg->vocab_size * 4 + (8 + 16 * cfg->n_layers) * MEM_ARENA_ALIGN;
}

// ---- weights built here (the mixed-batch tests do not depend on the checkpoint loader)

static uint64_t fx_rng = 0x9e3779b97f4a7c15ull;

static bf16 *fx_tensor(struct mem_arena *a, size_t n, float center, float spread) {
    void *p;
    CHECK_OK(mem_arena_carve(a, "w", n * sizeof(bf16), &p));
    bf16 *t = p;
    for (size_t i = 0; i < n; i++) {
        fx_rng ^= fx_rng << 13, fx_rng ^= fx_rng >> 7, fx_rng ^= fx_rng << 17;
        float u = (float)((fx_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
        t[i] = f32_to_bf16(center + spread * u);
    }
    return t;
}

// Random weights of useful scale: matrices ~ U(-1, 1) * sqrt(3 / fan_in), norms around 1.
static void fx_random_weights(struct model_weights *w, const struct model_config *c,
                              struct mem_arena *a) {
    size_t dim = c->dim, hid = c->hidden_dim, hd = c->head_dim, V = c->vocab_size;
    size_t qkv = model_config_qkv_dim(c), q = model_config_q_dim(c);
    memset(w, 0, sizeof *w);
    w->layers = calloc(c->n_layers, sizeof *w->layers);
    w->embed = fx_tensor(a, V * dim, 0.0f, 1.0f);
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &w->layers[l];
        L->attn_norm = fx_tensor(a, dim, 1.0f, 0.3f);
        L->wqkv = fx_tensor(a, qkv * dim, 0.0f, sqrtf(3.0f / dim));
        if (c->qkv_bias) L->bqkv = fx_tensor(a, qkv, 0.0f, 0.5f);
        if (c->qk_norm) {
            L->q_norm = fx_tensor(a, hd, 1.0f, 0.3f);
            L->k_norm = fx_tensor(a, hd, 1.0f, 0.3f);
        }
        L->wo = fx_tensor(a, dim * q, 0.0f, sqrtf(3.0f / q));
        L->ffn_norm = fx_tensor(a, dim, 1.0f, 0.3f);
        L->w_gate_up = fx_tensor(a, 2 * hid * dim, 0.0f, sqrtf(3.0f / dim));
        L->w_down = fx_tensor(a, dim * hid, 0.0f, sqrtf(3.0f / hid));
    }
    w->final_norm = fx_tensor(a, dim, 1.0f, 0.3f);
    w->lm_head = fx_tensor(a, V * dim, 0.0f, 1.0f);
}

// dir == NULL: weights built here; else the checkpoint in dir through model_weights_load.
static void fx_open(struct fx *f, const struct model_config *cfg, const char *dir, int max_tokens,
                    int max_seqs) {
    memset(f, 0, sizeof *f);
    f->block_size = 4; // small blocks, so sequences span many, out of order
    f->max_blocks = 24;
    f->n_blocks = 96;
    struct mem_plan plan;
    struct mem_plan_settings set;
    fx_limits(&plan, &set, max_tokens, max_seqs, f->block_size, f->n_blocks, f->max_blocks);
    size_t bytes =
        fx_arena_bytes(cfg, max_tokens, max_seqs, f->block_size, f->n_blocks, f->max_blocks);
    CHECK_OK(mem_arena_init(&f->arena, MEM_HOST, 0, bytes, 1 << 20));
    CHECK_OK(kern_cpu_ctx_init(&f->ctx, 2));
    if (dir)
        CHECK_OK(model_weights_load(&f->m.w, cfg, dir, MODEL_LOAD_SAFETENSORS, 0, &kern_cpu_ops,
                                    f->ctx, &f->arena));
    else
        fx_random_weights(&f->m.w, cfg, &f->arena);
    f->own_weights = dir == NULL;
    CHECK_OK(model_init(&f->m, cfg, &kern_cpu_ops, f->ctx, &f->arena, &plan, &set));
}

static void fx_close(struct fx *f) {
    model_free(&f->m);
    if (f->own_weights)
        free(f->m.w.layers);
    else
        model_weights_free(&f->m.w);
    kern_cpu_ctx_free(f->ctx);
    mem_arena_free(&f->arena);
}

// ---- sequences and batches

// One sequence: its tokens so far and its blocks (block i of sequence `id` is a scattered id).
struct seq {
    int32_t toks[96];
    int n_done; // tokens whose KV is in the cache
    int32_t table[24];
};

static void seq_init(struct seq *s, const struct fx *f, int id, const int32_t *toks, int n) {
    memset(s, 0, sizeof *s);
    memcpy(s->toks, toks, sizeof(int32_t) * n);
    for (int i = 0; i < f->max_blocks; i++)
        s->table[i] = (i * 4 + id) % f->n_blocks;
}

struct step {
    int n_tokens, n_seqs;
    int32_t ids[64], pos[64], slots[64], qs[9], lens[8], tables[8 * 24];
};

// Adds the next n tokens of s to the step.
static void step_add(struct step *st, const struct fx *f, struct seq *s, int n) {
    if (st->n_seqs == 0) st->qs[0] = 0;
    for (int i = 0; i < n; i++) {
        int p = s->n_done + i, t = st->n_tokens + i;
        st->ids[t] = s->toks[p];
        st->pos[t] = p;
        st->slots[t] = s->table[p / f->block_size] * f->block_size + p % f->block_size;
    }
    st->n_tokens += n;
    s->n_done += n;
    st->lens[st->n_seqs] = s->n_done;
    memcpy(st->tables + st->n_seqs * f->max_blocks, s->table, sizeof(int32_t) * f->max_blocks);
    st->n_seqs++;
    st->qs[st->n_seqs] = st->n_tokens;
}

static int step_run(struct fx *f, const struct step *st, float *logits) {
    struct model_batch b = {.n_tokens = st->n_tokens,
                            .n_seqs = st->n_seqs,
                            .token_ids = st->ids,
                            .positions = st->pos,
                            .slot_mapping = st->slots,
                            .query_start = st->qs,
                            .seq_lens = st->lens,
                            .block_tables = st->tables};
    return model_forward(&f->m, &b, logits);
}

// ---- goldens from transformers

static int json_ints(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        CHECK(n < cap);
        out[n++] = (int32_t)v->valuedouble;
    }
    return n;
}

// Teacher-forced logits at the recorded positions (the prompt's prefix as one prefill chunk,
// then one decode step per position), then 16 greedy tokens, for every prompt in golden.json.
static void check_golden(const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/golden.json", dir);
    char *text = test_read_file(path);
    cJSON *g = cJSON_Parse(text);
    CHECK_MSG(g != NULL, "%s is not JSON", path);
    struct model_config cfg;
    CHECK_OK(model_config_load(dir, &cfg));
    struct fx f;
    fx_open(&f, &cfg, dir, 64, 4);
    int V = cfg.vocab_size;
    float *logits = malloc(sizeof(float) * V);
    const cJSON *pr;
    int pi = 0;
    cJSON_ArrayForEach(pr, cJSON_GetObjectItem(g, "prompts")) {
        int32_t ids[64], want_greedy[32], positions[8];
        int n = json_ints(cJSON_GetObjectItem(pr, "ids"), ids, 64);
        int n_pos = json_ints(cJSON_GetObjectItem(pr, "positions"), positions, 8);
        int n_greedy = json_ints(cJSON_GetObjectItem(pr, "greedy"), want_greedy, 32);
        const cJSON *ref_rows = cJSON_GetObjectItem(pr, "logits_fp32");
        const cJSON *bf16_rows = cJSON_GetObjectItem(pr, "logits_bf16");
        double hf_bf16_diff = cJSON_GetObjectItem(pr, "max_abs_diff_fp32_bf16")->valuedouble;
        CHECK(n > 0 && n_pos > 0 && n_greedy == 16 && cJSON_GetArraySize(ref_rows) == n_pos);
        struct seq s;
        seq_init(&s, &f, pi, ids, n);
        double worst = 0, worst_tol = 0, worst_bf16 = 0;
        for (int k = 0; k < n_pos; k++) {
            struct step st = {0};
            step_add(&st, &f, &s, k == 0 ? positions[0] + 1 : 1);
            CHECK_OK(step_run(&f, &st, logits));
            const cJSON *row = cJSON_GetArrayItem(ref_rows, k);
            CHECK_EQ(cJSON_GetArraySize(row), V);
            double max_ref = 0, max_diff = 0;
            int at = 0;
            const cJSON *row16 = cJSON_GetArrayItem(bf16_rows, k);
            for (int i = 0; i < V; i++) {
                double r = cJSON_GetArrayItem(row, i)->valuedouble;
                double r16 = cJSON_GetArrayItem(row16, i)->valuedouble;
                worst_bf16 = fmax(worst_bf16, fabs(r16 - logits[i]));
                if (fabs(r) > max_ref) max_ref = fabs(r);
                if (fabs(r - logits[i]) > max_diff) max_diff = fabs(r - logits[i]), at = i;
            }
            // The documented tolerance: keel keeps bf16 activations between ops, as HF's own
            // bf16 run does, so it may differ from the float32 run by about as much.
            double tol = 3e-2 * max_ref;
            CHECK_MSG(max_diff <= tol,
                      "%s prompt %d position %d: max |keel - hf| = %.4f at id %d (keel %.4f, hf "
                      "%.4f), tolerance %.4f",
                      dir, pi, positions[k], max_diff, at, logits[at],
                      cJSON_GetArrayItem(row, at)->valuedouble, tol);
            if (max_diff > worst) worst = max_diff, worst_tol = tol;
        }
        CHECK_EQ(s.n_done, n);
        int32_t got[16];
        for (int k = 0; k < 16; k++) {
            got[k] = test_argmax(logits, V);
            CHECK_MSG(got[k] == want_greedy[k],
                      "%s prompt %d greedy token %d: keel %d (logit %.4f), hf %d (logit %.4f)", dir,
                      pi, k, got[k], logits[got[k]], want_greedy[k], logits[want_greedy[k]]);
            s.toks[s.n_done] = got[k];
            struct step st = {0};
            step_add(&st, &f, &s, 1);
            CHECK_OK(step_run(&f, &st, logits));
        }
        fprintf(stderr,
                "  %s prompt %d (%d tokens): max |keel - hf_fp32| %.4f (tolerance %.4f), "
                "|keel - hf_bf16| %.4f, |hf_bf16 - hf_fp32| %.4f; 16 greedy ids equal\n",
                dir, pi, n, worst, worst_tol, worst_bf16, hf_bf16_diff);
        pi++;
    }
    CHECK_EQ(pi, 4);
    free(logits);
    fx_close(&f);
    cJSON_Delete(g);
    free(text);
}

TEST(forward_tiny_qwen2_matches_transformers) {
    check_golden("tests/data/tiny-qwen2");
}
TEST(forward_tiny_qwen3_matches_transformers) {
    check_golden("tests/data/tiny-qwen3");
}

// ---- mixed batches

// A Qwen3-shaped config with a QKV bias as well, so one model exercises every optional op.
static void mixed_config(struct model_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = MODEL_ARCH_QWEN3;
    c->dim = 64;
    c->hidden_dim = 96;
    c->n_layers = 2;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 32;
    c->vocab_size = 300;
    c->rms_norm_eps = 1e-6f;
    c->rope_theta = 10000.0f;
    c->max_position_embeddings = 256;
    c->qkv_bias = true;
    c->qk_norm = true;
    c->bos_id = -1;
}

// Logits of sequence s at its token `upto - 1`, run alone: the prefix as one prefill, in blocks
// of a sequence id no mixed run uses.
static void run_alone(struct fx *f, const int32_t *toks, int upto, float *logits) {
    struct seq s;
    seq_init(&s, f, 3, toks, upto);
    struct step st = {0};
    step_add(&st, f, &s, upto);
    CHECK_OK(step_run(f, &st, logits));
}

TEST(forward_mixed_batch_equals_each_sequence_alone) {
    struct model_config cfg;
    mixed_config(&cfg);
    struct fx f;
    fx_open(&f, &cfg, NULL, 64, 4);
    int V = cfg.vocab_size;
    // Three sequences; prompts of 21, 7 and 12 tokens, then decode tokens (teacher-forced).
    int32_t toks[3][40];
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 40; i++)
            toks[s][i] = (int32_t)((i * 37 + s * 101 + 11) % V);
    struct seq seqs[3];
    for (int s = 0; s < 3; s++)
        seq_init(&seqs[s], &f, s, toks[s], 40);
    // The schedule: how many tokens each sequence runs in each step (0: not in the step).
    static const int plan[][3] = {
        {8, 7, 0}, // A's first chunk, B's whole prompt
        {8, 1, 5}, // A's second chunk, B decodes, C's first chunk
        {5, 1, 7}, // A finishes its prompt, B decodes, C finishes
        {1, 1, 1}, // everyone decodes
        {1, 0, 3}, // B sits out; C runs a chunk of 3 teacher-forced tokens
        {1, 1, 1},
    };
    float *mixed = malloc(sizeof(float) * 3 * V), *alone = malloc(sizeof(float) * V);
    int compared = 0;
    double worst = 0;
    for (size_t k = 0; k < sizeof plan / sizeof plan[0]; k++) {
        struct step st = {0};
        int which[3], n_in = 0;
        for (int s = 0; s < 3; s++)
            if (plan[k][s]) {
                step_add(&st, &f, &seqs[s], plan[k][s]);
                which[n_in++] = s;
            }
        CHECK_OK(step_run(&f, &st, mixed));
        for (int i = 0; i < n_in; i++) {
            int s = which[i];
            run_alone(&f, toks[s], seqs[s].n_done, alone);
            double max_ref = 0, max_diff = 0;
            for (int v = 0; v < V; v++) {
                max_ref = fmax(max_ref, fabs(alone[v]));
                max_diff = fmax(max_diff, fabs(alone[v] - mixed[(size_t)i * V + v]));
            }
            CHECK(max_ref > 0.1); // real logits, not zeros
            CHECK_MSG(max_diff <= 1e-3 * max_ref,
                      "step %zu sequence %d (%d tokens): mixed vs alone max diff %.6g (max logit "
                      "%.4f)",
                      k, s, seqs[s].n_done, max_diff, max_ref);
            worst = fmax(worst, max_diff);
            compared++;
        }
    }
    fprintf(stderr, "  %d mixed-batch logit rows compared, max |mixed - alone| = %.3g\n", compared,
            worst);
    CHECK_EQ(compared, 16);
    free(mixed), free(alone);
    fx_close(&f);
}

TEST(forward_refuses_bad_batches) {
    struct model_config cfg;
    mixed_config(&cfg);
    struct fx f;
    fx_open(&f, &cfg, NULL, 16, 2);
    float *logits = malloc(sizeof(float) * 2 * cfg.vocab_size);
    int32_t toks[20];
    for (int i = 0; i < 20; i++)
        toks[i] = i + 1;
    struct seq s;
    seq_init(&s, &f, 0, toks, 20);
    struct step st = {0};
    step_add(&st, &f, &s, 5);
    CHECK_OK(step_run(&f, &st, logits));

    struct step bad = st;
    bad.ids[2] = cfg.vocab_size; // outside the vocabulary
    CHECK_EQ(step_run(&f, &bad, logits), ERR_INVAL);
    CHECK(strstr(err_msg(), "vocabulary") != NULL);
    bad = st;
    bad.slots[0] = f.n_blocks * f.block_size; // outside the cache
    CHECK_EQ(step_run(&f, &bad, logits), ERR_INVAL);
    bad = st;
    bad.pos[1] = 7; // does not follow from the span
    CHECK_EQ(step_run(&f, &bad, logits), ERR_INVAL);
    bad = st;
    bad.tables[0] = f.n_blocks; // a block the pool does not have
    CHECK_EQ(step_run(&f, &bad, logits), ERR_INVAL);
    bad = st;
    bad.lens[0] = 4; // fewer context tokens than new ones
    CHECK_EQ(step_run(&f, &bad, logits), ERR_INVAL);

    struct seq big;
    seq_init(&big, &f, 1, toks, 20);
    struct step many = {0};
    step_add(&many, &f, &big, 17); // more tokens than max_num_batched_tokens (16)
    CHECK_EQ(step_run(&f, &many, logits), ERR_INVAL);
    CHECK(strstr(err_msg(), "16") != NULL);
    free(logits);
    fx_close(&f);
}

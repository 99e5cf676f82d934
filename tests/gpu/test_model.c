// The whole model on CUDA:
// - the tiny goldens (tests/data/tiny-qwen{2,3}) with the CPU test's tolerances;
// - random checkpoints in the real shapes of Qwen2.5-0.5B and Qwen3-0.6B made on the GPU machine
//   by tests/gpu/gen_hf_shapes.py (directory in $KEEL_HF_SHAPES; skipped when unset) against
//   transformers: teacher-forced logits (prefix as one prefill chunk, then decode steps through
//   the paged cache) and 16 greedy ids;
// - a smoke run of Qwen2.5-7B and Qwen3-8B shapes with dummy weights, set up exactly as keel
//   starts: the memory plan from the device's numbers, one arena, the context with its workspace
//   and scratch carved from it; then a mixed prefill + decode workload, checking finite logits,
//   one device allocation, one cuBLAS handle and device memory within the budget.
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <cjson/cJSON.h>
#include <cuda_runtime_api.h>
#include <time.h>

// ---- a model on the CUDA backend, as keel starts one

static void gfx_open(struct gt_model *f, const char *dir, enum model_load_format fmt, double util,
                     int max_model_len, int max_seqs, int max_tokens, int block_size) {
    gt_model_open(f, dir, fmt,
                  (struct mem_plan_settings){.gpu_memory_utilization = util,
                                             .max_model_len = max_model_len,
                                             .max_num_seqs = max_seqs,
                                             .max_num_batched_tokens = max_tokens,
                                             .block_size = block_size},
                  1234);
}

// ---- one sequence and its steps

struct gseq {
    int32_t toks[4096];
    int n_done;
    int32_t table[512];
};

struct gstep {
    int n_tokens, n_seqs;
    int32_t *ids, *pos, *slots, *qs, *lens, *tables;
};

static void gstep_alloc(struct gstep *st, int max_tokens, int max_seqs, int mb) {
    memset(st, 0, sizeof *st);
    st->ids = calloc(max_tokens, 4), st->pos = calloc(max_tokens, 4),
    st->slots = calloc(max_tokens, 4);
    st->qs = calloc(max_seqs + 1, 4), st->lens = calloc(max_seqs, 4);
    st->tables = calloc((size_t)max_seqs * mb, 4);
}

static void gstep_free(struct gstep *st) {
    free(st->ids), free(st->pos), free(st->slots), free(st->qs), free(st->lens), free(st->tables);
}

// Sequence `id` owns blocks id, id + stride, id + 2 stride, ... (scattered through the pool).
static void gseq_init(struct gseq *s, const struct gt_model *f, int id, int stride) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < f->m.max_blocks_per_seq && i < 512; i++)
        s->table[i] = (id + i * stride) % f->m.n_kv_blocks;
}

static void gstep_add(struct gstep *st, const struct gt_model *f, struct gseq *s, int n) {
    int bs = f->m.block_size, mb = f->m.max_blocks_per_seq;
    if (st->n_seqs == 0) st->qs[0] = 0, st->n_tokens = 0;
    for (int i = 0; i < n; i++) {
        int p = s->n_done + i, t = st->n_tokens + i;
        st->ids[t] = s->toks[p];
        st->pos[t] = p;
        st->slots[t] = s->table[p / bs] * bs + p % bs;
    }
    st->n_tokens += n;
    s->n_done += n;
    st->lens[st->n_seqs] = s->n_done;
    memcpy(st->tables + (size_t)st->n_seqs * mb, s->table, sizeof(int32_t) * mb);
    st->n_seqs++;
    st->qs[st->n_seqs] = st->n_tokens;
}

static void gstep_run(struct gt_model *f, struct gstep *st, float *logits) {
    struct model_batch b = {.n_tokens = st->n_tokens,
                            .n_seqs = st->n_seqs,
                            .token_ids = st->ids,
                            .positions = st->pos,
                            .slot_mapping = st->slots,
                            .query_start = st->qs,
                            .seq_lens = st->lens,
                            .block_tables = st->tables};
    CHECK_OK(model_forward(&f->m, &b, logits));
    st->n_seqs = 0;
}

// ---- goldens from transformers (tests/data/tiny-qwen*/golden.json and gen_hf_shapes.py's)

static int json_ints(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        CHECK(n < cap);
        out[n++] = (int32_t)v->valuedouble;
    }
    return n;
}

// Teacher-forced logits at the recorded positions (the prefix up to the first one as one prefill
// chunk, then one decode step per position) within 3e-2 * max |logit| (the CPU test's tolerance),
// then the greedy ids exactly. Adds one table row per prompt.
static void check_golden(const char *dir, const char *label) {
    char path[512];
    snprintf(path, sizeof path, "%s/golden.json", dir);
    char *text = test_read_file(path);
    cJSON *g = cJSON_Parse(text);
    CHECK_MSG(g != NULL, "%s is not JSON", path);
    struct gt_model f;
    gfx_open(&f, dir, MODEL_LOAD_SAFETENSORS, 0.5, 256, 4, 256, 16);
    int V = f.cfg.vocab_size;
    float *logits = malloc(sizeof(float) * V);
    struct gstep st;
    gstep_alloc(&st, 256, 4, f.m.max_blocks_per_seq);
    const cJSON *pr;
    int pi = 0;
    cJSON_ArrayForEach(pr, cJSON_GetObjectItem(g, "prompts")) {
        int32_t ids[256], want[64], positions[8];
        int n = json_ints(cJSON_GetObjectItem(pr, "ids"), ids, 256);
        int n_pos = json_ints(cJSON_GetObjectItem(pr, "positions"), positions, 8);
        int n_greedy = json_ints(cJSON_GetObjectItem(pr, "greedy"), want, 64);
        const cJSON *rows = cJSON_GetObjectItem(pr, "logits_fp32");
        CHECK(n > 0 && n_pos > 0 && n_greedy > 0 && cJSON_GetArraySize(rows) == n_pos);
        struct gseq *s = malloc(sizeof *s);
        gseq_init(s, &f, pi, 3);
        memcpy(s->toks, ids, sizeof(int32_t) * n);
        double worst_ratio = 0, worst_diff = 0, worst_ref = 0;
        for (int k = 0; k < n_pos; k++) {
            gstep_add(&st, &f, s, k == 0 ? positions[0] + 1 : 1);
            gstep_run(&f, &st, logits);
            const cJSON *row = cJSON_GetArrayItem(rows, k);
            CHECK_EQ(cJSON_GetArraySize(row), V);
            double max_ref = 0, max_diff = 0;
            int at = 0, i = 0;
            const cJSON *v;
            cJSON_ArrayForEach(v, row) {
                double r = v->valuedouble;
                CHECK_MSG(isfinite(logits[i]), "%s: logit %d is %f", label, i, logits[i]);
                if (fabs(r) > max_ref) max_ref = fabs(r);
                if (fabs(r - logits[i]) > max_diff) max_diff = fabs(r - logits[i]), at = i;
                i++;
            }
            double ratio = max_diff / (max_ref > 0 ? max_ref : 1);
            if (ratio > worst_ratio)
                worst_ratio = ratio, worst_diff = max_diff, worst_ref = max_ref;
            CHECK_MSG(ratio <= 3e-2,
                      "%s prompt %d position %d: max |keel - hf| %.4f at id %d of max "
                      "|logit| %.3f",
                      label, pi, positions[k], max_diff, at, max_ref);
        }
        CHECK_EQ(s->n_done, n);
        // Greedy ids: exact wherever the float32 reference's top-1/top-2 margin is at least
        // twice this prompt's measured logit error (worst_diff, itself within the tolerance
        // above); below that the two ids are a near-tie that bf16 rounding order may flip (an
        // H100 run of 2026-11-22 flipped one at a margin under 1.4 with the logits within 2%),
        // so such flips are printed and at most a quarter of the ids may be one.
        const cJSON *jm = cJSON_GetObjectItem(pr, "margins");
        size_t mismatches = 0, near_ties = 0;
        int first_bad = -1;
        for (int k = 0; k < n_greedy; k++) {
            int got = test_argmax(logits, V);
            if (got != want[k]) {
                const cJSON *mk = cJSON_GetArrayItem(jm, k);
                double margin = cJSON_IsNumber(mk) ? mk->valuedouble : INFINITY;
                bool tie = margin < 2.0 * worst_diff;
                printf("  %s prompt %d greedy id %d: keel %d, hf %d (hf margin %.3f, keel prefers "
                       "its id by %.3f): %s\n",
                       label, pi, k, got, want[k], margin, logits[got] - logits[want[k]],
                       tie ? "a near-tie" : "a real mismatch");
                if (tie) {
                    near_ties++;
                } else {
                    if (first_bad < 0) first_bad = k;
                    mismatches++;
                }
            }
            s->toks[s->n_done] = want[k]; // teacher-forced: a mismatch does not derail the rest
            gstep_add(&st, &f, s, 1);
            gstep_run(&f, &st, logits);
        }
        char shape[96];
        snprintf(shape, sizeof shape, "%s prompt %d (%d tok) logits", label, pi, n);
        struct gt_err e = {worst_diff, worst_ratio, 0};
        printf("  %s: worst max|diff| %.4f of max|logit| %.3f\n", shape, worst_diff, worst_ref);
        gt_row("model", shape, e, 3e-2);
        snprintf(shape, sizeof shape, "%s prompt %d greedy ids (%d)", label, pi, n_greedy);
        gt_row_exact("model", shape, mismatches);
        CHECK_MSG(near_ties * 4 <= (size_t)n_greedy, "%s prompt %d: %zu of %d greedy ids flipped "
                  "at near-ties", label, pi, near_ties, n_greedy);
        free(s);
        pi++;
    }
    CHECK(pi > 0);
    gstep_free(&st);
    free(logits);
    gt_model_close(&f);
    cJSON_Delete(g);
    free(text);
}

TEST(gpu_model_tiny_qwen2) {
    check_golden("tests/data/tiny-qwen2", "tiny-qwen2");
}
TEST(gpu_model_tiny_qwen3) {
    check_golden("tests/data/tiny-qwen3", "tiny-qwen3");
}

// The checkpoints come from $KEEL_HF_SHAPES, else /tmp/keel-hf-shapes, made there on first use by
// running tests/gpu/gen_hf_shapes.py (about a minute on an H100), so `make test-gpu` is one
// command. Skipped where transformers cannot run.
TEST_TIMEOUT(gpu_model_hf_shapes, 400) {
    const char *names[] = {"Qwen2.5-0.5B-Instruct", "Qwen3-0.6B"};
    const char *root = getenv("KEEL_HF_SHAPES");
    if (!root || !*root) root = "/tmp/keel-hf-shapes";
    char probe[512];
    snprintf(probe, sizeof probe, "%s/%s/golden.json", root, names[1]);
    if (!test_file_exists(probe)) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "python3 tests/gpu/gen_hf_shapes.py %s > %s.log 2>&1", root,
                 root);
        printf("  generating the checkpoints: %s\n", cmd);
        fflush(stdout);
        if (system(cmd) != 0 || !test_file_exists(probe))
            TEST_SKIP("gen_hf_shapes.py failed (see %s.log): no torch/transformers/GPU here?",
                      root);
    }
    for (int i = 0; i < 2; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        char path[600];
        snprintf(path, sizeof path, "%s/golden.json", dir);
        CHECK_MSG(test_file_exists(path), "%s is missing", path);
        check_golden(dir, names[i]);
    }
}

// ---- 7B / 8B smoke runs with dummy weights

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void smoke(const char *name) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/data/configs/%s", name);
    CHECK_EQ(kern_cuda_handle_count(), 0);
    struct gt_model f;
    double t0 = now_s();
    gfx_open(&f, dir, MODEL_LOAD_DUMMY, 0.90, 4096, 32, 2048, 16);
    double t_load = now_s() - t0;
    size_t free_loaded = 0, total0 = 0;
    CHECK_OK(mem_device_info(0, &total0, &free_loaded));
    CHECK_EQ(mem_device_alloc_count(), 1);
    int V = f.cfg.vocab_size, S = 32;
    float *logits = malloc(sizeof(float) * (size_t)S * V);
    struct gstep st;
    gstep_alloc(&st, 2048, S, f.m.max_blocks_per_seq);
    struct gseq *seqs = calloc(S, sizeof *seqs);
    uint64_t r = 7;
    for (int i = 0; i < S; i++) {
        gseq_init(&seqs[i], &f, i, S);
        for (int t = 0; t < 4096; t++)
            seqs[i].toks[t] = (int32_t)(gt_rand(&r) % (uint64_t)V);
    }
    // Prefill: 32 prompts of 256 tokens in 4 steps of 2048, then 32 decode steps of 32 sequences.
    double t1 = now_s();
    for (int b = 0; b < 4; b++) {
        for (int i = 0; i < 8; i++)
            gstep_add(&st, &f, &seqs[b * 8 + i], 256);
        gstep_run(&f, &st, logits);
    }
    double t_prefill = now_s() - t1;
    t1 = now_s();
    for (int k = 0; k < 32; k++) {
        for (int i = 0; i < S; i++)
            gstep_add(&st, &f, &seqs[i], 1);
        gstep_run(&f, &st, logits);
    }
    double t_decode = (now_s() - t1) / 32;
    size_t bad = 0;
    double lo = 1e30, hi = -1e30;
    for (size_t i = 0; i < (size_t)S * V; i++) {
        if (!isfinite(logits[i])) bad++;
        lo = fmin(lo, logits[i]), hi = fmax(hi, logits[i]);
    }
    size_t total = 0, free_b = 0;
    CHECK_OK(mem_device_info(0, &total, &free_b));
    // mem_device_info reports free memory less the allocation slack (memory/arena.h), so the
    // plan keeps room for it; what the device has in use is without that.
    size_t used = total - (free_b + MEM_DEVICE_ALLOC_SLACK_BYTES);
    printf("  %s: load %.1f s, prefill 4 x 2048 tokens %.3f s, decode step (32 seqs) %.2f ms; "
           "logits in [%.2f, %.2f]; used %zu MiB of budget %zu MiB; kv blocks %lld; handles %d, "
           "device allocations %d; loaded on first use after start-up %zd KiB\n",
           name, t_load, t_prefill, t_decode * 1e3, lo, hi, used >> 20, f.plan.budget_bytes >> 20,
           (long long)f.plan.num_kv_blocks, kern_cuda_handle_count(), mem_device_alloc_count(),
           ((ssize_t)free_loaded - (ssize_t)free_b) / 1024);
    char shape[96];
    snprintf(shape, sizeof shape, "%s dummy: non-finite logits", name);
    gt_row_exact("smoke", shape, bad);
    CHECK(hi > lo);
    snprintf(shape, sizeof shape, "%s dummy: MiB over util x total", name);
    gt_row_exact("smoke", shape,
                 used > f.plan.budget_bytes ? (used - f.plan.budget_bytes) >> 20 : 0);
    snprintf(shape, sizeof shape, "%s dummy: extra device allocations", name);
    gt_row_exact("smoke", shape, (size_t)(mem_device_alloc_count() - 1));
    snprintf(shape, sizeof shape, "%s dummy: extra cuBLAS handles", name);
    gt_row_exact("smoke", shape, (size_t)(kern_cuda_handle_count() - 1));
    free(seqs);
    gstep_free(&st);
    free(logits);
    gt_model_close(&f);
}

TEST_TIMEOUT(gpu_smoke_qwen25_7b, 240) {
    smoke("Qwen2.5-7B-Instruct");
}

TEST_TIMEOUT(gpu_smoke_qwen3_8b, 240) {
    smoke("Qwen3-8B");
}

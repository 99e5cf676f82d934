// Tensor parallelism on 2 GPUs (skipped on a machine with fewer, or without NCCL):
// - TP=2 against TP=1 on Qwen2.5-0.5B's real shapes (14 heads, 2 kv heads, vocab 151936):
//   dummy weights (shards are views of the same full tensors) and, when $KEEL_HF_SHAPES holds
//   gen_hf_shapes.py's checkpoint, the real safetensors path; a prefill of two sequences, then
//   decode steps: logits within rel L2 2e-2 every step, greedy ids equal (TP=1's ids fed to both);
// - set up as keel serve does: a context per GPU, NCCL, the per-GPU plans, one arena each.
// NCCL: $KEEL_NCCL_LIBRARY or libnccl.so.2 (scripts/tp_check.sh finds PyTorch's copy).
#include "common/err.h"
#include "kernels/comm.h"
#include "kernels/cuda/kern_cuda.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "models/tp.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <cuda_runtime_api.h>

#define TPG_SEQS 2
#define TPG_STEPS 6

struct tpg {
    int P;
    struct model_config cfg;
    struct kern_ctx *ctx[2];
    struct mem_arena arena[2];
    struct mem_plan plan[2];
    struct mem_plan_settings set;
    struct model single;
    struct model_group *g;
    struct model *m;
};

static void tpg_open(struct tpg *f, const char *dir, enum model_load_format fmt, int P) {
    memset(f, 0, sizeof *f);
    f->P = P;
    CHECK_OK(model_config_load(dir, &f->cfg));
    int devs[2] = {0, 1};
    struct kern_comm *comms[2] = {0};
    for (int r = 0; r < P; r++) CHECK_OK(kern_cuda_ctx_init(&f->ctx[r], r, NULL, 0, NULL, 0));
    if (P > 1) {
        setenv("NCCL_NVLS_ENABLE", "0", 0);
        setenv("NCCL_RUNTIME_CONNECT", "0", 0);
        int rc = kern_nccl_comm_init_all(comms, P, devs);
        if (rc == ERR_NOT_FOUND) TEST_SKIP("%s", err_msg());
        CHECK_OK(rc);
    }
    size_t total[2], free_b[2];
    for (int r = 0; r < P; r++) CHECK_OK(mem_device_info(r, &total[r], &free_b[r]));
    f->set = (struct mem_plan_settings){.gpu_memory_utilization = 0.3, .max_model_len = 2048,
                                        .max_num_seqs = 8, .max_num_batched_tokens = 512,
                                        .block_size = 16, .num_kv_blocks = 256,
                                        .tensor_parallel_size = P};
    struct mem_plan_shape shape;
    model_plan_shape(&f->cfg, &shape);
    CHECK_OK(mem_plan_compute_tp(&shape, &f->set, P, total, free_b, f->plan));
    struct model_tp_rank ranks[2];
    for (int r = 0; r < P; r++) {
        CHECK_OK(kern_cuda_bind_thread(f->ctx[r]));
        CHECK_OK(mem_arena_init(&f->arena[r], MEM_DEVICE, r, f->plan[r].arena_bytes, 64u << 20));
        void *ws = NULL, *scratch = NULL;
        CHECK_OK(mem_arena_carve(&f->arena[r], "workspace", f->plan[r].workspace_bytes, &ws));
        CHECK_OK(mem_arena_carve(&f->arena[r], "op_scratch", f->plan[r].sampling_bytes, &scratch));
        CHECK_OK(kern_cuda_ctx_set_regions(f->ctx[r], ws, f->plan[r].workspace_bytes, scratch,
                                           f->plan[r].sampling_bytes));
        ranks[r] = (struct model_tp_rank){&kern_cuda_ops, f->ctx[r], &f->arena[r], &f->plan[r]};
    }
    if (P == 1) {
        CHECK_OK(model_weights_load(&f->single.w, &f->cfg, dir, fmt, 99, &kern_cuda_ops, f->ctx[0],
                                    &f->arena[0]));
        CHECK_OK(model_init(&f->single, &f->cfg, &kern_cuda_ops, f->ctx[0], &f->arena[0],
                            &f->plan[0], &f->set));
        f->m = &f->single;
    } else {
        CHECK_OK(model_group_load(&f->g, &f->cfg, dir, fmt, 99, ranks, comms, P, &f->set));
        f->m = model_group_model(f->g);
    }
}

static void tpg_close(struct tpg *f) {
    if (f->P == 1) {
        model_free(&f->single);
        model_weights_free(&f->single.w);
    }
    model_group_free(f->g);
    for (int r = 0; r < f->P; r++) {
        kern_cuda_bind_thread(f->ctx[r]);
        kern_cuda_ctx_free(f->ctx[r]);
        mem_arena_free(&f->arena[r]);
    }
}

// Prefill of two prompts (37 and 20 tokens) in one step, then decode steps feeding `feed` (the
// TP=1 run's greedy ids; NULL: this is that run, record them in ids).
static void tpg_run(struct tpg *f, float *logits, int32_t ids[TPG_STEPS][TPG_SEQS],
                    const int32_t feed[TPG_STEPS][TPG_SEQS]) {
    const int V = f->cfg.vocab_size, n_p[2] = {37, 20}, bs = f->m->block_size,
              mb = f->m->max_blocks_per_seq;
    int32_t toks[64], pos[64], slots[64], qs[3], lens[2];
    int32_t *tables = calloc((size_t)2 * mb, sizeof(int32_t));
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < mb; b++) tables[s * mb + b] = (s + 2 * b + 3) % f->m->n_kv_blocks;
    uint64_t rng = 42;
    int len[2] = {0, 0};
    for (int step = 0; step < TPG_STEPS; step++) {
        int n = 0;
        qs[0] = 0;
        for (int s = 0; s < 2; s++) {
            int add = step == 0 ? n_p[s] : 1;
            for (int i = 0; i < add; i++, n++) {
                int p = len[s] + i;
                toks[n] = step == 0 ? (int32_t)(gt_rand(&rng) % 150000)
                                    : (feed ? feed[step - 1][s] : ids[step - 1][s]);
                pos[n] = p;
                slots[n] = tables[s * mb + p / bs] * bs + p % bs;
            }
            len[s] += add;
            lens[s] = len[s];
            qs[s + 1] = n;
        }
        struct model_batch b = {.n_tokens = n, .n_seqs = 2, .token_ids = toks, .positions = pos,
                                .slot_mapping = slots, .query_start = qs, .seq_lens = lens,
                                .block_tables = tables};
        float *lg = logits + (size_t)step * 2 * V;
        CHECK_OK(model_forward(f->m, &b, lg));
        for (int s = 0; s < 2; s++) ids[step][s] = test_argmax(lg + (size_t)s * V, V);
    }
    free(tables);
}

static void tpg_compare(const char *dir, enum model_load_format fmt, const char *label) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 2)
        TEST_SKIP("tensor parallel needs 2 GPUs (%d visible)", n_dev);
    struct tpg f;
    tpg_open(&f, dir, fmt, 1);
    const int V = f.cfg.vocab_size;
    float *ref = malloc(sizeof(float) * TPG_STEPS * 2 * V), *got = malloc(sizeof(float) * TPG_STEPS * 2 * V);
    int32_t ids1[TPG_STEPS][TPG_SEQS], ids2[TPG_STEPS][TPG_SEQS];
    tpg_run(&f, ref, ids1, NULL);
    tpg_close(&f);
    tpg_open(&f, dir, fmt, 2);
    tpg_run(&f, got, ids2, (const int32_t(*)[TPG_SEQS])ids1);
    tpg_close(&f);
    char shape[96];
    for (int step = 0; step < TPG_STEPS; step++) {
        snprintf(shape, sizeof shape, "%s step %d (%s)", label, step, step ? "decode" : "prefill");
        gt_row("tp2 vs tp1 logits", shape,
               gt_cmp_f32(got + (size_t)step * 2 * V, ref + (size_t)step * 2 * V, (size_t)2 * V),
               2e-2);
    }
    size_t bad = 0;
    for (int step = 0; step < TPG_STEPS; step++)
        for (int s = 0; s < 2; s++) bad += ids1[step][s] != ids2[step][s];
    snprintf(shape, sizeof shape, "%s, %d steps x 2 seqs", label, TPG_STEPS);
    gt_row_exact("tp2 vs tp1 greedy ids", shape, bad);
    free(ref);
    free(got);
}

TEST_TIMEOUT(gpu_tp2_matches_tp1_dummy_qwen25_05b, 240) {
    tpg_compare("tests/data/configs/Qwen2.5-0.5B-Instruct", MODEL_LOAD_DUMMY, "Qwen2.5-0.5B dummy");
}

TEST_TIMEOUT(gpu_tp2_matches_tp1_hf_shapes_qwen25_05b, 240) {
    const char *root = getenv("KEEL_HF_SHAPES");
    if (!root || !*root) TEST_SKIP("KEEL_HF_SHAPES is not set (gen_hf_shapes.py's output folder)");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/Qwen2.5-0.5B-Instruct", root);
    tpg_compare(dir, MODEL_LOAD_SAFETENSORS, "Qwen2.5-0.5B safetensors");
}

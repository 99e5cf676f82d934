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
#include <pthread.h>

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

// ---- the communicators on 2 GPUs: NCCL and the peer-to-peer all-reduce (KEEL_TP_CUSTOM_AR)

struct tpg_ar_job {
    struct kern_comm *c;
    struct kern_ctx *ctx;
    bf16 *d_x;  // [n] device
    size_t n;
    int iters;
    int rc;
    double ms; // per call, when timing
};

static void *tpg_ar_main(void *p) {
    struct tpg_ar_job *j = p;
    j->rc = kern_cuda_bind_thread(j->ctx);
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    cudaEventRecord(a, kern_cuda_stream(j->ctx));
    for (int i = 0; i < j->iters && !j->rc; i++)
        j->rc = kern_comm_all_reduce_bf16(j->c, j->ctx, j->d_x, j->n);
    cudaEventRecord(b, kern_cuda_stream(j->ctx));
    if (!j->rc && cudaEventSynchronize(b) != cudaSuccess) j->rc = ERR_CUDA;
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    j->ms = j->iters ? ms / j->iters : 0;
    cudaEventDestroy(a), cudaEventDestroy(b);
    return NULL;
}

// Runs `iters` all-reduces of d_x[r] on both ranks at once (one thread per rank, as NCCL wants).
static double tpg_ar_run(struct kern_comm **c, struct kern_ctx **ctx, bf16 **d_x, size_t n,
                         int iters) {
    struct tpg_ar_job j[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        j[r] = (struct tpg_ar_job){c[r], ctx[r], d_x[r], n, iters, 0, 0};
        CHECK(pthread_create(&th[r], NULL, tpg_ar_main, &j[r]) == 0);
    }
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    CHECK_OK(j[0].rc);
    CHECK_OK(j[1].rc);
    return j[0].ms > j[1].ms ? j[0].ms : j[1].ms;
}

cudaStream_t kern_cuda_stream(struct kern_ctx *c);

TEST_TIMEOUT(gpu_tp_all_reduce_nccl_and_p2p, 180) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 2)
        TEST_SKIP("tensor parallel needs 2 GPUs (%d visible)", n_dev);
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    int devs[2] = {0, 1};
    struct kern_ctx *ctx[2];
    struct kern_comm *nccl[2], *p2p[2];
    bf16 *d_x[2];
    void *region[2];
    const size_t max_n = 262144;
    for (int r = 0; r < 2; r++) {
        CHECK_OK(kern_cuda_ctx_init(&ctx[r], r, NULL, 0, NULL, 0));
        CHECK(cudaMalloc((void **)&d_x[r], max_n * 2 + 64) == cudaSuccess);
        CHECK(cudaMalloc(&region[r], kern_cuda_allreduce_region_bytes()) == cudaSuccess);
    }
    int rc = kern_nccl_comm_init_all(nccl, 2, devs);
    if (rc == ERR_NOT_FOUND) TEST_SKIP("%s", err_msg());
    CHECK_OK(rc);
    CHECK_OK(kern_nccl_comm_init_all(p2p, 2, devs));
    rc = kern_comm_p2p_init(p2p, 2, ctx, region);
    if (rc == ERR_UNSUPPORTED) TEST_SKIP("%s", err_msg());
    CHECK_OK(rc);

    // Exactness against the host sum, on sizes around the block and vector edges, several
    // calls in a row (the stage slots alternate, the flags count up).
    const size_t sizes[] = {1, 7, 4096, 4097, 5120, 65536 + 3, max_n};
    uint64_t rng = 7;
    bf16 *h[2], *got = malloc(max_n * 2), *want = malloc(max_n * 2);
    for (int r = 0; r < 2; r++) h[r] = malloc(max_n * 2);
    for (int which = 0; which < 2; which++) {
        struct kern_comm **c = which ? p2p : nccl;
        size_t bad = 0;
        double worst = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int rep = 0; rep < 3; rep++) {
                size_t n = sizes[si];
                for (int r = 0; r < 2; r++) {
                    for (size_t i = 0; i < n; i++) h[r][i] = f32_to_bf16(gt_uniform(&rng) * 4.0f);
                    CHECK(cudaSetDevice(r) == cudaSuccess);
                    CHECK(cudaMemcpy(d_x[r], h[r], n * 2, cudaMemcpyHostToDevice) == cudaSuccess);
                }
                for (size_t i = 0; i < n; i++)
                    want[i] = f32_to_bf16(bf16_to_f32(h[0][i]) + bf16_to_f32(h[1][i]));
                tpg_ar_run(c, ctx, d_x, n, 1);
                for (int r = 0; r < 2; r++) {
                    CHECK(cudaSetDevice(r) == cudaSuccess);
                    CHECK(cudaMemcpy(got, d_x[r], n * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
                    for (size_t i = 0; i < n; i++) {
                        double d = fabs(bf16_to_f32(got[i]) - bf16_to_f32(want[i]));
                        if (d > worst) worst = d;
                        bad += d > 0.02 * fabs(bf16_to_f32(want[i])) + 1e-2;
                    }
                }
            }
        printf("  %s all_reduce: max |err| %.4g over %zu sizes x 3 calls x 2 ranks\n",
               which ? "p2p" : "nccl", worst, sizeof sizes / sizeof *sizes);
        gt_row_exact(which ? "all_reduce p2p (custom)" : "all_reduce nccl", "1..262144 bf16, 2 GPUs",
                     bad);
    }

    // Latency of the message sizes of decode steps (dim 5120: 1, 8, 64 tokens).
    const size_t tsz[] = {5120, 8 * 5120, 64 * 5120};
    for (int t = 0; t < 3; t++) {
        tpg_ar_run(nccl, ctx, d_x, tsz[t], 20);
        tpg_ar_run(p2p, ctx, d_x, tsz[t], 20);
        double a = tpg_ar_run(nccl, ctx, d_x, tsz[t], 500), b = tpg_ar_run(p2p, ctx, d_x, tsz[t], 500);
        printf("  all_reduce %zu bf16 (%zu KiB): nccl %.2f us, p2p %.2f us per call\n", tsz[t],
               tsz[t] * 2 / 1024, a * 1e3, b * 1e3);
    }
    for (int r = 0; r < 2; r++) {
        kern_comm_free(nccl[r]);
        kern_comm_free(p2p[r]);
        free(h[r]);
        cudaSetDevice(r);
        cudaFree(d_x[r]);
        cudaFree(region[r]);
        kern_cuda_ctx_free(ctx[r]);
    }
    free(got), free(want);
}

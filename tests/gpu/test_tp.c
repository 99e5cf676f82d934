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
#include "models/graph.h"
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

// ---- TP=2 graphs and device sampling

// The same steps as tpg_run (the ids of `feed` fed to every step after the prefill), sampled on
// rank 0's device (greedy, with logprobs): the sampled ids to dev_ids, the gathered logits
// (model_logits_to_host, the engine's fallback) to logits; with host_logits, each step runs
// again through the host assembly (model_forward: the same K/V rewritten) into host_logits.
static void tpg_run_sampled(struct tpg *f, float *logits, int32_t dev_ids[TPG_STEPS][TPG_SEQS],
                            float dev_lp[TPG_STEPS][TPG_SEQS],
                            const int32_t feed[TPG_STEPS][TPG_SEQS], float *host_logits) {
    const int V = f->cfg.vocab_size, n_p[2] = {37, 20}, bs = f->m->block_size,
              mb = f->m->max_blocks_per_seq;
    int32_t toks[64], pos[64], slots[64], qs[3], lens[2];
    int32_t *tables = calloc((size_t)2 * mb, sizeof(int32_t));
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < mb; b++) tables[s * mb + b] = (s + 2 * b + 3) % f->m->n_kv_blocks;
    struct kern_sample_params params[2];
    memset(params, 0, sizeof params);
    for (int s = 0; s < 2; s++) {
        params[s].top_p = 1;
        params[s].n_valid = V;
        params[s].n_logprobs = 1;
        params[s].repetition_penalty = 1;
    }
    struct model_sample ms = {params, NULL, 0};
    struct kern_sample_out out[2];
    uint64_t rng = 42;
    int len[2] = {0, 0};
    for (int step = 0; step < TPG_STEPS; step++) {
        int n = 0;
        qs[0] = 0;
        for (int s = 0; s < 2; s++) {
            int add = step == 0 ? n_p[s] : 1;
            for (int i = 0; i < add; i++, n++) {
                int p = len[s] + i;
                toks[n] = step == 0 ? (int32_t)(gt_rand(&rng) % 150000) : feed[step - 1][s];
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
        CHECK_OK(model_forward_sample(f->m, &b, &ms, out));
        CHECK_OK(model_logits_to_host(f->m, 2, logits + (size_t)step * 2 * V));
        if (host_logits) CHECK_OK(model_forward(f->m, &b, host_logits + (size_t)step * 2 * V));
        for (int s = 0; s < 2; s++) {
            CHECK_OK(out[s].status);
            dev_ids[step][s] = out[s].token;
            dev_lp[step][s] = out[s].logprob;
        }
    }
    free(tables);
}

// The graph statistics of rank r (zeros without a table).
static struct model_graphs_stats tpg_graph_stats(struct tpg *f, int r) {
    struct model_graphs_stats st;
    memset(&st, 0, sizeof st);
    struct model *m = model_group_rank(f->g, r);
    if (m && m->graphs) model_graphs_get_stats(m->graphs, &st);
    return st;
}

// Three TP=2 runs of the same steps on Qwen2.5-0.5B shapes (dummy weights):
//   A: eager, host assembly and host argmax (the first TP version's path);
//   B: eager, device sampling, each step also run through the host assembly in the same
//      instance: the gathered logits equal it bit for bit, the sampled ids are their argmax,
//      the logprobs their log-softmax;
//   C: graphs (warm-up at load, replays on both ranks) with device sampling: logits within the
//      CUDA tests' graph-vs-eager tolerance of A, ids the argmax of its own gathered logits.
// B's and C's ids against A's (another instance: the GEMM tuner may pick other kernels) count
// only flips that are not near-ties in A's logits.
TEST_TIMEOUT(gpu_tp2_graphs_and_device_sampling_equal_eager, 300) {
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 2)
        TEST_SKIP("tensor parallel needs 2 GPUs (%d visible)", n_dev);
    const char *dir = "tests/data/configs/Qwen2.5-0.5B-Instruct";
    struct tpg f;
    setenv("KEEL_TP_GRAPHS", "0", 1);
    setenv("KEEL_TP_DEVICE_SAMPLE", "0", 1);
    tpg_open(&f, dir, MODEL_LOAD_DUMMY, 2);
    CHECK(f.m->ops == NULL);
    const int V = f.cfg.vocab_size;
    size_t nl = (size_t)TPG_STEPS * 2 * V;
    float *la = malloc(nl * sizeof(float)), *lb = malloc(nl * sizeof(float)),
          *lbh = malloc(nl * sizeof(float)), *lc = malloc(nl * sizeof(float));
    int32_t ida[TPG_STEPS][TPG_SEQS], idb[TPG_STEPS][TPG_SEQS], idc[TPG_STEPS][TPG_SEQS];
    float lpb[TPG_STEPS][TPG_SEQS], lpc[TPG_STEPS][TPG_SEQS];
    tpg_run(&f, la, ida, NULL);
    tpg_close(&f);

    unsetenv("KEEL_TP_DEVICE_SAMPLE");
    tpg_open(&f, dir, MODEL_LOAD_DUMMY, 2);
    CHECK(f.m->ops != NULL);
    tpg_run_sampled(&f, lb, idb, lpb, (const int32_t(*)[TPG_SEQS])ida, lbh);
    tpg_close(&f);

    unsetenv("KEEL_TP_GRAPHS");
    tpg_open(&f, dir, MODEL_LOAD_DUMMY, 2);
    struct model_graphs_stats g0 = tpg_graph_stats(&f, 0), g1 = tpg_graph_stats(&f, 1);
    printf("  warm-up: rank 0 captured %d graphs, rank 1 %d\n", g0.captured, g1.captured);
    tpg_run_sampled(&f, lc, idc, lpc, (const int32_t(*)[TPG_SEQS])ida, NULL);
    struct model_graphs_stats h0 = tpg_graph_stats(&f, 0), h1 = tpg_graph_stats(&f, 1);
    tpg_close(&f);
    int r0 = h0.replays - g0.replays, r1 = h1.replays - g1.replays;
    printf("  graph replays over %d decode steps: rank 0 %d, rank 1 %d\n", TPG_STEPS - 1, r0, r1);
    gt_row_exact("tp2 graphs", "warm-up captured on both ranks, equal counts",
                 (size_t)(g0.captured <= 0) + (size_t)(g0.captured != g1.captured));
    gt_row_exact("tp2 graphs", "decode steps replayed, equally on both ranks",
                 (size_t)(r0 < TPG_STEPS - 2) + (size_t)(r0 != r1));

    size_t diff_b = 0, id_b = 0, lp_b = 0, id_c = 0, flip_b = 0, flip_c = 0;
    double worst_lp = 0;
    for (size_t i = 0; i < nl; i++) diff_b += memcmp(&lb[i], &lbh[i], sizeof(float)) != 0;
    for (int step = 0; step < TPG_STEPS; step++)
        for (int s = 0; s < 2; s++) {
            size_t row = ((size_t)step * 2 + s) * V;
            const float *rb = lb + row, *rc = lc + row, *ra = la + row;
            int a = ida[step][s], b = idb[step][s], c = idc[step][s];
            id_b += b != test_argmax(rb, V);
            id_c += c != test_argmax(rc, V);
            flip_b += b != a && ra[b] < ra[a] - 0.05f;
            flip_c += c != a && ra[c] < ra[a] - 0.05f;
            double mx = -1e30, sum = 0;
            for (int j = 0; j < V; j++) mx = rb[j] > mx ? rb[j] : mx;
            for (int j = 0; j < V; j++) sum += exp((double)rb[j] - mx);
            double d = fabs((double)rb[b] - mx - log(sum) - (double)lpb[step][s]);
            worst_lp = d > worst_lp ? d : worst_lp;
            lp_b += d > 1e-3;
        }
    printf("  device-sampled logprobs vs host log-softmax of the gathered rows: max |diff| %.2e\n",
           worst_lp);
    gt_row_exact("tp2 device gather", "eager: gathered logits == host-assembled", diff_b);
    gt_row_exact("tp2 device sample", "eager: ids == argmax of gathered logits", id_b);
    gt_row_exact("tp2 device sample", "eager: logprob vs log-softmax > 1e-3", lp_b);
    gt_row_exact("tp2 device sample", "graphs: ids == argmax of gathered logits", id_c);
    char shape[96];
    for (int step = 1; step < TPG_STEPS; step++) {
        snprintf(shape, sizeof shape, "Qwen2.5-0.5B dummy decode step %d", step);
        gt_row("tp2 graphs vs eager logits", shape,
               gt_cmp_f32(lc + (size_t)step * 2 * V, la + (size_t)step * 2 * V, (size_t)2 * V),
               3e-2);
    }
    gt_row_exact("tp2 ids vs eager host path", "device eager: flips beyond a 0.05 near-tie", flip_b);
    gt_row_exact("tp2 ids vs eager host path", "graphs: flips beyond a 0.05 near-tie", flip_c);
    free(la), free(lb), free(lbh), free(lc);
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
    const size_t max_n = 256 * 5120; // a 14B decode step of 256 sequences
    const size_t data_bytes = kern_cuda_allreduce_data_bytes(max_n, 2);
    CHECK(kern_cuda_allreduce_max_elems(data_bytes, 2) >= max_n);
    void *ctrl[2];
    for (int r = 0; r < 2; r++) {
        CHECK_OK(kern_cuda_ctx_init(&ctx[r], r, NULL, 0, NULL, 0));
        CHECK(cudaMalloc((void **)&d_x[r], (max_n + 64) * 2) == cudaSuccess);
        CHECK(cudaMalloc(&region[r], data_bytes) == cudaSuccess);
        CHECK(cudaMalloc(&ctrl[r], kern_cuda_allreduce_ctrl_bytes()) == cudaSuccess);
    }
    int rc = kern_nccl_comm_init_all(nccl, 2, devs);
    if (rc == ERR_NOT_FOUND) TEST_SKIP("%s", err_msg());
    CHECK_OK(rc);
    CHECK_OK(kern_nccl_comm_init_all(p2p, 2, devs));
    rc = kern_comm_p2p_init(p2p, 2, ctx, ctrl, region, data_bytes);
    if (rc == ERR_UNSUPPORTED) TEST_SKIP("%s", err_msg());
    CHECK_OK(rc);

    // Exactness against the host sum, on sizes around the block and vector edges, several
    // calls in a row (the stage slots alternate, the flags count up).
    // (max_n + 1 is past the region: NCCL takes it on the p2p communicator too.)
    const size_t sizes[] = {1, 7, 4096, 4097, 5120, 65536 + 3, 64 * 4096 * 2 + 5, max_n, max_n + 1};
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
        gt_row_exact(which ? "all_reduce p2p (custom)" : "all_reduce nccl",
                     "1..1310721 bf16, 2 GPUs", bad);
    }

    // Inside CUDA graphs: one eager call, a graph of three calls replayed twice, one eager call.
    // Both ranks hold the same sum after the first call, so each later call doubles it exactly:
    // the end is 2^7 times the first sum, bit for bit, only if every call met its peer's.
    {
        const size_t n = 3 * 5120 + 8;
        for (int r = 0; r < 2; r++) {
            for (size_t i = 0; i < n; i++) h[r][i] = f32_to_bf16(gt_uniform(&rng) * 1.0f);
            CHECK(cudaSetDevice(r) == cudaSuccess);
            CHECK(cudaMemcpy(d_x[r], h[r], n * 2, cudaMemcpyHostToDevice) == cudaSuccess);
        }
        for (size_t i = 0; i < n; i++)
            want[i] = f32_to_bf16(bf16_to_f32(f32_to_bf16(bf16_to_f32(h[0][i]) + bf16_to_f32(h[1][i]))) * 128.0f);
        tpg_ar_run(p2p, ctx, d_x, n, 1);
        cudaGraphExec_t ex[2];
        for (int r = 0; r < 2; r++) {
            CHECK_OK(kern_cuda_bind_thread(ctx[r]));
            cudaStream_t st = kern_cuda_stream(ctx[r]);
            cudaGraph_t gr;
            CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
            for (int i = 0; i < 3; i++) CHECK_OK(kern_comm_all_reduce_bf16(p2p[r], ctx[r], d_x[r], n));
            CHECK(cudaStreamEndCapture(st, &gr) == cudaSuccess);
            CHECK(cudaGraphInstantiate(&ex[r], gr, 0) == cudaSuccess);
            cudaGraphDestroy(gr);
        }
        for (int rep = 0; rep < 2; rep++)
            for (int r = 0; r < 2; r++) {
                CHECK(cudaSetDevice(r) == cudaSuccess);
                CHECK(cudaGraphLaunch(ex[r], kern_cuda_stream(ctx[r])) == cudaSuccess);
            }
        tpg_ar_run(p2p, ctx, d_x, n, 1);
        size_t bad = 0;
        for (int r = 0; r < 2; r++) {
            CHECK(cudaSetDevice(r) == cudaSuccess);
            CHECK(cudaDeviceSynchronize() == cudaSuccess);
            CHECK(cudaMemcpy(got, d_x[r], n * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
            for (size_t i = 0; i < n; i++) bad += got[i] != want[i];
            cudaGraphExecDestroy(ex[r]);
        }
        gt_row_exact("all_reduce p2p in graphs", "eager + 2 x graph(3) + eager, 2 GPUs", bad);
    }

    // Latency of the message sizes of decode steps (dim 5120: 1, 8, 64 tokens).
    const size_t tsz[] = {5120, 8 * 5120, 64 * 5120, 256 * 5120};
    for (int t = 0; t < 4; t++) {
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
        cudaFree(ctrl[r]);
        kern_cuda_ctx_free(ctx[r]);
    }
    free(got), free(want);
}

// Decode graphs captured at start-up (models/graph.h), on the CUDA backend:
// - model_graphs_warmup captures every (batch bucket, context bucket) pair, within the plan's
//   reservation; the count, time and memory are printed;
// - for every pair, a decode step replayed from its graph, padded, gives exactly the logits of
//   the same padded step run eagerly, and the ids and (within a tolerance) the logits of the
//   unpadded eager step, which runs other cuBLAS kernels and another attention split;
// - after the warm-up nothing allocates device memory: the free memory after all the steps
//   equals the free memory after the warm-up, and keel's use stays within util x total;
// - KEEL_CUDA_GRAPHS=0 and KEEL_CUDA_GRAPH_MAX_SEQS switch graphs off and cap the buckets.
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/graph.h"
#include "models/model.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <time.h>

// ---- a model on the CUDA backend, as keel serve starts one (with the graphs' reservation)

static void grx_open(struct gt_model *f, const char *dir, enum model_load_format fmt, double util,
                     int max_model_len, int max_seqs, int max_tokens) {
    gt_model_open(f, dir, fmt,
                  (struct mem_plan_settings){.gpu_memory_utilization = util,
                                             .max_model_len = max_model_len,
                                             .max_num_seqs = max_seqs,
                                             .max_num_batched_tokens = max_tokens,
                                             .block_size = 16,
                                             .cuda_graphs = model_graphs_usable(&kern_cuda_ops)},
                  4321);
}

static double grx_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- sequences and steps

#define GR_MAX_SEQS 64
#define GR_MAX_CTX 4096

struct grseq {
    int len;        // tokens in the cache
    int32_t *table; // [max_blocks_per_seq]
};

struct grstep {
    int n_tokens, n_seqs;
    int32_t *ids, *pos, *slots, *qs, *lens, *tables;
};

static void grstep_alloc(struct grstep *st, int max_tokens, int max_seqs, int mb) {
    memset(st, 0, sizeof *st);
    st->ids = calloc(max_tokens, 4), st->pos = calloc(max_tokens, 4);
    st->slots = calloc(max_tokens, 4), st->qs = calloc(max_seqs + 1, 4);
    st->lens = calloc(max_seqs, 4), st->tables = calloc((size_t)max_seqs * mb, 4);
    CHECK(st->ids && st->pos && st->slots && st->qs && st->lens && st->tables);
}

static void grstep_free(struct grstep *st) {
    free(st->ids), free(st->pos), free(st->slots), free(st->qs), free(st->lens), free(st->tables);
}

// Adds n tokens of s at positions s->len.. (not committed: s->len moves only in grseq_fill).
static void grstep_add(struct grstep *st, const struct model *m, const struct grseq *s, int n,
                       uint64_t *r) {
    int bs = m->block_size, mb = m->max_blocks_per_seq;
    if (st->n_seqs == 0) st->qs[0] = 0, st->n_tokens = 0;
    for (int i = 0; i < n; i++) {
        int p = s->len + i, t = st->n_tokens + i;
        st->ids[t] = (int32_t)(gt_rand(r) % (uint64_t)m->cfg.vocab_size);
        st->pos[t] = p;
        st->slots[t] = s->table[p / bs] * bs + p % bs;
    }
    st->n_tokens += n;
    st->lens[st->n_seqs] = s->len + n;
    memcpy(st->tables + (size_t)st->n_seqs * mb, s->table, sizeof(int32_t) * mb);
    st->n_seqs++;
    st->qs[st->n_seqs] = st->n_tokens;
}

static struct model_batch grstep_view(const struct grstep *st) {
    return (struct model_batch){.n_tokens = st->n_tokens,
                                .n_seqs = st->n_seqs,
                                .token_ids = st->ids,
                                .positions = st->pos,
                                .slot_mapping = st->slots,
                                .query_start = st->qs,
                                .seq_lens = st->lens,
                                .block_tables = st->tables};
}

// Prefills s to len tokens in chunks of at most 1024 (random tokens), eagerly.
static void grseq_fill(struct model *m, struct grseq *s, int len, struct grstep *st, float *lg,
                       uint64_t *r) {
    while (s->len < len) {
        int n = len - s->len < 1024 ? len - s->len : 1024;
        st->n_seqs = 0;
        grstep_add(st, m, s, n, r);
        struct model_batch b = grstep_view(st);
        CHECK_OK(model_forward_padded(m, &b, 0, MODEL_FWD_EAGER, lg));
        s->len += n;
    }
}

// ---- replay of every bucket vs eager

// The decode step of S sequences whose longest context is in context bucket ci: the anchor of
// bucket ci (seqs[GR_MAX_SEQS + ci]) first, then distinct short sequences; tokens from seed.
static void decode_step(struct model *m, struct grstep *st, const struct grseq *seqs, int S, int ci,
                        uint64_t seed) {
    st->n_seqs = 0;
    grstep_add(st, m, &seqs[GR_MAX_SEQS + ci], 1, &seed);
    for (int s = 1; s < S; s++) // 7 is prime to GR_MAX_SEQS: distinct sequences
        grstep_add(st, m, &seqs[(s * 7 + ci) % GR_MAX_SEQS], 1, &seed);
}

// The step sizes checked for batch bucket bi: the bucket itself, then just above the bucket
// below it's half (padded by almost half).
static int step_size(const int *bb, int bi, int k) {
    int S = k == 0 ? bb[bi] : bb[bi] / 2 + 1;
    if (bi > 0 && S <= bb[bi - 1]) S = bb[bi - 1] + 1;
    return S;
}

TEST_TIMEOUT(gpu_graphs_every_bucket_matches_eager, 300) {
    unsetenv("KEEL_CUDA_GRAPHS");
    unsetenv("KEEL_CUDA_GRAPH_MAX_SEQS");
    struct gt_model f;
    grx_open(&f, "tests/data/configs/Qwen2.5-0.5B-Instruct", MODEL_LOAD_DUMMY, 0.5, GR_MAX_CTX,
             GR_MAX_SEQS, 2048);
    struct model *m = &f.m;
    CHECK(m->graphs != NULL);
    size_t total = 0, free_init = 0, free_warm = 0, free_end = 0;
    CHECK_OK(mem_device_info(0, &total, &free_init));

    double t0 = grx_now();
    int n_graphs = model_graphs_warmup(m);
    double t_warm = grx_now() - t0;
    CHECK(n_graphs > 0);
    CHECK_OK(mem_device_info(0, &total, &free_warm));
    struct model_graphs_stats gs;
    model_graphs_get_stats(m->graphs, &gs);
    int nb, nc;
    const int *bb = model_graphs_batch(m->graphs, &nb), *cb = model_graphs_ctx(m->graphs, &nc);
    printf("  warm-up: %d of %d graphs (batch %d..%d x context %d..%d) in %.3f s (capture %.3f "
           "s); measured %.2f MiB in all, %.1f KiB per graph; free memory fell %.2f MiB; plan "
           "reserves %.1f MiB%s\n",
           n_graphs, nb * nc, bb[0], bb[nb - 1], cb[0], cb[nc - 1], t_warm, gs.capture_s,
           gs.bytes / 1048576.0, gs.bytes / 1024.0 / n_graphs,
           ((double)free_init - (double)free_warm) / 1048576.0, gs.limit / 1048576.0,
           gs.full ? " (reservation spent: some buckets run eagerly)" : "");
    CHECK_EQ(nb, 7); // 1 .. 64
    CHECK_EQ(nc, 4); // 1024, 2048, 3072, 4096
    if (!gs.full) CHECK_EQ(n_graphs, nb * nc);
    gt_row_exact("graphs", "warm-up: MiB over the plan's reservation",
                 gs.bytes > gs.limit ? (gs.bytes - gs.limit) >> 20 : 0);
    gt_row_exact("graphs", "warm-up: graphs disabled by a failed capture", gs.disabled);

    // Sequences: one anchor per context bucket (its longest context falls in that bucket), and
    // short ones (50..950 tokens) to fill the batches.
    const int V = f.cfg.vocab_size, mb = m->max_blocks_per_seq;
    uint64_t r = 99;
    struct grstep st;
    grstep_alloc(&st, 2048, GR_MAX_SEQS, mb);
    float *lg = malloc(sizeof(float) * GR_MAX_SEQS * V);
    float *want = malloc(sizeof(float) * GR_MAX_SEQS * V);
    float *pad = malloc(sizeof(float) * GR_MAX_SEQS * V);
    float *got = malloc(sizeof(float) * GR_MAX_SEQS * V);
    CHECK(lg && want && pad && got);
    const int n_seqs = GR_MAX_SEQS + nc;
    struct grseq *seqs = calloc(n_seqs, sizeof *seqs);
    int32_t *tables = calloc((size_t)n_seqs * mb, sizeof(int32_t));
    CHECK((int64_t)n_seqs * mb <= m->n_kv_blocks);
    for (int i = 0; i < n_seqs; i++) {
        seqs[i].table = tables + (size_t)i * mb;
        for (int j = 0; j < mb; j++)
            seqs[i].table[j] = (int32_t)(i + (int64_t)j * n_seqs); // disjoint, scattered
    }
    for (int i = 0; i < GR_MAX_SEQS; i++)
        grseq_fill(m, &seqs[i], 50 + (i * 131) % 900, &st, lg, &r);
    for (int c = 0; c < nc; c++) // anchors: 1000, 2000, 3000, 4000 tokens, before their step
        grseq_fill(m, &seqs[GR_MAX_SEQS + c], cb[c] - (c == nc - 1 ? 96 : 24), &st, lg, &r);
    CHECK_OK(m->ops->sync(m->ctx));

    int replays0 = gs.replays, steps = 0;
    for (int bi = 0; bi < nb; bi++) {
        size_t exact_diff = 0, id_diff = 0, auto_diff = 0, rows = 0;
        struct gt_err worst = {0};
        int n_s = bb[bi] == 1 ? 1 : 2;
        for (int k = 0; k < n_s; k++) {
            int S = step_size(bb, bi, k);
            for (int ci = 0; ci < nc; ci++) {
                decode_step(m, &st, seqs, S, ci, 1000 + bi * 100 + k * 10 + ci);
                struct model_batch b = grstep_view(&st);
                // The same token at the same slot each time: the three runs store the same K/V.
                CHECK_OK(model_forward_padded(m, &b, 0, MODEL_FWD_EAGER, want));
                CHECK_OK(model_forward_padded(m, &b, bb[bi], MODEL_FWD_EAGER, pad));
                CHECK_OK(model_forward_padded(m, &b, 0, MODEL_FWD_GRAPH, got));
                CHECK_OK(model_forward(m, &b, lg)); // the engine's path: the graph
                steps++;
                for (size_t i = 0; i < (size_t)S * V; i++) {
                    exact_diff += memcmp(&got[i], &pad[i], sizeof(float)) != 0;
                    auto_diff += memcmp(&lg[i], &got[i], sizeof(float)) != 0;
                }
                for (int s = 0; s < S; s++)
                    id_diff +=
                        test_argmax(got + (size_t)s * V, V) != test_argmax(want + (size_t)s * V, V);
                struct gt_err e = gt_cmp_f32(got, want, (size_t)S * V);
                if (e.rel_l2 >= worst.rel_l2 || e.n_nan) worst = e;
                rows += S;
            }
        }
        // Unpadded, cuBLAS runs other kernels (m = S, not the bucket) and the attention splits
        // by the exact context: the same numbers up to rounding, the CUDA tests' tolerance.
        char shape[96];
        snprintf(shape, sizeof shape, "bucket %d rows, worst of %d contexts", bb[bi], nc);
        gt_row("graph vs eager unpadded", shape, worst, 3e-2);
        snprintf(shape, sizeof shape, "bucket %d rows, %d contexts: logits", bb[bi], nc);
        gt_row_exact("graph vs eager padded", shape, exact_diff);
        snprintf(shape, sizeof shape, "bucket %d rows: model_forward vs graph", bb[bi]);
        gt_row_exact("graph vs eager padded", shape, auto_diff);
        // Greedy ids of dummy weights can flip at a near-tie under rounding (the top two of
        // ~150k logits are close): printed, and bounded to a quarter of the rows.
        printf("  bucket %d: greedy ids differ from the unpadded eager step in %zu of %zu rows\n",
               bb[bi], id_diff, rows);
        CHECK_MSG(id_diff * 4 <= rows, "bucket %d: %zu of %zu greedy ids differ", bb[bi], id_diff,
                  rows);
    }
    model_graphs_get_stats(m->graphs, &gs);
    printf("  %d decode steps checked; %d replays\n", steps, gs.replays - replays0);
    CHECK_EQ(gs.replays - replays0, 2 * steps); // GRAPH mode and model_forward, every step
    CHECK_EQ(gs.captured, n_graphs);            // nothing captured after the warm-up

    // Replays allocate no device memory. (The eager steps above may have loaded cuBLAS kernels
    // for the unpadded sizes on first use, CUDA's lazy loading: printed, not a graph's doing.)
    size_t free_mid = 0;
    CHECK_OK(m->ops->sync(m->ctx));
    CHECK_OK(mem_device_info(0, &total, &free_mid));
    for (int bi = 0; bi < nb; bi++)
        for (int k = 0; k < 2; k++)
            for (int ci = 0; ci < nc; ci++) {
                decode_step(m, &st, seqs, step_size(bb, bi, k), ci, 7 + bi + k + ci);
                struct model_batch b = grstep_view(&st);
                CHECK_OK(model_forward(m, &b, lg));
            }
    CHECK_OK(m->ops->sync(m->ctx));
    CHECK_OK(mem_device_info(0, &total, &free_end));
    printf("  free memory: %.2f MiB after the warm-up, %.2f MiB after the eager and graph "
           "steps, %.2f MiB after %d more graph steps; used %.1f MiB of the %.1f MiB budget\n",
           free_warm / 1048576.0, free_mid / 1048576.0, free_end / 1048576.0, nb * 2 * nc,
           (total - free_end) / 1048576.0, f.plan.budget_bytes / 1048576.0);
    gt_row_exact("graphs", "KiB allocated by graph steps",
                 free_end < free_mid ? (free_mid - free_end) >> 10 : 0);
    gt_row_exact("graphs", "MiB used over util x total",
                 total - free_end > f.plan.budget_bytes
                     ? (total - free_end - f.plan.budget_bytes) >> 20
                     : 0);
    CHECK_EQ(mem_device_alloc_count(), 1);

    free(seqs), free(tables), free(lg), free(want), free(pad), free(got);
    grstep_free(&st);
    gt_model_close(&f);
}

// ---- the switches

TEST_TIMEOUT(gpu_graphs_switches, 120) {
    // KEEL_CUDA_GRAPH_MAX_SEQS=4: buckets 1, 2, 4; a step of 5 sequences runs eagerly.
    unsetenv("KEEL_CUDA_GRAPHS");
    setenv("KEEL_CUDA_GRAPH_MAX_SEQS", "4", 1);
    struct gt_model f;
    grx_open(&f, "tests/data/tiny-qwen2", MODEL_LOAD_SAFETENSORS, 0.5, 256, 8, 256);
    CHECK(f.plan.graphs_bytes == MEM_PLAN_GRAPHS_BYTES);
    int n = model_graphs_warmup(&f.m);
    CHECK_EQ(n, 3); // 3 batch buckets x 1 context bucket (256)
    const int V = f.cfg.vocab_size, mb = f.m.max_blocks_per_seq;
    struct grstep st;
    grstep_alloc(&st, 256, 8, mb);
    float *lg = malloc(sizeof(float) * 8 * V), *lg2 = malloc(sizeof(float) * 8 * V);
    struct grseq seqs[5];
    int32_t tables[5 * 16];
    CHECK(mb <= 16);
    uint64_t r = 5;
    for (int i = 0; i < 5; i++) {
        seqs[i] = (struct grseq){.len = 0, .table = tables + i * mb};
        for (int j = 0; j < mb; j++)
            seqs[i].table[j] = i * mb + j;
        grseq_fill(&f.m, &seqs[i], 10 + 7 * i, &st, lg, &r);
    }
    struct model_graphs_stats gs;
    model_graphs_get_stats(f.m.graphs, &gs);
    int replays = gs.replays;
    st.n_seqs = 0;
    for (int i = 0; i < 5; i++)
        grstep_add(&st, &f.m, &seqs[i], 1, &r);
    struct model_batch b = grstep_view(&st);
    CHECK_OK(model_forward(&f.m, &b, lg));
    model_graphs_get_stats(f.m.graphs, &gs);
    CHECK_EQ(gs.replays, replays); // 5 > 4: eager
    CHECK_EQ(model_forward_padded(&f.m, &b, 0, MODEL_FWD_GRAPH, lg2), ERR_INVAL);
    b.n_seqs = b.n_tokens = 3; // the first three: bucket 4
    CHECK_OK(model_forward(&f.m, &b, lg2));
    model_graphs_get_stats(f.m.graphs, &gs);
    CHECK_EQ(gs.replays, replays + 1);
    struct gt_err e = gt_cmp_f32(lg2, lg, (size_t)3 * V); // the same rows as in the 5-step
    gt_row("graph switches", "tiny-qwen2: 3 of 5 rows via bucket 4", e, 2e-2);
    free(lg), free(lg2);
    grstep_free(&st);
    gt_model_close(&f);

    // KEEL_CUDA_GRAPHS=0: no table, no reservation, no warm-up; steps run eagerly.
    setenv("KEEL_CUDA_GRAPHS", "0", 1);
    unsetenv("KEEL_CUDA_GRAPH_MAX_SEQS");
    grx_open(&f, "tests/data/tiny-qwen2", MODEL_LOAD_SAFETENSORS, 0.5, 256, 8, 256);
    CHECK(f.m.graphs == NULL);
    CHECK_EQ(f.plan.graphs_bytes, 0);
    CHECK_EQ(model_graphs_warmup(&f.m), 0);
    gt_model_close(&f);
    gt_row_exact("graph switches", "KEEL_CUDA_GRAPHS=0 leaves graphs on", 0);
    unsetenv("KEEL_CUDA_GRAPHS");
}

// ---- timing mode: decode step time per batch bucket, eager vs graph

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Median wall time of `reps` steps of b (each ends in the logits copy, so it is complete).
static double time_steps(struct model *m, const struct model_batch *b, enum model_fwd_mode mode,
                         float *lg, int reps) {
    double t[32];
    CHECK(reps <= 32);
    for (int i = 0; i < 2; i++) // warm: first-use loading, caches
        CHECK_OK(model_forward_padded(m, b, 0, mode, lg));
    for (int i = 0; i < reps; i++) {
        double t0 = grx_now();
        CHECK_OK(model_forward_padded(m, b, 0, mode, lg));
        t[i] = grx_now() - t0;
    }
    qsort(t, reps, sizeof t[0], cmp_double);
    return t[reps / 2] * 1e3;
}

// Off unless KEEL_GRAPH_TIMING names a config folder, e.g.
//   KEEL_GRAPH_TIMING=tests/data/configs/Qwen2.5-7B-Instruct build/tests/gpu gpu_graphs_timing
// Dummy weights; keel serve's defaults (max_model_len 32768, 256 sequences, 8192 tokens) unless
// KEEL_GRAPH_TIMING_LEN sets max_model_len; every sequence at context KEEL_GRAPH_TIMING_CTX
// (default 1000); batch buckets up to 256 unless KEEL_CUDA_GRAPH_MAX_SEQS says otherwise.
// Prints start-up (weights, graph warm-up) and, per bucket B: the eager and graph step of B
// sequences, and of the smallest step padded to B (eager unpadded vs graph padded: what the
// padding costs), and the logits copy's share of a step.
TEST_TIMEOUT(gpu_graphs_timing, 550) {
    const char *dir = getenv("KEEL_GRAPH_TIMING");
    if (!dir || !*dir)
        TEST_SKIP("set KEEL_GRAPH_TIMING=<config folder> to time decode steps per bucket");
    const char *v = getenv("KEEL_GRAPH_TIMING_CTX");
    int ctx_len = v && atoi(v) > 0 ? atoi(v) : 1000;
    v = getenv("KEEL_GRAPH_TIMING_LEN");
    int max_len = v && atoi(v) > 0 ? atoi(v) : 32768;
    if (!getenv("KEEL_CUDA_GRAPH_MAX_SEQS")) setenv("KEEL_CUDA_GRAPH_MAX_SEQS", "256", 1);
    unsetenv("KEEL_CUDA_GRAPHS");
    CHECK(ctx_len < max_len);

    struct gt_model f;
    double t0 = grx_now();
    grx_open(&f, dir, MODEL_LOAD_DUMMY, 0.9, max_len, 256, 8192); // keel serve's defaults
    double t_load = grx_now() - t0;
    struct model *m = &f.m;
    size_t total = 0, free0 = 0, free1 = 0;
    CHECK_OK(mem_device_info(0, &total, &free0));
    t0 = grx_now();
    int n = model_graphs_warmup(m);
    double t_warm = grx_now() - t0;
    CHECK_OK(mem_device_info(0, &total, &free1));
    struct model_graphs_stats gs;
    model_graphs_get_stats(m->graphs, &gs);
    int nb, nc;
    const int *bb = model_graphs_batch(m->graphs, &nb), *cb = model_graphs_ctx(m->graphs, &nc);
    printf("  %s, dummy weights, max_model_len %d: model ready in %.2f s, then %d graphs (%d "
           "batch x %d context buckets) in %.2f s, %.1f MiB measured (free memory -%.1f MiB; "
           "plan reserves %.0f MiB): start-up %.2f s\n",
           dir, max_len, t_load, n, nb, nc, t_warm, gs.bytes / 1048576.0,
           ((double)free0 - (double)free1) / 1048576.0, gs.limit / 1048576.0, t_load + t_warm);

    // The KV cache holds zeros (the timing does not depend on its values; NaN would not either,
    // but zeros keep the logits finite to print).
    CHECK(cudaMemset(m->kv_cache, 0, f.plan.kv_bytes) == cudaSuccess);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    const int V = f.cfg.vocab_size, mb = m->max_blocks_per_seq, S_max = bb[nb - 1];
    int per = (ctx_len + 1 + m->block_size - 1) / m->block_size;
    CHECK((int64_t)S_max * per <= m->n_kv_blocks);
    struct grstep st;
    grstep_alloc(&st, S_max, S_max, mb);
    struct grseq *seqs = calloc(S_max, sizeof *seqs);
    int32_t *tables = calloc((size_t)S_max * mb, sizeof(int32_t));
    float *lg = malloc(sizeof(float) * S_max * V), *host = malloc(sizeof(float) * S_max * V);
    for (int i = 0; i < S_max; i++) {
        seqs[i] = (struct grseq){.len = ctx_len, .table = tables + (size_t)i * mb};
        for (int j = 0; j < per; j++)
            seqs[i].table[j] = i * per + j;
    }
    printf("  context %d (bucket %d); median of 10 steps, ms, each with its logits copy\n", ctx_len,
           cb[model_graphs_bucket_of(cb, nc, ctx_len + 1)]);
    printf("  %6s | %9s %9s %7s | %6s %12s %12s | %9s\n", "bucket", "eager", "graph", "saved",
           "S pad", "eager(S)", "graph(->B)", "copy out");
    for (int bi = 0; bi < nb; bi++) {
        int B = bb[bi], S2 = step_size(bb, bi, 1);
        uint64_t r = 3;
        st.n_seqs = 0;
        for (int s = 0; s < B; s++)
            grstep_add(&st, m, &seqs[s], 1, &r);
        struct model_batch b = grstep_view(&st);
        double e1 = time_steps(m, &b, MODEL_FWD_EAGER, lg, 10);
        double g1 = time_steps(m, &b, MODEL_FWD_GRAPH, lg, 10);
        b.n_seqs = b.n_tokens = S2; // the first S2 of the same sequences
        double e2 = time_steps(m, &b, MODEL_FWD_EAGER, lg, 10);
        double g2 = time_steps(m, &b, MODEL_FWD_GRAPH, lg, 10);
        double tc[5];
        for (int i = 0; i < 5; i++) {
            double c0 = grx_now();
            CHECK(cudaMemcpy(host, m->logits, sizeof(float) * B * V, cudaMemcpyDeviceToHost) ==
                  cudaSuccess);
            tc[i] = (grx_now() - c0) * 1e3;
        }
        qsort(tc, 5, sizeof tc[0], cmp_double);
        printf("  %6d | %9.3f %9.3f %6.1f%% | %6d %12.3f %12.3f | %9.3f\n", B, e1, g1,
               100.0 * (e1 - g1) / e1, S2, e2, g2, tc[2]);
    }
    free(seqs), free(tables), free(lg), free(host);
    grstep_free(&st);
    gt_model_close(&f);
}

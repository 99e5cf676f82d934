// Programmatic dependent launch on the decode path (kernels/cuda/device.h, kc_launch):
// - a capture of three PDL launches records programmatic edges between them (and none with PDL
//   off), and the graph's output equals the eager launches', bit for bit, either way;
// - on real model shapes (Qwen2.5-7B and Qwen3-0.6B with dummy weights, tiny-qwen3 with its
//   weights), PDL changes no number: a 300-token prefill, and decode steps of 1 and 8 sequences,
//   eager and replayed from graphs (captured once with PDL off, once with it on), give the same
//   float32 logits bit for bit as with PDL off. A kernel that read its predecessor's output
//   before its griddepcontrol.wait would show here as differing (or NaN) logits;
// - kv_write then the decode attention: this step's K/V slots hold NaN until kv_write stores
//   them, and 30 rounds, eager and from a graph, equal PDL off bit for bit.
// The graph replays are also timed (printed, not checked): the decode timing that matters is the
// integrator's keel generate run with and without KEEL_PDL=0.
#include "common/err.h"
#include "kernels/cuda/attention_dec.h"
#include "kernels/cuda/kern_cuda.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/graph.h"
#include "models/model.h"
#include "tests/gpu/gpu_ref.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double pdl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t pdl_ndiff(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

// Logits that are all finite and not all zero: a comparison of two such arrays means something.
static void pdl_check_real(const char *what, const float *x, size_t n) {
    size_t bad = 0, nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        bad += !isfinite(x[i]);
        nonzero += x[i] != 0.0f;
    }
    CHECK_MSG(bad == 0 && nonzero > n / 2, "%s: %zu non-finite and %zu non-zero of %zu logits",
              what, bad, nonzero, n);
}

// ---- the edges a capture records

// Programmatic edges (type cudaGraphDependencyTypeProgrammatic) among the graph's edges.
static int pdl_prog_edges(cudaGraph_t g, int *n_edges) {
    size_t n = 0;
    CHECK(cudaGraphGetEdges(g, NULL, NULL, NULL, &n) == cudaSuccess);
    cudaGraphNode_t *from = calloc(n + 1, sizeof *from), *to = calloc(n + 1, sizeof *to);
    cudaGraphEdgeData *ed = calloc(n + 1, sizeof *ed);
    CHECK(from && to && ed);
    CHECK(cudaGraphGetEdges(g, from, to, ed, &n) == cudaSuccess);
    int prog = 0;
    for (size_t i = 0; i < n; i++)
        prog += ed[i].type == cudaGraphDependencyTypeProgrammatic;
    free(from), free(to), free(ed);
    *n_edges = (int)n;
    return prog;
}

TEST(gpu_pdl_capture_edges) {
    if (!kern_cuda_set_pdl(1)) TEST_SKIP("PDL needs compute capability 9.0 or higher");
    enum { T = 4, DIM = 1024, VOCAB = 64, N = 2048 };
    cudaStream_t s = kern_cuda_stream(gt_ctx());
    uint64_t r = 17;
    bf16 *h_table = gt_rand_bf16((size_t)VOCAB * DIM, 1.0f, &r);
    bf16 *h_nw = gt_rand_bf16(DIM, 1.0f, &r), *h_w = gt_rand_bf16((size_t)N * DIM, 0.05f, &r);
    int32_t h_ids[T] = {3, 60, 17, 3};
    bf16 *table = gt_up(h_table, sizeof(bf16) * VOCAB * DIM), *nw = gt_up(h_nw, sizeof(bf16) * DIM);
    bf16 *w = gt_up(h_w, sizeof(bf16) * N * DIM);
    int32_t *ids = gt_up(h_ids, sizeof h_ids);
    bf16 *x = gt_dev(sizeof(bf16) * T * DIM), *xn = gt_dev(sizeof(bf16) * T * DIM);
    bf16 *y = gt_dev(sizeof(bf16) * T * N);
    bf16 *out[2][2]; // [pdl][eager, graph]
    int prog[2], edges[2];
    for (int pdl = 0; pdl < 2; pdl++) {
        CHECK_EQ(kern_cuda_set_pdl(pdl), pdl);
        for (int graph = 0; graph < 2; graph++) {
            gt_poison(x, sizeof(bf16) * T * DIM), gt_poison(xn, sizeof(bf16) * T * DIM);
            gt_poison(y, sizeof(bf16) * T * N);
            cudaGraph_t g = NULL;
            if (graph) CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == 0);
            CHECK_OK(kern_cuda_embed(x, ids, table, T, DIM, s));
            CHECK_OK(kern_cuda_add_rmsnorm(xn, x, NULL, nw, T, DIM, 1e-6f, s));
            CHECK_OK(kern_cuda_gemv(y, 0, xn, w, NULL, T, N, DIM, 0, s));
            if (graph) {
                CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess);
                prog[pdl] = pdl_prog_edges(g, &edges[pdl]);
                cudaGraphExec_t ge = NULL;
                CHECK(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
                CHECK(cudaGraphLaunch(ge, s) == cudaSuccess);
                CHECK(cudaStreamSynchronize(s) == cudaSuccess);
                cudaGraphExecDestroy(ge);
                cudaGraphDestroy(g);
            }
            gt_sync();
            out[pdl][graph] = malloc(sizeof(bf16) * T * N);
            gt_down(out[pdl][graph], y, sizeof(bf16) * T * N);
        }
    }
    printf("  capture of embed -> add_rmsnorm -> gemv: %d edges, %d programmatic with PDL off; "
           "%d edges, %d programmatic with PDL on\n",
           edges[0], prog[0], edges[1], prog[1]);
    gt_row_exact("pdl", "capture, PDL on: programmatic edges != 2", (size_t)abs(2 - prog[1]));
    gt_row_exact("pdl", "capture, PDL off: programmatic edges", (size_t)prog[0]);
    struct gt_err e = gt_cmp_bf16(out[0][0], out[0][0], (size_t)T * N); // NaN check of the base
    CHECK_EQ(e.n_nan, 0);
    for (int pdl = 0; pdl < 2; pdl++)
        for (int graph = 0; graph < 2; graph++) {
            char shape[96];
            snprintf(shape, sizeof shape, "embed+norm+gemv %s, PDL %s vs off eager",
                     graph ? "graph" : "eager", pdl ? "on" : "off");
            gt_row_exact("pdl", shape,
                         memcmp(out[pdl][graph], out[0][0], sizeof(bf16) * T * N) != 0);
        }
    for (int i = 0; i < 4; i++)
        free(out[i / 2][i % 2]);
    free(h_table), free(h_nw), free(h_w);
    gt_free(table), gt_free(nw), gt_free(w), gt_free(ids), gt_free(x), gt_free(xn), gt_free(y);
    kern_cuda_set_pdl(-1);
}

// ---- kv_write then the decode attention under PDL

enum { KVW_HD = 128, KVW_BS = 16 }; // 7B-like heads, keel's default block size

struct pdl_kvw {
    cudaStream_t s;
    bf16 *out, *qkv, *k, *v, *k0, *v0;
    int32_t *slots;
    struct kern_attn_batch b;
    size_t cache_bytes;
    int nh, nkv, n_tok, n_sm;
};

// One round: the caches back to their start (this step's slots NaN) by D2D copies, which the
// kv_write fully waits for; kv_write stores this step's K/V; the attention (PDL) may start while
// it does. An attention that read a key of this step before its wait would read NaN.
static void pdl_kvw_round(const struct pdl_kvw *e) {
    CHECK(cudaMemcpyAsync(e->k, e->k0, e->cache_bytes, cudaMemcpyDeviceToDevice, e->s) == 0);
    CHECK(cudaMemcpyAsync(e->v, e->v0, e->cache_bytes, cudaMemcpyDeviceToDevice, e->s) == 0);
    CHECK_OK(
        kern_cuda_kv_write(e->k, e->v, e->qkv, e->slots, e->n_tok, e->nh, e->nkv, KVW_HD, e->s));
    CHECK_OK(kern_cuda__attention_dec(e->out, e->qkv, e->k, e->v, &e->b, e->nh, e->nkv, KVW_HD,
                                      KVW_BS, 1.0f / sqrtf((float)KVW_HD), gt_scratch(),
                                      gt_scratch_bytes(), e->n_sm, e->s));
}

// `rounds` rounds, eager or replayed from one graph: how many differ from `base` (bit for bit).
static size_t pdl_kvw_rounds(const struct pdl_kvw *e, int graph, int rounds, const bf16 *base,
                             bf16 *got, size_t out_n) {
    size_t bad = 0;
    cudaGraphExec_t ge = NULL;
    if (graph) {
        cudaGraph_t g = NULL;
        CHECK(cudaStreamBeginCapture(e->s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
        pdl_kvw_round(e);
        CHECK(cudaStreamEndCapture(e->s, &g) == cudaSuccess);
        CHECK(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess);
        cudaGraphDestroy(g);
    }
    for (int r = 0; r < rounds; r++) {
        gt_poison(e->out, out_n * 2);
        if (graph)
            CHECK(cudaGraphLaunch(ge, e->s) == cudaSuccess);
        else
            pdl_kvw_round(e);
        gt_down(got, e->out, out_n * 2);
        bad += memcmp(got, base, out_n * 2) != 0;
    }
    if (ge) cudaGraphExecDestroy(ge);
    return bad;
}

// Sequences with qlen[i] new tokens and contexts of len[i], 7B-like heads (nh/nkv, head_dim 128,
// block size 16); `hint` the launch's context hint (a graph's context bucket: more key slices
// than the contexts need). PDL off is checked against the host reference; PDL on, eager and from
// a graph, 30 rounds each, must equal it bit for bit.
static void pdl_kvw_case(const char *name, int nh, int nkv, int n_seqs, const int *qlen,
                         const int *len, int hint, uint64_t seed) {
    enum { HD = KVW_HD, BS = KVW_BS, ROUNDS = 30 };
    struct gt_attn_layout lay;
    gt_attn_layout_make(&lay, n_seqs, qlen, len, BS, &seed);
    const int n_tok = lay.n_tokens;
    const size_t row = (size_t)(nh + 2 * nkv) * HD, cache = (size_t)lay.n_blocks * BS * nkv * HD;
    const size_t out_n = (size_t)n_tok * nh * HD;
    bf16 *qkv = gt_rand_bf16(n_tok * row, 2.0f, &seed);
    bf16 *kc = gt_rand_bf16(cache, 1.0f, &seed), *vc = gt_rand_bf16(cache, 1.0f, &seed);
    int32_t *slots = malloc(sizeof(int32_t) * n_tok);
    CHECK(slots);
    // This step's slots: NaN in the device's starting caches, the new K/V in the host's.
    bf16 *kc0 = gt_copy_bf16(kc, cache), *vc0 = gt_copy_bf16(vc, cache);
    for (int q = 0, t = 0; q < n_seqs; q++)
        for (int i = 0; i < qlen[q]; i++, t++) {
            int pos = len[q] - qlen[q] + i;
            slots[t] = lay.tables[q * lay.max_blocks + pos / BS] * BS + pos % BS;
            for (int h = 0; h < nkv; h++)
                for (int d = 0; d < HD; d++) {
                    size_t at = ((size_t)slots[t] * nkv + h) * HD + d;
                    kc[at] = qkv[t * row + (size_t)(nh + h) * HD + d];
                    vc[at] = qkv[t * row + (size_t)(nh + nkv + h) * HD + d];
                    kc0[at] = vc0[at] = 0xffff;
                }
        }
    bf16 *want = malloc(out_n * 2), *base = malloc(out_n * 2), *got = malloc(out_n * 2);
    CHECK(want && base && got);
    struct kern_attn_batch hb = {n_seqs,     n_tok,          lay.qstart, lay.lens,
                                 lay.tables, lay.max_blocks, lay.max_q,  lay.max_len};
    gpu_ref_ops.attention(NULL, want, qkv, kc, vc, &hb, nh, nkv, HD, BS, 1.0f / sqrtf((float)HD));

    struct pdl_kvw e = {.s = kern_cuda_stream(gt_ctx()), .nh = nh, .nkv = nkv, .n_tok = n_tok};
    e.cache_bytes = cache * 2;
    e.qkv = gt_up(qkv, n_tok * row * 2), e.k0 = gt_up(kc0, cache * 2);
    e.v0 = gt_up(vc0, cache * 2), e.k = gt_dev(cache * 2), e.v = gt_dev(cache * 2);
    e.out = gt_dev(out_n * 2), e.slots = gt_up(slots, sizeof(int32_t) * n_tok);
    e.b = (struct kern_attn_batch){n_seqs,
                                   n_tok,
                                   gt_up(lay.qstart, sizeof(int32_t) * (n_seqs + 1)),
                                   gt_up(lay.lens, sizeof(int32_t) * n_seqs),
                                   gt_up(lay.tables, sizeof(int32_t) * n_seqs * lay.max_blocks),
                                   lay.max_blocks,
                                   lay.max_q,
                                   hint > lay.max_len ? hint : lay.max_len};
    CHECK(cudaDeviceGetAttribute(&e.n_sm, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess);

    char shape[128];
    CHECK_EQ(kern_cuda_set_pdl(0), 0);
    gt_poison(e.out, out_n * 2);
    pdl_kvw_round(&e);
    gt_down(base, e.out, out_n * 2);
    snprintf(shape, sizeof shape, "%s, PDL off vs host", name);
    gt_row("attn after kv_write", shape, gt_cmp_bf16(base, want, out_n), 1e-2);
    CHECK_EQ(kern_cuda_set_pdl(1), 1);
    for (int graph = 0; graph < 2; graph++) {
        size_t bad = pdl_kvw_rounds(&e, graph, ROUNDS, base, got, out_n);
        snprintf(shape, sizeof shape, "%s, %s: rounds != PDL off", name, graph ? "graph" : "eager");
        gt_row_exact("attn after kv_write", shape, bad);
    }
    kern_cuda_set_pdl(-1);
    gt_free(e.qkv), gt_free(e.k0), gt_free(e.v0), gt_free(e.k), gt_free(e.v), gt_free(e.out);
    gt_free(e.slots), gt_free((void *)e.b.query_start), gt_free((void *)e.b.seq_lens);
    gt_free((void *)e.b.block_tables);
    free(qkv), free(kc), free(vc), free(kc0), free(vc0), free(slots), free(want), free(base);
    free(got);
    gt_attn_layout_free(&lay);
}

TEST(gpu_pdl_attention_after_kv_write) {
    if (!kern_cuda_set_pdl(1)) TEST_SKIP("PDL needs compute capability 9.0 or higher");
    kern_cuda_set_pdl(-1);
    // Single stream at a short context under a graph's 1024 hint (16 slices, most empty), one
    // at a longer context unsplit, a decode batch, and chunks whose tokens span sub-tile and
    // slice edges (several keys of this step in one tile).
    const int q1[] = {1}, l1[] = {300};
    pdl_kvw_case("7b 1/300 hint 1024", 28, 4, 1, q1, l1, 1024, 7);
    const int l2[] = {200};
    pdl_kvw_case("7b 1/200 unsplit", 28, 4, 1, q1, l2, 0, 8);
    const int q3[] = {1, 1, 1, 1, 1, 1}, l3[] = {1, 16, 17, 64, 65, 2000};
    pdl_kvw_case("8b 6 decodes", 32, 8, 6, q3, l3, 2048, 9);
    const int q4[] = {5, 1, 9}, l4[] = {5, 300, 1030};
    pdl_kvw_case("7b chunks 5/5 1/300 9/1030", 28, 4, 3, q4, l4, 0, 10);
}

// ---- a model on the CUDA backend, as keel serve starts one

static void pdx_open(struct gt_model *f, const char *dir, enum model_load_format fmt, int max_len) {
    gt_model_open(f, dir, fmt,
                  (struct mem_plan_settings){.gpu_memory_utilization = 0.5,
                                             .max_model_len = max_len,
                                             .max_num_seqs = 8,
                                             .max_num_batched_tokens = 512,
                                             .block_size = 16,
                                             .cuda_graphs = model_graphs_usable(&kern_cuda_ops)},
                  4321);
}

// Drops the model's graphs and captures every bucket again under the PDL setting now in force.
static void pdx_capture(struct model *m) {
    int nb, nc, bb[MODEL_GRAPHS_MAX_BUCKETS], cb[MODEL_GRAPHS_MAX_BUCKETS];
    const int *b0 = model_graphs_batch(m->graphs, &nb), *c0 = model_graphs_ctx(m->graphs, &nc);
    memcpy(bb, b0, sizeof(int) * nb), memcpy(cb, c0, sizeof(int) * nc);
    model_graphs_free(m->graphs);
    m->graphs = NULL;
    CHECK_OK(model_graphs_init(&m->graphs, bb, nb, cb, nc, MEM_PLAN_GRAPHS_BYTES));
    CHECK_EQ(model_graphs_warmup(m), nb * nc);
}

// ---- steps

#define PDL_SEQS 8

// The prefill under test: 300 tokens, fewer for a model with a shorter context.
static int pdl_prefill = 300;

struct pdl_step {
    int n_tokens, n_seqs;
    int32_t ids[512], pos[512], slots[512], qs[PDL_SEQS + 1], lens[PDL_SEQS];
    int32_t *tables; // [PDL_SEQS, max_blocks_per_seq]
};

// Sequence s owns blocks 16 + s, 16 + s + PDL_SEQS, ...: clear of the blocks the graph warm-up
// writes (0 .. 7, its rows' own blocks).
static int32_t pdl_block(int s, int j) {
    return 16 + s + j * PDL_SEQS;
}

// Adds n tokens of sequence s at positions start..; ids from r.
static void pdl_add(struct pdl_step *st, const struct model *m, int s, int start, int n,
                    uint64_t *r) {
    int bs = m->block_size, mb = m->max_blocks_per_seq;
    if (st->n_seqs == 0) st->qs[0] = 0, st->n_tokens = 0;
    for (int i = 0; i < n; i++) {
        int p = start + i, t = st->n_tokens + i;
        st->ids[t] = (int32_t)(gt_rand(r) % (uint64_t)m->cfg.vocab_size);
        st->pos[t] = p;
        st->slots[t] = pdl_block(s, p / bs) * bs + p % bs;
    }
    st->n_tokens += n;
    st->lens[st->n_seqs] = start + n;
    for (int j = 0; j < mb; j++)
        st->tables[(size_t)st->n_seqs * mb + j] = pdl_block(s, j);
    st->n_seqs++;
    st->qs[st->n_seqs] = st->n_tokens;
}

static struct model_batch pdl_view(const struct pdl_step *st) {
    return (struct model_batch){.n_tokens = st->n_tokens,
                                .n_seqs = st->n_seqs,
                                .token_ids = st->ids,
                                .positions = st->pos,
                                .slot_mapping = st->slots,
                                .query_start = st->qs,
                                .seq_lens = st->lens,
                                .block_tables = st->tables};
}

// The prompt lengths: sequence 0 is the prefill under test, the others shorter.
static int pdl_len(int s) {
    return s == 0 ? pdl_prefill : 20 + (pdl_prefill - 40) / PDL_SEQS * s;
}

// The decode step of the first S sequences (one token each, at position pdl_len(s)).
static void pdl_decode(struct pdl_step *st, const struct model *m, int S, uint64_t seed) {
    st->n_seqs = 0;
    for (int s = 0; s < S; s++)
        pdl_add(st, m, s, pdl_len(s), 1, &seed);
}

// Milliseconds per replay of the decode step's graph (logits copy included), over `reps`; every
// replay's logits are compared with want (S rows): a race shows as a replay that differs.
static double pdl_time_graph(struct model *m, const struct model_batch *b, float *lg,
                             const float *want, int reps, size_t *n_diff) {
    const size_t n = (size_t)b->n_seqs * (size_t)m->cfg.vocab_size;
    CHECK_OK(model_forward_padded(m, b, 0, MODEL_FWD_GRAPH, lg));
    double t = 0.0;
    for (int i = 0; i < reps; i++) {
        double t0 = pdl_now();
        CHECK_OK(model_forward_padded(m, b, 0, MODEL_FWD_GRAPH, lg));
        t += pdl_now() - t0;
        *n_diff += pdl_ndiff(lg, want, n);
    }
    return t * 1e3 / reps;
}

static void pdl_model_case(const char *name, const char *dir, enum model_load_format fmt,
                           int max_len, int prefill) {
    pdl_prefill = prefill;
    if (!kern_cuda_set_pdl(1)) TEST_SKIP("PDL needs compute capability 9.0 or higher");
    unsetenv("KEEL_CUDA_GRAPHS");
    unsetenv("KEEL_CUDA_GRAPH_MAX_SEQS");
    CHECK_EQ(kern_cuda_set_pdl(0), 0);
    struct gt_model f;
    pdx_open(&f, dir, fmt, max_len);
    struct model *m = &f.m;
    CHECK(m->graphs != NULL);
    CHECK(model_graphs_warmup(m) > 0);
    const int V = f.cfg.vocab_size, mb = m->max_blocks_per_seq;
    CHECK(pdl_block(PDL_SEQS - 1, mb - 1) < m->n_kv_blocks);
    struct pdl_step st = {0};
    st.tables = calloc((size_t)PDL_SEQS * mb, sizeof(int32_t));
    float *lg = malloc(sizeof(float) * PDL_SEQS * V), *base = malloc(sizeof(float) * PDL_SEQS * V);
    CHECK(st.tables && lg && base);
    char shape[128];

    // Prompts, PDL off; sequence 0's is the prefill under test, run again with PDL on (the same
    // tokens at the same slots: it stores the same K/V when it computes the same numbers).
    for (int s = PDL_SEQS - 1; s >= 0; s--) {
        uint64_t r = 1000 + s;
        st.n_seqs = 0;
        pdl_add(&st, m, s, 0, pdl_len(s), &r);
        struct model_batch b = pdl_view(&st);
        CHECK_OK(model_forward_padded(m, &b, 0, MODEL_FWD_EAGER, base));
    }
    pdl_check_real("prefill, PDL off", base, V);
    CHECK_EQ(kern_cuda_set_pdl(1), 1);
    {
        uint64_t r = 1000;
        st.n_seqs = 0;
        pdl_add(&st, m, 0, 0, pdl_prefill, &r);
        struct model_batch b = pdl_view(&st);
        CHECK_OK(model_forward_padded(m, &b, 0, MODEL_FWD_EAGER, lg));
    }
    snprintf(shape, sizeof shape, "%s prefill n=%d: logits on vs off", name, pdl_prefill);
    gt_row_exact("pdl", shape, pdl_ndiff(lg, base, V));

    // Decode steps of 1 and 8 sequences: eager (padded to the bucket, as a graph runs) and from
    // graphs, PDL off then on. Each run stores the same token's K/V at the same slot.
    const int sizes[2] = {1, PDL_SEQS};
    float *want[2], *got[2][2]; // want[size]: eager, PDL off; got[size][graph, eager PDL on]
    double ms[2][2];            // [size][pdl]: graph replay
    size_t replay_diff[2][2] = {{0, 0}, {0, 0}};
    for (int pdl = 0; pdl < 2; pdl++) {
        CHECK_EQ(kern_cuda_set_pdl(pdl), pdl);
        if (pdl) pdx_capture(m);
        for (int i = 0; i < 2; i++) {
            const int S = sizes[i];
            pdl_decode(&st, m, S, 77 + S);
            struct model_batch b = pdl_view(&st);
            float *eager =
                pdl ? malloc(sizeof(float) * S * V) : (want[i] = malloc(sizeof(float) * S * V));
            CHECK(eager);
            CHECK_OK(model_forward_padded(m, &b, S, MODEL_FWD_EAGER, eager));
            pdl_check_real("decode", eager, (size_t)S * V);
            float *graph = malloc(sizeof(float) * S * V);
            CHECK(graph);
            CHECK_OK(model_forward_padded(m, &b, 0, MODEL_FWD_GRAPH, graph));
            if (pdl) got[i][1] = eager;
            if (pdl)
                got[i][0] = graph;
            else {
                snprintf(shape, sizeof shape, "%s decode b=%d, PDL off: graph vs eager", name, S);
                gt_row_exact("pdl", shape, pdl_ndiff(graph, want[i], (size_t)S * V));
                free(graph);
            }
            ms[i][pdl] = pdl_time_graph(m, &b, lg, want[i], 20, &replay_diff[i][pdl]);
        }
    }
    for (int i = 0; i < 2; i++) {
        const int S = sizes[i];
        snprintf(shape, sizeof shape, "%s decode b=%d eager: on vs off", name, S);
        gt_row_exact("pdl", shape, pdl_ndiff(got[i][1], want[i], (size_t)S * V));
        snprintf(shape, sizeof shape, "%s decode b=%d graph: on vs off", name, S);
        gt_row_exact("pdl", shape, pdl_ndiff(got[i][0], want[i], (size_t)S * V));
        snprintf(shape, sizeof shape, "%s decode b=%d graph: 20 replays on vs off", name, S);
        gt_row_exact("pdl", shape, replay_diff[i][1]);
        snprintf(shape, sizeof shape, "%s decode b=%d graph: 20 replays off vs off", name, S);
        gt_row_exact("pdl", shape, replay_diff[i][0]);
        printf("  %s decode b=%d graph replay (logits copy included): %.3f ms PDL off, %.3f ms "
               "PDL on (%+.1f%%)\n",
               name, S, ms[i][0], ms[i][1], (ms[i][1] / ms[i][0] - 1.0) * 100.0);
        free(want[i]), free(got[i][0]), free(got[i][1]);
    }
    free(st.tables), free(lg), free(base);
    gt_model_close(&f);
    kern_cuda_set_pdl(-1);
}

TEST_TIMEOUT(gpu_pdl_model_tiny, 120) {
    pdl_model_case("tiny-qwen3", "tests/data/tiny-qwen3", MODEL_LOAD_SAFETENSORS, 256, 200);
}

TEST_TIMEOUT(gpu_pdl_model_qwen3_0_6b, 180) {
    pdl_model_case("Qwen3-0.6B", "tests/data/configs/Qwen3-0.6B", MODEL_LOAD_DUMMY, 1024, 300);
}

TEST_TIMEOUT(gpu_pdl_model_7b, 300) {
    pdl_model_case("Qwen2.5-7B", "tests/data/configs/Qwen2.5-7B-Instruct", MODEL_LOAD_DUMMY, 1024,
                   300);
}

// PDL playground: a Qwen2.5-7B-shaped decode step built from keel's decode kernels alone (28
// layers of add_rmsnorm -> qkv gemv (+bias) -> qk_rope_kv -> decode attention -> o gemv ->
// add_rmsnorm -> gate_up gemv -> down gemv with silu fused (m <= 4) or silu_mul + gemv; then the
// final norm, the f32 LM head gemv and argmax), timed eagerly and as one CUDA graph, with
// programmatic dependent launch off and on (kern_cuda_set_pdl). The difference per step divided
// by the launches per step is what PDL saves per kernel boundary.
//
// Then, at m = 1 as one graph with PDL on, the same step with one kind of op left out of every
// layer at a time (`skip`): the step time it saves is that op's share of the critical path, beside
// the time its bytes take at the measured copy rate. The outputs of a step with an op left out
// are meaningless; only its time is read. This is where the decode step's 0.6 ms above the
// weights' read time goes (docs/PERF.md run 8).
//
// Weights rotate among 4 copies of a layer (each bigger than L2 together), so the step streams
// device memory as the model does; every layer has its own KV cache (8 x 512 tokens at most).
// No cuBLAS in the chain: at m <= 8 keel's tuner picks the gemv at these shapes on the H100
// (docs/PERF.md). Run: make playgrounds && build/playgrounds/pdl
#include "bench/kernels/play.h"
#include "kernels/cuda/attention_dec.h"

enum {
    DIM = 3584,
    N_HEADS = 28,
    N_KV = 4,
    HD = 128,
    QKV = (N_HEADS + 2 * N_KV) * HD,
    HID = 18944,
    VOCAB = 152064,
    LAYERS = 28,
    COPIES = 4,
    MAX_M = 8,
    CTX = 512,
    BS = 16,
    MB = CTX / BS,
};

struct layer_w {
    bf16 *qkv, *bias, *o, *gu, *down, *n1, *n2;
};

struct step_bufs {
    layer_w w[COPIES];
    bf16 *lm, *nf;
    bf16 *kc[LAYERS], *vc[LAYERS];
    bf16 *res, *xn, *qkv, *att, *o, *gu, *hid, *down;
    float *logits;
    int32_t *ids, *pos, *slots, *qs, *lens, *tables;
    void *scratch;
    size_t scratch_bytes;
    int n_sm;
    // Knobs of the variants table: the attention's context hint (0: CTX) and its multiprocessor
    // count (the split target; 0: the device's), gemv warps per projection (0: the default).
    int hint, attn_sm, qkv_warps, o_warps, gu_warps, lm_warps;
};

static bf16 *rand_dev(size_t n, float scale, unsigned seed) {
    bf16 *p = (bf16 *)play_dev(n * 2);
    play_fill(p, n, scale, seed);
    return p;
}

// The kinds of op `skip` can leave out of every layer (bit i: op i).
enum { OP_NORM1, OP_QKV, OP_ROPE, OP_ATTN, OP_O, OP_NORM2, OP_GU, OP_DOWN, OP_LM, OP_KINDS };
static const char *const op_names[OP_KINDS] = {"attn norm", "qkv gemv",  "qk_rope_kv",
                                               "attention", "o gemv",    "mlp norm",
                                               "gate_up",   "down+silu", "final norm+lm"};

// One decode step of m sequences, each at CTX tokens of context, without the ops in `skip`;
// returns the launches queued.
static int step(struct step_bufs *b, int m, cudaStream_t s, unsigned skip = 0) {
    const float eps = 1e-6f;
    struct kern_attn_batch ab = {m, m, b->qs, b->lens, b->tables, MB, 1, b->hint ? b->hint : CTX};
    int n = 0;
    for (int l = 0; l < LAYERS; l++) {
        const layer_w *w = &b->w[l % COPIES];
        auto on = [&](int op) { return !(skip >> op & 1u); };
        if (on(OP_NORM1))
            PLAY_OK(
                kern_cuda_add_rmsnorm(b->xn, b->res, l ? b->down : NULL, w->n1, m, DIM, eps, s));
        if (on(OP_QKV))
            PLAY_OK(
                kern_cuda_gemv(b->qkv, 0, b->xn, w->qkv, w->bias, m, QKV, DIM, b->qkv_warps, s));
        if (on(OP_ROPE))
            PLAY_OK(kern_cuda_qk_rope_kv(b->qkv, b->kc[l], b->vc[l], NULL, NULL, b->pos, b->slots,
                                         m, N_HEADS, N_KV, HD, eps, 1e6f, s));
        if (on(OP_ATTN))
            PLAY_OK(kern_cuda_attention(b->att, b->qkv, b->kc[l], b->vc[l], &ab, N_HEADS, N_KV, HD,
                                        BS, 0.08838834764f, b->scratch, b->scratch_bytes,
                                        b->attn_sm ? b->attn_sm : b->n_sm, s));
        if (on(OP_O))
            PLAY_OK(kern_cuda_gemv(b->o, 0, b->att, w->o, NULL, m, DIM, DIM, b->o_warps, s));
        if (on(OP_NORM2))
            PLAY_OK(kern_cuda_add_rmsnorm(b->xn, b->res, b->o, w->n2, m, DIM, eps, s));
        if (on(OP_GU))
            PLAY_OK(kern_cuda_gemv(b->gu, 0, b->xn, w->gu, NULL, m, 2 * HID, DIM, b->gu_warps, s));
        if (!on(OP_DOWN)) {
        } else if (m <= 4) {
            PLAY_OK(kern_cuda_gemv_silu(b->down, b->gu, w->down, m, DIM, HID, 0, s));
        } else {
            PLAY_OK(kern_cuda_silu_mul(b->hid, b->gu, m, HID, s));
            PLAY_OK(kern_cuda_gemv(b->down, 0, b->hid, w->down, NULL, m, DIM, HID, 0, s));
            n++;
        }
        n += 9; // the attention's split-KV combine counted as one more
    }
    if (skip >> OP_LM & 1u) return n;
    PLAY_OK(kern_cuda_add_rmsnorm(b->xn, b->res, b->down, b->nf, m, DIM, eps, s));
    PLAY_OK(kern_cuda_gemv(b->logits, 1, b->xn, b->lm, NULL, m, VOCAB, DIM, b->lm_warps, s));
    PLAY_OK(kern_cuda_argmax(b->ids, b->logits, m, VOCAB, s));
    return n + 3;
}

static void setup(struct step_bufs *b) {
    for (int c = 0; c < COPIES; c++) {
        layer_w *w = &b->w[c];
        unsigned sd = 100 * (c + 1);
        w->qkv = rand_dev((size_t)QKV * DIM, 0.03f, sd + 1);
        w->bias = rand_dev(QKV, 0.1f, sd + 2);
        w->o = rand_dev((size_t)DIM * DIM, 0.03f, sd + 3);
        w->gu = rand_dev((size_t)2 * HID * DIM, 0.03f, sd + 4);
        w->down = rand_dev((size_t)DIM * HID, 0.02f, sd + 5);
        w->n1 = rand_dev(DIM, 1.0f, sd + 6);
        w->n2 = rand_dev(DIM, 1.0f, sd + 7);
    }
    b->lm = rand_dev((size_t)VOCAB * DIM, 0.03f, 7);
    b->nf = rand_dev(DIM, 1.0f, 8);
    const size_t cache = (size_t)MAX_M * MB * BS * N_KV * HD;
    for (int l = 0; l < LAYERS; l++) {
        b->kc[l] = rand_dev(cache, 1.0f, 1000 + l);
        b->vc[l] = rand_dev(cache, 1.0f, 2000 + l);
    }
    b->res = rand_dev((size_t)MAX_M * DIM, 1.0f, 9);
    b->xn = rand_dev((size_t)MAX_M * DIM, 1.0f, 10);
    b->qkv = rand_dev((size_t)MAX_M * QKV, 1.0f, 11);
    b->att = rand_dev((size_t)MAX_M * DIM, 1.0f, 12);
    b->o = rand_dev((size_t)MAX_M * DIM, 1.0f, 13);
    b->gu = rand_dev((size_t)MAX_M * 2 * HID, 1.0f, 14);
    b->hid = rand_dev((size_t)MAX_M * HID, 1.0f, 15);
    b->down = rand_dev((size_t)MAX_M * DIM, 0.1f, 16);
    b->logits = (float *)play_dev((size_t)MAX_M * VOCAB * 4);
    int32_t h_pos[MAX_M], h_slots[MAX_M], h_qs[MAX_M + 1], h_lens[MAX_M], h_tab[MAX_M * MB];
    for (int i = 0; i < MAX_M; i++) {
        h_pos[i] = CTX - 1, h_lens[i] = CTX, h_qs[i] = i;
        for (int j = 0; j < MB; j++)
            h_tab[i * MB + j] = i * MB + j;
        h_slots[i] = (i * MB + MB - 1) * BS + BS - 1;
    }
    h_qs[MAX_M] = MAX_M;
    auto up = [](const int32_t *h, size_t n) {
        int32_t *d = (int32_t *)play_dev(n * 4);
        PLAY_CUDA(cudaMemcpy(d, h, n * 4, cudaMemcpyHostToDevice));
        return d;
    };
    b->ids = (int32_t *)play_dev(MAX_M * 4);
    b->pos = up(h_pos, MAX_M), b->slots = up(h_slots, MAX_M), b->qs = up(h_qs, MAX_M + 1);
    b->lens = up(h_lens, MAX_M), b->tables = up(h_tab, MAX_M * MB);
    b->scratch_bytes = kern_cuda_attention_scratch_bytes(MAX_M, N_HEADS, HD);
    b->scratch = play_dev(b->scratch_bytes);
    PLAY_CUDA(cudaDeviceGetAttribute(&b->n_sm, cudaDevAttrMultiProcessorCount, 0));
}

int main(void) {
    struct kern_ctx *c = play_ctx();
    struct play_peaks pk = play_measure_peaks(c);
    cudaStream_t s = kern_cuda_stream(c);
    if (!kern_cuda_set_pdl(1)) {
        printf("PDL needs compute capability 9.0 or higher: nothing to compare\n");
        return 0;
    }
    static struct step_bufs b;
    setup(&b);
    const double w_bytes = ((double)QKV * DIM + QKV + (double)DIM * DIM + 2.0 * HID * DIM +
                            (double)DIM * HID + 2.0 * DIM) *
                           2;
    play_header();
    for (int m : {1, 2, 4, 8}) {
        float ms[2][2]; // [graph][pdl]
        int n_launch = 0;
        for (int pdl = 0; pdl < 2; pdl++) {
            kern_cuda_set_pdl(pdl);
            ms[0][pdl] = play_time(s, 3, 20, [&](int) { n_launch = step(&b, m, s); });
            cudaGraph_t g;
            cudaGraphExec_t ge;
            PLAY_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
            step(&b, m, s);
            PLAY_CUDA(cudaStreamEndCapture(s, &g));
            PLAY_CUDA(cudaGraphInstantiate(&ge, g, 0));
            ms[1][pdl] = play_time(s, 3, 20, [&](int) { PLAY_CUDA(cudaGraphLaunch(ge, s)); });
            PLAY_CUDA(cudaGraphExecDestroy(ge));
            PLAY_CUDA(cudaGraphDestroy(g));
        }
        const double bytes = LAYERS * w_bytes + (double)VOCAB * DIM * 2 +
                             (double)LAYERS * m * CTX * N_KV * HD * 2 * 2;
        for (int graph = 0; graph < 2; graph++) {
            for (int pdl = 0; pdl < 2; pdl++) {
                char v[96];
                snprintf(v, sizeof v, "7b step m=%d %-5s PDL %s", m, graph ? "graph" : "eager",
                         pdl ? "on" : "off");
                play_line(v, ms[graph][pdl], bytes, 0.0, &pk);
            }
            printf("  m=%d %s: PDL saves %.1f us per step, %.2f us per launch (%d launches)\n", m,
                   graph ? "graph" : "eager", (ms[graph][0] - ms[graph][1]) * 1e3,
                   (ms[graph][0] - ms[graph][1]) * 1e3 / n_launch, n_launch);
        }
    }

    // Where a graphed m = 1 step's time goes: each kind of op left out of every layer in turn.
    kern_cuda_set_pdl(1);
    auto graph_ms = [&](unsigned skip) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        PLAY_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        step(&b, 1, s, skip);
        PLAY_CUDA(cudaStreamEndCapture(s, &g));
        PLAY_CUDA(cudaGraphInstantiate(&ge, g, 0));
        float t = play_time(s, 3, 20, [&](int) { PLAY_CUDA(cudaGraphLaunch(ge, s)); });
        PLAY_CUDA(cudaGraphExecDestroy(ge));
        PLAY_CUDA(cudaGraphDestroy(g));
        return t;
    };
    const double op_bytes[OP_KINDS] = {0,
                                       ((double)QKV * DIM + QKV) * 2,
                                       0,
                                       (double)CTX * N_KV * HD * 2 * 2,
                                       (double)DIM * DIM * 2,
                                       0,
                                       2.0 * HID * DIM * 2,
                                       (double)DIM * HID * 2,
                                       (double)VOCAB * DIM * 2 / LAYERS};
    const float full = graph_ms(0);
    printf("\nm=1 graph, PDL on: %.1f us per step. Each kind of op left out of every layer:\n",
           full * 1e3);
    printf("%-14s | %12s | %12s | %22s\n", "op", "saves us/step", "us per layer",
           "its bytes at copy rate");
    for (int op = 0; op < OP_KINDS; op++) {
        const float t = graph_ms(1u << op);
        const int per = op == OP_LM ? 1 : LAYERS;
        printf("%-14s | %12.1f | %12.2f | %17.2f us/l\n", op_names[op], (full - t) * 1e3,
               (full - t) * 1e3 / per, op_bytes[op] / (pk.copy_gbs * 1e3));
    }

    // Variants of the m = 1 step at the context keel's benchmark decodes at (300 keys, a graph's
    // 1024-key context hint: 16 key slices, most of them empty), each against the same step with
    // the attention left out: what the attention's split plan costs, and what the gemv's warps
    // per block (8 by default; 4 puts qkv's 288 blocks in one wave) cost.
    const int ctx = 300;
    int32_t h_len[MAX_M], h_pos[MAX_M], h_slot[MAX_M];
    for (int i = 0; i < MAX_M; i++)
        h_len[i] = ctx, h_pos[i] = ctx - 1,
        h_slot[i] = (i * MB + (ctx - 1) / BS) * BS + (ctx - 1) % BS;
    PLAY_CUDA(cudaMemcpy(b.lens, h_len, sizeof h_len, cudaMemcpyHostToDevice));
    PLAY_CUDA(cudaMemcpy(b.pos, h_pos, sizeof h_pos, cudaMemcpyHostToDevice));
    PLAY_CUDA(cudaMemcpy(b.slots, h_slot, sizeof h_slot, cudaMemcpyHostToDevice));
    struct variant {
        const char *name;
        int hint, attn_sm, min_split, fused, qkv_w, o_w, gu_w, lm_w;
    };
    const int dflt_min = kern_cuda__attention_dec_min_split_ctx();
    const variant vars[] = {
        {"hint 1024 (16 slices) + combine", 1024, 0, dflt_min, 0, 0, 0, 0, 0},
        {"hint 300 (3 slices of 128)", ctx, 0, dflt_min, 0, 0, 0, 0, 0},
        {"hint 1024, 8 slices of 128", 1024, 8, dflt_min, 0, 0, 0, 0, 0},
        {"hint 1024, merged in kernel", 1024, 0, dflt_min, 1, 0, 0, 0, 0},
        {"one slice (no split)", 1024, 0, 1 << 30, 0, 0, 0, 0, 0},
        {"hint 1024, qkv gemv 4 warps", 1024, 0, dflt_min, 0, 4, 0, 0, 0},
        {"hint 1024, o gemv 4 warps", 1024, 0, dflt_min, 0, 0, 4, 0, 0},
        {"hint 1024, gate_up 4 warps", 1024, 0, dflt_min, 0, 0, 0, 4, 0},
        {"hint 1024, lm head 4 warps", 1024, 0, dflt_min, 0, 0, 0, 0, 4},
    };
    printf("\nm=1 graph, PDL on, context %d: variants (attention cost = step - step without it)\n",
           ctx);
    printf("%-34s | %10s | %18s\n", "variant", "step us", "attention us/layer");
    for (const variant &v : vars) {
        b.hint = v.hint, b.attn_sm = v.attn_sm, b.qkv_warps = v.qkv_w, b.o_warps = v.o_w;
        b.gu_warps = v.gu_w, b.lm_warps = v.lm_w;
        kern_cuda__attention_dec_set_min_split_ctx(v.min_split);
        kern_cuda__attention_dec_set_fused_combine(v.fused);
        const float t = graph_ms(0), t0 = graph_ms(1u << OP_ATTN);
        printf("%-34s | %10.1f | %18.2f\n", v.name, t * 1e3, (t - t0) * 1e3 / LAYERS);
    }
    kern_cuda__attention_dec_set_min_split_ctx(dflt_min);
    kern_cuda__attention_dec_set_fused_combine(0);

    // Chains of a few kinds of op alone (every other op and the LM head left out), 28 layers in
    // one graph: each kind's cost without the weight streams around it.
    b.hint = 1024, b.attn_sm = 0, b.qkv_warps = b.o_warps = b.gu_warps = b.lm_warps = 0;
    const unsigned all = (1u << OP_KINDS) - 1;
    const struct {
        const char *name;
        unsigned keep;
    } chains[] = {
        {"attention", 1u << OP_ATTN},
        {"qk_rope_kv", 1u << OP_ROPE},
        {"mlp norm", 1u << OP_NORM2},
        {"qk_rope_kv + attention", 1u << OP_ROPE | 1u << OP_ATTN},
        {"o gemv", 1u << OP_O},
        {"attention + o gemv", 1u << OP_ATTN | 1u << OP_O},
        {"qkv gemv", 1u << OP_QKV},
        {"qkv + rope + attention + o", 1u << OP_QKV | 1u << OP_ROPE | 1u << OP_ATTN | 1u << OP_O},
    };
    printf("\nm=1 graph, PDL on, context %d, hint 1024: chains of only these ops\n", ctx);
    printf("%-34s | %12s\n", "ops", "us per layer");
    for (const auto &ch : chains) {
        const float t = graph_ms(all & ~ch.keep);
        printf("%-34s | %12.2f\n", ch.name, t * 1e3 / LAYERS);
    }
    kern_cuda__attention_dec_set_fused_combine(1);
    printf("%-34s | %12.2f\n", "attention, merged in kernel",
           graph_ms(all & ~(1u << OP_ATTN)) * 1e3 / LAYERS);
    kern_cuda__attention_dec_set_fused_combine(0);
    kern_cuda__attention_dec_set_min_split_ctx(1 << 30);
    printf("%-34s | %12.2f\n", "attention, one slice",
           graph_ms(all & ~(1u << OP_ATTN)) * 1e3 / LAYERS);
    kern_cuda__attention_dec_set_min_split_ctx(dflt_min);
    kern_cuda_set_pdl(0);
    printf("%-34s | %12.2f\n", "attention, PDL off",
           graph_ms(all & ~(1u << OP_ATTN)) * 1e3 / LAYERS);
    printf("%-34s | %12.2f\n", "mlp norm, PDL off",
           graph_ms(all & ~(1u << OP_NORM2)) * 1e3 / LAYERS);
    kern_cuda_set_pdl(-1);
    return 0;
}

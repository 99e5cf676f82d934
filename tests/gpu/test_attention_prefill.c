// Prefill attention on tensor cores (attention_tc.cu) in each of its kernels, chosen through
// KEEL_ATTN_PREFILL at set-up: the flash-attention-2 kernel as the launcher picks its width
// ("fa2"), forced to 4 warps ("fa2_64") and to 8 warps ("fa2_128"), and the previous kernel
// ("old"). Each is compared with the float64 reference on windows of query rows (every row of
// spans up to 320 tokens; the first, middle and last 16 otherwise, so 4k- and 32k-token prompts
// stay affordable on the host), every output is checked to be written (no poison left), and the
// new kernel's whole output is compared with the old one's on the same inputs.
//
// Shapes: Qwen2.5-7B (28/4 heads, head_dim 128), Qwen3-8B (32/8, 128), Qwen2.5-0.5B (14/2, 64);
// single 1k, 4k and 32k prompts; mixed batches of different lengths; chunked prefill (first
// position > 0, the cached context crossing many blocks); spans of 1, 63, 65, 300 tokens (not
// multiples of any tile); GQA 1, 40 and 80 (several head parts); block sizes 8, 16 and 32; block
// tables a random permutation of the pool (and 24, which the new kernel hands to the old one).
// Inputs: q uniform in [-3, 3), k and v in [-1, 1) (scores of about unit spread after the
// 1/sqrt(head_dim) scale). Tolerance: relative L2 1e-2 against the reference (as test_attention.c),
// 5e-3 between the new and old kernels.
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/gpu/gpu_ref.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <stdlib.h>

#define PF_MAX_SEQS 4
#define PF_WHOLE 320 // spans up to this long are compared on every row
#define PF_WIN 16    // otherwise three windows of this many rows

struct pf_case {
    int n_heads, n_kv_heads, head_dim, block_size;
    int n_seqs;
    int qlen[PF_MAX_SEQS]; // new tokens of each sequence this step
    int len[PF_MAX_SEQS];  // context length including them
};

// The kernels under test, as KEEL_ATTN_PREFILL values, and their table names.
static const char *pf_modes[] = {"fa2", "fa2_64", "fa2_128", "old"};
static const char *pf_names[] = {"prefill fa2", "prefill fa2 64", "prefill fa2 128", "prefill old"};

static void pf_set_mode(const char *mode) {
    if (mode)
        setenv("KEEL_ATTN_PREFILL", mode, 1);
    else
        unsetenv("KEEL_ATTN_PREFILL");
    CHECK_OK(kern_cuda__attention_tc_setup());
}

// The compared rows of one sequence: windows [w0[k], w1[k]) of its span; returns their number.
static int pf_windows(int qlen, int w0[3], int w1[3]) {
    if (qlen <= PF_WHOLE) {
        w0[0] = 0, w1[0] = qlen;
        return 1;
    }
    w0[0] = 0, w1[0] = PF_WIN;
    w0[1] = qlen / 2 - PF_WIN / 2, w1[1] = w0[1] + PF_WIN;
    w0[2] = qlen - PF_WIN, w1[2] = qlen;
    return 3;
}

static void check_prefill(const struct pf_case *tc, uint64_t seed) {
    int nh = tc->n_heads, nkv = tc->n_kv_heads, hd = tc->head_dim, bs = tc->block_size;
    struct gt_attn_layout lay;
    gt_attn_layout_make(&lay, tc->n_seqs, tc->qlen, tc->len, bs, &seed);
    const int32_t *qstart = lay.qstart, *lens = lay.lens, *tables = lay.tables;
    const int n_tokens = lay.n_tokens, max_q = lay.max_q, max_len = lay.max_len;
    const int max_blocks = lay.max_blocks, n_blocks = lay.n_blocks;

    size_t row = (size_t)(nh + 2 * nkv) * hd, cache = (size_t)n_blocks * bs * nkv * hd;
    size_t out_row = (size_t)nh * hd, out_n = (size_t)n_tokens * out_row;
    bf16 *qkv = gt_rand_bf16((size_t)n_tokens * row, 3.0f, &seed);
    bf16 *kc = gt_rand_bf16(cache, 1.0f, &seed), *vc = gt_rand_bf16(cache, 1.0f, &seed);
    float scale = 1.0f / sqrtf((float)hd);

    // The reference on the compared rows, each window as the last query tokens of its sequence
    // (same keys): want holds them back to back, rows[] their batch rows.
    int *rows = malloc(sizeof(int) * n_tokens), n_rows = 0;
    bf16 *want = malloc(out_n * 2);
    for (int i = 0; i < tc->n_seqs; i++) {
        int w0[3], w1[3], nw = pf_windows(tc->qlen[i], w0, w1);
        int first_pos = tc->len[i] - tc->qlen[i];
        for (int w = 0; w < nw; w++) {
            int n = w1[w] - w0[w];
            int32_t qs2[2] = {0, n}, lens2[1] = {first_pos + w1[w]};
            struct kern_attn_batch hb = {1,          n, qs2,     lens2, tables + i * max_blocks,
                                         max_blocks, n, lens2[0]};
            gpu_ref_ops.attention(NULL, want + (size_t)n_rows * out_row,
                                  qkv + (size_t)(qstart[i] + w0[w]) * row, kc, vc, &hb, nh, nkv, hd,
                                  bs, scale);
            for (int t = w0[w]; t < w1[w]; t++)
                rows[n_rows++] = qstart[i] + t;
        }
    }

    bf16 *d_qkv = gt_up(qkv, (size_t)n_tokens * row * 2), *d_k = gt_up(kc, cache * 2),
         *d_v = gt_up(vc, cache * 2), *d_out = gt_dev(out_n * 2);
    int32_t *d_qs = gt_up(qstart, sizeof(int32_t) * (tc->n_seqs + 1));
    int32_t *d_lens = gt_up(lens, sizeof(int32_t) * tc->n_seqs);
    int32_t *d_tab = gt_up(tables, sizeof(int32_t) * tc->n_seqs * max_blocks);
    struct kern_attn_batch db = {tc->n_seqs, n_tokens,   d_qs,  d_lens,
                                 d_tab,      max_blocks, max_q, max_len};
    cudaStream_t st = kern_cuda_stream(gt_ctx());

    char shape[96];
    int o = snprintf(shape, sizeof shape, "h=%d/%d hd=%d bs=%d q/len:", nh, nkv, hd, bs);
    for (int i = 0; i < tc->n_seqs && o < (int)sizeof shape - 14; i++)
        o += snprintf(shape + o, sizeof shape - o, " %d/%d", tc->qlen[i], tc->len[i]);

    bf16 *got[4], *got_c = malloc((size_t)n_rows * out_row * 2);
    for (int mode = 0; mode < 4; mode++) {
        pf_set_mode(pf_modes[mode]);
        got[mode] = malloc(out_n * 2);
        gt_poison(d_out, out_n * 2);
        CHECK_OK(kern_cuda__attention_tc(d_out, d_qkv, d_k, d_v, &db, nh, nkv, hd, bs, scale, st));
        gt_down(got[mode], d_out, out_n * 2);
        struct gt_err all = gt_cmp_bf16(got[mode], got[mode], out_n);
        CHECK_MSG(all.n_nan == 0, "%s: %zu NaN or unwritten outputs of %zu", pf_modes[mode],
                  all.n_nan, out_n);
        for (int r = 0; r < n_rows; r++)
            memcpy(got_c + (size_t)r * out_row, got[mode] + (size_t)rows[r] * out_row, out_row * 2);
        gt_row(pf_names[mode], shape, gt_cmp_bf16(got_c, want, (size_t)n_rows * out_row), 1e-2);
    }
    // The new kernel against the old on every row; both widths of the new one against each other.
    gt_row("prefill fa2~old", shape, gt_cmp_bf16(got[0], got[3], out_n), 5e-3);
    gt_row("prefill 64~128", shape, gt_cmp_bf16(got[1], got[2], out_n), 5e-3);
    pf_set_mode(NULL);

    for (int mode = 0; mode < 4; mode++)
        free(got[mode]);
    gt_free(d_qkv), gt_free(d_k), gt_free(d_v), gt_free(d_out), gt_free(d_qs), gt_free(d_lens),
        gt_free(d_tab);
    free(got_c), free(rows), free(want), free(qkv), free(kc), free(vc);
    gt_attn_layout_free(&lay);
}

TEST(gpu_prefill_models_1k) {
    struct pf_case a = {28, 4, 128, 16, 1, {1024}, {1024}}; // Qwen2.5-7B
    check_prefill(&a, 300);
    struct pf_case b = {32, 8, 128, 16, 1, {1024}, {1024}}; // Qwen3-8B
    check_prefill(&b, 301);
    struct pf_case c = {14, 2, 64, 16, 1, {1024}, {1024}}; // Qwen2.5-0.5B
    check_prefill(&c, 302);
}

TEST_TIMEOUT(gpu_prefill_models_4k, 120) {
    struct pf_case a = {28, 4, 128, 16, 1, {4096}, {4096}};
    check_prefill(&a, 310);
    struct pf_case b = {32, 8, 128, 32, 1, {4096}, {4096}};
    check_prefill(&b, 311);
    struct pf_case c = {14, 2, 64, 16, 1, {4096}, {4096}};
    check_prefill(&c, 312);
}

TEST_TIMEOUT(gpu_prefill_mixed, 120) {
    // Several fresh prompts of different lengths in one launch.
    struct pf_case a = {28, 4, 128, 16, 3, {300, 1000, 65}, {300, 1000, 65}};
    check_prefill(&a, 320);
    struct pf_case b = {32, 8, 128, 32, 2, {777, 129}, {777, 129}};
    check_prefill(&b, 321);
    struct pf_case c = {14, 2, 64, 16, 3, {513, 64, 200}, {513, 64, 200}};
    check_prefill(&c, 322);
}

TEST_TIMEOUT(gpu_prefill_chunked, 120) {
    // Chunks that continue a cached context (first positions 700, 517, 1935, 3900, 800), next to a
    // fresh prompt and a decode token; the keys before the chunk come from scattered cache blocks.
    struct pf_case a = {32, 8, 128, 16, 3, {300, 63, 100}, {1000, 580, 100}};
    check_prefill(&a, 330);
    struct pf_case b = {28, 4, 128, 32, 2, {65, 1}, {2000, 3000}};
    check_prefill(&b, 331);
    struct pf_case c = {14, 2, 64, 16, 2, {200, 700}, {4100, 1500}};
    check_prefill(&c, 332);
}

TEST_TIMEOUT(gpu_prefill_odd_spans, 120) {
    // Spans that are no multiple of any tile (query tiles of 128 / group tokens, key tiles of
    // 64), block size 8; GQA 1 (tiles of 64 or 128 tokens) and GQA 40 (one 40-row part of a 64-
    // or 128-row block, 1 or 3 tokens a tile).
    struct pf_case a = {14, 2, 64, 16, 4, {1, 63, 65, 300}, {1, 63, 100, 900}};
    check_prefill(&a, 340);
    struct pf_case b = {28, 4, 128, 8, 4, {1, 63, 65, 300}, {70, 63, 65, 301}};
    check_prefill(&b, 341);
    struct pf_case c = {4, 4, 64, 8, 2, {63, 129}, {63, 200}};
    check_prefill(&c, 342);
    struct pf_case d = {40, 1, 64, 16, 2, {65, 7}, {65, 200}};
    check_prefill(&d, 343);
    struct pf_case e = {16, 8, 128, 32, 3, {1, 2, 3}, {33, 64, 65}};
    check_prefill(&e, 344);
    // GQA 80: two head parts (64 + 16 rows) of one kv head in 4-warp blocks, one in 8-warp ones.
    struct pf_case g = {80, 1, 64, 16, 2, {5, 40}, {30, 40}};
    check_prefill(&g, 346);
    // A block size that is no power of two: every mode falls back to the previous kernel.
    struct pf_case f = {28, 4, 128, 24, 2, {100, 30}, {100, 400}};
    check_prefill(&f, 345);
}

TEST_TIMEOUT(gpu_prefill_32k, 180) {
    // One 32k-token prompt with Qwen2.5-7B heads: the longest key loop and the most query tiles.
    struct pf_case a = {28, 4, 128, 16, 1, {32768}, {32768}};
    check_prefill(&a, 350);
}

TEST(gpu_prefill_switch) {
    // KEEL_ATTN_PREFILL is read at set-up; every mode refuses a head_dim it does not take, and an
    // empty batch launches nothing.
    gt_ctx();
    struct kern_attn_batch empty = {0, 0, NULL, NULL, NULL, 1, 0, 0};
    for (int mode = 0; mode < 4; mode++) {
        pf_set_mode(pf_modes[mode]);
        CHECK_EQ(kern_cuda__attention_tc(NULL, NULL, NULL, NULL, &empty, 12, 4, 96, 16, 0.1f,
                                         kern_cuda_stream(gt_ctx())),
                 ERR_UNSUPPORTED);
        CHECK_OK(kern_cuda__attention_tc(NULL, NULL, NULL, NULL, &empty, 12, 4, 128, 16, 0.1f,
                                         kern_cuda_stream(gt_ctx())));
    }
    pf_set_mode(NULL);
    // Back to the default after the switches: still correct.
    struct pf_case a = {32, 8, 128, 16, 1, {200}, {200}};
    check_prefill(&a, 360);
}

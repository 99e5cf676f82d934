// Every CUDA op against the float64 reference (gpu_ref.c) and against the CPU backend
// (kern_cpu_ops, rows marked "~cpu") on random data at several shapes:
// real model sizes, odd sizes (scalar fallback paths), GQA ratios 1/2/4/7/8/40, block sizes 16/32,
// mixed prefill + decode batches. Outputs are poisoned (NaN) before each run, so an unwritten
// element fails. Tolerances are relative L2 errors: 1e-2 for bf16 outputs, 1e-4 for float32
// logits (bf16 inputs, float32 accumulation), exact for copies and ids.
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/gpu/gpu_ref.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#define TOL_BF16 1e-2
#define TOL_F32 1e-4

static const struct kern_ops *cu = &kern_cuda_ops;
static const struct kern_ops *ref = &gpu_ref_ops;
static const struct kern_ops *cpu = &kern_cpu_ops;

static size_t n_diff(const bf16 *a, const bf16 *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != b[i];
    return bad;
}

// ---- embed, gather_rows

static void check_embed(int n, int dim, int vocab, uint64_t seed) {
    bf16 *table = gt_rand_bf16((size_t)vocab * dim, 1.0f, &seed);
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        ids[i] = (int32_t)(gt_rand(&seed) % (uint64_t)vocab);
    bf16 *want = malloc((size_t)n * dim * 2), *got = malloc((size_t)n * dim * 2);
    ref->embed(NULL, want, ids, table, n, dim);
    bf16 *want_cpu = malloc((size_t)n * dim * 2);
    CHECK_OK(cpu->embed(gt_cpu(), want_cpu, ids, table, n, dim));
    bf16 *d_table = gt_up(table, (size_t)vocab * dim * 2), *d_out = gt_dev((size_t)n * dim * 2);
    int32_t *d_ids = gt_up(ids, sizeof(int32_t) * n);
    gt_poison(d_out, (size_t)n * dim * 2);
    CHECK_OK(cu->embed(gt_ctx(), d_out, d_ids, d_table, n, dim));
    gt_down(got, d_out, (size_t)n * dim * 2);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)n * dim; i++)
        bad += got[i] != want[i];
    char shape[64];
    snprintf(shape, sizeof shape, "n=%d dim=%d vocab=%d", n, dim, vocab);
    gt_row_exact("embed", shape, bad);
    gt_row_exact("embed ~cpu", shape, n_diff(got, want_cpu, (size_t)n * dim));
    gt_free(d_table), gt_free(d_out), gt_free(d_ids);
    free(table), free(ids), free(want), free(got), free(want_cpu);
}

TEST(gpu_embed) {
    check_embed(7, 896, 1000, 1);
    check_embed(33, 1031, 517, 2); // odd dim: the 2-byte path
    check_embed(1, 4096, 151936, 3);
}

static void check_gather(int m, int n_rows, int dim, uint64_t seed) {
    bf16 *x = gt_rand_bf16((size_t)n_rows * dim, 1.0f, &seed);
    int32_t *rows = malloc(sizeof(int32_t) * m);
    for (int i = 0; i < m; i++)
        rows[i] = (int32_t)(gt_rand(&seed) % (uint64_t)n_rows);
    bf16 *want = malloc((size_t)m * dim * 2), *got = malloc((size_t)m * dim * 2);
    ref->gather_rows(NULL, want, x, rows, m, dim);
    bf16 *want_cpu = malloc((size_t)m * dim * 2);
    CHECK_OK(cpu->gather_rows(gt_cpu(), want_cpu, x, rows, m, dim));
    bf16 *d_x = gt_up(x, (size_t)n_rows * dim * 2), *d_out = gt_dev((size_t)m * dim * 2);
    int32_t *d_rows = gt_up(rows, sizeof(int32_t) * m);
    gt_poison(d_out, (size_t)m * dim * 2);
    CHECK_OK(cu->gather_rows(gt_ctx(), d_out, d_x, d_rows, m, dim));
    gt_down(got, d_out, (size_t)m * dim * 2);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)m * dim; i++)
        bad += got[i] != want[i];
    char shape[64];
    snprintf(shape, sizeof shape, "m=%d rows=%d dim=%d", m, n_rows, dim);
    gt_row_exact("gather_rows", shape, bad);
    gt_row_exact("gather_rows ~cpu", shape, n_diff(got, want_cpu, (size_t)m * dim));
    gt_free(d_x), gt_free(d_out), gt_free(d_rows);
    free(x), free(rows), free(want), free(got), free(want_cpu);
}

TEST(gpu_gather_rows) {
    check_gather(5, 300, 896, 4);
    check_gather(3, 17, 13, 5);
}

// ---- add_rmsnorm

static void check_rmsnorm(int n, int dim, int with_delta, uint64_t seed) {
    size_t sz = (size_t)n * dim;
    bf16 *res = gt_rand_bf16(sz, 2.0f, &seed), *delta = gt_rand_bf16(sz, 1.0f, &seed);
    bf16 *w = gt_rand_bf16(dim, 1.5f, &seed);
    bf16 *res_ref = gt_copy_bf16(res, sz), *want = malloc(sz * 2), *got = malloc(sz * 2),
         *got_res = malloc(sz * 2);
    ref->add_rmsnorm(NULL, want, res_ref, with_delta ? delta : NULL, w, n, dim, 1e-6f);
    bf16 *res_cpu = gt_copy_bf16(res, sz), *want_cpu = malloc(sz * 2);
    CHECK_OK(
        cpu->add_rmsnorm(gt_cpu(), want_cpu, res_cpu, with_delta ? delta : NULL, w, n, dim, 1e-6f));
    bf16 *d_res = gt_up(res, sz * 2), *d_delta = gt_up(delta, sz * 2), *d_w = gt_up(w, dim * 2);
    bf16 *d_out = gt_dev(sz * 2);
    gt_poison(d_out, sz * 2);
    CHECK_OK(
        cu->add_rmsnorm(gt_ctx(), d_out, d_res, with_delta ? d_delta : NULL, d_w, n, dim, 1e-6f));
    gt_down(got, d_out, sz * 2);
    gt_down(got_res, d_res, sz * 2);
    char shape[64];
    snprintf(shape, sizeof shape, "n=%d dim=%d%s", n, dim, with_delta ? " +delta" : "");
    gt_row("add_rmsnorm", shape, gt_cmp_bf16(got, want, sz), TOL_BF16);
    snprintf(shape, sizeof shape, "n=%d dim=%d%s residual", n, dim, with_delta ? " +delta" : "");
    gt_row("add_rmsnorm", shape, gt_cmp_bf16(got_res, res_ref, sz), 1e-6);
    gt_row("add_rmsnorm ~cpu", shape, gt_cmp_bf16(got_res, res_cpu, sz), 1e-6);
    snprintf(shape, sizeof shape, "n=%d dim=%d%s", n, dim, with_delta ? " +delta" : "");
    gt_row("add_rmsnorm ~cpu", shape, gt_cmp_bf16(got, want_cpu, sz), TOL_BF16);
    free(res_cpu), free(want_cpu);
    gt_free(d_res), gt_free(d_delta), gt_free(d_w), gt_free(d_out);
    free(res), free(delta), free(w), free(res_ref), free(want), free(got), free(got_res);
}

TEST(gpu_add_rmsnorm) {
    check_rmsnorm(7, 896, 1, 10);
    check_rmsnorm(64, 1024, 1, 11);
    check_rmsnorm(3, 3584, 0, 12);
    check_rmsnorm(2, 4096, 1, 13);
    check_rmsnorm(5, 1031, 1, 14); // odd: the scalar path
    check_rmsnorm(1, 5, 1, 15);
}

// ---- GEMM

static void check_gemm(int m, int n, int k, int bias, int f32, uint64_t seed) {
    bf16 *x = gt_rand_bf16((size_t)m * k, 1.0f, &seed),
         *w = gt_rand_bf16((size_t)n * k, 0.05f, &seed);
    bf16 *b = gt_rand_bf16(n, 0.5f, &seed);
    size_t out_bytes = (size_t)m * n * (f32 ? 4 : 2);
    void *want = malloc(out_bytes), *got = malloc(out_bytes);
    bf16 *d_x = gt_up(x, (size_t)m * k * 2), *d_w = gt_up(w, (size_t)n * k * 2),
         *d_b = gt_up(b, n * 2);
    void *d_y = gt_dev(out_bytes);
    gt_poison(d_y, out_bytes);
    char shape[80];
    snprintf(shape, sizeof shape, "m=%d n=%d k=%d%s", m, n, k, bias ? " +bias" : "");
    if (f32) {
        ref->gemm_f32(NULL, want, x, w, m, n, k);
        CHECK_OK(cu->gemm_f32(gt_ctx(), d_y, d_x, d_w, m, n, k));
        gt_down(got, d_y, out_bytes);
        gt_row("gemm_f32", shape, gt_cmp_f32(got, want, (size_t)m * n), TOL_F32);
        CHECK_OK(cpu->gemm_f32(gt_cpu(), want, x, w, m, n, k));
        gt_row("gemm_f32 ~cpu", shape, gt_cmp_f32(got, want, (size_t)m * n), TOL_F32);
    } else {
        ref->gemm(NULL, want, x, w, bias ? b : NULL, m, n, k);
        CHECK_OK(cu->gemm(gt_ctx(), d_y, d_x, d_w, bias ? d_b : NULL, m, n, k));
        gt_down(got, d_y, out_bytes);
        gt_row("gemm", shape, gt_cmp_bf16(got, want, (size_t)m * n), TOL_BF16);
        CHECK_OK(cpu->gemm(gt_cpu(), want, x, w, bias ? b : NULL, m, n, k));
        gt_row("gemm ~cpu", shape, gt_cmp_bf16(got, want, (size_t)m * n), TOL_BF16);
    }
    gt_free(d_x), gt_free(d_w), gt_free(d_b), gt_free(d_y);
    free(x), free(w), free(b), free(want), free(got);
}

TEST(gpu_gemm) {
    check_gemm(1, 896, 896, 0, 0, 20);
    check_gemm(7, 1152, 896, 1, 0, 21);   // Qwen2.5-0.5B fused QKV with bias
    check_gemm(33, 9728, 1024, 0, 0, 22); // Qwen3-0.6B gate/up
    check_gemm(128, 1024, 3072, 0, 0, 23);
    check_gemm(5, 77, 33, 1, 0, 24);      // odd: 2-byte alignment
    check_gemm(3, 151936, 896, 0, 1, 25); // logits at the real vocabulary
    check_gemm(2, 1001, 72, 0, 1, 26);
    // Every m of a bucket shares its plan: m = 65..128 run the algorithm chosen for 128.
    for (int m = 65; m <= 128; m += 21)
        check_gemm(m, 896, 896, 1, 0, 27 + m);
}

// ---- qk_norm, rope

static void check_qk_norm(int n, int nh, int nkv, int hd, uint64_t seed) {
    size_t sz = (size_t)n * (nh + 2 * nkv) * hd;
    bf16 *qkv = gt_rand_bf16(sz, 3.0f, &seed), *qw = gt_rand_bf16(hd, 1.5f, &seed),
         *kw = gt_rand_bf16(hd, 1.5f, &seed);
    bf16 *want = gt_copy_bf16(qkv, sz), *got = malloc(sz * 2);
    ref->qk_norm(NULL, want, qw, kw, n, nh, nkv, hd, 1e-6f);
    bf16 *d_qkv = gt_up(qkv, sz * 2), *d_qw = gt_up(qw, hd * 2), *d_kw = gt_up(kw, hd * 2);
    CHECK_OK(cu->qk_norm(gt_ctx(), d_qkv, d_qw, d_kw, n, nh, nkv, hd, 1e-6f));
    gt_down(got, d_qkv, sz * 2);
    char shape[80];
    snprintf(shape, sizeof shape, "n=%d heads=%d/%d hd=%d", n, nh, nkv, hd);
    gt_row("qk_norm", shape, gt_cmp_bf16(got, want, sz), TOL_BF16);
    memcpy(want, qkv, sz * 2);
    CHECK_OK(cpu->qk_norm(gt_cpu(), want, qw, kw, n, nh, nkv, hd, 1e-6f));
    gt_row("qk_norm ~cpu", shape, gt_cmp_bf16(got, want, sz), TOL_BF16);
    gt_free(d_qkv), gt_free(d_qw), gt_free(d_kw);
    free(qkv), free(qw), free(kw), free(want), free(got);
}

TEST(gpu_qk_norm) {
    check_qk_norm(17, 16, 8, 128, 30);
    check_qk_norm(1, 32, 8, 128, 31);
    check_qk_norm(5, 14, 2, 64, 32);
    check_qk_norm(3, 8, 1, 256, 33);
    check_qk_norm(4, 4, 2, 48, 34); // not a multiple of 32
}

static void check_rope(int n, int nh, int nkv, int hd, float theta, int max_pos, uint64_t seed) {
    size_t sz = (size_t)n * (nh + 2 * nkv) * hd;
    bf16 *qkv = gt_rand_bf16(sz, 2.0f, &seed);
    int32_t *pos = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++)
        pos[i] = (int32_t)(gt_rand(&seed) % (uint64_t)max_pos);
    bf16 *want = gt_copy_bf16(qkv, sz), *got = malloc(sz * 2);
    ref->rope(NULL, want, pos, n, nh, nkv, hd, theta);
    bf16 *d_qkv = gt_up(qkv, sz * 2);
    int32_t *d_pos = gt_up(pos, sizeof(int32_t) * n);
    CHECK_OK(cu->rope(gt_ctx(), d_qkv, d_pos, n, nh, nkv, hd, theta));
    gt_down(got, d_qkv, sz * 2);
    char shape[80];
    snprintf(shape, sizeof shape, "n=%d heads=%d/%d hd=%d theta=%g pos<%d", n, nh, nkv, hd,
             (double)theta, max_pos);
    gt_row("rope", shape, gt_cmp_bf16(got, want, sz), TOL_BF16);
    memcpy(want, qkv, sz * 2);
    CHECK_OK(cpu->rope(gt_cpu(), want, pos, n, nh, nkv, hd, theta));
    gt_row("rope ~cpu", shape, gt_cmp_bf16(got, want, sz), TOL_BF16);
    gt_free(d_qkv), gt_free(d_pos);
    free(qkv), free(pos), free(want), free(got);
}

TEST(gpu_rope) {
    check_rope(19, 14, 2, 64, 1e6f, 32768, 40);
    check_rope(7, 16, 8, 128, 1e6f, 40960, 41);
    check_rope(4, 28, 4, 128, 1e4f, 4096, 42);
    check_rope(3, 3, 1, 10, 1e4f, 100, 43); // odd head count and tiny head_dim
}

// ---- kv_write

static void check_kv_write(int n, int nh, int nkv, int hd, int bs, int n_blocks, uint64_t seed) {
    size_t row = (size_t)(nh + 2 * nkv) * hd, cache = (size_t)n_blocks * bs * nkv * hd;
    bf16 *qkv = gt_rand_bf16(n * row, 1.0f, &seed);
    int32_t *slots = malloc(sizeof(int32_t) * n);
    int n_slots = n_blocks * bs;
    for (int i = 0; i < n; i++) { // distinct slots, some negative (padding)
        slots[i] = i % 5 == 3 ? -1 : (int32_t)((i * 7919 + (int)(seed % 13)) % n_slots);
    }
    bf16 *kc = malloc(cache * 2), *vc = malloc(cache * 2), *gk = malloc(cache * 2),
         *gv = malloc(cache * 2);
    memset(kc, 0xff, cache * 2);
    memset(vc, 0xff, cache * 2);
    ref->kv_write(NULL, kc, vc, qkv, slots, n, nh, nkv, hd);
    bf16 *d_qkv = gt_up(qkv, n * row * 2), *d_k = gt_dev(cache * 2), *d_v = gt_dev(cache * 2);
    int32_t *d_slots = gt_up(slots, sizeof(int32_t) * n);
    gt_poison(d_k, cache * 2);
    gt_poison(d_v, cache * 2);
    CHECK_OK(cu->kv_write(gt_ctx(), d_k, d_v, d_qkv, d_slots, n, nh, nkv, hd));
    gt_down(gk, d_k, cache * 2);
    gt_down(gv, d_v, cache * 2);
    size_t bad = 0;
    for (size_t i = 0; i < cache; i++)
        bad += (gk[i] != kc[i]) + (gv[i] != vc[i]);
    char shape[80];
    snprintf(shape, sizeof shape, "n=%d heads=%d/%d hd=%d bs=%d", n, nh, nkv, hd, bs);
    gt_row_exact("kv_write", shape, bad);
    memset(kc, 0xff, cache * 2);
    memset(vc, 0xff, cache * 2);
    CHECK_OK(cpu->kv_write(gt_cpu(), kc, vc, qkv, slots, n, nh, nkv, hd));
    gt_row_exact("kv_write ~cpu", shape, n_diff(gk, kc, cache) + n_diff(gv, vc, cache));
    gt_free(d_qkv), gt_free(d_k), gt_free(d_v), gt_free(d_slots);
    free(qkv), free(slots), free(kc), free(vc), free(gk), free(gv);
}

TEST(gpu_kv_write) {
    check_kv_write(37, 14, 2, 64, 16, 8, 50);
    check_kv_write(20, 32, 8, 128, 32, 4, 51);
    check_kv_write(9, 3, 1, 10, 16, 2, 52); // odd: the 2-byte path
}

// ---- silu_mul

static void check_silu(int n, int h, uint64_t seed) {
    bf16 *gu = gt_rand_bf16((size_t)n * 2 * h, 4.0f, &seed);
    bf16 *want = malloc((size_t)n * h * 2), *got = malloc((size_t)n * h * 2);
    ref->silu_mul(NULL, want, gu, n, h);
    bf16 *d_gu = gt_up(gu, (size_t)n * 2 * h * 2), *d_out = gt_dev((size_t)n * h * 2);
    gt_poison(d_out, (size_t)n * h * 2);
    CHECK_OK(cu->silu_mul(gt_ctx(), d_out, d_gu, n, h));
    gt_down(got, d_out, (size_t)n * h * 2);
    char shape[64];
    snprintf(shape, sizeof shape, "n=%d h=%d", n, h);
    gt_row("silu_mul", shape, gt_cmp_bf16(got, want, (size_t)n * h), TOL_BF16);
    CHECK_OK(cpu->silu_mul(gt_cpu(), want, gu, n, h));
    gt_row("silu_mul ~cpu", shape, gt_cmp_bf16(got, want, (size_t)n * h), TOL_BF16);
    gt_free(d_gu), gt_free(d_out);
    free(gu), free(want), free(got);
}

TEST(gpu_silu_mul) {
    check_silu(9, 4864, 60);
    check_silu(1, 12288, 61);
    check_silu(5, 11, 62); // odd h: the scalar path
}

// ---- argmax (greedy sampling on the GPU)

TEST(gpu_argmax) {
    uint64_t seed = 70;
    int m = 5, vocab = 151936;
    float *logits = malloc(sizeof(float) * (size_t)m * vocab);
    for (size_t i = 0; i < (size_t)m * vocab; i++)
        logits[i] = gt_uniform(&seed) * 10.0f;
    logits[1 * (size_t)vocab + 77] = 50.0f; // a tie: the lower index wins
    logits[1 * (size_t)vocab + 90000] = 50.0f;
    logits[3 * (size_t)vocab + vocab - 1] = 60.0f; // the last column
    int32_t want[5], got[5];
    gpu_ref_argmax(want, logits, m, vocab);
    float *d_l = gt_up(logits, sizeof(float) * (size_t)m * vocab);
    int32_t *d_ids = gt_dev(sizeof got);
    gt_poison(d_ids, sizeof got);
    CHECK_OK(kern_cuda_argmax(d_ids, d_l, m, vocab, kern_cuda_stream(gt_ctx())));
    gt_down(got, d_ids, sizeof got);
    size_t bad = 0;
    for (int i = 0; i < m; i++)
        bad += got[i] != want[i];
    CHECK_EQ(got[1], 77);
    CHECK_EQ(got[3], vocab - 1);
    gt_row_exact("argmax", "m=5 vocab=151936 (ties, last column)", bad);
    gt_free(d_l), gt_free(d_ids);
    free(logits);
}

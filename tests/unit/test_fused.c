// The CPU backend's fused ops (kernels/ops.h gemm_silu, add_rmsnorm_gemm, qk_rope_kv): the
// reference the CUDA kernels are tested against (tests/gpu/test_fused.c), so here they are checked
// against formulas written out in double precision and against the unfused ops called one by one;
// plus padding slots, the no-norm (Qwen2) variant and bad arguments.
#include "common/err.h"
#include "kernels/ops.h"
#include "tests/test.h"

#include <stdint.h>

static uint64_t fz_state = 0x2545f4914f6cdd1dull;
static float fz_rand(void) { // uniform in [-1, 1)
    fz_state ^= fz_state << 13;
    fz_state ^= fz_state >> 7;
    fz_state ^= fz_state << 17;
    return (float)((fz_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static bf16 *fz_bf16(size_t n, float scale) {
    bf16 *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = f32_to_bf16(fz_rand() * scale);
    return p;
}

static size_t fz_diff(const bf16 *a, const bf16 *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != b[i];
    return bad;
}

static struct kern_ctx *fz_ctx(void) {
    struct kern_ctx *c;
    CHECK_OK(kern_cpu_ctx_init(&c, 2));
    return c;
}

// ---- gemm_silu

TEST(fused_cpu_gemm_silu_is_silu_then_gemm) {
    const struct kern_ops *op = &kern_cpu_ops;
    struct kern_ctx *c = fz_ctx();
    const int m = 3, n = 21, h = 77;
    bf16 *gu = fz_bf16((size_t)m * 2 * h, 4.0f), *w = fz_bf16((size_t)n * h, 0.2f);
    bf16 *hid = malloc((size_t)m * h * 2), *hid2 = malloc((size_t)m * h * 2);
    bf16 *y = malloc((size_t)m * n * 2), *y2 = malloc((size_t)m * n * 2);
    CHECK_OK(op->gemm_silu(c, y, hid, gu, w, m, n, h));
    CHECK_OK(op->silu_mul(c, hid2, gu, m, h));
    CHECK_OK(op->gemm(c, y2, hid2, w, NULL, m, n, h));
    size_t bad = fz_diff(y, y2, (size_t)m * n);
    CHECK_MSG(bad == 0, "gemm_silu differs from silu_mul + gemm in %zu of %d outputs", bad, m * n);

    // Against double precision: y = sum_k bf16(silu(g) u) w (the hidden row is bf16).
    double worst = 0.0, scale = 0.0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double want = 0.0;
            for (int k = 0; k < h; k++) {
                double g = bf16_to_f32(gu[(size_t)i * 2 * h + k]);
                double u = bf16_to_f32(gu[(size_t)i * 2 * h + h + k]);
                double hv = bf16_to_f32(f32_to_bf16((float)(g / (1.0 + exp(-g)) * u)));
                want += hv * bf16_to_f32(w[(size_t)j * h + k]);
            }
            double got = bf16_to_f32(y[(size_t)i * n + j]), d = fabs(got - want);
            if (d > worst) worst = d;
            if (fabs(want) > scale) scale = fabs(want);
        }
    printf("  gemm_silu m=%d n=%d h=%d: max |keel - float64| = %.3g (largest |y| %.3g)\n", m, n, h,
           worst, scale);
    CHECK_MSG(scale > 0.1, "degenerate data: largest |y| %.3g", scale);
    CHECK_MSG(worst <= scale / 64.0, "max error %.3g > %.3g", worst, scale / 64.0);

    CHECK_EQ(op->gemm_silu(c, y, hid, gu, w, -1, n, h), ERR_INVAL);
    CHECK_EQ(op->gemm_silu(c, y, hid, gu, w, m, 0, h), ERR_INVAL);
    CHECK_EQ(op->gemm_silu(c, y, hid, gu, w, m, n, 0), ERR_INVAL);
    free(gu), free(w), free(hid), free(hid2), free(y), free(y2);
    kern_cpu_ctx_free(c);
}

// ---- add_rmsnorm_gemm

TEST(fused_cpu_add_rmsnorm_gemm_is_the_composition) {
    const struct kern_ops *op = &kern_cpu_ops;
    struct kern_ctx *c = fz_ctx();
    const int m = 4, n = 19, k = 96;
    size_t mk = (size_t)m * k, mn = (size_t)m * n;
    bf16 *res = fz_bf16(mk, 2.0f), *delta = fz_bf16(mk, 1.0f), *nw = fz_bf16(k, 1.0f);
    bf16 *w = fz_bf16((size_t)n * k, 0.1f), *b = fz_bf16(n, 0.5f);
    bf16 *res_keep = malloc(mk * 2), *ro = malloc(mk * 2), *xn = malloc(mk * 2),
         *y = malloc(mn * 2);
    bf16 *r2 = malloc(mk * 2), *xn2 = malloc(mk * 2), *y2 = malloc(mn * 2);
    memcpy(res_keep, res, mk * 2);
    for (int with_delta = 1; with_delta >= 0; with_delta--) {
        const bf16 *d = with_delta ? delta : NULL;
        CHECK_OK(op->add_rmsnorm_gemm(c, y, ro, res, d, nw, w, b, xn, m, n, k, 1e-6f));
        memcpy(r2, res, mk * 2);
        CHECK_OK(op->add_rmsnorm(c, xn2, r2, d, nw, m, k, 1e-6f));
        CHECK_OK(op->gemm(c, y2, xn2, w, b, m, n, k));
        size_t bad_y = fz_diff(y, y2, mn), bad_r = fz_diff(ro, r2, mk),
               bad_in = fz_diff(res, res_keep, mk);
        printf("  add_rmsnorm_gemm%s: y %zu, res_out %zu, input residual %zu mismatches\n",
               with_delta ? "" : " (no delta)", bad_y, bad_r, bad_in);
        CHECK_EQ(bad_y + bad_r + bad_in, 0);
    }
    // With a delta the new residual differs from the old one (the data is not degenerate).
    CHECK_OK(op->add_rmsnorm_gemm(c, y, ro, res, delta, nw, w, b, xn, m, n, k, 1e-6f));
    CHECK_MSG(fz_diff(ro, res, mk) > mk / 2, "res_out barely differs from residual");
    CHECK_EQ(op->add_rmsnorm_gemm(c, y, res, res, delta, nw, w, b, xn, m, n, k, 1e-6f), ERR_INVAL);
    CHECK_EQ(op->add_rmsnorm_gemm(c, y, delta, res, delta, nw, w, b, xn, m, n, k, 1e-6f),
             ERR_INVAL);
    CHECK_EQ(op->add_rmsnorm_gemm(c, y, ro, res, delta, nw, w, b, xn, m, 0, k, 1e-6f), ERR_INVAL);
    free(res), free(delta), free(nw), free(w), free(b), free(res_keep), free(ro), free(xn);
    free(y), free(r2), free(xn2), free(y2);
    kern_cpu_ctx_free(c);
}

// ---- qk_rope_kv

static void fz_check_qk_rope_kv(int norm) {
    const struct kern_ops *op = &kern_cpu_ops;
    struct kern_ctx *c = fz_ctx();
    const int n = 5, nh = 6, nkv = 2, hd = 16, n_slots = 12;
    size_t row = (size_t)(nh + 2 * nkv) * hd, sz = (size_t)n * row,
           cache = (size_t)n_slots * nkv * hd;
    bf16 *qkv = fz_bf16(sz, 2.0f), *qw = fz_bf16(hd, 1.5f), *kw = fz_bf16(hd, 1.5f);
    bf16 *a = malloc(sz * 2), *b = malloc(sz * 2);
    memcpy(a, qkv, sz * 2), memcpy(b, qkv, sz * 2);
    int32_t pos[5] = {0, 1, 7, 300, 4095}, slots[5] = {3, -1, 0, 11, 5};
    bf16 *ka = malloc(cache * 2), *va = malloc(cache * 2), *kb = malloc(cache * 2),
         *vb = malloc(cache * 2);
    memset(ka, 0x7f, cache * 2), memset(va, 0x7f, cache * 2);
    memset(kb, 0x7f, cache * 2), memset(vb, 0x7f, cache * 2);
    CHECK_OK(op->qk_rope_kv(c, a, ka, va, norm ? qw : NULL, norm ? kw : NULL, pos, slots, n, nh,
                            nkv, hd, 1e-6f, 1e4f));
    if (norm) CHECK_OK(op->qk_norm(c, b, qw, kw, n, nh, nkv, hd, 1e-6f));
    CHECK_OK(op->rope(c, b, pos, n, nh, nkv, hd, 1e4f));
    CHECK_OK(op->kv_write(c, kb, vb, b, slots, n, nh, nkv, hd));
    size_t bad = fz_diff(a, b, sz) + fz_diff(ka, kb, cache) + fz_diff(va, vb, cache);
    printf("  qk_rope_kv%s: %zu mismatches against the three ops in turn\n", norm ? " +norm" : "",
           bad);
    CHECK_EQ(bad, 0);
    // Something changed: q of token 2 (position 7) is rotated, and the padding token's k went
    // nowhere (slot 1, which nobody owns, still holds the fill pattern).
    CHECK_MSG(fz_diff(a + 2 * row, qkv + 2 * row, (size_t)nh * hd) > 0, "q of token 2 unchanged");
    CHECK_EQ(ka[1 * nkv * hd], 0x7f7f);
    // v is copied unchanged into token 3's slot 11.
    CHECK_EQ(fz_diff(va + 11 * (size_t)nkv * hd, qkv + 3 * row + (size_t)(nh + nkv) * hd,
                     (size_t)nkv * hd),
             0);
    free(qkv), free(qw), free(kw), free(a), free(b), free(ka), free(va), free(kb), free(vb);
    kern_cpu_ctx_free(c);
}

TEST(fused_cpu_qk_rope_kv_is_the_composition) {
    fz_check_qk_rope_kv(1);
    fz_check_qk_rope_kv(0);
}

TEST(fused_cpu_qk_rope_kv_refuses_bad_arguments) {
    const struct kern_ops *op = &kern_cpu_ops;
    struct kern_ctx *c = fz_ctx();
    bf16 qkv[3 * 16] = {0}, w[16] = {0}, kc[64], vc[64];
    int32_t pos[1] = {0}, slot[1] = {0};
    CHECK_EQ(op->qk_rope_kv(c, qkv, kc, vc, w, NULL, pos, slot, 1, 1, 1, 16, 1e-6f, 1e4f),
             ERR_INVAL); // q_w without k_w
    CHECK_EQ(op->qk_rope_kv(c, qkv, kc, vc, NULL, w, pos, slot, 1, 1, 1, 16, 1e-6f, 1e4f),
             ERR_INVAL);
    CHECK_EQ(op->qk_rope_kv(c, qkv, kc, vc, NULL, NULL, pos, slot, 1, 1, 1, 15, 1e-6f, 1e4f),
             ERR_INVAL); // odd head_dim: rope refuses
    CHECK_EQ(op->qk_rope_kv(c, qkv, kc, vc, NULL, NULL, pos, slot, 1, 1, 1, 16, 1e-6f, 0.0f),
             ERR_INVAL);
    CHECK_EQ(op->qk_rope_kv(c, qkv, kc, vc, NULL, NULL, pos, slot, -1, 1, 1, 16, 1e-6f, 1e4f),
             ERR_INVAL);
    kern_cpu_ctx_free(c);
}

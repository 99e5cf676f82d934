// The CPU reference ops against straightforward double-precision formulas written here, plus the
// properties the forward pass relies on: results independent of thread count and of which rows
// share a batch, padding slots skipped, bad shapes refused.
#include "common/err.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#include "tests/test.h"

#include <stdint.h>

// ---- helpers

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) { // uniform in [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static bf16 *rand_bf16(size_t n, float scale) {
    bf16 *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = f32_to_bf16(frand() * scale);
    return p;
}

static double f(bf16 v) {
    return (double)bf16_to_f32(v);
}

// bf16 keeps 8 significant bits: a stored result is within half an ulp (2^-8 relative) of the
// exact value, plus the float32 accumulation's error.
static void check_bf16_near(bf16 got, double want, double abs_tol, const char *what, int i) {
    double g = f(got);
    double tol = fabs(want) / 128.0 + abs_tol;
    CHECK_MSG(fabs(g - want) <= tol, "%s[%d]: got %.6g, want %.6g (tol %.3g)", what, i, g, want,
              tol);
}

static struct kern_ctx *ctx_n(int n) {
    struct kern_ctx *c = NULL;
    CHECK_OK(kern_cpu_ctx_init(&c, n));
    return c;
}

// ---- GEMM

static void gemm_case(int m, int n, int k, int threads) {
    struct kern_ctx *c = ctx_n(threads);
    bf16 *x = rand_bf16((size_t)m * k, 1.0f), *w = rand_bf16((size_t)n * k, 0.5f);
    bf16 *bias = rand_bf16(n, 2.0f), *y = malloc((size_t)m * n * sizeof *y);
    float *y32 = malloc((size_t)m * n * sizeof *y32);
    CHECK_OK(kern_cpu_ops.gemm(c, y, x, w, bias, m, n, k));
    CHECK_OK(kern_cpu_ops.gemm_f32(c, y32, x, w, m, n, k));
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double dot = 0;
            for (int kk = 0; kk < k; kk++)
                dot += f(x[(size_t)i * k + kk]) * f(w[(size_t)j * k + kk]);
            check_bf16_near(y[(size_t)i * n + j], dot + f(bias[j]), 1e-4 * k, "gemm y", i * n + j);
            CHECK_MSG(fabs(y32[(size_t)i * n + j] - dot) <= 1e-5 * k + 1e-5 * fabs(dot),
                      "gemm_f32 y[%d,%d]: got %.8g want %.8g", i, j, y32[(size_t)i * n + j], dot);
        }
    free(x), free(w), free(bias), free(y), free(y32);
    kern_cpu_ctx_free(c);
}

TEST(cpu_gemm_matches_double_reference) {
    gemm_case(1, 1, 1, 1);
    gemm_case(3, 7, 13, 1); // tails everywhere: n % 4, k % 8
    gemm_case(5, 64, 64, 2);
    gemm_case(19, 130, 200, 2); // more rows than one converted block
    gemm_case(2, 515, 96, 3);
}

TEST(cpu_gemm_rows_independent_of_batch_and_threads) {
    int m = 9, n = 301, k = 520; // large enough that every thread gets work
    bf16 *x = rand_bf16((size_t)m * k, 1.0f), *w = rand_bf16((size_t)n * k, 0.3f);
    float *all1 = malloc(sizeof(float) * m * n), *all2 = malloc(sizeof(float) * m * n);
    float one[301];
    struct kern_ctx *c1 = ctx_n(1), *c2 = ctx_n(2), *c5 = ctx_n(5);
    CHECK_OK(kern_cpu_ops.gemm_f32(c1, all1, x, w, m, n, k));
    // Many loops back to back on the pools, including more threads than cores.
    for (int rep = 0; rep < 200; rep++) {
        struct kern_ctx *c = rep % 2 ? c2 : c5;
        CHECK_OK(kern_cpu_ops.gemm_f32(c, all2, x, w, m, n, k));
        for (int i = 0; i < m * n; i++)
            CHECK_MSG(all1[i] == all2[i], "1 vs %d threads differ at %d (rep %d): %.9g vs %.9g",
                      c->n_threads, i, rep, all1[i], all2[i]);
    }
    for (int i = 0; i < m; i++) {
        CHECK_OK(kern_cpu_ops.gemm_f32(c2, one, x + (size_t)i * k, w, 1, n, k));
        for (int j = 0; j < n; j++)
            CHECK_MSG(one[j] == all1[i * n + j], "row %d alone differs at %d: %.9g vs %.9g", i, j,
                      one[j], all1[i * n + j]);
    }
    kern_cpu_ctx_free(c1);
    kern_cpu_ctx_free(c2);
    kern_cpu_ctx_free(c5);
    free(x), free(w), free(all1), free(all2);
}

TEST(cpu_gemm_refuses_bad_shapes) {
    struct kern_ctx *c = ctx_n(1);
    bf16 x[4] = {0}, w[4] = {0}, y[4];
    CHECK_EQ(kern_cpu_ops.gemm(c, y, x, w, NULL, 1, 0, 4), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.gemm(c, y, x, w, NULL, -1, 1, 4), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.gemm(c, y, x, w, NULL, 1, 1, 0), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.gemm(c, y, x, w, NULL, 1, 1, (1 << 16) + 1), ERR_INVAL);
    CHECK(strstr(err_msg(), "limit") != NULL);
    CHECK_EQ(kern_cpu_ops.gemm(c, y, x, w, NULL, 0, 1, 4), 0); // an empty batch is fine
    kern_cpu_ctx_free(c);
    kern_cpu_ctx_free(NULL);
}

// ---- norms

static double rms_inv(const bf16 *x, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += f(x[i]) * f(x[i]);
    return 1.0 / sqrt(ss / n + eps);
}

TEST(cpu_add_rmsnorm_adds_residual_and_normalises) {
    struct kern_ctx *c = ctx_n(2);
    int n = 5, dim = 96;
    float eps = 1e-6f;
    bf16 *res = rand_bf16((size_t)n * dim, 3.0f), *delta = rand_bf16((size_t)n * dim, 1.0f);
    bf16 *w = rand_bf16(dim, 1.0f), *out = malloc(sizeof(bf16) * n * dim);
    bf16 *res0 = malloc(sizeof(bf16) * n * dim);
    memcpy(res0, res, sizeof(bf16) * n * dim);
    CHECK_OK(kern_cpu_ops.add_rmsnorm(c, out, res, delta, w, n, dim, eps));
    for (int i = 0; i < n * dim; i++)
        CHECK_MSG(res[i] == f32_to_bf16(bf16_to_f32(res0[i]) + bf16_to_f32(delta[i])),
                  "residual[%d] = %g, want %g + %g", i, f(res[i]), f(res0[i]), f(delta[i]));
    for (int i = 0; i < n; i++) {
        double inv = rms_inv(res + (size_t)i * dim, dim, eps);
        for (int k = 0; k < dim; k++)
            check_bf16_near(out[(size_t)i * dim + k], f(res[(size_t)i * dim + k]) * inv * f(w[k]),
                            1e-3, "rmsnorm out", i * dim + k);
    }
    // Without delta the residual is left alone.
    memcpy(res0, res, sizeof(bf16) * n * dim);
    CHECK_OK(kern_cpu_ops.add_rmsnorm(c, out, res, NULL, w, n, dim, eps));
    CHECK(memcmp(res0, res, sizeof(bf16) * n * dim) == 0);
    CHECK_EQ(kern_cpu_ops.add_rmsnorm(c, res, res, NULL, w, n, dim, eps), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.add_rmsnorm(c, out, res, NULL, w, n, 0, eps), ERR_INVAL);
    free(res), free(delta), free(w), free(out), free(res0);
    kern_cpu_ctx_free(c);
}

TEST(cpu_qk_norm_normalises_each_head_leaves_v) {
    struct kern_ctx *c = ctx_n(1);
    int n = 3, nh = 4, nkv = 2, hd = 32, stride = (nh + 2 * nkv) * hd;
    bf16 *qkv = rand_bf16((size_t)n * stride, 4.0f), *orig = malloc(sizeof(bf16) * n * stride);
    memcpy(orig, qkv, sizeof(bf16) * n * stride);
    bf16 *qw = rand_bf16(hd, 2.0f), *kw = rand_bf16(hd, 2.0f);
    CHECK_OK(kern_cpu_ops.qk_norm(c, qkv, qw, kw, n, nh, nkv, hd, 1e-6f));
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nh + 2 * nkv; h++) {
            const bf16 *x = orig + (size_t)t * stride + h * hd;
            const bf16 *y = qkv + (size_t)t * stride + h * hd;
            if (h >= nh + nkv) { // v: untouched
                CHECK(memcmp(x, y, sizeof(bf16) * hd) == 0);
                continue;
            }
            double inv = rms_inv(x, hd, 1e-6);
            const bf16 *wt = h < nh ? qw : kw;
            for (int d = 0; d < hd; d++)
                check_bf16_near(y[d], f(x[d]) * inv * f(wt[d]), 1e-3, "qk_norm", h * hd + d);
        }
    free(qkv), free(orig), free(qw), free(kw);
    kern_cpu_ctx_free(c);
}

// ---- RoPE

TEST(cpu_rope_rotates_q_and_k_like_hf) {
    struct kern_ctx *c = ctx_n(1);
    int n = 4, nh = 2, nkv = 1, hd = 16, stride = (nh + 2 * nkv) * hd;
    int32_t pos[4] = {0, 1, 7, 300};
    float theta = 10000.0f;
    bf16 *qkv = rand_bf16((size_t)n * stride, 2.0f), *orig = malloc(sizeof(bf16) * n * stride);
    memcpy(orig, qkv, sizeof(bf16) * n * stride);
    CHECK_OK(kern_cpu_ops.rope(c, qkv, pos, n, nh, nkv, hd, theta));
    // Position 0 is the identity.
    CHECK(memcmp(qkv, orig, sizeof(bf16) * (nh + nkv) * hd) == 0);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < nh + 2 * nkv; h++) {
            const bf16 *x = orig + (size_t)t * stride + h * hd;
            const bf16 *y = qkv + (size_t)t * stride + h * hd;
            if (h >= nh + nkv) {
                CHECK(memcmp(x, y, sizeof(bf16) * hd) == 0);
                continue;
            }
            for (int i = 0; i < hd / 2; i++) {
                double a = pos[t] * pow(theta, -2.0 * i / hd);
                double x0 = f(x[i]), x1 = f(x[i + hd / 2]);
                check_bf16_near(y[i], x0 * cos(a) - x1 * sin(a), 2e-3, "rope lo", i);
                check_bf16_near(y[i + hd / 2], x1 * cos(a) + x0 * sin(a), 2e-3, "rope hi", i);
            }
        }
    CHECK_EQ(kern_cpu_ops.rope(c, qkv, pos, n, nh, nkv, 15, theta), ERR_INVAL);
    free(qkv), free(orig);
    kern_cpu_ctx_free(c);
}

// ---- KV cache and attention

TEST(cpu_kv_write_stores_by_slot_and_skips_padding) {
    struct kern_ctx *c = ctx_n(1);
    int n = 3, nh = 4, nkv = 2, hd = 8, stride = (nh + 2 * nkv) * hd, kv = nkv * hd, slots = 8;
    bf16 *qkv = rand_bf16((size_t)n * stride, 1.0f);
    bf16 *kc = calloc((size_t)slots * kv, sizeof(bf16)),
         *vc = calloc((size_t)slots * kv, sizeof(bf16));
    int32_t slot[3] = {5, -1, 2};
    CHECK_OK(kern_cpu_ops.kv_write(c, kc, vc, qkv, slot, n, nh, nkv, hd));
    CHECK(memcmp(kc + 5 * kv, qkv + nh * hd, sizeof(bf16) * kv) == 0);
    CHECK(memcmp(vc + 5 * kv, qkv + nh * hd + kv, sizeof(bf16) * kv) == 0);
    CHECK(memcmp(kc + 2 * kv, qkv + 2 * stride + nh * hd, sizeof(bf16) * kv) == 0);
    CHECK(memcmp(vc + 2 * kv, qkv + 2 * stride + nh * hd + kv, sizeof(bf16) * kv) == 0);
    int touched = 0;
    for (int s = 0; s < slots; s++)
        for (int i = 0; i < kv; i++)
            touched += kc[s * kv + i] != 0;
    CHECK_MSG(touched <= 2 * kv && touched > kv, "%d cache values written, want about %d", touched,
              2 * kv);
    free(qkv), free(kc), free(vc);
    kern_cpu_ctx_free(c);
}

// A mixed batch: sequence 0 is a 5-token prefill chunk at positions 3..7 (3 tokens cached
// before), sequence 1 one decode token at position 10, sequence 2 a fresh 4-token prompt. Blocks
// of 4 are handed out out of order; the reference recomputes each token's attention from the
// sequence's keys in position order, in double precision.
TEST(cpu_attention_mixed_batch_matches_reference) {
    struct kern_ctx *c = ctx_n(2);
    enum { NH = 4, NKV = 2, HD = 16, BS = 4, NB = 16, MAXB = 4 };
    int stride = (NH + 2 * NKV) * HD, kv = NKV * HD;
    int32_t qs[4] = {0, 5, 6, 10}, lens[3] = {8, 11, 4};
    int32_t tables[3 * MAXB] = {7, 2, -1, -1, 9, 0, 12, -1, 4, -1, -1, -1};
    int n_tok = 10;
    // Per sequence, the keys/values of every position (cached ones and this step's).
    bf16 *seq_qkv[3];
    bf16 *kc = calloc((size_t)NB * BS * kv, sizeof(bf16)),
         *vc = calloc((size_t)NB * BS * kv, sizeof(bf16));
    bf16 *batch = malloc(sizeof(bf16) * n_tok * stride);
    int32_t slots[10];
    for (int s = 0; s < 3; s++) {
        seq_qkv[s] = rand_bf16((size_t)lens[s] * stride, 1.5f);
        int q_len = qs[s + 1] - qs[s], first = lens[s] - q_len;
        for (int p = 0; p < lens[s]; p++) {
            int slot = tables[s * MAXB + p / BS] * BS + p % BS;
            if (p < first) { // cached earlier
                memcpy(kc + (size_t)slot * kv, seq_qkv[s] + (size_t)p * stride + NH * HD,
                       sizeof(bf16) * kv);
                memcpy(vc + (size_t)slot * kv, seq_qkv[s] + (size_t)p * stride + NH * HD + kv,
                       sizeof(bf16) * kv);
            } else {
                int t = qs[s] + p - first;
                memcpy(batch + (size_t)t * stride, seq_qkv[s] + (size_t)p * stride,
                       sizeof(bf16) * stride);
                slots[t] = slot;
            }
        }
    }
    CHECK_OK(kern_cpu_ops.kv_write(c, kc, vc, batch, slots, n_tok, NH, NKV, HD));
    struct kern_attn_batch b = {.n_seqs = 3,
                                .n_tokens = n_tok,
                                .query_start = qs,
                                .seq_lens = lens,
                                .block_tables = tables,
                                .max_blocks_per_seq = MAXB,
                                .max_query_len = 5,
                                .max_seq_len = 11};
    bf16 *out = malloc(sizeof(bf16) * n_tok * NH * HD);
    float scale = 1.0f / sqrtf((float)HD);
    CHECK_OK(kern_cpu_ops.attention(c, out, batch, kc, vc, &b, NH, NKV, HD, BS, scale));
    for (int s = 0; s < 3; s++) {
        int q_len = qs[s + 1] - qs[s], first = lens[s] - q_len;
        for (int p = first; p < lens[s]; p++)
            for (int h = 0; h < NH; h++) {
                const bf16 *q = seq_qkv[s] + (size_t)p * stride + h * HD;
                int kvh = h / (NH / NKV);
                double sc[16], mx = -1e300, sum = 0, o[HD] = {0};
                for (int u = 0; u <= p; u++) {
                    const bf16 *k = seq_qkv[s] + (size_t)u * stride + NH * HD + kvh * HD;
                    double d = 0;
                    for (int i = 0; i < HD; i++)
                        d += f(q[i]) * f(k[i]);
                    sc[u] = d * scale;
                    if (sc[u] > mx) mx = sc[u];
                }
                for (int u = 0; u <= p; u++)
                    sum += exp(sc[u] - mx);
                for (int u = 0; u <= p; u++) {
                    const bf16 *v = seq_qkv[s] + (size_t)u * stride + NH * HD + kv + kvh * HD;
                    for (int i = 0; i < HD; i++)
                        o[i] += exp(sc[u] - mx) / sum * f(v[i]);
                }
                int t = qs[s] + p - first;
                for (int i = 0; i < HD; i++)
                    check_bf16_near(out[(size_t)t * NH * HD + h * HD + i], o[i], 1e-3, "attn", t);
            }
    }
    // Position 0 sees only itself: the output is exactly its value row.
    const bf16 *v0 = seq_qkv[2] + NH * HD + kv;
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < HD; i++)
            CHECK_EQ(out[(size_t)6 * NH * HD + h * HD + i], v0[(h / 2) * HD + i]);
    // A context longer than the block table is refused, not read out of bounds.
    int32_t bad_lens[3] = {8, 17, 4};
    b.seq_lens = bad_lens;
    CHECK_EQ(kern_cpu_ops.attention(c, out, batch, kc, vc, &b, NH, NKV, HD, BS, scale), ERR_INVAL);
    b.seq_lens = lens;
    CHECK_EQ(kern_cpu_ops.attention(c, out, batch, kc, vc, &b, NH, 3, HD, BS, scale), ERR_INVAL);
    for (int s = 0; s < 3; s++)
        free(seq_qkv[s]);
    free(kc), free(vc), free(batch), free(out);
    kern_cpu_ctx_free(c);
}

// ---- the rest

TEST(cpu_silu_mul_embed_gather) {
    struct kern_ctx *c = ctx_n(2);
    int n = 3, h = 40, dim = 8;
    bf16 *gu = rand_bf16((size_t)n * 2 * h, 4.0f), *o = malloc(sizeof(bf16) * n * h);
    CHECK_OK(kern_cpu_ops.silu_mul(c, o, gu, n, h));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < h; k++) {
            double g = f(gu[(size_t)i * 2 * h + k]), u = f(gu[(size_t)i * 2 * h + h + k]);
            check_bf16_near(o[i * h + k], g / (1 + exp(-g)) * u, 1e-4, "silu_mul", i * h + k);
        }
    bf16 *table = rand_bf16(10 * dim, 1.0f), *e = malloc(sizeof(bf16) * 3 * dim);
    int32_t ids[3] = {9, 0, 9}, rows[2] = {2, 0}, bad[1] = {-1};
    CHECK_OK(kern_cpu_ops.embed(c, e, ids, table, 3, dim));
    CHECK(memcmp(e, table + 9 * dim, sizeof(bf16) * dim) == 0);
    CHECK(memcmp(e + dim, table, sizeof(bf16) * dim) == 0);
    bf16 g[16];
    CHECK_OK(kern_cpu_ops.gather_rows(c, g, e, rows, 2, dim));
    CHECK(memcmp(g, e + 2 * dim, sizeof(bf16) * dim) == 0);
    CHECK(memcmp(g + dim, e, sizeof(bf16) * dim) == 0);
    CHECK_EQ(kern_cpu_ops.embed(c, e, bad, table, 1, dim), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.gather_rows(c, g, e, bad, 1, dim), ERR_INVAL);
    CHECK_EQ(kern_cpu_ops.silu_mul(c, o, gu, n, 0), ERR_INVAL);
    int32_t src[4] = {1, 2, 3, 4}, dst[4] = {0};
    CHECK_OK(kern_cpu_ops.copy_to_backend(c, dst, src, sizeof src));
    CHECK_EQ(dst[3], 4);
    CHECK_OK(kern_cpu_ops.sync(c));
    CHECK_STR(kern_cpu_ops.name, "cpu");
    free(gu), free(o), free(table), free(e);
    kern_cpu_ctx_free(c);
}

// Host SIMT emulation of the fused kernels (gemv.cu's kc_gemv in its input and output modes,
// fused_qk_rope_kv.cu's kc_qk_rope_kv): one pthread per CUDA thread of a block, warp collectives
// and mma.m16n8k16 emulated per the PTX fragment layouts, blocks run one after another. Checks,
// on small odd shapes and the vector and element-wise paths:
//   PLAIN  against a float64 reference;
//   SILU   bit for bit against PLAIN on the hidden rows silu_mul would write (same warps);
//   NORM   y against PLAIN on add_rmsnorm's normed rows (close: float sums in another order),
//          res_out bit for bit against bf16(residual + delta);
//   qk_rope_kv bit for bit against the statement-for-statement host composition of
//          qk_norm.cu + rope.cu + kv_write.cu;
//   ROPE   (PLAIN or NORMP input) bit for bit against the Y output + that composition's rope
//          and kv write; RES bit for bit against Y + add_rmsnorm's add, its statistics against
//          float64; NORMP on a RES launch's residual and statistics ~ PLAIN on the normed rows.
// Usage, from the repository root: tests/data/fuse/emu/run.sh
#include <pthread.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
typedef uint16_t bf16;
using std::max;
using std::min;
struct d3 {
    unsigned x, y, z;
};
struct uint4 {
    uint32_t x, y, z, w;
};
struct uint2 {
    uint32_t x, y;
};
static uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
static uint2 make_uint2(uint32_t a, uint32_t b) { return {a, b}; }
static uint4 __ldg(const uint4 *p) { uint4 v; memcpy(&v, p, 16); return v; }
static uint2 __ldg(const uint2 *p) { uint2 v; memcpy(&v, p, 8); return v; }
static thread_local d3 threadIdx, blockIdx;
static d3 blockDim = {256, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

static float kc_f(bf16 h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static bf16 kc_bf(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (bf16)(u >> 16);
}
static float kc_round(float f) { return kc_f(kc_bf(f)); }

static const int MAXT = 256;
static pthread_barrier_t warp_bar[8], block_bar;
static uint32_t slots[8][32][8];
static int lane_id() { return threadIdx.x & 31; }
static int warp_id() { return threadIdx.x >> 5; }
static void __syncwarp() { pthread_barrier_wait(&warp_bar[warp_id()]); }
static void __syncthreads() { pthread_barrier_wait(&block_bar); }
static float __shfl_xor_sync(unsigned, float v, int o) {
    int w = warp_id(), l = lane_id();
    memcpy(&slots[w][l][0], &v, 4);
    __syncwarp();
    float r; memcpy(&r, &slots[w][l ^ o][0], 4);
    __syncwarp();
    return r;
}
static float kc_warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0, v, o); return v; }

static uint4 kc_gemv_ld_stream(const bf16 *p) { uint4 v; memcpy(&v, p, 16); return v; }
static uint4 kc_gemv_ld_act(const bf16 *p) { uint4 v; memcpy(&v, p, 16); return v; }
static uint2 kc_gemv_ld_act2(const bf16 *p) { uint2 v; memcpy(&v, p, 8); return v; }
// Programmatic dependent launch (device.h): one grid at a time here, nothing to wait for.
static void kc_pdl_wait(void) {}
static void kc_pdl_trigger(void) {}
static void kc_pdl_begin(void) {}
// mma.m16n8k16.row.col f32.bf16 (g = lane / 4, t = lane % 4): A regs a0 (row g, k 2t..2t+1),
// a1 (row g+8), a2 (row g, k 2t+8..), a3 (row g+8, k 2t+8..); B regs b0 (k 2t.., col g),
// b1 (k 2t+8.., col g); D: d0,d1 row g cols 2t,2t+1; d2,d3 row g+8.
static float half_of(uint32_t r, int hi) { return kc_f((bf16)(hi ? r >> 16 : r & 0xffff)); }
static void kc_gemv_mma(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                        uint32_t b1) {
    int w = warp_id(), l = lane_id();
    uint32_t *s = slots[w][l];
    s[0] = a0, s[1] = a1, s[2] = a2, s[3] = a3, s[4] = b0, s[5] = b1;
    __syncwarp();
    auto A = [&](int r, int k) {
        int g = r & 7, t = (k & 7) >> 1, reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        return half_of(slots[w][g * 4 + t][reg], k & 1);
    };
    auto B = [&](int k, int n) {
        int t = (k & 7) >> 1, reg = k >= 8 ? 5 : 4;
        return half_of(slots[w][n * 4 + t][reg], k & 1);
    };
    int g = l >> 2, t = l & 3;
    float out[4];
    for (int e = 0; e < 4; e++) {
        int r = g + (e >= 2 ? 8 : 0), c = 2 * t + (e & 1);
        float acc = d[e];
        for (int k = 0; k < 16; k++) acc += A(r, k) * B(k, c);
        out[e] = acc;
    }
    __syncwarp();
    for (int e = 0; e < 4; e++) d[e] = out[e];
}

#include "kernel_body.inc"

// ---- launch: blockDim.x threads, each runs every block in order
static void launch(d3 grid, int threads, std::function<void()> body) {
    blockDim = {(unsigned)threads, 1, 1};
    gridDim = grid;
    pthread_barrier_init(&block_bar, NULL, threads);
    for (int w = 0; w < threads / 32; w++) pthread_barrier_init(&warp_bar[w], NULL, 32);
    struct arg { int tid; d3 grid; std::function<void()> *body; };
    std::vector<pthread_t> th(threads);
    std::vector<arg> args(threads);
    for (int i = 0; i < threads; i++) {
        args[i] = {i, grid, &body};
        pthread_create(&th[i], NULL, [](void *p) -> void * {
            arg *a = (arg *)p;
            threadIdx = {(unsigned)a->tid, 0, 0};
            for (unsigned z = 0; z < a->grid.z; z++)
                for (unsigned y = 0; y < a->grid.y; y++)
                    for (unsigned x = 0; x < a->grid.x; x++) {
                        blockIdx = {x, y, z};
                        (*a->body)();
                        pthread_barrier_wait(&block_bar);
                    }
            return NULL;
        }, &args[i]);
    }
    for (auto &t : th) pthread_join(t, NULL);
    pthread_barrier_destroy(&block_bar);
    for (int w = 0; w < threads / 32; w++) pthread_barrier_destroy(&warp_bar[w]);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static std::vector<bf16> rbf(size_t n, float scale, size_t pad = 0) {
    std::vector<bf16> v(n + pad);
    for (auto &x : v) x = kc_bf(urand() * scale);
    return v;
}
static int failures = 0;
static void report(const char *what, const char *shape, bool ok, const char *fmt, double a, double b) {
    printf("%-4s %-22s %-40s ", ok ? "ok" : "FAIL", what, shape);
    printf(fmt, a, b);
    printf("\n");
    if (!ok) failures++;
}

// One gemv launch as kern_cuda_gemv* would make it. vec as the launcher decides.
static void run_gemv(int mode, bool vec, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *bias,
                     int m, int n, int k, int warps, const bf16 *delta, const bf16 *nw,
                     bf16 *res_out) {
    unsigned blocks = (unsigned)((n + 15) / 16);
    kc_gemv_epi ep = {};
    launch({blocks, 1, 1}, 32 * warps, [&] {
        if (mode == KC_GEMV_PLAIN && vec) kc_gemv<true, KC_GEMV_PLAIN, KC_GEMV_Y>(y, 0, x, w, bias, m, n, k, NULL, NULL, NULL, 0.f, ep);
        if (mode == KC_GEMV_PLAIN && !vec) kc_gemv<false, KC_GEMV_PLAIN, KC_GEMV_Y>(y, 0, x, w, bias, m, n, k, NULL, NULL, NULL, 0.f, ep);
        if (mode == KC_GEMV_SILU && vec) kc_gemv<true, KC_GEMV_SILU, KC_GEMV_Y>(y, 0, x, w, NULL, m, n, k, NULL, NULL, NULL, 0.f, ep);
        if (mode == KC_GEMV_SILU && !vec) kc_gemv<false, KC_GEMV_SILU, KC_GEMV_Y>(y, 0, x, w, NULL, m, n, k, NULL, NULL, NULL, 0.f, ep);
        if (mode == KC_GEMV_NORM && vec) kc_gemv<true, KC_GEMV_NORM, KC_GEMV_Y>(y, 0, x, w, bias, m, n, k, delta, nw, res_out, 1e-6f, ep);
        if (mode == KC_GEMV_NORM && !vec) kc_gemv<false, KC_GEMV_NORM, KC_GEMV_Y>(y, 0, x, w, bias, m, n, k, delta, nw, res_out, 1e-6f, ep);
    });
}

// The decode projections' modes (kern_cuda_proj): input MODE (PLAIN, SILU or NORMP with nw and
// ep.ss_in), output OUT (Y, ROPE with ep's rope fields, RES with y the residual and ep.ss_out).
template <int MODE, int OUT>
static void run_proj(bool vec, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *bias, int m, int n,
                     int k, int warps, const bf16 *nw, kc_gemv_epi ep) {
    unsigned blocks = (unsigned)((n + 15) / 16);
    ep.ss_parts = (k + 15) / 16;
    launch({blocks, 1, 1}, 32 * warps, [&] {
        if (vec) kc_gemv<true, MODE, OUT>(y, 0, x, w, bias, m, n, k, NULL, nw, NULL, 1e-6f, ep);
        else kc_gemv<false, MODE, OUT>(y, 0, x, w, bias, m, n, k, NULL, nw, NULL, 1e-6f, ep);
    });
}

static int warps_for(int k) { int c = (k + 127) / 128; return c < 8 ? (c < 1 ? 1 : c) : 8; }

static void check_gemv(int m, int n, int k, bool vec, int warps) {
    char shape[80];
    snprintf(shape, sizeof shape, "m=%d n=%d k=%d %s w%d", m, n, k, vec ? "vec" : "scalar", warps);
    auto w = rbf((size_t)n * k, 0.1f), bias = rbf(n, 0.5f);
    // PLAIN against float64
    auto x = rbf((size_t)m * k, 1.0f);
    std::vector<bf16> y((size_t)m * n, 0xffff), y2((size_t)m * n, 0xffff);
    run_gemv(KC_GEMV_PLAIN, vec, y.data(), x.data(), w.data(), bias.data(), m, n, k, warps, 0, 0, 0);
    double worst = 0, big = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double want = kc_f(bias[j]);
            for (int q = 0; q < k; q++) want += (double)kc_f(x[(size_t)i * k + q]) * kc_f(w[(size_t)j * k + q]);
            double got = kc_f(y[(size_t)i * n + j]);
            worst = std::max(worst, std::isnan(got) ? 1e30 : fabs(got - want));
            big = std::max(big, fabs(want));
        }
    report("gemv plain ~f64", shape, worst <= big / 100 + 1e-3, "max err %.3g (max |y| %.3g)", worst, big);

    // SILU == PLAIN on bf16(silu(g) u)
    auto gu = rbf((size_t)m * 2 * k, 3.0f);
    std::vector<bf16> hid((size_t)m * k);
    for (int i = 0; i < m; i++)
        for (int q = 0; q < k; q++)
            hid[(size_t)i * k + q] = kc_bf(kc_silu_mul1(kc_f(gu[(size_t)i * 2 * k + q]), kc_f(gu[(size_t)i * 2 * k + k + q])));
    std::fill(y.begin(), y.end(), 0xffff), std::fill(y2.begin(), y2.end(), 0xffff);
    run_gemv(KC_GEMV_SILU, vec, y.data(), gu.data(), w.data(), NULL, m, n, k, warps, 0, 0, 0);
    run_gemv(KC_GEMV_PLAIN, vec, y2.data(), hid.data(), w.data(), NULL, m, n, k, warps, 0, 0, 0);
    size_t bad = 0;
    for (size_t i = 0; i < y.size(); i++) bad += y[i] != y2[i];
    report("gemv silu == plain", shape, bad == 0, "%g of %g differ", (double)bad, (double)y.size());

    // NORM: y ~ PLAIN on add_rmsnorm's rows, res_out exact
    for (int with_delta = 0; with_delta < 2; with_delta++) {
        auto res = rbf((size_t)m * k, 2.0f), delta = rbf((size_t)m * k, 1.0f), nw = rbf(k, 1.0f);
        std::vector<bf16> ro((size_t)m * k, 0xffff), want_ro((size_t)m * k), xn((size_t)m * k);
        for (int i = 0; i < m; i++) {
            double ss = 0;
            for (int q = 0; q < k; q++) {
                size_t e = (size_t)i * k + q;
                float v = kc_f(res[e]);
                if (with_delta) v = kc_round(v + kc_f(delta[e]));
                want_ro[e] = kc_bf(v);
                ss += (double)v * v;
            }
            float inv = 1.0f / sqrtf((float)(ss / k) + 1e-6f);
            for (int q = 0; q < k; q++) {
                size_t e = (size_t)i * k + q;
                xn[e] = kc_bf(kc_f(nw[q]) * kc_round(kc_f(want_ro[e]) * inv));
            }
        }
        std::fill(y.begin(), y.end(), 0xffff), std::fill(y2.begin(), y2.end(), 0xffff);
        run_gemv(KC_GEMV_NORM, vec, y.data(), res.data(), w.data(), bias.data(), m, n, k, warps,
                 with_delta ? delta.data() : NULL, nw.data(), ro.data());
        run_gemv(KC_GEMV_PLAIN, vec, y2.data(), xn.data(), w.data(), bias.data(), m, n, k, warps, 0, 0, 0);
        double num = 0, den = 0;
        size_t nan = 0, diff = 0;
        for (size_t i = 0; i < y.size(); i++) {
            double a = kc_f(y[i]), b = kc_f(y2[i]);
            if (std::isnan(a)) nan++;
            num += (a - b) * (a - b), den += b * b;
            diff += y[i] != y2[i];
        }
        double rel = sqrt(num / den);
        char sh[96];
        snprintf(sh, sizeof sh, "%s%s", shape, with_delta ? "" : " nodelta");
        report("gemv norm ~ plain", sh, nan == 0 && rel < 2e-3, "rel L2 %.3g (%g elements differ)", rel, (double)diff);
        size_t bad_ro = 0;
        for (size_t i = 0; i < ro.size(); i++) bad_ro += ro[i] != want_ro[i];
        report("gemv norm res_out", sh, bad_ro == 0, "%g of %g differ", (double)bad_ro, (double)ro.size());
    }
}

// ---- qk_rope_kv against the host composition of qk_norm.cu, rope.cu, kv_write.cu

static void host_compose(std::vector<bf16> &qkv, std::vector<bf16> &kc, std::vector<bf16> &vc,
                         const bf16 *qw, const bf16 *kw, const int32_t *pos, const int32_t *slot,
                         int n, int nh, int nkv, int hd, float eps, float theta) {
    size_t row = (size_t)(nh + 2 * nkv) * hd;
    for (int t = 0; t < n; t++) {
        bf16 *r = &qkv[t * row];
        if (qw)
            for (int h = 0; h < nh + nkv; h++) {
                bf16 *x = r + h * hd;
                const bf16 *w = h < nh ? qw : kw;
                // qk_norm.cu's lane order: lane l sums elements e*32+l, then the xor-tree.
                float part[32];
                for (int l = 0; l < 32; l++) {
                    float ss = 0;
                    for (int e = 0; e < 8; e++) {
                        float v = e * 32 + l < hd ? kc_f(x[e * 32 + l]) : 0.f;
                        ss = fmaf(v, v, ss);
                    }
                    part[l] = ss;
                }
                for (int o = 16; o > 0; o >>= 1) {
                    float nx[32];
                    for (int l = 0; l < 32; l++) nx[l] = part[l] + part[l ^ o];
                    memcpy(part, nx, sizeof part);
                }
                float inv = 1.0f / sqrtf(part[0] / (float)hd + eps);
                for (int i = 0; i < hd; i++) x[i] = kc_bf(kc_f(w[i]) * kc_round(kc_f(x[i]) * inv));
            }
        int half = hd / 2;
        for (int h = 0; h < nh + nkv; h++) {
            bf16 *x = r + h * hd;
            for (int i = 0; i < half; i++) {
                float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
                float ang = (float)pos[t] * inv_freq;
                float c = kc_round(cosf(ang)), s = kc_round(sinf(ang));
                float x0 = kc_f(x[i]), x1 = kc_f(x[i + half]);
                x[i] = kc_bf(kc_round(x0 * c) + kc_round(-x1 * s));
                x[i + half] = kc_bf(kc_round(x1 * c) + kc_round(x0 * s));
            }
        }
        if (slot[t] < 0) continue;
        size_t kvl = (size_t)nkv * hd;
        memcpy(&kc[slot[t] * kvl], r + nh * hd, kvl * 2);
        memcpy(&vc[slot[t] * kvl], r + nh * hd + kvl, kvl * 2);
    }
}

template <bool NORM, int P>
static void run_qrk(bf16 *qkv, bf16 *kc, bf16 *vc, const bf16 *qw, const bf16 *kw, const int32_t *pos,
                    const int32_t *slot, int n, int nh, int nkv, int hd) {
    launch({(unsigned)n, (unsigned)((nh + 2 * nkv + 3) / 4), 1}, 128, [&] {
        kc_qk_rope_kv<NORM, P>(qkv, kc, vc, qw, kw, pos, slot, nh, nkv, hd, 1e-6f, 1e6f);
    });
}

static void check_qrk(int n, int nh, int nkv, int hd, bool norm) {
    size_t row = (size_t)(nh + 2 * nkv) * hd;
    int n_slots = 2 * n + 3;
    auto qkv = rbf(n * row, 2.0f), qw = rbf(hd, 1.0f), kw = rbf(hd, 1.0f);
    std::vector<int32_t> pos(n), slot(n);
    for (int i = 0; i < n; i++) pos[i] = (i * 977 + 5) % 40000, slot[i] = i % 4 == 2 ? -1 : (2 * i + 1) % n_slots;
    size_t cache = (size_t)n_slots * nkv * hd;
    std::vector<bf16> a = qkv, b = qkv, ka(cache, 0xffff), va(cache, 0xffff), kb(cache, 0xffff), vb(cache, 0xffff);
    const bf16 *pq = norm ? qw.data() : NULL, *pk = norm ? kw.data() : NULL;
    host_compose(b, kb, vb, pq, pk, pos.data(), slot.data(), n, nh, nkv, hd, 1e-6f, 1e6f);
    int P = hd / 32;
#define RUN(NM, PP) if (norm == NM && P == PP) run_qrk<NM, PP>(a.data(), ka.data(), va.data(), pq, pk, pos.data(), slot.data(), n, nh, nkv, hd);
    RUN(false, 2) RUN(true, 2) RUN(false, 4) RUN(true, 4) RUN(false, 6) RUN(true, 6) RUN(false, 8) RUN(true, 8)
    size_t bad = 0;
    for (size_t i = 0; i < a.size(); i++) bad += a[i] != b[i];
    for (size_t i = 0; i < cache; i++) bad += (ka[i] != kb[i]) + (va[i] != vb[i]);
    char shape[80];
    snprintf(shape, sizeof shape, "n=%d heads=%d/%d hd=%d%s", n, nh, nkv, hd, norm ? " norm" : "");
    report("qk_rope_kv == composition", shape, bad == 0, "%g of %g differ", (double)bad, (double)(a.size() + 2 * cache));
}

// ---- the decode projections: ROPE == PLAIN + rope + kv_write, RES == PLAIN + add, NORMP from
// a RES launch's statistics ~ PLAIN on add_rmsnorm's rows

static void host_rope_kv(std::vector<bf16> &qkv, std::vector<bf16> &kc, std::vector<bf16> &vc,
                         const int32_t *pos, const int32_t *slot, int n, int nh, int nkv, int hd,
                         float theta) {
    host_compose(qkv, kc, vc, NULL, NULL, pos, slot, n, nh, nkv, hd, 1e-6f, theta);
}

static void check_proj_rope(int m, int nh, int nkv, int hd, int k, bool vec, int warps, bool normp) {
    const int n = (nh + 2 * nkv) * hd, n_slots = 2 * m + 3;
    char shape[96];
    snprintf(shape, sizeof shape, "m=%d heads=%d/%d hd=%d k=%d %s w%d%s", m, nh, nkv, hd, k,
             vec ? "vec" : "scalar", warps, normp ? " normp" : "");
    auto w = rbf((size_t)n * k, 0.1f), bias = rbf(n, 0.5f), x = rbf((size_t)m * k, 1.0f), nw = rbf(k, 1.0f);
    std::vector<int32_t> pos(m), slot(m);
    for (int i = 0; i < m; i++) pos[i] = (i * 7919 + 3) % 30000, slot[i] = i % 3 == 1 ? -1 : (2 * i + 1) % n_slots;
    size_t cache = (size_t)n_slots * nkv * hd;
    std::vector<bf16> want((size_t)m * n, 0xffff), got((size_t)m * n, 0xffff);
    std::vector<bf16> kw(cache, 0xffff), vw(cache, 0xffff), kg(cache, 0xffff), vg(cache, 0xffff);
    kc_gemv_epi ep = {};
    std::vector<float> ss;
    if (normp) { // statistics as a RES launch leaves them: 16-column pieces' sums of squares
        ss.assign((size_t)m * ((k + 15) / 16), 0.f);
        for (int i = 0; i < m; i++)
            for (int q = 0; q < k; q++) ss[(size_t)i * ((k + 15) / 16) + q / 16] += kc_f(x[(size_t)i * k + q]) * kc_f(x[(size_t)i * k + q]);
        ep.ss_in = ss.data();
        run_proj<KC_GEMV_NORMP, KC_GEMV_Y>(vec, want.data(), x.data(), w.data(), bias.data(), m, n, k, warps, nw.data(), ep);
    } else {
        run_proj<KC_GEMV_PLAIN, KC_GEMV_Y>(vec, want.data(), x.data(), w.data(), bias.data(), m, n, k, warps, NULL, ep);
    }
    host_rope_kv(want, kw, vw, pos.data(), slot.data(), m, nh, nkv, hd, 1e6f);
    ep.k_cache = kg.data(), ep.v_cache = vg.data(), ep.positions = pos.data(), ep.slots = slot.data();
    ep.n_heads = nh, ep.n_kv_heads = nkv, ep.head_dim = hd, ep.theta = 1e6f;
    if (normp)
        run_proj<KC_GEMV_NORMP, KC_GEMV_ROPE>(vec, got.data(), x.data(), w.data(), bias.data(), m, n, k, warps, nw.data(), ep);
    else
        run_proj<KC_GEMV_PLAIN, KC_GEMV_ROPE>(vec, got.data(), x.data(), w.data(), bias.data(), m, n, k, warps, NULL, ep);
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); i++) bad += got[i] != want[i];
    for (size_t i = 0; i < cache; i++) bad += (kg[i] != kw[i]) + (vg[i] != vw[i]);
    report("proj rope == gemv+rope+kv", shape, bad == 0, "%g of %g differ", (double)bad, (double)(got.size() + 2 * cache));
}

// RES (PLAIN or SILU input) against the plain launch + add_rmsnorm's add; then a NORMP launch on
// the residual and statistics it left, against PLAIN on add_rmsnorm's normed rows.
static void check_proj_res(int m, int n, int k, bool vec, int warps, bool silu, int n2) {
    char shape[96];
    snprintf(shape, sizeof shape, "m=%d n=%d k=%d %s w%d%s", m, n, k, vec ? "vec" : "scalar", warps, silu ? " silu" : "");
    auto w = rbf((size_t)n * k, 0.1f), res = rbf((size_t)m * n, 2.0f);
    auto x = rbf((size_t)m * (silu ? 2 : 1) * k, silu ? 3.0f : 1.0f);
    std::vector<bf16> y((size_t)m * n, 0xffff), want = res, got = res;
    kc_gemv_epi ep = {};
    if (silu)
        run_proj<KC_GEMV_SILU, KC_GEMV_Y>(vec, y.data(), x.data(), w.data(), NULL, m, n, k, warps, NULL, ep);
    else
        run_proj<KC_GEMV_PLAIN, KC_GEMV_Y>(vec, y.data(), x.data(), w.data(), NULL, m, n, k, warps, NULL, ep);
    for (size_t i = 0; i < want.size(); i++) want[i] = kc_bf(kc_f(res[i]) + kc_f(y[i]));
    const int parts = (n + 15) / 16;
    std::vector<float> ss((size_t)m * parts, NAN);
    ep.ss_out = ss.data();
    if (silu)
        run_proj<KC_GEMV_SILU, KC_GEMV_RES>(vec, got.data(), x.data(), w.data(), NULL, m, n, k, warps, NULL, ep);
    else
        run_proj<KC_GEMV_PLAIN, KC_GEMV_RES>(vec, got.data(), x.data(), w.data(), NULL, m, n, k, warps, NULL, ep);
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); i++) bad += got[i] != want[i];
    report("proj res == gemv+add", shape, bad == 0, "%g of %g differ", (double)bad, (double)got.size());
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int p = 0; p < parts; p++) {
            double s = 0;
            for (int j = p * 16; j < std::min(n, p * 16 + 16); j++) s += (double)kc_f(want[(size_t)i * n + j]) * kc_f(want[(size_t)i * n + j]);
            double g = ss[(size_t)i * parts + p];
            worst = std::max(worst, std::isnan(g) ? 1e30 : fabs(g - s) / (s + 1e-30));
        }
    report("proj res statistics", shape, worst < 1e-5, "max rel err %.3g over %g pieces", worst, (double)m * parts);

    // NORMP on (residual, statistics) against PLAIN on the normed rows
    auto w2 = rbf((size_t)n2 * n, 0.1f), nw = rbf(n, 1.0f), bias2 = rbf(n2, 0.5f);
    std::vector<bf16> xn((size_t)m * n), ya((size_t)m * n2, 0xffff), yb((size_t)m * n2, 0xffff);
    for (int i = 0; i < m; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += (double)kc_f(want[(size_t)i * n + j]) * kc_f(want[(size_t)i * n + j]);
        float inv = 1.0f / sqrtf((float)(s / n) + 1e-6f);
        for (int j = 0; j < n; j++) xn[(size_t)i * n + j] = kc_bf(kc_f(nw[j]) * kc_round(kc_f(want[(size_t)i * n + j]) * inv));
    }
    kc_gemv_epi ep2 = {};
    ep2.ss_in = ss.data();
    run_proj<KC_GEMV_NORMP, KC_GEMV_Y>(vec, ya.data(), got.data(), w2.data(), bias2.data(), m, n2, n, warps, nw.data(), ep2);
    run_proj<KC_GEMV_PLAIN, KC_GEMV_Y>(vec, yb.data(), xn.data(), w2.data(), bias2.data(), m, n2, n, warps, NULL, ep2);
    double num = 0, den = 0;
    size_t nan = 0, diff = 0;
    for (size_t i = 0; i < ya.size(); i++) {
        double a = kc_f(ya[i]), b = kc_f(yb[i]);
        if (std::isnan(a)) nan++;
        num += (a - b) * (a - b), den += b * b;
        diff += ya[i] != yb[i];
    }
    double rel = sqrt(num / den);
    report("proj normp ~ plain(norm)", shape, nan == 0 && rel < 2e-3, "rel L2 %.3g (%g elements differ)", rel, (double)diff);
}

int main() {
    // (m, n, k, vec, warps): partial chunks, n % 16 != 0, k % 8 != 0 (scalar), several warp counts
    check_gemv(1, 40, 384, true, warps_for(384));
    check_gemv(3, 37, 200, true, warps_for(200));
    check_gemv(8, 16, 256, true, 2);
    check_gemv(5, 33, 1104, true, 8);
    check_gemv(7, 20, 1104, true, 4);
    check_gemv(2, 21, 203, false, warps_for(203));
    check_gemv(6, 17, 130, false, 1);
    check_gemv(4, 48, 520, true, 8);
    check_qrk(3, 4, 2, 128, true);
    check_qrk(5, 3, 1, 64, false);
    check_qrk(2, 2, 2, 256, true);
    check_qrk(4, 3, 3, 192, true);
    check_qrk(3, 6, 2, 128, false);
    // (m, heads, kv heads, head_dim, k, vec, warps, normp)
    check_proj_rope(1, 4, 2, 128, 384, true, 4, false);
    check_proj_rope(3, 3, 1, 64, 256, true, 2, true);
    check_proj_rope(2, 2, 1, 32, 200, false, 2, false);
    check_proj_rope(5, 2, 2, 64, 520, true, 8, true);
    // (m, n, k, vec, warps, silu, n of the NORMP launch after)
    check_proj_res(1, 48, 384, true, 4, false, 40);
    check_proj_res(3, 37, 256, true, 2, true, 20);
    check_proj_res(2, 33, 203, false, 2, false, 17);
    check_proj_res(8, 64, 520, true, 8, true, 32);
    printf("%s: %d failures\n", failures ? "FAILED" : "all ok", failures);
    return failures ? 1 : 0;
}

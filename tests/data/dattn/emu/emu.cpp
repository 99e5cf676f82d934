// Host SIMT emulation of attention_dec.cu's kernels: 128 pthreads per block, warp collectives and
// mma.m16n8k16 emulated per the PTX fragment layouts, cp.async as an immediate copy.
#include <pthread.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <functional>
typedef uint16_t bf16;
#include "kernels/cuda/attention_dec.h"
using std::min;
using std::max;
struct d3 { unsigned x, y, z; };
static thread_local d3 threadIdx, blockIdx;
static d3 blockDim = {128, 1, 1};
static d3 gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
static float __ldcg(const float *p) { float v; __atomic_load(p, &v, __ATOMIC_ACQUIRE); return v; }
static unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
#define KC_MAX_GRID_YZ 65535
alignas(16) static unsigned char kc_dec_smem_raw[256 * 1024];

static float kc_f(bf16 h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static bf16 kc_bf(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (bf16)(u >> 16);
}
static pthread_barrier_t warp_bar[4], block_bar;
static uint32_t slots[4][32][12];
static int lane_id() { return threadIdx.x & 31; }
static int warp_id() { return threadIdx.x >> 5; }
static void __syncwarp() { pthread_barrier_wait(&warp_bar[warp_id()]); }
static void __syncthreads() { pthread_barrier_wait(&block_bar); }
static uint32_t shfl_u(uint32_t v, int src) {
    int w = warp_id(), l = lane_id();
    slots[w][l][0] = v;
    __syncwarp();
    uint32_t r = slots[w][src & 31][0];
    __syncwarp();
    return r;
}
static float __shfl_xor_sync(unsigned, float v, int o) {
    uint32_t u; memcpy(&u, &v, 4); u = shfl_u(u, lane_id() ^ o); float f; memcpy(&f, &u, 4); return f;
}
static float __shfl_sync(unsigned, float v, int src) {
    uint32_t u; memcpy(&u, &v, 4); u = shfl_u(u, src); float f; memcpy(&f, &u, 4); return f;
}
static float kc_warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0, v, o)); return v; }
static float kc_warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0, v, o); return v; }

// mma.m16n8k16.row.col f32.bf16: PTX fragment layouts (g = lane / 4, t = lane % 4).
static float half_of(uint32_t r, int hi) { return kc_f((bf16)(hi ? r >> 16 : r & 0xffff)); }
static void kc_mma_bf16(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                        uint32_t b1) {
    const uint32_t a[4] = {a0, a1, a2, a3};
    int w = warp_id(), l = lane_id();
    uint32_t *s = slots[w][l];
    s[0] = a[0], s[1] = a[1], s[2] = a[2], s[3] = a[3], s[4] = b0, s[5] = b1;
    __syncwarp();
    auto A = [&](int r, int k) { // A[r][k]
        int g = r & 7, t = (k & 7) >> 1, reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        return half_of(slots[w][g * 4 + t][reg], k & 1);
    };
    auto B = [&](int k, int n) { // B[k][n]
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
static uint32_t kc_pack_bf16x2(float lo, float hi) { return (uint32_t)kc_bf(lo) | ((uint32_t)kc_bf(hi) << 16); }
static int __ffs(int x) { return __builtin_ffs(x); }
static uint32_t kc_dec_ld32(const bf16 *p) { uint32_t u; memcpy(&u, p, 4); return u; }
static void kc_dec_cp16(bf16 *dst, const bf16 *src, int n) {
    if (n) memcpy(dst, src, 16); else memset(dst, 0, 16);
}
static void kc_cp_async_commit(void) {}
template <int N> static void kc_cp_async_wait(void) {}
// Programmatic dependent launch (device.h): one grid at a time here. To check that the kernel
// reads no key of this step before its wait, this step's K/V slots hold NaN at every block's
// start (g_block_start) and get their values at the wait (g_at_wait), as if the kernel that
// stores them finished then; both run on thread 0 between two block barriers.
static std::function<void()> g_block_start, g_at_wait;
static void emu_block_hook(const std::function<void()> &f) {
    pthread_barrier_wait(&block_bar);
    if (threadIdx.x == 0 && f) f();
    pthread_barrier_wait(&block_bar);
}
static void kc_pdl_wait(void) { emu_block_hook(g_at_wait); }
static void kc_pdl_trigger(void) {}
static void kc_pdl_begin(void) { kc_pdl_wait(); }

#include "kernel_body.inc"

// ---- launch: 128 threads, each runs every block in order
static void launch(d3 grid, std::function<void()> body) {
    gridDim = grid;
    pthread_barrier_init(&block_bar, NULL, 128);
    for (int w = 0; w < 4; w++) pthread_barrier_init(&warp_bar[w], NULL, 32);
    struct arg { int tid; d3 grid; std::function<void()> *body; };
    std::vector<pthread_t> th(128);
    std::vector<arg> args(128);
    for (int i = 0; i < 128; i++) {
        args[i] = {i, grid, &body};
        pthread_create(&th[i], NULL, [](void *p) -> void * {
            arg *a = (arg *)p;
            threadIdx = {(unsigned)a->tid, 0, 0};
            for (unsigned z = 0; z < a->grid.z; z++)
                for (unsigned y = 0; y < a->grid.y; y++)
                    for (unsigned x = 0; x < a->grid.x; x++) {
                        blockIdx = {x, y, z};
                        emu_block_hook(g_block_start);
                        (*a->body)();
                        pthread_barrier_wait(&block_bar);
                    }
            return NULL;
        }, &args[i]);
    }
    for (auto &t : th) pthread_join(t, NULL);
    pthread_barrier_destroy(&block_bar);
    for (int w = 0; w < 4; w++) pthread_barrier_destroy(&warp_bar[w]);
}

// ---- the launcher's host logic (as in kern_cuda__attention_dec)
template <int D>
static void run_dec(bf16 *out, const bf16 *qkv, const bf16 *kc, const bf16 *vc, int n_seqs,
                    int n_tokens, const int32_t *qs, const int32_t *lens, const int32_t *tab,
                    int mbps, int max_q, int max_len, int nh, int nkv, int bs, float scale,
                    float *scratch, size_t scratch_bytes, int n_sm, int *splits_out, int fused) {
    int group = nh / nkv, gp = group < 16 ? group : 16, n_parts = (group + gp - 1) / gp, tq = 16 / gp;
    int q_tiles = (max_q + tq - 1) / tq;
    long blocks = (long)q_tiles * n_seqs * nkv * n_parts;
    size_t per_split = (size_t)n_tokens * nh * (D + 2) * 4;
    int split_len;
    int n_splits = kern_cuda_dec_splits((int)blocks, max_len, per_split, scratch ? scratch_bytes : 0, n_sm, &split_len);
    *splits_out = n_splits;
    float *partial = n_splits > 1 ? scratch : NULL;
    fused = fused && partial;
    float sl = scale * 1.4426950408889634f;
    launch({(unsigned)(q_tiles * n_splits), (unsigned)n_seqs, (unsigned)(nkv * n_parts)}, [&] {
        kc_attention_dec<D>(out, qkv, kc, vc, qs, lens, tab, mbps, nh, nkv, bs, gp, n_parts, tq, sl,
                            n_splits, split_len, partial, fused);
    });
    g_block_start = g_at_wait = nullptr;
    if (partial && !fused)
        launch({(unsigned)n_tokens, (unsigned)((nh + 3) / 4), 1}, [&] {
            kc_dec_combine<D>(out, partial, nh, n_splits);
        });
}

static uint64_t rs = 88172645463325252ull;
static float urand() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 40) * (1.0 / (1ull << 24))) * 2 - 1; }

struct cas { int nh, nkv, hd, bs, n; int q[8], len[8]; int n_sm; bool split; };
static int g_fused = 0; // the fused combine (kc_dec_tickets) instead of kc_dec_combine

static int check(const cas &c) {
    int nh = c.nh, nkv = c.nkv, hd = c.hd, bs = c.bs;
    int32_t qs[9], lens[8]; int ntok = 0, maxq = 0, maxlen = 0, mb = 0, nblocks = 0;
    qs[0] = 0;
    for (int i = 0; i < c.n; i++) { ntok += c.q[i]; qs[i + 1] = ntok; lens[i] = c.len[i]; int nb = (c.len[i] + bs - 1) / bs; nblocks += nb; mb = max(mb, nb); maxq = max(maxq, c.q[i]); maxlen = max(maxlen, c.len[i]); }
    mb += 1; nblocks += 3;
    std::vector<int32_t> perm(nblocks); for (int i = 0; i < nblocks; i++) perm[i] = i;
    for (int i = nblocks - 1; i > 0; i--) { int j = (int)((rs = rs * 6364136223846793005ull + 1) >> 33) % (i + 1); std::swap(perm[i], perm[j]); }
    std::vector<int32_t> tab((size_t)c.n * mb, 0);
    for (int i = 0, u = 0; i < c.n; i++) for (int b = 0; b < (c.len[i] + bs - 1) / bs; b++) tab[i * mb + b] = perm[u++];
    size_t row = (size_t)(nh + 2 * nkv) * hd, cache = (size_t)nblocks * bs * nkv * hd;
    std::vector<bf16> qkv(ntok * row), kc(cache), vc(cache), out((size_t)ntok * nh * hd, 0xffff);
    for (auto &x : qkv) x = kc_bf(urand() * 3); for (auto &x : kc) x = kc_bf(urand()); for (auto &x : vc) x = kc_bf(urand());
    // NaN in every cache slot past a sequence's end and in the blocks no sequence owns: the
    // kernel must never read them into a result.
    std::vector<char> used_slot((size_t)nblocks * bs, 0);
    for (int i = 0; i < c.n; i++)
        for (int k = 0; k < c.len[i]; k++) used_slot[(size_t)tab[i * mb + k / bs] * bs + k % bs] = 1;
    for (size_t sl = 0; sl < used_slot.size(); sl++)
        if (!used_slot[sl])
            for (int e = 0; e < nkv * hd; e++) kc[sl * nkv * hd + e] = vc[sl * nkv * hd + e] = 0x7fc0;
    // This step's slots (each sequence's last q positions): NaN until the kernel's PDL wait.
    std::vector<size_t> step_slots;
    for (int i = 0; i < c.n; i++)
        for (int k = c.len[i] - c.q[i]; k < c.len[i]; k++)
            step_slots.push_back((size_t)tab[i * mb + k / bs] * bs + k % bs);
    const std::vector<bf16> kc_final = kc, vc_final = vc;
    g_block_start = [&] {
        for (size_t sl : step_slots)
            for (int e = 0; e < nkv * hd; e++) kc[sl * nkv * hd + e] = vc[sl * nkv * hd + e] = 0x7fc0;
    };
    g_at_wait = [&] { kc = kc_final, vc = vc_final; };
    float scale = 1.0f / sqrtf((float)hd);
    size_t sbytes = (size_t)64 << 20; std::vector<float> scratch(sbytes / 4, NAN);
    int splits;
    if (hd == 64) run_dec<64>(out.data(), qkv.data(), kc.data(), vc.data(), c.n, ntok, qs, lens, tab.data(), mb, maxq, maxlen, nh, nkv, bs, scale, c.split ? scratch.data() : NULL, c.split ? sbytes : 0, c.n_sm, &splits, g_fused);
    else run_dec<128>(out.data(), qkv.data(), kc.data(), vc.data(), c.n, ntok, qs, lens, tab.data(), mb, maxq, maxlen, nh, nkv, bs, scale, c.split ? scratch.data() : NULL, c.split ? sbytes : 0, c.n_sm, &splits, g_fused);
    // reference
    double num = 0, den = 0; size_t nan = 0;
    int group = nh / nkv;
    for (int s = 0; s < c.n; s++) for (int t = 0; t < c.q[s]; t++) {
        int tok = qs[s] + t, pos = lens[s] - c.q[s] + t;
        for (int h = 0; h < nh; h++) {
            int kvh = h / group;
            std::vector<double> sc(pos + 1); double mx = -1e300;
            for (int k = 0; k <= pos; k++) {
                size_t slot = (size_t)tab[s * mb + k / bs] * bs + k % bs;
                double d = 0; for (int i = 0; i < hd; i++) d += (double)kc_f(qkv[tok * row + h * hd + i]) * kc_f(kc[(slot * nkv + kvh) * hd + i]);
                sc[k] = d * scale; mx = std::max(mx, sc[k]);
            }
            double sum = 0; for (auto &x : sc) { x = exp(x - mx); sum += x; }
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int k = 0; k <= pos; k++) { size_t slot = (size_t)tab[s * mb + k / bs] * bs + k % bs; o += sc[k] * kc_f(vc[(slot * nkv + kvh) * hd + i]); }
                o /= sum;
                float g = kc_f(out[(size_t)tok * nh * hd + h * hd + i]);
                if (!std::isfinite(g)) nan++;
                num += (g - o) * (g - o); den += o * o;
            }
        }
    }
    double rel = sqrt(num / den);
    printf("h=%d/%d hd=%d bs=%d n=%d split=%d (n_sm %d)%s -> splits %d: rel %.3e nan %zu %s\n", nh, nkv, hd, bs, c.n, c.split, c.n_sm, g_fused ? " fused" : "", splits, rel, nan, rel < 1e-2 && !nan ? "ok" : "FAIL");
    return rel < 1e-2 && !nan;
}

int main() {
    cas cases[] = {
        {28, 4, 128, 16, 8, {1, 1, 1, 1, 1, 1, 1, 1}, {1, 15, 16, 17, 63, 64, 65, 300}, 132, true},
        {28, 4, 128, 16, 8, {1, 1, 1, 1, 1, 1, 1, 1}, {1, 15, 16, 17, 63, 64, 65, 300}, 1000, true},
        {28, 4, 128, 16, 8, {1, 1, 1, 1, 1, 1, 1, 1}, {1, 15, 16, 17, 63, 64, 65, 300}, 132, false},
        {32, 8, 128, 32, 3, {1, 1, 1}, {31, 32, 400}, 1000, true},
        {4, 4, 64, 16, 2, {40, 1}, {140, 41}, 1000, true},
        {4, 4, 64, 16, 2, {40, 1}, {140, 41}, 132, false},
        {28, 4, 128, 16, 3, {5, 1, 9}, {5, 300, 230}, 1000, true},
        {40, 1, 64, 16, 2, {1, 1}, {33, 300}, 1000, true},
        {8, 2, 64, 4, 3, {1, 1, 1}, {3, 90, 255}, 1000, true},
        {8, 2, 64, 12, 3, {1, 3, 1}, {3, 90, 255}, 1000, true}, // a block size not a power of 2
        {32, 8, 128, 16, 4, {2, 7, 1, 3}, {2, 200, 64, 67}, 132, true},
    };
    int ok = 0, n = 2 * (int)(sizeof cases / sizeof *cases);
    for (g_fused = 0; g_fused < 2; g_fused++)
        for (auto &c : cases) ok += check(c);
    for (unsigned t : kc_dec_tickets) // every ticket back at zero after the fused launches
        if (t) { printf("FAIL: a ticket left at %u\n", t); return 1; }
    printf("%d/%d ok\n", ok, n);
    return ok == n ? 0 : 1;
}

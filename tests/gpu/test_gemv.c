// The thin-GEMM kernel (kern_cuda_gemv), the GEMM tuner that chooses it (kern_cuda_gemm at
// m <= 8) and bias_add, on random data:
// - every decode shape of Qwen2.5-7B and Qwen3-8B (qkv, wo, gate_up, down; logits in float32)
//   at m = 1, 2, 4, 8, against the CPU backend's op (multi-threaded, fast enough at these sizes);
// - odd shapes against the float64 reference and the CPU op: n and k not multiples of 8, 64, 256
//   or 16 (the tile), k % 8 != 0 and a misaligned x (the element-wise path), a partial last chunk
//   of k, tiny n and k, every m from 1 to 8, with and without bias, bf16 and float32 out;
// - the tuned path (kern_cuda_gemm, and KEEL_GEMV=force so the gemv runs whatever the timing
//   says) at m = 1..8 including every m of the bucket 5..8;
// - bad arguments.
// Outputs are poisoned (NaN) first, so an unwritten element fails. Tolerances (relative L2): 1e-2
// for bf16 outputs, 1e-4 for float32 (bf16 inputs, float32 accumulation), as in test_ops.c.
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/gpu/gpu_ref.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

#define TOL_BF16 1e-2
#define TOL_F32 1e-4

static const struct kern_ops *ref = &gpu_ref_ops;
static const struct kern_ops *cpu = &kern_cpu_ops;

enum gv_via { GV_KERNEL, GV_GEMM }; // kern_cuda_gemv directly, or the tuned kern_cuda_gemm

// A weight matrix and bias on both sides, made once per shape and shared by its cases.
struct gv_weights {
    int n, k;
    bf16 *w, *b;     // host: [n, k], [n]
    bf16 *d_w, *d_b; // device copies
};

static struct gv_weights gv_weights_make(int n, int k, uint64_t seed) {
    struct gv_weights g = {.n = n, .k = k};
    g.w = gt_rand_bf16((size_t)n * k, 0.05f, &seed);
    g.b = gt_rand_bf16(n, 0.5f, &seed);
    g.d_w = gt_up(g.w, (size_t)n * k * 2);
    g.d_b = gt_up(g.b, (size_t)n * 2);
    return g;
}

static void gv_weights_free(struct gv_weights *g) {
    gt_free(g->d_w), gt_free(g->d_b);
    free(g->w), free(g->b);
}

// One case: y = x . w^T (+ bias) on the GPU against the CPU op, and against the float64
// reference when `with_ref` (small shapes: the reference is a single-threaded double loop).
// x_off shifts x by that many elements in its device buffer (misalignment).
static void check_case(const struct gv_weights *g, int m, int bias, int f32, int x_off,
                       enum gv_via via, int with_ref, uint64_t seed) {
    int n = g->n, k = g->k;
    bf16 *x = gt_rand_bf16((size_t)m * k + x_off, 1.0f, &seed);
    size_t out_bytes = (size_t)m * n * (f32 ? 4 : 2);
    void *want = malloc(out_bytes), *got = malloc(out_bytes);
    bf16 *d_xbuf = gt_up(x, ((size_t)m * k + x_off) * 2), *d_x = d_xbuf + x_off;
    void *d_y = gt_dev(out_bytes);
    gt_poison(d_y, out_bytes);
    const bf16 *bp = bias ? g->d_b : NULL;
    if (via == GV_KERNEL)
        CHECK_OK(kern_cuda_gemv(d_y, f32, d_x, g->d_w, bp, m, n, k, 0, kern_cuda_stream(gt_ctx())));
    else if (f32)
        CHECK_OK(kern_cuda_gemm_f32(gt_ctx(), d_y, d_x, g->d_w, m, n, k));
    else
        CHECK_OK(kern_cuda_gemm(gt_ctx(), d_y, d_x, g->d_w, bp, m, n, k));
    gt_sync();
    gt_down(got, d_y, out_bytes);

    const bf16 *xh = x + x_off, *bh = bias ? g->b : NULL;
    char shape[96];
    snprintf(shape, sizeof shape, "m=%d n=%d k=%d%s%s%s", m, n, k, bias ? " +bias" : "",
             x_off ? " x+1" : "", via == GV_GEMM ? " tuned" : "");
    size_t count = (size_t)m * n;
    if (f32) {
        if (with_ref) {
            ref->gemm_f32(NULL, want, xh, g->w, m, n, k);
            gt_row("gemv_f32", shape, gt_cmp_f32(got, want, count), TOL_F32);
        }
        CHECK_OK(cpu->gemm_f32(gt_cpu(), want, xh, g->w, m, n, k));
        gt_row("gemv_f32 ~cpu", shape, gt_cmp_f32(got, want, count), TOL_F32);
    } else {
        if (with_ref) {
            ref->gemm(NULL, want, xh, g->w, bh, m, n, k);
            gt_row("gemv", shape, gt_cmp_bf16(got, want, count), TOL_BF16);
        }
        CHECK_OK(cpu->gemm(gt_cpu(), want, xh, g->w, bh, m, n, k));
        gt_row("gemv ~cpu", shape, gt_cmp_bf16(got, want, count), TOL_BF16);
    }
    gt_free(d_xbuf), gt_free(d_y);
    free(x), free(want), free(got);
}

// A shape with fresh weights, one case per m in ms[0..n_ms).
static void check_gemv_ms(const int *ms, int n_ms, int n, int k, int bias, int f32, int x_off,
                          enum gv_via via, int with_ref, uint64_t seed) {
    struct gv_weights g = gv_weights_make(n, k, seed);
    for (int i = 0; i < n_ms; i++)
        check_case(&g, ms[i], bias, f32, x_off, via, with_ref, seed + 1000 + (uint64_t)i);
    gv_weights_free(&g);
}

static void check_gemv(int m, int n, int k, int bias, int f32, int x_off, enum gv_via via,
                       int with_ref, uint64_t seed) {
    check_gemv_ms(&m, 1, n, k, bias, f32, x_off, via, with_ref, seed);
}

// ---- the kernel at the models' decode shapes

struct gv_shape {
    int n, k, bias, f32;
};

static const struct gv_shape gv_models[] = {
    {4608, 3584, 1, 0},   // Qwen2.5-7B qkv (+ bias)
    {3584, 3584, 0, 0},   // wo
    {37888, 3584, 0, 0},  // gate_up
    {3584, 18944, 0, 0},  // down
    {152064, 3584, 0, 1}, // logits, float32
    {6144, 4096, 0, 0},   // Qwen3-8B qkv
    {4096, 4096, 0, 0},   // wo
    {24576, 4096, 0, 0},  // gate_up
    {4096, 12288, 0, 0},  // down
    {151936, 4096, 0, 1}, // logits
};

TEST_TIMEOUT(gpu_gemv_models, 300) {
    const int ms[] = {1, 2, 4, 8}, ends[] = {1, 8}; // logits: the two ends suffice
    uint64_t seed = 100;
    for (size_t s = 0; s < sizeof gv_models / sizeof gv_models[0]; s++) {
        const struct gv_shape *g = &gv_models[s];
        check_gemv_ms(g->f32 ? ends : ms, g->f32 ? 2 : 4, g->n, g->k, g->bias, g->f32, 0, GV_KERNEL,
                      0, seed++);
    }
}

// ---- odd shapes: every path of the kernel, against the float64 reference too

TEST(gpu_gemv_odd) {
    uint64_t seed = 200;
    for (int m = 1; m <= 8; m++) {
        check_gemv(m, 77, 33, m & 1, 0, 0, GV_KERNEL, 1, seed++);       // k % 8 != 0: element-wise
        check_gemv(m, 1001, 264, !(m & 1), 0, 0, GV_KERNEL, 1, seed++); // k % 128 = 8: tail
    }
    check_gemv(3, 129, 1030, 1, 0, 0, GV_KERNEL, 1, seed++);  // k % 8 = 6, n % 16 = 1
    check_gemv(8, 4099, 4104, 0, 0, 0, GV_KERNEL, 1, seed++); // n, k just past 4096
    check_gemv(5, 300, 520, 1, 0, 1, GV_KERNEL, 1, seed++);   // x misaligned by one element
    check_gemv(1, 1, 1, 1, 0, 0, GV_KERNEL, 1, seed++);
    check_gemv(8, 16, 8, 0, 0, 0, GV_KERNEL, 1, seed++);
    check_gemv(2, 15, 96, 1, 0, 0, GV_KERNEL, 1, seed++);   // one warp (k < one chunk)
    check_gemv(7, 2000, 72, 0, 1, 0, GV_KERNEL, 1, seed++); // float32 out, odd sizes
    check_gemv(4, 1003, 1031, 0, 1, 0, GV_KERNEL, 1, seed++);
    check_gemv(1, 152, 8200, 1, 0, 0, GV_KERNEL, 1, seed++); // long k: 8 warps, many chunks
}

// ---- the tuned GEMM at m <= 8

TEST(gpu_gemv_tuned) {
    uint64_t seed = 300;
    const int all[] = {1, 2, 3, 4, 5, 6, 7, 8}; // the bucket 8 serves 5..8
    check_gemv_ms(all, 8, 4608, 3584, 1, 0, 0, GV_GEMM, 0, seed++);
    check_gemv(3, 1001, 264, 1, 0, 0, GV_GEMM, 1, seed++);
    check_gemv(8, 151936, 1024, 0, 1, 0, GV_GEMM, 0, seed++);
    check_gemv(6, 77, 33, 1, 0, 0, GV_GEMM, 1, seed++);
}

TEST(gpu_gemv_forced) {
    // Forced: every m <= 8 plan runs the gemv (no timing, no check against cuBLASLt).
    setenv("KEEL_GEMV", "force", 1);
    uint64_t seed = 400;
    const int some[] = {1, 4, 7};
    check_gemv_ms(some, 3, 3584, 3584, 1, 0, 0, GV_GEMM, 0, seed++);
    check_gemv(8, 4099, 4104, 1, 0, 0, GV_GEMM, 1, seed++);
    check_gemv(2, 2000, 72, 0, 1, 0, GV_GEMM, 1, seed++);
    check_gemv(9, 300, 520, 1, 0, 0, GV_GEMM, 1, seed++); // m > 8: cuBLASLt even when forced
    unsetenv("KEEL_GEMV");
}

TEST(gpu_gemv_off) {
    // KEEL_GEMV=0 and KEEL_GEMM_TUNE=0: the heuristic's pick, as before the tuner.
    setenv("KEEL_GEMV", "0", 1);
    setenv("KEEL_GEMM_TUNE", "0", 1);
    uint64_t seed = 500;
    check_gemv(4, 4608, 3584, 1, 0, 0, GV_GEMM, 0, seed++);
    check_gemv(3, 1001, 264, 1, 0, 0, GV_GEMM, 1, seed++);
    unsetenv("KEEL_GEMV");
    unsetenv("KEEL_GEMM_TUNE");
}

// ---- bias_add (the plain GEMM + bias path the tuner may pick at prefill sizes)

static void check_bias_add(int m, int n, int off, uint64_t seed) {
    bf16 *y = gt_rand_bf16((size_t)m * n + off, 2.0f, &seed), *b = gt_rand_bf16(n, 0.5f, &seed);
    bf16 *want = malloc((size_t)m * n * 2), *got = malloc((size_t)m * n * 2);
    for (size_t i = 0; i < (size_t)m * n; i++)
        want[i] = f32_to_bf16(bf16_to_f32(y[off + i]) + bf16_to_f32(b[i % n]));
    bf16 *d_y = gt_up(y, ((size_t)m * n + off) * 2), *d_b = gt_up(b, n * 2);
    CHECK_OK(kern_cuda_bias_add(d_y + off, d_b, m, n, kern_cuda_stream(gt_ctx())));
    gt_sync();
    gt_down(got, d_y + off, (size_t)m * n * 2);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)m * n; i++)
        bad += got[i] != want[i];
    char shape[64];
    snprintf(shape, sizeof shape, "m=%d n=%d%s", m, n, off ? " y+1" : "");
    gt_row_exact("bias_add", shape, bad);
    gt_free(d_y), gt_free(d_b);
    free(y), free(b), free(want), free(got);
}

TEST(gpu_bias_add) {
    check_bias_add(7, 4608, 0, 600);  // 16-byte path
    check_bias_add(3, 4608, 1, 601);  // misaligned y: element path
    check_bias_add(5, 1001, 0, 602);  // n % 8 != 0
    check_bias_add(70000, 8, 0, 603); // more rows than a grid's y dimension
    check_bias_add(1, 1, 0, 604);
}

// ---- bad arguments

TEST(gpu_gemv_errors) {
    bf16 *buf = gt_dev(1 << 16);
    cudaStream_t s = kern_cuda_stream(gt_ctx());
    CHECK_EQ(kern_cuda_gemv(buf, 0, buf, buf, NULL, 9, 8, 8, 0, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_gemv(buf, 0, buf, buf, NULL, -1, 8, 8, 0, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_gemv(buf, 0, buf, buf, NULL, 1, 0, 8, 0, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_gemv(buf, 0, buf, buf, NULL, 1, 8, 0, 0, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_gemv(buf, 0, buf, buf, NULL, 1, 8, 8, 9, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_gemv(buf, 0, buf, buf, NULL, 1, 8, 8, -1, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_bias_add(buf, buf, -1, 8, s), ERR_INVAL);
    CHECK_EQ(kern_cuda_bias_add(buf, buf, 1, 0, s), ERR_INVAL);
    // m = 0 is a no-op: the poisoned output stays untouched.
    gt_poison(buf, 64);
    CHECK_OK(kern_cuda_gemv(buf, 0, buf + 512, buf + 1024, NULL, 0, 8, 8, 0, s));
    gt_sync();
    uint8_t host[64];
    gt_down(host, buf, 64);
    for (int i = 0; i < 64; i++)
        CHECK_EQ(host[i], 0xff);
    gt_free(buf);
}

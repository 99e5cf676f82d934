// CPU GEMM: y[m, n] = x[m, k] · w[n, k]^T (+ bias[n]), bf16 or float32 out, float32 accumulation.
//
// Both operands are contiguous over k (x rows, weight rows), so every output is a dot product of
// two contiguous rows. Threads split n (the weight rows) in groups of 4, so each thread streams
// its own slice of the weights once per block of x rows. A block of up to 16 x rows is converted
// to float32 once into the thread's scratch; the weights are converted on the fly inside the
// 4-row micro-kernel, which keeps eight-lane partial sums in vector registers.
// The order of the additions for one output depends only on k, never on m, n or the thread
// count, so a row's result is the same whether it runs alone or in a batch.
#include "common/err.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"

#include <string.h>

#define GEMM_NR 4    // weight rows per micro-kernel
#define GEMM_MB 16   // x rows per converted block
#define GEMM_LANES 8 // partial sums per dot product

struct gemm_job {
    struct kern_ctx *c;
    bf16 *y16;        // [m, n] or NULL
    float *y32;       // [m, n] or NULL
    const bf16 *x;    // [m, k]
    const bf16 *w;    // [n, k]
    const bf16 *bias; // [n] or NULL
    int m, n, k, mb;
};

// ---- micro-kernels

// Eight float32 lanes (GCC vector extensions: one AVX register, or two SSE ones). The helpers
// below are static and inlined, so the ABI of passing such vectors (-Wpsabi) never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float v8f __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef uint16_t v8h __attribute__((vector_size(16)));

static inline v8f load_f32x8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

// bf16 is the top half of a float32: widen, shift, reinterpret.
static inline v8f load_bf16x8(const bf16 *p) {
    v8h h;
    memcpy(&h, p, sizeof h);
    v8u u = __builtin_convertvector(h, v8u) << 16;
    v8f v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static inline float sum_lanes(const v8f *v) {
    v8f a = *v;
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

// The micro-kernels are compiled twice, for AVX2+FMA and for baseline x86-64, and the loader
// picks one per machine (GCC target_clones), so one binary runs everywhere at full width.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GEMM_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define GEMM_CLONES
#endif

// out[r] = xf · w_r for four weight rows w_0..w_3.
GEMM_CLONES static void dot_x4(const float *xf /* [k] */, const bf16 *w /* [4, k] */, int k,
                               float out[4]) {
    const bf16 *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int kk = 0;
    for (; kk + GEMM_LANES <= k; kk += GEMM_LANES) {
        v8f xv = load_f32x8(xf + kk);
        a0 += xv * load_bf16x8(w0 + kk);
        a1 += xv * load_bf16x8(w1 + kk);
        a2 += xv * load_bf16x8(w2 + kk);
        a3 += xv * load_bf16x8(w3 + kk);
    }
    float s0 = sum_lanes(&a0), s1 = sum_lanes(&a1), s2 = sum_lanes(&a2), s3 = sum_lanes(&a3);
    for (; kk < k; kk++) {
        float xv = xf[kk];
        s0 += xv * bf16_to_f32(w0[kk]);
        s1 += xv * bf16_to_f32(w1[kk]);
        s2 += xv * bf16_to_f32(w2[kk]);
        s3 += xv * bf16_to_f32(w3[kk]);
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

// The same for one weight row (the tail of n).
GEMM_CLONES static float dot_x1(const float *xf /* [k] */, const bf16 *w /* [k] */, int k) {
    v8f a = {0};
    int kk = 0;
    for (; kk + GEMM_LANES <= k; kk += GEMM_LANES) a += load_f32x8(xf + kk) * load_bf16x8(w + kk);
    float s = sum_lanes(&a);
    for (; kk < k; kk++) s += xf[kk] * bf16_to_f32(w[kk]);
    return s;
}

static inline void store(const struct gemm_job *j, int i, int col, float v) {
    size_t at = (size_t)i * j->n + col;
    if (j->y32) {
        j->y32[at] = v;
    } else {
        if (j->bias) v += bf16_to_f32(j->bias[col]);
        j->y16[at] = f32_to_bf16(v);
    }
}

// ---- the threaded loop

// Items are groups of GEMM_NR weight rows; this thread owns groups [g0, g1).
static void gemm_task(void *arg, int tid, int g0, int g1) {
    const struct gemm_job *j = arg;
    float *xs = kern__cpu_scratch(j->c, tid); // [mb, k]
    int col0 = g0 * GEMM_NR, col1 = g1 * GEMM_NR < j->n ? g1 * GEMM_NR : j->n;
    for (int i0 = 0; i0 < j->m; i0 += j->mb) {
        int rows = j->m - i0 < j->mb ? j->m - i0 : j->mb;
        for (int r = 0; r < rows; r++) {
            const bf16 *xr = j->x + (size_t)(i0 + r) * j->k;
            float *dst = xs + (size_t)r * j->k;
            for (int kk = 0; kk < j->k; kk++)
                dst[kk] = bf16_to_f32(xr[kk]);
        }
        int col = col0;
        for (; col + GEMM_NR <= col1; col += GEMM_NR) {
            const bf16 *wr = j->w + (size_t)col * j->k;
            for (int r = 0; r < rows; r++) {
                float o[GEMM_NR];
                dot_x4(xs + (size_t)r * j->k, wr, j->k, o);
                for (int q = 0; q < GEMM_NR; q++)
                    store(j, i0 + r, col + q, o[q]);
            }
        }
        for (; col < col1; col++)
            for (int r = 0; r < rows; r++)
                store(j, i0 + r, col,
                      dot_x1(xs + (size_t)r * j->k, j->w + (size_t)col * j->k, j->k));
    }
}

static int gemm_run(struct kern_ctx *c, bf16 *y16, float *y32, const bf16 *x, const bf16 *w,
                    const bf16 *bias, int m, int n, int k) {
    if (m < 0 || n <= 0 || k <= 0)
        return err_set(ERR_INVAL, "cpu gemm: bad shape m=%d n=%d k=%d", m, n, k);
    if (k > KERN_CPU_SCRATCH_FLOATS)
        return err_set(ERR_INVAL, "cpu gemm: k=%d exceeds the CPU backend's limit of %d", k,
                       KERN_CPU_SCRATCH_FLOATS);
    if (m == 0) return 0;
    if (!x || !w || (!y16 && !y32)) return err_set(ERR_INVAL, "cpu gemm: NULL operand");
    struct gemm_job j = {
        .c = c, .y16 = y16, .y32 = y32, .x = x, .w = w, .bias = bias, .m = m, .n = n, .k = k};
    j.mb = KERN_CPU_SCRATCH_FLOATS / k;
    if (j.mb > GEMM_MB) j.mb = GEMM_MB;
    int groups = (n + GEMM_NR - 1) / GEMM_NR;
    // About 64k multiply-adds per thread before a second thread is worth waking.
    int64_t per_group = (int64_t)m * k * GEMM_NR;
    int min_groups = (int)(65536 / (per_group > 0 ? per_group : 1)) + 1;
    kern__cpu_parallel_for(c, groups, min_groups, gemm_task, &j);
    return 0;
}

// ---- ops

int kern__cpu_gemm(struct kern_ctx *c, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *bias,
                   int m, int n, int k) {
    return gemm_run(c, y, NULL, x, w, bias, m, n, k);
}

int kern__cpu_gemm_f32(struct kern_ctx *c, float *y, const bf16 *x, const bf16 *w, int m, int n,
                       int k) {
    return gemm_run(c, NULL, y, x, w, NULL, m, n, k);
}

// The CPU reference ops (kernels/ops.h) and their table, kern_cpu_ops. bf16 storage, float32
// arithmetic, each result rounded to bf16 once where it is stored. Where Hugging Face rounds in
// between (RMSNorm casts the normalised row to bf16 before multiplying the weight; the residual
// sum is bf16), these ops round at the same places, so they match HF's bf16 run step for step.
// GEMM lives in gemm.c, attention in attention.c, the thread pool in pool.c.
#include "common/err.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

// ---- embedding and row copies

static int cpu_embed(struct kern_ctx *c, bf16 *out, const int32_t *ids, const bf16 *table, int n,
                     int dim) {
    if (n < 0 || dim <= 0) return err_set(ERR_INVAL, "cpu embed: bad shape n=%d dim=%d", n, dim);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0) return err_set(ERR_INVAL, "cpu embed: token %d has id %d", i, ids[i]);
        memcpy(out + (size_t)i * dim, table + (size_t)ids[i] * dim, (size_t)dim * sizeof(bf16));
    }
    return 0;
}

static int cpu_gather_rows(struct kern_ctx *c, bf16 *out, const bf16 *x, const int32_t *rows, int m,
                           int dim) {
    if (m < 0 || dim <= 0)
        return err_set(ERR_INVAL, "cpu gather_rows: bad shape m=%d dim=%d", m, dim);
    for (int i = 0; i < m; i++) {
        if (rows[i] < 0) return err_set(ERR_INVAL, "cpu gather_rows: row %d is %d", i, rows[i]);
        memcpy(out + (size_t)i * dim, x + (size_t)rows[i] * dim, (size_t)dim * sizeof(bf16));
    }
    return 0;
}

// ---- normalisation

// out = bf16(w * bf16(x / rms(x))), as Qwen2RMSNorm computes it in bf16 models.
static void rmsnorm_row(bf16 *out, const bf16 *x, const bf16 *w, int dim, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < dim; i++) {
        float v = bf16_to_f32(x[i]);
        ss += v * v;
    }
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = 0; i < dim; i++) {
        float normed = bf16_to_f32(f32_to_bf16(bf16_to_f32(x[i]) * inv));
        out[i] = f32_to_bf16(bf16_to_f32(w[i]) * normed);
    }
}

struct norm_job {
    bf16 *out, *residual;
    const bf16 *delta, *w;
    int dim;
    float eps;
};

static void add_rmsnorm_task(void *arg, int tid, int begin, int end) {
    const struct norm_job *j = arg;
    for (int i = begin; i < end; i++) {
        bf16 *r = j->residual + (size_t)i * j->dim;
        if (j->delta) {
            const bf16 *d = j->delta + (size_t)i * j->dim;
            for (int k = 0; k < j->dim; k++)
                r[k] = f32_to_bf16(bf16_to_f32(r[k]) + bf16_to_f32(d[k]));
        }
        rmsnorm_row(j->out + (size_t)i * j->dim, r, j->w, j->dim, j->eps);
    }
}

static int cpu_add_rmsnorm(struct kern_ctx *c, bf16 *out, bf16 *residual, const bf16 *delta,
                           const bf16 *w, int n, int dim, float eps) {
    if (n < 0 || dim <= 0)
        return err_set(ERR_INVAL, "cpu add_rmsnorm: bad shape n=%d dim=%d", n, dim);
    if (out == residual || (delta && out == delta))
        return err_set(ERR_INVAL, "cpu add_rmsnorm: out may not alias residual or delta");
    struct norm_job j = {
        .out = out, .residual = residual, .delta = delta, .w = w, .dim = dim, .eps = eps};
    kern__cpu_parallel_for(c, n, 1 + 16384 / dim, add_rmsnorm_task, &j);
    return 0;
}

static int cpu_qk_norm(struct kern_ctx *c, bf16 *qkv, const bf16 *q_w, const bf16 *k_w, int n,
                       int n_heads, int n_kv_heads, int head_dim, float eps) {
    if (n < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0)
        return err_set(ERR_INVAL, "cpu qk_norm: bad shape n=%d heads=%d kv=%d head_dim=%d", n,
                       n_heads, n_kv_heads, head_dim);
    size_t stride = (size_t)(n_heads + 2 * n_kv_heads) * head_dim;
    for (int t = 0; t < n; t++) {
        bf16 *row = qkv + (size_t)t * stride;
        // In place is safe: rmsnorm_row reads every input before it writes the first output.
        for (int h = 0; h < n_heads + n_kv_heads; h++) {
            bf16 *x = row + (size_t)h * head_dim;
            bf16 tmp[KERN_CPU_MAX_HEAD_DIM];
            if (head_dim > KERN_CPU_MAX_HEAD_DIM)
                return err_set(ERR_INVAL, "cpu qk_norm: head_dim %d > %d", head_dim,
                               KERN_CPU_MAX_HEAD_DIM);
            rmsnorm_row(tmp, x, h < n_heads ? q_w : k_w, head_dim, eps);
            memcpy(x, tmp, (size_t)head_dim * sizeof(bf16));
        }
    }
    return 0;
}

// ---- rotary embedding

// HF's rotate_half: x' = x * cos + rotate_half(x) * sin, with pairs (i, i + d/2) sharing the
// frequency inv_freq[i] = 1 / theta^(2i/d), computed in float32 as transformers does.
static int cpu_rope(struct kern_ctx *c, bf16 *qkv, const int32_t *positions, int n, int n_heads,
                    int n_kv_heads, int head_dim, float theta) {
    if (n < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || head_dim % 2 ||
        head_dim > KERN_CPU_MAX_HEAD_DIM || !(theta > 0.0f))
        return err_set(ERR_INVAL, "cpu rope: bad shape n=%d heads=%d kv=%d head_dim=%d theta=%g", n,
                       n_heads, n_kv_heads, head_dim, theta);
    int half = head_dim / 2;
    size_t stride = (size_t)(n_heads + 2 * n_kv_heads) * head_dim;
    float cs[KERN_CPU_MAX_HEAD_DIM / 2], sn[KERN_CPU_MAX_HEAD_DIM / 2];
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < half; i++) {
            float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
            float a = (float)positions[t] * inv_freq;
            cs[i] = cosf(a);
            sn[i] = sinf(a);
        }
        bf16 *row = qkv + (size_t)t * stride;
        for (int h = 0; h < n_heads + n_kv_heads; h++) { // q heads, then k heads
            bf16 *x = row + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                float x0 = bf16_to_f32(x[i]), x1 = bf16_to_f32(x[i + half]);
                x[i] = f32_to_bf16(x0 * cs[i] - x1 * sn[i]);
                x[i + half] = f32_to_bf16(x1 * cs[i] + x0 * sn[i]);
            }
        }
    }
    return 0;
}

// ---- KV cache

static int cpu_kv_write(struct kern_ctx *c, bf16 *k_cache, bf16 *v_cache, const bf16 *qkv,
                        const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                        int head_dim) {
    if (n < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0)
        return err_set(ERR_INVAL, "cpu kv_write: bad shape n=%d heads=%d kv=%d head_dim=%d", n,
                       n_heads, n_kv_heads, head_dim);
    size_t stride = (size_t)(n_heads + 2 * n_kv_heads) * head_dim;
    size_t kv = (size_t)n_kv_heads * head_dim;
    for (int t = 0; t < n; t++) {
        if (slot_mapping[t] < 0) continue; // padding
        const bf16 *k = qkv + (size_t)t * stride + (size_t)n_heads * head_dim;
        memcpy(k_cache + (size_t)slot_mapping[t] * kv, k, kv * sizeof(bf16));
        memcpy(v_cache + (size_t)slot_mapping[t] * kv, k + kv, kv * sizeof(bf16));
    }
    return 0;
}

// ---- MLP

struct silu_job {
    bf16 *out;
    const bf16 *gate_up;
    int h;
};

static void silu_mul_task(void *arg, int tid, int begin, int end) {
    const struct silu_job *j = arg;
    for (int i = begin; i < end; i++) {
        const bf16 *g = j->gate_up + (size_t)i * 2 * j->h, *u = g + j->h;
        bf16 *o = j->out + (size_t)i * j->h;
        for (int k = 0; k < j->h; k++) {
            float gv = bf16_to_f32(g[k]);
            o[k] = f32_to_bf16(gv / (1.0f + expf(-gv)) * bf16_to_f32(u[k]));
        }
    }
}

static int cpu_silu_mul(struct kern_ctx *c, bf16 *out, const bf16 *gate_up, int n, int h) {
    if (n < 0 || h <= 0) return err_set(ERR_INVAL, "cpu silu_mul: bad shape n=%d h=%d", n, h);
    struct silu_job j = {.out = out, .gate_up = gate_up, .h = h};
    kern__cpu_parallel_for(c, n, 1 + 16384 / h, silu_mul_task, &j);
    return 0;
}

// ---- fused ops: on the reference backend, the compositions themselves (so they define what the
// fused kernels of other backends must compute)

static int cpu_gemm_silu(struct kern_ctx *c, bf16 *y, bf16 *hidden, const bf16 *gate_up,
                         const bf16 *w, int m, int n, int h) {
    if (m < 0 || n <= 0 || h <= 0)
        return err_set(ERR_INVAL, "cpu gemm_silu: bad shape m=%d n=%d h=%d", m, n, h);
    int rc = cpu_silu_mul(c, hidden, gate_up, m, h);
    if (rc) return rc;
    return kern__cpu_gemm(c, y, hidden, w, NULL, m, n, h);
}

static int cpu_add_rmsnorm_gemm(struct kern_ctx *c, bf16 *y, bf16 *res_out, const bf16 *residual,
                                const bf16 *delta, const bf16 *norm_w, const bf16 *w,
                                const bf16 *bias, bf16 *xn, int m, int n, int k, float eps) {
    if (m < 0 || n <= 0 || k <= 0)
        return err_set(ERR_INVAL, "cpu add_rmsnorm_gemm: bad shape m=%d n=%d k=%d", m, n, k);
    if (res_out == residual || (delta && res_out == delta))
        return err_set(ERR_INVAL, "cpu add_rmsnorm_gemm: res_out may not alias residual or delta");
    memcpy(res_out, residual, (size_t)m * k * sizeof(bf16));
    int rc = cpu_add_rmsnorm(c, xn, res_out, delta, norm_w, m, k, eps);
    if (rc) return rc;
    return kern__cpu_gemm(c, y, xn, w, bias, m, n, k);
}

static int cpu_qk_rope_kv(struct kern_ctx *c, bf16 *qkv, bf16 *k_cache, bf16 *v_cache,
                          const bf16 *q_w, const bf16 *k_w, const int32_t *positions,
                          const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                          int head_dim, float eps, float theta) {
    if ((q_w != NULL) != (k_w != NULL))
        return err_set(ERR_INVAL, "cpu qk_rope_kv: q_w and k_w must be both given or both NULL");
    int rc;
    if (q_w && (rc = cpu_qk_norm(c, qkv, q_w, k_w, n, n_heads, n_kv_heads, head_dim, eps)))
        return rc;
    if ((rc = cpu_rope(c, qkv, positions, n, n_heads, n_kv_heads, head_dim, theta))) return rc;
    return cpu_kv_write(c, k_cache, v_cache, qkv, slot_mapping, n, n_heads, n_kv_heads, head_dim);
}

// ---- copies and sync (host memory is backend memory here)

static int cpu_copy(struct kern_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) return err_set(ERR_INVAL, "cpu copy: NULL pointer");
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_sync(struct kern_ctx *c) {
    return 0;
}

static int cpu_debug_fault(struct kern_ctx *c) {
    return err_set(ERR_CUDA_FAULT, "simulated sticky device fault (KEEL_DEBUG_INJECT_FAULT, cpu "
                                   "backend)");
}

const struct kern_ops kern_cpu_ops = {
    .name = "cpu",
    .embed = cpu_embed,
    .add_rmsnorm = cpu_add_rmsnorm,
    .gemm = kern__cpu_gemm,
    .gemm_f32 = kern__cpu_gemm_f32,
    .qk_norm = cpu_qk_norm,
    .rope = cpu_rope,
    .kv_write = cpu_kv_write,
    .attention = kern__cpu_attention,
    .silu_mul = cpu_silu_mul,
    .gemm_silu = cpu_gemm_silu,
    .add_rmsnorm_gemm = cpu_add_rmsnorm_gemm,
    .qk_rope_kv = cpu_qk_rope_kv,
    .gather_rows = cpu_gather_rows,
    .copy_to_backend = cpu_copy,
    .copy_to_host = cpu_copy,
    .sample = kern__cpu_sample,
    .sync = cpu_sync,
    .debug_fault = cpu_debug_fault,
};

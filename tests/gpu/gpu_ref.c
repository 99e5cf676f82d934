// The float64 reference ops (see gpu_ref.h). Plain loops, written for clarity, not speed.
#include "tests/gpu/gpu_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int ref_embed(struct kern_ctx *c, bf16 *out, const int32_t *ids, const bf16 *table, int n,
                     int dim) {
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * dim, table + (size_t)ids[i] * dim, dim * 2);
    return 0;
}

static int ref_add_rmsnorm(struct kern_ctx *c, bf16 *out, bf16 *residual, const bf16 *delta,
                           const bf16 *w, int n, int dim, float eps) {
    for (int i = 0; i < n; i++) {
        bf16 *r = residual + (size_t)i * dim;
        double ss = 0;
        for (int j = 0; j < dim; j++) {
            if (delta)
                r[j] = f32_to_bf16(bf16_to_f32(r[j]) + bf16_to_f32(delta[(size_t)i * dim + j]));
            double x = bf16_to_f32(r[j]);
            ss += x * x;
        }
        double inv = 1.0 / sqrt(ss / dim + eps);
        for (int j = 0; j < dim; j++)
            out[(size_t)i * dim + j] =
                f32_to_bf16((float)(bf16_to_f32(r[j]) * inv * bf16_to_f32(w[j])));
    }
    return 0;
}

static int ref_gemm_any(bf16 *yb, float *yf, const bf16 *x, const bf16 *w, const bf16 *bias, int m,
                        int n, int k) {
    float *xf = malloc(sizeof(float) * (size_t)k * (m > 0 ? m : 1));
    float *wf = malloc(sizeof(float) * (size_t)k);
    for (size_t i = 0; i < (size_t)m * k; i++)
        xf[i] = bf16_to_f32(x[i]);
    for (int j = 0; j < n; j++) {
        for (int t = 0; t < k; t++)
            wf[t] = bf16_to_f32(w[(size_t)j * k + t]);
        for (int i = 0; i < m; i++) {
            double acc = bias ? bf16_to_f32(bias[j]) : 0.0;
            const float *xr = xf + (size_t)i * k;
            for (int t = 0; t < k; t++)
                acc += (double)xr[t] * wf[t];
            if (yb)
                yb[(size_t)i * n + j] = f32_to_bf16((float)acc);
            else
                yf[(size_t)i * n + j] = (float)acc;
        }
    }
    free(xf);
    free(wf);
    return 0;
}

static int ref_gemm(struct kern_ctx *c, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *bias,
                    int m, int n, int k) {
    return ref_gemm_any(y, NULL, x, w, bias, m, n, k);
}

static int ref_gemm_f32(struct kern_ctx *c, float *y, const bf16 *x, const bf16 *w, int m, int n,
                        int k) {
    return ref_gemm_any(NULL, y, x, w, NULL, m, n, k);
}

static void ref_norm_head(bf16 *x, const bf16 *w, int d, float eps) {
    double ss = 0;
    for (int j = 0; j < d; j++)
        ss += (double)bf16_to_f32(x[j]) * bf16_to_f32(x[j]);
    double inv = 1.0 / sqrt(ss / d + eps);
    for (int j = 0; j < d; j++)
        x[j] = f32_to_bf16((float)(bf16_to_f32(x[j]) * inv * bf16_to_f32(w[j])));
}

static int ref_qk_norm(struct kern_ctx *c, bf16 *qkv, const bf16 *q_w, const bf16 *k_w, int n,
                       int n_heads, int n_kv_heads, int head_dim, float eps) {
    int row = (n_heads + 2 * n_kv_heads) * head_dim;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < n_heads + n_kv_heads; h++)
            ref_norm_head(qkv + (size_t)i * row + (size_t)h * head_dim, h < n_heads ? q_w : k_w,
                          head_dim, eps);
    return 0;
}

static int ref_rope(struct kern_ctx *c, bf16 *qkv, const int32_t *positions, int n, int n_heads,
                    int n_kv_heads, int head_dim, float theta) {
    int row = (n_heads + 2 * n_kv_heads) * head_dim, half = head_dim / 2;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < n_heads + n_kv_heads; h++) {
            bf16 *x = qkv + (size_t)i * row + (size_t)h * head_dim;
            for (int p = 0; p < half; p++) {
                double ang = positions[i] * pow((double)theta, -2.0 * p / head_dim);
                double x0 = bf16_to_f32(x[p]), x1 = bf16_to_f32(x[p + half]);
                x[p] = f32_to_bf16((float)(x0 * cos(ang) - x1 * sin(ang)));
                x[p + half] = f32_to_bf16((float)(x1 * cos(ang) + x0 * sin(ang)));
            }
        }
    return 0;
}

static int ref_kv_write(struct kern_ctx *c, bf16 *k_cache, bf16 *v_cache, const bf16 *qkv,
                        const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                        int head_dim) {
    int row = (n_heads + 2 * n_kv_heads) * head_dim, kvd = n_kv_heads * head_dim;
    for (int i = 0; i < n; i++) {
        if (slot_mapping[i] < 0) continue;
        const bf16 *k = qkv + (size_t)i * row + (size_t)n_heads * head_dim;
        memcpy(k_cache + (size_t)slot_mapping[i] * kvd, k, (size_t)kvd * 2);
        memcpy(v_cache + (size_t)slot_mapping[i] * kvd, k + kvd, (size_t)kvd * 2);
    }
    return 0;
}

static int ref_attention(struct kern_ctx *c, bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                         const bf16 *v_cache, const struct kern_attn_batch *b, int n_heads,
                         int n_kv_heads, int head_dim, int block_size, float scale) {
    int row = (n_heads + 2 * n_kv_heads) * head_dim, group = n_heads / n_kv_heads;
    double *s = malloc(sizeof(double) * (size_t)(b->max_seq_len + 1));
    double *o = malloc(sizeof(double) * (size_t)head_dim);
    for (int q = 0; q < b->n_seqs; q++) {
        int qs = b->query_start[q], qlen = b->query_start[q + 1] - qs, len = b->seq_lens[q];
        const int32_t *table = b->block_tables + (size_t)q * b->max_blocks_per_seq;
        for (int t = 0; t < qlen; t++) {
            int pos = len - qlen + t;
            for (int h = 0; h < n_heads; h++) {
                const bf16 *qv = qkv + (size_t)(qs + t) * row + (size_t)h * head_dim;
                int kvh = h / group;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= pos; j++) {
                    size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
                    const bf16 *k = k_cache + (slot * n_kv_heads + kvh) * head_dim;
                    double d = 0;
                    for (int e = 0; e < head_dim; e++)
                        d += (double)bf16_to_f32(qv[e]) * bf16_to_f32(k[e]);
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (int e = 0; e < head_dim; e++)
                    o[e] = 0;
                for (int j = 0; j <= pos; j++) {
                    double p = exp(s[j] - mx);
                    sum += p;
                    size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
                    const bf16 *v = v_cache + (slot * n_kv_heads + kvh) * head_dim;
                    for (int e = 0; e < head_dim; e++)
                        o[e] += p * bf16_to_f32(v[e]);
                }
                bf16 *dst = out + (size_t)(qs + t) * n_heads * head_dim + (size_t)h * head_dim;
                for (int e = 0; e < head_dim; e++)
                    dst[e] = f32_to_bf16((float)(o[e] / sum));
            }
        }
    }
    free(s);
    free(o);
    return 0;
}

static int ref_silu_mul(struct kern_ctx *c, bf16 *out, const bf16 *gate_up, int n, int h) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < h; j++) {
            double g = bf16_to_f32(gate_up[(size_t)i * 2 * h + j]);
            double u = bf16_to_f32(gate_up[(size_t)i * 2 * h + h + j]);
            out[(size_t)i * h + j] = f32_to_bf16((float)(g / (1.0 + exp(-g)) * u));
        }
    return 0;
}

static int ref_gather_rows(struct kern_ctx *c, bf16 *out, const bf16 *x, const int32_t *rows, int m,
                           int dim) {
    for (int i = 0; i < m; i++)
        memcpy(out + (size_t)i * dim, x + (size_t)rows[i] * dim, (size_t)dim * 2);
    return 0;
}

static int ref_copy(struct kern_ctx *c, void *dst, const void *src, size_t bytes) {
    memcpy(dst, src, bytes);
    return 0;
}

static int ref_sync(struct kern_ctx *c) {
    return 0;
}

void gpu_ref_argmax(int32_t *ids, const float *logits, int m, int vocab) {
    for (int i = 0; i < m; i++) {
        int best = 0;
        for (int j = 1; j < vocab; j++)
            if (logits[(size_t)i * vocab + j] > logits[(size_t)i * vocab + best]) best = j;
        ids[i] = best;
    }
}

const struct kern_ops gpu_ref_ops = {
    .name = "ref64",
    .embed = ref_embed,
    .add_rmsnorm = ref_add_rmsnorm,
    .gemm = ref_gemm,
    .gemm_f32 = ref_gemm_f32,
    .qk_norm = ref_qk_norm,
    .rope = ref_rope,
    .kv_write = ref_kv_write,
    .attention = ref_attention,
    .silu_mul = ref_silu_mul,
    .gather_rows = ref_gather_rows,
    .copy_to_backend = ref_copy,
    .copy_to_host = ref_copy,
    .sync = ref_sync,
};

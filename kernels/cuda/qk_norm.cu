// qk_norm (Qwen3): RMSNorm over head_dim of every q head (weight q_w) and k head (weight k_w), in
// place inside the fused QKV rows; v heads are left alone. Rounding as Hugging Face's
// Qwen3RMSNorm: bf16(w * bf16(x * rsqrt(mean(x^2) + eps))).
// Layout: one warp per (token, head); each lane keeps head_dim/32 values in registers, so a head
// is read once and written once. head_dim: at most 256.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#define KC_QKN_WARPS 4
#define KC_QKN_MAX_PER_LANE 8 // head_dim <= 256

// ---- kernels

__global__ void kc_qk_norm(bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                           const bf16 *q_w /* [head_dim] */, const bf16 *k_w /* [head_dim] */,
                           int n_heads, int n_kv_heads, int head_dim, float eps) {
    kc_pdl_begin();
    int lane = threadIdx.x & 31;
    int head = blockIdx.y * KC_QKN_WARPS + (threadIdx.x >> 5);
    if (head >= n_heads + n_kv_heads) return;
    size_t row = (size_t)blockIdx.x * (n_heads + 2 * n_kv_heads) * head_dim;
    bf16 *x = qkv + row + (size_t)head * head_dim;
    const bf16 *w = head < n_heads ? q_w : k_w;
    float v[KC_QKN_MAX_PER_LANE];
    float ss = 0.0f;
#pragma unroll
    for (int e = 0; e < KC_QKN_MAX_PER_LANE; e++) {
        v[e] = e * 32 + lane < head_dim ? kc_f(x[e * 32 + lane]) : 0.0f;
        ss += v[e] * v[e];
    }
    float inv = 1.0f / sqrtf(kc_warp_sum(ss) / (float)head_dim + eps);
#pragma unroll
    for (int e = 0; e < KC_QKN_MAX_PER_LANE; e++)
        if (e * 32 + lane < head_dim)
            x[e * 32 + lane] = kc_bf(kc_f(w[e * 32 + lane]) * kc_round(v[e] * inv));
}

// ---- launchers

extern "C" int kern_cuda_qk_norm(bf16 *qkv, const bf16 *q_w, const bf16 *k_w, int n, int n_heads,
                                 int n_kv_heads, int head_dim, float eps, cudaStream_t s) {
    if (n < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0)
        return err_set(ERR_INVAL, "qk_norm: bad sizes n=%d n_heads=%d n_kv_heads=%d head_dim=%d", n,
                       n_heads, n_kv_heads, head_dim);
    if (head_dim > 32 * KC_QKN_MAX_PER_LANE)
        return err_set(ERR_UNSUPPORTED, "qk_norm: head_dim %d (at most %d)", head_dim,
                       32 * KC_QKN_MAX_PER_LANE);
    if (n == 0) return 0;
    dim3 grid(n, (n_heads + n_kv_heads + KC_QKN_WARPS - 1) / KC_QKN_WARPS);
    if (grid.y > KC_MAX_GRID_YZ) return err_set(ERR_INVAL, "qk_norm: too many heads");
    kc_launch(kc_qk_norm, grid, 32 * KC_QKN_WARPS, 0, s, qkv, q_w, k_w, n_heads, n_kv_heads,
              head_dim, eps);
    KC_LAUNCHED();
    return 0;
}

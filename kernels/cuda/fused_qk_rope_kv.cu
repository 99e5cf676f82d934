// qk_rope_kv: qk_norm (Qwen3, when q_w is given), rope and kv_write in one launch, for every
// batch size. The three ops each read and write the q and k heads of the fused QKV rows; fused,
// each head is read once, kept in registers through the norm and the rotation, and written once
// (k heads twice: back into the row, as the composition leaves it, and into the cache slot).
//
// Layout: one warp per (token, head) over the q, k and v heads of a token; lane l holds elements
// e * 32 + l of its head (e < head_dim / 32). rotate_half pairs element i with i + head_dim / 2,
// which for head_dim % 64 == 0 is register e + head_dim / 64 of the same lane, so the rotation
// needs no shuffles. Other head sizes (and head_dim > 256) are refused with ERR_UNSUPPORTED and
// the op table runs the composition instead.
//
// The arithmetic is qk_norm.cu's and rope.cu's, statement for statement (the same float32
// operations in the same order, the same roundings, the same warp reduction), so the fused op
// equals the composition bit for bit; tests/gpu/test_fused.c checks that, and checks both against
// the CPU backend's composition.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#define KC_QRK_WARPS 4
#define KC_QRK_MAX_PER_LANE 8 // head_dim <= 256

// ---- kernels

// PER_LANE = head_dim / 32 (2, 4, 6 or 8) is a template argument so that every register index is
// a constant (a runtime index would put the head in local memory).
template <bool NORM, int PER_LANE>
__global__ void __launch_bounds__(32 * KC_QRK_WARPS)
    kc_qk_rope_kv(bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                  bf16 *k_cache /* [slots, n_kv, head_dim] */, bf16 *v_cache /* same */,
                  const bf16 *q_w /* [head_dim] */, const bf16 *k_w /* [head_dim] */,
                  const int32_t *positions /* [n] */, const int32_t *slot_mapping /* [n] */,
                  int n_heads, int n_kv_heads, int head_dim, float eps, float theta) {
    kc_pdl_begin();
    const int lane = threadIdx.x & 31;
    const int head = blockIdx.y * KC_QRK_WARPS + (threadIdx.x >> 5);
    if (head >= n_heads + 2 * n_kv_heads) return;
    constexpr int HALF = PER_LANE / 2; // register e pairs with register e + HALF
    const int tok = blockIdx.x;
    bf16 *x = qkv + (size_t)tok * (n_heads + 2 * n_kv_heads) * head_dim + (size_t)head * head_dim;
    const int slot = slot_mapping[tok];
    const size_t kv_len = (size_t)n_kv_heads * head_dim;

    if (head >= n_heads + n_kv_heads) { // a v head: only the cache copy
        if (slot < 0) return;
        bf16 *vd =
            v_cache + (size_t)slot * kv_len + (size_t)(head - n_heads - n_kv_heads) * head_dim;
#pragma unroll
        for (int e = 0; e < PER_LANE; e++)
            vd[e * 32 + lane] = x[e * 32 + lane];
        return;
    }

    // Zeros past the head (registers PER_LANE..7) keep qk_norm.cu's sum of squares, term for term.
    float v[KC_QRK_MAX_PER_LANE];
#pragma unroll
    for (int e = 0; e < KC_QRK_MAX_PER_LANE; e++)
        v[e] = e < PER_LANE ? kc_f(x[e * 32 + lane]) : 0.0f;

    if (NORM) { // qk_norm.cu
        const bf16 *w = head < n_heads ? q_w : k_w;
        float ss = 0.0f;
#pragma unroll
        for (int e = 0; e < KC_QRK_MAX_PER_LANE; e++)
            ss += v[e] * v[e];
        float inv = 1.0f / sqrtf(kc_warp_sum(ss) / (float)head_dim + eps);
#pragma unroll
        for (int e = 0; e < PER_LANE; e++)
            v[e] = kc_round(kc_f(w[e * 32 + lane]) * kc_round(v[e] * inv));
    }

    // rope.cu, pair (i, i + half) with i = e * 32 + lane.
    const float pos = (float)positions[tok];
    bf16 out[PER_LANE];
#pragma unroll
    for (int e = 0; e < HALF; e++) {
        const int i = e * 32 + lane;
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        float ang = pos * inv_freq;
        float c = kc_round(cosf(ang)), s = kc_round(sinf(ang));
        float x0 = v[e], x1 = v[e + HALF];
        out[e] = kc_bf(kc_round(x0 * c) + kc_round(-x1 * s));
        out[e + HALF] = kc_bf(kc_round(x1 * c) + kc_round(x0 * s));
    }

#pragma unroll
    for (int e = 0; e < PER_LANE; e++)
        x[e * 32 + lane] = out[e];
    if (head >= n_heads && slot >= 0) { // a k head: also into the cache
        bf16 *kd = k_cache + (size_t)slot * kv_len + (size_t)(head - n_heads) * head_dim;
#pragma unroll
        for (int e = 0; e < PER_LANE; e++)
            kd[e * 32 + lane] = out[e];
    }
}

// ---- launchers

extern "C" int kern_cuda_qk_rope_kv(bf16 *qkv, bf16 *k_cache, bf16 *v_cache, const bf16 *q_w,
                                    const bf16 *k_w, const int32_t *positions,
                                    const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                                    int head_dim, float eps, float theta, cudaStream_t s) {
    if (n < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || !(theta > 0.0f) ||
        (q_w != NULL) != (k_w != NULL))
        return err_set(ERR_INVAL,
                       "qk_rope_kv: bad arguments n=%d n_heads=%d n_kv_heads=%d head_dim=%d "
                       "theta=%g (q_w and k_w both given or both NULL)",
                       n, n_heads, n_kv_heads, head_dim, (double)theta);
    if (head_dim % 64 != 0 || head_dim > 32 * KC_QRK_MAX_PER_LANE)
        return err_set(ERR_UNSUPPORTED, "qk_rope_kv: head_dim %d (a multiple of 64, at most %d)",
                       head_dim, 32 * KC_QRK_MAX_PER_LANE);
    if (n == 0) return 0;
    dim3 grid(n, (n_heads + 2 * n_kv_heads + KC_QRK_WARPS - 1) / KC_QRK_WARPS);
    if (grid.y > KC_MAX_GRID_YZ) return err_set(ERR_INVAL, "qk_rope_kv: too many heads");
    switch ((head_dim / 64) * 2 + (q_w != NULL)) {
#define KC_QRK_CASE(P, NORM)                                                                       \
    case (P / 2) * 2 + NORM:                                                                       \
        kc_launch(kc_qk_rope_kv<NORM, P>, grid, 32 * KC_QRK_WARPS, 0, s, qkv, k_cache, v_cache,    \
                  q_w, k_w, positions, slot_mapping, n_heads, n_kv_heads, head_dim, eps, theta);   \
        break;
        KC_QRK_CASE(2, 0)
        KC_QRK_CASE(2, 1)
        KC_QRK_CASE(4, 0)
        KC_QRK_CASE(4, 1)
        KC_QRK_CASE(6, 0)
        KC_QRK_CASE(6, 1)
        KC_QRK_CASE(8, 0)
        KC_QRK_CASE(8, 1)
#undef KC_QRK_CASE
    default:
        return err_set(ERR_INTERNAL, "qk_rope_kv: no kernel for head_dim %d", head_dim);
    }
    KC_LAUNCHED();
    return 0;
}

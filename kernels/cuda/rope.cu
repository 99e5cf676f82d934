// rope: rotary embedding as Hugging Face Qwen2/Qwen3/Llama apply it, in place on the q and k
// heads of the fused QKV rows. Pairs are (i, i + head_dim/2) (rotate_half).
// The arithmetic copies transformers' so greedy ids match it: inv_freq[i] = 1 / theta^(2i/d) in
// float32, angle = float(pos) * inv_freq in float32, cos and sin rounded to bf16, then each
// product and the sum rounded to bf16 (x*cos + rotate_half(x)*sin on bf16 tensors).
// Layout: one block per token, threads over (head, pair).
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

__global__ void kc_rope(bf16 *qkv /* [n, (n_heads + 2 n_kv) * head_dim] */,
                        const int32_t *positions /* [n] */, int n_heads, int n_kv_heads,
                        int head_dim, float theta) {
    kc_pdl_begin();
    int half = head_dim / 2;
    int n_pairs = (n_heads + n_kv_heads) * half;
    bf16 *row = qkv + (size_t)blockIdx.x * (n_heads + 2 * n_kv_heads) * head_dim;
    float pos = (float)positions[blockIdx.x];
    for (int p = threadIdx.x; p < n_pairs; p += blockDim.x) {
        int head = p / half, i = p % half;
        float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        float ang = pos * inv_freq;
        float c = kc_round(cosf(ang)), s = kc_round(sinf(ang));
        bf16 *x = row + (size_t)head * head_dim;
        float x0 = kc_f(x[i]), x1 = kc_f(x[i + half]);
        x[i] = kc_bf(kc_round(x0 * c) + kc_round(-x1 * s));
        x[i + half] = kc_bf(kc_round(x1 * c) + kc_round(x0 * s));
    }
}

// ---- launchers

extern "C" int kern_cuda_rope(bf16 *qkv, const int32_t *positions, int n, int n_heads,
                              int n_kv_heads, int head_dim, float theta, cudaStream_t s) {
    if (n < 0 || n_heads <= 0 || n_kv_heads < 0 || head_dim <= 0 || head_dim % 2 != 0 ||
        !(theta > 0.0f))
        return err_set(ERR_INVAL,
                       "rope: bad sizes n=%d n_heads=%d n_kv_heads=%d head_dim=%d theta=%g", n,
                       n_heads, n_kv_heads, head_dim, (double)theta);
    if (n == 0) return 0;
    int pairs = (n_heads + n_kv_heads) * head_dim / 2;
    int threads = pairs < 256 ? (pairs + 31) / 32 * 32 : 256;
    kc_launch(kc_rope, n, threads, 0, s, qkv, positions, n_heads, n_kv_heads, head_dim, theta);
    KC_LAUNCHED();
    return 0;
}

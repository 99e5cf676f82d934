// kv_write: copies each token's k and v (from the fused QKV rows) into its cache slot; a negative
// slot means "do not store" (padding). Cache layout per layer: [n_blocks, block_size, n_kv,
// head_dim], slot = block_id * block_size + offset. One block per token; 16-byte vectors when
// the rows allow it (every real model), else 2-byte copies.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

template <typename T>
__global__ void kc_kv_write(T *k_cache, T *v_cache, const T *qkv /* [n, row] */,
                            const int32_t *slot_mapping /* [n] */, int row, int q_off, int kv_len) {
    kc_pdl_begin();
    int slot = slot_mapping[blockIdx.x];
    if (slot < 0) return;
    const T *k = qkv + (size_t)blockIdx.x * row + q_off;
    const T *v = k + kv_len;
    T *kd = k_cache + (size_t)slot * kv_len, *vd = v_cache + (size_t)slot * kv_len;
    for (int j = threadIdx.x; j < kv_len; j += blockDim.x) {
        kd[j] = k[j];
        vd[j] = v[j];
    }
}

// ---- launchers

extern "C" int kern_cuda_kv_write(bf16 *k_cache, bf16 *v_cache, const bf16 *qkv,
                                  const int32_t *slot_mapping, int n, int n_heads, int n_kv_heads,
                                  int head_dim, cudaStream_t s) {
    if (n < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0)
        return err_set(ERR_INVAL, "kv_write: bad sizes n=%d n_heads=%d n_kv_heads=%d head_dim=%d",
                       n, n_heads, n_kv_heads, head_dim);
    if (n == 0) return 0;
    int row = (n_heads + 2 * n_kv_heads) * head_dim, q_off = n_heads * head_dim;
    int kv_len = n_kv_heads * head_dim;
    bool vec = row % 8 == 0 && q_off % 8 == 0 && kv_len % 8 == 0 && (uintptr_t)qkv % 16 == 0 &&
               (uintptr_t)k_cache % 16 == 0 && (uintptr_t)v_cache % 16 == 0;
    int items = vec ? kv_len / 8 : kv_len;
    int threads = items < 256 ? (items + 31) / 32 * 32 : 256;
    if (vec)
        kc_launch(kc_kv_write<uint4>, n, threads, 0, s, (uint4 *)k_cache, (uint4 *)v_cache,
                  (const uint4 *)qkv, slot_mapping, row / 8, q_off / 8, kv_len / 8);
    else
        kc_launch(kc_kv_write<bf16>, n, threads, 0, s, k_cache, v_cache, qkv, slot_mapping, row,
                  q_off, kv_len);
    KC_LAUNCHED();
    return 0;
}

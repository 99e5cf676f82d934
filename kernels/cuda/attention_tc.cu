// attention, prefill path on tensor cores: the same op as attention.cu (causal attention over the
// paged KV cache for a mixed batch, GQA-aware, no gather copies), for batches with long query
// spans, where the CUDA-core kernel is bound by arithmetic.
//
// Layout (flash-attention-2 style): grid (query tile, sequence, kv head x head part), 4 warps of
// 16 query rows each; a row is (token, query head of the kv head's group), so GQA heads share
// every K/V tile. Per tile of 64 keys: K rows and V (transposed) go from their cache blocks to
// shared memory; each warp computes S = Q K^T with mma.sync m16n8k16 (bf16 in, float32
// accumulate), masks the future, updates the online softmax in registers, rounds P to bf16 and
// accumulates O += P V with mma.sync. Fragment layouts are PTX's for m16n8k16 (groupID = lane/4,
// thread-in-group = lane%4). head_dim 64 or 128 (registers: O is head_dim/2 floats per thread).
// Known limits, for the speed issue: no cp.async/TMA pipelining, V transposed by 2-byte stores.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <math.h>

#define KC_TC_WARPS 4
#define KC_TC_ROWS (KC_TC_WARPS * 16) // query rows per block
#define KC_TC_KT 64                   // keys per tile
#define KC_TC_PAD 8                   // bf16 padding per shared row (16 bytes): no bank conflicts

template <int D>
static constexpr size_t kc_tc_smem() {
    return (size_t)KC_TC_ROWS * (D + KC_TC_PAD) * 2 + (size_t)KC_TC_KT * (D + KC_TC_PAD) * 2 +
           (size_t)D * (KC_TC_KT + KC_TC_PAD) * 2;
}

// ---- kernels

__device__ __forceinline__ void kc_mma(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t kc_pack(float lo, float hi) {
    return (uint32_t)kc_bf(lo) | ((uint32_t)kc_bf(hi) << 16);
}

template <int D>
__global__ void __launch_bounds__(KC_TC_WARPS * 32)
    kc_attention_tc(bf16 *out /* [n_tokens, n_heads * D] */,
                    const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * D] */,
                    const bf16 *k_cache /* [n_blocks, block_size, n_kv, D] */,
                    const bf16 *v_cache /* same */, const int32_t *query_start /* [n_seqs + 1] */,
                    const int32_t *seq_lens /* [n_seqs] */,
                    const int32_t *block_tables /* [n_seqs, max_blocks_per_seq] */,
                    int max_blocks_per_seq, int n_heads, int n_kv_heads, int block_size, int gp,
                    int n_parts, int tq, float scale_log2) {
    constexpr int QS = D + KC_TC_PAD, VS = KC_TC_KT + KC_TC_PAD;
    extern __shared__ __align__(16) unsigned char kc_tc_smem_raw[];
    bf16 *q_s = reinterpret_cast<bf16 *>(kc_tc_smem_raw); // [ROWS, QS]
    bf16 *k_s = q_s + KC_TC_ROWS * QS;                     // [KT, QS]
    bf16 *vt_s = k_s + KC_TC_KT * QS;                      // [D, VS]: V transposed

    const int seq = blockIdx.y;
    const int kvh = blockIdx.z / n_parts, part = blockIdx.z % n_parts;
    const int qs = query_start[seq], qlen = query_start[seq + 1] - qs;
    const int t0 = blockIdx.x * tq;
    if (t0 >= qlen) return;
    const int group = n_heads / n_kv_heads;
    const int h0 = kvh * group + part * gp;
    const int gp_here = min(gp, group - part * gp);
    const int first_pos = seq_lens[seq] - qlen;
    const int n_keys = first_pos + min(t0 + tq, qlen);
    const int row_stride = (n_heads + 2 * n_kv_heads) * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tg = lane & 3;
    const int32_t *table = block_tables + (size_t)seq * max_blocks_per_seq;

    // Q rows into shared memory (bf16, 16-byte copies); rows with no token are zeros.
    for (int idx = threadIdx.x; idx < KC_TC_ROWS * (D / 8); idx += blockDim.x) {
        int r = idx / (D / 8), c = idx % (D / 8), t = t0 + r / gp, hh = r % gp;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < tq * gp && t < qlen && hh < gp_here)
            v = *reinterpret_cast<const uint4 *>(qkv + (size_t)(qs + t) * row_stride +
                                                 (size_t)(h0 + hh) * D + c * 8);
        *reinterpret_cast<uint4 *>(q_s + r * QS + c * 8) = v;
    }
    // This thread's two rows: r0 = 16 warp + g and r0 + 8.
    int qpos[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = warp * 16 + g + 8 * i, t = t0 + r / gp, hh = r % gp;
        qpos[i] = r < tq * gp && t < qlen && hh < gp_here ? first_pos + t : -1;
    }
    const int warp_max_pos = [&] {
        int mx = max(qpos[0], qpos[1]);
        for (int o = 16; o > 0; o >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        return mx;
    }();
    __syncthreads();

    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++) {
        const bf16 *q0 = q_s + (warp * 16 + g) * QS + kc * 16 + tg * 2;
        qf[kc][0] = *reinterpret_cast<const uint32_t *>(q0);
        qf[kc][1] = *reinterpret_cast<const uint32_t *>(q0 + 8 * QS);
        qf[kc][2] = *reinterpret_cast<const uint32_t *>(q0 + 8);
        qf[kc][3] = *reinterpret_cast<const uint32_t *>(q0 + 8 * QS + 8);
    }

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    const int n_tiles = (n_keys + KC_TC_KT - 1) / KC_TC_KT;
    for (int kt = 0; kt < n_tiles; kt++) {
        const int kb = kt * KC_TC_KT;
        __syncthreads(); // the previous tile's readers are done
        for (int idx = threadIdx.x; idx < KC_TC_KT * (D / 8); idx += blockDim.x) {
            int j = idx / (D / 8), c = idx % (D / 8), kpos = kb + j;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (kpos < n_keys) {
                size_t slot = (size_t)table[kpos / block_size] * block_size + kpos % block_size;
                size_t off = (slot * n_kv_heads + kvh) * D + (size_t)c * 8;
                kv = *reinterpret_cast<const uint4 *>(k_cache + off);
                vv = *reinterpret_cast<const uint4 *>(v_cache + off);
            }
            *reinterpret_cast<uint4 *>(k_s + j * QS + c * 8) = kv;
            const bf16 *vh = reinterpret_cast<const bf16 *>(&vv);
#pragma unroll
            for (int e = 0; e < 8; e++) vt_s[(c * 8 + e) * VS + j] = vh[e];
        }
        __syncthreads();
        if (warp_max_pos < kb) continue; // every key of this tile is in all this warp's futures

        // S = Q K^T: 16 rows x 64 keys, eight n-tiles of 8 keys.
        float s[KC_TC_KT / 8][4];
#pragma unroll
        for (int n = 0; n < KC_TC_KT / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const bf16 *k0 = k_s + (n * 8 + g) * QS + tg * 2;
#pragma unroll
            for (int kc = 0; kc < D / 16; kc++) {
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(k0 + kc * 16);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(k0 + kc * 16 + 8);
                kc_mma(s[n], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3], b0, b1);
            }
        }
        // Mask, then the online softmax of this thread's two rows (shared by the 4 lanes of g).
        float alpha[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < KC_TC_KT / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int key = kb + n * 8 + tg * 2 + e;
                    float v = key <= qpos[i] ? s[n][2 * i + e] * scale_log2 : -INFINITY;
                    s[n][2 * i + e] = v;
                    mx = fmaxf(mx, v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float m_new = fmaxf(m[i], mx);
            alpha[i] = m[i] == -INFINITY ? 0.0f : exp2f(m[i] - m_new);
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < KC_TC_KT / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = s[n][2 * i + e] == -INFINITY ? 0.0f : exp2f(s[n][2 * i + e] - m_new);
                    s[n][2 * i + e] = p;
                    sum += p;
                }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[i] = l[i] * alpha[i] + sum;
            m[i] = m_new;
        }
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
        }
        // O += P V: P (bf16) as the A operand, straight from the S accumulators.
#pragma unroll
        for (int kk = 0; kk < KC_TC_KT / 16; kk++) {
            uint32_t a0 = kc_pack(s[2 * kk][0], s[2 * kk][1]);
            uint32_t a1 = kc_pack(s[2 * kk][2], s[2 * kk][3]);
            uint32_t a2 = kc_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            uint32_t a3 = kc_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const bf16 *v0 = vt_s + (n * 8 + g) * VS + kk * 16 + tg * 2;
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(v0);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(v0 + 8);
                kc_mma(o[n], a0, a1, a2, a3, b0, b1);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (qpos[i] < 0) continue;
        int r = warp * 16 + g + 8 * i, t = t0 + r / gp, hh = r % gp;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        bf16 *dst = out + (size_t)(qs + t) * n_heads * D + (size_t)(h0 + hh) * D + tg * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            *reinterpret_cast<uint32_t *>(dst + n * 8) = kc_pack(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
}

// ---- launchers

template <int D>
static cudaError_t kc_tc_setup_one(void) {
    return cudaFuncSetAttribute(kc_attention_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)kc_tc_smem<D>());
}

extern "C" int kern_cuda__attention_tc_setup(void) {
    CUDA_CHECK(kc_tc_setup_one<64>());
    CUDA_CHECK(kc_tc_setup_one<128>());
    return 0;
}

extern "C" int kern_cuda__attention_tc(bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                                       const bf16 *v_cache, const struct kern_attn_batch *b,
                                       int n_heads, int n_kv_heads, int head_dim, int block_size,
                                       float scale, cudaStream_t s) {
    if (head_dim != 64 && head_dim != 128)
        return err_set(ERR_UNSUPPORTED, "attention (tensor cores): head_dim %d", head_dim);
    int group = n_heads / n_kv_heads;
    int gp = group < KC_TC_ROWS ? group : KC_TC_ROWS;
    int n_parts = (group + gp - 1) / gp;
    int tq = KC_TC_ROWS / gp;
    dim3 grid((b->max_query_len + tq - 1) / tq, b->n_seqs, n_kv_heads * n_parts);
    if (grid.y > KC_MAX_GRID_YZ || grid.z > KC_MAX_GRID_YZ)
        return err_set(ERR_INVAL, "attention: grid too large (n_seqs=%d)", b->n_seqs);
    float sl = scale * 1.4426950408889634f;
    if (head_dim == 64)
        kc_attention_tc<64><<<grid, KC_TC_WARPS * 32, kc_tc_smem<64>(), s>>>(
            out, qkv, k_cache, v_cache, b->query_start, b->seq_lens, b->block_tables,
            b->max_blocks_per_seq, n_heads, n_kv_heads, block_size, gp, n_parts, tq, sl);
    else
        kc_attention_tc<128><<<grid, KC_TC_WARPS * 32, kc_tc_smem<128>(), s>>>(
            out, qkv, k_cache, v_cache, b->query_start, b->seq_lens, b->block_tables,
            b->max_blocks_per_seq, n_heads, n_kv_heads, block_size, gp, n_parts, tq, sl);
    KC_LAUNCHED();
    return 0;
}

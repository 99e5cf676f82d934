// attention, prefill path on tensor cores: the same op as attention.cu (causal attention over the
// paged KV cache for a mixed batch, GQA-aware, no gather copies), for batches with long query
// spans, where the CUDA-core kernel is bound by arithmetic. bf16 in, float32 accumulate, bf16 out;
// head_dim 64 or 128 (others: ERR_UNSUPPORTED), any block size (the new kernel takes powers of
// two; another size runs the previous kernel).
//
// Two kernels, chosen once at set-up from KEEL_ATTN_PREFILL:
//
// kc_attention_fa2 (the default; flash-attention-2 practice): a block owns 16 x WARPS rows, a row
// being (query token, query head of one kv head's group), so the group's heads share every K/V
// tile. The 1-D grid is decoded so the query tiles with the most keys (the last ones, causal)
// start first and the tail of the launch is short. Q is copied once to shared memory and held in
// registers as mma A fragments (ldmatrix.x4) for the whole key loop. K and V tiles of 64 keys
// travel from their cache blocks with 16-byte cp.async into a two-stage ring (the next tile's
// copies fly while this tile's MMAs run; one __syncthreads per tile; keys past the block's last
// are zero-filled so P = 0 never meets a NaN). S = Q K^T takes K's B fragments with ldmatrix.x4,
// O += P V takes V's with ldmatrix.x4.trans (V stays in the cache's [key, dim] layout). The online
// softmax lives in registers (exp2 of log2-scaled scores, per-thread partial row sums reduced once
// at the end); P is re-packed from the S accumulators into bf16 A fragments (the m16n8k16 C
// layout of two adjacent n-tiles is the A layout of one k-chunk). Only tiles that reach past a
// warp's first row are masked; tiles wholly in a warp's future are skipped. Shared rows are padded
// by 16 bytes (stride 272 or 144 bytes: the 8 row addresses of an ldmatrix hit 8 distinct 4-bank
// groups). 8 warps (128 rows: each K/V tile serves 128 rows) when the launch has enough blocks to
// fill the GPU, else 4 warps (64 rows, twice the blocks, two or more blocks per multiprocessor).
//
// kc_attention_tc (KEEL_ATTN_PREFILL=old, the fallback and the A/B baseline): 4 warps of 16 rows,
// plain loads, V transposed by 2-byte shared stores, one sequence per grid row.
//
// Fragment layouts are PTX's for mma.m16n8k16 (groupID g = lane/4, thread-in-group tg = lane%4)
// and ldmatrix (lanes 8i..8i+7 give the row addresses of matrix i; lane l receives row l/4,
// columns 2(l%4), 2(l%4)+1 of each matrix, or of its transpose with .trans).
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KC_TC_WARPS 4
#define KC_TC_ROWS (KC_TC_WARPS * 16) // query rows per block
#define KC_TC_KT 64                   // keys per tile
#define KC_TC_PAD 8                   // bf16 padding per shared row (16 bytes): no bank conflicts

template <int D> static constexpr size_t kc_tc_smem() {
    return (size_t)KC_TC_ROWS * (D + KC_TC_PAD) * 2 + (size_t)KC_TC_KT * (D + KC_TC_PAD) * 2 +
           (size_t)D * (KC_TC_KT + KC_TC_PAD) * 2;
}

// ---- kernels: the previous tensor-core kernel (KEEL_ATTN_PREFILL=old)

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
    bf16 *k_s = q_s + KC_TC_ROWS * QS;                    // [KT, QS]
    bf16 *vt_s = k_s + KC_TC_KT * QS;                     // [D, VS]: V transposed

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
        for (int o = 16; o > 0; o >>= 1)
            mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
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
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
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
            for (int e = 0; e < 8; e++)
                vt_s[(c * 8 + e) * VS + j] = vh[e];
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
                kc_mma_bf16(s[n], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3], b0, b1);
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
            uint32_t a0 = kc_pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            uint32_t a1 = kc_pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            uint32_t a2 = kc_pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            uint32_t a3 = kc_pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const bf16 *v0 = vt_s + (n * 8 + g) * VS + kk * 16 + tg * 2;
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(v0);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(v0 + 8);
                kc_mma_bf16(o[n], a0, a1, a2, a3, b0, b1);
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
            *reinterpret_cast<uint32_t *>(dst + n * 8) =
                kc_pack_bf16x2(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
}

// ---- kernels: flash-attention-2 style (the default)

#define KC_FA_KT 64 // keys per tile
#define KC_FA_PAD 8 // bf16 padding per shared row (16 bytes)

// Shared memory: Q [16 WARPS, D + PAD], then K and V, two stages each of [KT, D + PAD].
template <int D, int WARPS> static constexpr size_t kc_fa_smem() {
    return (size_t)(16 * WARPS + 4 * KC_FA_KT) * (D + KC_FA_PAD) * 2;
}

__device__ __forceinline__ uint32_t kc_fa_saddr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// 16 bytes global -> shared, bypassing L1; ok == false fills the 16 bytes with zeros and reads
// nothing (src must still be a valid address).
__device__ __forceinline__ void kc_fa_cp16(uint32_t dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void kc_fa_ldsm(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void kc_fa_ldsm_t(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// 2^x, one MUFU op (inputs here are <= 0 or -inf, for which it gives 0).
__device__ __forceinline__ float kc_fa_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two floats to a bf16 pair (lo in the low half, the element with the lower column), one cvt.
__device__ __forceinline__ uint32_t kc_fa_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// Blocks per multiprocessor the registers must allow: one 8-warp or two 4-warp blocks. head_dim
// 128 takes 236-252 registers a thread (O, Q and S fragments: 64 + 32 + 32 of them, and the next
// tile's block ids), head_dim 64 ~170; squeezing head_dim 64 into 128 registers (two 8-warp
// blocks) spilled, so it is not asked for.
template <int D, int WARPS> static constexpr int kc_fa_min_blocks() {
    return WARPS == 4 ? 2 : 1;
}

template <int D, int WARPS>
__global__ void __launch_bounds__(WARPS * 32, kc_fa_min_blocks<D, WARPS>())
    kc_attention_fa2(bf16 *out /* [n_tokens, n_heads * D] */,
                     const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * D] */,
                     const bf16 *k_cache /* [n_blocks, block_size, n_kv, D] */,
                     const bf16 *v_cache /* same */, const int32_t *query_start /* [n_seqs + 1] */,
                     const int32_t *seq_lens /* [n_seqs] */,
                     const int32_t *block_tables /* [n_seqs, max_blocks_per_seq] */,
                     int max_blocks_per_seq, int n_heads, int n_kv_heads, int bs_shift, int gp,
                     int n_parts, int tq, int n_qtiles, int n_seqs, float scale_log2) {
    constexpr int ROWS = 16 * WARPS, THREADS = 32 * WARPS, S = D + KC_FA_PAD, CH = D / 8;
    constexpr int KT = KC_FA_KT;
    extern __shared__ __align__(16) unsigned char kc_fa_smem_raw[];
    bf16 *q_s = reinterpret_cast<bf16 *>(kc_fa_smem_raw); // [ROWS, S]
    bf16 *k_s = q_s + ROWS * S;                           // [2, KT, S]
    bf16 *v_s = k_s + 2 * KT * S;                         // [2, KT, S]

    // Block index -> (query tile, sequence, kv head x head part); the highest query tiles (the
    // most keys) get the lowest block indices, so they are scheduled first.
    const int n_hp = n_kv_heads * n_parts;
    int lin = blockIdx.x;
    const int hp = lin % n_hp;
    lin /= n_hp;
    const int seq = lin % n_seqs, qtile = n_qtiles - 1 - lin / n_seqs;
    const int kvh = hp / n_parts, part = hp % n_parts;
    const int qs = query_start[seq], qlen = query_start[seq + 1] - qs;
    const int t0 = qtile * tq;
    if (t0 >= qlen) return;
    const int group = n_heads / n_kv_heads;
    const int h0 = kvh * group + part * gp;
    const int gp_here = min(gp, group - part * gp);
    const int first_pos = seq_lens[seq] - qlen;
    const int n_keys = first_pos + min(t0 + tq, qlen); // the block's last row sees keys < n_keys
    const int n_kt = (n_keys + KT - 1) / KT;
    const int row_stride = (n_heads + 2 * n_kv_heads) * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tg = lane & 3;
    const int32_t *table = block_tables + (size_t)seq * max_blocks_per_seq;

    // Q rows (row r = token t0 + r / gp, head h0 + r % gp) into shared memory; rows with no
    // token or head are zeros (their scores stay finite, their outputs are never stored).
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
        int r = idx / CH, c = idx % CH, t = t0 + r / gp, hh = r % gp;
        bool ok = r < tq * gp && t < qlen && hh < gp_here;
        const bf16 *src =
            ok ? qkv + (size_t)(qs + t) * row_stride + (size_t)(h0 + hh) * D + c * 8 : qkv;
        kc_fa_cp16(kc_fa_saddr(q_s + r * S + c * 8), src, ok);
    }
    kc_cp_async_commit();

    // The K/V copies: this thread moves chunks threadIdx.x + i THREADS (i < NI) of each tile, key
    // (chunk / CH) of the tile, dims 8 (chunk % CH) + 0..7. Their cache blocks are read from the
    // table one tile ahead of the copies, so the table's latency hides behind a tile of MMAs.
    constexpr int NI = KT * CH / THREADS;
    static_assert(KT * CH % THREADS == 0, "a tile is a whole number of rounds of 16-byte chunks");
    int blk[NI];
    auto fetch_blocks = [&](int kt) {
#pragma unroll
        for (int i = 0; i < NI; i++) {
            int kpos = kt * KT + (threadIdx.x + i * THREADS) / CH;
            blk[i] = kpos < n_keys ? table[kpos >> bs_shift] : 0;
        }
    };
    // Issues the copies of key tile kt into ring stage kt & 1 (one commit group); blk holds the
    // tile's blocks (fetch_blocks(kt)).
    auto load_kv = [&](int kt) {
        bf16 *kd = k_s + (kt & 1) * KT * S, *vd = v_s + (kt & 1) * KT * S;
#pragma unroll
        for (int i = 0; i < NI; i++) {
            int idx = threadIdx.x + i * THREADS, j = idx / CH, c = idx % CH, kpos = kt * KT + j;
            bool ok = kpos < n_keys;
            size_t slot = ((size_t)blk[i] << bs_shift) + (kpos & ((1 << bs_shift) - 1));
            size_t off = ok ? (slot * n_kv_heads + kvh) * D + (size_t)c * 8 : 0;
            kc_fa_cp16(kc_fa_saddr(kd + j * S + c * 8), k_cache + off, ok);
            kc_fa_cp16(kc_fa_saddr(vd + j * S + c * 8), v_cache + off, ok);
        }
        kc_cp_async_commit();
    };
    fetch_blocks(0);
    load_kv(0);
    fetch_blocks(1);

    // This thread's two rows: 16 warp + g and 16 warp + g + 8 (-1: no row).
    int qpos[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = warp * 16 + g + 8 * i, t = t0 + r / gp, hh = r % gp;
        qpos[i] = r < tq * gp && t < qlen && hh < gp_here ? first_pos + t : -1;
    }
    // The warp's latest row (tiles past it are skipped) and earliest real row (tiles up to it
    // need no mask).
    int warp_max = max(qpos[0], qpos[1]);
    int warp_min = min(qpos[0] < 0 ? INT_MAX : qpos[0], qpos[1] < 0 ? INT_MAX : qpos[1]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        warp_max = max(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, o));
        warp_min = min(warp_min, __shfl_xor_sync(0xffffffffu, warp_min, o));
    }

    // Q as A fragments: matrix i of the x4 is rows (i & 1) * 8 + 0..7, columns (i >> 1) * 8 +
    // 0..7 of the 16 x 16 chunk, i.e. a0..a3 of mma.m16n8k16.
    kc_cp_async_wait<1>(); // Q has landed (tile 0 may still fly)
    __syncthreads();
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++)
        kc_fa_ldsm(qf[kc],
                   kc_fa_saddr(q_s + (warp * 16 + (lane & 15)) * S + kc * 16 + (lane >> 4) * 8));

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}; // running max of raw scores
    float l[2] = {0.0f, 0.0f};           // this thread's share of the running sum

    for (int kt = 0; kt < n_kt; kt++) {
        // Tile kt is complete and visible, and every warp is done with tile kt - 1, whose
        // stage the next copies overwrite.
        kc_cp_async_wait<0>();
        __syncthreads();
        if (kt + 1 < n_kt) {
            load_kv(kt + 1);
            fetch_blocks(kt + 2);
        }
        const int kb = kt * KT;
        if (warp_max < kb) continue; // every key of this tile is in all this warp's futures
        const bf16 *kt_s = k_s + (kt & 1) * KT * S, *vt_s = v_s + (kt & 1) * KT * S;

        // S = Q K^T, 16 rows x 64 keys. For n-tile n (keys 8n..8n+7) the x4 gives B fragments
        // of two k-chunks: matrix i is keys 8n + 0..7, dims 32 kc2 + 8 i + 0..7 (rows = keys,
        // so lane l holds key g, dims 2 tg, 2 tg + 1: b0/b1 of the "col" operand).
        float s[KT / 8][4];
#pragma unroll
        for (int n = 0; n < KT / 8; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kc2 = 0; kc2 < D / 32; kc2++) {
                uint32_t b[4];
                kc_fa_ldsm(
                    b, kc_fa_saddr(kt_s + (n * 8 + (lane & 7)) * S + kc2 * 32 + (lane >> 3) * 8));
                kc_mma_bf16(s[n], qf[2 * kc2][0], qf[2 * kc2][1], qf[2 * kc2][2], qf[2 * kc2][3],
                            b[0], b[1]);
                kc_mma_bf16(s[n], qf[2 * kc2 + 1][0], qf[2 * kc2 + 1][1], qf[2 * kc2 + 1][2],
                            qf[2 * kc2 + 1][3], b[2], b[3]);
            }
        }
        // Causal mask, only where a key can be later than one of the warp's rows (this also
        // covers the zero-filled keys past n_keys, which are later than every row).
        if (kb + KT - 1 > warp_min) {
#pragma unroll
            for (int n = 0; n < KT / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (kb + n * 8 + tg * 2 + (e & 1) > qpos[e >> 1]) s[n][e] = -INFINITY;
        }
        // Online softmax of the two rows (each shared by the 4 lanes of group g).
        float alpha[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < KT / 8; n++)
                mx = fmaxf(mx, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[i], mx);
            // A row with no visible key yet keeps max -inf; exponents relative to 0 then give
            // p = 0 and alpha = 0 instead of NaN.
            const float m_sl = m_new == -INFINITY ? 0.0f : m_new * scale_log2;
            alpha[i] = kc_fa_exp2(m[i] * scale_log2 - m_sl);
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < KT / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float p = kc_fa_exp2(fmaf(s[n][2 * i + e], scale_log2, -m_sl));
                    s[n][2 * i + e] = p;
                    sum += p;
                }
            l[i] = l[i] * alpha[i] + sum;
            m[i] = m_new;
        }
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
        }
        // O += P V. P's A fragment for keys 16 kk..16 kk + 15 is the C fragments of n-tiles 2 kk
        // and 2 kk + 1. V's B fragments by ldmatrix.trans: matrix i is keys 16 kk + (i & 1) * 8
        // + 0..7 (rows as stored), dims 16 n2 + (i >> 1) * 8 + 0..7; transposed, lane l holds
        // dim g, keys 2 tg, 2 tg + 1: b0 (i = 0) and b1 (i = 1) of n-tile 2 n2, then of 2 n2 + 1.
#pragma unroll
        for (int kk = 0; kk < KT / 16; kk++) {
            const uint32_t a0 = kc_fa_pack(s[2 * kk][0], s[2 * kk][1]);
            const uint32_t a1 = kc_fa_pack(s[2 * kk][2], s[2 * kk][3]);
            const uint32_t a2 = kc_fa_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            const uint32_t a3 = kc_fa_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int n2 = 0; n2 < D / 16; n2++) {
                uint32_t b[4];
                kc_fa_ldsm_t(
                    b, kc_fa_saddr(vt_s + (kk * 16 + (lane & 15)) * S + n2 * 16 + (lane >> 4) * 8));
                kc_mma_bf16(o[2 * n2], a0, a1, a2, a3, b[0], b[1]);
                kc_mma_bf16(o[2 * n2 + 1], a0, a1, a2, a3, b[2], b[3]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (qpos[i] < 0) continue;
        int r = warp * 16 + g + 8 * i, t = t0 + r / gp, hh = r % gp;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        bf16 *dst = out + (size_t)(qs + t) * n_heads * D + (size_t)(h0 + hh) * D + tg * 2;
#pragma unroll
        for (int n = 0; n < D / 8; n++)
            *reinterpret_cast<uint32_t *>(dst + n * 8) =
                kc_fa_pack(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
}

// ---- launchers

// Which kernel kern_cuda__attention_tc runs: set once at set-up from KEEL_ATTN_PREFILL ("old": the
// previous kernel; "fa2_64" / "fa2_128": the new one with 4 / 8 warps always; unset or anything
// else: the new one, warps chosen per launch), read by the launcher like a setting, never written
// per step.
enum { KC_FA_AUTO, KC_FA_OLD, KC_FA_W4, KC_FA_W8 };
static int kc_fa_mode = KC_FA_AUTO;
static int kc_fa_n_sm = 132; // the device's multiprocessors, read at set-up

template <int D> static cudaError_t kc_tc_setup_one(void) {
    cudaError_t e = cudaFuncSetAttribute(
        kc_attention_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kc_tc_smem<D>());
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(kc_attention_fa2<D, 4>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)kc_fa_smem<D, 4>());
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(kc_attention_fa2<D, 8>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)kc_fa_smem<D, 8>());
    return e;
}

extern "C" int kern_cuda__attention_tc_setup(void) {
    const char *env = getenv("KEEL_ATTN_PREFILL");
    kc_fa_mode = !env                      ? KC_FA_AUTO
                 : !strcmp(env, "old")     ? KC_FA_OLD
                 : !strcmp(env, "fa2_64")  ? KC_FA_W4
                 : !strcmp(env, "fa2_128") ? KC_FA_W8
                                           : KC_FA_AUTO;
    int dev = 0, n_sm = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
    if (n_sm > 0) kc_fa_n_sm = n_sm;
    CUDA_CHECK(kc_tc_setup_one<64>());
    CUDA_CHECK(kc_tc_setup_one<128>());
    return 0;
}

template <int D>
static void kc_tc_old_launch(bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,
                             const struct kern_attn_batch *b, int n_heads, int n_kv_heads,
                             int block_size, float sl, cudaStream_t s, dim3 grid, int gp,
                             int n_parts, int tq) {
    kc_attention_tc<D><<<grid, KC_TC_WARPS * 32, kc_tc_smem<D>(), s>>>(
        out, qkv, k_cache, v_cache, b->query_start, b->seq_lens, b->block_tables,
        b->max_blocks_per_seq, n_heads, n_kv_heads, block_size, gp, n_parts, tq, sl);
}

template <int D, int WARPS>
static int kc_fa_launch(bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,
                        const struct kern_attn_batch *b, int n_heads, int n_kv_heads,
                        int block_size, float sl, cudaStream_t s) {
    const int rows = 16 * WARPS, group = n_heads / n_kv_heads;
    int gp = group < rows ? group : rows;
    int n_parts = (group + gp - 1) / gp;
    int tq = rows / gp;
    int n_qtiles = (b->max_query_len + tq - 1) / tq;
    long blocks = (long)n_qtiles * b->n_seqs * n_kv_heads * n_parts;
    int bs_shift = 0;
    while ((1 << bs_shift) < block_size)
        bs_shift++;
    if (blocks > INT_MAX)
        return err_set(ERR_INVAL, "attention: grid too large (n_seqs=%d, max_query_len=%d)",
                       b->n_seqs, b->max_query_len);
    kc_attention_fa2<D, WARPS><<<(unsigned)blocks, WARPS * 32, kc_fa_smem<D, WARPS>(), s>>>(
        out, qkv, k_cache, v_cache, b->query_start, b->seq_lens, b->block_tables,
        b->max_blocks_per_seq, n_heads, n_kv_heads, bs_shift, gp, n_parts, tq, n_qtiles, b->n_seqs,
        sl);
    return 0;
}

template <int D>
static int kc_fa_dispatch(bf16 *out, const bf16 *qkv, const bf16 *k_cache, const bf16 *v_cache,
                          const struct kern_attn_batch *b, int n_heads, int n_kv_heads,
                          int block_size, float sl, cudaStream_t s) {
    // 8 warps (128 rows) reuse each K/V tile twice as often, but their 256-thread blocks run one
    // per multiprocessor; when the batch's tokens make fewer than three such blocks per
    // multiprocessor, 4 warps (64 rows, two or more blocks each) fill the GPU better.
    int use8 = kc_fa_mode == KC_FA_W8;
    if (kc_fa_mode == KC_FA_AUTO) {
        int group = n_heads / n_kv_heads, gp = group < 128 ? group : 128;
        long tiles = ((long)b->n_tokens + 128 / gp - 1) / (128 / gp) + b->n_seqs / 2;
        long blocks = tiles * n_kv_heads * ((group + gp - 1) / gp);
        use8 = blocks >= 3L * kc_fa_n_sm;
    }
    return use8 ? kc_fa_launch<D, 8>(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                                     sl, s)
                : kc_fa_launch<D, 4>(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                                     sl, s);
}

extern "C" int kern_cuda__attention_tc(bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                                       const bf16 *v_cache, const struct kern_attn_batch *b,
                                       int n_heads, int n_kv_heads, int head_dim, int block_size,
                                       float scale, cudaStream_t s) {
    if (head_dim != 64 && head_dim != 128)
        return err_set(ERR_UNSUPPORTED, "attention (tensor cores): head_dim %d", head_dim);
    if (!b || b->n_seqs <= 0 || b->max_query_len <= 0) return 0;
    float sl = scale * 1.4426950408889634f;
    // The new kernel finds a key's slot by shifts: block sizes that are no power of two (which
    // keel never configures) take the previous kernel.
    bool pow2 = block_size > 0 && (block_size & (block_size - 1)) == 0;
    if (kc_fa_mode != KC_FA_OLD && pow2) {
        int rc = head_dim == 64 ? kc_fa_dispatch<64>(out, qkv, k_cache, v_cache, b, n_heads,
                                                     n_kv_heads, block_size, sl, s)
                                : kc_fa_dispatch<128>(out, qkv, k_cache, v_cache, b, n_heads,
                                                      n_kv_heads, block_size, sl, s);
        if (rc) return rc;
        KC_LAUNCHED();
        return 0;
    }
    int group = n_heads / n_kv_heads;
    int gp = group < KC_TC_ROWS ? group : KC_TC_ROWS;
    int n_parts = (group + gp - 1) / gp;
    int tq = KC_TC_ROWS / gp;
    dim3 grid((b->max_query_len + tq - 1) / tq, b->n_seqs, n_kv_heads * n_parts);
    if (grid.y > KC_MAX_GRID_YZ || grid.z > KC_MAX_GRID_YZ)
        return err_set(ERR_INVAL, "attention: grid too large (n_seqs=%d)", b->n_seqs);
    if (head_dim == 64)
        kc_tc_old_launch<64>(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size, sl, s,
                             grid, gp, n_parts, tq);
    else
        kc_tc_old_launch<128>(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size, sl, s,
                              grid, gp, n_parts, tq);
    KC_LAUNCHED();
    return 0;
}

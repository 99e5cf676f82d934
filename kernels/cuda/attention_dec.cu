// attention, decode path: the same op as attention.cu (causal attention over the paged KV cache
// for a mixed batch, GQA-aware, no gather copies) for batches of short query spans, where the op
// is bound by reading K and V: at one query token per sequence every K/V byte is used by the
// GQA group's query heads only, so the kernel's job is to stream the cache at the copy rate.
//
// Layout: grid (query tile x key slice, sequence, kv head x head part); a block of 4 warps owns
// one m16 tile of 16 query rows, a row being (token, query head of the kv head's group): a decode
// token of a GQA-7 or GQA-8 model is 7 or 8 rows, so K/V are read once per group. The block's
// slice of keys is cut into sub-tiles of 16 keys; warp w takes sub-tiles w, w + 4, w + 8, ... and
// keeps its own online softmax (max, sum, output in mma accumulators) for the 16 rows; the four
// warps' states are merged through shared memory at the end. Each warp streams its sub-tiles
// through its own ring of KC_DEC_STAGES shared-memory stages with cp.async (16-byte copies straight
// from the cache blocks, zero-filled past the slice), so loads of the next sub-tiles are in flight
// while the current one is computed and no block-wide barrier sits in the loop.
// Per sub-tile: S = Q K^T with mma.sync m16n8k16 (Q fragments held in registers for the whole
// slice), mask, online softmax, then O += P V with P rounded to bf16 as the A operand and V's B
// fragments read from its row-major tile (no transpose pass).
//
// Split-KV: the host picks the number of key slices from the batch's size hints so the grid fills
// the multiprocessors about KERN_CUDA_DEC_WAVES times (kern_cuda_dec_splits in attention_dec.h);
// slices write unnormalised partials to op_scratch and kc_dec_combine merges them after, a warp
// per output row with all slices' weights in one round of loads and up to 16 slices' outputs in
// the next. KEEL_ATTN_FUSED_COMBINE=1 has the last slice block of each group merge them instead
// (kc_dec_tickets: a per-group ticket counter that returns to zero): one kernel, but slower on the
// H100 (docs/PERF.md runs 6 and 9). Merging inside a thread-block cluster was slower too (run 9).
// head_dim 64 or 128 (registers: Q is head_dim/4 words, O head_dim/2 floats per thread).
#include "kernels/cuda/attention_dec.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KC_DEC_WARPS 4
#define KC_DEC_ROWS 16  // query rows per block: one m16 tile
#define KC_DEC_SUB 16   // keys per warp sub-tile: one k16 step of P V
#define KC_DEC_STAGES 3 // cp.async ring depth per warp
#define KC_DEC_PAD 8    // bf16 padding per shared row (16 bytes): conflict-free fragment reads

static_assert(KC_DEC_WARPS * KC_DEC_SUB == KERN_CUDA_DEC_SLICE_KEYS,
              "a slice is a whole number of rounds of sub-tiles");

template <int D> static constexpr size_t kc_dec_ring_bytes() {
    return (size_t)KC_DEC_WARPS * KC_DEC_STAGES * 2 * KC_DEC_SUB * (D + KC_DEC_PAD) * 2;
}
template <int D> static constexpr size_t kc_dec_red_bytes() {
    return (size_t)KC_DEC_WARPS * KC_DEC_ROWS * (D + 2) * 4;
}
template <int D> static constexpr size_t kc_dec_smem() {
    return kc_dec_ring_bytes<D>() > kc_dec_red_bytes<D>() ? kc_dec_ring_bytes<D>()
                                                          : kc_dec_red_bytes<D>();
}

// ---- kernels

static __device__ __forceinline__ uint32_t kc_dec_ld32(const bf16 *p) {
    return *reinterpret_cast<const uint32_t *>(p);
}

// 16 bytes global -> shared without passing through registers; src_bytes 0 writes zeros (the
// source is then not read).
static __device__ __forceinline__ void kc_dec_cp16(bf16 *dst, const bf16 *src, int src_bytes) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                 "r"(src_bytes));
}

// The merge of one output row's key slices, by one warp (kc_dec_combine and the main kernel's
// fused combine): lane s holds slices s and s + 32's max and sum, so the softmax weights
// 2^(m_s - M) and the total come from one round of loads and two warp reductions; then each lane
// accumulates its head_dim / 32 output dims over the slices. The slices' loads go out
// KC_DEC_MERGE_BATCH at a time, all before any is used (one round trip per batch: at one query
// token per sequence the merge is a chain of round trips, not a stream; before, four slices went
// per round trip). Slices are added in order, so the result does not depend on the batching.
// Loads go through L2 (ld.cg): the partials were written by other blocks of the same launch.
#define KC_DEC_MERGE_BATCH 16
template <int D>
static __device__ __forceinline__ void kc_dec_merge_row(bf16 *dst /* [D] */,
                                                        const float *p /* [n_splits, D + 2] */,
                                                        int n_splits, int lane) {
    static_assert(KERN_CUDA_DEC_MAX_SPLITS <= 64, "two slices a lane");
    constexpr int PER = D / 32; // output dims per lane
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    if (lane < n_splits)
        m0 = __ldcg(p + lane * (D + 2) + D), l0 = __ldcg(p + lane * (D + 2) + D + 1);
    if (lane + 32 < n_splits)
        m1 = __ldcg(p + (lane + 32) * (D + 2) + D), l1 = __ldcg(p + (lane + 32) * (D + 2) + D + 1);
    const float mx = kc_warp_max(fmaxf(m0, m1));
    // A slice with no visible key (max -inf) weighs nothing.
    const float w0 = m0 == -INFINITY ? 0.0f : exp2f(m0 - mx);
    const float w1 = m1 == -INFINITY ? 0.0f : exp2f(m1 - mx);
    const float sum = kc_warp_sum(l0 * w0 + l1 * w1);
    float acc[PER];
#pragma unroll
    for (int e = 0; e < PER; e++)
        acc[e] = 0.0f;
    for (int s0 = 0; s0 < n_splits; s0 += KC_DEC_MERGE_BATCH) {
        float w[KC_DEC_MERGE_BATCH], v[KC_DEC_MERGE_BATCH][PER];
#pragma unroll
        for (int j = 0; j < KC_DEC_MERGE_BATCH; j++) {
            const int sl = s0 + j; // the same in every lane: the shuffle is warp-uniform
            const float wj = __shfl_sync(0xffffffffu, sl < 32 ? w0 : w1, sl & 31);
            w[j] = sl < n_splits ? wj : 0.0f;
            // Past the last slice: the last one read again, weighed 0 (no branch, so the
            // batch's loads are all in flight at once; partials are always finite).
            const float *ps = p + (size_t)min(sl, n_splits - 1) * (D + 2) + lane * PER;
#pragma unroll
            for (int e = 0; e < PER; e++)
                v[j][e] = __ldcg(ps + e);
        }
#pragma unroll
        for (int j = 0; j < KC_DEC_MERGE_BATCH; j++)
#pragma unroll
            for (int e = 0; e < PER; e++)
                acc[e] += v[j][e] * w[j];
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int e = 0; e < PER; e++)
        dst[lane * PER + e] = kc_bf(acc[e] * inv);
}

// Fused combine: one ticket per (query tile, sequence, kv head part) of a split launch. Every
// slice block takes a ticket once its partials are written; the last one (ticket n_splits - 1)
// merges the slices and puts the ticket back to 0, so the array is all zeros between launches
// (graph replays included) and no combine kernel runs. Per device (a __device__ array), so
// launches on one device must be stream-ordered, as keel's one stream per device makes them.
#define KC_DEC_MAX_GROUPS 4096
__device__ unsigned kc_dec_tickets[KC_DEC_MAX_GROUPS];

template <int D>
__global__ void __launch_bounds__(KC_DEC_WARPS * 32)
    kc_attention_dec(bf16 *out /* [n_tokens, n_heads * D] */,
                     const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * D] */,
                     const bf16 *k_cache /* [n_blocks, block_size, n_kv, D] */,
                     const bf16 *v_cache /* same */, const int32_t *query_start /* [n_seqs + 1] */,
                     const int32_t *seq_lens /* [n_seqs] */,
                     const int32_t *block_tables /* [n_seqs, max_blocks_per_seq] */,
                     int max_blocks_per_seq, int n_heads, int n_kv_heads, int block_size, int gp,
                     int n_parts, int tq, float scale_log2, int n_splits, int split_len,
                     float *partial /* [n_tokens, n_heads, n_splits, D + 2] or NULL */,
                     int fused_combine) {
    kc_pdl_begin();
    constexpr int QS = D + KC_DEC_PAD;         // shared row stride (bf16)
    constexpr int STAGE = 2 * KC_DEC_SUB * QS; // one stage: 16 K rows, then 16 V rows
    extern __shared__ __align__(16) unsigned char kc_dec_smem_raw[];
    bf16 *ring = reinterpret_cast<bf16 *>(kc_dec_smem_raw); // [WARPS, STAGES, STAGE]

    const int seq = blockIdx.y;
    const int kvh = blockIdx.z / n_parts, part = blockIdx.z % n_parts;
    const int qs = query_start[seq], qlen = query_start[seq + 1] - qs;
    const int split = blockIdx.x % n_splits;
    const int t0 = (blockIdx.x / n_splits) * tq;
    if (t0 >= qlen) return; // the whole block: no token of this sequence in the tile
    const int group = n_heads / n_kv_heads;
    const int h0 = kvh * group + part * gp;         // first query head of this block
    const int gp_here = min(gp, group - part * gp); // heads of this block's part
    const int first_pos = seq_lens[seq] - qlen;
    const int n_keys = first_pos + min(t0 + tq, qlen); // keys 0 .. last position of the tile
    const int row_stride = (n_heads + 2 * n_kv_heads) * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tg = lane & 3;
    const int32_t *table = block_tables + (size_t)seq * max_blocks_per_seq;
    // Block sizes are powers of two in practice: a shift instead of a division per key.
    const bool bs_pow2 = (block_size & (block_size - 1)) == 0;
    const int bs_shift = __ffs(block_size) - 1;

    // This thread's two rows, g and g + 8 (every warp holds all 16): their positions (-1: no
    // row) and Q fragments, loaded once from qkv; rows with no (token, head) are zeros.
    int qpos[2];
    const bf16 *qrow[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = g + 8 * i, t = t0 + r / gp, hh = r % gp;
        bool ok = r < tq * gp && t < qlen && hh < gp_here;
        qpos[i] = ok ? first_pos + t : -1;
        qrow[i] = ok ? qkv + (size_t)(qs + t) * row_stride + (size_t)(h0 + hh) * D + tg * 2 : NULL;
    }
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; kc++) {
        qf[kc][0] = qrow[0] ? kc_dec_ld32(qrow[0] + kc * 16) : 0u;
        qf[kc][1] = qrow[1] ? kc_dec_ld32(qrow[1] + kc * 16) : 0u;
        qf[kc][2] = qrow[0] ? kc_dec_ld32(qrow[0] + kc * 16 + 8) : 0u;
        qf[kc][3] = qrow[1] ? kc_dec_ld32(qrow[1] + kc * 16 + 8) : 0u;
    }
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    // This block's slice of the keys, [k_first, k_last), and this warp's share of its sub-tiles.
    const int k_first = split * split_len;
    const int k_last = min(n_keys, k_first + split_len);
    const int n_sub = k_last > k_first ? (k_last - k_first + KC_DEC_SUB - 1) / KC_DEC_SUB : 0;
    const int n_mine = n_sub > warp ? (n_sub - warp + KC_DEC_WARPS - 1) / KC_DEC_WARPS : 0;
    bf16 *my_ring = ring + (size_t)warp * KC_DEC_STAGES * STAGE;

    // Copies this warp's i-th sub-tile (keys kb .. kb + 15) into stage i % STAGES: K rows, then
    // V rows, 16 bytes a copy; keys past the slice become zeros, so P V never meets garbage.
    auto load = [&](int i) {
        constexpr int N_CP = KC_DEC_SUB * (D / 8) / 32; // 16-byte copies per lane per tensor
        bf16 *ks = my_ring + (i % KC_DEC_STAGES) * STAGE, *vs = ks + KC_DEC_SUB * QS;
        const int kb = k_first + (warp + KC_DEC_WARPS * i) * KC_DEC_SUB;
        // Every block-table read first, then every copy: the reads go out together instead of
        // one dependent round trip per copy. off < 0: a key past the slice (zero-filled).
        long off[N_CP];
#pragma unroll
        for (int it = 0; it < N_CP; it++) {
            int idx = lane + 32 * it, j = idx / (D / 8), c = idx % (D / 8), kpos = kb + j;
            off[it] = -1;
            if (kpos < k_last) {
                const int blk = bs_pow2 ? kpos >> bs_shift : kpos / block_size;
                long slot = (long)table[blk] * block_size + (kpos - blk * block_size);
                off[it] = (slot * n_kv_heads + kvh) * D + (long)c * 8;
            }
        }
#pragma unroll
        for (int it = 0; it < N_CP; it++) {
            int idx = lane + 32 * it, j = idx / (D / 8), c = idx % (D / 8);
            bool ok = off[it] >= 0;
            kc_dec_cp16(ks + j * QS + c * 8, ok ? k_cache + off[it] : k_cache, ok ? 16 : 0);
            kc_dec_cp16(vs + j * QS + c * 8, ok ? v_cache + off[it] : v_cache, ok ? 16 : 0);
        }
    };

    // The pipeline: STAGES - 1 sub-tiles in flight ahead of the one computed. Every iteration
    // commits one group (empty ones too) so wait_group<STAGES - 1> always means "sub-tile i is in".
#pragma unroll
    for (int st = 0; st < KC_DEC_STAGES - 1; st++) {
        if (st < n_mine) load(st);
        kc_cp_async_commit();
    }
    for (int i = 0; i < n_mine; i++) {
        __syncwarp(); // every lane is done with the stage refilled next (read at iteration i - 1)
        if (i + KC_DEC_STAGES - 1 < n_mine) load(i + KC_DEC_STAGES - 1);
        kc_cp_async_commit();
        kc_cp_async_wait<KC_DEC_STAGES - 1>();
        __syncwarp(); // the other lanes' copies of sub-tile i are visible
        const bf16 *ks = my_ring + (i % KC_DEC_STAGES) * STAGE, *vs = ks + KC_DEC_SUB * QS;
        const int kb = k_first + (warp + KC_DEC_WARPS * i) * KC_DEC_SUB;

        // S = Q K^T: 16 rows x 16 keys, two n-tiles of 8 keys.
        float s[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            const bf16 *k0 = ks + (nt * 8 + g) * QS + tg * 2;
#pragma unroll
            for (int kc = 0; kc < D / 16; kc++)
                kc_mma_bf16(s[nt], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3],
                            kc_dec_ld32(k0 + kc * 16), kc_dec_ld32(k0 + kc * 16 + 8));
        }
        // Mask (past the slice, or in the row's future), then the online softmax of rows g and
        // g + 8 (each shared by the 4 lanes of the quad).
        float alpha[2];
#pragma unroll
        for (int i2 = 0; i2 < 2; i2++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int key = kb + nt * 8 + tg * 2 + e;
                    float v = key < k_last && key <= qpos[i2] ? s[nt][2 * i2 + e] * scale_log2
                                                              : -INFINITY;
                    s[nt][2 * i2 + e] = v;
                    mx = fmaxf(mx, v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float m_new = fmaxf(m[i2], mx);
            alpha[i2] = m[i2] == -INFINITY ? 0.0f : exp2f(m[i2] - m_new);
            float sum = 0.0f;
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = s[nt][2 * i2 + e];
                    float p = v == -INFINITY ? 0.0f : exp2f(v - m_new);
                    s[nt][2 * i2 + e] = p;
                    sum += p;
                }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            l[i2] = l[i2] * alpha[i2] + sum;
            m[i2] = m_new;
        }
        // O = O alpha + P V. P's A fragment comes straight from the S accumulators (keys 2tg, +1
        // of n-tile 0, then of n-tile 1); V's B fragment for dims n*8 + g is two keys a register,
        // read from the row-major tile.
        uint32_t pa[4] = {kc_pack_bf16x2(s[0][0], s[0][1]), kc_pack_bf16x2(s[0][2], s[0][3]),
                          kc_pack_bf16x2(s[1][0], s[1][1]), kc_pack_bf16x2(s[1][2], s[1][3])};
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
            const bf16 *v0 = vs + (2 * tg) * QS + n * 8 + g;
            uint32_t b0 = (uint32_t)v0[0] | ((uint32_t)v0[QS] << 16);
            uint32_t b1 = (uint32_t)v0[8 * QS] | ((uint32_t)v0[9 * QS] << 16);
            kc_mma_bf16(o[n], pa[0], pa[1], pa[2], pa[3], b0, b1);
        }
    }

    // Merge the four warps' states: each writes its rows' (o, m, l) into shared memory (the ring
    // is free once every warp is past its loop), then the block combines row by row.
    kc_cp_async_wait<0>();
    __syncthreads();
    float *red = reinterpret_cast<float *>(kc_dec_smem_raw); // [WARPS, ROWS, D + 2]
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float *dst = red + (size_t)(warp * KC_DEC_ROWS + g + 8 * i) * (D + 2);
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            dst[n * 8 + tg * 2] = o[n][2 * i];
            dst[n * 8 + tg * 2 + 1] = o[n][2 * i + 1];
        }
        if (tg == 0) {
            dst[D] = m[i];
            dst[D + 1] = l[i];
        }
    }
    __syncthreads();
    // A warp per row: the four warps' weights once per row, then D / 32 dims a lane (the same
    // sums, in the same order, as one thread per element made before: that loop recomputed the
    // row's weights for every element and cost ~4 us a launch at one token).
    for (int r = warp; r < KC_DEC_ROWS; r += KC_DEC_WARPS) {
        const int t = t0 + r / gp, hh = r % gp;
        if (!(r < tq * gp && t < qlen && hh < gp_here)) continue; // warp-uniform
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < KC_DEC_WARPS; w++)
            mx = fmaxf(mx, red[(size_t)(w * KC_DEC_ROWS + r) * (D + 2) + D]);
        float f[KC_DEC_WARPS], sum = 0.0f;
        bool on[KC_DEC_WARPS]; // false: a warp that saw no visible key
#pragma unroll
        for (int w = 0; w < KC_DEC_WARPS; w++) {
            const float *src = red + (size_t)(w * KC_DEC_ROWS + r) * (D + 2);
            on[w] = src[D] != -INFINITY;
            f[w] = on[w] ? exp2f(src[D] - mx) : 0.0f;
            if (on[w]) sum += src[D + 1] * f[w];
        }
        const size_t tok = (size_t)(qs + t), head = (size_t)(h0 + hh);
        float *p = partial ? partial + ((tok * n_heads + head) * n_splits + split) * (D + 2) : NULL;
#pragma unroll
        for (int e = 0; e < D / 32; e++) {
            const int d = lane + 32 * e;
            float acc = 0.0f;
#pragma unroll
            for (int w = 0; w < KC_DEC_WARPS; w++)
                if (on[w]) acc += red[(size_t)(w * KC_DEC_ROWS + r) * (D + 2) + d] * f[w];
            if (p)
                p[d] = acc;
            else
                out[(tok * n_heads + head) * D + d] = kc_bf(sum > 0.0f ? acc / sum : 0.0f);
        }
        if (p && lane == 0) {
            p[D] = mx; // -inf when the slice held no visible key: the combine skips it
            p[D + 1] = sum;
        }
    }
    if (!partial || !fused_combine) return;

    // Fused combine (kc_dec_tickets): publish this slice's partials, take a ticket; the last
    // slice block of the group merges all of them, a warp per row.
    __shared__ int kc_dec_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned grp =
            ((unsigned)(blockIdx.x / n_splits) * gridDim.y + blockIdx.y) * gridDim.z + blockIdx.z;
        unsigned ticket = atomicAdd(&kc_dec_tickets[grp], 1u);
        kc_dec_last = ticket == (unsigned)n_splits - 1;
        if (kc_dec_last) kc_dec_tickets[grp] = 0u;
    }
    __syncthreads();
    if (!kc_dec_last) return;
    __threadfence();
    for (int r = warp; r < KC_DEC_ROWS; r += KC_DEC_WARPS) {
        const int t = t0 + r / gp, hh = r % gp;
        if (!(r < tq * gp && t < qlen && hh < gp_here)) continue; // warp-uniform
        const size_t tok = (size_t)(qs + t), head = (size_t)(h0 + hh);
        kc_dec_merge_row<D>(out + (tok * n_heads + head) * D,
                            partial + (tok * n_heads + head) * n_splits * (D + 2), n_splits, lane);
    }
}

// Merges the key slices (attention.cu's combine, reorganised for many slices): one warp per
// (token, query head), kc_dec_merge_row. The default merge of a split launch (the ticket merge
// replaces it only when asked for and the launch has no more groups than kc_dec_tickets holds).
// (The minimum of 4 blocks lets ptxas use the registers the merge's batch of loads needs: left
// to itself it aimed at full occupancy, 32 registers, and issued the loads one by one.)
template <int D>
__global__ void __launch_bounds__(128, 4)
    kc_dec_combine(bf16 *out /* [n_tokens, n_heads * D] */,
                   const float *partial /* [n_tokens, n_heads, n_splits, D + 2] */, int n_heads,
                   int n_splits) {
    kc_pdl_begin();
    const int lane = threadIdx.x & 31, head = blockIdx.y * 4 + (threadIdx.x >> 5);
    if (head >= n_heads) return;
    const size_t row = (size_t)blockIdx.x * n_heads + head;
    kc_dec_merge_row<D>(out + row * D, partial + row * n_splits * (D + 2), n_splits, lane);
}

// ---- launchers

template <int D> static cudaError_t kc_dec_setup_one(void) {
    return cudaFuncSetAttribute(kc_attention_dec<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)kc_dec_smem<D>());
}

// Contexts this short run as one slice (attention_dec.h); set once at setup, read per launch.
static int kc_dec_min_split_ctx = KERN_CUDA_DEC_MIN_SPLIT_CTX;
// Whether split launches merge their slices in the main kernel. Off by default
// (KEEL_ATTN_FUSED_COMBINE=1 turns it on): on the H100 (2026-11-22, docs/PERF.md run 6) it did not
// make decode faster (7B: 5.942 ms/step with it, 5.905 without), and with it on two forwards of the
// same batch gave float32 logits differing by up to 1.9e-6 (gpu_sample_model_tiny), where the
// separate combine kernel is deterministic.
static int kc_dec_fused_combine = 0;

extern "C" int kern_cuda__attention_dec_setup(void) {
    CUDA_CHECK(kc_dec_setup_one<64>());
    CUDA_CHECK(kc_dec_setup_one<128>());
    const char *env = getenv("KEEL_ATTN_SPLIT_MIN_CTX");
    if (env && *env) kc_dec_min_split_ctx = atoi(env);
    env = getenv("KEEL_ATTN_FUSED_COMBINE");
    kc_dec_fused_combine = env && strcmp(env, "1") == 0;
    return 0;
}

extern "C" int kern_cuda__attention_dec_min_split_ctx(void) {
    return kc_dec_min_split_ctx;
}

extern "C" void kern_cuda__attention_dec_set_min_split_ctx(int keys) {
    kc_dec_min_split_ctx = keys;
}

extern "C" int kern_cuda__attention_dec_fused_combine(void) {
    return kc_dec_fused_combine;
}

extern "C" void kern_cuda__attention_dec_set_fused_combine(int on) {
    kc_dec_fused_combine = on != 0;
}

template <int D>
static void kc_dec_launch(dim3 grid, cudaStream_t s, bf16 *out, const bf16 *qkv, const bf16 *kc,
                          const bf16 *vc, const struct kern_attn_batch *b, int n_heads,
                          int n_kv_heads, int block_size, int gp, int n_parts, int tq,
                          float scale_log2, int n_splits, int split_len, float *partial,
                          int fused_combine) {
    kc_launch(kc_attention_dec<D>, grid, KC_DEC_WARPS * 32, kc_dec_smem<D>(), s, out, qkv, kc, vc,
              b->query_start, b->seq_lens, b->block_tables, b->max_blocks_per_seq, n_heads,
              n_kv_heads, block_size, gp, n_parts, tq, scale_log2, n_splits, split_len, partial,
              fused_combine);
}

extern "C" int kern_cuda__attention_dec(bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                                        const bf16 *v_cache, const struct kern_attn_batch *b,
                                        int n_heads, int n_kv_heads, int head_dim, int block_size,
                                        float scale, void *scratch, size_t scratch_bytes, int n_sm,
                                        cudaStream_t s) {
    if (!b || b->n_seqs < 0 || b->n_tokens < 0 || n_heads <= 0 || n_kv_heads <= 0 ||
        n_heads % n_kv_heads != 0 || block_size <= 0 || b->max_blocks_per_seq <= 0 ||
        b->max_query_len < 0)
        return err_set(ERR_INVAL,
                       "attention (decode): bad sizes n_heads=%d n_kv_heads=%d block_size=%d",
                       n_heads, n_kv_heads, block_size);
    if (head_dim != 64 && head_dim != 128)
        return err_set(ERR_UNSUPPORTED, "attention (decode): head_dim %d (supported: 64, 128)",
                       head_dim);
    if (b->n_seqs == 0 || b->n_tokens == 0 || b->max_query_len == 0) return 0;
    int group = n_heads / n_kv_heads;
    int gp = group < KC_DEC_ROWS ? group : KC_DEC_ROWS;
    int n_parts = (group + gp - 1) / gp;
    int tq = KC_DEC_ROWS / gp;
    int q_tiles = (b->max_query_len + tq - 1) / tq;
    long blocks = (long)q_tiles * b->n_seqs * n_kv_heads * n_parts;
    size_t per_split = (size_t)b->n_tokens * n_heads * (head_dim + 2) * sizeof(float);
    int split_len;
    int n_splits =
        kern_cuda_dec_splits(blocks > (1 << 30) ? (1 << 30) : (int)blocks, b->max_seq_len,
                             per_split, scratch ? scratch_bytes : 0, n_sm, &split_len);
    if (b->max_seq_len <= kc_dec_min_split_ctx) { // one slice covering every key, no combine
        n_splits = 1;
        split_len = 1 << 30;
    }
    float *partial = n_splits > 1 ? (float *)scratch : NULL;
    dim3 grid(q_tiles * n_splits, b->n_seqs, n_kv_heads * n_parts);
    if (grid.y > KC_MAX_GRID_YZ || grid.z > KC_MAX_GRID_YZ)
        return err_set(ERR_INVAL, "attention (decode): grid too large (n_seqs=%d)", b->n_seqs);
    float sl = scale * 1.4426950408889634f;
    const int fused = partial && kc_dec_fused_combine && blocks <= KC_DEC_MAX_GROUPS;
    if (head_dim == 64)
        kc_dec_launch<64>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                          gp, n_parts, tq, sl, n_splits, split_len, partial, fused);
    else
        kc_dec_launch<128>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                           gp, n_parts, tq, sl, n_splits, split_len, partial, fused);
    KC_LAUNCHED();
    if (!partial || fused) return 0;
    dim3 cgrid(b->n_tokens, (n_heads + 3) / 4);
    if (head_dim == 64)
        kc_launch(kc_dec_combine<64>, cgrid, 128, 0, s, out, partial, n_heads, n_splits);
    else
        kc_launch(kc_dec_combine<128>, cgrid, 128, 0, s, out, partial, n_heads, n_splits);
    KC_LAUNCHED();
    return 0;
}

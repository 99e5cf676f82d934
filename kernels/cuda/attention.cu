// attention: causal attention over the paged KV cache for a mixed batch of prefill chunks and
// decode tokens (kernels/ops.h, struct kern_attn_batch), GQA-aware, reading K/V straight from the
// cache blocks (no gather copies). bf16 q/k/v, float32 scores, softmax and accumulation.
//
// Layout: one launch for the whole batch. Grid (query tile, sequence, kv head x head part). A
// block of 4 warps owns up to 32 query rows: TQ consecutive query tokens of one sequence times
// the GQA group's query heads that share one kv head (a decode token of a model with 7 query
// heads per kv head is 7 rows). The block walks the sequence's keys 0..(last position in its
// tile) in tiles of 32 keys; each tile's K and V rows are loaded from their cache blocks once
// into shared memory and used by every row, so K/V cross device memory once per (tile of queries,
// kv head) rather than once per query head. Each warp owns rows warp, warp+4, ...; lane j scores
// key j of the tile, then the warp updates its rows' online softmax (max, sum, rescaled output
// held in registers, each lane owning head_dim/32 output dims).
//
// Split-KV (flash-decoding): when the batch alone would leave most multiprocessors idle (a few
// long decodes), each block takes one slice of the keys and writes its unnormalised output, max
// and sum to the op_scratch workspace; kc_attention_combine then merges the slices. The number
// of slices is chosen on the host from the batch's size hints, bounded by the scratch given.
//
// This is the correct general kernel for both phases; it runs on CUDA cores. Known limits, for
// the speed issue: no tensor cores for prefill, no software pipelining of the tile loads. The
// dispatcher (end of file) now sends long query spans to attention_tc.cu and short ones (decode)
// to attention_dec.cu for head_dim 64/128; this kernel takes the other head dims, and every short
// span when KEEL_ATTN_DECODE=old (the A/B baseline and the fallback).
// head_dim: 16, 32, 64, 96, 128 or 256 (a template each; lanes own output pairs 2*lane + 64*i).
#include "kernels/cuda/attention_dec.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KC_ATT_WARPS 4
#define KC_ATT_RPW 8                            // rows per warp
#define KC_ATT_ROWS (KC_ATT_WARPS * KC_ATT_RPW) // query rows per block
#define KC_ATT_KT 32                            // keys per tile (one per lane)
#define KC_ATT_MIN_SPLIT_KEYS 256               // split-KV: fewest keys per slice

template <int D> static constexpr size_t kc_att_smem() {
    return (size_t)KC_ATT_ROWS * D * 4 + (size_t)KC_ATT_KT * (D + 2) * 2 +
           (size_t)KC_ATT_KT * D * 2;
}

// ---- kernels

template <int D>
__global__ void __launch_bounds__(KC_ATT_WARPS * 32)
    kc_attention(bf16 *out /* [n_tokens, n_heads * D] */,
                 const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * D] */,
                 const bf16 *k_cache /* [n_blocks, block_size, n_kv, D] */,
                 const bf16 *v_cache /* same */, const int32_t *query_start /* [n_seqs + 1] */,
                 const int32_t *seq_lens /* [n_seqs] */,
                 const int32_t *block_tables /* [n_seqs, max_blocks_per_seq] */,
                 int max_blocks_per_seq, int n_heads, int n_kv_heads, int block_size, int gp,
                 int n_parts, int tq, float scale_log2, int n_splits, int split_len,
                 float *partial /* [n_tokens, n_heads, n_splits, D + 2] or NULL */) {
    extern __shared__ __align__(16) unsigned char kc_att_smem_raw[];
    float *q_s = reinterpret_cast<float *>(kc_att_smem_raw);             // [ROWS, D]
    uint32_t *k_s = reinterpret_cast<uint32_t *>(q_s + KC_ATT_ROWS * D); // [KT, D/2 + 1]
    bf16 *v_s = reinterpret_cast<bf16 *>(k_s + KC_ATT_KT * (D / 2 + 1)); // [KT, D]

    const int seq = blockIdx.y;
    const int kvh = blockIdx.z / n_parts, part = blockIdx.z % n_parts;
    const int qs = query_start[seq], qlen = query_start[seq + 1] - qs;
    const int split = blockIdx.x % n_splits;
    const int t0 = (blockIdx.x / n_splits) * tq;
    if (t0 >= qlen) return;
    const int group = n_heads / n_kv_heads;
    const int h0 = kvh * group + part * gp;         // first query head of this block
    const int gp_here = min(gp, group - part * gp); // heads of this block's part
    const int first_pos = seq_lens[seq] - qlen;
    const int t_end = min(t0 + tq, qlen);
    const int n_keys = first_pos + t_end; // keys 0 .. last position of the tile
    const int row_stride = (n_heads + 2 * n_kv_heads) * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int32_t *table = block_tables + (size_t)seq * max_blocks_per_seq;

    // Query rows into shared memory as float; row r = (token t0 + r / gp, head h0 + r % gp).
    for (int idx = threadIdx.x; idx < KC_ATT_ROWS * D; idx += blockDim.x) {
        int r = idx / D, d = idx % D, t = t0 + r / gp, hh = r % gp;
        float v = 0.0f;
        if (r < tq * gp && t < qlen && hh < gp_here)
            v = kc_f(qkv[(size_t)(qs + t) * row_stride + (size_t)(h0 + hh) * D + d]);
        q_s[idx] = v;
    }

    constexpr int NP = (D + 63) / 64; // output pairs per lane: dims 64 * i + 2 * lane, + 1
    float m[KC_ATT_RPW], l[KC_ATT_RPW], o[KC_ATT_RPW][2 * NP];
    int qpos[KC_ATT_RPW];
#pragma unroll
    for (int e = 0; e < KC_ATT_RPW; e++) {
        int r = e * KC_ATT_WARPS + warp, t = t0 + r / gp, hh = r % gp;
        bool ok = r < tq * gp && t < qlen && hh < gp_here;
        qpos[e] = ok ? first_pos + t : -1; // -1: no row here
        m[e] = -INFINITY;
        l[e] = 0.0f;
#pragma unroll
        for (int i = 0; i < 2 * NP; i++)
            o[e][i] = 0.0f;
    }

    // This block's slice of the keys: [split * split_len, (split + 1) * split_len) (a multiple of
    // the tile), or all of them without split-KV.
    const int k_first = split * split_len;
    const int k_last = min(n_keys, k_first + split_len);
    const int kt_end = (k_last + KC_ATT_KT - 1) / KC_ATT_KT;
    for (int kt = k_first / KC_ATT_KT; kt < kt_end; kt++) {
        const int kb = kt * KC_ATT_KT;
        __syncthreads(); // the previous tile's readers are done (and q_s is written, first time)
        for (int idx = threadIdx.x; idx < KC_ATT_KT * (D / 8); idx += blockDim.x) {
            int j = idx / (D / 8), c = idx % (D / 8), kpos = kb + j;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (kpos < k_last) {
                size_t slot = (size_t)table[kpos / block_size] * block_size + kpos % block_size;
                size_t off = (slot * n_kv_heads + kvh) * D + (size_t)c * 8;
                kv = *reinterpret_cast<const uint4 *>(k_cache + off);
                vv = *reinterpret_cast<const uint4 *>(v_cache + off);
            }
            uint32_t *kd = k_s + j * (D / 2 + 1) + c * 4;
            kd[0] = kv.x;
            kd[1] = kv.y;
            kd[2] = kv.z;
            kd[3] = kv.w;
            *reinterpret_cast<uint4 *>(v_s + j * D + c * 8) = vv;
        }
        __syncthreads();

#pragma unroll
        for (int e = 0; e < KC_ATT_RPW; e++) {
            if (qpos[e] < kb) continue; // no row, or every key of this tile is in its future
            const float *q = q_s + (e * KC_ATT_WARPS + warp) * D;
            const uint32_t *k = k_s + lane * (D / 2 + 1);
            float s = 0.0f;
#pragma unroll 8
            for (int d2 = 0; d2 < D / 2; d2++) {
                uint32_t w = k[d2];
                float2 qq = *reinterpret_cast<const float2 *>(q + 2 * d2);
                s += qq.x * kc_f((bf16)(w & 0xffff)) + qq.y * kc_f((bf16)(w >> 16));
            }
            s = kb + lane <= qpos[e] && kb + lane < k_last ? s * scale_log2 : -INFINITY;
            float m_new = fmaxf(m[e], kc_warp_max(s));
            float p = s == -INFINITY ? 0.0f : exp2f(s - m_new);
            float alpha = m[e] == -INFINITY ? 0.0f : exp2f(m[e] - m_new);
            l[e] = l[e] * alpha + kc_warp_sum(p);
            m[e] = m_new;
#pragma unroll
            for (int i = 0; i < NP; i++) {
                float a0 = o[e][2 * i] * alpha, a1 = o[e][2 * i + 1] * alpha;
                // Lanes past head_dim (D not a multiple of 64) read a valid word of the next row
                // and never store it; the shuffles need every lane.
                int col = (64 * i + 2 * lane) % D;
#pragma unroll 8
                for (int j = 0; j < KC_ATT_KT; j++) {
                    float pj = __shfl_sync(0xffffffffu, p, j);
                    uint32_t w = *reinterpret_cast<const uint32_t *>(v_s + j * D + col);
                    a0 += pj * kc_f((bf16)(w & 0xffff));
                    a1 += pj * kc_f((bf16)(w >> 16));
                }
                o[e][2 * i] = a0;
                o[e][2 * i + 1] = a1;
            }
        }
    }

#pragma unroll
    for (int e = 0; e < KC_ATT_RPW; e++) {
        if (qpos[e] < 0) continue;
        int r = e * KC_ATT_WARPS + warp, t = t0 + r / gp, hh = r % gp;
        if (partial) {
            float *p =
                partial + (((size_t)(qs + t) * n_heads + h0 + hh) * n_splits + split) * (D + 2);
#pragma unroll
            for (int i = 0; i < NP; i++)
                if (64 * i + 2 * lane < D)
                    *reinterpret_cast<float2 *>(p + 64 * i + 2 * lane) =
                        make_float2(o[e][2 * i], o[e][2 * i + 1]);
            if (lane == 0) {
                p[D] = m[e];
                p[D + 1] = l[e];
            }
            continue;
        }
        float inv = l[e] > 0.0f ? 1.0f / l[e] : 0.0f;
        bf16 *dst = out + (size_t)(qs + t) * n_heads * D + (size_t)(h0 + hh) * D;
#pragma unroll
        for (int i = 0; i < NP; i++) {
            if (64 * i + 2 * lane >= D) continue;
            uint32_t w =
                (uint32_t)kc_bf(o[e][2 * i] * inv) | ((uint32_t)kc_bf(o[e][2 * i + 1] * inv) << 16);
            *reinterpret_cast<uint32_t *>(dst + 64 * i + 2 * lane) = w;
        }
    }
}

// Merges the key slices of split-KV: out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M), M the
// largest slice max. One block of D threads per (token, query head).
template <int D>
__global__ void
kc_attention_combine(bf16 *out /* [n_tokens, n_heads * D] */,
                     const float *partial /* [n_tokens, n_heads, n_splits, D + 2] */, int n_heads,
                     int n_splits) {
    const float *p = partial + ((size_t)blockIdx.x * n_heads + blockIdx.y) * n_splits * (D + 2);
    float mx = -INFINITY;
    for (int s = 0; s < n_splits; s++)
        mx = fmaxf(mx, p[s * (D + 2) + D]);
    float acc = 0.0f, sum = 0.0f;
    for (int s = 0; s < n_splits; s++) {
        const float *ps = p + s * (D + 2);
        float ms = ps[D];
        if (ms == -INFINITY) continue; // a slice with no visible key
        float w = exp2f(ms - mx);
        sum += ps[D + 1] * w;
        acc += ps[threadIdx.x] * w;
    }
    out[((size_t)blockIdx.x * n_heads + blockIdx.y) * D + threadIdx.x] =
        kc_bf(sum > 0.0f ? acc / sum : 0.0f);
}

// ---- launchers

template <int D> static cudaError_t kc_att_setup_one(void) {
    return cudaFuncSetAttribute(kc_attention<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)kc_att_smem<D>());
}

// Whether short query spans take the decode path (attention_dec.cu): set once at start-up from
// KEEL_ATTN_DECODE ("old" or "0": the CUDA-core kernel, for A/B runs and as a fallback), read by
// the dispatcher like a setting, never written per step.
static int kc_att_dec_on = 1;

extern "C" int kern_cuda__attention_dec_enabled(void) {
    return kc_att_dec_on;
}

extern "C" int kern_cuda_attention_setup(void) {
    const char *env = getenv("KEEL_ATTN_DECODE");
    kc_att_dec_on = !(env && (!strcmp(env, "old") || !strcmp(env, "0")));
    int rc = kern_cuda__attention_tc_setup();
    if (rc) return rc;
    if ((rc = kern_cuda__attention_dec_setup())) return rc;
    CUDA_CHECK(kc_att_setup_one<16>());
    CUDA_CHECK(kc_att_setup_one<32>());
    CUDA_CHECK(kc_att_setup_one<64>());
    CUDA_CHECK(kc_att_setup_one<96>());
    CUDA_CHECK(kc_att_setup_one<128>());
    CUDA_CHECK(kc_att_setup_one<256>());
    return 0;
}

template <int D>
static void kc_att_launch(dim3 grid, cudaStream_t s, bf16 *out, const bf16 *qkv, const bf16 *kc,
                          const bf16 *vc, const struct kern_attn_batch *b, int n_heads,
                          int n_kv_heads, int block_size, int gp, int n_parts, int tq,
                          float scale_log2, int n_splits, int split_len, float *partial) {
    kc_attention<D><<<grid, KC_ATT_WARPS * 32, kc_att_smem<D>(), s>>>(
        out, qkv, kc, vc, b->query_start, b->seq_lens, b->block_tables, b->max_blocks_per_seq,
        n_heads, n_kv_heads, block_size, gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
    if (partial)
        kc_attention_combine<D>
            <<<dim3(b->n_tokens, n_heads), D, 0, s>>>(out, partial, n_heads, n_splits);
}

extern "C" size_t kern_cuda_attention_scratch_bytes(int max_tokens, int n_heads, int head_dim) {
    return (size_t)max_tokens * n_heads * KERN_CUDA_ATT_MAX_SPLITS * (head_dim + 2) * sizeof(float);
}

// How many key slices: enough blocks to fill the multiprocessors about twice, slices of at least
// KC_ATT_MIN_SPLIT_KEYS keys, at most KERN_CUDA_ATT_MAX_SPLITS, and what the scratch holds.
static int kc_att_splits(int blocks, int max_seq_len, int n_tokens, int n_heads, int head_dim,
                         int n_sm, size_t scratch_bytes) {
    if (n_sm <= 0 || blocks >= n_sm) return 1;
    int want = (2 * n_sm + blocks - 1) / blocks;
    int by_len = max_seq_len / KC_ATT_MIN_SPLIT_KEYS;
    size_t per = (size_t)n_tokens * n_heads * (head_dim + 2) * sizeof(float);
    int by_scratch = per ? (int)(scratch_bytes / per) : 0;
    int n = want < by_len ? want : by_len;
    n = n < by_scratch ? n : by_scratch;
    n = n < KERN_CUDA_ATT_MAX_SPLITS ? n : KERN_CUDA_ATT_MAX_SPLITS;
    return n > 1 ? n : 1;
}

static int kc_att_check(const struct kern_attn_batch *b, int n_heads, int n_kv_heads, int head_dim,
                        int block_size) {
    if (!b || b->n_seqs < 0 || n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0 ||
        block_size <= 0 || b->max_blocks_per_seq <= 0 || b->max_query_len < 0)
        return err_set(ERR_INVAL,
                       "attention: bad sizes n_heads=%d n_kv_heads=%d block_size=%d "
                       "max_blocks_per_seq=%d",
                       n_heads, n_kv_heads, block_size, b ? b->max_blocks_per_seq : -1);
    if (head_dim != 16 && head_dim != 32 && head_dim != 64 && head_dim != 96 && head_dim != 128 &&
        head_dim != 256)
        return err_set(ERR_UNSUPPORTED,
                       "attention: head_dim %d (supported: 16, 32, 64, 96, 128, 256)", head_dim);
    return 0;
}

// The CUDA-core path (any supported head_dim, split-KV when the scratch allows).
extern "C" int kern_cuda__attention_cc(bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                                       const bf16 *v_cache, const struct kern_attn_batch *b,
                                       int n_heads, int n_kv_heads, int head_dim, int block_size,
                                       float scale, void *scratch, size_t scratch_bytes, int n_sm,
                                       cudaStream_t s) {
    int rc = kc_att_check(b, n_heads, n_kv_heads, head_dim, block_size);
    if (rc || b->n_seqs == 0 || b->n_tokens == 0 || b->max_query_len == 0) return rc;
    int group = n_heads / n_kv_heads;
    int gp = group < KC_ATT_ROWS ? group : KC_ATT_ROWS;
    int n_parts = (group + gp - 1) / gp;
    int tq = KC_ATT_ROWS / gp;
    int q_tiles = (b->max_query_len + tq - 1) / tq;
    int n_splits = kc_att_splits(q_tiles * b->n_seqs * n_kv_heads * n_parts, b->max_seq_len,
                                 b->n_tokens, n_heads, head_dim, n_sm, scratch ? scratch_bytes : 0);
    int split_len = n_splits > 1 ? ((b->max_seq_len + n_splits - 1) / n_splits + KC_ATT_KT - 1) /
                                       KC_ATT_KT * KC_ATT_KT
                                 : 1 << 30;
    float *partial = n_splits > 1 ? (float *)scratch : NULL;
    dim3 grid(q_tiles * n_splits, b->n_seqs, n_kv_heads * n_parts);
    if (grid.y > KC_MAX_GRID_YZ || grid.z > KC_MAX_GRID_YZ)
        return err_set(ERR_INVAL, "attention: grid too large (n_seqs=%d)", b->n_seqs);
    float scale_log2 = scale * 1.4426950408889634f;
    switch (head_dim) {
    case 16:
        kc_att_launch<16>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                          gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
        break;
    case 32:
        kc_att_launch<32>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                          gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
        break;
    case 96:
        kc_att_launch<96>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                          gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
        break;
    case 64:
        kc_att_launch<64>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                          gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
        break;
    case 128:
        kc_att_launch<128>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                           gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
        break;
    default:
        kc_att_launch<256>(grid, s, out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, block_size,
                           gp, n_parts, tq, scale_log2, n_splits, split_len, partial);
        break;
    }
    KC_LAUNCHED();
    return 0;
}

// The dispatcher: batches with query spans long enough to fill the tensor cores' 16-row tiles
// (at least a 64-row block of (token, head) rows) take the tensor-core path (attention_tc.cu);
// decode batches and short spans take the decode path (attention_dec.cu, head_dim 64/128) unless
// KEEL_ATTN_DECODE=old, else the CUDA-core path; both split the keys when the GPU would idle.
extern "C" int kern_cuda_attention(bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                                   const bf16 *v_cache, const struct kern_attn_batch *b,
                                   int n_heads, int n_kv_heads, int head_dim, int block_size,
                                   float scale, void *scratch, size_t scratch_bytes, int n_sm,
                                   cudaStream_t s) {
    int rc = kc_att_check(b, n_heads, n_kv_heads, head_dim, block_size);
    if (rc || b->n_seqs == 0 || b->n_tokens == 0 || b->max_query_len == 0) return rc;
    int group = n_heads / n_kv_heads;
    if ((head_dim == 64 || head_dim == 128) && (long)b->max_query_len * group >= 64)
        return kern_cuda__attention_tc(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, head_dim,
                                       block_size, scale, s);
    if (kc_att_dec_on && (head_dim == 64 || head_dim == 128))
        return kern_cuda__attention_dec(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads,
                                        head_dim, block_size, scale, scratch, scratch_bytes, n_sm,
                                        s);
    return kern_cuda__attention_cc(out, qkv, k_cache, v_cache, b, n_heads, n_kv_heads, head_dim,
                                   block_size, scale, scratch, scratch_bytes, n_sm, s);
}

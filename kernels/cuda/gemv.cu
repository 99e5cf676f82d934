// gemv: thin GEMMs for decode, y[m, n] = x[m, k] . w[n, k]^T (+ bias), for m <= 8 rows of x:
// bf16 in, float32 accumulation, bf16 or float32 out, weights row-major [n, k] as stored.
//
// At m <= 8 the op is a stream over the weights (n * k * 2 bytes) with almost no arithmetic, so
// the kernel is built to keep enough bytes in flight to reach the copy rate: each warp owns a tile
// of 16 weight rows and walks its share of k in chunks of 128 columns, every lane loading 16 bytes
// from each of its two rows four times per chunk (8 independent 16-byte loads per lane, 4 KiB per
// warp) before any arithmetic. The products go through one tensor-core instruction,
// mma.m16n8k16 (A = 16 weight rows, B = the 8 rows of x, fp32 accumulators), so the arithmetic
// costs nothing whatever m is. The instruction's fragment order is not the memory order, but a
// dot product does not care in which order k is summed: each lane feeds its 16 contiguous bytes
// of a row as k positions {2t, 2t+1, 2t+8, 2t+9} of one mma and the next four of a second, and
// feeds x the same way, so A and B see the same permutation of k and the sum is unchanged.
//
// A block holds `warps` warps on the same 16 rows, splitting k between them (chunk c goes to warp
// c mod warps, so a block's warps stream neighbouring bytes); the block adds their partial sums
// in shared memory and writes y (plus the bias, one rounding). So there is no separate split-K
// pass: n / 16 blocks of up to 8 warps give 224 (wo) to 9504 (logits) blocks of 8 warps, enough
// warps to fill 132 SMs at every shape of the 7-8B models. Rows past n and rows of x past m are
// read clamped to the last valid row (no branch in the loop) and never stored.
//
// x is read through the read-only cache: every warp of every block reads the same m * k values,
// which stay in L1/L2. Weights are read with L1::no_allocate, as they are used once.
//
// The vector path needs k % 8 == 0 and 16-byte aligned w and x; otherwise (odd shapes, tests) the
// same kernel loads element by element. The partial chunk at the end of k always goes through the
// guarded loads.
//
// Fused down projection (kern_cuda_gemv_silu): y = silu_mul(gate_up) . w^T, with x computed
// while it is staged instead of read. Per chunk, each warp first issues its weight loads, then
// computes its m x 128 tile of bf16(silu(gate) * up) once (lane L: columns 4L..4L+3 of every row,
// the same arithmetic as silu_mul.cu through kernels/cuda/fused_act.h) into a per-warp
// shared-memory tile, and feeds the mma from the tile exactly as it would feed x. So each block
// evaluates m * k activations (not the 8 * k a lane-per-row layout would, which at m = 1 is 8x the
// special-function work), the [m, h] hidden row is never written or read, one launch per layer
// goes, and the result equals silu_mul followed by kern_cuda_gemv with the same warps, bit for bit.
//
// Fused residual add + RMSNorm before a projection (kern_cuda_gemv_add_rmsnorm): the same
// staging with x = bf16(nw * bf16(v * inv_rms)), v = bf16(residual + delta), so add_rmsnorm's
// launch and its normed row go. The inverse RMS needs the whole row, so every block first sums
// the squares of the m rows itself (a few KiB each, hot in L2: the previous op just wrote them)
// and block 0 stores v as the new residual into a second buffer (res_out; nobody reads it during
// the kernel, so no ordering between blocks is needed). The sum's order differs from
// add_rmsnorm.cu's block reduction, so y may differ from the unfused path in the last bit of a
// few elements; res_out is exact.
//
// The decode projections (kern_cuda_proj, kernels/ops.h struct kern_proj) add two outputs and a
// fourth input to the same kernel. RES (wo, down): y is the residual stream, updated in place with
// add_rmsnorm's rounding of residual + bf16(product), and each block leaves, for each row, the
// sum of squares of its 16 outputs (ss_out). NORMP (qkv, gate_up): the NORM staging on that
// residual, its inverse RMS from the statistics (every warp adds a row's pieces itself, loads
// issued beside its first chunk's), so no pre-pass and no add_rmsnorm launch. ROPE (qkv of
// models without a q/k norm): blocks take rope partners as tile rows g and g + 8
// (kc_gemv_row), so the epilogue rotates q and k (rope.cu's arithmetic, bit for bit) and stores
// k and v into their cache slots (kv_write.cu), and qk_rope_kv's launch goes.
//
// Programmatic dependent launch (device.h, kc_launch; KEEL_PDL=0 turns it off): launched while
// the previous kernel still runs, each warp issues its first chunk's weight loads (weights are
// never written while serving) and only then waits for the previous kernel, so the weight stream
// starts during the previous kernel's tail instead of after its drain; x and everything written
// come after the wait. After its loop a block lets the next kernel in (kc_pdl_trigger).
//
// Which wins is measured, not assumed: kern_cuda_gemm (gemm.c) times this kernel against
// cuBLASLt's pick per shape on first use and keeps the faster; bench/kernels/gemm.cu prints both
// at every 7B/8B decode shape.
#include "kernels/cuda/device.h"
#include "kernels/cuda/fused_act.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

#define KC_GEMV_ROWS 16   // weight rows per warp tile (the mma's M)
#define KC_GEMV_U 4       // 16-byte loads per row per lane per chunk
#define KC_GEMV_CHUNK 128 // k columns per chunk: 4 lanes per row x 8 columns x KC_GEMV_U
#define KC_GEMV_MAX_WARPS 8

__device__ __forceinline__ uint4 kc_gemv_ld_stream(const bf16 *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

// Activations (x, gate_up, the residual and delta: written by the kernels before this one) are
// read with these, never __ldg: __ldg is an asm statement that is neither volatile nor a memory
// access to the compiler, so it may be hoisted above kc_pdl_wait (device.h), and under
// programmatic dependent launch that read the previous kernel's output before it was written
// (the H100 run of 2026-11-22: logits off by up to 91 with PDL on). A volatile asm with a memory
// clobber stays below the wait.
__device__ __forceinline__ uint4 kc_gemv_ld_act(const bf16 *p) {
    uint4 v;
    asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p)
                 : "memory");
    return v;
}

__device__ __forceinline__ uint2 kc_gemv_ld_act2(const bf16 *p) {
    uint2 v;
    asm volatile("ld.global.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p) : "memory");
    return v;
}

// Eight bf16 from p[0..7], those at or past `left` (elements left in the row) as zero.
__device__ __forceinline__ uint4 kc_gemv_ld_guarded(const bf16 *p, int left) {
    uint32_t r[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t lo = 2 * i < left ? (uint32_t)p[2 * i] : 0u;
        uint32_t hi = 2 * i + 1 < left ? (uint32_t)p[2 * i + 1] : 0u;
        r[i] = lo | (hi << 16);
    }
    return make_uint4(r[0], r[1], r[2], r[3]);
}

// d += A (16 x 16, rows a0/a1 = row g and g + 8) . B (16 x 8): mma.m16n8k16, bf16 in, fp32 acc.
__device__ __forceinline__ void kc_gemv_mma(float d[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                            uint32_t a3, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One 16-byte slice of row g (w0), row g + 8 (w1) and x row g (xv), same k positions: two mmas.
__device__ __forceinline__ void kc_gemv_step(float acc[4], uint4 w0, uint4 w1, uint4 xv) {
    kc_gemv_mma(acc, w0.x, w1.x, w0.y, w1.y, xv.x, xv.y);
    kc_gemv_mma(acc, w0.z, w1.z, w0.w, w1.w, xv.z, xv.w);
}

// Four bf16 from p[0..3] as two packed pairs, those at or past `left` as zero.
__device__ __forceinline__ uint2 kc_gemv_ld4_guarded(const bf16 *p, int left) {
    uint32_t r[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        uint32_t lo = 2 * i < left ? (uint32_t)p[2 * i] : 0u;
        uint32_t hi = 2 * i + 1 < left ? (uint32_t)p[2 * i + 1] : 0u;
        r[i] = lo | (hi << 16);
    }
    return make_uint2(r[0], r[1]);
}

// The fused down projection's staging: tile[r][4 lane .. 4 lane + 3] = bf16(silu(gate) * up) of
// hidden row r (< m), columns kc + 4 lane.. of the [m, 2k] gate_up rows; zero past k (so the
// guarded weights meet zeros, as in the unfused kernel). All loads are issued before any math.
template <bool VEC>
__device__ __forceinline__ void kc_gemv_stage_silu(bf16 (*tile)[KC_GEMV_CHUNK],
                                                   const bf16 *gate_up /* [m, 2k] */, int m, int k,
                                                   int kc, int lane, bool full) {
    const int col = kc + 4 * lane;
    uint2 gv[KC_GEMV_ROWS / 2], uv[KC_GEMV_ROWS / 2];
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        if (r >= m) break;
        const bf16 *gp = gate_up + (size_t)r * 2 * k + col;
        if (VEC && full) {
            gv[r] = kc_gemv_ld_act2(gp);
            uv[r] = kc_gemv_ld_act2(gp + k);
        } else {
            gv[r] = kc_gemv_ld4_guarded(gp, k - col);
            uv[r] = kc_gemv_ld4_guarded(gp + k, k - col);
        }
    }
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        if (r >= m) break;
        *reinterpret_cast<uint2 *>(&tile[r][4 * lane]) =
            make_uint2(kc_silu_mul2(gv[r].x, uv[r].x), kc_silu_mul2(gv[r].y, uv[r].y));
    }
}

// The fused add + RMSNorm staging: tile[r][4 lane ..] = bf16(nw * bf16(v * inv[r])) with
// v = bf16(residual + delta) (add_rmsnorm.cu's roundings), columns kc + 4 lane.. of row r < m;
// zero past k. In two halves, so that a caller can issue other loads between them (NORMP: the
// row statistics) and have them all in flight at once: kc_gemv_norm_load issues this lane's loads,
// kc_gemv_norm_put does the arithmetic and writes the tile.
struct kc_gemv_norm_in {
    uint2 rv[KC_GEMV_ROWS / 2], dv[KC_GEMV_ROWS / 2], wv;
};

template <bool VEC>
__device__ __forceinline__ void kc_gemv_norm_load(kc_gemv_norm_in &in, const bf16 *res /* [m, k] */,
                                                  const bf16 *delta /* [m, k] or NULL */,
                                                  const bf16 *nw /* [k] */, int m, int k, int kc,
                                                  int lane, bool full) {
    const int col = kc + 4 * lane;
    const bool fast = VEC && full;
    in.wv = fast ? __ldg(reinterpret_cast<const uint2 *>(nw + col))
                 : kc_gemv_ld4_guarded(nw + col, k - col);
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        if (r >= m) break;
        const bf16 *rp = res + (size_t)r * k + col;
        in.rv[r] = fast ? kc_gemv_ld_act2(rp) : kc_gemv_ld4_guarded(rp, k - col);
        in.dv[r] = make_uint2(0u, 0u);
        if (delta) {
            const bf16 *dp = delta + (size_t)r * k + col;
            in.dv[r] = fast ? kc_gemv_ld_act2(dp) : kc_gemv_ld4_guarded(dp, k - col);
        }
    }
}

__device__ __forceinline__ void kc_gemv_norm_put(bf16 (*tile)[KC_GEMV_CHUNK],
                                                 const kc_gemv_norm_in &in, bool delta,
                                                 const float *inv, int m, int lane) {
    const uint32_t wp[2] = {in.wv.x, in.wv.y};
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        if (r >= m) break;
        const uint32_t rp[2] = {in.rv[r].x, in.rv[r].y}, dp[2] = {in.dv[r].x, in.dv[r].y};
        uint32_t o[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            uint32_t packed = 0;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float v = kc_f((bf16)(rp[i] >> (16 * h)));
                if (delta) v = kc_round(v + kc_f((bf16)(dp[i] >> (16 * h))));
                float wf = kc_f((bf16)(wp[i] >> (16 * h)));
                packed |= (uint32_t)kc_bf(wf * kc_round(v * inv[r])) << (16 * h);
            }
            o[i] = packed;
        }
        *reinterpret_cast<uint2 *>(&tile[r][4 * lane]) = make_uint2(o[0], o[1]);
    }
}

// The norm from a RES launch's row statistics (NORMP), by each warp for itself: ss[r, 0..parts)
// are the sums of squares of row r's 16-column pieces; lane L adds pieces L, L + 32, ... in
// order, then the warp's xor tree adds the lanes (every lane ends with the same sum). The loads
// of row 0 are issued by kc_gemv_ss_load before the staging's loads, so both round trips overlap.
#define KC_GEMV_SS_PER_LANE 16 // pieces a lane adds: rows of up to 16 * 32 * 16 = 8192 columns

__device__ __forceinline__ void
kc_gemv_ss_load(float v[KC_GEMV_SS_PER_LANE], const float *ss /* [parts] */, int parts, int lane) {
#pragma unroll
    for (int i = 0; i < KC_GEMV_SS_PER_LANE; i++) {
        const int j = lane + 32 * i;
        v[i] = j < parts ? ss[j] : 0.0f;
    }
}

__device__ __forceinline__ float kc_gemv_ss_inv(const float v[KC_GEMV_SS_PER_LANE], int k,
                                                float eps) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < KC_GEMV_SS_PER_LANE; i++)
        s += v[i];
    return 1.0f / sqrtf(kc_warp_sum(s) / (float)k + eps);
}

// The fused norm's pre-pass, by the whole block: inv[r] = 1 / sqrt(mean(v^2) + eps) for each row
// r < m of v = bf16(residual + delta), every block computing it for itself (the rows are a few KiB
// each and hot in L2); block 0 also stores v into res_out. Ends with a barrier.
template <bool VEC>
__device__ __forceinline__ void
kc_gemv_norm_prepass(float *inv /* [8] */, float (*part)[KC_GEMV_ROWS / 2], const bf16 *res,
                     const bf16 *delta, bf16 *res_out, int m, int k, float eps) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const bool writer = blockIdx.x == 0;
    float ss[KC_GEMV_ROWS / 2];
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        ss[r] = 0.f;
        if (r >= m) continue;
        const bf16 *rp = res + (size_t)r * k, *dp = delta ? delta + (size_t)r * k : nullptr;
        bf16 *op = res_out + (size_t)r * k;
        if (VEC) {
            for (int j = threadIdx.x * 8; j < k; j += blockDim.x * 8) {
                // Packed pairs handled as words (no bf16 view of a uint4: that is type punning).
                uint4 rv = kc_gemv_ld_act(rp + j);
                uint32_t r4[4] = {rv.x, rv.y, rv.z, rv.w};
                if (dp) {
                    uint4 dv = kc_gemv_ld_act(dp + j);
                    const uint32_t d4[4] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        bf16 lo =
                            kc_bf(kc_f((bf16)(r4[i] & 0xffff)) + kc_f((bf16)(d4[i] & 0xffff)));
                        bf16 hi = kc_bf(kc_f((bf16)(r4[i] >> 16)) + kc_f((bf16)(d4[i] >> 16)));
                        r4[i] = (uint32_t)lo | ((uint32_t)hi << 16);
                    }
                }
                if (writer)
                    *reinterpret_cast<uint4 *>(op + j) = make_uint4(r4[0], r4[1], r4[2], r4[3]);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float lo = kc_f((bf16)(r4[i] & 0xffff)), hi = kc_f((bf16)(r4[i] >> 16));
                    ss[r] += lo * lo;
                    ss[r] += hi * hi;
                }
            }
        } else {
            for (int j = threadIdx.x; j < k; j += blockDim.x) {
                float v = kc_f(rp[j]);
                if (dp) v = kc_round(v + kc_f(dp[j]));
                if (writer) op[j] = kc_bf(v);
                ss[r] += v * v;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        float t = kc_warp_sum(ss[r]);
        if (lane == 0) part[warp][r] = t;
    }
    __syncthreads();
    if (threadIdx.x < KC_GEMV_ROWS / 2) {
        float t = 0.f;
        for (int v = 0; v < n_warps; v++)
            t += part[v][threadIdx.x];
        inv[threadIdx.x] = 1.0f / sqrtf(t / (float)k + eps);
    }
    __syncthreads();
}

#define KC_GEMV_PLAIN 0 // x is [m, k]
#define KC_GEMV_SILU 1  // x is gate_up [m, 2k]: multiply by bf16(silu(gate) * up)
#define KC_GEMV_NORM 2  // x is the residual [m, k]: multiply by add_rmsnorm(x, delta) * nw
#define KC_GEMV_NORMP 3 // x is the residual [m, k], its statistics from a RES launch (ep.ss_in)

#define KC_GEMV_Y 0    // y = the product (+ bias), bf16 or float32
#define KC_GEMV_ROPE 1 // y = fused QKV rows, q and k heads rotated, k and v also into the cache
#define KC_GEMV_RES 2  // y is the residual: y = bf16(y + bf16(product)), row statistics to ss_out

// What the fused decode projections (kern_cuda_proj) need besides x, w and y.
struct kc_gemv_epi {
    const float *ss_in; // NORMP: [m, ss_parts] sums of squares of 16-column pieces of each row
    int ss_parts;
    float *ss_out;           // RES: [m, gridDim.x], the same for the rows this launch writes
    bf16 *k_cache, *v_cache; // ROPE: [slots, n_kv_heads, head_dim]
    const int32_t *positions, *slots; // ROPE: [m]; a negative slot stores nothing
    int n_heads, n_kv_heads, head_dim;
    float theta;
};

// Weight row of tile row r (< 16) of block b. Under ROPE a block's tile rows g and g + 8 are rope
// partners: rows p * 8 + g and head_dim / 2 + p * 8 + g of head h (block b = h * (head_dim / 16)
// + p), so the rotation happens in the block that computed both (head_dim % 16 == 0).
template <bool ROPE> __device__ __forceinline__ int kc_gemv_row(int b, int r, int head_dim) {
    if (!ROPE) return b * KC_GEMV_ROWS + r;
    const int per_head = head_dim / KC_GEMV_ROWS, h = b / per_head, p = b - h * per_head;
    return h * head_dim + p * 8 + (r & 7) + (r >= 8 ? head_dim / 2 : 0);
}

// Element e (< 128) of a block's reduced tile (the epilogue's thread e; not under ROPE): lane
// e / 4 held rows g, g + 8 (e % 4 = 0, 1 and 2, 3) of columns (rows of x) 2t and 2t + 1.
__device__ __forceinline__ int kc_gemv_elem_row(int e) {
    return blockIdx.x * KC_GEMV_ROWS + ((e >> 2) >> 2) + ((e & 3) >= 2 ? 8 : 0);
}
__device__ __forceinline__ int kc_gemv_elem_col(int e) {
    return 2 * ((e >> 2) & 3) + (e & 1);
}

// MODE says what x is (above), OUT what is written. SILU: y bf16, no bias (the fused down
// projection). NORM: the fused residual add + RMSNorm before the qkv or gate_up projection;
// block 0 writes the new residual to res_out (a different buffer, so no block reads what another
// writes). NORMP: the same norm with the residual already added, the inverse RMS from ep.ss_in
// (no pre-pass). ROPE: rope.cu's rotation and kv_write.cu's copy on the rounded outputs (see
// kc_gemv_row). RES: o and down projections that add themselves into the residual stream
// (add_rmsnorm's rounding of the sum) and leave each row's sum of squares over the block's 16
// columns in ss_out, which the next NORMP launch adds up: the residual add and the RMSNorm's
// statistics without a launch of their own.
template <bool VEC, int MODE, int OUT>
__global__ void __launch_bounds__(256)
    kc_gemv(void *y /* [m, n] bf16 or f32 */, int y_f32, const bf16 *x /* [m, k] or [m, 2k] */,
            const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */, int m, int n, int k,
            const bf16 *delta /* NORM: [m, k] or NULL */, const bf16 *nw /* NORM(P): [k] */,
            bf16 *res_out /* NORM: [m, k] */, float eps, kc_gemv_epi ep) {
    constexpr bool SILU = MODE == KC_GEMV_SILU, NORM = MODE == KC_GEMV_NORM;
    constexpr bool NORMP = MODE == KC_GEMV_NORMP, STAGED = SILU || NORM || NORMP;
    constexpr bool ROPE = OUT == KC_GEMV_ROPE, RES = OUT == KC_GEMV_RES;
    __shared__ float red[KC_GEMV_MAX_WARPS][32][4];
    // SILU, NORM(P): each warp's tile of the (computed) x rows for its current chunk.
    __shared__ __align__(16)
        bf16 hid[STAGED ? KC_GEMV_MAX_WARPS : 1][STAGED ? KC_GEMV_ROWS / 2 : 1][KC_GEMV_CHUNK];
    __shared__ float inv_rms[KC_GEMV_ROWS / 2];
    __shared__ float part[NORM ? KC_GEMV_MAX_WARPS : 1][KC_GEMV_ROWS / 2];
    __shared__ float sq[RES ? 128 : 1];
    // NORM reads the residual rows before its loop: it waits at once. The others wait after
    // their first chunk's weight loads are issued (below).
    if (NORM) kc_pdl_wait();
    if (NORM) kc_gemv_norm_prepass<VEC>(inv_rms, part, x, delta, res_out, m, k, eps);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const bf16 *w0 = w + (size_t)min(kc_gemv_row<ROPE>(blockIdx.x, g, ep.head_dim), n - 1) * k;
    const bf16 *w1 = w + (size_t)min(kc_gemv_row<ROPE>(blockIdx.x, g + 8, ep.head_dim), n - 1) * k;
    const bf16 *xr = x + (size_t)min(g, m - 1) * k; // PLAIN only

    // RES: thread e < 128 adds element e of the block's outputs (the epilogue below) into the
    // residual; it reads that residual element right after its wait, so the read is not a round
    // trip at the end. (With fewer than 4 warps a thread has several elements: read at the end.)
    const bool res_early = RES && blockDim.x >= 128 && threadIdx.x < 128;
    bf16 res_old = 0;
    float inv_w[KC_GEMV_ROWS / 2]; // NORMP: this warp's inverse RMS of each row
    auto after_wait = [&]() {
        if (!res_early) return;
        const int row = kc_gemv_elem_row(threadIdx.x), col = kc_gemv_elem_col(threadIdx.x);
        if (row < n && col < m) res_old = static_cast<const bf16 *>(y)[(size_t)col * n + row];
    };

    // Two accumulator chains halve the dependent mma latency per chunk.
    float acc0[4] = {0.f, 0.f, 0.f, 0.f}, acc1[4] = {0.f, 0.f, 0.f, 0.f};
    const int n_chunks = (k + KC_GEMV_CHUNK - 1) / KC_GEMV_CHUNK;
    const int n_full = VEC ? k / KC_GEMV_CHUNK : 0;
    for (int c = warp; c < n_chunks; c += n_warps) {
        const int k0 = c * KC_GEMV_CHUNK + 8 * t;
        uint4 a[KC_GEMV_U], b[KC_GEMV_U], xv[KC_GEMV_U];
        if (c < n_full) {
#pragma unroll
            for (int u = 0; u < KC_GEMV_U; u++) {
                a[u] = kc_gemv_ld_stream(w0 + k0 + 32 * u);
                b[u] = kc_gemv_ld_stream(w1 + k0 + 32 * u);
            }
            // PDL: the first chunk's weight loads are in flight while the previous kernel ends;
            // x (its output) is read only after the wait.
            if (c == warp) {
                kc_pdl_wait();
                after_wait();
            }
            if (!STAGED) {
#pragma unroll
                for (int u = 0; u < KC_GEMV_U; u++)
                    xv[u] = kc_gemv_ld_act(xr + k0 + 32 * u);
            }
        } else {
#pragma unroll
            for (int u = 0; u < KC_GEMV_U; u++) {
                int left = k - (k0 + 32 * u);
                a[u] = kc_gemv_ld_guarded(w0 + k0 + 32 * u, left);
                b[u] = kc_gemv_ld_guarded(w1 + k0 + 32 * u, left);
            }
            if (c == warp) {
                kc_pdl_wait();
                after_wait();
            }
            if (!STAGED) {
#pragma unroll
                for (int u = 0; u < KC_GEMV_U; u++)
                    xv[u] = kc_gemv_ld_guarded(xr + k0 + 32 * u, k - (k0 + 32 * u));
            }
        }
        if (STAGED) {
            const int kc = c * KC_GEMV_CHUNK;
            if (SILU) {
                kc_gemv_stage_silu<VEC>(hid[warp], x, m, k, kc, lane, c < n_full);
            } else if (NORM) {
                kc_gemv_norm_in in;
                kc_gemv_norm_load<VEC>(in, x, delta, nw, m, k, kc, lane, c < n_full);
                kc_gemv_norm_put(hid[warp], in, delta != nullptr, inv_rms, m, lane);
            } else { // NORMP: on the first chunk, row 0's statistics load beside the rows
                float sv[KC_GEMV_SS_PER_LANE];
                if (c == warp) kc_gemv_ss_load(sv, ep.ss_in, ep.ss_parts, lane);
                kc_gemv_norm_in in;
                kc_gemv_norm_load<VEC>(in, x, nullptr, nw, m, k, kc, lane, c < n_full);
                if (c == warp) {
                    inv_w[0] = kc_gemv_ss_inv(sv, k, eps);
#pragma unroll
                    for (int r = 1; r < KC_GEMV_ROWS / 2; r++) {
                        if (r >= m) break;
                        kc_gemv_ss_load(sv, ep.ss_in + (size_t)r * ep.ss_parts, ep.ss_parts, lane);
                        inv_w[r] = kc_gemv_ss_inv(sv, k, eps);
                    }
                }
                kc_gemv_norm_put(hid[warp], in, false, inv_w, m, lane);
            }
            __syncwarp();
            const bf16 *hr = &hid[warp][min(g, m - 1)][8 * t];
#pragma unroll
            for (int u = 0; u < KC_GEMV_U; u++)
                xv[u] = *reinterpret_cast<const uint4 *>(hr + 32 * u);
            __syncwarp(); // the tile is rewritten by the next chunk
        }
#pragma unroll
        for (int u = 0; u < KC_GEMV_U; u += 2) {
            kc_gemv_step(acc0, a[u], b[u], xv[u]);
            kc_gemv_step(acc1, a[u + 1], b[u + 1], xv[u + 1]);
        }
    }
    // A warp with no chunk (more warps than chunks) has not waited yet; y is written below.
    if (warp >= n_chunks) {
        kc_pdl_wait();
        after_wait();
    }
    // The weight stream is done: the next kernel's blocks may be scheduled while this block
    // reduces and stores (the next kernel still waits for this one to complete).
    kc_pdl_trigger();
#pragma unroll
    for (int i = 0; i < 4; i++)
        red[warp][lane][i] = acc0[i] + acc1[i];
    __syncthreads();

    if (ROPE) {
        // Thread e (< 64) takes the rope pair of fragment elements i and i + 2 of lane l: rows g
        // and g + 8 of the tile (elements j and j + head_dim / 2 of one head), one row of x.
        const int D = ep.head_dim;
        for (int e = threadIdx.x; e < 64; e += blockDim.x) {
            const int l = e >> 1, ci = e & 1, col = 2 * (l & 3) + ci;
            float sa = 0.f, sb = 0.f;
            for (int v = 0; v < n_warps; v++) {
                sa += red[v][l][ci];
                sb += red[v][l][ci + 2];
            }
            if (col >= m) continue;
            const int ra = kc_gemv_row<true>(blockIdx.x, l >> 2, D), rb = ra + D / 2;
            if (bias) {
                sa += kc_f(bias[ra]);
                sb += kc_f(bias[rb]);
            }
            const int h = ra / D, j = ra - h * D; // j < D / 2
            bf16 oa, ob;
            if (h < ep.n_heads + ep.n_kv_heads) { // q or k: rope.cu on the bf16 outputs
                const float x0 = kc_round(sa), x1 = kc_round(sb);
                float inv_freq = 1.0f / powf(ep.theta, (float)(2 * j) / (float)D);
                float ang = (float)ep.positions[col] * inv_freq;
                float cs = kc_round(cosf(ang)), sn = kc_round(sinf(ang));
                oa = kc_bf(kc_round(x0 * cs) + kc_round(-x1 * sn));
                ob = kc_bf(kc_round(x1 * cs) + kc_round(x0 * sn));
            } else {
                oa = kc_bf(sa);
                ob = kc_bf(sb);
            }
            bf16 *yr = static_cast<bf16 *>(y) + (size_t)col * n;
            yr[ra] = oa;
            yr[rb] = ob;
            const int slot = ep.slots[col];
            if (h >= ep.n_heads && slot >= 0) { // kv_write.cu
                const bool is_k = h < ep.n_heads + ep.n_kv_heads;
                const int kvh = h - ep.n_heads - (is_k ? 0 : ep.n_kv_heads);
                bf16 *dst =
                    (is_k ? ep.k_cache : ep.v_cache) + ((size_t)slot * ep.n_kv_heads + kvh) * D + j;
                dst[0] = oa;
                dst[D / 2] = ob;
            }
        }
        return;
    }

    // Thread e (< 128) sums element e of the fragment over the block's warps (kc_gemv_elem_row).
    for (int e = threadIdx.x; e < 128; e += blockDim.x) {
        const int l = e >> 2, i = e & 3;
        float s = 0.f;
        for (int v = 0; v < n_warps; v++)
            s += red[v][l][i];
        const int row = kc_gemv_elem_row(e), col = kc_gemv_elem_col(e);
        if (RES) sq[e] = 0.f;
        if (row >= n || col >= m) continue;
        if (bias) s += kc_f(bias[row]);
        if (RES) { // add_rmsnorm.cu's v = bf16(residual + bf16(delta))
            bf16 *yp = static_cast<bf16 *>(y) + (size_t)col * n + row;
            const bf16 old = res_early ? res_old : *yp; // res_early: e is this thread's
            const bf16 v = kc_bf(kc_f(old) + kc_round(s));
            *yp = v;
            sq[e] = kc_f(v) * kc_f(v);
        } else if (y_f32) {
            static_cast<float *>(y)[(size_t)col * n + row] = s;
        } else {
            static_cast<bf16 *>(y)[(size_t)col * n + row] = kc_bf(s);
        }
    }
    if (RES) { // row col's sum of squares over the block's 16 outputs, in output order
        __syncthreads();
        if (threadIdx.x < m) {
            const int col = threadIdx.x;
            float s = 0.f;
            for (int r = 0; r < KC_GEMV_ROWS; r++)
                s += sq[((r & 7) * 4 + (col >> 1)) * 4 + (col & 1) + (r >= 8 ? 2 : 0)];
            ep.ss_out[(size_t)col * gridDim.x + blockIdx.x] = s;
        }
    }
}

// Relative L2 difference of two outputs (a against b), for the GEMM tuner's check of the gemv
// against cuBLASLt: sums[0] += (a - b)^2, sums[1] += b^2; a NaN in a makes sums[0] NaN.
__global__ void kc_gemv_diff(const void *a, const void *b, int f32, size_t count, float *sums) {
    __shared__ float red[32];
    float d2 = 0.f, b2 = 0.f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
         i += (size_t)gridDim.x * blockDim.x) {
        float va = f32 ? static_cast<const float *>(a)[i] : kc_f(static_cast<const bf16 *>(a)[i]);
        float vb = f32 ? static_cast<const float *>(b)[i] : kc_f(static_cast<const bf16 *>(b)[i]);
        d2 += (va - vb) * (va - vb);
        b2 += vb * vb;
    }
    d2 = kc_block_sum(d2, red);
    b2 = kc_block_sum(b2, red);
    if (threadIdx.x == 0) {
        atomicAdd(&sums[0], d2);
        atomicAdd(&sums[1], b2);
    }
}

// ---- launchers

extern "C" int kern_cuda_gemv_default_warps(int k) {
    int chunks = (k + KC_GEMV_CHUNK - 1) / KC_GEMV_CHUNK;
    return chunks < 8 ? (chunks < 1 ? 1 : chunks) : 8;
}

// Whether a launch may use programmatic dependent launch: only when every chunk of k takes the
// vector path (k a multiple of KC_GEMV_CHUNK, aligned operands). Run 8 took a difference in
// tiny-qwen3's logits (k = 64) for a PDL fault in the guarded element-wise loads; run 10 found its
// cause elsewhere (GEMM plans dropped by kern_cuda_ctx_set_regions, then a graph captured with the
// untuned pick: docs/PERF.md run 10), but PDL for these launches has not been measured since, so
// they still go without it. The 0.5B-32B Qwen shapes at TP 1 and 2 have every k a multiple of
// 128; 72B's down shards (14784 at TP 2) lose PDL on that launch.
static bool kc_gemv_pdl_ok(bool vec, int k) {
    return vec && k % KC_GEMV_CHUNK == 0;
}

// One launch of kc_gemv<VEC, MODE, OUT>.
template <int MODE, int OUT, typename... A>
static void kc_gemv_go(bool vec, bool pdl, unsigned blocks, int warps, cudaStream_t s, A... args) {
    if (vec)
        kc_launch_if(pdl, kc_gemv<true, MODE, OUT>, blocks, 32 * warps, 0, s, args...);
    else
        kc_launch_if(pdl, kc_gemv<false, MODE, OUT>, blocks, 32 * warps, 0, s, args...);
}

extern "C" int kern_cuda_gemv(void *y, int y_f32, const bf16 *x, const bf16 *w, const bf16 *bias,
                              int m, int n, int k, int warps, cudaStream_t s) {
    if (m < 0 || m > KERN_CUDA_GEMV_MAX_M || n <= 0 || k <= 0)
        return err_set(ERR_INVAL, "gemv: bad sizes m=%d n=%d k=%d (m at most %d)", m, n, k,
                       KERN_CUDA_GEMV_MAX_M);
    if (warps < 0 || warps > KC_GEMV_MAX_WARPS)
        return err_set(ERR_INVAL, "gemv: bad warp count %d (0 = default, at most %d)", warps,
                       KC_GEMV_MAX_WARPS);
    if (m == 0) return 0;
    if (warps == 0) warps = kern_cuda_gemv_default_warps(k);
    bool vec = k % 8 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0;
    unsigned blocks = (unsigned)((n + KC_GEMV_ROWS - 1) / KC_GEMV_ROWS);
    const bool pdl = kc_gemv_pdl_ok(vec, k);
    kc_gemv_go<KC_GEMV_PLAIN, KC_GEMV_Y>(vec, pdl, blocks, warps, s, y, y_f32, x, w, bias, m, n, k,
                                         (const bf16 *)nullptr, (const bf16 *)nullptr,
                                         (bf16 *)nullptr, 0.f, kc_gemv_epi{});
    KC_LAUNCHED();
    return 0;
}

extern "C" int kern_cuda_gemv_silu(bf16 *y, const bf16 *gate_up, const bf16 *w, int m, int n, int h,
                                   int warps, cudaStream_t s) {
    if (m < 0 || m > KERN_CUDA_GEMV_MAX_M || n <= 0 || h <= 0)
        return err_set(ERR_INVAL, "gemv_silu: bad sizes m=%d n=%d h=%d (m at most %d)", m, n, h,
                       KERN_CUDA_GEMV_MAX_M);
    if (warps < 0 || warps > KC_GEMV_MAX_WARPS)
        return err_set(ERR_INVAL, "gemv_silu: bad warp count %d (0 = default, at most %d)", warps,
                       KC_GEMV_MAX_WARPS);
    if (m == 0) return 0;
    if (warps == 0) warps = kern_cuda_gemv_default_warps(h);
    bool vec = h % 8 == 0 && (uintptr_t)gate_up % 16 == 0 && (uintptr_t)w % 16 == 0;
    unsigned blocks = (unsigned)((n + KC_GEMV_ROWS - 1) / KC_GEMV_ROWS);
    const bool pdl = kc_gemv_pdl_ok(vec, h);
    kc_gemv_go<KC_GEMV_SILU, KC_GEMV_Y>(vec, pdl, blocks, warps, s, (void *)y, 0, gate_up, w,
                                        (const bf16 *)nullptr, m, n, h, (const bf16 *)nullptr,
                                        (const bf16 *)nullptr, (bf16 *)nullptr, 0.f, kc_gemv_epi{});
    KC_LAUNCHED();
    return 0;
}

extern "C" int kern_cuda_gemv_add_rmsnorm(bf16 *y, bf16 *res_out, const bf16 *residual,
                                          const bf16 *delta, const bf16 *norm_w, const bf16 *w,
                                          const bf16 *bias, int m, int n, int k, float eps,
                                          int warps, cudaStream_t s) {
    if (m < 0 || m > KERN_CUDA_GEMV_MAX_M || n <= 0 || k <= 0)
        return err_set(ERR_INVAL, "gemv_add_rmsnorm: bad sizes m=%d n=%d k=%d (m at most %d)", m, n,
                       k, KERN_CUDA_GEMV_MAX_M);
    if (warps < 0 || warps > KC_GEMV_MAX_WARPS)
        return err_set(ERR_INVAL, "gemv_add_rmsnorm: bad warp count %d (0 = default, at most %d)",
                       warps, KC_GEMV_MAX_WARPS);
    if (res_out == residual || (delta && res_out == delta))
        return err_set(ERR_INVAL, "gemv_add_rmsnorm: res_out may not alias residual or delta");
    if (m == 0) return 0;
    if (warps == 0) warps = kern_cuda_gemv_default_warps(k);
    bool vec = k % 8 == 0 && (uintptr_t)residual % 16 == 0 && (uintptr_t)w % 16 == 0 &&
               (uintptr_t)norm_w % 16 == 0 && (uintptr_t)res_out % 16 == 0 &&
               (!delta || (uintptr_t)delta % 16 == 0);
    unsigned blocks = (unsigned)((n + KC_GEMV_ROWS - 1) / KC_GEMV_ROWS);
    const bool pdl = kc_gemv_pdl_ok(vec, k);
    kc_gemv_go<KC_GEMV_NORM, KC_GEMV_Y>(vec, pdl, blocks, warps, s, (void *)y, 0, residual, w, bias,
                                        m, n, k, delta, norm_w, res_out, eps, kc_gemv_epi{});
    KC_LAUNCHED();
    return 0;
}

// Warps per block for a decode projection: the default (kern_cuda_gemv_default_warps) unless its
// blocks would not all be resident at once while 4-warp blocks would be, as the GEMM tuner found
// for the 7B qkv (288 blocks; 2 of 8 warps fit an SM) and most of Qwen3-8B's projections: then
// 4, so no block waits for a second wave.
template <int MODE, int OUT>
static int kc_gemv_proj_warps(bool vec, unsigned blocks, int k, int n_sm) {
    int warps = kern_cuda_gemv_default_warps(k);
    if (warps <= 4 || n_sm <= 0) return warps;
    static int per_sm[2][2] = {{-1, -1}, {-1, -1}}; // [vec][4 or 8 warps]
    for (int i = 0; i < 2; i++) {
        int *p = &per_sm[vec][i];
        if (*p < 0 && cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                          p, vec ? kc_gemv<true, MODE, OUT> : kc_gemv<false, MODE, OUT>,
                          i ? 256 : 128, 0) != cudaSuccess)
            *p = 0;
    }
    if (per_sm[vec][1] > 0 && blocks > (unsigned)(per_sm[vec][1] * n_sm) &&
        blocks <= (unsigned)(per_sm[vec][0] * n_sm))
        return 4;
    return warps;
}

static_assert(KERN_PROJ_STATS_PER_ROW(KC_GEMV_ROWS) == 1 &&
                  KERN_PROJ_STATS_PER_ROW(KC_GEMV_ROWS + 1) == 2,
              "a RES launch writes one statistics piece per block of KC_GEMV_ROWS outputs");

extern "C" int kern_cuda_proj(const struct kern_proj *p, int n_sm, cudaStream_t s) {
    const int m = p->m, n = p->n, k = p->k;
    const int inputs = (p->x != NULL) + (p->gate_up != NULL) + (p->norm_in != NULL);
    if (m < 0 || m > KERN_CUDA_GEMV_MAX_M || n <= 0 || k <= 0 || !p->w || inputs != 1 ||
        p->warps < 0 || p->warps > KC_GEMV_MAX_WARPS)
        return err_set(
            ERR_INVAL,
            "proj: bad arguments m=%d n=%d k=%d warps=%d (m at most %d, warps at most %d, "
            "one input of x, gate_up and norm_in)",
            m, n, k, p->warps, KERN_CUDA_GEMV_MAX_M, KC_GEMV_MAX_WARPS);
    if ((p->y != NULL) == (p->residual != NULL) || (p->rope && !p->y) ||
        (p->residual && !p->stats_out) || (p->norm_in && (!p->norm_w || !p->stats_in)))
        return err_set(ERR_INVAL, "proj: give y or residual (with stats_out); norm_in needs "
                                  "norm_w and stats_in; rope needs y");
    if (p->norm_in && KERN_PROJ_STATS_PER_ROW(k) > 32 * KC_GEMV_SS_PER_LANE)
        return err_set(ERR_UNSUPPORTED, "proj: norm over %d columns (at most %d)", k,
                       KC_GEMV_ROWS * 32 * KC_GEMV_SS_PER_LANE);
    const struct kern_rope_kv *r = p->rope;
    if (r && (r->head_dim <= 0 || r->head_dim % KC_GEMV_ROWS != 0 || r->n_heads <= 0 ||
              r->n_kv_heads <= 0 || n != (r->n_heads + 2 * r->n_kv_heads) * r->head_dim ||
              !(r->theta > 0.0f)))
        return err_set(ERR_INVAL,
                       "proj: rope needs n = (n_heads + 2 n_kv_heads) * head_dim, head_dim a "
                       "multiple of %d (n=%d head_dim=%d)",
                       KC_GEMV_ROWS, n, r->head_dim);
    if (m == 0) return 0;
    const bf16 *in = p->x ? p->x : p->gate_up ? p->gate_up : p->norm_in;
    bool vec = k % 8 == 0 && (uintptr_t)in % 16 == 0 && (uintptr_t)p->w % 16 == 0 &&
               (!p->norm_w || (uintptr_t)p->norm_w % 16 == 0);
    const unsigned blocks = (unsigned)((n + KC_GEMV_ROWS - 1) / KC_GEMV_ROWS);
    const bool pdl = kc_gemv_pdl_ok(vec, k);
    kc_gemv_epi ep = {};
    ep.ss_in = p->stats_in;
    ep.ss_parts = KERN_PROJ_STATS_PER_ROW(k); // the producer's blocks: one piece each
    ep.ss_out = p->stats_out;
    if (r) {
        ep.k_cache = r->k_cache;
        ep.v_cache = r->v_cache;
        ep.positions = r->positions;
        ep.slots = r->slot_mapping;
        ep.n_heads = r->n_heads;
        ep.n_kv_heads = r->n_kv_heads;
        ep.head_dim = r->head_dim;
        ep.theta = r->theta;
    }
    void *y = p->y ? (void *)p->y : (void *)p->residual;
    const bf16 *none = nullptr;
#define KC_PROJ(MODE, OUT)                                                                         \
    kc_gemv_go<MODE, OUT>(                                                                         \
        vec, pdl, blocks,                                                                          \
        p->warps ? p->warps : kc_gemv_proj_warps<MODE, OUT>(vec, blocks, k, n_sm), s, y, 0, in,    \
        p->w, p->bias, m, n, k, none, p->norm_w, (bf16 *)nullptr, p->eps, ep)
    if (p->x && r)
        KC_PROJ(KC_GEMV_PLAIN, KC_GEMV_ROPE);
    else if (p->x && p->residual)
        KC_PROJ(KC_GEMV_PLAIN, KC_GEMV_RES);
    else if (p->x)
        KC_PROJ(KC_GEMV_PLAIN, KC_GEMV_Y);
    else if (p->gate_up && p->residual)
        KC_PROJ(KC_GEMV_SILU, KC_GEMV_RES);
    else if (p->gate_up)
        KC_PROJ(KC_GEMV_SILU, KC_GEMV_Y);
    else if (r)
        KC_PROJ(KC_GEMV_NORMP, KC_GEMV_ROPE);
    else if (p->y)
        KC_PROJ(KC_GEMV_NORMP, KC_GEMV_Y);
    else
        return err_set(ERR_UNSUPPORTED, "proj: no kernel for a normed input into the residual");
#undef KC_PROJ
    KC_LAUNCHED();
    return 0;
}

extern "C" int kern_cuda__gemv_diff(const void *a, const void *b, int f32, size_t count,
                                    float *sums, cudaStream_t s) {
    CUDA_CHECK(cudaMemsetAsync(sums, 0, 2 * sizeof(float), s));
    if (count == 0) return 0;
    size_t blocks = (count + 255) / 256;
    kc_gemv_diff<<<(unsigned)(blocks < 1024 ? blocks : 1024), 256, 0, s>>>(a, b, f32, count, sums);
    KC_LAUNCHED();
    return 0;
}

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
// zero past k.
template <bool VEC>
__device__ __forceinline__ void
kc_gemv_stage_norm(bf16 (*tile)[KC_GEMV_CHUNK], const bf16 *res /* [m, k] */,
                   const bf16 *delta /* [m, k] or NULL */, const bf16 *nw /* [k] */,
                   const float *inv, int m, int k, int kc, int lane, bool full) {
    const int col = kc + 4 * lane;
    const bool fast = VEC && full;
    uint2 rv[KC_GEMV_ROWS / 2], dv[KC_GEMV_ROWS / 2];
    uint2 wv = fast ? __ldg(reinterpret_cast<const uint2 *>(nw + col))
                    : kc_gemv_ld4_guarded(nw + col, k - col);
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        if (r >= m) break;
        const bf16 *rp = res + (size_t)r * k + col;
        rv[r] = fast ? kc_gemv_ld_act2(rp) : kc_gemv_ld4_guarded(rp, k - col);
        dv[r] = make_uint2(0u, 0u);
        if (delta) {
            const bf16 *dp = delta + (size_t)r * k + col;
            dv[r] = fast ? kc_gemv_ld_act2(dp) : kc_gemv_ld4_guarded(dp, k - col);
        }
    }
    const uint32_t wp[2] = {wv.x, wv.y};
#pragma unroll
    for (int r = 0; r < KC_GEMV_ROWS / 2; r++) {
        if (r >= m) break;
        const uint32_t rp[2] = {rv[r].x, rv[r].y}, dp[2] = {dv[r].x, dv[r].y};
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

// MODE says what x is (above). SILU: y bf16, no bias (the fused down projection). NORM: the
// fused residual add + RMSNorm before the qkv or gate_up projection; block 0 writes the new
// residual to res_out (a different buffer, so no block reads what another writes).
template <bool VEC, int MODE>
__global__ void __launch_bounds__(256)
    kc_gemv(void *y /* [m, n] bf16 or f32 */, int y_f32, const bf16 *x /* [m, k] or [m, 2k] */,
            const bf16 *w /* [n, k] */, const bf16 *bias /* [n] or NULL */, int m, int n, int k,
            const bf16 *delta /* NORM: [m, k] or NULL */, const bf16 *nw /* NORM: [k] */,
            bf16 *res_out /* NORM: [m, k] */, float eps) {
    constexpr bool SILU = MODE == KC_GEMV_SILU, NORM = MODE == KC_GEMV_NORM, STAGED = SILU || NORM;
    __shared__ float red[KC_GEMV_MAX_WARPS][32][4];
    // SILU, NORM: each warp's tile of the (computed) x rows for its current chunk.
    __shared__ __align__(16)
        bf16 hid[STAGED ? KC_GEMV_MAX_WARPS : 1][STAGED ? KC_GEMV_ROWS / 2 : 1][KC_GEMV_CHUNK];
    __shared__ float inv_rms[KC_GEMV_ROWS / 2];
    __shared__ float part[NORM ? KC_GEMV_MAX_WARPS : 1][KC_GEMV_ROWS / 2];
    // NORM reads the residual rows before its loop: it waits at once. PLAIN and SILU wait after
    // their first chunk's weight loads are issued (below).
    if (NORM) kc_pdl_wait();
    if (NORM) kc_gemv_norm_prepass<VEC>(inv_rms, part, x, delta, res_out, m, k, eps);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * KC_GEMV_ROWS;
    const bf16 *w0 = w + (size_t)min(r0 + g, n - 1) * k;
    const bf16 *w1 = w + (size_t)min(r0 + g + 8, n - 1) * k;
    const bf16 *xr = x + (size_t)min(g, m - 1) * k; // PLAIN only

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
            if (c == warp) kc_pdl_wait();
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
            if (c == warp) kc_pdl_wait();
            if (!STAGED) {
#pragma unroll
                for (int u = 0; u < KC_GEMV_U; u++)
                    xv[u] = kc_gemv_ld_guarded(xr + k0 + 32 * u, k - (k0 + 32 * u));
            }
        }
        if (STAGED) {
            if (SILU)
                kc_gemv_stage_silu<VEC>(hid[warp], x, m, k, c * KC_GEMV_CHUNK, lane, c < n_full);
            else
                kc_gemv_stage_norm<VEC>(hid[warp], x, delta, nw, inv_rms, m, k, c * KC_GEMV_CHUNK,
                                        lane, c < n_full);
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
    if (warp >= n_chunks) kc_pdl_wait();
    // The weight stream is done: the next kernel's blocks may be scheduled while this block
    // reduces and stores (the next kernel still waits for this one to complete).
    kc_pdl_trigger();
#pragma unroll
    for (int i = 0; i < 4; i++)
        red[warp][lane][i] = acc0[i] + acc1[i];
    __syncthreads();

    // Thread e (< 128) sums element e of the fragment over the block's warps: lane e / 4 held
    // rows g, g + 8 (i = 0, 1 and 2, 3) of columns (rows of x) 2t and 2t + 1.
    for (int e = threadIdx.x; e < 128; e += blockDim.x) {
        const int l = e >> 2, i = e & 3;
        float s = 0.f;
        for (int v = 0; v < n_warps; v++)
            s += red[v][l][i];
        const int row = r0 + (l >> 2) + (i >= 2 ? 8 : 0), col = 2 * (l & 3) + (i & 1);
        if (row >= n || col >= m) continue;
        if (bias) s += kc_f(bias[row]);
        if (y_f32)
            static_cast<float *>(y)[(size_t)col * n + row] = s;
        else
            static_cast<bf16 *>(y)[(size_t)col * n + row] = kc_bf(s);
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
// vector path (k a multiple of KC_GEMV_CHUNK, aligned operands). The guarded element-wise loads
// of a partial chunk gave results that differed from the non-PDL launch on the H100 (docs/PERF.md
// run 8: tiny-qwen3, k = 64, with the gemv forced: 4 runs of 4; with PDL off: none; the cause is
// not found yet), so those launches go without it. The 0.5B-32B Qwen shapes at TP 1 and 2 have
// every k a multiple of 128; 72B's down shards (14784 at TP 2) lose PDL on that launch.
static bool kc_gemv_pdl_ok(bool vec, int k) {
    return vec && k % KC_GEMV_CHUNK == 0;
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
    if (vec)
        kc_launch_if(pdl, kc_gemv<true, KC_GEMV_PLAIN>, blocks, 32 * warps, 0, s, y, y_f32, x, w,
                     bias, m, n, k, nullptr, nullptr, nullptr, 0.f);
    else
        kc_launch_if(pdl, kc_gemv<false, KC_GEMV_PLAIN>, blocks, 32 * warps, 0, s, y, y_f32, x, w,
                     bias, m, n, k, nullptr, nullptr, nullptr, 0.f);
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
    if (vec)
        kc_launch_if(pdl, kc_gemv<true, KC_GEMV_SILU>, blocks, 32 * warps, 0, s, y, 0, gate_up, w,
                     nullptr, m, n, h, nullptr, nullptr, nullptr, 0.f);
    else
        kc_launch_if(pdl, kc_gemv<false, KC_GEMV_SILU>, blocks, 32 * warps, 0, s, y, 0, gate_up, w,
                     nullptr, m, n, h, nullptr, nullptr, nullptr, 0.f);
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
    if (vec)
        kc_launch_if(pdl, kc_gemv<true, KC_GEMV_NORM>, blocks, 32 * warps, 0, s, y, 0, residual, w,
                     bias, m, n, k, delta, norm_w, res_out, eps);
    else
        kc_launch_if(pdl, kc_gemv<false, KC_GEMV_NORM>, blocks, 32 * warps, 0, s, y, 0, residual, w,
                     bias, m, n, k, delta, norm_w, res_out, eps);
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

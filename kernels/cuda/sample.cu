// sample: the sample op of kernels/ops.h on the GPU, so only token ids and logprobs cross to the
// host. float32 logits [n_rows, vocab] in device memory; one block of 1024 threads per row (rows
// are independent and a 152k row, 600 KB, stays in L2 while its block makes several passes).
//
// Per row, in one kernel: raw logprobs (block max, a double log-sum-exp, then one block argmax
// per top entry, each taking the best after the previous one in (value desc, id asc) order); the
// sparse adjustments applied in place on the logits (their raw values saved to `orig` and put
// back before the kernel ends); greedy argmax; or probabilities p = exp((w - max) / T) that are
// recomputed on every pass instead of stored. Truncation never sorts: top_k and top_p each find
// their threshold probability by bisection on the float's bits (positive floats order as their
// bit patterns), one counting or mass-summing pass per step, then the id that splits the ties at
// the threshold by a block prefix count over contiguous id chunks. The draw is a block prefix sum
// over contiguous id chunks, so it walks ids in ascending order exactly as the CPU reference
// does. Masses accumulate in double. That bisection is the reference variant
// (KEEL_SAMPLE_RADIX=0); by default the thresholds come from a radix select instead: 3 histogram
// passes per threshold over the probabilities' bits, with several loads in flight per thread, and
// the tie id from one coalesced pass in the common cases (see "the radix select" below, and
// bench/kernels/sample.cu for the two side by side).
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KC_SAMPLE_THREADS 1024
#define KC_SAMPLE_WARPS (KC_SAMPLE_THREADS / 32)
#define KC_NO_ID 0x7fffffff
#define KC_KEY_ONE 0x3f800000u // the bits of 1.0f, the largest probability

// ---- kernels

struct kc_sample_smem {
    double d[KC_SAMPLE_WARPS + 1];
    int i[KC_SAMPLE_WARPS + 1];
    float f[KC_SAMPLE_WARPS];
    int id, id2;
};

__device__ __forceinline__ double kc_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ int kc_warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sums of a double and an int over the block (every thread gets both).
__device__ void kc_block_sum(double &m, int &c, kc_sample_smem &sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    m = kc_warp_sum_d(m);
    c = kc_warp_sum_i(c);
    if (lane == 0) {
        sh.d[warp] = m;
        sh.i[warp] = c;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < KC_SAMPLE_WARPS ? sh.d[lane] : 0;
        c = lane < KC_SAMPLE_WARPS ? sh.i[lane] : 0;
        m = kc_warp_sum_d(m);
        c = kc_warp_sum_i(c);
        if (lane == 0) {
            sh.d[KC_SAMPLE_WARPS] = m;
            sh.i[KC_SAMPLE_WARPS] = c;
        }
    }
    __syncthreads();
    m = sh.d[KC_SAMPLE_WARPS];
    c = sh.i[KC_SAMPLE_WARPS];
    __syncthreads();
}

// Exclusive and inclusive prefix sums over the threads in order (thread t's values follow those
// of threads < t), with the block's total; for doubles and ints at once.
__device__ void kc_block_scan(double m, int c, double &m_ex, double &m_in, int &c_ex, int &c_in,
                              double &m_tot, int &c_tot, kc_sample_smem &sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double mi = m;
    int ci = c;
    for (int o = 1; o < 32; o <<= 1) {
        double om = __shfl_up_sync(0xffffffffu, mi, o);
        int oc = __shfl_up_sync(0xffffffffu, ci, o);
        if (lane >= o) {
            mi += om;
            ci += oc;
        }
    }
    if (lane == 31) {
        sh.d[warp] = mi;
        sh.i[warp] = ci;
    }
    __syncthreads();
    if (warp == 0) {
        double wm = lane < KC_SAMPLE_WARPS ? sh.d[lane] : 0;
        int wc = lane < KC_SAMPLE_WARPS ? sh.i[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            double om = __shfl_up_sync(0xffffffffu, wm, o);
            int oc = __shfl_up_sync(0xffffffffu, wc, o);
            if (lane >= o) {
                wm += om;
                wc += oc;
            }
        }
        // sh.d[w] becomes the inclusive total of warps 0..w
        if (lane < KC_SAMPLE_WARPS) {
            sh.d[lane] = wm;
            sh.i[lane] = wc;
        }
    }
    __syncthreads();
    double base_m = warp > 0 ? sh.d[warp - 1] : 0;
    int base_c = warp > 0 ? sh.i[warp - 1] : 0;
    // The exclusive sum of thread t must equal the inclusive sum of thread t - 1 bit for bit, so
    // the draw's intervals tile without gaps or overlaps: a warp's last thread ends exactly where
    // the next warp begins, and each thread starts where its neighbour ends.
    m_in = lane == 31 ? sh.d[warp] : base_m + mi;
    c_in = base_c + ci;
    double nb_m = __shfl_up_sync(0xffffffffu, m_in, 1);
    int nb_c = __shfl_up_sync(0xffffffffu, c_in, 1);
    if (lane > 0) {
        m_ex = nb_m;
        c_ex = nb_c;
    } else {
        m_ex = base_m;
        c_ex = base_c;
    }
    m_tot = sh.d[KC_SAMPLE_WARPS - 1];
    c_tot = sh.i[KC_SAMPLE_WARPS - 1];
    __syncthreads();
}

__device__ __forceinline__ void kc_better(float &v, int &i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

// The first (lowest id) element after (pv, pid) in the order (value desc, id asc) among w[0, n):
// with pv = +inf, pid = -1 it is the argmax. NaN is never chosen; -inf is, when nothing better
// exists. Returns KC_NO_ID when nothing qualifies. fast: 8 loads in flight per thread instead of
// one (the result does not depend on the order: the best in a total order).
__device__ int kc_block_next(const float *w, int n, float pv, int pid, float &best_v, bool fast,
                             kc_sample_smem &sh) {
    float best = -INFINITY;
    int idx = KC_NO_ID;
    auto consider = [&](float f, int j) {
        if (isnan(f)) return;
        if (!(f < pv || (f == pv && j > pid))) return;
        kc_better(best, idx, f, j);
        if (idx == KC_NO_ID) idx = j; // -inf only: the first one
    };
    int j = threadIdx.x;
    if (fast)
        for (; j + 7 * KC_SAMPLE_THREADS < n; j += 8 * KC_SAMPLE_THREADS) {
            float f[8];
#pragma unroll
            for (int u = 0; u < 8; u++)
                f[u] = w[j + u * KC_SAMPLE_THREADS];
#pragma unroll
            for (int u = 0; u < 8; u++)
                consider(f[u], j + u * KC_SAMPLE_THREADS);
        }
    for (; j < n; j += KC_SAMPLE_THREADS)
        consider(w[j], j);
    for (int o = 16; o > 0; o >>= 1)
        kc_better(best, idx, __shfl_xor_sync(0xffffffffu, best, o),
                  __shfl_xor_sync(0xffffffffu, idx, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sh.f[warp] = best;
        sh.i[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        best = sh.f[lane];
        idx = sh.i[lane];
        for (int o = 16; o > 0; o >>= 1)
            kc_better(best, idx, __shfl_xor_sync(0xffffffffu, best, o),
                      __shfl_xor_sync(0xffffffffu, idx, o));
        if (lane == 0) {
            sh.f[0] = best;
            sh.i[KC_SAMPLE_WARPS] = idx;
        }
    }
    __syncthreads();
    best_v = sh.f[0];
    idx = sh.i[KC_SAMPLE_WARPS];
    __syncthreads();
    return idx;
}

// What a truncating row keeps: candidates (p > 0, p >= min_p) up to `last` in the total order.
struct kc_keep {
    float max, inv_t, min_p;
    float last_p; // 0 with last_id KC_NO_ID: every candidate
    int last_id;
    const float *pc; // [n] the row's probabilities when cached (kc_cache_probs), else NULL
    bool cands;      // the radix select may compact candidates into shared memory
};

__device__ __forceinline__ float kc_exp(float w, const kc_keep &k) {
    return expf(__fmul_rn(__fsub_rn(w, k.max), k.inv_t));
}

// p of id j: from the cache when the row has one (the same bits: it holds kc_exp's results).
__device__ __forceinline__ float kc_prob(const float *w, int j, const kc_keep &k) {
    return k.pc ? k.pc[j] : kc_exp(w[j], k);
}

// Fills the row's probability cache once, so the ~30 passes of a truncating row read a float
// instead of computing an exp each.
__device__ void kc_cache_probs(const float *w, int n, kc_keep &k, float *pc) {
    for (int j = threadIdx.x; j < n; j += KC_SAMPLE_THREADS)
        pc[j] = kc_exp(w[j], k);
    __syncthreads();
    k.pc = pc;
}

__device__ __forceinline__ bool kc_kept(float p, int i, const kc_keep &k) {
    return p > 0 && p >= k.min_p && (p > k.last_p || (p == k.last_p && i <= k.last_id));
}

// Mass and count of kept elements whose probability's bits are >= key.
__device__ void kc_mass_from(const float *w, int n, const kc_keep &k, uint32_t key, double &m,
                             int &c, kc_sample_smem &sh) {
    m = 0;
    c = 0;
    for (int j = threadIdx.x; j < n; j += KC_SAMPLE_THREADS) {
        float p = kc_prob(w, j, k);
        if (kc_kept(p, j, k) && __float_as_uint(p) >= key) {
            m += p;
            c++;
        }
    }
    kc_block_sum(m, c, sh);
}

// The largest key v with f(v) = (count or mass of kept elements with key >= v) >= target, by
// bisection; *above gets f(v + 1) (the count or mass strictly above v). Needs f(1) >= target.
__device__ uint32_t kc_bisect(const float *w, int n, const kc_keep &k, bool by_mass, double target,
                              double *above, kc_sample_smem &sh) {
    uint32_t lo = 1, hi = KC_KEY_ONE + 1; // f(lo) >= target > f(hi) = 0
    double f_hi = 0;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        double m;
        int c;
        kc_mass_from(w, n, k, mid, m, c, sh);
        double f = by_mass ? m : (double)c;
        if (f >= target) {
            lo = mid;
        } else {
            hi = mid;
            f_hi = f;
        }
    }
    *above = f_hi;
    return lo;
}

// The id of the need-th (1-based) kept element whose probability is exactly v, counting ids in
// ascending order; the last such element when fewer exist.
__device__ int kc_tie_id(const float *w, int n, const kc_keep &k, float v, int need,
                         kc_sample_smem &sh) {
    int chunk = (n + KC_SAMPLE_THREADS - 1) / KC_SAMPLE_THREADS;
    int lo = threadIdx.x * chunk, hi = min(n, lo + chunk);
    int c = 0;
    for (int j = lo; j < hi; j++) {
        float p = kc_prob(w, j, k);
        c += kc_kept(p, j, k) && p == v;
    }
    double m_ex, m_in, m_tot;
    int c_ex, c_in, c_tot;
    kc_block_scan(0, c, m_ex, m_in, c_ex, c_in, m_tot, c_tot, sh);
    if (need > c_tot) need = c_tot;
    if (need < 1) need = 1;
    if (threadIdx.x == 0) sh.id = KC_NO_ID;
    __syncthreads();
    if (c > 0 && c_ex < need && need <= c_in) {
        int seen = c_ex;
        for (int j = lo; j < hi; j++) {
            float p = kc_prob(w, j, k);
            if (kc_kept(p, j, k) && p == v && ++seen == need) {
                sh.id = j;
                break;
            }
        }
    }
    __syncthreads();
    int id = sh.id;
    __syncthreads();
    return id;
}

// The draw: the first kept id (ascending) whose running mass exceeds u * (kept mass); `fallback`
// when rounding leaves nothing above the target.
__device__ int kc_draw(const float *w, int n, const kc_keep &k, float u, int fallback,
                       kc_sample_smem &sh) {
    int chunk = (n + KC_SAMPLE_THREADS - 1) / KC_SAMPLE_THREADS;
    int lo = threadIdx.x * chunk, hi = min(n, lo + chunk);
    double m = 0;
    for (int j = lo; j < hi; j++) {
        float p = kc_prob(w, j, k);
        if (kc_kept(p, j, k)) m += p;
    }
    double m_ex, m_in, m_tot;
    int c_ex, c_in, c_tot;
    kc_block_scan(m, 0, m_ex, m_in, c_ex, c_in, m_tot, c_tot, sh);
    double x = (double)u * m_tot;
    if (threadIdx.x == 0) sh.id = fallback;
    __syncthreads();
    if (m > 0 && m_ex <= x && x < m_in) {
        double cum = m_ex;
        int pick = -1;
        for (int j = lo; j < hi; j++) {
            float p = kc_prob(w, j, k);
            if (!kc_kept(p, j, k)) continue;
            cum += p;
            pick = j;
            if (x < cum) break;
        }
        sh.id = pick;
    }
    __syncthreads();
    int id = sh.id;
    __syncthreads();
    return id;
}

// Applies top_k, then top_p, narrowing k.last_p / k.last_id.
__device__ void kc_truncate(const float *w, int n, const kern_sample_params &P, kc_keep &k,
                            float *pc, kc_sample_smem &sh) {
    if (pc) kc_cache_probs(w, n, k, pc);
    double m_all;
    int n_cand;
    kc_mass_from(w, n, k, 1, m_all, n_cand, sh);
    if (P.top_k > 0 && P.top_k < n_cand) {
        double above;
        uint32_t v = kc_bisect(w, n, k, false, (double)P.top_k, &above, sh);
        float vf = __uint_as_float(v);
        int id = kc_tie_id(w, n, k, vf, P.top_k - (int)above, sh);
        k.last_p = vf;
        k.last_id = id;
    }
    if (P.top_p < 1.0f) {
        double total;
        int c;
        kc_mass_from(w, n, k, 1, total, c, sh);
        double target = (double)P.top_p * total;
        if (c > 0 && total >= target) {
            double above;
            uint32_t v = kc_bisect(w, n, k, true, target, &above, sh);
            float vf = __uint_as_float(v);
            // The ties at v, in id order, until the running mass reaches the target.
            double need = vf > 0 ? ceil((target - above) / (double)vf) : 1;
            int nt = need < 1 ? 1 : need > 2e9 ? 2000000000 : (int)need;
            while (nt > 1 && above + (double)(nt - 1) * vf >= target)
                nt--;
            int id = kc_tie_id(w, n, k, vf, nt, sh);
            k.last_p = vf;
            k.last_id = id;
        }
    }
}

// ---- the radix select (KEEL_SAMPLE_RADIX, on unless "0")
//
// The same thresholds as kc_bisect from 3 passes instead of ~30: a probability's key (its bits,
// at most KC_KEY_ONE < 2^30) is found one digit at a time, bits [19, 30), [8, 19) then [0, 8), from
// a shared-memory histogram of the count and mass of kept elements whose key matches the digits
// found so far. Counts are exact, so top_k gets the very same threshold and tie id as the
// bisection. Masses are double sums in another order than kc_mass_from's, so a top_p threshold can
// differ only when the target lies within a rounding error of a partial sum (the CPU reference
// rounds differently again). Every pass keeps KC_UNROLL loads in flight per thread: the
// bisection's one load at a time left each pass waiting on L2 latency.

#define KC_UNROLL 8
#define KC_RADIX_BINS 2048
#define KC_CANDS 2048 // candidate buffer entries (16 KB of shared memory)

struct kc_radix_smem {
    int cnt[KC_RADIX_BINS];
    double mass[KC_RADIX_BINS];
    double seg_m[KC_SAMPLE_WARPS];
    int seg_c[KC_SAMPLE_WARPS];
    double above; // count or mass of kept elements above the chosen bin (all digits so far)
    int bin, ties;
};

// Candidates compacted into shared memory once they are few, so the passes after that read
// KC_CANDS entries instead of the whole row. `full`: the buffer holds every kept element from
// the threshold up (what top_p after top_k needs), not just the threshold's digit bin.
struct kc_cands {
    float p[KC_CANDS];
    int id[KC_CANDS];
    int n;
    bool active, full;
};

// f(p, j) for every id j < n, thread by thread in ascending j (j = tid, tid + T, ...: the order of
// kc_mass_from, so per-thread sums round the same), with KC_UNROLL loads issued before any use.
template <class F>
__device__ __forceinline__ void kc_each(const float *w, int n, const kc_keep &k, F f) {
    const int T = KC_SAMPLE_THREADS;
    int j = threadIdx.x;
    for (; j + (KC_UNROLL - 1) * T < n; j += KC_UNROLL * T) {
        float p[KC_UNROLL];
#pragma unroll
        for (int u = 0; u < KC_UNROLL; u++)
            p[u] = k.pc ? k.pc[j + u * T] : w[j + u * T];
#pragma unroll
        for (int u = 0; u < KC_UNROLL; u++)
            f(k.pc ? p[u] : kc_exp(p[u], k), j + u * T);
    }
    for (; j < n; j += T)
        f(kc_prob(w, j, k), j);
}

// kc_each over the candidate buffer when it is active (in buffer order), else over the row.
template <class F>
__device__ __forceinline__ void kc_each_src(const float *w, int n, const kc_keep &k,
                                            const kc_cands &cs, F f) {
    if (cs.active) {
        for (int i = threadIdx.x; i < cs.n; i += KC_SAMPLE_THREADS)
            f(cs.p[i], cs.id[i]);
    } else {
        kc_each(w, n, k, f);
    }
}

__device__ __forceinline__ double kc_warp_scan_d(double v) {
    int lane = threadIdx.x & 31;
    for (int o = 1; o < 32; o <<= 1) {
        double t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

// The probabilities into the cache (when pc) and the count and mass of every candidate, in one
// pass; the mass has kc_mass_from(key 1)'s bits.
__device__ void kc_fill(const float *w, int n, kc_keep &k, float *pc, double &m, int &c,
                        kc_sample_smem &sh) {
    m = 0;
    c = 0;
    kc_each(w, n, k, [&](float p, int j) {
        if (pc) pc[j] = p;
        if (kc_kept(p, j, k)) {
            m += p;
            c++;
        }
    });
    kc_block_sum(m, c, sh); // its barriers also publish the cache
    if (pc) k.pc = pc;
}

// kc_mass_from(key 1) with loads in flight: the same bits.
__device__ void kc_mass_all(const float *w, int n, const kc_keep &k, double &m, int &c,
                            kc_sample_smem &sh) {
    m = 0;
    c = 0;
    kc_each(w, n, k, [&](float p, int j) {
        if (kc_kept(p, j, k)) {
            m += p;
            c++;
        }
    });
    kc_block_sum(m, c, sh);
}

// Histograms of the kept elements whose key has `prefix`'s bits from `hi` up, binned by key bits
// [lo, hi). collect 1: the same pass copies those elements into the (inactive, empty) candidate
// buffer; collect 2: every kept element whose bits from `hi` up are >= prefix's; the caller
// knows they fit. The buffer is active afterwards.
__device__ void kc_radix_hist(const float *w, int n, const kc_keep &k, uint32_t prefix, int lo,
                              int hi, bool by_mass, int collect, kc_radix_smem &rs, kc_cands &cs) {
    const int nb = 1 << (hi - lo);
    for (int b = threadIdx.x; b < nb; b += KC_SAMPLE_THREADS) {
        rs.cnt[b] = 0;
        rs.mass[b] = 0;
    }
    if (collect && threadIdx.x == 0) cs.n = 0;
    __syncthreads();
    const uint32_t want = prefix >> hi; // hi is at most 30 and keys are below 2^30
    kc_each_src(w, n, k, cs, [&](float p, int j) {
        uint32_t key = __float_as_uint(p);
        if (!kc_kept(p, j, k)) return;
        uint32_t top = key >> hi;
        if (collect && (collect == 2 ? top >= want : top == want)) {
            int at = atomicAdd(&cs.n, 1);
            if (at < KC_CANDS) { // always, as the caller counted; the check guards the memory
                cs.p[at] = p;
                cs.id[at] = j;
            }
        }
        if (top != want) return;
        int b = (int)((key >> lo) & (uint32_t)(nb - 1));
        atomicAdd(&rs.cnt[b], 1);
        if (by_mass) atomicAdd(&rs.mass[b], (double)p);
    });
    __syncthreads();
    if (collect && threadIdx.x == 0) {
        cs.n = min(cs.n, KC_CANDS);
        cs.active = true;
        cs.full = collect == 2;
    }
    __syncthreads();
}

// The highest non-empty bin b with base + (count or mass of bins >= b) >= target, from the top:
// each warp sums a segment of nb / 32 bins, warp 0 finds the segment, then the bin inside it by
// chunks of 32. When rounding leaves every partial sum short of the target (the sums of one set
// in two orders), the lowest non-empty bin of the last non-empty segment. Sets rs.bin, rs.above
// (base + the bins above it) and rs.ties (its count).
__device__ void kc_radix_find(int nb, bool by_mass, double base, double target, kc_radix_smem &rs) {
    const unsigned full = 0xffffffffu;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int seg = nb / KC_SAMPLE_WARPS; // ranks r = nb - 1 - b: rank 0 is the highest bin
    double m = 0;
    int c = 0;
    for (int r = warp * seg + lane; r < (warp + 1) * seg; r += 32) {
        int b = nb - 1 - r;
        m += by_mass ? rs.mass[b] : (double)rs.cnt[b];
        c += rs.cnt[b];
    }
    m = kc_warp_sum_d(m);
    c = kc_warp_sum_i(c);
    if (lane == 0) {
        rs.seg_m[warp] = m;
        rs.seg_c[warp] = c;
    }
    __syncthreads();
    if (warp == 0) {
        double s = kc_warp_scan_d(rs.seg_m[lane]);
        unsigned hit = __ballot_sync(full, rs.seg_c[lane] > 0 && base + s >= target);
        unsigned nonempty = __ballot_sync(full, rs.seg_c[lane] > 0);
        int S = hit ? __ffs(hit) - 1 : nonempty ? 31 - __clz(nonempty) : 0;
        double before = __shfl_sync(full, s, S > 0 ? S - 1 : 0);
        double R = S > 0 ? base + before : base;
        int pick = -1, last = -1;
        double pick_above = base, last_above = base;
        for (int r0 = S * seg; r0 < (S + 1) * seg; r0 += 32) {
            int r = r0 + lane;
            bool in = r < (S + 1) * seg;
            int b = nb - 1 - r;
            int cc = in ? rs.cnt[b] : 0;
            double v = in ? (by_mass ? rs.mass[b] : (double)cc) : 0;
            double x = kc_warp_scan_d(v);
            double ex = __shfl_up_sync(full, x, 1);
            if (lane == 0) ex = 0;
            unsigned h = __ballot_sync(full, cc > 0 && R + x >= target);
            unsigned ne = __ballot_sync(full, cc > 0);
            if (h) {
                int L = __ffs(h) - 1;
                pick = r0 + L;
                pick_above = R + __shfl_sync(full, ex, L);
                break;
            }
            if (ne) {
                int L = 31 - __clz(ne);
                last = r0 + L;
                last_above = R + __shfl_sync(full, ex, L);
            }
            R += __shfl_sync(full, x, 31);
        }
        if (pick < 0) {
            pick = last >= 0 ? last : S * seg;
            pick_above = last >= 0 ? last_above : base;
        }
        if (lane == 0) {
            rs.bin = nb - 1 - pick;
            rs.above = pick_above;
            rs.ties = rs.cnt[nb - 1 - pick];
        }
    }
    __syncthreads();
}

// kc_bisect by radix select; *ties gets the number of kept elements whose key is the result (-1:
// not known). n_kept: how many elements are kept (-1: not known). Once the elements left to
// refine fit the candidate buffer, the next digit's pass also collects them there and later
// passes read the buffer: by count, everything from the chosen digit-1 bin up (so top_p can
// follow from the buffer); else just the chosen bin's elements.
__device__ uint32_t kc_radix_select(const float *w, int n, const kc_keep &k, bool by_mass,
                                    double target, int n_kept, double *above, int *ties,
                                    kc_radix_smem &rs, kc_cands &cs) {
    if (!(target > 0)) { // kc_bisect's answer when every key qualifies
        *above = 0;
        *ties = -1;
        return KC_KEY_ONE;
    }
    uint32_t prefix = 0;
    double base = 0;
    int t = -1;
    for (int d = 0; d < 3; d++) {
        int lo = d == 0 ? 19 : d == 1 ? 8 : 0, hi = d == 0 ? 30 : d == 1 ? 19 : 8;
        int collect = 0;
        if (!cs.active && k.cands) {
            if (d == 0 && n_kept >= 0 && n_kept <= KC_CANDS)
                collect = 2;
            else if (d > 0 && !by_mass && base + t <= KC_CANDS)
                collect = 2;
            else if (d > 0 && t <= KC_CANDS)
                collect = 1;
        }
        kc_radix_hist(w, n, k, prefix, lo, hi, by_mass, collect, rs, cs);
        kc_radix_find(1 << (hi - lo), by_mass, base, target, rs);
        prefix |= (uint32_t)rs.bin << lo;
        base = rs.above;
        t = rs.ties;
        __syncthreads(); // everyone has read rs before the next digit clears it
    }
    *above = base;
    *ties = t;
    return prefix;
}

// The lowest (want_max: highest) kept id whose probability is exactly v, in one coalesced pass;
// KC_NO_ID when none.
__device__ int kc_tie_end(const float *w, int n, const kc_keep &k, float v, bool want_max,
                          kc_sample_smem &sh) {
    if (threadIdx.x == 0) sh.id = want_max ? -1 : KC_NO_ID;
    __syncthreads();
    int best = want_max ? -1 : KC_NO_ID;
    kc_each(w, n, k, [&](float p, int j) {
        if (p == v && kc_kept(p, j, k)) best = want_max ? max(best, j) : min(best, j);
    });
    if (want_max && best >= 0) atomicMax(&sh.id, best);
    if (!want_max && best != KC_NO_ID) atomicMin(&sh.id, best);
    __syncthreads();
    int id = sh.id;
    __syncthreads();
    return id < 0 ? KC_NO_ID : id;
}

// kc_tie_id from the active candidate buffer, which holds every kept element of probability v
// (ties of them): the one with need - 1 such ids below it.
__device__ int kc_cands_tie(const kc_keep &k, float v, int need, int ties, const kc_cands &cs,
                            kc_sample_smem &sh) {
    if (need > ties) need = ties;
    if (need < 1) need = 1;
    if (threadIdx.x == 0) sh.id = KC_NO_ID;
    __syncthreads();
    for (int i = threadIdx.x; i < cs.n; i += KC_SAMPLE_THREADS) {
        int id = cs.id[i];
        if (!(cs.p[i] == v && kc_kept(v, id, k))) continue;
        int below = 0;
        for (int e = 0; e < cs.n && below < need; e++)
            below += cs.p[e] == v && cs.id[e] < id && kc_kept(v, cs.id[e], k);
        if (below == need - 1) sh.id = id;
    }
    __syncthreads();
    int id = sh.id;
    __syncthreads();
    return id;
}

// kc_tie_id: from the candidate buffer when active, else in one coalesced pass when the need-th
// tie is the first or the last one.
__device__ int kc_tie_fast(const float *w, int n, const kc_keep &k, float v, int need, int ties,
                           const kc_cands &cs, kc_sample_smem &sh) {
    if (cs.active && ties >= 0) return kc_cands_tie(k, v, need, ties, cs, sh);
    if (ties > 0 && need >= ties) return kc_tie_end(w, n, k, v, true, sh);
    if (ties > 0 && need <= 1) return kc_tie_end(w, n, k, v, false, sh);
    return kc_tie_id(w, n, k, v, need, sh);
}

// kc_truncate with the radix select: top_k, then top_p, narrowing k.last_p / k.last_id.
__device__ void kc_truncate_radix(const float *w, int n, const kern_sample_params &P, kc_keep &k,
                                  float *pc, kc_sample_smem &sh) {
    __shared__ kc_radix_smem rs;
    __shared__ kc_cands cs;
    if (threadIdx.x == 0) {
        cs.n = 0;
        cs.active = cs.full = false;
    }
    double total;
    int n_cand;
    kc_fill(w, n, k, pc, total, n_cand, sh); // its barriers publish cs
    if (P.top_k > 0 && P.top_k < n_cand) {
        double above;
        int ties;
        uint32_t v =
            kc_radix_select(w, n, k, false, (double)P.top_k, n_cand, &above, &ties, rs, cs);
        float vf = __uint_as_float(v);
        k.last_id = kc_tie_fast(w, n, k, vf, P.top_k - (int)above, ties, cs, sh);
        k.last_p = vf;
        // What top_p sees: the mass top_k left, from the buffer when it holds all of it.
        if (P.top_p < 1.0f) {
            if (cs.active && cs.full) {
                total = 0;
                n_cand = 0;
                for (int i = threadIdx.x; i < cs.n; i += KC_SAMPLE_THREADS)
                    if (kc_kept(cs.p[i], cs.id[i], k)) {
                        total += cs.p[i];
                        n_cand++;
                    }
                kc_block_sum(total, n_cand, sh);
            } else {
                __syncthreads(); // everyone has seen cs.active before it changes
                if (threadIdx.x == 0) cs.active = false;
                kc_mass_all(w, n, k, total, n_cand, sh); // its barriers publish cs
            }
        }
    }
    if (P.top_p < 1.0f) {
        double target = (double)P.top_p * total;
        if (n_cand > 0 && total >= target) {
            double above;
            int ties;
            uint32_t v = kc_radix_select(w, n, k, true, target, n_cand, &above, &ties, rs, cs);
            float vf = __uint_as_float(v);
            // The ties at v, in id order, until the running mass reaches the target.
            double need = vf > 0 ? ceil((target - above) / (double)vf) : 1;
            int nt = need < 1 ? 1 : need > 2e9 ? 2000000000 : (int)need;
            while (nt > 1 && above + (double)(nt - 1) * vf >= target)
                nt--;
            k.last_id = kc_tie_fast(w, n, k, vf, nt, ties, cs, sh);
            k.last_p = vf;
        }
    }
}

// kc_draw with coalesced reads: each warp sums a contiguous span of ids (lanes stride 32, 8
// loads in flight), a block scan of the warp totals finds the span holding u * (kept mass), and
// the whole block then splits that span into short per-thread runs for a second scan and the
// walk. The same token as kc_draw but where the two summation orders round a boundary apart.
__device__ int kc_draw_fast(const float *w, int n, const kc_keep &k, float u, int fallback,
                            kc_sample_smem &sh) {
    const unsigned full = 0xffffffffu;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int span = ((n + KC_SAMPLE_WARPS - 1) / KC_SAMPLE_WARPS + 31) / 32 * 32;
    const int lo = min(n, warp * span), hi = min(n, lo + span);
    double m = 0;
    int j = lo + lane;
    for (; j + 7 * 32 < hi; j += 8 * 32) {
        float f[8];
#pragma unroll
        for (int e = 0; e < 8; e++)
            f[e] = k.pc ? k.pc[j + e * 32] : w[j + e * 32];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float p = k.pc ? f[e] : kc_exp(f[e], k);
            if (kc_kept(p, j + e * 32, k)) m += p;
        }
    }
    for (; j < hi; j += 32) {
        float p = kc_prob(w, j, k);
        if (kc_kept(p, j, k)) m += p;
    }
    m = kc_warp_sum_d(m); // the same bits in every lane
    double m_ex, m_in, m_tot;
    int c_ex, c_in, c_tot;
    kc_block_scan(lane == 0 ? m : 0, 0, m_ex, m_in, c_ex, c_in, m_tot, c_tot, sh);
    // Warp spans tile [0, m_tot) exactly: a span ends (lane 31's inclusive sum) where the next
    // begins (its lane 0's exclusive sum).
    double w_lo = __shfl_sync(full, m_ex, 0), w_hi = __shfl_sync(full, m_in, 31);
    double x = (double)u * m_tot;
    if (threadIdx.x == 0) {
        sh.id = -1;
        sh.id2 = -1;
    }
    __syncthreads();
    if (lane == 0 && m > 0 && w_lo <= x && x < w_hi) {
        sh.id = warp;
        sh.d[0] = w_lo;
    }
    __syncthreads();
    const int cw = sh.id;
    const double base = sh.d[0];
    __syncthreads();
    if (cw < 0) return fallback;
    const int slo = min(n, cw * span), shi = min(n, slo + span);
    const int per = (shi - slo + KC_SAMPLE_THREADS - 1) / KC_SAMPLE_THREADS;
    const int a = min(shi, slo + (int)threadIdx.x * per), b = min(shi, a + per);
    double m2 = 0;
    int last = -1;
    for (int i = a; i < b; i++) {
        float p = kc_prob(w, i, k);
        if (kc_kept(p, i, k)) {
            m2 += p;
            last = i;
        }
    }
    if (last >= 0) atomicMax(&sh.id2, last); // the fallback: the span's last kept id
    double t_ex, t_in, t_tot;
    kc_block_scan(m2, 0, t_ex, t_in, c_ex, c_in, t_tot, c_tot, sh);
    if (threadIdx.x == 0) sh.id = -1;
    __syncthreads();
    if (m2 > 0 && base + t_ex <= x && x < base + t_in) {
        double cum = base + t_ex;
        int pick = -1;
        for (int i = a; i < b; i++) {
            float p = kc_prob(w, i, k);
            if (!kc_kept(p, i, k)) continue;
            cum += p;
            pick = i;
            if (x < cum) break;
        }
        sh.id = pick;
    }
    __syncthreads();
    int id = sh.id >= 0 ? sh.id : sh.id2 >= 0 ? sh.id2 : fallback;
    __syncthreads();
    return id;
}

template <int ALGO> // 0: bisection, 1: radix select, 2: radix select and candidate buffer
__global__ void __launch_bounds__(KC_SAMPLE_THREADS)
    kc_sample(kern_sample_out *out /* [m] */, float *logits /* [m, vocab] */, int vocab,
              const kern_sample_params *params /* [m] */, const kern_sample_adj *adj /* [n_adj] */,
              float *orig /* [n_adj] */, float *pcache /* [n_pcache, vocab] */, int n_pcache) {
    __shared__ kc_sample_smem sh;
    const int row = blockIdx.x;
    const kern_sample_params P = params[row];
    kern_sample_out *o = &out[row];
    if (threadIdx.x == 0) {
        o->token = -1;
        o->status = 0;
        o->logprob = 0;
        o->n_top = 0;
    }
    int n = P.n_valid < vocab ? P.n_valid : vocab;
    if (n <= 0) return;
    float *w = logits + (size_t)row * vocab;

    // Raw logprobs, before anything touches the row.
    double lse = 0;
    if (P.n_logprobs >= 0) {
        float mx;
        kc_block_next(w, n, INFINITY, -1, mx, ALGO == 2, sh);
        double s = 0;
        int unused = 0;
        for (int j = threadIdx.x; j < n; j += KC_SAMPLE_THREADS)
            s += exp((double)w[j] - (double)mx);
        kc_block_sum(s, unused, sh);
        lse = (double)mx + log(s);
        int n_top = P.n_logprobs < KERN_SAMPLE_MAX_TOP ? P.n_logprobs : KERN_SAMPLE_MAX_TOP;
        if (n_top > n) n_top = n;
        float pv = INFINITY;
        int pid = -1;
        for (int t = 0; t < n_top; t++) {
            float v;
            int id = kc_block_next(w, n, pv, pid, v, ALGO == 2, sh);
            if (id == KC_NO_ID) {
                n_top = t;
                break;
            }
            if (threadIdx.x == 0) {
                o->top_id[t] = id;
                o->top_lp[t] = (float)((double)v - lse);
            }
            pv = v;
            pid = id;
        }
        if (threadIdx.x == 0) o->n_top = n_top;
    }

    // Bans and penalties in place; the raw values wait in orig.
    const bool has_adj = P.n_adj > 0;
    if (has_adj) {
        float rp = P.repetition_penalty;
        bool rep = rp > 0 && rp != 1.0f;
        bool freq = P.frequency_penalty != 0 || P.presence_penalty != 0;
        for (int e = threadIdx.x; e < P.n_adj; e += KC_SAMPLE_THREADS) {
            kern_sample_adj a = adj[P.adj_start + e];
            if (a.id < 0 || a.id >= n) continue;
            float v = w[a.id];
            orig[P.adj_start + e] = v;
            if (a.flags & KERN_SAMPLE_BANNED) {
                v = -INFINITY;
            } else {
                if (rep && (a.flags & KERN_SAMPLE_HISTORY)) v = v > 0 ? v / rp : v * rp;
                if (freq && a.count > 0)
                    v -= __fadd_rn(__fmul_rn(P.frequency_penalty, (float)a.count),
                                   P.presence_penalty);
            }
            w[a.id] = v;
        }
        __syncthreads();
    }

    float mx;
    int best = kc_block_next(w, n, INFINITY, -1, mx, ALGO == 2, sh);
    int token, status = 0;
    if (!has_adj && P.temperature < KERN_SAMPLE_EPS) {
        token = best == KC_NO_ID ? 0 : best; // every value NaN: id 0, as the reference
    } else if (best == KC_NO_ID || !(mx > -INFINITY)) {
        token = -1;
        status = ERR_INVAL;
    } else if (P.temperature < KERN_SAMPLE_EPS) {
        token = best;
    } else {
        kc_keep k = {mx, 1.0f / P.temperature, P.min_p > 0 ? P.min_p : 0, 0, KC_NO_ID, NULL, false};
        k.cands = ALGO == 2;
        float *pc = row < n_pcache ? pcache + (size_t)row * vocab : NULL;
        if (P.min_p > 0 || P.top_k > 0 || P.top_p < 1.0f) {
            if constexpr (ALGO > 0)
                kc_truncate_radix(w, n, P, k, pc, sh);
            else
                kc_truncate(w, n, P, k, pc, sh);
        }
        if constexpr (ALGO == 2)
            token = kc_draw_fast(w, n, k, P.u, best, sh);
        else
            token = kc_draw(w, n, k, P.u, best, sh);
    }

    if (has_adj) {
        __syncthreads();
        for (int e = threadIdx.x; e < P.n_adj; e += KC_SAMPLE_THREADS) {
            kern_sample_adj a = adj[P.adj_start + e];
            if (a.id >= 0 && a.id < n) w[a.id] = orig[P.adj_start + e];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        o->token = token;
        o->status = status;
        if (P.n_logprobs >= 0 && token >= 0) o->logprob = (float)((double)w[token] - lse);
    }
}

// ---- launchers

// Device bytes of one call's parameters, outputs and saved raw values, each part 256-aligned.
static size_t kc_align(size_t b) {
    return (b + 255) / 256 * 256;
}

extern "C" size_t kern_cuda_sample_scratch_bytes(int n_rows, int n_adj) {
    return kc_align((size_t)n_rows * sizeof(kern_sample_out)) +
           kc_align((size_t)n_rows * sizeof(kern_sample_params)) +
           kc_align((size_t)n_adj * sizeof(kern_sample_adj)) +
           kc_align((size_t)n_adj * sizeof(float));
}

extern "C" int kern_cuda_sample(kern_sample_out *d_out, float *logits, int n_rows, int vocab,
                                const kern_sample_params *d_params, const kern_sample_adj *d_adj,
                                float *d_orig, float *d_pcache, int n_pcache, cudaStream_t s) {
    if (n_rows < 0 || vocab <= 0 || n_pcache < 0 || (n_pcache > 0 && !d_pcache))
        return err_set(ERR_INVAL, "sample: bad sizes rows=%d vocab=%d cache rows=%d", n_rows, vocab,
                       n_pcache);
    if (n_rows == 0) return 0;
    // KEEL_SAMPLE_RADIX: 0 the bisection, 1 the radix select alone, anything else (the default)
    // the radix select with the candidate buffer. Read on every call (a getenv is nothing next
    // to a launch), so tests and the playground can switch at run time.
    const char *env = getenv("KEEL_SAMPLE_RADIX");
    int algo = env && strcmp(env, "0") == 0 ? 0 : env && strcmp(env, "1") == 0 ? 1 : 2;
    if (algo == 0)
        kc_sample<0><<<n_rows, KC_SAMPLE_THREADS, 0, s>>>(d_out, logits, vocab, d_params, d_adj,
                                                          d_orig, d_pcache, n_pcache);
    else if (algo == 1)
        kc_sample<1><<<n_rows, KC_SAMPLE_THREADS, 0, s>>>(d_out, logits, vocab, d_params, d_adj,
                                                          d_orig, d_pcache, n_pcache);
    else
        kc_sample<2><<<n_rows, KC_SAMPLE_THREADS, 0, s>>>(d_out, logits, vocab, d_params, d_adj,
                                                          d_orig, d_pcache, n_pcache);
    KC_LAUNCHED();
    return 0;
}

// The op: parameters and adjustments into op_scratch, the kernel, the outputs back to the host.
extern "C" int kern_cuda__sample_op(void *scratch, size_t scratch_bytes, kern_sample_out *out,
                                    float *logits, int n_rows, int vocab,
                                    const kern_sample_params *params, const kern_sample_adj *adj,
                                    int n_adj, bool prob_cache, cudaStream_t s) {
    if (n_rows < 0 || vocab <= 0 || n_adj < 0)
        return err_set(ERR_INVAL, "sample: bad sizes rows=%d vocab=%d adj=%d", n_rows, vocab,
                       n_adj);
    if (n_rows == 0) return 0;
    for (int r = 0; r < n_rows; r++) {
        const kern_sample_params *p = &params[r];
        if (p->n_valid > vocab || p->n_adj < 0 || p->adj_start < 0 ||
            (p->n_adj > 0 && p->adj_start + p->n_adj > n_adj) ||
            p->n_logprobs > KERN_SAMPLE_MAX_TOP)
            return err_set(ERR_INVAL,
                           "sample: row %d has n_valid %d (vocab %d), adjustments [%d, +%d) of "
                           "%d, %d logprobs (at most %d)",
                           r, p->n_valid, vocab, p->adj_start, p->n_adj, n_adj, p->n_logprobs,
                           KERN_SAMPLE_MAX_TOP);
    }
    size_t need = kern_cuda_sample_scratch_bytes(n_rows, n_adj);
    if (!scratch || need > scratch_bytes)
        return err_set(ERR_NOSPACE,
                       "sample: %d rows with %d penalty/ban entries need %zu bytes of op_scratch, "
                       "the context has %zu",
                       n_rows, n_adj, need, scratch_bytes);
    char *at = (char *)scratch;
    kern_sample_out *d_out = (kern_sample_out *)at;
    at += kc_align((size_t)n_rows * sizeof(kern_sample_out));
    kern_sample_params *d_params = (kern_sample_params *)at;
    at += kc_align((size_t)n_rows * sizeof(kern_sample_params));
    kern_sample_adj *d_adj = (kern_sample_adj *)at;
    at += kc_align((size_t)n_adj * sizeof(kern_sample_adj));
    float *d_orig = (float *)at;
    at += kc_align((size_t)n_adj * sizeof(float));
    // What is left of the scratch caches truncating rows' probabilities, one row each, for as
    // many rows as fit (the plan's region holds every row's when the adjustments are few).
    size_t left = scratch_bytes - need, row_bytes = (size_t)vocab * sizeof(float);
    int n_pcache =
        prob_cache ? (int)(left / row_bytes < (size_t)n_rows ? left / row_bytes : n_rows) : 0;
    CUDA_CHECK(cudaMemcpyAsync(d_params, params, (size_t)n_rows * sizeof(*params),
                               cudaMemcpyHostToDevice, s));
    if (n_adj > 0)
        CUDA_CHECK(
            cudaMemcpyAsync(d_adj, adj, (size_t)n_adj * sizeof(*adj), cudaMemcpyHostToDevice, s));
    int rc = kern_cuda_sample(d_out, logits, n_rows, vocab, d_params, d_adj, d_orig,
                              n_pcache ? (float *)at : NULL, n_pcache, s);
    if (rc) return rc;
    CUDA_CHECK(
        cudaMemcpyAsync(out, d_out, (size_t)n_rows * sizeof(*out), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return 0;
}

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
// does. Masses accumulate in double. That is the reference variant (KEEL_SAMPLE_RADIX=0). By
// default (kernels/cuda/sample_fast.cuh) the thresholds come from a radix select instead: 3
// histogram passes per threshold over the probabilities' bits with 8 loads in flight per thread,
// the candidates compacted into shared memory once they are few (top_p after top_k then reads
// only those), and the argmax and the draw read with loads in flight and coalesced (with one
// load in flight per thread, a pass over a row waits on ~150 L2 round trips one after another).
// KEEL_SAMPLE_RADIX=1: the radix select alone. bench/kernels/sample.cu runs the default and the
// reference side by side.
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

#include "kernels/cuda/sample_fast.cuh"

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
    int rc = kern_sample_check("sample", n_rows, vocab, params, n_adj);
    if (rc) return rc;
    if (n_rows == 0) return 0;
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
    rc = kern_cuda_sample(d_out, logits, n_rows, vocab, d_params, d_adj, d_orig,
                              n_pcache ? (float *)at : NULL, n_pcache, s);
    if (rc) return rc;
    CUDA_CHECK(
        cudaMemcpyAsync(out, d_out, (size_t)n_rows * sizeof(*out), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return 0;
}

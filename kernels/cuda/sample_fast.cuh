// The fast truncation and draw of the sample op, included by kernels/cuda/sample.cu only (one
// translation unit: its kernel instantiates these next to the reference helpers they reuse).
// Selected by KEEL_SAMPLE_RADIX (sample.cu's launcher): 1 the radix select, anything but 0 or 1
// (the default) the radix select with the candidate buffer plus the argmax and draw with loads in
// flight; 0 keeps the reference kernel (bisection) for A/B runs and as a fallback.
#ifndef KEEL_KERNELS_CUDA_SAMPLE_FAST_CUH
#define KEEL_KERNELS_CUDA_SAMPLE_FAST_CUH

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
static_assert(KC_SAMPLE_WARPS == 32, "kc_radix_find gives each of 32 warps one segment of bins");
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

#endif

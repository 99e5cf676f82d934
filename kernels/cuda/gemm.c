// GEMMs through the context's one cuBLASLt handle: y[m, n] = x[m, k] . w[n, k]^T (+ bias), bf16
// in, float32 accumulation (CUBLAS_COMPUTE_32F), bf16 or float32 out; for m <= 8 possibly keel's
// own gemv kernel (gemv.cu) instead.
//
// Row-major to cuBLAS's column-major: row-major y[m, n] is column-major y^T[n, m], and
// y^T = w . x^T where w (row-major [n, k]) is column-major [k, n] used transposed and x is
// column-major [k, m] used as is. So cuBLAS sees M = n, N = m, K = k, A = w (op T, lda = k),
// B = x (op N, ldb = k), D (ldd = n).
//
// Plans (descriptor and algorithm) are cached per (m bucket, n, k, kind, alignment), the bucket
// being m rounded up to a power of two: a plan is chosen once per bucket and serves every m of the
// bucket (the layouts of x and y carry the real m). So a server sees a bounded set of plans (and
// of cuBLASLt kernels, loaded on first use) however its batch sizes vary.
//
// Choosing a plan is measured, not guessed: cuBLASLt's first heuristic pick ran the thin decode
// matrices at a third of the copy rate, and its BIAS epilogue ran the prefill qkv GEMM at half the
// rate of the plain GEMM. So on a plan's first call made outside a graph capture the tuner times,
// on the call's own buffers, the heuristic's first algorithm (for a bias: with the BIAS epilogue
// and plain + kern_cuda_bias_add) and, for m <= 8, the gemv kernel, and keeps the fastest:
// the heuristic's first pick stays unless another cuBLASLt algorithm is at least 3% faster (so
// that noise does not flip a choice between runs), and the gemv is taken whenever it is faster
// than the cuBLASLt choice. A gemv must also agree with cuBLASLt on that call (relative L2
// error) before it is chosen. This costs a few milliseconds per shape, once, with a wait for the
// stream (first steps only; a graph is captured after a key's first eager step, so its plans are
// settled by then). A plan first needed inside a capture runs the heuristic's pick and is measured
// at its next eager call.
//
// Switches, read when a plan is chosen: KEEL_GEMV=0 never uses the gemv kernel, KEEL_GEMV=force
// always does for m <= 8 (no timing, no check); KEEL_GEMM_TUNE=0 takes the heuristic's first pick
// (the behaviour before the tuner) and no gemv unless forced; KEEL_GEMM_TUNE=N (1 by default, at
// most 8) times the heuristic's first N algorithms per epilogue.
#include "common/cuda_check.h"
#include "common/err.h"
#include "common/log.h"
#include "kernels/cuda/ctx.h"
#include "kernels/cuda/kern_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KERN_CUDA__TUNE_ALGOS_MAX 8 // heuristic results timed per epilogue, at most
#define KERN_CUDA__TUNE_MARGIN 0.97f

// One call's operands: what the tuner times and what a plan runs on.
struct kern_cuda__call {
    void *y;          // [m, n]
    const bf16 *x;    // [m, k]
    const bf16 *w;    // [n, k]
    const bf16 *bias; // [n] or NULL
    int m, n, k, kind;
};

// ---- plans

static int kern_cuda__align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 2 && a % (uintptr_t)al)
        al >>= 1;
    return al;
}

static cudaDataType_t kern_cuda__out_type(int kind) {
    return kind == KERN_CUDA_GEMM_F32 ? CUDA_R_32F : CUDA_R_16BF;
}

static int kern_cuda__pref(struct kern_ctx *c, cublasLtMatmulPreferenceOpaque_t *pref, int align) {
    uint64_t ws = c->workspace_bytes;
    uint32_t al = (uint32_t)align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceInit(pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    return 0;
}

static int kern_cuda__set_epilogue(struct kern_cuda_gemm_plan *p, bool fused) {
    cublasLtEpilogue_t epi = fused ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (fused) {
        cudaDataType_t bias_type = CUDA_R_16BF;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &bias_type, sizeof bias_type));
    }
    p->fused_bias = fused;
    return 0;
}

// Up to `max` heuristic results for the plan's descriptor as it stands (its epilogue), at the
// bucket's m. *n_res = 0 when the library has none (not an error).
static int kern_cuda__heuristic(struct kern_ctx *c, struct kern_cuda_gemm_plan *p, int max,
                                cublasLtMatmulHeuristicResult_t *res, int *n_res) {
    cublasLtMatrixLayoutOpaque_t lb, lc;
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&lb, CUDA_R_16BF, (uint64_t)p->k, (uint64_t)p->m, p->k));
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&lc, kern_cuda__out_type(p->kind), (uint64_t)p->n,
                                          (uint64_t)p->m, p->n));
    cublasLtMatmulPreferenceOpaque_t pref;
    int rc = kern_cuda__pref(c, &pref, p->align);
    if (rc) return rc;
    *n_res = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, &p->desc, &p->a, &lb, &lc, &lc, &pref,
                                                       max, res, n_res);
    if (st != CUBLAS_STATUS_SUCCESS) *n_res = 0;
    return 0;
}

// The descriptor and the heuristic's first pick (the BIAS epilogue where it has one); the plan
// is not settled: the first eager call measures the alternatives (kern_cuda__tune).
static int kern_cuda__plan_build(struct kern_ctx *c, struct kern_cuda_gemm_plan *p, int m, int n,
                                 int k, int kind, int align) {
    memset(p, 0, sizeof *p);
    p->m = m;
    p->n = n;
    p->k = k;
    p->kind = kind;
    p->align = align;
    CUBLAS_CHECK(cublasLtMatmulDescInit(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&p->a, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k));

    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0, rc;
    if (kind == KERN_CUDA_GEMM_BIAS) {
        if ((rc = kern_cuda__set_epilogue(p, true))) return rc;
        if ((rc = kern_cuda__heuristic(c, p, 1, &res, &n_res))) return rc;
        if (n_res == 0 && (rc = kern_cuda__set_epilogue(p, false))) return rc;
    }
    if (n_res == 0) {
        if ((rc = kern_cuda__heuristic(c, p, 1, &res, &n_res))) return rc;
        if (n_res == 0)
            return err_set(ERR_UNSUPPORTED, "gemm: cuBLASLt has no algorithm for m=%d n=%d k=%d", m,
                           n, k);
    }
    p->algo = res.algo;
    c->n_gemm_plans_built++;
    return 0;
}

// The cached plan for a shape, built on first use.
static int kern_cuda__plan(struct kern_ctx *c, int m, int n, int k, int kind, int align,
                           struct kern_cuda_gemm_plan **out) {
    unsigned h = (unsigned)m * 2654435761u ^ (unsigned)n * 40503u ^ (unsigned)k * 9973u ^
                 (unsigned)kind * 131u ^ (unsigned)align;
    struct kern_cuda_gemm_plan *victim = NULL;
    for (int i = 0; i < KERN_CUDA_GEMM_PROBE; i++) {
        struct kern_cuda_gemm_plan *p = &c->plans[(h + (unsigned)i) % KERN_CUDA_GEMM_PLANS];
        if (p->kind == kind && p->m == m && p->n == n && p->k == k && p->align == align) {
            p->used = ++c->n_gemm_calls;
            *out = p;
            return 0;
        }
        if (!victim || p->kind == 0 || (victim->kind != 0 && p->used < victim->used)) victim = p;
    }
    int rc = kern_cuda__plan_build(c, victim, m, n, k, kind, align);
    if (rc) {
        victim->kind = 0;
        return rc;
    }
    victim->used = ++c->n_gemm_calls;
    *out = victim;
    return 0;
}

// ---- running a plan

// cuBLASLt with the plan's descriptor and algorithm `algo` (the bias added after when the
// descriptor has no epilogue). Returns the library's status for the tuner, which skips an
// algorithm that fails; kern_cuda__run turns it into an error.
static cublasStatus_t kern_cuda__run_lt(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                                        const cublasLtMatmulAlgo_t *algo,
                                        const struct kern_cuda__call *a) {
    cublasLtMatrixLayoutOpaque_t lb, lc;
    cublasStatus_t st;
    st = cublasLtMatrixLayoutInit(&lb, CUDA_R_16BF, (uint64_t)a->k, (uint64_t)a->m, a->k);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    st = cublasLtMatrixLayoutInit(&lc, kern_cuda__out_type(a->kind), (uint64_t)a->n, (uint64_t)a->m,
                                  a->n);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (p->fused_bias) {
        st = cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a->bias,
                                            sizeof a->bias);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    const float one = 1.0f, zero = 0.0f;
    st = cublasLtMatmul(c->lt, &p->desc, &one, a->w, &p->a, a->x, &lb, &zero, a->y, &lc, a->y, &lc,
                        algo, c->workspace, c->workspace_bytes, c->stream);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (a->kind == KERN_CUDA_GEMM_BIAS && !p->fused_bias &&
        kern_cuda_bias_add((bf16 *)a->y, a->bias, a->m, a->n, c->stream))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

static int kern_cuda__run_gemv(struct kern_ctx *c, int warps, void *y,
                               const struct kern_cuda__call *a) {
    return kern_cuda_gemv(y, a->kind == KERN_CUDA_GEMM_F32, a->x, a->w, a->bias, a->m, a->n, a->k,
                          warps, c->stream);
}

static int kern_cuda__run(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                          const struct kern_cuda__call *a) {
    if (p->gemv) return kern_cuda__run_gemv(c, p->gemv_warps, a->y, a);
    CUBLAS_CHECK(kern_cuda__run_lt(c, p, &p->algo, a));
    return 0;
}

// ---- the tuner

struct kern_cuda__cand {
    bool gemv, fused;
    int warps;
    cublasLtMatmulAlgo_t algo;
    float us;
};

static int kern_cuda__run_cand(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                               const struct kern_cuda__cand *d, const struct kern_cuda__call *a) {
    if (d->gemv) return kern_cuda__run_gemv(c, d->warps, a->y, a);
    if (p->fused_bias != d->fused) {
        int rc = kern_cuda__set_epilogue(p, d->fused);
        if (rc) return rc;
    }
    cublasStatus_t st = kern_cuda__run_lt(c, p, &d->algo, a);
    return st == CUBLAS_STATUS_SUCCESS ? 0 : ERR_UNSUPPORTED;
}

// Median microseconds of a candidate over 7 runs (3 for runs over 1 ms), each between its own
// pair of events, after one warm-up run (which also loads its kernel). For thin shapes the
// workspace is overwritten before each run: in a real decode step the weights come from device
// memory, and a weight matrix of 26-33 MB would otherwise sit in the 50 MB L2 between the runs.
// Returns 0 with us = INFINITY for a candidate the library refuses.
static int kern_cuda__time(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                           struct kern_cuda__cand *d, const struct kern_cuda__call *a,
                           cudaEvent_t e0, cudaEvent_t e1) {
    d->us = INFINITY;
    if (kern_cuda__run_cand(c, p, d, a)) {
        err_clear();
        return 0;
    }
    bool flush = p->m <= KERN_CUDA_GEMV_MAX_M && c->workspace && c->workspace_bytes;
    float t[7];
    int reps = 7;
    for (int i = 0; i < reps; i++) {
        if (flush) CUDA_CHECK(cudaMemsetAsync(c->workspace, i, c->workspace_bytes, c->stream));
        CUDA_CHECK(cudaEventRecord(e0, c->stream));
        int rc = kern_cuda__run_cand(c, p, d, a);
        if (rc) return rc;
        CUDA_CHECK(cudaEventRecord(e1, c->stream));
        CUDA_CHECK(cudaEventSynchronize(e1));
        CUDA_CHECK(cudaEventElapsedTime(&t[i], e0, e1));
        if (i == 0 && t[0] > 1.0f) reps = 3;
    }
    for (int i = 1; i < reps; i++) // insertion sort: at most 7 values
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            float x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    d->us = t[reps / 2] * 1e3f;
    return 0;
}

// The gemv's relative L2 difference from the cuBLASLt candidate `ref` on this call: ref into y,
// the gemv into the workspace. Returns 0 with *rel = INFINITY when the workspace is too small or
// the reference does not run.
static int kern_cuda__gemv_check(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                                 const struct kern_cuda__cand *ref, int warps,
                                 const struct kern_cuda__call *a, float *rel) {
    *rel = INFINITY;
    size_t out_bytes = (size_t)a->m * a->n * (a->kind == KERN_CUDA_GEMM_F32 ? 4 : 2);
    size_t sums_at = (out_bytes + 255) / 256 * 256;
    if (!c->workspace || sums_at + 256 > c->workspace_bytes) return 0;
    if (kern_cuda__run_cand(c, p, ref, a)) { // no reference to check against: no gemv
        err_clear();
        return 0;
    }
    int rc = kern_cuda__run_gemv(c, warps, c->workspace, a);
    if (rc) return rc;
    float *d_sums = (float *)((char *)c->workspace + sums_at), sums[2];
    rc = kern_cuda__gemv_diff(c->workspace, a->y, a->kind == KERN_CUDA_GEMM_F32,
                              (size_t)a->m * a->n, d_sums, c->stream);
    if (rc) return rc;
    CUDA_CHECK(cudaMemcpyAsync(sums, d_sums, sizeof sums, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    *rel = sums[1] > 0 ? sqrtf(sums[0] / sums[1]) : (sums[0] == 0 ? 0.0f : INFINITY);
    if (isnan(*rel)) *rel = INFINITY;
    return 0;
}

static bool kern_cuda__env_is(const char *name, const char *value) {
    const char *v = getenv(name);
    return v && !strcmp(v, value);
}

// Times the candidates on this call and settles the plan (see the file's header).
static int kern_cuda__tune_run(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                               const struct kern_cuda__call *a, int n_algos,
                               struct kern_cuda__cand *cand, cudaEvent_t e0, cudaEvent_t e1) {
    // Candidate 0 is the heuristic's pick, as built.
    int n = 0, rc;
    cand[n++] = (struct kern_cuda__cand){.fused = p->fused_bias, .algo = p->algo};
    for (int pass = 0; pass < (a->kind == KERN_CUDA_GEMM_BIAS ? 2 : 1); pass++) {
        bool fused = a->kind == KERN_CUDA_GEMM_BIAS && pass == 0;
        cublasLtMatmulHeuristicResult_t res[KERN_CUDA__TUNE_ALGOS_MAX];
        int n_res = 0;
        if ((rc = kern_cuda__set_epilogue(p, fused))) return rc;
        if ((rc = kern_cuda__heuristic(c, p, n_algos, res, &n_res))) return rc;
        for (int i = 0; i < n_res; i++) {
            if (fused == cand[0].fused && !memcmp(&res[i].algo, &cand[0].algo, sizeof res[i].algo))
                continue;
            cand[n++] = (struct kern_cuda__cand){.fused = fused, .algo = res[i].algo};
        }
    }
    if (p->m <= KERN_CUDA_GEMV_MAX_M && !kern_cuda__env_is("KEEL_GEMV", "0")) {
        int w = kern_cuda_gemv_default_warps(a->k);
        cand[n++] = (struct kern_cuda__cand){.gemv = true, .warps = w};
        if (w > 4) cand[n++] = (struct kern_cuda__cand){.gemv = true, .warps = 4};
    }
    if (n == 1) return kern_cuda__set_epilogue(p, cand[0].fused); // nothing to compare
    for (int i = 0; i < n; i++)
        if ((rc = kern_cuda__time(c, p, &cand[i], a, e0, e1))) return rc;

    // cuBLASLt: the heuristic's pick unless another algorithm is the margin faster. The gemv
    // when it is faster than that, with no margin: inside a decode graph it also starts under the
    // previous kernel's tail (PDL), which the timing here, launch after launch, does not see. A
    // gemv only if it agrees.
    int lt = 0;
    for (int i = 1; i < n; i++)
        if (!cand[i].gemv && cand[i].us < cand[lt].us) lt = i;
    if (!(cand[lt].us < KERN_CUDA__TUNE_MARGIN * cand[0].us)) lt = 0;
    int best = lt;
    for (int i = 1; i < n; i++)
        if (cand[i].gemv && cand[i].us < cand[best].us) best = i;
    if (cand[best].gemv) {
        float rel;
        if ((rc = kern_cuda__gemv_check(c, p, &cand[0], cand[best].warps, a, &rel))) return rc;
        float tol = a->kind == KERN_CUDA_GEMM_F32 ? 1e-3f : 2e-2f;
        if (!(rel <= tol)) {
            log_warn("gemm m=%d n=%d k=%d: the gemv kernel differs from cuBLASLt (relative L2 "
                     "%.3g > %.3g); using cuBLASLt for this shape",
                     a->m, a->n, a->k, rel, tol);
            best = lt;
        }
    }
    p->gemv = cand[best].gemv;
    p->gemv_warps = cand[best].warps;
    if (!p->gemv) {
        p->algo = cand[best].algo;
        if ((rc = kern_cuda__set_epilogue(p, cand[best].fused))) return rc;
    } else if ((rc = kern_cuda__set_epilogue(p, false))) {
        return rc;
    }
    log_debug("gemm plan m<=%d n=%d k=%d%s: %s %.1f us (heuristic's pick %.1f us, %d candidates)",
              p->m, p->n, p->k,
              a->kind == KERN_CUDA_GEMM_BIAS  ? " +bias"
              : a->kind == KERN_CUDA_GEMM_F32 ? " f32"
                                              : "",
              p->gemv         ? (p->gemv_warps == 4 ? "gemv 4 warps" : "gemv")
              : p->fused_bias ? "cuBLASLt+epilogue"
              : a->bias       ? "cuBLASLt+bias_add"
                              : "cuBLASLt",
              cand[best].us, cand[0].us, n);
    return 0;
}

static int kern_cuda__tune(struct kern_ctx *c, struct kern_cuda_gemm_plan *p,
                           const struct kern_cuda__call *a) {
    enum cudaStreamCaptureStatus cs;
    CUDA_CHECK(cudaStreamIsCapturing(c->stream, &cs));
    if (cs != cudaStreamCaptureStatusNone) return 0; // measured at the next eager call
    p->settled = true;
    bool small = p->m <= KERN_CUDA_GEMV_MAX_M;
    if (small && kern_cuda__env_is("KEEL_GEMV", "force")) {
        p->gemv = true;
        p->gemv_warps = 0;
        return kern_cuda__set_epilogue(p, false);
    }
    // Each cuBLASLt algorithm timed loads its kernel (lazy loading: device memory outside the
    // arena, which the memory plan does not budget), so by default only the heuristic's first
    // pick of each epilogue is timed; KEEL_GEMM_TUNE=N times its first N (at most 8).
    const char *env = getenv("KEEL_GEMM_TUNE");
    int n_algos = env ? atoi(env) : 1;
    if (n_algos <= 0) return 0;
    if (n_algos > KERN_CUDA__TUNE_ALGOS_MAX) n_algos = KERN_CUDA__TUNE_ALGOS_MAX;
    struct kern_cuda__cand cand[1 + 2 * KERN_CUDA__TUNE_ALGOS_MAX + 2];
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    if (cudaEventCreate(&e1) != cudaSuccess) {
        cudaEventDestroy(e0);
        return err_set(ERR_CUDA, "gemm: cudaEventCreate failed");
    }
    int rc = kern_cuda__tune_run(c, p, a, n_algos, cand, e0, e1);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return rc;
}

// ---- GEMMs

static int kern_cuda__matmul(struct kern_ctx *c, void *y, const bf16 *x, const bf16 *w,
                             const bf16 *bias, int m, int n, int k, int kind) {
    if (m < 0 || n <= 0 || k <= 0)
        return err_set(ERR_INVAL, "gemm: bad sizes m=%d n=%d k=%d", m, n, k);
    if (m == 0) return 0;
    int bucket = 1;
    while (bucket < m)
        bucket <<= 1;
    int align = kern_cuda__align_of(y);
    int ax = kern_cuda__align_of(x), aw = kern_cuda__align_of(w);
    align = ax < align ? ax : align;
    align = aw < align ? aw : align;
    struct kern_cuda_gemm_plan *p;
    int rc = kern_cuda__plan(c, bucket, n, k, kind, align, &p);
    if (rc) return rc;
    const struct kern_cuda__call a = {y, x, w, bias, m, n, k, kind};
    if (!p->settled && (rc = kern_cuda__tune(c, p, &a))) return rc;
    return kern_cuda__run(c, p, &a);
}

int kern_cuda_gemm(struct kern_ctx *c, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *bias,
                   int m, int n, int k) {
    return kern_cuda__matmul(c, y, x, w, bias, m, n, k,
                             bias ? KERN_CUDA_GEMM_BIAS : KERN_CUDA_GEMM_BF16);
}

int kern_cuda_gemm_f32(struct kern_ctx *c, float *y, const bf16 *x, const bf16 *w, int m, int n,
                       int k) {
    return kern_cuda__matmul(c, y, x, w, NULL, m, n, k, KERN_CUDA_GEMM_F32);
}

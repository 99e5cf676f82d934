// GEMMs through the context's one cuBLASLt handle: y[m, n] = x[m, k] . w[n, k]^T (+ bias), bf16
// in, float32 accumulation (CUBLAS_COMPUTE_32F), bf16 or float32 out.
//
// Row-major to cuBLAS's column-major: row-major y[m, n] is column-major y^T[n, m], and
// y^T = w . x^T where w (row-major [n, k]) is column-major [k, n] used transposed and x is
// column-major [k, m] used as is. So cuBLAS sees M = n, N = m, K = k, A = w (op T, lda = k),
// B = x (op N, ldb = k), D (ldd = n).
//
// The bias is fused through the epilogue (CUBLASLT_EPILOGUE_BIAS, one rounding, as PyTorch's
// Linear); if the heuristic has nothing for that epilogue, the plain GEMM runs and then
// kern_cuda_bias_add. Every call runs on the context's stream with the arena's workspace.
//
// Plans (descriptor and algorithm) are cached per (m bucket, n, k, kind, alignment), the bucket
// being m rounded up to a power of two: the heuristic is asked once per bucket, with the bucket's
// m, and its algorithm serves every m of the bucket (the layouts of x and y carry the real m).
// So a server sees a bounded set of plans (and of cuBLASLt kernels, loaded on first use) however
// its batch sizes vary.
#include "common/cuda_check.h"
#include "common/err.h"
#include "kernels/cuda/ctx.h"
#include "kernels/cuda/kern_cuda.h"

#include <string.h>

// ---- plans

static int kern_cuda__align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 2 && a % (uintptr_t)al)
        al >>= 1;
    return al;
}

static int kern_cuda__plan_build(struct kern_ctx *c, struct kern_cuda_gemm_plan *p, int m, int n,
                                 int k, int kind, int align) {
    memset(p, 0, sizeof *p);
    cudaDataType_t out_type = kind == KERN_CUDA_GEMM_F32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescInit(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&p->a, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k));
    cublasLtMatrixLayoutOpaque_t lb, lc; // at the bucket's m, for the heuristic only
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)m, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&lc, out_type, (uint64_t)n, (uint64_t)m, n));

    cublasLtMatmulPreferenceOpaque_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceInit(&pref));
    uint64_t ws = c->workspace_bytes;
    uint32_t al = (uint32_t)align;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        &pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        &pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));

    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    if (kind == KERN_CUDA_GEMM_BIAS) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bias_type = CUDA_R_16BF;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &bias_type, sizeof bias_type));
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(c->lt, &p->desc, &p->a, &lb, &lc, &lc,
                                                           &pref, 1, &res, &n_res);
        if (st == CUBLAS_STATUS_SUCCESS && n_res > 0) {
            p->fused_bias = true;
        } else {
            epi = CUBLASLT_EPILOGUE_DEFAULT;
            CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                        &epi, sizeof epi));
            n_res = 0;
        }
    }
    if (n_res == 0) {
        CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(c->lt, &p->desc, &p->a, &lb, &lc, &lc, &pref, 1,
                                                    &res, &n_res));
        if (n_res == 0)
            return err_set(ERR_UNSUPPORTED, "gemm: cuBLASLt has no algorithm for m=%d n=%d k=%d", m,
                           n, k);
    }
    p->algo = res.algo;
    p->m = m;
    p->n = n;
    p->k = k;
    p->kind = kind;
    p->align = align;
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
    cudaDataType_t out_type = kind == KERN_CUDA_GEMM_F32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasLtMatrixLayoutOpaque_t lb, lc;
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&lb, CUDA_R_16BF, (uint64_t)k, (uint64_t)m, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutInit(&lc, out_type, (uint64_t)n, (uint64_t)m, n));
    if (p->fused_bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(&p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &bias, sizeof bias));
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(c->lt, &p->desc, &one, w, &p->a, x, &lb, &zero, y, &lc, y, &lc,
                                &p->algo, c->workspace, c->workspace_bytes, c->stream));
    if (kind == KERN_CUDA_GEMM_BIAS && !p->fused_bias)
        return kern_cuda_bias_add((bf16 *)y, bias, m, n, c->stream);
    return 0;
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

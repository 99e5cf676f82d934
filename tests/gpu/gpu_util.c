// GPU test helpers (see gpu_util.h).
#include "tests/gpu/gpu_util.h"

#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/test.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GT_CUDA(call)                                                                              \
    do {                                                                                           \
        cudaError_t gt__e = (call);                                                                \
        if (gt__e != cudaSuccess) TEST__FAIL("%s: %s", #call, cudaGetErrorString(gt__e));          \
    } while (0)

// ---- device memory

void *gt_dev(size_t bytes) {
    void *p = NULL;
    GT_CUDA(cudaMalloc(&p, bytes ? bytes : 16));
    return p;
}

void gt_free(void *d) {
    if (d) cudaFree(d);
}

void *gt_up(const void *host, size_t bytes) {
    void *d = gt_dev(bytes);
    if (bytes) GT_CUDA(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    // The ops run on the context's non-blocking stream, which does not wait for the legacy
    // stream these copies use: finish them first.
    GT_CUDA(cudaDeviceSynchronize());
    return d;
}

void gt_down(void *host, const void *dev, size_t bytes) {
    GT_CUDA(cudaDeviceSynchronize());
    if (bytes) GT_CUDA(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

void gt_poison(void *dev, size_t bytes) {
    GT_CUDA(cudaMemset(dev, 0xff, bytes));
    GT_CUDA(cudaDeviceSynchronize());
}

void gt_sync(void) {
    GT_CUDA(cudaDeviceSynchronize());
}

// ---- random data

uint64_t gt_rand(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

float gt_uniform(uint64_t *s) {
    return (float)((gt_rand(s) >> 40) * (1.0 / (1ull << 24))) * 2.0f - 1.0f;
}

bf16 *gt_rand_bf16(size_t n, float scale, uint64_t *s) {
    bf16 *h = malloc(n * 2 + 2);
    CHECK(h != NULL);
    for (size_t i = 0; i < n; i++)
        h[i] = f32_to_bf16(gt_uniform(s) * scale);
    return h;
}

bf16 *gt_copy_bf16(const bf16 *src, size_t n) {
    bf16 *h = malloc(n * 2 + 2);
    CHECK(h != NULL);
    memcpy(h, src, n * 2);
    return h;
}

// ---- comparison

static struct gt_err gt__cmp(const float *g, const float *w, size_t n, int is_bf16, const bf16 *gb,
                             const bf16 *wb) {
    struct gt_err e = {0, 0, 0};
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double a = is_bf16 ? bf16_to_f32(gb[i]) : g[i];
        double b = is_bf16 ? bf16_to_f32(wb[i]) : w[i];
        if (!isfinite(a)) {
            e.n_nan++;
            continue;
        }
        double d = fabs(a - b);
        if (d > e.max_abs) e.max_abs = d;
        num += d * d;
        den += b * b;
    }
    e.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    return e;
}

struct gt_err gt_cmp_bf16(const bf16 *got, const bf16 *want, size_t n) {
    return gt__cmp(NULL, NULL, n, 1, got, want);
}

struct gt_err gt_cmp_f32(const float *got, const float *want, size_t n) {
    return gt__cmp(got, want, n, 0, NULL, NULL);
}

// ---- the table

void gt_table_path(char *buf, size_t len) {
    const char *env = getenv("KEEL_GPU_TABLE");
    // The runner forks every test from one parent: its pid names this run's table.
    if (env && *env)
        snprintf(buf, len, "%s", env);
    else
        snprintf(buf, len, "/tmp/keel-gpu-table.%d", (int)getppid());
}

static void gt__append(const char *line) {
    char path[256];
    gt_table_path(path, sizeof path);
    FILE *f = fopen(path, "a");
    if (f) {
        fputs(line, f);
        fclose(f);
    }
    fputs(line, stdout);
    fflush(stdout);
}

void gt_row(const char *op, const char *shape, struct gt_err e, double tol) {
    int ok = e.n_nan == 0 && e.rel_l2 <= tol;
    char line[512];
    if (e.n_nan)
        snprintf(line, sizeof line, "| %-14s | %-44s | %zu NaN/unwritten | %9s | %7.0e | %s |\n",
                 op, shape, e.n_nan, "-", tol, "FAIL");
    else
        snprintf(line, sizeof line, "| %-14s | %-44s | %9.3e | %9.3e | %7.0e | %s |\n", op, shape,
                 e.max_abs, e.rel_l2, tol, ok ? "ok" : "FAIL");
    gt__append(line);
    CHECK_MSG(ok, "%s %s: rel err %.3e (tol %.0e), max abs %.3e, %zu NaN", op, shape, e.rel_l2, tol,
              e.max_abs, e.n_nan);
}

void gt_row_exact(const char *op, const char *shape, size_t mismatches) {
    char line[512];
    snprintf(line, sizeof line, "| %-14s | %-44s | %9zu | %9s | %7s | %s |\n", op, shape,
             mismatches, "exact", "0", mismatches ? "FAIL" : "ok");
    gt__append(line);
    CHECK_MSG(mismatches == 0, "%s %s: %zu mismatches", op, shape, mismatches);
}

// ---- context

static struct kern_ctx *gt__ctx;
static void *gt__ws, *gt__scratch;

#define GT_WORKSPACE_BYTES (32u << 20)
#define GT_SCRATCH_BYTES (64u << 20)

struct kern_ctx *gt_ctx(void) {
    if (gt__ctx) return gt__ctx;
    gt__ws = gt_dev(GT_WORKSPACE_BYTES);
    gt__scratch = gt_dev(GT_SCRATCH_BYTES);
    CHECK_OK(
        kern_cuda_ctx_init(&gt__ctx, 0, gt__ws, GT_WORKSPACE_BYTES, gt__scratch, GT_SCRATCH_BYTES));
    return gt__ctx;
}

void *gt_scratch(void) {
    gt_ctx();
    return gt__scratch;
}

size_t gt_scratch_bytes(void) {
    return GT_SCRATCH_BYTES;
}

void gt_ctx_free(void) {
    kern_cuda_ctx_free(gt__ctx);
    gt__ctx = NULL;
    gt_free(gt__ws);
    gt_free(gt__scratch);
    gt__ws = gt__scratch = NULL;
}

static struct kern_ctx *gt__cpu;

struct kern_ctx *gt_cpu(void) {
    if (!gt__cpu) CHECK_OK(kern_cpu_ctx_init(&gt__cpu, 0));
    return gt__cpu;
}

// ---- a model on the CUDA backend

void gt_model_open(struct gt_model *f, const char *dir, enum model_load_format fmt,
                   struct mem_plan_settings set, uint64_t seed) {
    memset(f, 0, sizeof *f);
    CHECK_OK(model_config_load(dir, &f->cfg));
    CHECK(cudaFree(0) == cudaSuccess); // the CUDA context and the kernel context, before
    CHECK_OK(kern_cuda_ctx_init(&f->ctx, 0, NULL, 0, NULL, 0)); // measuring what they cost
    size_t total = 0, free_b = 0;
    CHECK_OK(mem_device_info(0, &total, &free_b));
    f->set = set;
    struct mem_plan_shape shape;
    model_plan_shape(&f->cfg, &shape);
    CHECK_OK(mem_plan_compute(&shape, &f->set, total, free_b, &f->plan));
    CHECK_OK(mem_arena_init(&f->arena, MEM_DEVICE, 0, f->plan.arena_bytes, 64u << 20));
    CHECK_OK(mem_arena_carve(&f->arena, "cublas_workspace", f->plan.workspace_bytes, &f->ws));
    CHECK_OK(mem_arena_carve(&f->arena, "sampling", f->plan.sampling_bytes, &f->scratch));
    CHECK_OK(kern_cuda_ctx_set_regions(f->ctx, f->ws, f->plan.workspace_bytes, f->scratch,
                                       f->plan.sampling_bytes));
    CHECK_OK(
        model_weights_load(&f->m.w, &f->cfg, dir, fmt, seed, &kern_cuda_ops, f->ctx, &f->arena));
    CHECK_OK(model_init(&f->m, &f->cfg, &kern_cuda_ops, f->ctx, &f->arena, &f->plan, &f->set));
}

void gt_model_close(struct gt_model *f) {
    model_free(&f->m);
    model_weights_free(&f->m.w);
    kern_cuda_ctx_free(f->ctx);
    mem_arena_free(&f->arena);
}

// ---- a paged attention batch

void gt_attn_layout_make(struct gt_attn_layout *l, int n_seqs, const int *qlen, const int *len,
                         int block_size, uint64_t *seed) {
    memset(l, 0, sizeof *l);
    l->n_seqs = n_seqs;
    l->qstart = malloc(sizeof(int32_t) * (n_seqs + 1));
    l->lens = malloc(sizeof(int32_t) * (n_seqs > 0 ? n_seqs : 1));
    CHECK(l->qstart && l->lens);
    l->qstart[0] = 0;
    for (int i = 0; i < n_seqs; i++) {
        l->n_tokens += qlen[i];
        l->qstart[i + 1] = l->n_tokens;
        l->lens[i] = len[i];
        int nb = (len[i] + block_size - 1) / block_size;
        l->n_blocks += nb;
        if (nb > l->max_blocks) l->max_blocks = nb;
        if (qlen[i] > l->max_q) l->max_q = qlen[i];
        if (len[i] > l->max_len) l->max_len = len[i];
    }
    l->max_blocks += 1; // a wider table than needed: the stride must be honoured
    l->n_blocks += 3;   // blocks no sequence owns
    int32_t *perm = malloc(sizeof(int32_t) * l->n_blocks);
    l->tables = calloc((size_t)n_seqs * l->max_blocks + 1, sizeof(int32_t));
    CHECK(perm && l->tables);
    for (int i = 0; i < l->n_blocks; i++)
        perm[i] = i;
    for (int i = l->n_blocks - 1; i > 0; i--) {
        int j = (int)(gt_rand(seed) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int i = 0, used = 0; i < n_seqs; i++)
        for (int b = 0; b < (len[i] + block_size - 1) / block_size; b++)
            l->tables[i * l->max_blocks + b] = perm[used++];
    free(perm);
}

void gt_attn_layout_free(struct gt_attn_layout *l) {
    free(l->qstart), free(l->lens), free(l->tables);
    memset(l, 0, sizeof *l);
}

// Helpers of the GPU tests: device buffers (tests may cudaMalloc; keel's code may not), random
// bf16 data, poisoning, comparison by relative L2 error, and the results table that the last test
// (gpu_table, in zz_table.c) prints: op | shape | max err | rel err | tol | ok.
// Every helper aborts the test with a message on a CUDA error.
#ifndef KEEL_TESTS_GPU_GPU_UTIL_H
#define KEEL_TESTS_GPU_GPU_UTIL_H

#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"

#include <stddef.h>
#include <stdint.h>

// ---- device memory and copies (abort on failure)
void *gt_dev(size_t bytes);
void gt_free(void *d);
void *gt_up(const void *host, size_t bytes); // new device buffer holding a copy of host
void gt_down(void *host, const void *dev, size_t bytes);
void gt_poison(void *dev, size_t bytes); // 0xff bytes: NaN in bf16 and float32
void gt_sync(void);

// ---- random data (xorshift; fixed seeds keep failures reproducible)
uint64_t gt_rand(uint64_t *s);
float gt_uniform(uint64_t *s);                          // [-1, 1)
bf16 *gt_rand_bf16(size_t n, float scale, uint64_t *s); // malloc'd
bf16 *gt_copy_bf16(const bf16 *src, size_t n);          // malloc'd copy

// ---- comparison
struct gt_err {
    double max_abs, rel_l2;
    size_t n_nan; // NaN or inf in the result (an unwritten output stays poisoned)
};
struct gt_err gt_cmp_bf16(const bf16 *got, const bf16 *want, size_t n);
struct gt_err gt_cmp_f32(const float *got, const float *want, size_t n);

// Records a row in the table and prints it; fails the test when rel_l2 > tol or any NaN.
void gt_row(const char *op, const char *shape, struct gt_err e, double tol);
// Records an exact check (ids, copies): max err = number of mismatches.
void gt_row_exact(const char *op, const char *shape, size_t mismatches);

// ---- the context under test: one per test process, workspace from a test allocation
struct kern_ctx *gt_ctx(void);
void gt_ctx_free(void);
void *gt_scratch(void); // the context's op_scratch (device) and its size
size_t gt_scratch_bytes(void);
// The CPU backend's context (kern_cpu_ops), all cores, one per test process.
struct kern_ctx *gt_cpu(void);

// The path of this run's table file (shared by the forked test processes).
void gt_table_path(char *buf, size_t len);

// ---- a paged attention batch (host arrays): sequence i has qlen[i] new tokens and a context of
// len[i]; its blocks come from a shuffled order of all blocks, 3 more blocks than the sequences
// own exist, and the table is one block wider than needed (kernels must honour its stride).
struct gt_attn_layout {
    int n_seqs, n_tokens, max_q, max_len, max_blocks, n_blocks;
    int32_t *qstart; // [n_seqs + 1]
    int32_t *lens;   // [n_seqs]
    int32_t *tables; // [n_seqs, max_blocks]
};
void gt_attn_layout_make(struct gt_attn_layout *l, int n_seqs, const int *qlen, const int *len,
                         int block_size, uint64_t *seed);
void gt_attn_layout_free(struct gt_attn_layout *l);

// ---- a model on the CUDA backend, set up as keel serve starts one: the CUDA and kernel contexts
// first (so the plan sees what they cost), the memory plan from the device's free memory and
// `set`, one arena, the cuBLAS workspace and sampling regions carved from it, the weights (random
// from `seed` with MODEL_LOAD_DUMMY), the model. Aborts the test on any failure.
struct gt_model {
    struct mem_arena arena;
    struct kern_ctx *ctx;
    struct model m;
    struct mem_plan plan;
    struct mem_plan_settings set;
    struct model_config cfg;
    void *ws, *scratch; // the arena's cuBLAS workspace and sampling regions
};
void gt_model_open(struct gt_model *f, const char *dir, enum model_load_format fmt,
                   struct mem_plan_settings set, uint64_t seed);
void gt_model_close(struct gt_model *f);

#endif

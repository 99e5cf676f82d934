// Internals of the CPU reference backend, shared by its files (kernels/cpu/*.c) and nothing else:
// the context (a small persistent thread pool with per-thread scratch) and the parallel-for the
// ops use to split their work.
#ifndef KEEL_KERNELS_CPU_CPU_H
#define KEEL_KERNELS_CPU_CPU_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define KERN_CPU_MAX_THREADS 64
// Per-thread float32 scratch, allocated once at init (ops never allocate): GEMM converts a block
// of x rows into it, so k (the reduction length) may be at most this many elements.
#define KERN_CPU_SCRATCH_FLOATS (1 << 16)
// Attention keeps one float32 accumulator row of head_dim per (token, head) on the stack.
#define KERN_CPU_MAX_HEAD_DIM 512

// A chunk of a parallel loop: items [begin, end), run by thread `tid` (0 = the caller).
typedef void (*kern__cpu_task_cb)(void *arg, int tid, int begin, int end);

struct kern_ctx {
    int n_threads; // including the calling thread
    pthread_t threads[KERN_CPU_MAX_THREADS];
    float *scratch; // [n_threads, KERN_CPU_SCRATCH_FLOATS]
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    uint64_t generation; // bumped for every parallel loop; workers wait for a change
    int n_running;       // workers still busy with the current loop
    bool stop;
    // the current loop
    kern__cpu_task_cb fn;
    void *arg;
    int n_items;
    int n_parts;
    // the sample op's per-thread scratch (sample.c), made on its first call
    struct kern_sample_scratch *sample_scratch; // [n_threads] or NULL
    int sample_vocab;
};

// Runs fn over items [0, n_items), split into contiguous chunks, one per thread, and returns when
// all chunks are done. Work below min_items_per_thread per thread runs on fewer threads, so tiny
// loops do not pay for waking the pool.
void kern__cpu_parallel_for(struct kern_ctx *c, int n_items, int min_items_per_thread,
                            kern__cpu_task_cb fn, void *arg);

static inline float *kern__cpu_scratch(struct kern_ctx *c, int tid) {
    return c->scratch + (size_t)tid * KERN_CPU_SCRATCH_FLOATS;
}

// The ops that live in their own files (gemm.c, attention.c); ops.c puts them in the table.
#include "kernels/ops.h"
int kern__cpu_gemm(struct kern_ctx *c, bf16 *y, const bf16 *x, const bf16 *w, const bf16 *bias,
                   int m, int n, int k);
int kern__cpu_gemm_f32(struct kern_ctx *c, float *y, const bf16 *x, const bf16 *w, int m, int n,
                       int k);
int kern__cpu_sample(struct kern_ctx *c, struct kern_sample_out *out, float *logits, int n_rows,
                     int vocab, const struct kern_sample_params *params,
                     const struct kern_sample_adj *adj, int n_adj);
void kern__cpu_sample_free(struct kern_ctx *c); // the sample op's scratch; the context's free
int kern__cpu_attention(struct kern_ctx *c, bf16 *out, const bf16 *qkv, const bf16 *k_cache,
                        const bf16 *v_cache, const struct kern_attn_batch *b, int n_heads,
                        int n_kv_heads, int head_dim, int block_size, float scale);

#endif

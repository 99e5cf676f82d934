// The CPU backend's context: a persistent pool of worker threads and their scratch, created once
// in kern_cpu_ctx_init so the ops themselves never allocate or spawn anything. The calling thread
// runs the first chunk of every loop itself; workers sleep on a condition variable between loops.
// One caller at a time: like a CUDA stream, a context belongs to one thread (the engine's), so
// loops never overlap.
#include "common/err.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"

#include <stdlib.h>
#include <unistd.h>

// ---- the pool

static void run_part(struct kern_ctx *c, int part) {
    int begin = (int)((int64_t)c->n_items * part / c->n_parts);
    int end = (int)((int64_t)c->n_items * (part + 1) / c->n_parts);
    if (begin < end) c->fn(c->arg, part, begin, end);
}

static void *worker_main(void *arg) {
    struct kern_ctx *c = NULL;
    int tid = 0;
    {
        // The argument packs the context and the thread's index (see kern_cpu_ctx_init).
        void **pair = arg;
        c = pair[0];
        tid = (int)(intptr_t)pair[1];
        free(pair);
    }
    uint64_t seen = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && c->generation == seen)
            pthread_cond_wait(&c->start_cv, &c->mu);
        if (c->stop) break;
        seen = c->generation;
        bool mine = tid < c->n_parts;
        pthread_mutex_unlock(&c->mu);
        if (mine) run_part(c, tid);
        pthread_mutex_lock(&c->mu);
        if (--c->n_running == 0) pthread_cond_signal(&c->done_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

void kern__cpu_parallel_for(struct kern_ctx *c, int n_items, int min_items_per_thread,
                            kern__cpu_task_cb fn, void *arg) {
    if (n_items <= 0) return;
    if (min_items_per_thread < 1) min_items_per_thread = 1;
    int parts = n_items / min_items_per_thread;
    if (parts > c->n_threads) parts = c->n_threads;
    if (parts <= 1) {
        fn(arg, 0, 0, n_items);
        return;
    }
    pthread_mutex_lock(&c->mu);
    c->fn = fn;
    c->arg = arg;
    c->n_items = n_items;
    c->n_parts = parts;
    c->n_running = c->n_threads - 1; // every worker wakes and checks in, busy or not
    c->generation++;
    pthread_cond_broadcast(&c->start_cv);
    pthread_mutex_unlock(&c->mu);

    run_part(c, 0);

    pthread_mutex_lock(&c->mu);
    while (c->n_running > 0)
        pthread_cond_wait(&c->done_cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

// ---- context

int kern_cpu_ctx_init(struct kern_ctx **out, int n_threads) {
    *out = NULL;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > KERN_CPU_MAX_THREADS) n_threads = KERN_CPU_MAX_THREADS;
    struct kern_ctx *c = calloc(1, sizeof *c);
    if (!c) return err_set(ERR_NOMEM, "cpu backend: out of memory for the context");
    c->scratch = malloc((size_t)n_threads * KERN_CPU_SCRATCH_FLOATS * sizeof(float));
    if (!c->scratch) {
        free(c);
        return err_set(ERR_NOMEM, "cpu backend: out of memory for %d threads' scratch", n_threads);
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->start_cv, NULL);
    pthread_cond_init(&c->done_cv, NULL);
    c->n_threads = 1;
    for (int t = 1; t < n_threads; t++) {
        void **pair = malloc(2 * sizeof *pair);
        if (!pair) break;
        pair[0] = c;
        pair[1] = (void *)(intptr_t)t;
        if (pthread_create(&c->threads[t], NULL, worker_main, pair) != 0) {
            free(pair);
            break; // fewer threads is slower, not wrong
        }
        c->n_threads++;
    }
    *out = c;
    return 0;
}

void kern_cpu_ctx_free(struct kern_ctx *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->start_cv);
    pthread_mutex_unlock(&c->mu);
    for (int t = 1; t < c->n_threads; t++)
        pthread_join(c->threads[t], NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->start_cv);
    pthread_cond_destroy(&c->done_cv);
    kern__cpu_sample_free(c);
    free(c->scratch);
    free(c);
}

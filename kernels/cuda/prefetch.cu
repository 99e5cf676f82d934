// The prefetch op (kernels/ops.h): a decode step's small ops (RMSNorm, qk_norm + RoPE + kv_write,
// attention over a short context) leave the memory nearly idle for a few microseconds before each
// projection, whose GEMV then streams its weights. Reading the first part of those weights into
// L2 during that gap moves it off the GEMV's critical path. The read is a kernel on a side stream
// forked from the context's stream after the work queued so far (an event record and wait, which
// stream capture turns into a graph fork), issuing `prefetch.global.L2` per 128-byte line: it
// holds no data and finishes as soon as the lines are requested, and nothing on the main stream
// waits for it until the join at the end of the step. It changes no result. Off by default
// (KEEL_L2_PREFETCH=1 turns it on): on the H100 (docs/PERF.md run 7) 7B single-stream decode was
// 5.51 ms/step with it and 5.43-5.46 without; the lines it requests compete with the GEMV that
// is still streaming, and the gaps it fills are shorter than predicted now that PDL overlaps
// them. At batch 8 a graph replay was 1.1% faster with it.
#include "common/cuda_check.h"
#include "common/err.h"
#include "kernels/cuda/ctx.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#define KC_PF_LINE 128
#define KC_PF_THREADS 256
#define KC_PF_MAX_BLOCKS 264 // two per multiprocessor of an H100 is plenty to issue the lines
// At most this much per call: H100's L2 is 50 MB, and lines evicted before the GEMV reaches
// them would be read twice.
#define KC_PF_MAX_BYTES ((size_t)24 << 20)

__global__ void __launch_bounds__(KC_PF_THREADS)
    kc_l2_prefetch(const char *w /* [bytes] */, size_t n_lines) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_lines;
         i += (size_t)gridDim.x * blockDim.x)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(w + i * KC_PF_LINE));
}

extern "C" int kern_cuda__prefetch(struct kern_ctx *c, const void *w, size_t bytes) {
    if (!c->prefetch_on || !w || bytes == 0) return 0;
    if (bytes > KC_PF_MAX_BYTES) bytes = KC_PF_MAX_BYTES;
    size_t n_lines = bytes / KC_PF_LINE; // whole lines only: never past the end of w
    if (n_lines == 0) return 0;
    size_t blocks = (n_lines + KC_PF_THREADS - 1) / KC_PF_THREADS;
    if (blocks > KC_PF_MAX_BLOCKS) blocks = KC_PF_MAX_BLOCKS;
    CUDA_CHECK(cudaEventRecord(c->fork_ev, c->stream));
    CUDA_CHECK(cudaStreamWaitEvent(c->side, c->fork_ev, 0));
    kc_l2_prefetch<<<(unsigned)blocks, KC_PF_THREADS, 0, c->side>>>((const char *)w, n_lines);
    KC_LAUNCHED();
    c->side_pending = true;
    return 0;
}

extern "C" int kern_cuda__prefetch_join(struct kern_ctx *c) {
    if (!c->side_pending) return 0;
    c->side_pending = false;
    CUDA_CHECK(cudaEventRecord(c->join_ev, c->side));
    CUDA_CHECK(cudaStreamWaitEvent(c->stream, c->join_ev, 0));
    return 0;
}

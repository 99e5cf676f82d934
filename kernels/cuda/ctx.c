// The CUDA context: one per GPU, made once at start-up. It holds the engine's one stream and the
// one cuBLASLt handle (bound to that stream at every call and given the arena's workspace, so the
// library never allocates), and raises kernels' shared-memory limits once, so that no step does
// launch configuration work. Also the host <-> device copies and the synchronisation point.
#include "kernels/cuda/ctx.h"

#include "common/cuda_check.h"
#include "common/err.h"
#include "kernels/cuda/kern_cuda.h"

#include <stdlib.h>
#include <string.h>

static int kern_cuda__handles; // cuBLAS(Lt) handles created in this process

int kern_cuda_handle_count(void) {
    return __atomic_load_n(&kern_cuda__handles, __ATOMIC_SEQ_CST);
}

cudaStream_t kern_cuda_stream(struct kern_ctx *c) {
    return c ? c->stream : NULL;
}

int kern_cuda__gemm_plans_built(const struct kern_ctx *c) {
    return c ? c->n_gemm_plans_built : 0;
}

// ---- lifecycle

static int kern_cuda__ctx_setup(struct kern_ctx *c) {
    CUDA_CHECK(cudaSetDevice(c->device));
    CUDA_CHECK(cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, c->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&c->lt));
    __atomic_add_fetch(&kern_cuda__handles, 1, __ATOMIC_SEQ_CST);
    return kern_cuda_attention_setup();
}

static int kern_cuda__check_regions(void *workspace, size_t workspace_bytes, void *op_scratch,
                                    size_t op_scratch_bytes) {
    if ((workspace_bytes && !workspace) || ((uintptr_t)workspace % 256) != 0)
        return err_set(ERR_INVAL,
                       "CUDA context: the cuBLAS workspace must be a 256-byte aligned "
                       "arena region (got %p, %zu bytes)",
                       workspace, workspace_bytes);
    if ((op_scratch_bytes && !op_scratch) || ((uintptr_t)op_scratch % 256) != 0)
        return err_set(ERR_INVAL,
                       "CUDA context: op_scratch must be a 256-byte aligned arena region "
                       "(got %p, %zu bytes)",
                       op_scratch, op_scratch_bytes);
    return 0;
}

int kern_cuda_ctx_init(struct kern_ctx **out, int device, void *workspace, size_t workspace_bytes,
                       void *op_scratch, size_t op_scratch_bytes) {
    *out = NULL;
    if (device < 0) return err_set(ERR_INVAL, "CUDA context: bad device %d", device);
    int rc = kern_cuda__check_regions(workspace, workspace_bytes, op_scratch, op_scratch_bytes);
    if (rc) return rc;
    struct kern_ctx *c = calloc(1, sizeof *c);
    if (!c) return err_set(ERR_NOMEM, "CUDA context: out of host memory");
    c->device = device;
    c->workspace = workspace;
    c->workspace_bytes = workspace_bytes;
    c->op_scratch = op_scratch;
    c->op_scratch_bytes = op_scratch_bytes;
    // Read once here, not per step: the sample op's probability cache can be turned off at run
    // time should it ever misbehave (it changes speed, not results).
    const char *pcache = getenv("KEEL_SAMPLE_PROB_CACHE");
    c->sample_prob_cache = !(pcache && strcmp(pcache, "0") == 0);
    rc = kern_cuda__ctx_setup(c);
    if (rc) {
        kern_cuda_ctx_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int kern_cuda_ctx_set_regions(struct kern_ctx *c, void *workspace, size_t workspace_bytes,
                              void *op_scratch, size_t op_scratch_bytes) {
    int rc = kern_cuda__check_regions(workspace, workspace_bytes, op_scratch, op_scratch_bytes);
    if (rc) return rc;
    CUDA_CHECK(cudaStreamSynchronize(c->stream)); // nothing queued may still use the old regions
    // Plans were chosen for the old workspace: choose again when it changes. Only then: a plan
    // dropped needlessly is chosen again by the next call, and if that call is being captured
    // into a CUDA graph the tuner cannot time it (kernels/cuda/gemm.c), so the graph keeps the
    // heuristic's cuBLASLt pick while eager steps use the tuned kernel, and the two differ in
    // the last bits (gpu_sample_model_tiny's op_scratch-only change showed it).
    if (workspace != c->workspace || workspace_bytes != c->workspace_bytes)
        memset(c->plans, 0, sizeof c->plans);
    c->workspace = workspace;
    c->workspace_bytes = workspace_bytes;
    c->op_scratch = op_scratch;
    c->op_scratch_bytes = op_scratch_bytes;
    return 0;
}

void kern_cuda_ctx_free(struct kern_ctx *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

// ---- copies and synchronisation

int kern_cuda__copy_to_backend(struct kern_ctx *c, void *dst, const void *src, size_t bytes) {
    if (!bytes) return 0;
    // From pageable memory the call returns once the source has been staged, so the caller may
    // reuse its buffer at once; the copy stays ordered on the stream.
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return 0;
}

int kern_cuda__copy_to_host(struct kern_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return 0;
}

int kern_cuda__sync(struct kern_ctx *c) {
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

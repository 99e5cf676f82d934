// The CUDA half of the arena (memory/arena_internal.h): the only cudaMalloc and cudaMallocHost
// calls in keel, and the device's memory as the plan needs it. Compiled only when KEEL_CUDA is
// defined (the Makefile adds */*_cuda.c to CUDA builds).
#include "common/cuda_check.h"
#include "common/err.h"
#include "common/log.h"
#include "memory/arena.h"
#include "memory/arena_internal.h"

#include <cuda_runtime_api.h>
#include <stdatomic.h>

// Counts successful cudaMalloc calls for the one-allocation promise's test.
static atomic_int mem__n_device_allocs;

int mem_device_alloc_count(void) { return atomic_load(&mem__n_device_allocs); }

static int check_device(int device) {
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    if (device < 0 || device >= n)
        return err_set(ERR_INVAL, "device %d does not exist (this machine has %d CUDA devices)",
                       device, n);
    return 0;
}

int mem_device_info(int device, size_t *total, size_t *free_bytes) {
    *total = 0;
    *free_bytes = 0;
    int rc = check_device(device);
    if (rc) return rc;
    CUDA_CHECK(cudaSetDevice(device));
    size_t f = 0, t = 0;
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    *total = t;
    // Measured on the H100: an arena of N bytes costs the process N + ~3 MiB of device memory
    // (page granularity and the driver's bookkeeping for the allocation). Report that slack as
    // already used, so the plan's overhead row carries it and the arena stays inside the budget.
    *free_bytes = f > MEM_DEVICE_ALLOC_SLACK_BYTES ? f - MEM_DEVICE_ALLOC_SLACK_BYTES : 0;
    return 0;
}

int mem__device_alloc(int device, size_t bytes, void **ptr) {
    *ptr = NULL;
    int rc = check_device(device);
    if (rc) return rc;
    CUDA_CHECK(cudaSetDevice(device));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        // Clear the runtime's last error so the next launcher's cudaGetLastError() does not
        // report this allocation as its own failure.
        (void)cudaGetLastError();
        size_t f = 0, t = 0;
        // Ask what was free only to make the message useful; the first error is what counts.
        if (cudaMemGetInfo(&f, &t) != cudaSuccess) f = t = 0;
        int cls = err_cuda_fail((int)e, cudaGetErrorName(e), cudaGetErrorString(e), "cudaMalloc",
                                __FILE__, __LINE__);
        return err_set(cls, "arena: cudaMalloc of %zu bytes (%.3f GiB) on device %d failed: %s "
                            "(%.3f GiB of %.3f GiB free)",
                       bytes, (double)bytes / (double)(1ull << 30), device, cudaGetErrorName(e),
                       (double)f / (double)(1ull << 30), (double)t / (double)(1ull << 30));
    }
    atomic_fetch_add(&mem__n_device_allocs, 1);
    *ptr = p;
    return 0;
}

void mem__device_free(int device, void *ptr) {
    if (!ptr) return;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaFree(ptr);
    if (e != cudaSuccess) log_warn("arena: cudaFree on device %d: %s", device, cudaGetErrorName(e));
}

int mem__pinned_alloc(size_t bytes, void **ptr) {
    *ptr = NULL;
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); // as above
        int cls = err_cuda_fail((int)e, cudaGetErrorName(e), cudaGetErrorString(e),
                                "cudaMallocHost", __FILE__, __LINE__);
        return err_set(cls, "arena: cudaMallocHost of %zu bytes of pinned staging failed: %s",
                       bytes, cudaGetErrorName(e));
    }
    *ptr = p;
    return 0;
}

void mem__pinned_free(void *ptr) {
    if (!ptr) return;
    cudaError_t e = cudaFreeHost(ptr);
    if (e != cudaSuccess) log_warn("arena: cudaFreeHost: %s", cudaGetErrorName(e));
}

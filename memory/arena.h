// The arena: one allocation per device, of exactly the planned size, carved into named, aligned
// regions. The only place in keel that allocates device memory (and the pinned host staging
// buffer used while loading). For the CPU backend the same arena lives in host memory, so the
// forward pass and the loader see one abstraction.
#ifndef KEEL_MEMORY_ARENA_H
#define KEEL_MEMORY_ARENA_H

#include <stddef.h>
#include <stdint.h>

#define MEM_ARENA_ALIGN 256       // every region starts on this boundary
#define MEM_ARENA_MAX_REGIONS 64

enum mem_kind { MEM_HOST = 0, MEM_DEVICE = 1 };

struct mem_region {
    char name[32];
    size_t offset, bytes;
};

struct mem_arena {
    enum mem_kind kind;
    int device;          // CUDA device ordinal (MEM_DEVICE)
    uint8_t *base;       // host or device pointer
    size_t bytes;        // total
    size_t used;         // bytes carved so far (aligned)
    struct mem_region regions[MEM_ARENA_MAX_REGIONS];
    int n_regions;
    void *staging;       // pinned host buffer for loading (MEM_DEVICE), or NULL
    size_t staging_bytes;
};

// Allocates the arena: host memory (MEM_HOST) or one cudaMalloc on `device` (MEM_DEVICE), plus a
// pinned staging buffer of staging_bytes (0 for none). Returns 0, ERR_NOMEM / ERR_CUDA_ALLOC with
// the numbers in err_msg(), or ERR_UNSUPPORTED for MEM_DEVICE in a build without CUDA.
int mem_arena_init(struct mem_arena *a, enum mem_kind kind, int device, size_t bytes,
                   size_t staging_bytes);
void mem_arena_free(struct mem_arena *a); // NULL-safe; frees what init allocated

// Carves the next region of `bytes` (rounded up to MEM_ARENA_ALIGN) and returns its address in
// *ptr. Returns 0 or ERR_NOSPACE naming the region, what it asked for and what was left.
int mem_arena_carve(struct mem_arena *a, const char *name, size_t bytes, void **ptr);

// Number of device allocations keel has made in this process (cudaMalloc calls through the
// arena), for the one-allocation promise's test.
int mem_device_alloc_count(void);

// Device memory a cudaMalloc costs beyond its size (page rounding, driver bookkeeping); counted
// as used in mem_device_info()'s free figure.
#define MEM_DEVICE_ALLOC_SLACK_BYTES ((size_t)16 << 20)

// Total and free memory of a CUDA device (cudaMemGetInfo, free less the allocation slack).
// ERR_UNSUPPORTED without CUDA.
int mem_device_info(int device, size_t *total, size_t *free_bytes);

#endif

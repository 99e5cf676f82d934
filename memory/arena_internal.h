// Private to memory/: the CUDA half of the arena (memory/arena_cuda.c, compiled only when
// KEEL_CUDA is defined), called by memory/arena.c. Each returns 0 or an ERR_* code with the
// failed call in err_msg().
#ifndef KEEL_MEMORY_ARENA_INTERNAL_H
#define KEEL_MEMORY_ARENA_INTERNAL_H

#include <stddef.h>

#ifdef KEEL_CUDA
// One cudaMalloc of `bytes` on `device` (counted for mem_device_alloc_count()).
int mem__device_alloc(int device, size_t bytes, void **ptr);
void mem__device_free(int device, void *ptr);
// Pinned host memory (cudaMallocHost) for the loader's staging buffer.
int mem__pinned_alloc(size_t bytes, void **ptr);
void mem__pinned_free(void *ptr);
#endif

#endif

// One way to check every CUDA and cuBLAS call: CUDA_CHECK(call) / CUBLAS_CHECK(call).
//
// On failure the macro records "call failed at file:line: NAME (description)" with err_set(),
// classifies the failure and makes the enclosing function return the class:
//   ERR_CUDA_ALLOC  allocation failure (cudaErrorMemoryAllocation, CUBLAS_STATUS_ALLOC_FAILED)
//   ERR_CUDA_FAULT  sticky fault: the context is dead (illegal address, launch failure, ...);
//                   the server must drain and exit, never serve on it again
//   ERR_CUDA        anything else
// The classifiers take plain integers so they are testable on machines without CUDA.
#ifndef KEEL_COMMON_CUDA_CHECK_H
#define KEEL_COMMON_CUDA_CHECK_H

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

// Maps a cudaError_t value to ERR_OK, ERR_CUDA_ALLOC, ERR_CUDA_FAULT or ERR_CUDA.
int err_cuda_class(int cuda_error);

// Maps a cublasStatus_t value to ERR_OK, ERR_CUDA_ALLOC or ERR_CUDA.
int err_cublas_class(int cublas_status);

// Symbolic name of a cublasStatus_t value ("CUBLAS_STATUS_ALLOC_FAILED", ...).
const char *err_cublas_name(int cublas_status);

// Records the failure of `call` at file:line and returns its class (see above).
int err_cuda_fail(int cuda_error, const char *name, const char *desc, const char *call,
                  const char *file, int line);
int err_cublas_fail(int cublas_status, const char *call, const char *file, int line);

#ifdef __cplusplus
}
#endif

#ifdef KEEL_CUDA
#include <cuda_runtime_api.h>

#define CUDA_CHECK(call)                                                                        \
    do {                                                                                        \
        cudaError_t cuda_check__e = (call);                                                     \
        if (cuda_check__e != cudaSuccess)                                                       \
            return err_cuda_fail((int)cuda_check__e, cudaGetErrorName(cuda_check__e),          \
                                 cudaGetErrorString(cuda_check__e), #call, __FILE__, __LINE__); \
    } while (0)

#define CUBLAS_CHECK(call)                                                                      \
    do {                                                                                        \
        int cublas_check__s = (int)(call);                                                      \
        if (cublas_check__s != 0)                                                               \
            return err_cublas_fail(cublas_check__s, #call, __FILE__, __LINE__);                 \
    } while (0)
#endif

#endif

#include "common/cuda_check.h"

// Values of cudaError_t and cublasStatus_t, copied as numbers so this file builds without CUDA.
// They are part of CUDA's stable ABI.
enum {
    CU_MEMORY_ALLOCATION = 2,
    CU_ECC_UNCORRECTABLE = 214,
    CU_NVLINK_UNCORRECTABLE = 220,
    CU_ILLEGAL_ADDRESS = 700,
    CU_LAUNCH_TIMEOUT = 702,
    CU_ASSERT = 710,
    CU_HARDWARE_STACK_ERROR = 714,
    CU_ILLEGAL_INSTRUCTION = 715,
    CU_MISALIGNED_ADDRESS = 716,
    CU_INVALID_ADDRESS_SPACE = 717,
    CU_INVALID_PC = 718,
    CU_LAUNCH_FAILURE = 719,
    CU_EXTERNAL_DEVICE = 911,
};

int err_cuda_class(int e) {
    switch (e) {
    case 0: return ERR_OK;
    case CU_MEMORY_ALLOCATION: return ERR_CUDA_ALLOC;
    // These leave the context unusable: every later call fails the same way.
    case CU_ECC_UNCORRECTABLE:
    case CU_NVLINK_UNCORRECTABLE:
    case CU_ILLEGAL_ADDRESS:
    case CU_LAUNCH_TIMEOUT:
    case CU_ASSERT:
    case CU_HARDWARE_STACK_ERROR:
    case CU_ILLEGAL_INSTRUCTION:
    case CU_MISALIGNED_ADDRESS:
    case CU_INVALID_ADDRESS_SPACE:
    case CU_INVALID_PC:
    case CU_LAUNCH_FAILURE:
    case CU_EXTERNAL_DEVICE: return ERR_CUDA_FAULT;
    default: return ERR_CUDA;
    }
}

const char *err_cublas_name(int s) {
    switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

int err_cublas_class(int s) {
    if (s == 0) return ERR_OK;
    if (s == 3) return ERR_CUDA_ALLOC;
    return ERR_CUDA;
}

int err_cuda_fail(int e, const char *name, const char *desc, const char *call, const char *file,
                  int line) {
    int cls = err_cuda_class(e);
    const char *what = cls == ERR_CUDA_FAULT   ? "sticky fault, the CUDA context is dead"
                       : cls == ERR_CUDA_ALLOC ? "device allocation failed"
                                               : "CUDA error";
    return err_set(cls, "%s failed at %s:%d: %s (%s): %s", call, file, line, name ? name : "?",
                   desc ? desc : "?", what);
}

int err_cublas_fail(int s, const char *call, const char *file, int line) {
    int cls = err_cublas_class(s);
    return err_set(cls, "%s failed at %s:%d: %s", call, file, line, err_cublas_name(s));
}

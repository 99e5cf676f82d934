// Whether a GPU is present: used to pick the default backend (cuda when present, else cpu).
#include "kernels/ops.h"

#ifdef KEEL_CUDA
#include <cuda_runtime_api.h>
#endif

int kern_cuda_device_count(void) {
#ifdef KEEL_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
#else
    return 0;
#endif
}

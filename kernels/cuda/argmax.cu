// argmax: greedy sampling on the GPU, ids[i] = argmax_j logits[i, j], the lowest index among
// equal maxima (as torch.argmax), NaN never chosen over a number. Only the ids then cross to the
// host. Layout: one block of 1024 threads per row, a strided scan then a (value, index) tree.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

#include <math.h>

// ---- kernels

__device__ __forceinline__ void kc_better(float &v, int &i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

__global__ void kc_argmax(int32_t *ids /* [m] */, const float *logits /* [m, vocab] */, int vocab) {
    kc_pdl_begin();
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *x = logits + (size_t)blockIdx.x * vocab;
    float best = -INFINITY;
    int idx = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float f = x[j];
        if (f > best || (idx == 0x7fffffff && !isnan(f))) {
            best = f;
            idx = j;
        }
    }
    for (int o = 16; o > 0; o >>= 1)
        kc_better(best, idx, __shfl_xor_sync(0xffffffffu, best, o),
                  __shfl_xor_sync(0xffffffffu, idx, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? sv[lane] : -INFINITY;
        idx = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1)
            kc_better(best, idx, __shfl_xor_sync(0xffffffffu, best, o),
                      __shfl_xor_sync(0xffffffffu, idx, o));
        if (lane == 0) ids[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}

// ---- launchers

extern "C" int kern_cuda_argmax(int32_t *ids, const float *logits, int m, int vocab,
                                cudaStream_t s) {
    if (m < 0 || vocab <= 0) return err_set(ERR_INVAL, "argmax: bad sizes m=%d vocab=%d", m, vocab);
    if (m == 0) return 0;
    kc_launch(kc_argmax, m, 1024, 0, s, ids, logits, vocab);
    KC_LAUNCHED();
    return 0;
}

// add_rmsnorm: fused residual add + RMSNorm (vLLM's fused_add_rms_norm).
//   residual = bf16(residual + delta)          (when delta != NULL)
//   out      = bf16(w * bf16(residual * rsqrt(mean(residual^2) + eps)))
// The two roundings of the last line are Hugging Face's Qwen2RMSNorm (normalise in float32,
// cast to the input dtype, multiply by the bf16 weight), so greedy ids match transformers.
// Layout: one block per row; the first pass writes the new residual and sums its squares, the
// second re-reads the row (the block's own writes, hot in L1/L2). 16-byte vectors when dim is a
// multiple of 8 and the pointers are aligned.
// kern_cuda_add_rmsnorm_to writes the new residual to another buffer (res_out) and leaves the
// input alone: the fallback of the fused norm + GEMM op for batches the fused gemv does not take,
// where the forward pass ping-pongs the residual stream between two buffers.
#include "kernels/cuda/device.h"
#include "kernels/cuda/kern_cuda.h"

// ---- kernels

template <bool VEC>
__global__ void kc_add_rmsnorm(bf16 *out /* [n, dim] */, bf16 *res_out /* [n, dim] */,
                               const bf16 *residual /* [n, dim], may be res_out */,
                               const bf16 *delta /* [n, dim] or NULL */, const bf16 *w /* [dim] */,
                               int dim, float eps) {
    kc_pdl_begin();
    __shared__ float red[32];
    size_t row = (size_t)blockIdx.x * dim;
    // Each thread re-reads in the second pass exactly the elements it wrote in the first.
    const bf16 *ri = residual + row;
    bf16 *r = res_out + row;
    const bool store = delta != nullptr || res_out != residual;
    const bf16 *d = delta ? delta + row : nullptr;
    bf16 *o = out + row;
    float ss = 0.0f;
    if (VEC) {
        for (int j = threadIdx.x * 8; j < dim; j += blockDim.x * 8) {
            uint4 rv = *reinterpret_cast<const uint4 *>(ri + j);
            bf16 *rh = reinterpret_cast<bf16 *>(&rv);
            if (d) {
                uint4 dv = *reinterpret_cast<const uint4 *>(d + j);
                const bf16 *dh = reinterpret_cast<const bf16 *>(&dv);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    rh[e] = kc_bf(kc_f(rh[e]) + kc_f(dh[e]));
            }
            if (store) *reinterpret_cast<uint4 *>(r + j) = rv;
#pragma unroll
            for (int e = 0; e < 8; e++)
                ss += kc_f(rh[e]) * kc_f(rh[e]);
        }
    } else {
        for (int j = threadIdx.x; j < dim; j += blockDim.x) {
            float x = kc_f(ri[j]);
            if (d) x = kc_round(x + kc_f(d[j]));
            if (store) r[j] = kc_bf(x);
            ss += x * x;
        }
    }
    float inv = 1.0f / sqrtf(kc_block_sum(ss, red) / (float)dim + eps);
    if (VEC) {
        for (int j = threadIdx.x * 8; j < dim; j += blockDim.x * 8) {
            uint4 rv = *reinterpret_cast<const uint4 *>(r + j);
            uint4 wv = *reinterpret_cast<const uint4 *>(w + j);
            const bf16 *rh = reinterpret_cast<const bf16 *>(&rv);
            const bf16 *wh = reinterpret_cast<const bf16 *>(&wv);
            uint4 ov;
            bf16 *oh = reinterpret_cast<bf16 *>(&ov);
#pragma unroll
            for (int e = 0; e < 8; e++)
                oh[e] = kc_bf(kc_f(wh[e]) * kc_round(kc_f(rh[e]) * inv));
            *reinterpret_cast<uint4 *>(o + j) = ov;
        }
    } else {
        for (int j = threadIdx.x; j < dim; j += blockDim.x)
            o[j] = kc_bf(kc_f(w[j]) * kc_round(kc_f(r[j]) * inv));
    }
}

// ---- launchers

extern "C" int kern_cuda_add_rmsnorm_to(bf16 *out, bf16 *res_out, const bf16 *residual,
                                        const bf16 *delta, const bf16 *w, int n, int dim, float eps,
                                        cudaStream_t s) {
    if (n < 0 || dim <= 0) return err_set(ERR_INVAL, "add_rmsnorm: bad sizes n=%d dim=%d", n, dim);
    if (out == residual || out == res_out || (delta && (out == delta || res_out == delta)))
        return err_set(ERR_INVAL, "add_rmsnorm: out may not alias residual or delta");
    if (n == 0) return 0;
    bool vec = dim % 8 == 0 && (uintptr_t)out % 16 == 0 && (uintptr_t)residual % 16 == 0 &&
               (uintptr_t)res_out % 16 == 0 && (!delta || (uintptr_t)delta % 16 == 0) &&
               (uintptr_t)w % 16 == 0;
    int per = vec ? 8 : 1;
    int threads = (dim / per + 31) / 32 * 32;
    threads = threads < 64 ? 64 : threads > 1024 ? 1024 : threads;
    if (vec)
        kc_launch(kc_add_rmsnorm<true>, n, threads, 0, s, out, res_out, residual, delta, w, dim,
                  eps);
    else
        kc_launch(kc_add_rmsnorm<false>, n, threads, 0, s, out, res_out, residual, delta, w, dim,
                  eps);
    KC_LAUNCHED();
    return 0;
}

extern "C" int kern_cuda_add_rmsnorm(bf16 *out, bf16 *residual, const bf16 *delta, const bf16 *w,
                                     int n, int dim, float eps, cudaStream_t s) {
    return kern_cuda_add_rmsnorm_to(out, residual, residual, delta, w, n, dim, eps, s);
}

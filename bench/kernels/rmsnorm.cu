// RMSNorm playground: fused residual add + RMSNorm (add_rmsnorm) at dim 896, 4096 (and an odd
// dim, the scalar path) for decode-sized and prefill-sized batches. Memory-bound: bytes = read
// residual, delta and weight, write residual and out.
#include "bench/kernels/play.h"

int main(void) {
    struct kern_ctx *c = play_ctx();
    struct play_peaks pk = play_measure_peaks(c);
    cudaStream_t s = kern_cuda_stream(c);
    play_header();
    const int dims[] = {896, 4096, 4097};
    const int ns[] = {1, 64, 2048, 16384};
    for (int dim : dims)
        for (int n : ns) {
            size_t sz = (size_t)n * dim;
            // Rotate among copies so that small cases are not served from L2.
            int n_set = sz * 2 < (32u << 20) ? 8 : 1;
            std::vector<bf16 *> res(n_set), delta(n_set), out(n_set);
            for (int i = 0; i < n_set; i++) {
                res[i] = (bf16 *)play_dev(sz * 2);
                delta[i] = (bf16 *)play_dev(sz * 2);
                out[i] = (bf16 *)play_dev(sz * 2);
                play_fill(res[i], sz, 1.0f, 1 + i);
                play_fill(delta[i], sz, 0.01f, 100 + i);
            }
            bf16 *w = (bf16 *)play_dev((size_t)dim * 2);
            play_fill(w, dim, 1.0f, 5);
            float t = play_time(s, 5, 50, [&](int i) {
                int j = i % n_set;
                PLAY_OK(kern_cuda_add_rmsnorm(out[j], res[j], delta[j], w, n, dim, 1e-6f, s));
            });
            char v[96];
            snprintf(v, sizeof v, "add_rmsnorm n=%d dim=%d", n, dim);
            play_line(v, t, (double)sz * 2 * 4 + dim * 2.0, 0, &pk);
            for (int i = 0; i < n_set; i++) {
                cudaFree(res[i]);
                cudaFree(delta[i]);
                cudaFree(out[i]);
            }
            cudaFree(w);
        }
    kern_cuda_ctx_free(c);
    return 0;
}

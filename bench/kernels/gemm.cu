// GEMM playground: keel's cuBLASLt path (bf16 in, float32 accumulation) at the real shapes of
// Qwen3-8B (dim 4096, hidden 12288, 32/8 heads of 128, vocab 151936) and Qwen2.5-0.5B, for a
// decode step (m = 1, 32) and prefill (m = 512, 2048). Weights are rotated among several copies
// when they would fit in L2, so the numbers are device memory's, not the cache's.
#include "bench/kernels/play.h"

struct gemm_case {
    const char *name;
    int n, k, bias, f32;
};

int main(void) {
    struct kern_ctx *c = play_ctx();
    struct play_peaks pk = play_measure_peaks(c);
    cudaStream_t s = kern_cuda_stream(c);
    const struct gemm_case cases[] = {
        {"qwen3-8b qkv", 6144, 4096, 0, 0},          {"qwen3-8b o", 4096, 4096, 0, 0},
        {"qwen3-8b gate_up", 24576, 4096, 0, 0},     {"qwen3-8b down", 4096, 12288, 0, 0},
        {"qwen3-8b logits f32", 151936, 4096, 0, 1}, {"qwen2.5-0.5b qkv+bias", 1152, 896, 1, 0},
        {"qwen2.5-0.5b gate_up", 9728, 896, 0, 0},
    };
    const int ms_list[] = {1, 32, 512, 2048};
    play_header();
    for (const struct gemm_case &g : cases) {
        size_t wbytes = (size_t)g.n * g.k * 2;
        int n_w = wbytes < (64u << 20) ? 4 : 1;
        bf16 *w[4];
        for (int i = 0; i < n_w; i++) {
            w[i] = (bf16 *)play_dev(wbytes);
            play_fill(w[i], (size_t)g.n * g.k, 0.05f, 10 + i);
        }
        bf16 *bias = (bf16 *)play_dev((size_t)g.n * 2);
        play_fill(bias, g.n, 0.5f, 3);
        for (int m : ms_list) {
            if (g.f32 && m > 32) continue; // logits only for the last position of each sequence
            bf16 *x = (bf16 *)play_dev((size_t)m * g.k * 2);
            play_fill(x, (size_t)m * g.k, 1.0f, 4);
            void *y = play_dev((size_t)m * g.n * (g.f32 ? 4 : 2));
            float t = play_time(s, 3, 20, [&](int i) {
                if (g.f32)
                    PLAY_OK(kern_cuda_gemm_f32(c, (float *)y, x, w[i % n_w], m, g.n, g.k));
                else
                    PLAY_OK(kern_cuda_gemm(c, (bf16 *)y, x, w[i % n_w], g.bias ? bias : NULL, m,
                                           g.n, g.k));
            });
            double bytes = (double)wbytes + (double)m * g.k * 2 + (double)m * g.n * (g.f32 ? 4 : 2);
            char v[96];
            snprintf(v, sizeof v, "%s m=%d n=%d k=%d", g.name, m, g.n, g.k);
            play_line(v, t, bytes, 2.0 * m * g.n * (double)g.k, &pk);
            cudaFree(x);
            cudaFree(y);
        }
        for (int i = 0; i < n_w; i++)
            cudaFree(w[i]);
        cudaFree(bias);
    }
    kern_cuda_ctx_free(c);
    return 0;
}

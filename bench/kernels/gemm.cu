// GEMM playground: keel's GEMM paths at the real shapes of Qwen2.5-7B (dim 3584, qkv 4608 with
// bias, hidden 18944, vocab 152064) and Qwen3-8B (dim 4096, qkv 6144, hidden 12288, vocab 151936),
// for decode (m = 1, 2, 4, 8: weight streaming, judged in GB/s against the measured copy rate)
// and prefill (m = 512, 4096, 7600: judged in TFLOP/s against the measured GEMM rate).
//
// Variants per shape and m:
//   lt     cuBLASLt's first heuristic pick, as before the tuner (KEEL_GEMM_TUNE=0 KEEL_GEMV=0);
//          for a bias, the BIAS epilogue
//   lt+ba  (bias shapes) that pick for the plain GEMM, then kern_cuda_bias_add
//   gemv   kern_cuda_gemv directly (m <= 8), default warps and 4 warps
//   tuned  kern_cuda_gemm as keel runs it now: the plan the tuner chose on the first call (the
//          first call's wall time, tuning included, is printed before it)
//   tuned8 the same with KEEL_GEMM_TUNE=8: the heuristic's first 8 algorithms per epilogue timed
// The tuner's choices are printed (log level debug) as they are made, during the warm-up.
// Weights are rotated among several copies when they would fit in L2, so decode figures are
// device memory's, not the cache's. Run: make playgrounds && build/playgrounds/gemm
#include "bench/kernels/play.h"

#include <chrono>

extern "C" {
#include "common/log.h"
}

struct gemm_case {
    const char *name;
    int n, k, bias, f32;
};

struct gemm_bufs {
    bf16 *w[4];
    int n_w;
    bf16 *bias, *x;
    void *y;
};

// Median time of one variant; `i` rotates the weight copies.
template <typename F>
static void run_variant(const char *label, const gemm_case &g, int m, cudaStream_t s,
                        const play_peaks &pk, F fn) {
    float t = play_time(s, 3, 20, fn);
    double wbytes = (double)g.n * g.k * 2;
    double bytes = wbytes + (double)m * g.k * 2 + (double)m * g.n * (g.f32 ? 4 : 2);
    char v[96];
    snprintf(v, sizeof v, "%-14s m=%-4d %-6s", g.name, m, label);
    play_line(v, t, bytes, 2.0 * m * g.n * (double)g.k, &pk);
}

int main(void) {
    struct kern_ctx *c_lt = play_ctx(), *c_new = play_ctx(), *c_t8 = play_ctx();
    struct play_peaks pk = play_measure_peaks(c_new);
    cudaStream_t s_lt = kern_cuda_stream(c_lt), s = kern_cuda_stream(c_new);
    log_set_level(LOG_DEBUG);
    const gemm_case cases[] = {
        {"7b qkv+bias", 4608, 3584, 1, 0},     {"7b wo", 3584, 3584, 0, 0},
        {"7b gate_up", 37888, 3584, 0, 0},     {"7b down", 3584, 18944, 0, 0},
        {"7b logits f32", 152064, 3584, 0, 1}, {"8b qkv", 6144, 4096, 0, 0},
        {"8b wo", 4096, 4096, 0, 0},           {"8b gate_up", 24576, 4096, 0, 0},
        {"8b down", 4096, 12288, 0, 0},        {"8b logits f32", 151936, 4096, 0, 1},
    };
    const int ms_list[] = {1, 2, 4, 8, 512, 4096, 7600};
    printf("copy-rate reference: 3000 GB/s; GEMM reference: 800 TFLOP/s (the %% column is of the "
           "peaks measured above)\n\n");
    play_header();
    for (const gemm_case &g : cases) {
        gemm_bufs b;
        size_t wbytes = (size_t)g.n * g.k * 2;
        b.n_w = wbytes < (64u << 20) ? 4 : 1;
        for (int i = 0; i < b.n_w; i++) {
            b.w[i] = (bf16 *)play_dev(wbytes);
            play_fill(b.w[i], (size_t)g.n * g.k, 0.05f, 10 + i);
        }
        b.bias = (bf16 *)play_dev((size_t)g.n * 2);
        play_fill(b.bias, g.n, 0.5f, 3);
        for (int m : ms_list) {
            if (g.f32 && m > 8) continue; // logits only for the last position of each sequence
            b.x = (bf16 *)play_dev((size_t)m * g.k * 2);
            play_fill(b.x, (size_t)m * g.k, 1.0f, 4);
            b.y = play_dev((size_t)m * g.n * (g.f32 ? 4 : 2));
            const bf16 *bias = g.bias ? b.bias : NULL;
            auto gemm = [&](struct kern_ctx *c, int i, const bf16 *bp) {
                if (g.f32)
                    PLAY_OK(kern_cuda_gemm_f32(c, (float *)b.y, b.x, b.w[i % b.n_w], m, g.n, g.k));
                else
                    PLAY_OK(kern_cuda_gemm(c, (bf16 *)b.y, b.x, b.w[i % b.n_w], bp, m, g.n, g.k));
            };
            // The old path: plans built with the tuner and the gemv off.
            setenv("KEEL_GEMM_TUNE", "0", 1);
            setenv("KEEL_GEMV", "0", 1);
            run_variant("lt", g, m, s_lt, pk, [&](int i) { gemm(c_lt, i, bias); });
            if (g.bias)
                run_variant("lt+ba", g, m, s_lt, pk, [&](int i) {
                    gemm(c_lt, i, NULL);
                    PLAY_OK(kern_cuda_bias_add((bf16 *)b.y, b.bias, m, g.n, s_lt));
                });
            unsetenv("KEEL_GEMM_TUNE");
            unsetenv("KEEL_GEMV");
            if (m <= KERN_CUDA_GEMV_MAX_M) {
                int wd = kern_cuda_gemv_default_warps(g.k);
                run_variant("gemv", g, m, s, pk, [&](int i) {
                    PLAY_OK(
                        kern_cuda_gemv(b.y, g.f32, b.x, b.w[i % b.n_w], bias, m, g.n, g.k, wd, s));
                });
                run_variant("gemv4", g, m, s, pk, [&](int i) {
                    PLAY_OK(
                        kern_cuda_gemv(b.y, g.f32, b.x, b.w[i % b.n_w], bias, m, g.n, g.k, 4, s));
                });
            }
            PLAY_CUDA(cudaStreamSynchronize(s));
            auto t0 = std::chrono::steady_clock::now();
            gemm(c_new, 0, bias);
            PLAY_CUDA(cudaStreamSynchronize(s));
            double first_ms =
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count();
            printf("%-14s m=%-4d first call (plan + tuning) %.1f ms\n", g.name, m, first_ms);
            run_variant("tuned", g, m, s, pk, [&](int i) { gemm(c_new, i, bias); });
            setenv("KEEL_GEMM_TUNE", "8", 1);
            run_variant("tuned8", g, m, kern_cuda_stream(c_t8), pk,
                        [&](int i) { gemm(c_t8, i, bias); });
            unsetenv("KEEL_GEMM_TUNE");
            cudaFree(b.x);
            cudaFree(b.y);
        }
        for (int i = 0; i < b.n_w; i++)
            cudaFree(b.w[i]);
        cudaFree(b.bias);
        printf("\n");
    }
    kern_cuda_ctx_free(c_lt);
    kern_cuda_ctx_free(c_new);
    kern_cuda_ctx_free(c_t8);
    return 0;
}

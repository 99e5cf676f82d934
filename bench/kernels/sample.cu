// Sampling playground: the sample op (kernels/cuda/sample.cu) at 1/32/128/256 rows x vocab 152064,
// greedy, top_p 0.9, top_k 50 + top_p 0.95, and temperature-only draws, against what it replaces:
// copying the float logits to pageable host memory (the old path's copy alone, before any host
// sampling). "kernel" times the launch on device-resident parameters; "op" is the whole op as
// the engine runs it (parameters up, kernel, outputs down, the stream synchronised), with the
// probability cache when the context has it on (KEEL_SAMPLE_PROB_CACHE). Bytes
// counted: one read of the logits, so the GB/s column says how close to a single pass a variant
// comes (truncating rows make several passes over L2-resident rows by design). Every case runs
// twice: the default kernel (radix select, candidate buffer, argmax and draw with loads in
// flight) and the kernel it replaced (lines marked "OLD": KEEL_SAMPLE_RADIX=0, bisection).
#include <stdlib.h>
#include "bench/kernels/play.h"

#include <vector>

// Logits like a language model's: mostly noise in [-6, 6), a few ids far above.
__global__ void play_logits_kernel(float *p, size_t n, int vocab, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed;
        x ^= x >> 13;
        x *= 0x5bd1e995u;
        x ^= x >> 15;
        float f = ((x & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * 6.0f;
        if ((x >> 24) == 0 && (i % vocab) % 7 == 0) f += 12.0f;
        p[i] = f;
    }
}

int main(void) {
    // As the plan sizes the region for 256 sequences: room for every row's probability cache.
    size_t scratch_bytes = (size_t)256 * 152064 * 4 + 256 * 4096;
    void *scratch = play_dev(scratch_bytes);
    size_t ws = 64u << 20;
    struct kern_ctx *c;
    PLAY_OK(kern_cuda_ctx_init(&c, 0, play_dev(ws), ws, scratch, scratch_bytes));
    struct play_peaks pk = play_measure_peaks(c);
    cudaStream_t s = kern_cuda_stream(c);
    play_header();
    const int V = 152064;
    const int rows[] = {1, 32, 128, 256};
    const char *modes[] = {"greedy", "top_p 0.9", "top_k 50 top_p 0.95", "temperature 1"};
    float *d_l = (float *)play_dev((size_t)256 * V * 4);
    float *d_pc = (float *)play_dev((size_t)256 * V * 4); // the probability cache
    play_logits_kernel<<<1024, 256>>>(d_l, (size_t)256 * V, V, 7);
    PLAY_CUDA(cudaDeviceSynchronize());
    float *h_l;
    PLAY_CUDA(cudaMallocHost((void **)&h_l, (size_t)256 * V * 4));
    std::vector<float> pageable((size_t)256 * V);
    for (int n : rows) {
        char v[96];
        float t = play_time(s, 3, 20, [&](int) {
            PLAY_CUDA(cudaMemcpyAsync(pageable.data(), d_l, (size_t)n * V * 4,
                                      cudaMemcpyDeviceToHost, s));
        });
        snprintf(v, sizeof v, "old path: logits to pageable host, rows=%d", n);
        play_line(v, t, (double)n * V * 4, 0, &pk);
        for (int mode = 0; mode < 4; mode++) {
            std::vector<kern_sample_params> P(n);
            for (int r = 0; r < n; r++) {
                kern_sample_params p = {};
                p.temperature = mode == 0 ? 0 : 1.0f;
                p.top_p = mode == 1 ? 0.9f : mode == 2 ? 0.95f : 1.0f;
                p.top_k = mode == 2 ? 50 : 0;
                p.n_valid = V;
                p.n_logprobs = -1;
                p.u = (float)((r * 2654435761u) % 1000) / 1000.0f;
                p.repetition_penalty = 1;
                P[r] = p;
            }
            std::vector<kern_sample_out> out(n);
            kern_sample_params *d_p =
                (kern_sample_params *)play_dev(sizeof(kern_sample_params) * n);
            kern_sample_out *d_o = (kern_sample_out *)play_dev(sizeof(kern_sample_out) * n);
            PLAY_CUDA(
                cudaMemcpy(d_p, P.data(), sizeof(kern_sample_params) * n, cudaMemcpyHostToDevice));
            for (int bisect = 0; bisect < 2; bisect++) {
                const char *tag = bisect ? " OLD" : "";
                if (bisect) setenv("KEEL_SAMPLE_RADIX", "0", 1);
                for (int cache = 0; cache < 2; cache++) {
                    t = play_time(s, 3, 20, [&](int) {
                        PLAY_OK(kern_cuda_sample(d_o, d_l, n, V, d_p, NULL, NULL,
                                                 cache ? d_pc : NULL, cache ? n : 0, s));
                    });
                    snprintf(v, sizeof v, "kernel %s rows=%d%s%s", modes[mode], n,
                             cache ? " (prob cache)" : "", tag);
                    play_line(v, t, (double)n * V * 4, 0, &pk);
                }
                t = play_time(s, 3, 20, [&](int) {
                    PLAY_OK(kern_cuda_ops.sample(c, out.data(), d_l, n, V, P.data(), NULL, 0));
                });
                snprintf(v, sizeof v, "op %s rows=%d%s", modes[mode], n, tag);
                play_line(v, t, (double)n * V * 4, 0, &pk);
                unsetenv("KEEL_SAMPLE_RADIX");
            }
            cudaFree(d_p);
            cudaFree(d_o);
        }
    }
    cudaFreeHost(h_l);
    cudaFree(d_l);
    cudaFree(d_pc);
    kern_cuda_ctx_free(c);
    return 0;
}

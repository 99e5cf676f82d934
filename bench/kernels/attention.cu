// Attention playground: the paged attention kernels (CUDA cores, with and without split-KV;
// tensor cores for prefill) for decode batches (bytes = the K and V of
// every context read once; memory-bound) and prefill (FLOPs = 4 * n_heads * head_dim * causal
// pairs; the GEMM peak is the ceiling tensor cores could reach), Qwen3-8B heads (32 query, 8 kv,
// head_dim 128) and Qwen2.5-0.5B (14/2, 64), block size 16.
#include "bench/kernels/play.h"

static void run_case(struct kern_ctx *c, const struct play_peaks *pk, int nh, int nkv, int hd,
                     int n_seqs, int qlen, int ctx) {
    cudaStream_t s = kern_cuda_stream(c);
    const int bs = 16;
    int mbps = (ctx + bs - 1) / bs, n_blocks = n_seqs * mbps, n_tok = n_seqs * qlen;
    size_t cache = (size_t)n_blocks * bs * nkv * hd, row = (size_t)(nh + 2 * nkv) * hd;
    bf16 *kc = (bf16 *)play_dev(cache * 2), *vc = (bf16 *)play_dev(cache * 2);
    bf16 *qkv = (bf16 *)play_dev((size_t)n_tok * row * 2), *out = (bf16 *)play_dev((size_t)n_tok * nh * hd * 2);
    play_fill(kc, cache, 1.0f, 1);
    play_fill(vc, cache, 1.0f, 2);
    play_fill(qkv, (size_t)n_tok * row, 1.0f, 3);
    std::vector<int32_t> h(n_seqs + 1 + n_seqs + (size_t)n_seqs * mbps);
    int32_t *qs = h.data(), *lens = qs + n_seqs + 1, *tab = lens + n_seqs;
    for (int i = 0; i <= n_seqs; i++) qs[i] = i * qlen;
    for (int i = 0; i < n_seqs; i++) lens[i] = ctx;
    for (int i = 0; i < n_seqs * mbps; i++) tab[i] = (int32_t)(((long)i * 7919) % n_blocks); // scattered
    int32_t *d = (int32_t *)play_dev(h.size() * 4);
    PLAY_CUDA(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    struct kern_attn_batch b = {n_seqs, n_tok, d, d + n_seqs + 1, d + 2 * n_seqs + 1, mbps, qlen, ctx};
    size_t scratch_bytes = kern_cuda_attention_scratch_bytes(n_tok, nh, hd);
    void *scratch = play_dev(scratch_bytes);
    int n_sm = 0;
    PLAY_CUDA(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
    // Paths: CUDA cores unsplit, CUDA cores split-KV (through scratch), tensor cores (prefill).
    const char *names[] = {"cc", "cc split-kv", "tc"};
    for (int path = 0; path < 3; path++) {
        if (path == 2 && (qlen == 1 || (hd != 64 && hd != 128))) break;
        float t = play_time(s, 3, 20, [&](int) {
            if (path == 2)
                PLAY_OK(kern_cuda__attention_tc(out, qkv, kc, vc, &b, nh, nkv, hd, bs, 0.0884f, s));
            else
                PLAY_OK(kern_cuda__attention_cc(out, qkv, kc, vc, &b, nh, nkv, hd, bs, 0.0884f,
                                                path ? scratch : NULL, path ? scratch_bytes : 0, n_sm, s));
        });
        double pairs = (double)n_seqs * ((double)qlen * (ctx - qlen) + (double)qlen * (qlen + 1) / 2);
        double flops = 4.0 * nh * hd * pairs;
        double bytes = (double)n_seqs * ctx * nkv * hd * 2 * 2 + (double)n_tok * (row + nh * hd) * 2;
        char v[96];
        snprintf(v, sizeof v, "%s %s h=%d/%d hd=%d seqs=%d q=%d ctx=%d", qlen == 1 ? "decode" : "prefill",
                 names[path], nh, nkv, hd, n_seqs, qlen, ctx);
        play_line(v, t, bytes, flops, pk);
    }
    cudaFree(scratch);
    cudaFree(kc);
    cudaFree(vc);
    cudaFree(qkv);
    cudaFree(out);
    cudaFree(d);
}

int main(void) {
    struct kern_ctx *c = play_ctx();
    struct play_peaks pk = play_measure_peaks(c);
    play_header();
    run_case(c, &pk, 32, 8, 128, 1, 1, 4096);
    run_case(c, &pk, 32, 8, 128, 32, 1, 1024);
    run_case(c, &pk, 32, 8, 128, 64, 1, 4096);
    run_case(c, &pk, 32, 8, 128, 256, 1, 512);
    run_case(c, &pk, 14, 2, 64, 64, 1, 2048);
    run_case(c, &pk, 32, 8, 128, 1, 512, 512);
    run_case(c, &pk, 32, 8, 128, 1, 2048, 2048);
    run_case(c, &pk, 14, 2, 64, 4, 1024, 1024);
    kern_cuda_ctx_free(c);
    return 0;
}

// Attention playground: the paged attention paths on the shapes that matter.
//
// Decode (one query token per sequence; bytes = the K and V of every context read once plus q and
// out; memory-bound): the CUDA-core kernel with split-KV as the dispatcher ran it before the
// decode path ("old", = KEEL_ATTN_DECODE=old) against the decode path (attention_dec.cu, "new"),
// batches 1, 8, 32, 92, 256 x contexts 128, 1k, 4k, 16k, 32k, Qwen2.5-7B heads (28 query, 4 kv)
// and Qwen3-8B (32/8), head_dim 128, block size 16, block tables scattered over the pool. Each
// line prints both times, GB/s, % of 3.0 TB/s (the H100's nominal copy rate) and the gain.
//
// Prefill (FLOPs = 4 * n_heads * head_dim * causal pairs; the GEMM peak is the ceiling tensor
// cores could reach): the CUDA-core kernel, with and without split-KV, the previous tensor-core
// kernel ("tc", KEEL_ATTN_PREFILL=old) and the flash-attention-2 kernel that replaced it ("fa2",
// its launcher's choice of width; "fa2 64" / "fa2 128": forced to 4 / 8 warps), up to a 32k-token
// prompt (tensor cores only there: the CUDA-core kernel takes seconds); each fa2 line is followed
// by its gain over tc.
#include "bench/kernels/play.h"
#include "kernels/cuda/attention_dec.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#define NOMINAL_GBS 3000.0 // the H100 SXM's copy rate the issue measures against

// One batch of n_seqs sequences with qlen new tokens each and ctx keys, in device memory.
struct att_bench {
    int nh, nkv, hd, bs, n_seqs, qlen, ctx, n_tok;
    bf16 *kc, *vc, *qkv, *out;
    int32_t *meta;
    void *scratch;
    size_t scratch_bytes;
    struct kern_attn_batch b;
    double bytes, flops;
};

static void bench_init(struct att_bench *a, int nh, int nkv, int hd, int n_seqs, int qlen,
                       int ctx) {
    const int bs = 16;
    int mbps = (ctx + bs - 1) / bs, n_blocks = n_seqs * mbps, n_tok = n_seqs * qlen;
    size_t cache = (size_t)n_blocks * bs * nkv * hd, row = (size_t)(nh + 2 * nkv) * hd;
    memset(a, 0, sizeof *a);
    a->nh = nh, a->nkv = nkv, a->hd = hd, a->bs = bs;
    a->n_seqs = n_seqs, a->qlen = qlen, a->ctx = ctx, a->n_tok = n_tok;
    a->kc = (bf16 *)play_dev(cache * 2);
    a->vc = (bf16 *)play_dev(cache * 2);
    a->qkv = (bf16 *)play_dev((size_t)n_tok * row * 2);
    a->out = (bf16 *)play_dev((size_t)n_tok * nh * hd * 2);
    play_fill(a->kc, cache, 1.0f, 1);
    play_fill(a->vc, cache, 1.0f, 2);
    play_fill(a->qkv, (size_t)n_tok * row, 1.0f, 3);
    std::vector<int32_t> h(n_seqs + 1 + n_seqs + (size_t)n_seqs * mbps);
    int32_t *qs = h.data(), *lens = qs + n_seqs + 1, *tab = lens + n_seqs;
    for (int i = 0; i <= n_seqs; i++)
        qs[i] = i * qlen;
    for (int i = 0; i < n_seqs; i++)
        lens[i] = ctx;
    for (int i = 0; i < n_seqs * mbps; i++)
        tab[i] = (int32_t)(((long)i * 7919) % n_blocks); // scattered
    a->meta = (int32_t *)play_dev(h.size() * 4);
    PLAY_CUDA(cudaMemcpy(a->meta, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    a->b = (struct kern_attn_batch){
        n_seqs, n_tok, a->meta, a->meta + n_seqs + 1, a->meta + 2 * n_seqs + 1, mbps, qlen, ctx};
    // Room for the decode path's most slices (the engine's op_scratch, the sampling region, holds
    // far more than that at small batches).
    a->scratch_bytes = (size_t)n_tok * nh * (hd + 2) * 4 * KERN_CUDA_DEC_MAX_SPLITS;
    a->scratch = play_dev(a->scratch_bytes);
    double pairs = (double)n_seqs * ((double)qlen * (ctx - qlen) + (double)qlen * (qlen + 1) / 2);
    a->flops = 4.0 * nh * hd * pairs;
    a->bytes = (double)n_seqs * ctx * nkv * hd * 2 * 2 + (double)n_tok * (row + nh * hd) * 2;
}

static void bench_free(struct att_bench *a) {
    cudaFree(a->scratch);
    cudaFree(a->kc);
    cudaFree(a->vc);
    cudaFree(a->qkv);
    cudaFree(a->out);
    cudaFree(a->meta);
}

enum { PATH_CC, PATH_CC_SPLIT, PATH_TC, PATH_DEC };

// The prefill kernel kern_cuda__attention_tc runs (KEEL_ATTN_PREFILL, read at its set-up; NULL:
// the default).
static void set_prefill_kernel(const char *mode) {
    if (mode)
        setenv("KEEL_ATTN_PREFILL", mode, 1);
    else
        unsetenv("KEEL_ATTN_PREFILL");
    PLAY_OK(kern_cuda__attention_tc_setup());
}

// Median milliseconds of one path on the batch (fewer repetitions for the multi-GB cases).
static float bench_time(struct kern_ctx *c, struct att_bench *a, int path, int n_sm) {
    cudaStream_t s = kern_cuda_stream(c);
    float scale = 1.0f / sqrtf((float)a->hd);
    int reps = a->bytes > 4e9 ? 5 : 20;
    return play_time(s, 2, reps, [&](int) {
        if (path == PATH_TC)
            PLAY_OK(kern_cuda__attention_tc(a->out, a->qkv, a->kc, a->vc, &a->b, a->nh, a->nkv,
                                            a->hd, a->bs, scale, s));
        else if (path == PATH_DEC)
            PLAY_OK(kern_cuda__attention_dec(a->out, a->qkv, a->kc, a->vc, &a->b, a->nh, a->nkv,
                                             a->hd, a->bs, scale, a->scratch, a->scratch_bytes,
                                             n_sm, s));
        else
            PLAY_OK(kern_cuda__attention_cc(a->out, a->qkv, a->kc, a->vc, &a->b, a->nh, a->nkv,
                                            a->hd, a->bs, scale,
                                            path == PATH_CC_SPLIT ? a->scratch : NULL,
                                            path == PATH_CC_SPLIT ? a->scratch_bytes : 0, n_sm, s));
    });
}

// ---- decode: old vs new on one line

static void decode_header(void) {
    printf("\n%-34s | %9s %9s %5s | %9s %9s %5s %6s | %5s\n", "decode (hd=128, block 16)", "old",
           "GB/s", "%3TB", "new", "GB/s", "%3TB", "slices", "gain");
    printf("%-34s-|-%9s-%9s-%5s-|-%9s-%9s-%5s-%6s-|-%5s\n", "----------------------------------",
           "---------", "---------", "-----", "---------", "---------", "-----", "------", "-----");
}

static void decode_case(struct kern_ctx *c, int nh, int nkv, int n_seqs, int ctx, int n_sm) {
    struct att_bench a;
    bench_init(&a, nh, nkv, 128, n_seqs, 1, ctx);
    float t_old = bench_time(c, &a, PATH_CC_SPLIT, n_sm);
    float t_new = bench_time(c, &a, PATH_DEC, n_sm);
    double g_old = a.bytes / (t_old * 1e-3) / 1e9, g_new = a.bytes / (t_new * 1e-3) / 1e9;
    char v[64];
    snprintf(v, sizeof v, "h=%d/%d seqs=%d ctx=%d", nh, nkv, n_seqs, ctx);
    // The decode path's slice count for this batch (its launcher's arithmetic, for the table).
    int split_len, slices = kern_cuda_dec_splits(n_seqs * nkv, ctx, (size_t)n_seqs * nh * 130 * 4,
                                                 a.scratch_bytes, n_sm, &split_len);
    printf("%-34s | %6.1f us %9.0f %4.0f%% | %6.1f us %9.0f %4.0f%% %6d | %4.2fx\n", v, t_old * 1e3,
           g_old, 100.0 * g_old / NOMINAL_GBS, t_new * 1e3, g_new, 100.0 * g_new / NOMINAL_GBS,
           slices, t_old / t_new);
    fflush(stdout);
    bench_free(&a);
}

// ---- prefill (and the old table's mixed cases): one line per path

static void prefill_case(struct kern_ctx *c, const struct play_peaks *pk, int nh, int nkv, int hd,
                         int n_seqs, int qlen, int ctx, int n_sm) {
    struct att_bench a;
    bench_init(&a, nh, nkv, hd, n_seqs, qlen, ctx);
    // Rows: path, prefill kernel (KEEL_ATTN_PREFILL) and name.
    const int paths[] = {PATH_CC, PATH_CC_SPLIT, PATH_TC, PATH_TC, PATH_TC, PATH_TC, PATH_DEC};
    const char *modes[] = {NULL, NULL, "old", NULL, "fa2_64", "fa2_128", NULL};
    const char *names[] = {"cc", "cc split-kv", "tc", "fa2", "fa2 64", "fa2 128", "dec"};
    bool long_prompt = (double)qlen * ctx > 1e7; // the CUDA-core kernel would take seconds
    float t_tc = 0.0f;
    for (int r = 0; r < 7; r++) {
        int path = paths[r];
        if ((path == PATH_TC || path == PATH_DEC) && hd != 64 && hd != 128) continue;
        if (long_prompt && path != PATH_TC) continue;
        set_prefill_kernel(modes[r]);
        float t = bench_time(c, &a, path, n_sm);
        char v[96];
        snprintf(v, sizeof v, "prefill %s h=%d/%d hd=%d seqs=%d q=%d ctx=%d", names[r], nh, nkv, hd,
                 n_seqs, qlen, ctx);
        play_line(v, t, a.bytes, a.flops, pk);
        if (r == 2) t_tc = t;
        if (r >= 3 && r <= 5 && t_tc > 0.0f) printf("  %s vs tc: %.2fx\n", names[r], t_tc / t);
    }
    set_prefill_kernel(NULL);
    fflush(stdout);
    bench_free(&a);
}

// `attention prefill` runs the prefill table alone.
int main(int argc, char **argv) {
    bool prefill_only = argc > 1 && !strcmp(argv[1], "prefill");
    struct kern_ctx *c = play_ctx();
    struct play_peaks pk = play_measure_peaks(c);
    int n_sm = 0;
    PLAY_CUDA(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
    const int batches[] = {1, 8, 32, 92, 256}, ctxs[] = {128, 1024, 4096, 16384, 32768};
    const int heads[2][2] = {{28, 4}, {32, 8}};
    if (!prefill_only) {
        decode_header();
        for (int m = 0; m < 2; m++)
            for (int bi = 0; bi < 5; bi++)
                for (int ci = 0; ci < 5; ci++)
                    decode_case(c, heads[m][0], heads[m][1], batches[bi], ctxs[ci], n_sm);
    }
    printf("\n");
    play_header();
    prefill_case(c, &pk, 32, 8, 128, 1, 512, 512, n_sm);
    prefill_case(c, &pk, 32, 8, 128, 1, 2048, 2048, n_sm);
    prefill_case(c, &pk, 14, 2, 64, 4, 1024, 1024, n_sm);
    prefill_case(c, &pk, 28, 4, 128, 16, 4, 1024, n_sm); // short spans: the decode path's rows
    prefill_case(c, &pk, 14, 2, 64, 1, 32768, 32768, n_sm);
    // The fast-prefill issue's table: single 1k, 4k and 32k prompts and 8 x 1k, 7B and 8B heads,
    // and the 0.5B head shape at 1k and 4k.
    for (int m = 0; m < 2; m++) {
        prefill_case(c, &pk, heads[m][0], heads[m][1], 128, 1, 1024, 1024, n_sm);
        prefill_case(c, &pk, heads[m][0], heads[m][1], 128, 1, 4096, 4096, n_sm);
        prefill_case(c, &pk, heads[m][0], heads[m][1], 128, 1, 32768, 32768, n_sm);
        prefill_case(c, &pk, heads[m][0], heads[m][1], 128, 8, 1024, 1024, n_sm);
    }
    prefill_case(c, &pk, 14, 2, 64, 1, 1024, 1024, n_sm);
    prefill_case(c, &pk, 14, 2, 64, 1, 4096, 4096, n_sm);
    kern_cuda_ctx_free(c);
    return 0;
}

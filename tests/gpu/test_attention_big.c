// Decode attention at server sizes: up to 256 sequences of up to 16k keys, the batches a full KV
// pool produces (the small-batch cases of test_attention.c stop at 8 sequences). The caches are
// filled by tiling a random pool of a prime length, so every block differs and nothing has to be
// generated per element on the host; the float64 reference then runs on the first, a middle and
// the last sequence only, over a compact copy of just their blocks. Through the dispatching op
// (what the engine calls, with the context's op_scratch) and the decode path alone.
#include "common/err.h"
#include "kernels/cuda/attention_dec.h"
#include "kernels/cuda/kern_cuda.h"
#include "tests/gpu/gpu_ref.h"
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#define BIG_POOL 1000003 // prime: tiles never line up with blocks

static bf16 big_at(const bf16 *pool, size_t i, size_t shift) { return pool[(i + shift) % BIG_POOL]; }

// Device buffer of n elements whose element i is pool[(i + shift) % BIG_POOL].
static bf16 *big_fill(const bf16 *pool, size_t n, size_t shift) {
    bf16 *d = gt_dev(n * 2);
    bf16 *tile = malloc((size_t)BIG_POOL * 2 * 2);
    for (size_t i = 0; i < (size_t)BIG_POOL * 2; i++)
        tile[i] = pool[i % BIG_POOL];
    for (size_t at = 0; at < n;) {
        size_t off = (at + shift) % BIG_POOL, len = BIG_POOL;
        if (len > n - at) len = n - at;
        CHECK_EQ(cudaMemcpy(d + at, tile + off, len * 2, cudaMemcpyHostToDevice), cudaSuccess);
        at += len;
    }
    free(tile);
    CHECK_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return d;
}

static void check_big(int nh, int nkv, int n_seqs, int ctx, uint64_t seed) {
    const int hd = 128, bs = 16, nb_seq = (ctx + bs - 1) / bs, max_blocks = nb_seq + 1;
    const int n_blocks = n_seqs * nb_seq + 5;
    size_t row = (size_t)(nh + 2 * nkv) * hd, blk = (size_t)bs * nkv * hd;
    size_t cache = (size_t)n_blocks * blk, out_n = (size_t)n_seqs * nh * hd;
    bf16 *pool = gt_rand_bf16(BIG_POOL, 1.0f, &seed);

    // Block tables: a random permutation of the pool's blocks.
    int32_t *perm = malloc(sizeof(int32_t) * n_blocks);
    for (int i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(gt_rand(&seed) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *tables = calloc((size_t)n_seqs * max_blocks, sizeof(int32_t));
    int32_t *qs = malloc(sizeof(int32_t) * (n_seqs + 1)), *lens = malloc(sizeof(int32_t) * n_seqs);
    for (int i = 0; i < n_seqs; i++) {
        qs[i] = i, lens[i] = ctx - (i % 7); // not all equal: slice edges differ
        for (int b = 0; b < nb_seq; b++)
            tables[(size_t)i * max_blocks + b] = perm[i * nb_seq + b];
    }
    qs[n_seqs] = n_seqs;
    bf16 *qkv = gt_rand_bf16((size_t)n_seqs * row, 3.0f, &seed);

    bf16 *d_k = big_fill(pool, cache, 0), *d_v = big_fill(pool, cache, 4242);
    bf16 *d_qkv = gt_up(qkv, (size_t)n_seqs * row * 2), *d_out = gt_dev(out_n * 2);
    int32_t *d_qs = gt_up(qs, sizeof(int32_t) * (n_seqs + 1));
    int32_t *d_lens = gt_up(lens, sizeof(int32_t) * n_seqs);
    int32_t *d_tab = gt_up(tables, sizeof(int32_t) * (size_t)n_seqs * max_blocks);
    struct kern_attn_batch db = {n_seqs, n_seqs, d_qs, d_lens, d_tab, max_blocks, 1, ctx};
    float scale = 1.0f / sqrtf((float)hd);

    // The reference over three sequences, with a compact cache of their blocks only.
    int pick[3] = {0, n_seqs / 2, n_seqs - 1};
    size_t cblocks = (size_t)3 * nb_seq;
    bf16 *kc = malloc(cblocks * blk * 2), *vc = malloc(cblocks * blk * 2);
    bf16 *q3 = malloc(3 * row * 2), *want = malloc((size_t)3 * nh * hd * 2);
    int32_t qs3[4] = {0, 1, 2, 3}, lens3[3], *tab3 = calloc((size_t)3 * max_blocks, 4);
    for (int p = 0; p < 3; p++) {
        int s = pick[p];
        lens3[p] = lens[s];
        memcpy(q3 + p * row, qkv + (size_t)s * row, row * 2);
        for (int b = 0; b < nb_seq; b++) {
            size_t src = (size_t)tables[(size_t)s * max_blocks + b] * blk, dst = ((size_t)p * nb_seq + b) * blk;
            for (size_t e = 0; e < blk; e++)
                kc[dst + e] = big_at(pool, src + e, 0), vc[dst + e] = big_at(pool, src + e, 4242);
            tab3[p * max_blocks + b] = p * nb_seq + b;
        }
    }
    struct kern_attn_batch hb = {3, 3, qs3, lens3, tab3, max_blocks, 1, ctx};
    gpu_ref_ops.attention(NULL, want, q3, kc, vc, &hb, nh, nkv, hd, bs, scale);

    bf16 *got = malloc(out_n * 2), *got3 = malloc((size_t)3 * nh * hd * 2);
    cudaStream_t st = kern_cuda_stream(gt_ctx());
    for (int path = 0; path < 2; path++) {
        gt_poison(d_out, out_n * 2);
        if (path == 0)
            CHECK_OK(kern_cuda_ops.attention(gt_ctx(), d_out, d_qkv, d_k, d_v, &db, nh, nkv, hd, bs,
                                             scale));
        else
            CHECK_OK(kern_cuda__attention_dec(d_out, d_qkv, d_k, d_v, &db, nh, nkv, hd, bs, scale,
                                              gt_scratch(), gt_scratch_bytes(), 132, st));
        CHECK_EQ(cudaStreamSynchronize(st), cudaSuccess);
        gt_down(got, d_out, out_n * 2);
        size_t nan = 0;
        for (size_t i = 0; i < out_n; i++) {
            float f = bf16_to_f32(got[i]);
            if (f != f) nan++;
        }
        for (int p = 0; p < 3; p++)
            memcpy(got3 + (size_t)p * nh * hd, got + (size_t)pick[p] * nh * hd, (size_t)nh * hd * 2);
        char shape[96];
        snprintf(shape, sizeof shape, "h=%d/%d seqs=%d ctx=%d (3 checked)", nh, nkv, n_seqs, ctx);
        gt_row_exact(path ? "dec big, NaN" : "attn big, NaN", shape, nan);
        gt_row(path ? "attn dec big" : "attention big", shape,
               gt_cmp_bf16(got3, want, (size_t)3 * nh * hd), 1e-2);
    }

    gt_free(d_k), gt_free(d_v), gt_free(d_qkv), gt_free(d_out), gt_free(d_qs), gt_free(d_lens),
        gt_free(d_tab);
    free(pool), free(perm), free(tables), free(qs), free(lens), free(qkv), free(kc), free(vc),
        free(q3), free(want), free(tab3), free(got), free(got3);
}

TEST_TIMEOUT(gpu_attention_big_7b, 120) {
    check_big(28, 4, 256, 1024, 301);
    check_big(28, 4, 256, 4096, 302);
    check_big(28, 4, 92, 32768, 303);
}

TEST_TIMEOUT(gpu_attention_big_8b, 120) {
    check_big(32, 8, 256, 4096, 304);
    check_big(32, 8, 92, 16384, 305);
}

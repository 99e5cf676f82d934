// The decode attention path's split-KV plan (kern_cuda_dec_splits, kernels/cuda/attention_dec.h):
// plain host arithmetic, so it is checked here on the CPU; the kernel it drives is checked against
// the reference in tests/gpu/test_attention.c. Shapes are the H100's 132 multiprocessors and the
// models the issue names (Qwen2.5-7B: 4 kv heads; Qwen3-8B: 8).
#include "kernels/cuda/attention_dec.h"
#include "tests/test.h"

#define SM 132
#define BIG ((size_t)1 << 40) // scratch that never limits

// Every plan must cover the context exactly: slices of whole rounds, none starting past the end.
static void check_cover(int n, int len, int max_seq_len) {
    if (n == 1) {
        CHECK_MSG(len >= max_seq_len, "one slice of %d keys for a context of %d", len, max_seq_len);
        return;
    }
    CHECK_MSG(len % KERN_CUDA_DEC_SLICE_KEYS == 0, "slice %d keys", len);
    CHECK_MSG((long)n * len >= max_seq_len, "%d slices x %d keys < %d", n, len, max_seq_len);
    CHECK_MSG((long)(n - 1) * len < max_seq_len, "slice %d starts at %d, past %d", n - 1,
              (n - 1) * len, max_seq_len);
    CHECK_MSG(n <= KERN_CUDA_DEC_MAX_SPLITS, "%d slices", n);
}

TEST(attn_split_batch_one) {
    // One sequence, Qwen2.5-7B (4 blocks): 1k context -> 16 slices of 64 keys (64 blocks); 32k ->
    // the most slices (64 of 512 keys, 256 blocks).
    int len, n = kern_cuda_dec_splits(4, 1024, 1000, BIG, SM, &len);
    CHECK_EQ(n, 16);
    CHECK_EQ(len, 64);
    check_cover(n, len, 1024);
    n = kern_cuda_dec_splits(4, 32768, 1000, BIG, SM, &len);
    CHECK_EQ(n, KERN_CUDA_DEC_MAX_SPLITS);
    CHECK_EQ(len, 512);
    check_cover(n, len, 32768);
    // Qwen3-8B (8 blocks) at 4k: want 4 x 132 / 8 = 66 -> 64 slices of 64 keys.
    n = kern_cuda_dec_splits(8, 4096, 1000, BIG, SM, &len);
    CHECK_EQ(n, 64);
    CHECK_EQ(len, 64);
    // A context shorter than two rounds is never split.
    n = kern_cuda_dec_splits(4, 100, 1000, BIG, SM, &len);
    CHECK_EQ(n, 1);
    CHECK(len >= 100);
}

TEST(attn_split_batches) {
    // 92 sequences of Qwen2.5-7B (368 blocks < 528): 2 slices; of Qwen3-8B (736): none.
    int len, n = kern_cuda_dec_splits(368, 1024, 1000, BIG, SM, &len);
    CHECK_EQ(n, 2);
    CHECK_EQ(len, 512);
    n = kern_cuda_dec_splits(736, 1024, 1000, BIG, SM, &len);
    CHECK_EQ(n, 1);
    // Odd lengths: 1000 keys in 3 slices rounds to 384-key slices (3 of them cover 1152).
    n = kern_cuda_dec_splits(200, 1000, 1000, BIG, SM, &len);
    CHECK_EQ(n, 3);
    CHECK_EQ(len, 384);
    check_cover(n, len, 1000);
    // 130 keys in 2 slices: 65 rounds up to 128, so the second slice holds 2 keys.
    n = kern_cuda_dec_splits(100, 130, 1000, BIG, SM, &len);
    CHECK_EQ(n, 2);
    CHECK_EQ(len, 128);
    check_cover(n, len, 130);
    for (int ctx = 1; ctx <= 5000; ctx += 37)
        for (int blocks = 1; blocks < 600; blocks += 41) {
            n = kern_cuda_dec_splits(blocks, ctx, 1000, BIG, SM, &len);
            check_cover(n, len, ctx);
        }
}

TEST(attn_split_limits) {
    // The scratch bounds the slices: room for 3 partial sets -> 3 slices; for 1 or none -> 1.
    int len, n = kern_cuda_dec_splits(4, 32768, 1000, 3500, SM, &len);
    CHECK_EQ(n, 3);
    n = kern_cuda_dec_splits(4, 32768, 1000, 1999, SM, &len);
    CHECK_EQ(n, 1);
    n = kern_cuda_dec_splits(4, 32768, 1000, 0, SM, &len);
    CHECK_EQ(n, 1);
    // Unknown multiprocessor count, empty launches and bad lengths: no split.
    CHECK_EQ(kern_cuda_dec_splits(4, 32768, 1000, BIG, 0, &len), 1);
    CHECK_EQ(kern_cuda_dec_splits(0, 32768, 1000, BIG, SM, &len), 1);
    CHECK_EQ(kern_cuda_dec_splits(4, 0, 1000, BIG, SM, &len), 1);
    CHECK_EQ(kern_cuda_dec_splits(4, -5, 1000, BIG, SM, &len), 1);
    // A full GPU already (4 waves of blocks): no split however long the context.
    CHECK_EQ(kern_cuda_dec_splits(4 * SM, 32768, 1000, BIG, SM, &len), 1);
    CHECK_EQ(kern_cuda_dec_splits(4 * SM - 1, 32768, 1000, BIG, SM, &len), 2);
}

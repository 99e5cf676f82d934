// The decode attention path (attention_dec.cu): paged causal attention for batches of short query
// spans (decode steps, small chunks), one block per (query tile, sequence, kv head, key slice),
// tensor cores across the query heads of a KV group, cp.async-pipelined K/V loads, split-KV chosen
// from the batch's size hints. Same op contract as kern_cuda_attention (kernels/ops.h).
//
// The split plan is plain arithmetic on the host (static inline, no CUDA), so a CPU unit test
// checks it; the launchers exist only in CUDA builds.
#ifndef KEEL_KERNELS_CUDA_ATTENTION_DEC_H
#define KEEL_KERNELS_CUDA_ATTENTION_DEC_H

#include <stddef.h>

#define KERN_CUDA_DEC_SLICE_KEYS 64 // slices are multiples of one block's round of keys
#define KERN_CUDA_DEC_MAX_SPLITS 64 // at most this many slices (scratch permitting)
#define KERN_CUDA_DEC_WAVES 4       // aim for this many blocks per multiprocessor
// Contexts of at most this many keys are never split: one slice and no combine kernel. Splitting
// 128 keys into two slices of 64 buys two fewer sub-tile rounds per warp and costs a second launch
// (the combine) and a round trip of the partials; KEEL_ATTN_SPLIT_MIN_CTX overrides it (0: split
// whenever kern_cuda_dec_splits says so, the behaviour before).
#define KERN_CUDA_DEC_MIN_SPLIT_CTX 256

// How many key slices (n_splits) and how long each is (*split_len keys, a multiple of
// KERN_CUDA_DEC_SLICE_KEYS) for a launch of `blocks` (query tile, sequence, kv head) blocks over
// contexts of at most max_seq_len keys: enough blocks to fill n_sm multiprocessors
// KERN_CUDA_DEC_WAVES times, slices of at least KERN_CUDA_DEC_SLICE_KEYS keys, no more slices
// than the scratch holds (per_split_bytes each: every token's partial rows for one slice). Returns
// 1 (and a split_len longer than any context) when splitting would not help or cannot be done.
static inline int kern_cuda_dec_splits(int blocks, int max_seq_len, size_t per_split_bytes,
                                       size_t scratch_bytes, int n_sm, int *split_len) {
    *split_len = 1 << 30;
    if (n_sm <= 0 || blocks <= 0 || max_seq_len <= 0 || blocks >= KERN_CUDA_DEC_WAVES * n_sm)
        return 1;
    long want = ((long)KERN_CUDA_DEC_WAVES * n_sm + blocks - 1) / blocks;
    long n = max_seq_len / KERN_CUDA_DEC_SLICE_KEYS;
    if (want < n) n = want;
    if (n > KERN_CUDA_DEC_MAX_SPLITS) n = KERN_CUDA_DEC_MAX_SPLITS;
    long by_scratch = per_split_bytes ? (long)(scratch_bytes / per_split_bytes) : 0;
    if (by_scratch < n) n = by_scratch;
    if (n <= 1) return 1;
    // Round the slice up to whole rounds of keys, then drop slices that would start past the
    // longest context (the rounding can leave the last ones empty).
    long len = (max_seq_len + n - 1) / n;
    len =
        (len + KERN_CUDA_DEC_SLICE_KEYS - 1) / KERN_CUDA_DEC_SLICE_KEYS * KERN_CUDA_DEC_SLICE_KEYS;
    n = (max_seq_len + len - 1) / len;
    if (n <= 1) return 1;
    *split_len = (int)len;
    return (int)n;
}

#ifdef KEEL_CUDA
#include "kernels/cuda/kern_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

// The decode path: head_dim 64 or 128 (others: ERR_UNSUPPORTED; kern_cuda_attention sends them
// to the CUDA-core path). Any query length is correct; it is fast while query length x GQA group
// stays within a 16-row tile. `scratch` (may be NULL) holds split-KV partials; with NULL or too
// little it splits less or not at all. n_sm: the device's multiprocessors (the split target).
int kern_cuda__attention_dec(bf16 *out /* [n_tokens, n_heads * head_dim] */,
                             const bf16 *qkv /* [n_tokens, (n_heads + 2 n_kv) * head_dim] */,
                             const bf16 *k_cache /* [n_blocks, block_size, n_kv, head_dim] */,
                             const bf16 *v_cache /* same */, const struct kern_attn_batch *b,
                             int n_heads, int n_kv_heads, int head_dim, int block_size, float scale,
                             void *scratch, size_t scratch_bytes, int n_sm, cudaStream_t s);
int kern_cuda__attention_dec_setup(void);
// The no-split threshold in use (KERN_CUDA_DEC_MIN_SPLIT_CTX, or KEEL_ATTN_SPLIT_MIN_CTX read at
// setup); the setter is for playgrounds and tests (set it before launching, not concurrently).
int kern_cuda__attention_dec_min_split_ctx(void);
void kern_cuda__attention_dec_set_min_split_ctx(int keys);
// Whether split launches merge their slices inside the main kernel (1, the default) or in the
// separate combine kernel (KEEL_ATTN_FUSED_COMBINE=0 at setup); the setter is for playgrounds and
// tests.
int kern_cuda__attention_dec_fused_combine(void);
void kern_cuda__attention_dec_set_fused_combine(int on);

// Whether kern_cuda_attention uses the decode path (1) or the CUDA-core kernel (0) for short
// query spans: read once from KEEL_ATTN_DECODE at kern_cuda_attention_setup ("old" turns it off).
int kern_cuda__attention_dec_enabled(void);

#ifdef __cplusplus
}
#endif
#endif // KEEL_CUDA

#endif

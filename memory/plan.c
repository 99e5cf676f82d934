// The memory plan (memory/plan.h): where every byte of the device goes, computed from shapes
// before a byte moves. Pure arithmetic on size_t (64-bit): no CUDA, no I/O, so `keel plan` on a
// machine without a GPU and `keel serve` on one print the same numbers.
#include "memory/plan.h"

#include "common/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 256
#define GIB ((double)(1ull << 30))

static size_t align_up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

// ---- settings

void mem_plan_settings_defaults(struct mem_plan_settings *set, int max_position_embeddings) {
    memset(set, 0, sizeof *set);
    set->gpu_memory_utilization = 0.9;
    set->block_size = 16;
    set->max_num_seqs = 256;
    set->max_num_batched_tokens = 8192;
    set->max_model_len = max_position_embeddings > 0 && max_position_embeddings < 32768
                             ? max_position_embeddings
                             : 32768;
    set->num_kv_blocks = 0;
}

static int check_settings(const struct mem_plan_settings *set) {
    double u = set->gpu_memory_utilization;
    if (!(u > 0.0 && u <= 1.0))
        return err_set(ERR_INVAL, "gpu_memory_utilization must be in (0, 1], got %g", u);
    int bs = set->block_size;
    if (bs != 8 && bs != 16 && bs != 32 && bs != 64 && bs != 128)
        return err_set(ERR_INVAL, "block_size must be one of 8, 16, 32, 64, 128, got %d", bs);
    if (set->max_model_len < 1)
        return err_set(ERR_INVAL, "max_model_len must be >= 1, got %d", set->max_model_len);
    if (set->max_num_seqs < 1)
        return err_set(ERR_INVAL, "max_num_seqs must be >= 1, got %d", set->max_num_seqs);
    if (set->max_num_batched_tokens < 1)
        return err_set(ERR_INVAL, "max_num_batched_tokens must be >= 1, got %d",
                       set->max_num_batched_tokens);
    // Every scheduled sequence contributes at least one token to a step, so a token budget below
    // the sequence budget could never be used in full (vLLM refuses it the same way).
    if (set->max_num_batched_tokens < set->max_num_seqs)
        return err_set(ERR_INVAL,
                       "max_num_batched_tokens (%d) must be >= max_num_seqs (%d): every "
                       "sequence in a step takes at least one token",
                       set->max_num_batched_tokens, set->max_num_seqs);
    if (set->num_kv_blocks < 0)
        return err_set(ERR_INVAL, "num_kv_blocks must be >= 0 (0: no cap), got %d",
                       set->num_kv_blocks);
    if (set->tensor_parallel_size < 0 || set->tensor_parallel_size > MEM_PLAN_MAX_TP)
        return err_set(ERR_INVAL, "tensor_parallel_size must be in 1..%d (0: one GPU), got %d",
                       MEM_PLAN_MAX_TP, set->tensor_parallel_size);
    if (set->n_device_ids < 0 || set->n_device_ids > MEM_PLAN_MAX_TP)
        return err_set(ERR_INVAL, "n_device_ids must be in 0..%d, got %d", MEM_PLAN_MAX_TP,
                       set->n_device_ids);
    return 0;
}

static int check_shape(const struct mem_plan_shape *s) {
    const struct {
        const char *name;
        int v;
    } dims[] = {{"dim", s->dim},         {"hidden_dim", s->hidden_dim},
                {"n_layers", s->n_layers}, {"n_heads", s->n_heads},
                {"n_kv_heads", s->n_kv_heads}, {"head_dim", s->head_dim},
                {"vocab_size", s->vocab_size}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].v < 1)
            return err_set(ERR_INVAL, "model shape: %s must be >= 1, got %d", dims[i].name,
                           dims[i].v);
    if (s->n_heads % s->n_kv_heads != 0)
        return err_set(ERR_INVAL, "model shape: n_heads (%d) is not a multiple of n_kv_heads (%d)",
                       s->n_heads, s->n_kv_heads);
    if (s->weights_bytes < 0)
        return err_set(ERR_INVAL, "model shape: weights_bytes must be >= 0, got %lld",
                       (long long)s->weights_bytes);
    return 0;
}

// ---- weights and scratch

// One bf16 tensor of n elements as the loader carves it.
static size_t bf16_tensor(size_t n) { return align_up(n * 2); }

int64_t mem_plan_weights_from_shape(const struct mem_plan_shape *s) {
    size_t dim = (size_t)s->dim, hid = (size_t)s->hidden_dim, hd = (size_t)s->head_dim;
    size_t q_dim = (size_t)s->n_heads * hd;
    size_t qkv_dim = ((size_t)s->n_heads + 2 * (size_t)s->n_kv_heads) * hd;
    // In the loader's order: attn_norm, wqkv, bqkv, q_norm and k_norm, wo, ffn_norm, w_gate_up,
    // w_down.
    size_t layer = bf16_tensor(dim) + bf16_tensor(qkv_dim * dim) +
                   (s->qkv_bias ? bf16_tensor(qkv_dim) : 0) +
                   (s->qk_norm ? 2 * bf16_tensor(hd) : 0) + bf16_tensor(dim * q_dim) +
                   bf16_tensor(dim) + bf16_tensor(2 * hid * dim) + bf16_tensor(dim * hid);
    // A shard's embedding has one more row, all zeros, that token ids outside its vocab slice
    // map to (so the embedding op needs no range check); the LM head has just the slice.
    size_t vocab = (size_t)s->vocab_size;
    size_t embed = bf16_tensor((vocab + (s->tp_size > 1 ? 1 : 0)) * dim);
    size_t total = embed + (size_t)s->n_layers * layer + bf16_tensor(dim) +
                   (s->tie_word_embeddings ? 0 : bf16_tensor(vocab * dim));
    return (int64_t)total;
}

// Appends an array of n elements of elem bytes at *at and returns its offset.
static size_t place(size_t *at, size_t n, size_t elem) {
    size_t off = *at;
    *at = align_up(off + n * elem);
    return off;
}

void mem_plan_scratch_layout(const struct mem_plan_shape *s, int max_tokens, int max_seqs,
                             int max_blocks_per_seq, struct mem_scratch_layout *out) {
    memset(out, 0, sizeof *out);
    size_t T = (size_t)max_tokens, S = (size_t)max_seqs, mb = (size_t)max_blocks_per_seq;
    size_t dim = (size_t)s->dim, hid = (size_t)s->hidden_dim, hd = (size_t)s->head_dim;
    size_t nh = (size_t)s->n_heads;
    size_t qkv_dim = (nh + 2 * (size_t)s->n_kv_heads) * hd;
    size_t at = 0;
    out->x = place(&at, T * dim, 2);
    out->residual = place(&at, T * dim, 2);
    out->xb = place(&at, T * dim, 2);
    out->qkv = place(&at, T * qkv_dim, 2);
    out->attn_out = place(&at, T * nh * hd, 2);
    out->gate_up = place(&at, T * 2 * hid, 2);
    out->hidden = place(&at, T * hid, 2);
    out->last_rows = place(&at, S * dim, 2);
    out->attn_ws_bytes = (S * nh * 16 * (hd + 2) + T * nh * 2) * 4;
    out->attn_ws = place(&at, out->attn_ws_bytes, 1);
    // The metadata's arrays are placed relative to meta so the host staging copy has the same
    // layout and goes over in one transfer.
    out->meta = at;
    size_t m = 0;
    out->meta_ids = place(&m, T, 4);
    out->meta_positions = place(&m, T, 4);
    out->meta_slot_mapping = place(&m, T, 4);
    out->meta_query_start = place(&m, S + 1, 4);
    out->meta_seq_lens = place(&m, S, 4);
    out->meta_block_tables = place(&m, S * mb, 4);
    out->meta_rows = place(&m, S, 4);
    out->meta_bytes = m;
    out->bytes = out->meta + m;
}

// ---- the plan

// A size for messages: GiB with two decimals, MiB below 1 GiB.
static const char *human(char *buf, size_t n, size_t bytes) {
    if ((double)bytes >= GIB)
        snprintf(buf, n, "%.2f GiB", (double)bytes / GIB);
    else
        snprintf(buf, n, "%.2f MiB", (double)bytes / (1 << 20));
    return buf;
}
#define H(i, v) human(hb[i], sizeof hb[i], (v))

// The smallest utilization, in hundredths, whose budget holds `need` bytes. Returns false when
// none does: above 1, or an arena that would not fit in the free memory.
static bool util_for(size_t need, const struct mem_plan *p, double *u_out) {
    double total = (double)p->device_total_bytes;
    double u = ceil((double)need / total * 100.0) / 100.0;
    while (floor(u * total) < (double)need) u += 0.01;
    *u_out = u;
    size_t budget = (size_t)floor(u * total);
    return u <= 1.0 && budget - p->overhead_bytes <= p->device_free_bytes;
}

// Fills every region that does not depend on the pool; returns the fixed bytes (overhead
// included).
static size_t plan_regions(const struct mem_plan_shape *shape,
                           const struct mem_plan_settings *set, struct mem_plan *out) {
    out->max_blocks_per_seq =
        (int)(((int64_t)set->max_model_len + set->block_size - 1) / set->block_size);
    out->weights_bytes = shape->weights_bytes > 0 ? align_up((size_t)shape->weights_bytes)
                                                  : (size_t)mem_plan_weights_from_shape(shape);
    out->workspace_bytes = MEM_PLAN_WORKSPACE_BYTES;
    struct mem_scratch_layout lay;
    mem_plan_scratch_layout(shape, set->max_num_batched_tokens, set->max_num_seqs,
                            out->max_blocks_per_seq, &lay);
    out->activation_bytes = lay.bytes;
    size_t S = (size_t)set->max_num_seqs, V = (size_t)shape->vocab_size;
    out->logits_bytes = align_up(S * V * 4);
    // The sampling region is the CUDA context's op_scratch. The sample op (kernels/cuda/sample.cu)
    // needs 224 bytes per row (parameters and outputs, kern_cuda_sample_scratch_bytes) plus 16
    // bytes per penalty/ban entry (one per distinct id of a penalised sequence's history), so this
    // size holds about vocab / 4 + 240 entries per sequence on average (38k at a 152k
    // vocabulary); a step with more samples on the host instead (the engine's ERR_NOSPACE
    // fallback). Split-KV attention uses the same region earlier in the step.
    out->sampling_bytes = align_up(S * V * 4 + S * MEM_PLAN_SAMPLING_SEQ_BYTES);
    out->kv_block_bytes = 2 * (size_t)shape->n_layers * (size_t)shape->n_kv_heads *
                          (size_t)shape->head_dim * (size_t)set->block_size * 2;
    out->graphs_bytes = set->cuda_graphs ? MEM_PLAN_GRAPHS_BYTES : 0; // outside the arena
    return out->overhead_bytes + out->weights_bytes + out->workspace_bytes +
           out->activation_bytes + out->logits_bytes + out->sampling_bytes + out->graphs_bytes;
}

// keel's arena (budget - overhead) does not fit in the free memory: others hold some of it.
static int refuse_free(const struct mem_plan *p, double util) {
    char hb[6][32];
    double fit = floor((double)(p->device_free_bytes + p->overhead_bytes) /
                       (double)p->device_total_bytes * 100.0) / 100.0;
    return err_set(ERR_NOSPACE,
                   "not enough free device memory: the budget is %s (gpu_memory_utilization "
                   "%.2f x %s total); less keel's own context (%s) keel needs %s, but only %s "
                   "is free (other processes hold %s). Fix: free that memory, or lower "
                   "--gpu-memory-utilization to %.2f or less",
                   H(0, p->budget_bytes), util, H(1, p->device_total_bytes),
                   H(2, p->overhead_bytes), H(3, p->budget_bytes - p->overhead_bytes),
                   H(4, p->device_free_bytes), H(5, p->other_bytes), fit);
}

// The fixed regions alone exceed the budget.
static int refuse_fixed(const struct mem_plan *p, const struct mem_plan_settings *set,
                        size_t fixed) {
    char hb[11][32], fixmsg[320];
    size_t need = fixed + (size_t)p->max_blocks_per_seq * p->kv_block_bytes;
    double u;
    if (util_for(need, p, &u))
        snprintf(fixmsg, sizeof fixmsg,
                 "raise --gpu-memory-utilization to %.2f (that also holds one sequence of "
                 "max_model_len %d), or lower --max-num-seqs / --max-num-batched-tokens",
                 u, set->max_model_len);
    else
        snprintf(fixmsg, sizeof fixmsg,
                 "this device cannot hold the model with one sequence of max_model_len %d "
                 "(%s needed): use a GPU with more memory or more GPUs "
                 "(--tensor-parallel-size), or lower --max-num-seqs / "
                 "--max-num-batched-tokens",
                 set->max_model_len, H(10, need));
    return err_set(ERR_NOSPACE,
                   "the model does not fit: weights %s + context %s + cuBLAS workspace %s + "
                   "activations %s + logits %s + sampling %s = %s, more than the budget %s "
                   "(gpu_memory_utilization %.2f x %s total). Fix: %s",
                   H(0, p->weights_bytes), H(1, p->overhead_bytes), H(2, p->workspace_bytes),
                   H(3, p->activation_bytes), H(4, p->logits_bytes), H(5, p->sampling_bytes),
                   H(6, fixed), H(8, p->budget_bytes), set->gpu_memory_utilization,
                   H(9, p->device_total_bytes), fixmsg);
}

// The pool holds fewer tokens than one sequence of max_model_len.
static int refuse_kv(const struct mem_plan *p, const struct mem_plan_settings *set, size_t fixed,
                     bool capped) {
    char hb[11][32], fixmsg[320];
    size_t need_blocks = (size_t)p->max_blocks_per_seq;
    double u;
    if (capped)
        snprintf(fixmsg, sizeof fixmsg,
                 "raise --num-kv-blocks to %zu, or lower --max-model-len to %lld", need_blocks,
                 (long long)p->kv_tokens);
    else if (util_for(fixed + need_blocks * p->kv_block_bytes, p, &u))
        snprintf(fixmsg, sizeof fixmsg,
                 "lower --max-model-len to %lld, or raise --gpu-memory-utilization to %.2f",
                 (long long)p->kv_tokens, u);
    else
        snprintf(fixmsg, sizeof fixmsg,
                 "lower --max-model-len to %lld (no utilization of this device holds %d "
                 "tokens: %s needed), or lower --max-num-seqs / --max-num-batched-tokens to "
                 "shrink the activations",
                 (long long)p->kv_tokens, set->max_model_len,
                 H(10, fixed + need_blocks * p->kv_block_bytes));
    return err_set(ERR_NOSPACE,
                   "the KV pool cannot hold one sequence of max_model_len %d: %lld blocks x %d "
                   "tokens = %lld tokens (%s per block, %s of KV after weights %s, context %s, "
                   "workspace %s, activations %s, logits %s, sampling %s, of the budget %s = "
                   "%.2f x %s). Fix: %s",
                   set->max_model_len, (long long)p->num_kv_blocks, set->block_size,
                   (long long)p->kv_tokens, H(0, p->kv_block_bytes), H(1, p->kv_bytes),
                   H(2, p->weights_bytes), H(3, p->overhead_bytes), H(4, p->workspace_bytes),
                   H(5, p->activation_bytes), H(6, p->logits_bytes), H(7, p->sampling_bytes),
                   H(8, p->budget_bytes), set->gpu_memory_utilization,
                   H(9, p->device_total_bytes), fixmsg);
}

int mem_plan_compute(const struct mem_plan_shape *shape, const struct mem_plan_settings *set,
                     size_t device_total, size_t device_free, struct mem_plan *out) {
    memset(out, 0, sizeof *out);
    out->device_total_bytes = device_total;
    out->device_free_bytes = device_free;
    out->tp_size = 1;
    out->device_id = set->n_device_ids > 0 ? set->device_ids[0] : 0;
    int rc = check_settings(set);
    if (rc) return rc;
    if (set->tensor_parallel_size > 1)
        return err_set(ERR_INVAL, "tensor_parallel_size %d: a plan over several GPUs comes from "
                                  "mem_plan_compute_tp", set->tensor_parallel_size);
    if ((rc = check_shape(shape))) return rc;
    if (device_total == 0) return err_set(ERR_INVAL, "device memory: total must be > 0");
    if (device_free > device_total)
        return err_set(ERR_INVAL, "device memory: free (%zu bytes) exceeds total (%zu bytes)",
                       device_free, device_total);

    size_t budget = (size_t)floor(set->gpu_memory_utilization * (double)device_total);
    size_t used = device_total - device_free;
    size_t overhead = used < MEM_PLAN_CONTEXT_MAX_BYTES ? used : MEM_PLAN_CONTEXT_MAX_BYTES;
    out->budget_bytes = budget;
    out->overhead_bytes = overhead;
    out->other_bytes = used - overhead;
    size_t fixed = plan_regions(shape, set, out);

    // A budget below the context itself is the "does not fit" case, not a free-memory one.
    if (budget >= overhead && device_free < budget - overhead)
        return refuse_free(out, set->gpu_memory_utilization);
    if (fixed > budget) return refuse_fixed(out, set, fixed);

    size_t n_blocks = (budget - fixed) / out->kv_block_bytes;
    out->kv_blocks_fit = (int64_t)n_blocks;
    bool capped = set->num_kv_blocks > 0 && n_blocks > (size_t)set->num_kv_blocks;
    if (capped) n_blocks = (size_t)set->num_kv_blocks;
    if (n_blocks > INT32_MAX) n_blocks = INT32_MAX; // the pool indexes blocks with int32
    out->num_kv_blocks = (int64_t)n_blocks;
    out->kv_bytes = n_blocks * out->kv_block_bytes;
    out->kv_tokens = (int64_t)n_blocks * set->block_size;
    out->max_concurrency = (double)out->kv_tokens / (double)set->max_model_len;
    out->arena_bytes = fixed - overhead - out->graphs_bytes + out->kv_bytes;
    out->unused_bytes = budget - overhead - out->graphs_bytes - out->arena_bytes;
    if (out->kv_tokens < set->max_model_len) return refuse_kv(out, set, fixed, capped);
    return 0;
}

// ---- tensor parallelism

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

int mem_plan_shape_shard(const struct mem_plan_shape *full, int tp_size, int rank,
                         struct mem_plan_shape *out) {
    *out = *full;
    if (tp_size == 0) tp_size = 1;
    if (tp_size < 1 || tp_size > MEM_PLAN_MAX_TP)
        return err_set(ERR_INVAL, "tensor_parallel_size must be in 1..%d, got %d",
                       MEM_PLAN_MAX_TP, tp_size);
    if (rank < 0 || rank >= tp_size)
        return err_set(ERR_INVAL, "tensor-parallel rank %d is outside 0..%d", rank, tp_size - 1);
    if (full->tp_size > 1)
        return err_set(ERR_INVAL, "mem_plan_shape_shard: the shape is already a shard (%d of %d)",
                       full->tp_rank, full->tp_size);
    if (tp_size == 1) return 0;
    // Every rank must hold whole heads and an equal slice of the MLP: Megatron splits attention
    // by heads (a KV head is never split between GPUs, since its query heads read it whole) and
    // the MLP by hidden_dim columns.
    const struct {
        const char *name;
        int v;
    } split[] = {{"n_heads (num_attention_heads)", full->n_heads},
                 {"n_kv_heads (num_key_value_heads)", full->n_kv_heads},
                 {"hidden_dim (intermediate_size)", full->hidden_dim}};
    for (size_t i = 0; i < sizeof split / sizeof split[0]; i++)
        if (split[i].v < 1 || split[i].v % tp_size != 0)
            return err_set(ERR_INVAL, "tensor_parallel_size %d does not divide the model's %s = "
                                      "%d: every GPU must hold an equal share",
                           tp_size, split[i].name, split[i].v);
    if (full->vocab_size < tp_size)
        return err_set(ERR_INVAL, "tensor_parallel_size %d exceeds the vocab_size %d", tp_size,
                       full->vocab_size);
    out->n_heads = full->n_heads / tp_size;
    out->n_kv_heads = full->n_kv_heads / tp_size;
    out->hidden_dim = full->hidden_dim / tp_size;
    out->vocab_size = ceil_div(full->vocab_size, tp_size);
    out->tp_size = tp_size;
    out->tp_rank = rank;
    out->full_vocab_size = full->vocab_size;
    // The loader converts every dtype to bf16, so the shard's bytes follow from its shapes
    // exactly, whatever the checkpoint's headers said about the whole model.
    out->weights_bytes = 0;
    out->weights_bytes = mem_plan_weights_from_shape(out);
    return 0;
}

int mem_plan_vocab_padded(const struct mem_plan_shape *s) {
    if (s->tp_size > 1) return s->tp_size * s->vocab_size;
    return s->vocab_size;
}

size_t mem_plan_tp_comm_bytes(const struct mem_plan_shape *s, int max_seqs) {
    if (s->tp_size <= 1) return 0;
    size_t rows = (size_t)(max_seqs < MEM_PLAN_TP_COMM_TOKENS ? max_seqs : MEM_PLAN_TP_COMM_TOKENS);
    return MEM_PLAN_TP_COMM_CTRL_BYTES + align_up(2 * (size_t)s->tp_size * rows * s->dim * 4);
}

void mem_plan_logits_layout(const struct mem_plan_shape *s, int max_seqs,
                            struct mem_logits_layout *out) {
    memset(out, 0, sizeof *out);
    size_t S = (size_t)max_seqs;
    bool tp = s->tp_size > 1;
    out->vocab_size = tp ? s->full_vocab_size : s->vocab_size;
    out->vocab_local = s->vocab_size;
    out->vocab_padded = mem_plan_vocab_padded(s);
    size_t at = 0;
    out->full = place(&at, S * (size_t)out->vocab_size, 4);
    out->gather = at;
    if (tp) {
        out->gather = place(&at, S * (size_t)out->vocab_padded, 4);
        out->gather_bytes = at - out->gather;
        out->comm = place(&at, mem_plan_tp_comm_bytes(s, max_seqs), 1);
        out->comm_bytes = at - out->comm;
    }
    out->bytes = at;
}

// Rewrites the message of the refusal just made as "GPU r (index d): message".
static int name_gpu(int rc, const struct mem_plan *p) {
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", err_msg());
    return err_set(rc, "GPU %d (index %d): %s", p->tp_rank, p->device_id, msg);
}

// One rank's regions: plan_regions over the shard, then the two regions that do not shrink
// with the shard: the logits (the local slices gathered into the full row) and the sampling
// scratch, which works on the full vocabulary (taken from plan_regions of the whole model, so
// its rule lives in one place). Returns the fixed bytes.
static size_t plan_rank_regions(const struct mem_plan_shape *full,
                                const struct mem_plan_shape *shard,
                                const struct mem_plan_settings *set, struct mem_plan *out) {
    size_t fixed = plan_regions(shard, set, out);
    struct mem_logits_layout ll;
    mem_plan_logits_layout(shard, set->max_num_seqs, &ll);
    struct mem_plan whole;
    memset(&whole, 0, sizeof whole);
    plan_regions(full, set, &whole);
    fixed = fixed - out->logits_bytes - out->sampling_bytes + ll.bytes + whole.sampling_bytes;
    out->logits_bytes = ll.bytes;
    out->sampling_bytes = whole.sampling_bytes;
    return fixed;
}

int mem_plan_compute_tp(const struct mem_plan_shape *full, const struct mem_plan_settings *set,
                        int tp_size, const size_t *device_total, const size_t *device_free,
                        struct mem_plan *out) {
    if (tp_size < 1 || tp_size > MEM_PLAN_MAX_TP)
        return err_set(ERR_INVAL, "tensor_parallel_size must be in 1..%d, got %d",
                       MEM_PLAN_MAX_TP, tp_size);
    if (set->tensor_parallel_size > 1 && set->tensor_parallel_size != tp_size)
        return err_set(ERR_INVAL, "tensor_parallel_size: the settings say %d, the plan was asked "
                                  "for %d GPUs", set->tensor_parallel_size, tp_size);
    if (tp_size == 1) return mem_plan_compute(full, set, device_total[0], device_free[0], out);

    size_t fixed[MEM_PLAN_MAX_TP] = {0};
    for (int r = 0; r < tp_size; r++) {
        memset(&out[r], 0, sizeof out[r]);
        out[r].device_total_bytes = device_total[r];
        out[r].device_free_bytes = device_free[r];
        out[r].tp_size = tp_size;
        out[r].tp_rank = r;
        out[r].device_id = r < set->n_device_ids ? set->device_ids[r] : r;
    }
    int rc = check_settings(set);
    if (rc) return rc;
    if (set->n_device_ids != 0 && set->n_device_ids != tp_size)
        return err_set(ERR_INVAL, "%d device ids for tensor_parallel_size %d", set->n_device_ids,
                       tp_size);
    if ((rc = check_shape(full))) return rc;

    for (int r = 0; r < tp_size; r++) {
        struct mem_plan *p = &out[r];
        struct mem_plan_shape shard;
        if ((rc = mem_plan_shape_shard(full, tp_size, r, &shard))) return rc;
        if (p->device_total_bytes == 0)
            return name_gpu(err_set(ERR_INVAL, "device memory: total must be > 0"), p);
        if (p->device_free_bytes > p->device_total_bytes)
            return name_gpu(err_set(ERR_INVAL, "device memory: free (%zu bytes) exceeds total "
                                               "(%zu bytes)",
                                    p->device_free_bytes, p->device_total_bytes),
                            p);
        size_t budget = (size_t)floor(set->gpu_memory_utilization * (double)p->device_total_bytes);
        size_t used = p->device_total_bytes - p->device_free_bytes;
        p->budget_bytes = budget;
        p->overhead_bytes = used < MEM_PLAN_CONTEXT_MAX_BYTES ? used : MEM_PLAN_CONTEXT_MAX_BYTES;
        p->other_bytes = used - p->overhead_bytes;
        fixed[r] = plan_rank_regions(full, &shard, set, p);
    }
    // Every GPU is checked before the pool is sized, so a refusal names the first GPU that
    // cannot hold its share at all.
    for (int r = 0; r < tp_size; r++) {
        struct mem_plan *p = &out[r];
        if (p->budget_bytes >= p->overhead_bytes &&
            p->device_free_bytes < p->budget_bytes - p->overhead_bytes)
            return name_gpu(refuse_free(p, set->gpu_memory_utilization), p);
        if (fixed[r] > p->budget_bytes) return name_gpu(refuse_fixed(p, set, fixed[r]), p);
    }

    // The scheduler hands out one set of block ids for all GPUs, so the pool is as large as the
    // GPU with the fewest blocks allows.
    int least = 0;
    for (int r = 0; r < tp_size; r++) {
        out[r].kv_blocks_fit =
            (int64_t)((out[r].budget_bytes - fixed[r]) / out[r].kv_block_bytes);
        if (out[r].kv_blocks_fit < out[least].kv_blocks_fit) least = r;
    }
    size_t n_blocks = (size_t)out[least].kv_blocks_fit;
    bool capped = set->num_kv_blocks > 0 && n_blocks > (size_t)set->num_kv_blocks;
    if (capped) n_blocks = (size_t)set->num_kv_blocks;
    if (n_blocks > INT32_MAX) n_blocks = INT32_MAX;
    for (int r = 0; r < tp_size; r++) {
        struct mem_plan *p = &out[r];
        p->num_kv_blocks = (int64_t)n_blocks;
        p->kv_bytes = n_blocks * p->kv_block_bytes;
        p->kv_tokens = (int64_t)n_blocks * set->block_size;
        p->max_concurrency = (double)p->kv_tokens / (double)set->max_model_len;
        p->arena_bytes = fixed[r] - p->overhead_bytes + p->kv_bytes;
        p->unused_bytes = p->budget_bytes - p->overhead_bytes - p->arena_bytes;
    }
    if (out[least].kv_tokens < set->max_model_len)
        return name_gpu(refuse_kv(&out[least], set, fixed[least], capped), &out[least]);
    return 0;
}

// ---- output

// Appends printf-style text to a growing buffer; on allocation failure the buffer is dropped
// and the final result is NULL.
struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = true; return; }
        if (b->s && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = (b->cap ? b->cap * 2 : 1024) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) { free(b->s); b->s = NULL; b->failed = true; return; }
        b->s = s;
        b->cap = cap;
    }
}

static void row(struct sbuf *b, const char *name, size_t bytes, size_t budget) {
    sb_printf(b, "  %-26s %10.3f GiB %7.1f%%\n", name, (double)bytes / GIB,
              budget ? 100.0 * (double)bytes / (double)budget : 0.0);
}

char *mem_plan_table(const struct mem_plan *p, const struct mem_plan_settings *set) {
    struct sbuf b = {0};
    sb_printf(&b, "device memory: %.3f GiB total, %.3f GiB free at start\n",
              (double)p->device_total_bytes / GIB, (double)p->device_free_bytes / GIB);
    sb_printf(&b, "budget: %.3f GiB (gpu_memory_utilization %.2f of total)\n\n",
              (double)p->budget_bytes / GIB, set->gpu_memory_utilization);
    sb_printf(&b, "  %-26s %14s %8s\n", "region", "size", "% budget");
    row(&b, "context and libraries", p->overhead_bytes, p->budget_bytes);
    row(&b, "weights", p->weights_bytes, p->budget_bytes);
    row(&b, "cuBLAS workspace", p->workspace_bytes, p->budget_bytes);
    row(&b, "activation scratch", p->activation_bytes, p->budget_bytes);
    row(&b, "logits", p->logits_bytes, p->budget_bytes);
    row(&b, "sampling scratch", p->sampling_bytes, p->budget_bytes);
    row(&b, "KV cache", p->kv_bytes, p->budget_bytes);
    if (p->graphs_bytes) row(&b, "CUDA graphs (not arena)", p->graphs_bytes, p->budget_bytes);
    row(&b, "unused", p->unused_bytes, p->budget_bytes);
    row(&b, "arena (one allocation)", p->arena_bytes, p->budget_bytes);
    if (p->other_bytes)
        sb_printf(&b, "  (other processes held %.3f GiB at start; not part of the budget)\n",
                  (double)p->other_bytes / GIB);
    sb_printf(&b,
              "\nKV pool: %lld blocks x %d tokens = %lld tokens of KV (%.3f MiB per block)\n"
              "max_model_len %d: %.2f sequences of full length fit at once "
              "(%d blocks each)\n"
              "step limits: max_num_seqs %d, max_num_batched_tokens %d\n",
              (long long)p->num_kv_blocks, set->block_size, (long long)p->kv_tokens,
              (double)p->kv_block_bytes / (1 << 20), set->max_model_len, p->max_concurrency,
              p->max_blocks_per_seq, set->max_num_seqs, set->max_num_batched_tokens);
    return b.failed ? NULL : b.s;
}

char *mem_plan_json(const struct mem_plan *p, const struct mem_plan_settings *set) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    // Byte counts stay below 2^53, so cJSON's doubles hold them exactly and print them as
    // integers.
    const struct {
        const char *key;
        double v;
    } f[] = {
        {"device_total_bytes", (double)p->device_total_bytes},
        {"device_free_bytes", (double)p->device_free_bytes},
        {"budget_bytes", (double)p->budget_bytes},
        {"overhead_bytes", (double)p->overhead_bytes},
        {"other_bytes", (double)p->other_bytes},
        {"weights_bytes", (double)p->weights_bytes},
        {"workspace_bytes", (double)p->workspace_bytes},
        {"activation_bytes", (double)p->activation_bytes},
        {"logits_bytes", (double)p->logits_bytes},
        {"sampling_bytes", (double)p->sampling_bytes},
        {"kv_bytes", (double)p->kv_bytes},
        {"graphs_bytes", (double)p->graphs_bytes},
        {"unused_bytes", (double)p->unused_bytes},
        {"arena_bytes", (double)p->arena_bytes},
        {"kv_block_bytes", (double)p->kv_block_bytes},
        {"num_kv_blocks", (double)p->num_kv_blocks},
        {"kv_tokens", (double)p->kv_tokens},
        {"max_blocks_per_seq", (double)p->max_blocks_per_seq},
        {"max_concurrency", p->max_concurrency},
        {"gpu_memory_utilization", set->gpu_memory_utilization},
        {"max_model_len", (double)set->max_model_len},
        {"max_num_seqs", (double)set->max_num_seqs},
        {"max_num_batched_tokens", (double)set->max_num_batched_tokens},
        {"block_size", (double)set->block_size},
        {"num_kv_blocks_cap", (double)set->num_kv_blocks},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!cJSON_AddNumberToObject(o, f[i].key, f[i].v)) {
            cJSON_Delete(o);
            return NULL;
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

// ---- output over several GPUs

// One table row: a value per GPU and their sum, in GiB.
static void row_tp(struct sbuf *b, const char *name, const struct mem_plan *p, int tp,
                   size_t offset) {
    size_t sum = 0;
    sb_printf(b, "  %-26s", name);
    for (int r = 0; r < tp; r++) {
        size_t v = *(const size_t *)((const char *)&p[r] + offset);
        sum += v;
        sb_printf(b, " %12.3f GiB", (double)v / GIB);
    }
    sb_printf(b, " %12.3f GiB\n", (double)sum / GIB);
}

char *mem_plan_table_tp(const struct mem_plan *p, int tp_size,
                        const struct mem_plan_settings *set) {
    if (tp_size <= 1) return mem_plan_table(p, set);
    struct sbuf b = {0};
    sb_printf(&b, "tensor parallel over %d GPUs: each GPU holds 1/%d of the heads, the MLP and "
                  "the vocabulary (gpu_memory_utilization %.2f of each)\n\n",
              tp_size, tp_size, set->gpu_memory_utilization);
    sb_printf(&b, "  %-26s", "region");
    for (int r = 0; r < tp_size; r++) {
        char h[32];
        snprintf(h, sizeof h, "GPU %d (index %d)", r, p[r].device_id);
        sb_printf(&b, " %16s", h);
    }
    sb_printf(&b, " %16s\n", "total");
#define ROW(name, field) row_tp(&b, name, p, tp_size, offsetof(struct mem_plan, field))
    ROW("device memory", device_total_bytes);
    ROW("free at start", device_free_bytes);
    ROW("budget", budget_bytes);
    ROW("context and libraries", overhead_bytes);
    ROW("weights (shard)", weights_bytes);
    ROW("cuBLAS workspace", workspace_bytes);
    ROW("activation scratch", activation_bytes);
    ROW("logits (full + gather + comm)", logits_bytes);
    ROW("sampling scratch", sampling_bytes);
    ROW("KV cache (its heads)", kv_bytes);
    ROW("unused", unused_bytes);
    ROW("arena (one per GPU)", arena_bytes);
    ROW("other processes", other_bytes);
#undef ROW
    sb_printf(&b, "  %-26s", "KV blocks it could hold");
    for (int r = 0; r < tp_size; r++) sb_printf(&b, " %16lld", (long long)p[r].kv_blocks_fit);
    sb_printf(&b, "\n");
    sb_printf(&b,
              "\nKV pool: %lld blocks on every GPU (the fewest any GPU holds) x %d tokens = %lld "
              "tokens of KV (%.3f MiB per block per GPU)\n"
              "max_model_len %d: %.2f sequences of full length fit at once (%d blocks each)\n"
              "step limits: max_num_seqs %d, max_num_batched_tokens %d\n",
              (long long)p[0].num_kv_blocks, set->block_size, (long long)p[0].kv_tokens,
              (double)p[0].kv_block_bytes / (1 << 20), set->max_model_len, p[0].max_concurrency,
              p[0].max_blocks_per_seq, set->max_num_seqs, set->max_num_batched_tokens);
    return b.failed ? NULL : b.s;
}

char *mem_plan_json_tp(const struct mem_plan *p, int tp_size, const struct mem_plan_settings *set) {
    if (tp_size <= 1) return mem_plan_json(p, set);
    static const char *sums[] = {"device_total_bytes", "device_free_bytes", "budget_bytes",
                                 "overhead_bytes", "other_bytes", "weights_bytes",
                                 "workspace_bytes", "activation_bytes", "logits_bytes",
                                 "sampling_bytes", "kv_bytes", "unused_bytes", "arena_bytes"};
    static const char *shared[] = {"num_kv_blocks", "kv_tokens", "max_blocks_per_seq",
                                   "max_concurrency", "gpu_memory_utilization", "max_model_len",
                                   "max_num_seqs", "max_num_batched_tokens", "block_size",
                                   "num_kv_blocks_cap"};
    cJSON *o = cJSON_CreateObject(), *gpus = cJSON_CreateArray(), *total = cJSON_CreateObject();
    bool ok = o && gpus && total;
    double sum[sizeof sums / sizeof sums[0]] = {0};
    for (int r = 0; ok && r < tp_size; r++) {
        char *s = mem_plan_json(&p[r], set);
        cJSON *g = s ? cJSON_Parse(s) : NULL;
        free(s);
        if (!g) { ok = false; break; }
        cJSON_AddNumberToObject(g, "tp_rank", p[r].tp_rank);
        cJSON_AddNumberToObject(g, "device_id", p[r].device_id);
        cJSON_AddNumberToObject(g, "kv_blocks_fit", (double)p[r].kv_blocks_fit);
        for (size_t i = 0; i < sizeof sums / sizeof sums[0]; i++)
            sum[i] += cJSON_GetNumberValue(cJSON_GetObjectItem(g, sums[i]));
        if (r == 0)
            for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++)
                cJSON_AddNumberToObject(o, shared[i],
                                        cJSON_GetNumberValue(cJSON_GetObjectItem(g, shared[i])));
        cJSON_AddItemToArray(gpus, g);
    }
    char *out = NULL;
    if (ok) {
        cJSON_AddNumberToObject(o, "tensor_parallel_size", tp_size);
        for (size_t i = 0; i < sizeof sums / sizeof sums[0]; i++)
            cJSON_AddNumberToObject(total, sums[i], sum[i]);
        cJSON_AddItemToObject(o, "gpus", gpus);
        cJSON_AddItemToObject(o, "total", total);
        gpus = total = NULL;
        out = cJSON_PrintUnformatted(o);
    }
    cJSON_Delete(gpus);
    cJSON_Delete(total);
    cJSON_Delete(o);
    return out;
}

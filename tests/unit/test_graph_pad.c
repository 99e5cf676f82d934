// Padded decode steps (models/graph.h) on the CPU backend, through the same padding code the CUDA
// graphs use (model_forward_padded):
// - padding rows never change a real row's logits, bit for bit, and store nothing in the KV
//   cache (the cache after a padded step equals the cache after the unpadded one, byte for
//   byte), although they read block 0, which a real sequence owns;
// - bad padding is refused before anything runs;
// - the batch and context buckets, and the KEEL_CUDA_GRAPH_MAX_SEQS switch.
#include "common/err.h"
#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/graph.h"
#include "models/model.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>

// ---- the tiny Qwen2 checkpoint on the CPU backend

#define PAD_BS 4         // tokens per block: sequences span several, out of order
#define PAD_BLOCKS 96    // the pool
#define PAD_MAX_BLOCKS 8 // per sequence
#define PAD_MAX_SEQS 16
#define PAD_MAX_TOKENS 192

struct pfx {
    struct mem_arena arena;
    struct kern_ctx *ctx;
    struct model m;
    struct model_config cfg;
    size_t kv_bytes;
};

static void pfx_open(struct pfx *f) {
    memset(f, 0, sizeof *f);
    const char *dir = "tests/data/tiny-qwen2";
    CHECK_OK(model_config_load(dir, &f->cfg));
    struct mem_plan plan = {.num_kv_blocks = PAD_BLOCKS, .max_blocks_per_seq = PAD_MAX_BLOCKS};
    struct mem_plan_settings set = {.gpu_memory_utilization = 0.9,
                                    .max_num_batched_tokens = PAD_MAX_TOKENS,
                                    .max_num_seqs = PAD_MAX_SEQS,
                                    .block_size = PAD_BS,
                                    .max_model_len = PAD_MAX_BLOCKS * PAD_BS,
                                    .num_kv_blocks = PAD_BLOCKS};
    struct mem_plan_shape shape;
    struct mem_scratch_layout lay;
    model_plan_shape(&f->cfg, &shape);
    mem_plan_scratch_layout(&shape, PAD_MAX_TOKENS, PAD_MAX_SEQS, PAD_MAX_BLOCKS, &lay);
    f->kv_bytes = (size_t)2 * f->cfg.n_layers * PAD_BLOCKS * PAD_BS * f->cfg.n_kv_heads *
                  f->cfg.head_dim * sizeof(bf16);
    size_t bytes = (size_t)model_weights_bytes(&f->cfg) + lay.bytes + f->kv_bytes +
                   (size_t)PAD_MAX_SEQS * f->cfg.vocab_size * 4 +
                   (8 + 16 * f->cfg.n_layers) * MEM_ARENA_ALIGN;
    CHECK_OK(mem_arena_init(&f->arena, MEM_HOST, 0, bytes, 1 << 20));
    CHECK_OK(kern_cpu_ctx_init(&f->ctx, 2));
    CHECK_OK(model_weights_load(&f->m.w, &f->cfg, dir, MODEL_LOAD_SAFETENSORS, 0, &kern_cpu_ops,
                                f->ctx, &f->arena));
    CHECK_OK(model_init(&f->m, &f->cfg, &kern_cpu_ops, f->ctx, &f->arena, &plan, &set));
    // Whatever the padding rows might read or write must be visible: a poisoned cache.
    memset(f->m.kv_cache, 0x7f, f->kv_bytes);
}

static void pfx_close(struct pfx *f) {
    model_free(&f->m);
    model_weights_free(&f->m.w);
    kern_cpu_ctx_free(f->ctx);
    mem_arena_free(&f->arena);
}

// ---- a batch of sequences

// Up to PAD_MAX_SEQS sequences; sequence i owns blocks (i + 7 j) % PAD_BLOCKS, so sequence 0
// owns block 0 (the block the padding rows read).
struct pbatch {
    int n_tokens, n_seqs;
    int32_t ids[PAD_MAX_TOKENS], pos[PAD_MAX_TOKENS], slots[PAD_MAX_TOKENS];
    int32_t qs[PAD_MAX_SEQS + 1], lens[PAD_MAX_SEQS], tables[PAD_MAX_SEQS * PAD_MAX_BLOCKS];
};

static void pb_add(struct pbatch *b, int seq, int first, int n) {
    int s = b->n_seqs;
    b->qs[0] = 0;
    for (int j = 0; j < PAD_MAX_BLOCKS; j++)
        b->tables[s * PAD_MAX_BLOCKS + j] = (seq + 7 * j) % PAD_BLOCKS;
    for (int i = 0; i < n; i++) {
        int t = b->n_tokens + i, p = first + i;
        b->ids[t] = (int32_t)((p * 131 + seq * 17 + 3) % 200);
        b->pos[t] = p;
        b->slots[t] = b->tables[s * PAD_MAX_BLOCKS + p / PAD_BS] * PAD_BS + p % PAD_BS;
    }
    b->n_tokens += n;
    b->lens[s] = first + n;
    b->n_seqs++;
    b->qs[b->n_seqs] = b->n_tokens;
}

static struct model_batch pb_view(const struct pbatch *b) {
    return (struct model_batch){.n_tokens = b->n_tokens,
                                .n_seqs = b->n_seqs,
                                .token_ids = b->ids,
                                .positions = b->pos,
                                .slot_mapping = b->slots,
                                .query_start = b->qs,
                                .seq_lens = b->lens,
                                .block_tables = b->tables};
}

// Prefills n_seqs sequences of different lengths (3, 8, 13, ... tokens) in one mixed step and
// returns the decode step that follows (one token each).
static void prefill_then_decode(struct pfx *f, int n_seqs, struct pbatch *dec, float *scratch) {
    struct pbatch pre = {0};
    for (int s = 0; s < n_seqs; s++)
        pb_add(&pre, s, 0, 3 + (5 * s) % 17);
    CHECK(pre.n_tokens <= PAD_MAX_TOKENS);
    struct model_batch b = pb_view(&pre);
    CHECK_OK(model_forward(&f->m, &b, scratch));
    memset(dec, 0, sizeof *dec);
    for (int s = 0; s < n_seqs; s++)
        pb_add(dec, s, pre.lens[s], 1);
}

// ---- padding never changes the real rows

static void check_padding(int n_seqs) {
    struct pfx f;
    pfx_open(&f);
    const int V = f.cfg.vocab_size;
    float *scratch = malloc(sizeof(float) * PAD_MAX_SEQS * V);
    float *want = malloc(sizeof(float) * PAD_MAX_SEQS * V);
    float *got = malloc(sizeof(float) * PAD_MAX_SEQS * V);
    uint8_t *kv_before = malloc(f.kv_bytes), *kv_want = malloc(f.kv_bytes);
    CHECK(scratch && want && got && kv_before && kv_want);
    struct pbatch dec;
    prefill_then_decode(&f, n_seqs, &dec, scratch);
    memcpy(kv_before, f.m.kv_cache, f.kv_bytes);

    struct model_batch b = pb_view(&dec);
    CHECK_OK(model_forward_padded(&f.m, &b, 0, MODEL_FWD_EAGER, want));
    memcpy(kv_want, f.m.kv_cache, f.kv_bytes);
    // The reference must be real numbers, not a cache of poison or zeros.
    double spread = 0;
    for (int i = 0; i < n_seqs * V; i++) {
        CHECK_MSG(isfinite(want[i]), "unpadded logit %d is %g", i, want[i]);
        spread += fabs(want[i] - want[0]);
    }
    CHECK_MSG(spread > 1.0, "unpadded logits are flat (spread %g)", spread);
    CHECK_MSG(memcmp(kv_before, kv_want, f.kv_bytes) != 0, "the decode step stored nothing");

    int buckets[MODEL_GRAPHS_MAX_BUCKETS];
    int nb = model_graphs_batch_buckets(PAD_MAX_SEQS, MODEL_GRAPHS_MAX_SEQS, buckets,
                                        MODEL_GRAPHS_MAX_BUCKETS);
    int tried = 0;
    for (int i = 0; i < nb; i++) {
        if (buckets[i] < n_seqs) continue;
        memcpy(f.m.kv_cache, kv_before, f.kv_bytes);
        for (int j = 0; j < PAD_MAX_SEQS * V; j++)
            got[j] = -1e30f;
        CHECK_OK(model_forward_padded(&f.m, &b, buckets[i], MODEL_FWD_EAGER, got));
        int diff = 0;
        double max_abs = 0;
        for (int j = 0; j < n_seqs * V; j++) {
            if (memcmp(&got[j], &want[j], sizeof(float))) diff++;
            double d = fabs((double)got[j] - want[j]);
            if (d > max_abs) max_abs = d;
        }
        printf("  %d sequences padded to %2d rows: %d of %d logits differ (max |diff| %g); row 0 "
               "argmax %d vs %d\n",
               n_seqs, buckets[i], diff, n_seqs * V, max_abs, test_argmax(got, V),
               test_argmax(want, V));
        CHECK_EQ(diff, 0);
        // Only the real rows are written back.
        CHECK_MSG(n_seqs == PAD_MAX_SEQS || got[n_seqs * V] == -1e30f,
                  "a padding row's logits were copied out");
        CHECK_MSG(memcmp(f.m.kv_cache, kv_want, f.kv_bytes) == 0,
                  "padded to %d rows, the KV cache differs from the unpadded step's", buckets[i]);
        tried++;
    }
    CHECK(tried >= 1);
    free(scratch), free(want), free(got), free(kv_before), free(kv_want);
    pfx_close(&f);
}

TEST(graph_pad_rows_never_change_real_rows) {
    check_padding(3); // padded to 4, 8, 16
    check_padding(5); // to 8 and 16
    check_padding(1); // to 1 (no padding, bucketed hint), 2, 4, 8, 16
}

TEST(graph_pad_full_batch_is_its_own_bucket) {
    check_padding(PAD_MAX_SEQS);
}

// ---- bad padding is refused before anything runs

TEST(graph_pad_refuses_bad_padding) {
    struct pfx f;
    pfx_open(&f);
    const int V = f.cfg.vocab_size;
    float *logits = malloc(sizeof(float) * PAD_MAX_SEQS * V);
    struct pbatch dec;
    prefill_then_decode(&f, 4, &dec, logits);
    struct model_batch b = pb_view(&dec);
    int64_t steps = f.m.n_steps;
    uint8_t *kv = malloc(f.kv_bytes);
    memcpy(kv, f.m.kv_cache, f.kv_bytes);

    int rc = model_forward_padded(&f.m, &b, 3, MODEL_FWD_EAGER, logits); // fewer rows than seqs
    CHECK_EQ(rc, ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "pad 4 tokens of 4 sequences to 3 rows"), "%s", err_msg());
    rc = model_forward_padded(&f.m, &b, PAD_MAX_SEQS + 1, MODEL_FWD_EAGER, logits);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "at most 16 sequences"), "%s", err_msg());

    // A prefill step cannot be padded: its rows are not one token per sequence.
    struct pbatch pre = {0};
    pb_add(&pre, 9, 0, 5);
    struct model_batch p = pb_view(&pre);
    rc = model_forward_padded(&f.m, &p, 4, MODEL_FWD_EAGER, logits);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "5 tokens of 1 sequences"), "%s", err_msg());

    // The CPU backend has no graphs: asking for one is an error, not a silent eager step.
    rc = model_forward_padded(&f.m, &b, 0, MODEL_FWD_GRAPH, logits);
    CHECK_EQ(rc, ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "no graph"), "%s", err_msg());
    CHECK_EQ(model_graphs_warmup(&f.m), 0);

    CHECK_EQ(f.m.n_steps, steps); // nothing ran
    CHECK_MSG(memcmp(kv, f.m.kv_cache, f.kv_bytes) == 0, "a refused step touched the cache");
    free(kv), free(logits);
    pfx_close(&f);
}

// ---- buckets

static void check_list(const int *got, int n_got, const int *want, int n_want) {
    for (int i = 0; i < n_got; i++)
        printf("%s%d", i ? " " : "  got ", got[i]);
    printf("\n");
    CHECK_EQ(n_got, n_want);
    for (int i = 0; i < n_want; i++)
        CHECK_EQ(got[i], want[i]);
}

TEST(graph_buckets_batch_and_context) {
    int b[MODEL_GRAPHS_MAX_BUCKETS];
    int n = model_graphs_batch_buckets(256, 128, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1, 2, 4, 8, 16, 32, 64, 128}, 8);
    n = model_graphs_batch_buckets(100, 128, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1, 2, 4, 8, 16, 32, 64, 100}, 8);
    n = model_graphs_batch_buckets(256, 256, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1, 2, 4, 8, 16, 32, 64, 128, 256}, 9);
    n = model_graphs_batch_buckets(1, 128, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1}, 1);
    CHECK_EQ(model_graphs_batch_buckets(0, 128, b, MODEL_GRAPHS_MAX_BUCKETS), 0);
    CHECK_EQ(model_graphs_batch_buckets(64, 0, b, MODEL_GRAPHS_MAX_BUCKETS), 0);
    CHECK_EQ(model_graphs_batch_buckets(256, 128, b, 3), 3); // never past the output
    CHECK_EQ(b[2], 4);

    n = model_graphs_ctx_buckets(32768, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768}, 10);
    n = model_graphs_ctx_buckets(5000, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1024, 2048, 3072, 4096, 5000}, 5);
    n = model_graphs_ctx_buckets(1024, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){1024}, 1);
    n = model_graphs_ctx_buckets(40, b, MODEL_GRAPHS_MAX_BUCKETS);
    check_list(b, n, (int[]){40}, 1);
    CHECK_EQ(model_graphs_ctx_buckets(0, b, MODEL_GRAPHS_MAX_BUCKETS), 0);
    n = model_graphs_ctx_buckets(1 << 30, b, MODEL_GRAPHS_MAX_BUCKETS); // 1G tokens: bounded
    CHECK(n > 30 && n <= MODEL_GRAPHS_MAX_BUCKETS);
    CHECK_EQ(b[n - 1], 1 << 30);

    const int batch[] = {1, 2, 4, 8, 16, 24};
    CHECK_EQ(model_graphs_bucket_of(batch, 6, 1), 0);
    CHECK_EQ(model_graphs_bucket_of(batch, 6, 3), 2);
    CHECK_EQ(model_graphs_bucket_of(batch, 6, 17), 5);
    CHECK_EQ(model_graphs_bucket_of(batch, 6, 24), 5);
    CHECK_EQ(model_graphs_bucket_of(batch, 6, 25), -1);
}

TEST(graph_buckets_max_seqs_switch) {
    unsetenv("KEEL_CUDA_GRAPH_MAX_SEQS");
    CHECK_EQ(model_graphs_max_seqs_setting(), MODEL_GRAPHS_MAX_SEQS);
    setenv("KEEL_CUDA_GRAPH_MAX_SEQS", "32", 1);
    CHECK_EQ(model_graphs_max_seqs_setting(), 32);
    setenv("KEEL_CUDA_GRAPH_MAX_SEQS", "0", 1);
    CHECK_EQ(model_graphs_max_seqs_setting(), 0);
    setenv("KEEL_CUDA_GRAPH_MAX_SEQS", "12x", 1); // not a count: the default, with a warning
    CHECK_EQ(model_graphs_max_seqs_setting(), MODEL_GRAPHS_MAX_SEQS);
    setenv("KEEL_CUDA_GRAPH_MAX_SEQS", "-4", 1);
    CHECK_EQ(model_graphs_max_seqs_setting(), MODEL_GRAPHS_MAX_SEQS);
    unsetenv("KEEL_CUDA_GRAPH_MAX_SEQS");
}

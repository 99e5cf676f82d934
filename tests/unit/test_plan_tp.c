// The memory plan over several GPUs (tensor parallelism), pinned to numbers computed by hand from
// the Hugging Face configs of Qwen2.5-14B-Instruct and Qwen2.5-32B-Instruct. The arithmetic is in
// the comments; the code under test never produced these numbers.
//
// Unless a test says otherwise: keel's defaults (utilization 0.9, block_size 16, S = 256
// sequences, T = 8192 tokens, max_model_len 32768 so 2048 blocks per sequence) and free = total -
// 512 MiB on every GPU (overhead 536870912).
#include "common/err.h"
#include "memory/plan.h"
#include "tests/test.h"

#include <cjson/cJSON.h>

#define GiB(n) ((size_t)(n) << 30)
#define MiB(n) ((size_t)(n) << 20)

#define CHECK_HAS(hay, needle)                                                                     \
    CHECK_MSG(strstr((hay), (needle)) != NULL, "\"%s\" not in: %s", (needle), (hay))

static struct mem_plan_shape qwen25_7b(void) {
    return (struct mem_plan_shape){.dim = 3584,
                                   .hidden_dim = 18944,
                                   .n_layers = 28,
                                   .n_heads = 28,
                                   .n_kv_heads = 4,
                                   .head_dim = 128,
                                   .vocab_size = 152064,
                                   .qkv_bias = true};
}
static struct mem_plan_shape qwen25_14b(void) {
    return (struct mem_plan_shape){.dim = 5120,
                                   .hidden_dim = 13824,
                                   .n_layers = 48,
                                   .n_heads = 40,
                                   .n_kv_heads = 8,
                                   .head_dim = 128,
                                   .vocab_size = 152064,
                                   .qkv_bias = true};
}
// tests/data/configs/Qwen2.5-32B-Instruct/config.json
static struct mem_plan_shape qwen25_32b(void) {
    return (struct mem_plan_shape){.dim = 5120,
                                   .hidden_dim = 27648,
                                   .n_layers = 64,
                                   .n_heads = 40,
                                   .n_kv_heads = 8,
                                   .head_dim = 128,
                                   .vocab_size = 152064,
                                   .qkv_bias = true};
}

static struct mem_plan_settings defaults(void) {
    struct mem_plan_settings s;
    mem_plan_settings_defaults(&s, 32768);
    return s;
}

// Plans tp GPUs of the given sizes, each with 512 MiB taken by its context.
static int plan_tp(const struct mem_plan_shape *m, const struct mem_plan_settings *s, int tp,
                   const size_t *totals, struct mem_plan *p) {
    size_t free_b[MEM_PLAN_MAX_TP];
    for (int r = 0; r < tp && r < MEM_PLAN_MAX_TP; r++)
        free_b[r] = totals[r] - MiB(512);
    return mem_plan_compute_tp(m, s, tp, totals, free_b, p);
}

// ---- the shard

TEST(plan_tp_shard_of_qwen25_14b) {
    // TP=2: 20 heads, 4 KV heads, hidden 6912, vocab 152064 / 2 = 76032 rows.
    // qkv_dim = (20 + 2*4) * 128 = 3584, q_dim = 2560. Per layer: attn_norm 5120*2 = 10240,
    // wqkv 3584*5120*2 = 36700160, bqkv 3584*2 = 7168, wo 5120*2560*2 = 26214400, ffn_norm
    // 10240, w_gate_up 2*6912*5120*2 = 141557760, w_down 5120*6912*2 = 70778880: 275278848.
    // lm_head 76032*5120*2 = 778567680; embed has one more (zero) row: 76033*5120*2 = 778577920.
    // Total = 778577920 + 778567680 + 48*275278848 + 10240 (final norm) = 14770540544.
    struct mem_plan_shape full = qwen25_14b(), sh;
    full.weights_bytes = 29540067328; // the whole model's (test_plan.c): not the shard's
    for (int r = 0; r < 2; r++) {
        CHECK_OK(mem_plan_shape_shard(&full, 2, r, &sh));
        CHECK_EQ(sh.n_heads, 20);
        CHECK_EQ(sh.n_kv_heads, 4);
        CHECK_EQ(sh.hidden_dim, 6912);
        CHECK_EQ(sh.vocab_size, 76032);
        CHECK_EQ(sh.dim, 5120);
        CHECK_EQ(sh.head_dim, 128);
        CHECK_EQ(sh.n_layers, 48);
        CHECK_EQ(sh.tp_size, 2);
        CHECK_EQ(sh.tp_rank, r);
        CHECK_EQ(sh.full_vocab_size, 152064);
        CHECK_EQ(sh.weights_bytes, 14770540544LL);
        CHECK_EQ(mem_plan_weights_from_shape(&sh), 14770540544LL);
        CHECK_EQ(mem_plan_vocab_padded(&sh), 152064);
    }
    // The two shards hold the whole model plus one more copy of the replicated norms and a zero
    // embedding row each: 2 * 14770540544 - 29540067328 = 1013760 = 48 layers * 2 norms * 10240
    // + 10240 (final norm) + 2 * 10240.
    struct mem_plan_shape s0, s1, whole = qwen25_14b();
    CHECK_OK(mem_plan_shape_shard(&whole, 2, 0, &s0));
    CHECK_OK(mem_plan_shape_shard(&whole, 2, 1, &s1));
    CHECK_EQ(s0.weights_bytes + s1.weights_bytes - mem_plan_weights_from_shape(&whole), 1013760);

    // TP=1 is the whole model, its exact weights kept.
    CHECK_OK(mem_plan_shape_shard(&full, 1, 0, &sh));
    CHECK_EQ(sh.n_heads, 40);
    CHECK_EQ(sh.vocab_size, 152064);
    CHECK_EQ(sh.weights_bytes, 29540067328LL);
    CHECK_EQ(sh.tp_size, 0);
}

TEST(plan_tp_shard_of_qwen25_32b_at_2_4_8) {
    // TP=2: per layer 10240 + 36700160 + 7168 + 26214400 + 10240 + 2*13824*5120*2 = 283115520
    // + 5120*13824*2 = 141557760: 487615488. Total = 778577920 + 778567680 + 64*487615488 +
    // 10240 = 32764547072.
    struct mem_plan_shape full = qwen25_32b(), sh;
    CHECK_OK(mem_plan_shape_shard(&full, 2, 1, &sh));
    CHECK_EQ(sh.weights_bytes, 32764547072LL);
    // TP=4: 10 heads, 2 KV heads, hidden 6912, vocab 38016. qkv_dim (10 + 4) * 128 = 1792.
    // Per layer: 10240 + 1792*5120*2 = 18350080 + 1792*2 = 3584 + 5120*1280*2 = 13107200
    // + 10240 + 2*6912*5120*2 = 141557760 + 5120*6912*2 = 70778880: 243817984.
    // lm_head 38016*5120*2 = 389283840, embed 38017*5120*2 = 389294080. Total = 389294080 +
    // 389283840 + 64*243817984 + 10240 = 16382939136.
    CHECK_OK(mem_plan_shape_shard(&full, 4, 3, &sh));
    CHECK_EQ(sh.n_heads, 10);
    CHECK_EQ(sh.n_kv_heads, 2);
    CHECK_EQ(sh.vocab_size, 38016);
    CHECK_EQ(sh.weights_bytes, 16382939136LL);
    // TP=8: 5 heads, 1 KV head (every GPU holds one), hidden 3456, vocab 19008.
    CHECK_OK(mem_plan_shape_shard(&full, 8, 7, &sh));
    CHECK_EQ(sh.n_heads, 5);
    CHECK_EQ(sh.n_kv_heads, 1);
    CHECK_EQ(sh.hidden_dim, 3456);
    CHECK_EQ(sh.vocab_size, 19008);
}

TEST(plan_tp_shard_pads_an_uneven_vocab) {
    // A vocabulary of 151655 over 4 GPUs: ceil(151655 / 4) = 37914 rows each, padded to
    // 4 * 37914 = 151656 (the last rank's last row is padding). The tied embedding is the LM
    // head, so it is counted once, with its zero row: 37915*896*2 = 67943680 bytes (a multiple
    // of 256).
    struct mem_plan_shape full = {.dim = 896,
                                  .hidden_dim = 4864,
                                  .n_layers = 1,
                                  .n_heads = 16,
                                  .n_kv_heads = 4,
                                  .head_dim = 64,
                                  .vocab_size = 151655,
                                  .tie_word_embeddings = true};
    struct mem_plan_shape sh;
    CHECK_OK(mem_plan_shape_shard(&full, 4, 0, &sh));
    CHECK_EQ(sh.vocab_size, 37914);
    CHECK_EQ(mem_plan_vocab_padded(&sh), 151656);
    CHECK_EQ(mem_plan_vocab_padded(&full), 151655);
    // Layer: 1792 + (4 + 2) * 64 * 896 * 2 = 688128 + 896*256*2 = 458752 + 1792
    // + 2*1216*896*2 = 4358144 + 896*1216*2 = 2179072: 7687680; + final norm 1792.
    CHECK_EQ(sh.weights_bytes, 67943680LL + 7687680 + 1792);

    // Logits of S = 256: full [256, 151655] f32 = 155294720 (1024 * 151655, a multiple of 256),
    // then the gather buffer [4, 256, 37914] f32 = 256 * 151656 * 4 = 155295744, then the
    // all-reduce's comm area: 256 + 2 slots * 4 ranks * 128 rows * 896 * 4 = 3670272.
    struct mem_logits_layout ll;
    mem_plan_logits_layout(&sh, 256, &ll);
    CHECK_EQ(ll.full, 0);
    CHECK_EQ(ll.gather, 155294720);
    CHECK_EQ(ll.gather_bytes, 155295744);
    CHECK_EQ(ll.comm, 155294720 + 155295744);
    CHECK_EQ(ll.comm_bytes, 3670272);
    CHECK_EQ(ll.bytes, 155294720 + 155295744 + 3670272);
    CHECK_EQ(ll.vocab_size, 151655);
    CHECK_EQ(ll.vocab_local, 37914);
    CHECK_EQ(ll.vocab_padded, 151656);
    // The comm area follows max_num_seqs below 128 rows: S = 8 gives 256 + 2*4*8*896*4 = 229632;
    // a whole model (tp 1) has none.
    CHECK_EQ(mem_plan_tp_comm_bytes(&sh, 8), 229632);
    CHECK_EQ(mem_plan_tp_comm_bytes(&sh, 1000), 3670272);
    CHECK_EQ(mem_plan_tp_comm_bytes(&full, 256), 0);
    // At TP=1 only the full logits, as the single-GPU plan sizes them.
    mem_plan_logits_layout(&full, 3, &ll);
    CHECK_EQ(ll.gather_bytes, 0);
    CHECK_EQ(ll.comm_bytes, 0);
    CHECK_EQ(ll.bytes, 1819904); // 3 * 151655 * 4 = 1819860, rounded up to 256
}

TEST(plan_tp_refuses_indivisible_shapes_by_name) {
    struct mem_plan_shape m = qwen25_7b(), sh;
    // 28 heads over 8 GPUs.
    CHECK_EQ(mem_plan_shape_shard(&m, 8, 0, &sh), ERR_INVAL);
    CHECK_HAS(err_msg(), "tensor_parallel_size 8 does not divide");
    CHECK_HAS(err_msg(), "n_heads (num_attention_heads) = 28");
    // 28 heads divide by 7, the 4 KV heads do not.
    CHECK_EQ(mem_plan_shape_shard(&m, 7, 0, &sh), ERR_INVAL);
    CHECK_HAS(err_msg(), "n_kv_heads (num_key_value_heads) = 4");
    // Heads divide by 2, an odd intermediate_size does not.
    m.hidden_dim = 18945;
    CHECK_EQ(mem_plan_shape_shard(&m, 2, 0, &sh), ERR_INVAL);
    CHECK_HAS(err_msg(), "hidden_dim (intermediate_size) = 18945");
    // Sizes and ranks out of range.
    m = qwen25_7b();
    CHECK_EQ(mem_plan_shape_shard(&m, 9, 0, &sh), ERR_INVAL);
    CHECK_HAS(err_msg(), "1..8, got 9");
    CHECK_EQ(mem_plan_shape_shard(&m, -2, 0, &sh), ERR_INVAL);
    CHECK_EQ(mem_plan_shape_shard(&m, 2, 2, &sh), ERR_INVAL);
    CHECK_HAS(err_msg(), "rank 2 is outside 0..1");
    // A shard cannot be sharded again.
    CHECK_OK(mem_plan_shape_shard(&m, 2, 0, &sh));
    struct mem_plan_shape sh2;
    CHECK_EQ(mem_plan_shape_shard(&sh, 2, 0, &sh2), ERR_INVAL);

    // The plan refuses the same way, before looking at memory.
    struct mem_plan_shape big = qwen25_14b();
    struct mem_plan_settings s = defaults();
    size_t totals[3] = {GiB(80), GiB(80), GiB(80)};
    struct mem_plan p[3];
    CHECK_EQ(plan_tp(&big, &s, 3, totals, p), ERR_INVAL);
    CHECK_HAS(err_msg(), "n_heads (num_attention_heads) = 40");
}

// ---- plans over GPUs

TEST(plan_tp_qwen25_14b_fits_2x24gib_not_1x24gib) {
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    size_t totals[2] = {GiB(24), GiB(24)};
    struct mem_plan p[2];
    // Per GPU: activations 3 * 8192*5120*2 = 251658240 (x, residual, xb stay full) + qkv
    //   8192*3584*2 = 58720256 + attn_out 8192*2560*2 = 41943040 + gate_up 8192*13824*2 =
    //   226492416 + hidden 8192*6912*2 = 113246208 + last_rows 256*5120*2 = 2621440 + attn_ws
    //   (256*20*16*130 + 8192*20*2) * 4 = 43909120 + meta 2198784 = 740789504.
    // logits: full 256*152064*4 = 155713536 + gather 256*2*76032*4 = 155713536 + comm
    //   256 + 2*2*128*5120*4 = 10486016: 321913088.
    // sampling (full vocab) 155713536 + 256*4096 = 156762112.
    // fixed = 536870912 + 14770540544 + 33554432 + 740789504 + 321913088 + 156762112
    //       = 16560430592. budget = floor(0.9 * 25769803776) = 23192823398.
    // kv_block (4 KV heads) = 2*48*4*128*16*2 = 1572864.
    // blocks = (23192823398 - 16560430592) / 1572864 = 4216 (6632392806 / 1572864 = 4216.8).
    // arena = 16560430592 - 536870912 + 4216*1572864 = 22654754304; unused =
    // 23192823398 - 536870912 - 22654754304 = 1198182.
    CHECK_OK(plan_tp(&m, &s, 2, totals, p));
    for (int r = 0; r < 2; r++) {
        CHECK_EQ(p[r].tp_size, 2);
        CHECK_EQ(p[r].tp_rank, r);
        CHECK_EQ(p[r].device_id, r);
        CHECK_EQ(p[r].weights_bytes, 14770540544ULL);
        CHECK_EQ(p[r].activation_bytes, 740789504);
        CHECK_EQ(p[r].logits_bytes, 321913088);
        CHECK_EQ(p[r].sampling_bytes, 156762112);
        CHECK_EQ(p[r].kv_block_bytes, 1572864);
        CHECK_EQ(p[r].num_kv_blocks, 4216);
        CHECK_EQ(p[r].kv_blocks_fit, 4216);
        CHECK_EQ(p[r].kv_tokens, 67456);
        CHECK_EQ(p[r].arena_bytes, 22654754304ULL);
        CHECK_EQ(p[r].unused_bytes, 1198182);
        CHECK_NEAR(p[r].max_concurrency, 67456.0 / 32768.0, 1e-12);
    }

    // One 24 GiB GPU: the whole model's weights alone (29540067328) exceed the budget.
    struct mem_plan one;
    CHECK_EQ(plan_tp(&m, &s, 1, totals, &one), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "does not fit");
    CHECK_HAS(err_msg(), "weights 27.51 GiB"); // 29540067328 / 2^30
    CHECK_HAS(err_msg(), "budget 21.60 GiB");  // 23192823398 / 2^30
    CHECK_EQ(one.weights_bytes, 29540067328ULL);
}

TEST(plan_tp_qwen25_32b_on_2x80gib) {
    struct mem_plan_shape m = qwen25_32b();
    struct mem_plan_settings s = defaults();
    size_t totals[2] = {GiB(80), GiB(80)};
    struct mem_plan p[2];
    // Activations: 251658240 + 58720256 + 41943040 + gate_up 8192*27648*2 = 452984832 + hidden
    //   226492416 + 2621440 + 43909120 + 2198784 = 1080528128.
    // fixed = 536870912 + 32764547072 + 33554432 + 1080528128 + 321913088 + 156762112
    //       = 34894175744; budget = floor(0.9 * 85899345920) = 77309411328.
    // kv_block = 2*64*4*128*16*2 = 2097152; blocks = 42415235584 / 2097152 = 20225 (.2).
    CHECK_OK(plan_tp(&m, &s, 2, totals, p));
    CHECK_EQ(p[1].weights_bytes, 32764547072ULL);
    CHECK_EQ(p[1].activation_bytes, 1080528128);
    CHECK_EQ(p[1].kv_block_bytes, 2097152);
    CHECK_EQ(p[0].num_kv_blocks, 20225);
    CHECK_EQ(p[1].num_kv_blocks, 20225);
    CHECK_EQ(p[1].kv_tokens, 323600);
    CHECK_EQ(p[1].arena_bytes, 34894175744ULL - 536870912 + 20225ULL * 2097152);

    // On one 80 GiB GPU it barely fits: weights 2*1557135360 + 64*975210496 + 10240 =
    // 65527752704, activations 1904577792, fixed 68315231488, kv_block 4194304:
    // (77309411328 - 68315231488) / 4194304 = 2144 blocks = 34304 tokens.
    struct mem_plan one;
    CHECK_OK(plan_tp(&m, &s, 1, totals, &one));
    CHECK_EQ(one.weights_bytes, 65527752704ULL);
    CHECK_EQ(one.num_kv_blocks, 2144);
    // Two GPUs hold 20225 * 2 MiB-blocks of half the heads: 9.4x the tokens of one.
    CHECK(p[0].kv_tokens > 9 * one.kv_tokens);
}

TEST(plan_tp_mixed_gpus_the_smallest_sizes_the_pool) {
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    s.tensor_parallel_size = 2;
    s.n_device_ids = 2;
    s.device_ids[0] = 2;
    s.device_ids[1] = 5;
    size_t totals[2] = {GiB(80), GiB(24)};
    struct mem_plan p[2];
    // GPU 1 (24 GiB) holds 4216 blocks (as above); GPU 0 could hold
    // (77309411328 - 16560430592) / 1572864 = 38623 (.2). Both carve 4216, and GPU 0's
    // unused = 77309411328 - 536870912 - 22654754304 = 54117786112 (50.4 GiB).
    CHECK_OK(plan_tp(&m, &s, 2, totals, p));
    CHECK_EQ(p[0].device_id, 2);
    CHECK_EQ(p[1].device_id, 5);
    CHECK_EQ(p[0].kv_blocks_fit, 38623);
    CHECK_EQ(p[1].kv_blocks_fit, 4216);
    CHECK_EQ(p[0].num_kv_blocks, 4216);
    CHECK_EQ(p[1].num_kv_blocks, 4216);
    CHECK_EQ(p[0].arena_bytes, 22654754304ULL);
    CHECK_EQ(p[0].unused_bytes, 54117786112ULL);
    CHECK_EQ(p[1].unused_bytes, 1198182);

    // A 20 GiB GPU 1: budget floor(0.9 * 21474836480) = 19327352832, (19327352832 -
    // 16560430592) / 1572864 = 1759 blocks = 28144 tokens < 32768. The hints come from it:
    // utilization (16560430592 + 2048 * 1572864) / 21474836480 = 0.9212 -> 0.93.
    totals[1] = GiB(20);
    CHECK_EQ(plan_tp(&m, &s, 2, totals, p), ERR_NOSPACE);
    const char *msg = err_msg();
    CHECK_HAS(msg, "GPU 1 (index 5): ");
    CHECK_HAS(msg, "max_model_len 32768");
    CHECK_HAS(msg, "1759 blocks x 16 tokens = 28144 tokens");
    CHECK_HAS(msg, "lower --max-model-len to 28144");
    CHECK_HAS(msg, "--gpu-memory-utilization to 0.93");
    CHECK_EQ(p[0].num_kv_blocks, 1759);
    CHECK_EQ(p[0].kv_blocks_fit, 38623);

    // The same with the small GPU first: the message names rank 0 and its index.
    size_t swapped[2] = {GiB(20), GiB(80)};
    CHECK_EQ(plan_tp(&m, &s, 2, swapped, p), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "GPU 0 (index 2): ");
    CHECK_HAS(err_msg(), "1759 blocks");

    // A 16 GiB GPU cannot hold its share at all: budget floor(0.9 * 17179869184) =
    // 15461882265 < fixed 16560430592.
    totals[1] = GiB(16);
    CHECK_EQ(plan_tp(&m, &s, 2, totals, p), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "GPU 1 (index 5): the model does not fit");
    CHECK_HAS(err_msg(), "weights 13.76 GiB"); // 14770540544 / 2^30
    CHECK_HAS(err_msg(), "budget 14.40 GiB");  // 15461882265 / 2^30
}

TEST(plan_tp_refuses_a_gpu_others_hold) {
    // GPU 1 (index 3) of 80 GiB has only 40 GiB free: used 40 GiB, of which keel's context is
    // taken as 1 GiB and 39 GiB belong to others. keel needs budget 72 GiB - 1 GiB = 71 GiB.
    // Utilization that fits: floor((40 + 1) / 80 * 100) / 100 = 0.51.
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    s.n_device_ids = 2;
    s.device_ids[0] = 1;
    s.device_ids[1] = 3;
    size_t totals[2] = {GiB(80), GiB(80)}, free_b[2] = {GiB(80) - MiB(512), GiB(40)};
    struct mem_plan p[2];
    CHECK_EQ(mem_plan_compute_tp(&m, &s, 2, totals, free_b, p), ERR_NOSPACE);
    const char *msg = err_msg();
    CHECK_HAS(msg, "GPU 1 (index 3): not enough free device memory");
    CHECK_HAS(msg, "the budget is 72.00 GiB");
    CHECK_HAS(msg, "only 40.00 GiB is free");
    CHECK_HAS(msg, "other processes hold 39.00 GiB");
    CHECK_HAS(msg, "--gpu-memory-utilization to 0.51");
    CHECK_EQ(p[1].other_bytes, GiB(39));
    CHECK_EQ(p[0].other_bytes, 0);
    CHECK_EQ(p[0].weights_bytes, 14770540544ULL); // filled as far as it got

    // Bad memory numbers name the GPU too.
    free_b[1] = GiB(81);
    CHECK_EQ(mem_plan_compute_tp(&m, &s, 2, totals, free_b, p), ERR_INVAL);
    CHECK_HAS(err_msg(), "GPU 1 (index 3): device memory: free");
}

TEST(plan_tp_cap_applies_to_every_gpu) {
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    s.num_kv_blocks = 3000;
    size_t totals[2] = {GiB(24), GiB(24)};
    struct mem_plan p[2];
    // 3000 of the 4216 blocks: unused grows by 1216 * 1572864 = 1912602624 to 1913800806.
    CHECK_OK(plan_tp(&m, &s, 2, totals, p));
    CHECK_EQ(p[0].num_kv_blocks, 3000);
    CHECK_EQ(p[1].num_kv_blocks, 3000);
    CHECK_EQ(p[1].kv_blocks_fit, 4216);
    CHECK_EQ(p[1].unused_bytes, 1198182 + 1216ULL * 1572864);
    // A cap below one sequence says which cap would do.
    s.num_kv_blocks = 1000;
    CHECK_EQ(plan_tp(&m, &s, 2, totals, p), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "raise --num-kv-blocks to 2048");
}

TEST(plan_tp_size_1_is_the_single_gpu_plan) {
    // Byte for byte, success and refusal alike, with device ids given or not.
    struct mem_plan_shape shapes[2] = {qwen25_7b(), qwen25_14b()};
    size_t sizes[3] = {GiB(24), GiB(80), GiB(141)};
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 3; j++) {
            struct mem_plan_settings s = defaults();
            s.tensor_parallel_size = j == 0 ? 0 : 1;
            struct mem_plan a, b;
            memset(&a, 0xab, sizeof a);
            memset(&b, 0xcd, sizeof b);
            size_t tot = sizes[j], fr = sizes[j] - MiB(700);
            int rc_a = mem_plan_compute(&shapes[i], &s, tot, fr, &a);
            char msg_a[2048];
            snprintf(msg_a, sizeof msg_a, "%s", rc_a ? err_msg() : "");
            int rc_b = mem_plan_compute_tp(&shapes[i], &s, 1, &tot, &fr, &b);
            CHECK_EQ(rc_a, rc_b);
            if (rc_a) CHECK_STR(msg_a, err_msg());
            CHECK_MSG(memcmp(&a, &b, sizeof a) == 0, "plans differ for shape %d on %zu bytes", i,
                      tot);
            CHECK_EQ(a.tp_size, 1);
            char *ta = mem_plan_table(&a, &s), *tb = mem_plan_table_tp(&b, 1, &s);
            CHECK_STR(ta, tb);
            free(ta);
            free(tb);
            char *ja = mem_plan_json(&a, &s), *jb = mem_plan_json_tp(&b, 1, &s);
            CHECK_STR(ja, jb);
            free(ja);
            free(jb);
        }
    }
}

TEST(plan_tp_rejects_disagreeing_sizes) {
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    size_t totals[MEM_PLAN_MAX_TP] = {GiB(80), GiB(80), GiB(80), GiB(80),
                                      GiB(80), GiB(80), GiB(80), GiB(80)};
    struct mem_plan p[MEM_PLAN_MAX_TP];
    s.tensor_parallel_size = 4;
    CHECK_EQ(plan_tp(&m, &s, 2, totals, p), ERR_INVAL);
    CHECK_HAS(err_msg(), "the settings say 4");
    // The single-GPU entry point does not plan several GPUs.
    struct mem_plan one;
    CHECK_EQ(mem_plan_compute(&m, &s, GiB(80), GiB(79), &one), ERR_INVAL);
    CHECK_HAS(err_msg(), "mem_plan_compute_tp");
    s.tensor_parallel_size = 9;
    CHECK_EQ(mem_plan_compute(&m, &s, GiB(80), GiB(79), &one), ERR_INVAL);
    CHECK_HAS(err_msg(), "tensor_parallel_size must be in 1..8");
    s.tensor_parallel_size = 0;
    CHECK_EQ(plan_tp(&m, &s, 0, totals, p), ERR_INVAL);
    CHECK_EQ(plan_tp(&m, &s, 9, totals, p), ERR_INVAL);
    s.n_device_ids = 3;
    CHECK_EQ(plan_tp(&m, &s, 2, totals, p), ERR_INVAL);
    CHECK_HAS(err_msg(), "3 device ids for tensor_parallel_size 2");
    // TP=4 of the 14B on four 80 GiB GPUs works: 10 heads, 2 KV heads each.
    s.n_device_ids = 0;
    CHECK_OK(plan_tp(&m, &s, 4, totals, p));
    CHECK_EQ(p[3].kv_block_bytes, 786432); // 2*48*2*128*16*2
    CHECK_EQ(p[3].tp_rank, 3);
}

// ---- output

TEST(plan_tp_table_and_json_per_gpu) {
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    s.n_device_ids = 2;
    s.device_ids[0] = 2;
    s.device_ids[1] = 5;
    size_t totals[2] = {GiB(80), GiB(24)};
    struct mem_plan p[2];
    CHECK_OK(plan_tp(&m, &s, 2, totals, p));

    char *t = mem_plan_table_tp(p, 2, &s);
    CHECK(t != NULL);
    CHECK_HAS(t, "tensor parallel over 2 GPUs");
    CHECK_HAS(t, "GPU 0 (index 2)");
    CHECK_HAS(t, "GPU 1 (index 5)");
    CHECK_HAS(t, "total");
    CHECK_HAS(t, "13.756 GiB       13.756 GiB       27.512 GiB"); // weights 14770540544 each
    CHECK_HAS(t, "38623             4216");                       // blocks each could hold
    CHECK_HAS(t, "4216 blocks on every GPU");
    CHECK_HAS(t, "67456 tokens");
    free(t);

    char *j = mem_plan_json_tp(p, 2, &s);
    CHECK(j != NULL);
    cJSON *o = cJSON_Parse(j);
    CHECK_MSG(o != NULL, "not JSON: %s", j);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "tensor_parallel_size")), 2);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "num_kv_blocks")), 4216);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "max_model_len")), 32768);
    cJSON *gpus = cJSON_GetObjectItem(o, "gpus");
    CHECK_EQ(cJSON_GetArraySize(gpus), 2);
    cJSON *g1 = cJSON_GetArrayItem(gpus, 1);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(g1, "device_id")), 5);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(g1, "tp_rank")), 1);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(g1, "device_total_bytes")), GiB(24));
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(g1, "kv_blocks_fit")), 4216);
    cJSON *g0 = cJSON_GetArrayItem(gpus, 0);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(g0, "unused_bytes")), 54117786112.0);
    cJSON *tot = cJSON_GetObjectItem(o, "total");
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(tot, "weights_bytes")), 2 * 14770540544.0);
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(tot, "device_total_bytes")),
             (double)(GiB(80) + GiB(24)));
    CHECK_EQ(cJSON_GetNumberValue(cJSON_GetObjectItem(tot, "arena_bytes")), 2 * 22654754304.0);
    cJSON_Delete(o);
    free(j);
}

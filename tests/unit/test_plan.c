// The memory plan, pinned to numbers computed by hand from the real Hugging Face configs of
// Qwen2.5-0.5B/7B/14B-Instruct and Qwen3-8B on 24, 80 and 141 GiB devices. The arithmetic is in
// the comments; the code under test never produced these numbers.
//
// Unless a test says otherwise: keel's defaults (utilization 0.9, block_size 16, max_num_seqs
// S = 256, max_num_batched_tokens T = 8192, max_model_len 32768 so 2048 blocks per sequence) and
// free = total - 512 MiB (overhead 536870912).
#include "common/err.h"
#include "memory/plan.h"
#include "tests/test.h"

#include <cjson/cJSON.h>

#define GiB(n) ((size_t)(n) << 30)
#define MiB(n) ((size_t)(n) << 20)

// ---- the four models (config.json values)

static struct mem_plan_shape qwen25_05b(void) {
    return (struct mem_plan_shape){.dim = 896, .hidden_dim = 4864, .n_layers = 24, .n_heads = 14,
                                   .n_kv_heads = 2, .head_dim = 64, .vocab_size = 151936,
                                   .tie_word_embeddings = true, .qkv_bias = true};
}
static struct mem_plan_shape qwen25_7b(void) {
    return (struct mem_plan_shape){.dim = 3584, .hidden_dim = 18944, .n_layers = 28,
                                   .n_heads = 28, .n_kv_heads = 4, .head_dim = 128,
                                   .vocab_size = 152064, .qkv_bias = true};
}
static struct mem_plan_shape qwen3_8b(void) {
    return (struct mem_plan_shape){.dim = 4096, .hidden_dim = 12288, .n_layers = 36,
                                   .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
                                   .vocab_size = 151936, .qk_norm = true};
}
static struct mem_plan_shape qwen25_14b(void) {
    return (struct mem_plan_shape){.dim = 5120, .hidden_dim = 13824, .n_layers = 48,
                                   .n_heads = 40, .n_kv_heads = 8, .head_dim = 128,
                                   .vocab_size = 152064, .qkv_bias = true};
}

static struct mem_plan_settings defaults(void) {
    struct mem_plan_settings s;
    mem_plan_settings_defaults(&s, 32768);
    return s;
}

// Plans on a device of `total` bytes with 512 MiB of it taken by the context.
static int plan_on(const struct mem_plan_shape *m, const struct mem_plan_settings *s,
                   size_t total, struct mem_plan *p) {
    return mem_plan_compute(m, s, total, total - MiB(512), p);
}

#define CHECK_HAS(hay, needle) CHECK_MSG(strstr((hay), (needle)) != NULL, \
                                         "\"%s\" not in: %s", (needle), (hay))

// ---- weights

TEST(plan_weights_from_shape_of_real_configs) {
    // Qwen2.5-7B, qkv_dim = (28 + 2*4) * 128 = 4608. Every tensor below is already a multiple
    // of 256 bytes. embed = 152064 * 3584 * 2 = 1089994752. Per layer: attn_norm 3584*2 = 7168,
    // wqkv 4608*3584*2 = 33030144, bqkv 4608*2 = 9216, wo 3584*3584*2 = 25690112, ffn_norm 7168,
    // w_gate_up 2*18944*3584*2 = 271581184, w_down 3584*18944*2 = 135790592: 466115584.
    // Total = 2 * 1089994752 (embed, lm_head) + 28 * 466115584 + 7168 = 15231233024
    // (7.6156e9 parameters * 2 bytes, as published).
    struct mem_plan_shape m = qwen25_7b();
    CHECK_EQ(mem_plan_weights_from_shape(&m), 15231233024LL);

    // Qwen2.5-0.5B, tied, qkv_dim = (14 + 4) * 64 = 1152. embed = 151936*896*2 = 272269312.
    // Per layer: 1792 + 1152*896*2 = 2064384 + bqkv 2304 + wo 896*896*2 = 1605632 + 1792
    // + 2*4864*896*2 = 17432576 + 896*4864*2 = 8716288 (1792 = 7*256 and 2304 = 9*256 need no
    // rounding): layer = 29824768. Total = 272269312 + 24 * 29824768 + 1792 = 988065536.
    m = qwen25_05b();
    CHECK_EQ(mem_plan_weights_from_shape(&m), 988065536LL);

    // Qwen3-8B: qkv_dim = (32 + 16) * 128 = 6144, no bias, q_norm and k_norm 128*2 = 256 each.
    // embed = 151936*4096*2 = 1244659712. Layer: 8192 + 6144*4096*2 = 50331648 + 512
    // + wo 4096*4096*2 = 33554432 + 8192 + 2*12288*4096*2 = 201326592 + 12288*4096*2 =
    // 100663296: 385892864. Total = 2*1244659712 + 36*385892864 + 8192 = 16381470720.
    m = qwen3_8b();
    CHECK_EQ(mem_plan_weights_from_shape(&m), 16381470720LL);

    // Qwen2.5-14B: qkv_dim = (40 + 16) * 128 = 7168. embed = 152064*5120*2 = 1557135360.
    // Layer: 10240 + 7168*5120*2 = 73400320 + 14336 + 5120*5120*2 = 52428800 + 10240
    // + 2*13824*5120*2 = 283115520 + 13824*5120*2 = 141557760: 550537216.
    // Total = 2*1557135360 + 48*550537216 + 10240 = 29540067328.
    m = qwen25_14b();
    CHECK_EQ(mem_plan_weights_from_shape(&m), 29540067328LL);

    // An odd-sized norm rounds up: dim 100 gives 200-byte vectors stored in 256.
    struct mem_plan_shape t = {.dim = 100, .hidden_dim = 128, .n_layers = 1, .n_heads = 2,
                               .n_kv_heads = 1, .head_dim = 50, .vocab_size = 10,
                               .tie_word_embeddings = true};
    // embed 10*100*2 = 2000 -> 2048; attn_norm 256; wqkv (2+2)*50*100*2 = 40000 -> 40192;
    // wo 100*100*2 = 20000 -> 20224; ffn_norm 256; gate_up 2*128*100*2 = 51200; down 25600;
    // final_norm 256: 2048 + 256 + 40192 + 20224 + 256 + 51200 + 25600 + 256 = 140032.
    CHECK_EQ(mem_plan_weights_from_shape(&t), 140032);
}

// ---- whole plans

TEST(plan_qwen25_7b_on_80gib_every_region) {
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    // budget = floor(0.9 * 85899345920) = 77309411328
    CHECK_EQ(p.budget_bytes, 77309411328ULL);
    CHECK_EQ(p.overhead_bytes, 536870912);
    CHECK_EQ(p.other_bytes, 0);
    CHECK_EQ(p.weights_bytes, 15231233024ULL);
    CHECK_EQ(p.workspace_bytes, 33554432);
    // Activations, T = 8192, S = 256, 2048 blocks per sequence:
    //   x, residual, xb: 8192*3584*2 = 58720256 each          176160768
    //   qkv 8192*4608*2 = 75497472; attn_out 8192*3584*2 = 58720256
    //   gate_up 8192*37888*2 = 620756992; hidden 8192*18944*2 = 310378496
    //   last_rows 256*3584*2 = 1835008
    //   attn_ws (256*28*16*130 + 8192*28*2) * 4 = (14909440 + 458752) * 4 = 61472768
    //   meta: 3 * 8192*4 = 98304; query_start 257*4 = 1028 -> 1280; seq_lens 1024;
    //         block_tables 256*2048*4 = 2097152; rows 1024: 2198784
    //   sum = 176160768 + 75497472 + 58720256 + 620756992 + 310378496 + 1835008 + 61472768
    //       + 2198784 = 1307020544
    CHECK_EQ(p.activation_bytes, 1307020544ULL);
    CHECK_EQ(p.logits_bytes, 155713536);   // 256 * 152064 * 4
    CHECK_EQ(p.sampling_bytes, 156762112); // 155713536 + 256 * 4096
    // kv_block = 2 * 28 * 4 * 128 * 16 * 2 = 917504
    CHECK_EQ(p.kv_block_bytes, 917504);
    // fixed = 536870912 + 15231233024 + 33554432 + 1307020544 + 155713536 + 156762112
    //       = 17421154560; n_blocks = (77309411328 - 17421154560) / 917504 = 59888256768 /
    //       917504 = 65273 (remainder 18176)
    CHECK_EQ(p.num_kv_blocks, 65273);
    CHECK_EQ(p.kv_tokens, 65273 * 16);
    CHECK_EQ(p.kv_bytes, 65273ULL * 917504);
    CHECK_EQ(p.max_blocks_per_seq, 2048);
    CHECK_NEAR(p.max_concurrency, 1044368.0 / 32768.0, 1e-9); // 31.87 sequences
    // arena = 17421154560 - 536870912 + 59888238592 = 76772522240; unused = the remainder.
    CHECK_EQ(p.arena_bytes, 76772522240ULL);
    CHECK_EQ(p.unused_bytes, 18176);
    CHECK_EQ(p.arena_bytes + p.unused_bytes + p.overhead_bytes, p.budget_bytes);
}

TEST(plan_qwen25_7b_on_24_and_141gib) {
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    // 24 GiB: budget floor(0.9 * 25769803776) = 23192823398;
    // n_blocks = (23192823398 - 17421154560) / 917504 = 5771668838 / 917504 = 6290
    CHECK_OK(plan_on(&m, &s, GiB(24), &p));
    CHECK_EQ(p.budget_bytes, 23192823398ULL);
    CHECK_EQ(p.num_kv_blocks, 6290);
    CHECK_EQ(p.kv_tokens, 100640);
    // 141 GiB: budget floor(0.9 * 151397597184) = 136257837465;
    // n_blocks = (136257837465 - 17421154560) / 917504 = 118836682905 / 917504 = 129521
    CHECK_OK(plan_on(&m, &s, GiB(141), &p));
    CHECK_EQ(p.budget_bytes, 136257837465ULL);
    CHECK_EQ(p.num_kv_blocks, 129521);
    CHECK_EQ(p.kv_tokens, 2072336);
}

TEST(plan_qwen25_05b_on_three_devices) {
    struct mem_plan_shape m = qwen25_05b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    // Activations (qkv_dim 1152, attn_out 896, 2*hidden 9728):
    //   3 * 8192*896*2 = 44040192; qkv 8192*1152*2 = 18874368; attn_out 14680064;
    //   gate_up 8192*9728*2 = 159383552; hidden 79691776; last_rows 256*896*2 = 458752;
    //   attn_ws (256*14*16*66 + 8192*14*2) * 4 = (3784704 + 229376) * 4 = 16056320;
    //   meta 2198784 (as for any model with S = 256, T = 8192, 2048 blocks per sequence)
    //   sum = 335383808
    // fixed = 536870912 + 988065536 + 33554432 + 335383808 + 155582464 (256*151936*4)
    //       + 156631040 = 2206088192; kv_block = 2 * 24 * 2 * 64 * 16 * 2 = 196608
    CHECK_OK(plan_on(&m, &s, GiB(24), &p));
    CHECK_EQ(p.activation_bytes, 335383808);
    CHECK_EQ(p.kv_block_bytes, 196608);
    // (23192823398 - 2206088192) / 196608 = 106744
    CHECK_EQ(p.num_kv_blocks, 106744);
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    // (77309411328 - 2206088192) / 196608 = 381995
    CHECK_EQ(p.num_kv_blocks, 381995);
    CHECK_OK(plan_on(&m, &s, GiB(141), &p));
    // (136257837465 - 2206088192) / 196608 = 681822
    CHECK_EQ(p.num_kv_blocks, 681822);
    CHECK_EQ(p.kv_tokens, 10909152);
}

TEST(plan_qwen3_8b_on_three_devices) {
    struct mem_plan_shape m = qwen3_8b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    // Activations: 3 * 8192*4096*2 = 201326592; qkv 8192*6144*2 = 100663296; attn_out
    //   67108864; gate_up 8192*24576*2 = 402653184; hidden 201326592; last_rows 2097152;
    //   attn_ws (256*32*16*130 + 8192*32*2) * 4 = (17039360 + 524288) * 4 = 70254592;
    //   meta 2198784: sum 1047629056
    // fixed = 536870912 + 16381470720 + 33554432 + 1047629056 + 155582464 + 156631040
    //       = 18311738624; kv_block = 2 * 36 * 8 * 128 * 16 * 2 = 2359296
    CHECK_OK(plan_on(&m, &s, GiB(24), &p));
    CHECK_EQ(p.activation_bytes, 1047629056);
    CHECK_EQ(p.kv_block_bytes, 2359296);
    // (23192823398 - 18311738624) / 2359296 = 2068: 33088 tokens, just over one 32768 sequence
    CHECK_EQ(p.num_kv_blocks, 2068);
    CHECK_EQ(p.kv_tokens, 33088);
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    CHECK_EQ(p.num_kv_blocks, 25006); // (77309411328 - 18311738624) / 2359296
    CHECK_OK(plan_on(&m, &s, GiB(141), &p));
    CHECK_EQ(p.num_kv_blocks, 49992); // (136257837465 - 18311738624) / 2359296
}

TEST(plan_qwen25_14b_fits_80_and_141_not_24) {
    struct mem_plan_shape m = qwen25_14b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    // Activations: 3 * 8192*5120*2 = 251658240; qkv 8192*7168*2 = 117440512; attn_out 83886080;
    //   gate_up 8192*27648*2 = 452984832; hidden 226492416; last_rows 2621440;
    //   attn_ws (256*40*16*130 + 8192*40*2) * 4 = (21299200 + 655360) * 4 = 87818240;
    //   meta 2198784: 1225100544
    // fixed = 536870912 + 29540067328 + 33554432 + 1225100544 + 155713536 + 156762112
    //       = 31648068864; kv_block = 2 * 48 * 8 * 128 * 16 * 2 = 3145728
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    CHECK_EQ(p.activation_bytes, 1225100544);
    CHECK_EQ(p.num_kv_blocks, 14515); // (77309411328 - 31648068864) / 3145728
    CHECK_OK(plan_on(&m, &s, GiB(141), &p));
    CHECK_EQ(p.num_kv_blocks, 33254); // (136257837465 - 31648068864) / 3145728

    // 24 GiB: fixed 31648068864 > budget 23192823398. With one sequence it would need
    // 31648068864 + 2048 * 3145728 = 38090519808 bytes, more than the device: no utilization
    // helps.
    int rc = plan_on(&m, &s, GiB(24), &p);
    CHECK_EQ(rc, ERR_NOSPACE);
    const char *msg = err_msg();
    CHECK_HAS(msg, "does not fit");
    CHECK_HAS(msg, "weights 27.51 GiB"); // 29540067328 / 2^30
    CHECK_HAS(msg, "29.47 GiB");         // fixed 31648068864 / 2^30
    CHECK_HAS(msg, "budget 21.60 GiB");
    CHECK_HAS(msg, "35.47 GiB needed");  // 38090519808 / 2^30
    CHECK_HAS(msg, "cannot hold");
    CHECK_EQ(p.weights_bytes, 29540067328ULL); // filled as far as it got
    // The table of a refused plan still prints (the server logs it before refusing).
    char *t = mem_plan_table(&p, &s);
    CHECK(t != NULL);
    CHECK_HAS(t, "127.4%"); // weights / budget = 29540067328 / 23192823398
    CHECK_HAS(t, "0 blocks");
    free(t);
}

// ---- refusals

TEST(plan_refuses_a_context_longer_than_the_pool) {
    // Qwen3-8B on 24 GiB with max_model_len 40960 (2560 blocks). The block tables grow to
    // 256 * 2560 * 4 = 2621440 bytes, so activations grow by 524288 to 1048153344 and fixed to
    // 18312262912: (23192823398 - 18312262912) / 2359296 = 2068 blocks = 33088 tokens < 40960.
    // Utilization that fits: (18312262912 + 2560 * 2359296) / 25769803776 = 0.94498 -> 0.95.
    struct mem_plan_shape m = qwen3_8b();
    struct mem_plan_settings s = defaults();
    s.max_model_len = 40960;
    struct mem_plan p;
    CHECK_EQ(plan_on(&m, &s, GiB(24), &p), ERR_NOSPACE);
    const char *msg = err_msg();
    CHECK_HAS(msg, "max_model_len 40960");
    CHECK_HAS(msg, "2068 blocks x 16 tokens = 33088 tokens");
    CHECK_HAS(msg, "lower --max-model-len to 33088");
    CHECK_HAS(msg, "--gpu-memory-utilization to 0.95");
    CHECK_EQ(p.num_kv_blocks, 2068);
    CHECK_EQ(p.max_blocks_per_seq, 2560);
    // ... and 0.95 does fit.
    s.gpu_memory_utilization = 0.95;
    CHECK_OK(plan_on(&m, &s, GiB(24), &p));
    // floor(0.95 * 25769803776) = 24481313587; (24481313587 - 18312262912) / 2359296 = 2614
    CHECK_EQ(p.num_kv_blocks, 2614);
}

TEST(plan_refuses_when_other_processes_hold_memory) {
    // 80 GiB with 40.5 GiB used at start: overhead is capped at 1 GiB, 39.5 GiB belong to
    // others. Needed: budget 77309411328 - 1073741824 = 71 GiB > 39.5 GiB free.
    // Utilization that fits: floor((39.5 + 1) / 80 * 100) / 100 = 0.50.
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    size_t total = GiB(80), free_b = GiB(80) - GiB(40) - MiB(512);
    CHECK_EQ(mem_plan_compute(&m, &s, total, free_b, &p), ERR_NOSPACE);
    const char *msg = err_msg();
    CHECK_HAS(msg, "not enough free device memory");
    CHECK_HAS(msg, "keel needs 71.00 GiB");
    CHECK_HAS(msg, "only 39.50 GiB is free");
    CHECK_HAS(msg, "other processes hold 39.50 GiB");
    CHECK_HAS(msg, "--gpu-memory-utilization to 0.50");
    CHECK_EQ(p.overhead_bytes, GiB(1));
    CHECK_EQ(p.other_bytes, GiB(39) + MiB(512));
    // At 0.50: budget 42949672960, fixed = 17421154560 - 536870912 + 1073741824 = 17958025472,
    // n_blocks = (42949672960 - 17958025472) / 917504 = 27238, arena 41875257600 <= free.
    s.gpu_memory_utilization = 0.5;
    CHECK_OK(mem_plan_compute(&m, &s, total, free_b, &p));
    CHECK_EQ(p.num_kv_blocks, 27238);
    CHECK_EQ(p.arena_bytes, 41875257600ULL);
    CHECK(p.arena_bytes <= free_b);
}

TEST(plan_refusal_on_a_small_device_names_the_fix) {
    // Qwen2.5-0.5B on 2 GiB: fixed 2206088192 > budget floor(0.9 * 2147483648) = 1932735283.
    struct mem_plan_shape m = qwen25_05b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    CHECK_EQ(plan_on(&m, &s, GiB(2), &p), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "lower --max-num-seqs");
    // With S = 16, T = 2048 activations shrink to 80528128, logits to 16*151936*4 = 9723904
    // and sampling to 9789440: fixed 1658532352, n_blocks = (1932735283 - 1658532352) / 196608
    // = 1394 = 22304 tokens < 32768. Needs (1658532352 + 2048*196608) / 2147483648 = 0.9598 ->
    // 0.96 (floor(0.96 * 2^31) = 2061584302 >= 2061185536).
    s.max_num_seqs = 16;
    s.max_num_batched_tokens = 2048;
    CHECK_EQ(plan_on(&m, &s, GiB(2), &p), ERR_NOSPACE);
    CHECK_EQ(p.activation_bytes, 80528128);
    CHECK_EQ(p.num_kv_blocks, 1394);
    CHECK_HAS(err_msg(), "lower --max-model-len to 22304");
    CHECK_HAS(err_msg(), "--gpu-memory-utilization to 0.96");
    s.max_model_len = 22304;
    CHECK_OK(plan_on(&m, &s, GiB(2), &p));
}

TEST(plan_num_kv_blocks_caps_the_pool) {
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    s.num_kv_blocks = 4096;
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    CHECK_EQ(p.num_kv_blocks, 4096);
    CHECK_EQ(p.kv_bytes, 4096ULL * 917504);
    // arena = 17421154560 - 536870912 + 4096 * 917504 = 20642380032
    CHECK_EQ(p.arena_bytes, 20642380032ULL);
    CHECK_EQ(p.unused_bytes, 77309411328ULL - 536870912 - 20642380032ULL);
    // A cap above what fits changes nothing.
    s.num_kv_blocks = 1000000;
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    CHECK_EQ(p.num_kv_blocks, 65273);
    // A cap below one sequence (2048 blocks) is refused with the cap as the fix.
    s.num_kv_blocks = 1000;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "raise --num-kv-blocks to 2048");
    CHECK_HAS(err_msg(), "lower --max-model-len to 16000");
}

TEST(plan_budget_below_the_context_is_a_fit_problem) {
    // 0.01 of 24 GiB = 257698037 bytes, less than the 512 MiB context: not a free-memory
    // problem but a budget one, so the fix is a higher utilization.
    // need = 2206088192 + 2048 * 196608 = 2608741376; / 25769803776 = 0.1012 -> 0.11
    struct mem_plan_shape m = qwen25_05b();
    struct mem_plan_settings s = defaults();
    s.gpu_memory_utilization = 0.01;
    struct mem_plan p;
    CHECK_EQ(plan_on(&m, &s, GiB(24), &p), ERR_NOSPACE);
    CHECK_HAS(err_msg(), "the model does not fit");
    CHECK_HAS(err_msg(), "raise --gpu-memory-utilization to 0.11");
    s.gpu_memory_utilization = 0.11;
    CHECK_OK(plan_on(&m, &s, GiB(24), &p));
    // floor(0.11 * 25769803776) = 2834678415; (2834678415 - 2206088192) / 196608 = 3197
    CHECK_EQ(p.num_kv_blocks, 3197);
}

TEST(plan_overhead_splits_context_from_other_processes) {
    struct mem_plan_shape m = qwen25_05b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    // 700 MiB used: all of it is keel's context.
    CHECK_OK(mem_plan_compute(&m, &s, GiB(80), GiB(80) - MiB(700), &p));
    CHECK_EQ(p.overhead_bytes, MiB(700));
    CHECK_EQ(p.other_bytes, 0);
    // 3 GiB used: 1 GiB is taken as the context, 2 GiB as others'; it still fits (71 GiB of
    // the arena <= 77 GiB free) and the arena shrinks by the context it assumes.
    CHECK_OK(mem_plan_compute(&m, &s, GiB(80), GiB(77), &p));
    CHECK_EQ(p.overhead_bytes, GiB(1));
    CHECK_EQ(p.other_bytes, GiB(2));
    CHECK(p.arena_bytes + p.unused_bytes == p.budget_bytes - GiB(1));
    char *t = mem_plan_table(&p, &s);
    CHECK(t != NULL);
    CHECK_HAS(t, "other processes held 2.000 GiB at start");
    free(t);
}

TEST(plan_rejects_bad_settings_by_name) {
    struct mem_plan_shape m = qwen25_05b();
    struct mem_plan p;
    struct mem_plan_settings s = defaults();
    s.gpu_memory_utilization = 0.0;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "gpu_memory_utilization");
    s.gpu_memory_utilization = 1.01;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    s = defaults();
    s.block_size = 24;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "block_size must be one of 8, 16, 32, 64, 128, got 24");
    s = defaults();
    s.max_model_len = 0;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "max_model_len");
    s = defaults();
    s.max_num_seqs = 0;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "max_num_seqs");
    s = defaults();
    s.max_num_batched_tokens = 128; // below max_num_seqs 256
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "max_num_batched_tokens (128) must be >= max_num_seqs (256)");
    s = defaults();
    s.num_kv_blocks = -1;
    CHECK_EQ(plan_on(&m, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "num_kv_blocks");
    s = defaults();
    CHECK_EQ(mem_plan_compute(&m, &s, GiB(80), GiB(81), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "exceeds total");
    CHECK_EQ(mem_plan_compute(&m, &s, 0, 0, &p), ERR_INVAL);
    struct mem_plan_shape bad = m;
    bad.n_kv_heads = 3; // 14 heads are not a multiple of 3
    CHECK_EQ(plan_on(&bad, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "n_kv_heads");
    bad = m;
    bad.vocab_size = 0;
    CHECK_EQ(plan_on(&bad, &s, GiB(80), &p), ERR_INVAL);
    CHECK_HAS(err_msg(), "vocab_size");
}

TEST(plan_takes_exact_weights_when_given) {
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    m.weights_bytes = 15231233024LL + 1000; // e.g. from safetensors headers; rounded up to 256
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    CHECK_EQ(p.weights_bytes, 15231233024ULL + 1024);
}

TEST(plan_settings_defaults) {
    struct mem_plan_settings s;
    mem_plan_settings_defaults(&s, 40960);
    CHECK_EQ(s.max_model_len, 32768);
    CHECK_NEAR(s.gpu_memory_utilization, 0.9, 0);
    CHECK_EQ(s.block_size, 16);
    CHECK_EQ(s.max_num_seqs, 256);
    CHECK_EQ(s.max_num_batched_tokens, 8192);
    CHECK_EQ(s.num_kv_blocks, 0);
    mem_plan_settings_defaults(&s, 4096);
    CHECK_EQ(s.max_model_len, 4096);
    mem_plan_settings_defaults(&s, 0);
    CHECK_EQ(s.max_model_len, 32768);
}

// ---- the scratch layout (the contract with the forward pass)

TEST(plan_scratch_layout_holds_every_buffer) {
    struct mem_plan_shape m = qwen3_8b();
    const int T = 8192, S = 256, MB = 2048;
    struct mem_scratch_layout l;
    mem_plan_scratch_layout(&m, T, S, MB, &l);
    // Offsets in layout order, each aligned, each buffer ending at or before the next one.
    struct {
        const char *name;
        size_t off, need;
    } b[] = {
        {"x", l.x, (size_t)T * 4096 * 2},
        {"residual", l.residual, (size_t)T * 4096 * 2},
        {"xb", l.xb, (size_t)T * 4096 * 2},
        {"qkv", l.qkv, (size_t)T * 6144 * 2},
        {"attn_out", l.attn_out, (size_t)T * 4096 * 2},
        {"gate_up", l.gate_up, (size_t)T * 24576 * 2},
        {"hidden", l.hidden, (size_t)T * 12288 * 2},
        {"last_rows", l.last_rows, (size_t)S * 4096 * 2},
        {"attn_ws", l.attn_ws, ((size_t)S * 32 * 16 * 130 + (size_t)T * 32 * 2) * 4},
        {"meta", l.meta, l.meta_bytes},
    };
    size_t n = sizeof b / sizeof b[0];
    CHECK_EQ(b[0].off, 0);
    for (size_t i = 0; i < n; i++) {
        CHECK_MSG(b[i].off % 256 == 0, "%s at %zu is not 256-aligned", b[i].name, b[i].off);
        size_t end = i + 1 < n ? b[i + 1].off : l.bytes;
        CHECK_MSG(b[i].off + b[i].need <= end, "%s [%zu, +%zu) overlaps the next at %zu",
                  b[i].name, b[i].off, b[i].need, end);
    }
    CHECK_EQ(l.attn_ws_bytes, (256 * 32 * 16 * 130 + 8192 * 32 * 2) * 4);
    // The metadata's arrays, relative to meta.
    size_t meta[][2] = {{l.meta_ids, T * 4},           {l.meta_positions, T * 4},
                        {l.meta_slot_mapping, T * 4},  {l.meta_query_start, (S + 1) * 4},
                        {l.meta_seq_lens, S * 4},      {l.meta_block_tables, (size_t)S * MB * 4},
                        {l.meta_rows, S * 4}};
    size_t nm = sizeof meta / sizeof meta[0];
    CHECK_EQ(meta[0][0], 0);
    for (size_t i = 0; i < nm; i++) {
        CHECK_EQ(meta[i][0] % 256, 0);
        size_t end = i + 1 < nm ? meta[i + 1][0] : l.meta_bytes;
        CHECK_MSG(meta[i][0] + meta[i][1] <= end, "meta array %zu overlaps the next", i);
    }
    CHECK_EQ(l.meta_bytes, 2198784); // as computed in plan_qwen25_7b_on_80gib_every_region
    CHECK_EQ(l.bytes % 256, 0);
    CHECK_EQ(l.bytes, 1047629056);
}

TEST(plan_scratch_covers_every_smaller_step) {
    // The plan sizes scratch for (T, S); every step the scheduler builds has t <= T tokens and
    // s <= S sequences, and each buffer grows with t or s only, so the largest step bounds them
    // all. Check it over a grid, buffer by buffer.
    struct mem_plan_shape m = qwen25_05b();
    struct mem_scratch_layout big, small;
    mem_plan_scratch_layout(&m, 512, 64, 128, &big);
    for (int t = 1; t <= 512; t += 37) {
        for (int s = 1; s <= 64 && s <= t; s += 7) {
            mem_plan_scratch_layout(&m, t, s, 128, &small);
            CHECK_MSG(small.bytes <= big.bytes, "t=%d s=%d: %zu > %zu", t, s, small.bytes,
                      big.bytes);
            CHECK(small.attn_ws_bytes <= big.attn_ws_bytes);
            CHECK(small.meta_bytes <= big.meta_bytes);
            CHECK(small.gate_up - small.qkv <= big.gate_up - big.qkv);
        }
    }
}

// ---- output

TEST(plan_json_has_every_region_in_bytes) {
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    char *js = mem_plan_json(&p, &s);
    CHECK(js != NULL);
    cJSON *o = cJSON_Parse(js);
    CHECK_MSG(o != NULL, "not JSON: %s", js);
    struct {
        const char *key;
        double want;
    } f[] = {{"budget_bytes", 77309411328.0},   {"weights_bytes", 15231233024.0},
             {"kv_block_bytes", 917504},         {"num_kv_blocks", 65273},
             {"kv_tokens", 1044368},             {"overhead_bytes", 536870912},
             {"workspace_bytes", 33554432},      {"activation_bytes", 1307020544},
             {"logits_bytes", 155713536},        {"sampling_bytes", 156762112},
             {"kv_bytes", 65273.0 * 917504},     {"arena_bytes", 76772522240.0},
             {"device_total_bytes", 85899345920.0}, {"max_model_len", 32768}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f[i].key);
        CHECK_MSG(cJSON_IsNumber(v), "no number %s in %s", f[i].key, js);
        CHECK_MSG(v->valuedouble == f[i].want, "%s: %.0f != %.0f", f[i].key, v->valuedouble,
                  f[i].want);
    }
    // Big integers are printed as integers, not in exponent form.
    CHECK_HAS(js, "\"budget_bytes\":77309411328");
    cJSON_Delete(o);
    free(js);
}

TEST(plan_table_shows_gib_and_percentages) {
    struct mem_plan_shape m = qwen25_7b();
    struct mem_plan_settings s = defaults();
    struct mem_plan p;
    CHECK_OK(plan_on(&m, &s, GiB(80), &p));
    char *t = mem_plan_table(&p, &s);
    CHECK(t != NULL);
    // weights 15231233024 / 2^30 = 14.185 GiB, 15231233024 / 77309411328 = 19.7 %
    CHECK_HAS(t, "14.185 GiB");
    CHECK_HAS(t, "19.7%");
    CHECK_HAS(t, "65273 blocks x 16 tokens = 1044368 tokens");
    CHECK_HAS(t, "31.87 sequences"); // 1044368 / 32768
    CHECK_HAS(t, "KV cache");
    CHECK_HAS(t, "activation scratch");
    free(t);
}

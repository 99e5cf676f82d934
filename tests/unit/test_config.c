// config.json / generation_config.json: the five real Qwen configs parse to the published
// numbers, and every unsupported or malformed field is refused with a message naming it.
#include "common/err.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/test.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

// ---- the real configs

static void load_real(const char *name, struct model_config *c) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/data/configs/%s", name);
    CHECK_OK(model_config_load(dir, c));
}

TEST(config_qwen25_05b_instruct) {
    struct model_config c;
    load_real("Qwen2.5-0.5B-Instruct", &c);
    CHECK_EQ(c.arch, MODEL_ARCH_QWEN2);
    CHECK_STR(c.arch_name, "Qwen2ForCausalLM");
    CHECK_EQ(c.dim, 896);
    CHECK_EQ(c.hidden_dim, 4864);
    CHECK_EQ(c.n_layers, 24);
    CHECK_EQ(c.n_heads, 14);
    CHECK_EQ(c.n_kv_heads, 2);
    CHECK_EQ(c.head_dim, 64);
    CHECK_EQ(c.vocab_size, 151936);
    CHECK_NEAR(c.rms_norm_eps, 1e-6, 1e-12);
    CHECK_NEAR(c.rope_theta, 1e6, 0.5);
    CHECK_EQ(c.max_position_embeddings, 32768);
    CHECK(c.tie_word_embeddings);
    CHECK(c.qkv_bias);
    CHECK(!c.qk_norm);
    CHECK_EQ(c.bos_id, 151643);
    CHECK_EQ(c.n_eos, 1);
    CHECK_EQ(c.eos_ids[0], 151645);
    CHECK_STR(c.torch_dtype, "bfloat16");
    CHECK_EQ(model_config_qkv_dim(&c), 896 + 2 * 128);
}

TEST(config_qwen25_7b_instruct) {
    struct model_config c;
    load_real("Qwen2.5-7B-Instruct", &c);
    CHECK_EQ(c.arch, MODEL_ARCH_QWEN2);
    CHECK_EQ(c.dim, 3584);
    CHECK_EQ(c.hidden_dim, 18944);
    CHECK_EQ(c.n_layers, 28);
    CHECK_EQ(c.n_heads, 28);
    CHECK_EQ(c.n_kv_heads, 4);
    CHECK_EQ(c.head_dim, 128);
    CHECK_EQ(c.vocab_size, 152064);
    CHECK_EQ(c.max_position_embeddings, 32768);
    CHECK(!c.tie_word_embeddings);
    CHECK(c.qkv_bias);
    CHECK(!c.qk_norm);
    CHECK_EQ(c.eos_ids[0], 151645);
}

TEST(config_qwen25_14b_instruct) {
    struct model_config c;
    load_real("Qwen2.5-14B-Instruct", &c);
    CHECK_EQ(c.arch, MODEL_ARCH_QWEN2);
    CHECK_EQ(c.dim, 5120);
    CHECK_EQ(c.hidden_dim, 13824);
    CHECK_EQ(c.n_layers, 48);
    CHECK_EQ(c.n_heads, 40);
    CHECK_EQ(c.n_kv_heads, 8);
    CHECK_EQ(c.head_dim, 128);
    CHECK_EQ(c.vocab_size, 152064);
    CHECK(!c.tie_word_embeddings);
    CHECK(c.qkv_bias);
}

TEST(config_qwen3_06b) {
    struct model_config c;
    load_real("Qwen3-0.6B", &c);
    CHECK_EQ(c.arch, MODEL_ARCH_QWEN3);
    CHECK_EQ(c.dim, 1024);
    CHECK_EQ(c.hidden_dim, 3072);
    CHECK_EQ(c.n_layers, 28);
    CHECK_EQ(c.n_heads, 16);
    CHECK_EQ(c.n_kv_heads, 8);
    // Qwen3-0.6B's head_dim (128) is not hidden_size / heads (64): it must come from the file.
    CHECK_EQ(c.head_dim, 128);
    CHECK_EQ(c.vocab_size, 151936);
    CHECK_EQ(c.max_position_embeddings, 40960);
    CHECK(c.tie_word_embeddings);
    CHECK(!c.qkv_bias);
    CHECK(c.qk_norm);
    CHECK_EQ(model_config_q_dim(&c), 2048);
}

TEST(config_qwen3_8b) {
    struct model_config c;
    load_real("Qwen3-8B", &c);
    CHECK_EQ(c.arch, MODEL_ARCH_QWEN3);
    CHECK_EQ(c.dim, 4096);
    CHECK_EQ(c.hidden_dim, 12288);
    CHECK_EQ(c.n_layers, 36);
    CHECK_EQ(c.n_heads, 32);
    CHECK_EQ(c.n_kv_heads, 8);
    CHECK_EQ(c.head_dim, 128);
    CHECK_EQ(c.vocab_size, 151936);
    CHECK(!c.tie_word_embeddings);
    CHECK(!c.qkv_bias);
    CHECK(c.qk_norm);
}

// Parameter counts as published: the weights region is exactly 2 bytes per parameter plus at
// most MEM_ARENA_ALIGN of padding per tensor.
static void check_bytes(const char *name, int64_t params, int n_tensors_per_layer, int extra) {
    struct model_config c;
    load_real(name, &c);
    int64_t bytes = model_weights_bytes(&c);
    int64_t n_tensors = (int64_t)c.n_layers * n_tensors_per_layer + extra;
    CHECK_MSG(bytes >= 2 * params && bytes <= 2 * params + n_tensors * MEM_ARENA_ALIGN,
              "%s: weights bytes %lld, params*2 %lld", name, (long long)bytes,
              (long long)(2 * params));
    struct mem_plan_shape s;
    model_plan_shape(&c, &s);
    CHECK_EQ(s.weights_bytes, bytes);
    CHECK_EQ(s.dim, c.dim);
    CHECK_EQ(s.head_dim, c.head_dim);
    CHECK_EQ(s.qk_norm, c.qk_norm);
    CHECK_EQ(s.qkv_bias, c.qkv_bias);
    CHECK_EQ(s.tie_word_embeddings, c.tie_word_embeddings);
    // The memory plan's own estimate from shapes agrees with the loader's exact layout.
    s.weights_bytes = 0;
    CHECK_EQ(mem_plan_weights_from_shape(&s), bytes);
}

TEST(config_weights_bytes_match_parameter_counts) {
    // Parameter counts (sum of tensor numels; the model cards round them to 0.49B, 7.61B,
    // 14.7B, 0.6B and 8.2B, non-embedding 0.36B, 6.53B, 13.1B, 0.44B, 6.95B).
    check_bytes("Qwen2.5-0.5B-Instruct", 494032768LL, 7, 2);
    check_bytes("Qwen2.5-7B-Instruct", 7615616512LL, 7, 3);
    check_bytes("Qwen2.5-14B-Instruct", 14770033664LL, 7, 3);
    check_bytes("Qwen3-0.6B", 596049920LL, 8, 2);
    check_bytes("Qwen3-8B", 8190735360LL, 8, 3);
}

TEST(config_builtin_default_model) {
    // models/default is what `keel serve` runs with no model given (tiny Qwen3, dummy weights).
    struct model_config c;
    CHECK_OK(model_config_load("models/default", &c));
    CHECK_EQ(c.arch, MODEL_ARCH_QWEN3);
    CHECK_EQ(c.dim, 64);
    CHECK_EQ(c.head_dim, 32);
    CHECK_EQ(c.n_kv_heads, 2);
    CHECK(c.tie_word_embeddings && c.qk_norm && !c.qkv_bias);
    // generation_config.json's two eos ids win over config.json's one.
    CHECK_EQ(c.n_eos, 2);
    CHECK_EQ(c.eos_ids[0], 151645);
    CHECK_EQ(c.eos_ids[1], 151643);
    // embed + 2 layers of (attn_norm, wqkv [256, 64], q/k norms, wo [64, 128], ffn_norm,
    // w_gate_up [384, 64], w_down [64, 192]) + final norm, each rounded up to 256 bytes.
    int64_t layer = 256 + 256 * 64 * 2 + 2 * 256 + 64 * 128 * 2 + 256 + 384 * 64 * 2 + 64 * 192 * 2;
    CHECK_EQ(model_weights_bytes(&c), 151936LL * 64 * 2 + 2 * layer + 256);
}

// ---- generation_config.json

TEST(config_generation_eos_wins) {
    struct model_config c;
    load_real("Qwen3-8B", &c);
    const char *gen = "{\"bos_token_id\": 151643, \"eos_token_id\": [151645, 151643], \"top_k\": 20}";
    CHECK_OK(model_config_parse_generation(gen, strlen(gen), &c));
    CHECK_EQ(c.n_eos, 2);
    CHECK_EQ(c.eos_ids[0], 151645);
    CHECK_EQ(c.eos_ids[1], 151643);
    const char *one = "{\"eos_token_id\": 7}";
    CHECK_OK(model_config_parse_generation(one, strlen(one), &c));
    CHECK_EQ(c.n_eos, 1);
    CHECK_EQ(c.eos_ids[0], 7);
}

TEST(config_generation_bad_types_leave_config_alone) {
    struct model_config c;
    load_real("Qwen3-8B", &c);
    const char *bad[] = {
        "{\"eos_token_id\": \"151645\"}", "{\"eos_token_id\": [151645, \"x\"]}",
        "{\"eos_token_id\": -3}",         "{\"eos_token_id\": 1.5}",
        "{\"bos_token_id\": [1, 2]}",    "{\"eos_token_id\": 999999999}",
        "[1, 2]",                        "{\"eos_token_id\": ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = model_config_parse_generation(bad[i], strlen(bad[i]), &c);
        CHECK_MSG(rc == ERR_FORMAT, "%s: rc %d (%s), want ERR_FORMAT", bad[i], rc, err_msg());
        CHECK_EQ(c.n_eos, 1);
        CHECK_EQ(c.eos_ids[0], 151645);
    }
    const char *many = "{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}";
    CHECK_EQ(model_config_parse_generation(many, strlen(many), &c), ERR_UNSUPPORTED);
}

TEST(config_load_reads_generation_config) {
    char dir[] = "/tmp/keel_cfg_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[512];
    const char *files[][2] = {
        {"config.json", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
                        "\"intermediate_size\":128,\"num_hidden_layers\":2,"
                        "\"num_attention_heads\":4,\"vocab_size\":300,\"rms_norm_eps\":1e-5,"
                        "\"max_position_embeddings\":256,\"eos_token_id\":2,\"bos_token_id\":1}"},
        {"generation_config.json", "{\"eos_token_id\":[2,5]}"},
    };
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i][0]);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        fputs(files[i][1], f);
        fclose(f);
    }
    struct model_config c;
    CHECK_OK(model_config_load(dir, &c));
    CHECK_EQ(c.arch, MODEL_ARCH_LLAMA);
    CHECK_EQ(c.n_kv_heads, 4); // defaults to the number of heads
    CHECK_EQ(c.head_dim, 16);
    CHECK_NEAR(c.rope_theta, 10000.0, 1e-3); // default
    CHECK(!c.qkv_bias);
    CHECK(!c.qk_norm);
    CHECK(!c.tie_word_embeddings);
    CHECK_EQ(c.bos_id, 1);
    CHECK_EQ(c.n_eos, 2);
    CHECK_EQ(c.eos_ids[1], 5);

    // A broken generation_config.json is an error naming the file, not silently ignored.
    FILE *f = fopen(path, "w");
    fputs("{\"eos_token_id\": true}", f);
    fclose(f);
    CHECK_EQ(model_config_load(dir, &c), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "generation_config.json") != NULL, "msg: %s", err_msg());

    unlink(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    CHECK_EQ(model_config_load(dir, &c), ERR_NOT_FOUND);
    rmdir(dir);
}

// ---- refusals

// A small valid Qwen2 config, as a format string with one %s where extra fields go (they come
// after the defaults, and cJSON takes the first of duplicate keys, so overrides replace a key
// by removing it from the base: see the tests).
#define BASE_FIELDS                                                                             \
    "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"                     \
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":300,"                   \
    "\"rms_norm_eps\":1e-6,\"max_position_embeddings\":128"

static int parse_with(const char *arch, const char *base, const char *extra) {
    char json[2048];
    snprintf(json, sizeof json, "{\"architectures\":[\"%s\"],%s%s%s}", arch, base,
             extra[0] ? "," : "", extra);
    struct model_config c;
    return model_config_parse(json, strlen(json), &c);
}

static void expect(int want, const char *needle, const char *arch, const char *base,
                   const char *extra) {
    err_clear();
    int rc = parse_with(arch, base, extra);
    CHECK_MSG(rc == want, "{%s %s}: rc %s, want %s (%s)", base, extra, err_name(rc),
              err_name(want), err_msg());
    CHECK_MSG(strstr(err_msg(), needle) != NULL, "{%s}: message \"%s\" lacks \"%s\"", extra,
              err_msg(), needle);
}

TEST(config_base_is_valid) {
    CHECK_OK(parse_with("Qwen2ForCausalLM", BASE_FIELDS, ""));
    CHECK_OK(parse_with("Qwen2ForCausalLM", BASE_FIELDS,
                        "\"sliding_window\":4096,\"use_sliding_window\":false,"
                        "\"rope_scaling\":null,\"hidden_act\":\"silu\""));
    CHECK_OK(parse_with("Qwen3ForCausalLM", BASE_FIELDS, "\"rope_scaling\":{\"rope_type\":\"default\"}"));
    CHECK_OK(parse_with("LlamaForCausalLM", BASE_FIELDS, "\"rope_scaling\":{\"type\":\"default\"}"));
}

TEST(config_attention_bias_per_arch) {
    struct model_config c;
    const char *j3 = "{\"architectures\":[\"Qwen3ForCausalLM\"]," BASE_FIELDS ",\"attention_bias\":true}";
    CHECK_OK(model_config_parse(j3, strlen(j3), &c));
    CHECK(c.qkv_bias);
    CHECK(c.qk_norm);
    const char *jl = "{\"architectures\":[\"LlamaForCausalLM\"]," BASE_FIELDS ",\"attention_bias\":true}";
    CHECK_OK(model_config_parse(jl, strlen(jl), &c));
    CHECK(c.qkv_bias);
    CHECK(!c.qk_norm);
    // Qwen2 has q/k/v biases whatever attention_bias says.
    const char *j2 = "{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE_FIELDS ",\"attention_bias\":false}";
    CHECK_OK(model_config_parse(j2, strlen(j2), &c));
    CHECK(c.qkv_bias);
}

TEST(config_refuses_unsupported_features) {
    const char *q2 = "Qwen2ForCausalLM";
    expect(ERR_UNSUPPORTED, "rope_scaling", q2, BASE_FIELDS,
           "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0}");
    expect(ERR_UNSUPPORTED, "rope_scaling", "LlamaForCausalLM", BASE_FIELDS,
           "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}");
    expect(ERR_UNSUPPORTED, "rope_scaling", q2, BASE_FIELDS, "\"rope_scaling\":{\"factor\":2.0}");
    expect(ERR_UNSUPPORTED, "use_sliding_window", q2, BASE_FIELDS, "\"use_sliding_window\":true");
    expect(ERR_UNSUPPORTED, "hidden_act", q2, BASE_FIELDS, "\"hidden_act\":\"gelu\"");
    expect(ERR_UNSUPPORTED, "architectures", "MistralForCausalLM", BASE_FIELDS, "");
    expect(ERR_UNSUPPORTED, "quantization_config", q2, BASE_FIELDS,
           "\"quantization_config\":{\"quant_method\":\"awq\"}");
    expect(ERR_UNSUPPORTED, "mlp_bias", "LlamaForCausalLM", BASE_FIELDS, "\"mlp_bias\":true");
}

TEST(config_refuses_missing_and_bad_sizes) {
    const char *q2 = "Qwen2ForCausalLM";
    const char *common = "\"rms_norm_eps\":1e-6,\"max_position_embeddings\":128,\"vocab_size\":300";
    char base[512];
    snprintf(base, sizeof base, "\"intermediate_size\":128,\"num_hidden_layers\":2,"
                                "\"num_attention_heads\":4,%s", common);
    expect(ERR_UNSUPPORTED, "hidden_size", q2, base, "");
    snprintf(base, sizeof base, "\"hidden_size\":64,\"num_hidden_layers\":2,"
                                "\"num_attention_heads\":4,%s", common);
    expect(ERR_UNSUPPORTED, "intermediate_size", q2, base, "");
    snprintf(base, sizeof base, "\"hidden_size\":64,\"intermediate_size\":128,"
                                "\"num_attention_heads\":4,%s", common);
    expect(ERR_UNSUPPORTED, "num_hidden_layers", q2, base, "");
    snprintf(base, sizeof base, "\"hidden_size\":64,\"intermediate_size\":128,"
                                "\"num_hidden_layers\":2,%s", common);
    expect(ERR_UNSUPPORTED, "num_attention_heads", q2, base, "");
    const char *sizes = "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                        "\"num_attention_heads\":4";
    snprintf(base, sizeof base, "%s,\"rms_norm_eps\":1e-6,\"max_position_embeddings\":128", sizes);
    expect(ERR_UNSUPPORTED, "vocab_size", q2, base, "");
    snprintf(base, sizeof base, "%s,\"vocab_size\":300,\"max_position_embeddings\":128", sizes);
    expect(ERR_UNSUPPORTED, "rms_norm_eps", q2, base, "");
    snprintf(base, sizeof base, "%s,\"vocab_size\":300,\"rms_norm_eps\":1e-6", sizes);
    expect(ERR_UNSUPPORTED, "max_position_embeddings", q2, base, "");

    // Non-positive sizes and dims that do not divide.
    snprintf(base, sizeof base, "\"intermediate_size\":128,\"num_hidden_layers\":2,"
                                "\"num_attention_heads\":4,%s", common);
    expect(ERR_UNSUPPORTED, "hidden_size", q2, base, "\"hidden_size\":0");
    expect(ERR_UNSUPPORTED, "hidden_size", q2, base, "\"hidden_size\":-64");
    expect(ERR_UNSUPPORTED, "hidden_size", q2, base, "\"hidden_size\":66"); // 66 % 4 != 0
    snprintf(base, sizeof base, "%s,%s", sizes, common);
    expect(ERR_UNSUPPORTED, "num_key_value_heads", q2, base, "\"num_key_value_heads\":3");
    expect(ERR_UNSUPPORTED, "num_key_value_heads", q2, base, "\"num_key_value_heads\":0");
    expect(ERR_UNSUPPORTED, "head_dim", q2, base, "\"head_dim\":15");
    expect(ERR_UNSUPPORTED, "rope_theta", q2, base, "\"rope_theta\":0");
    expect(ERR_FORMAT, "eos_token_id", q2, base, "\"eos_token_id\":300"); // not below vocab_size
}

TEST(config_wrong_types_are_format_errors) {
    const char *q2 = "Qwen2ForCausalLM";
    const char *sizes = "\"intermediate_size\":128,\"num_hidden_layers\":2,"
                        "\"num_attention_heads\":4,\"vocab_size\":300,\"rms_norm_eps\":1e-6,"
                        "\"max_position_embeddings\":128";
    expect(ERR_FORMAT, "hidden_size", q2, sizes, "\"hidden_size\":\"64\"");
    expect(ERR_FORMAT, "hidden_size", q2, sizes, "\"hidden_size\":64.5");
    expect(ERR_FORMAT, "hidden_size", q2, sizes, "\"hidden_size\":true");
    expect(ERR_FORMAT, "hidden_size", q2, sizes, "\"hidden_size\":1e12");
    char base[512];
    snprintf(base, sizeof base, "\"hidden_size\":64,%s", sizes);
    expect(ERR_FORMAT, "tie_word_embeddings", q2, base, "\"tie_word_embeddings\":1");
    expect(ERR_FORMAT, "use_sliding_window", q2, base, "\"use_sliding_window\":\"no\"");
    expect(ERR_FORMAT, "hidden_act", q2, base, "\"hidden_act\":3");
    expect(ERR_FORMAT, "rope_theta", q2, base, "\"rope_theta\":\"1e6\"");
    expect(ERR_FORMAT, "rope_scaling", q2, base, "\"rope_scaling\":\"yarn\"");
    expect(ERR_FORMAT, "eos_token_id", q2, base, "\"eos_token_id\":{\"id\":2}");
    expect(ERR_FORMAT, "attention_bias", q2, base, "\"attention_bias\":\"false\"");

    struct model_config c;
    const char *not_list = "{\"architectures\":\"Qwen2ForCausalLM\"," BASE_FIELDS "}";
    CHECK_EQ(model_config_parse(not_list, strlen(not_list), &c), ERR_FORMAT);
    CHECK(strstr(err_msg(), "architectures") != NULL);
    const char *bad_json = "{\"architectures\":[\"Qwen2ForCausalLM\"],";
    CHECK_EQ(model_config_parse(bad_json, strlen(bad_json), &c), ERR_FORMAT);
    CHECK_MSG(strstr(err_msg(), "invalid JSON") != NULL, "msg: %s", err_msg());
    CHECK_EQ(model_config_parse("[]", 2, &c), ERR_FORMAT);
    CHECK_EQ(model_config_parse("", 0, &c), ERR_FORMAT);
    // Not NUL-terminated: only len bytes are read.
    char buf[] = "{\"architectures\":[\"Qwen2ForCausalLM\"]," BASE_FIELDS "}garbage";
    CHECK_OK(model_config_parse(buf, strlen(buf) - strlen("garbage"), &c));
    CHECK_EQ(c.dim, 64);
}

TEST(config_load_format_names) {
    enum model_load_format f;
    CHECK_OK(model_parse_load_format("auto", &f));
    CHECK_EQ(f, MODEL_LOAD_SAFETENSORS);
    CHECK_OK(model_parse_load_format("safetensors", &f));
    CHECK_EQ(f, MODEL_LOAD_SAFETENSORS);
    CHECK_OK(model_parse_load_format("dummy", &f));
    CHECK_EQ(f, MODEL_LOAD_DUMMY);
    CHECK_EQ(model_parse_load_format("pt", &f), ERR_INVAL);
    CHECK(strstr(err_msg(), "pt") != NULL);
    CHECK_EQ(model_parse_load_format(NULL, &f), ERR_INVAL);
}

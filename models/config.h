// The model's shape and numerics, read from a Hugging Face model folder (config.json and, when
// present, generation_config.json). Hugging Face names are mapped to keel's here, once.
// Supported: Qwen2ForCausalLM (QKV bias), Qwen3ForCausalLM (q/k RMSNorm), LlamaForCausalLM.
// Anything the forward pass would silently get wrong (rope_scaling types not implemented, sliding
// window on, a hidden_act other than silu, ...) is refused with a message naming the field.
#ifndef KEEL_MODELS_CONFIG_H
#define KEEL_MODELS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

enum model_arch { MODEL_ARCH_QWEN2 = 0, MODEL_ARCH_QWEN3 = 1, MODEL_ARCH_LLAMA = 2 };

#define MODEL_MAX_EOS 8

struct model_config {
    enum model_arch arch;
    char arch_name[64];  // "Qwen2ForCausalLM", ...
    int dim;             // hidden_size
    int hidden_dim;      // intermediate_size
    int n_layers;        // num_hidden_layers
    int n_heads;         // num_attention_heads
    int n_kv_heads;      // num_key_value_heads (defaults to n_heads)
    int head_dim;        // head_dim when given, else dim / n_heads
    int vocab_size;      // vocab_size (rows of the embedding and the LM head)
    float rms_norm_eps;  // rms_norm_eps
    float rope_theta;    // rope_theta (default 10000)
    int max_position_embeddings;
    bool tie_word_embeddings; // the LM head is the embedding table
    bool qkv_bias;            // q/k/v projections have a bias (Qwen2: always; others: attention_bias)
    bool qk_norm;             // per-head RMSNorm of q and k before RoPE (Qwen3)
    int bos_id;               // -1 when none
    int n_eos;                // eos ids: generation_config.json's, else config.json's
    int eos_ids[MODEL_MAX_EOS];
    char torch_dtype[16];     // as written ("bfloat16", "float16", "float32"), informational
};

// Reads DIR/config.json and, if present, DIR/generation_config.json. Returns 0, ERR_NOT_FOUND
// (no config.json), ERR_FORMAT (bad JSON or a field of the wrong type) or ERR_UNSUPPORTED (an
// architecture or feature keel does not implement); err_msg() names the file and field.
int model_config_load(const char *dir, struct model_config *cfg);

// Parses the text of a config.json (len bytes, need not be NUL-terminated). Same codes as above.
int model_config_parse(const char *json, size_t len, struct model_config *cfg);

// Applies the text of a generation_config.json (eos/bos ids) over a parsed config.
int model_config_parse_generation(const char *json, size_t len, struct model_config *cfg);

// Derived sizes.
static inline int model_config_q_dim(const struct model_config *c) { return c->n_heads * c->head_dim; }
static inline int model_config_kv_dim(const struct model_config *c) { return c->n_kv_heads * c->head_dim; }
static inline int model_config_qkv_dim(const struct model_config *c) {
    return (c->n_heads + 2 * c->n_kv_heads) * c->head_dim;
}

#endif

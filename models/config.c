// config.json and generation_config.json: the one place where Hugging Face names become keel's.
//
// The loader is strict on purpose. A field of the wrong JSON type is a malformed file
// (ERR_FORMAT); a well-formed file that asks for something the forward pass does not implement
// (rope scaling, sliding-window attention, another activation, an unknown architecture, shapes
// that do not divide) is refused with ERR_UNSUPPORTED, because running it anyway would produce
// plausible-looking but wrong text. Every message names the field.
#include "models/config.h"

#include "common/err.h"
#include "common/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- typed field access

// A key that is absent or JSON null counts as "not given", as transformers treats it.
static const cJSON *cfg__get(const cJSON *root, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

// Reads an integral JSON number into *out. Returns 1 when present, 0 when absent, or ERR_FORMAT.
static int cfg__int(const cJSON *root, const char *key, int *out) {
    const cJSON *v = cfg__get(root, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v))
        return err_set(ERR_FORMAT, "config: \"%s\" must be an integer", key);
    double d = v->valuedouble;
    if (!(d == floor(d)) || d < (double)INT_MIN || d > (double)INT_MAX)
        return err_set(ERR_FORMAT, "config: \"%s\" must be an integer, got %g", key, d);
    *out = (int)d;
    return 1;
}

static int cfg__float(const cJSON *root, const char *key, float *out) {
    const cJSON *v = cfg__get(root, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return err_set(ERR_FORMAT, "config: \"%s\" must be a number", key);
    *out = (float)v->valuedouble;
    return 1;
}

static int cfg__bool(const cJSON *root, const char *key, bool *out) {
    const cJSON *v = cfg__get(root, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return err_set(ERR_FORMAT, "config: \"%s\" must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 1;
}

static int cfg__string(const cJSON *root, const char *key, const char **out) {
    const cJSON *v = cfg__get(root, key);
    if (!v) return 0;
    if (!cJSON_IsString(v)) return err_set(ERR_FORMAT, "config: \"%s\" must be a string", key);
    *out = v->valuestring;
    return 1;
}

// An integer that the forward pass cannot do without.
static int cfg__required_int(const cJSON *root, const char *key, int *out) {
    int rc = cfg__int(root, key, out);
    if (rc < 0) return rc;
    if (rc == 0) return err_set(ERR_UNSUPPORTED, "config: required field \"%s\" is missing", key);
    if (*out <= 0)
        return err_set(ERR_UNSUPPORTED, "config: \"%s\" must be positive, got %d", key, *out);
    return 0;
}

// eos_token_id is an integer or a list of integers (generation_config.json usually lists two:
// <|im_end|> and <|endoftext|>). Returns 1 when present, 0 when absent, or an error code.
static int cfg__token_ids(const cJSON *root, const char *file, const char *key, int *ids, int *n) {
    const cJSON *v = cfg__get(root, key);
    if (!v) return 0;
    const cJSON *items[MODEL_MAX_EOS];
    int count = 0;
    if (cJSON_IsArray(v)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v) {
            if (count == MODEL_MAX_EOS)
                return err_set(ERR_UNSUPPORTED, "%s: \"%s\" lists more than %d ids", file, key,
                               MODEL_MAX_EOS);
            items[count++] = it;
        }
    } else {
        items[count++] = v;
    }
    for (int i = 0; i < count; i++) {
        const cJSON *it = items[i];
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            it->valuedouble < 0 || it->valuedouble > (double)INT_MAX)
            return err_set(ERR_FORMAT, "%s: \"%s\" must be a token id or a list of token ids",
                           file, key);
        ids[i] = (int)it->valuedouble;
    }
    *n = count;
    return 1;
}

// Runs one accessor and returns from the caller on error.
#define CFG_TRY(call)                                                                           \
    do {                                                                                        \
        int cfg__rc = (call);                                                                   \
        if (cfg__rc < 0) return cfg__rc;                                                        \
    } while (0)

// ---- architecture and unsupported features

static int cfg__arch(const cJSON *root, struct model_config *cfg) {
    const cJSON *a = cfg__get(root, "architectures");
    if (!a) return err_set(ERR_UNSUPPORTED, "config: required field \"architectures\" is missing");
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1 || !cJSON_IsString(cJSON_GetArrayItem(a, 0)))
        return err_set(ERR_FORMAT, "config: \"architectures\" must be a non-empty list of strings");
    const char *name = cJSON_GetArrayItem(a, 0)->valuestring;
    if (strcmp(name, "Qwen2ForCausalLM") == 0) {
        cfg->arch = MODEL_ARCH_QWEN2;
    } else if (strcmp(name, "Qwen3ForCausalLM") == 0) {
        cfg->arch = MODEL_ARCH_QWEN3;
    } else if (strcmp(name, "LlamaForCausalLM") == 0) {
        cfg->arch = MODEL_ARCH_LLAMA;
    } else {
        return err_set(ERR_UNSUPPORTED,
                       "config: \"architectures\" is \"%s\"; keel supports Qwen2ForCausalLM, "
                       "Qwen3ForCausalLM and LlamaForCausalLM",
                       name);
    }
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", name);
    return 0;
}

// rope_scaling: only null or {"type"/"rope_type": "default"} (plain RoPE) is implemented; YaRN,
// linear, dynamic NTK and llama3 scaling would change the frequencies silently.
static int cfg__rope_scaling(const cJSON *root) {
    const cJSON *rs = cfg__get(root, "rope_scaling");
    if (!rs) return 0;
    if (!cJSON_IsObject(rs))
        return err_set(ERR_FORMAT, "config: \"rope_scaling\" must be null or an object");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t || cJSON_IsNull(t)) t = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (t && !cJSON_IsNull(t) && !cJSON_IsString(t))
        return err_set(ERR_FORMAT, "config: \"rope_scaling.type\" must be a string");
    const char *type = (t && cJSON_IsString(t)) ? t->valuestring : "(none)";
    if (strcmp(type, "default") != 0)
        return err_set(ERR_UNSUPPORTED,
                       "config: \"rope_scaling\" of type \"%s\" is not supported (only null or "
                       "\"default\")",
                       type);
    return 0;
}

static int cfg__features(const cJSON *root, struct model_config *cfg) {
    CFG_TRY(cfg__rope_scaling(root));

    // Qwen2 configs carry sliding_window (and max_window_layers) even though it is switched off;
    // only use_sliding_window turns it on.
    bool swa = false;
    CFG_TRY(cfg__bool(root, "use_sliding_window", &swa));
    if (swa)
        return err_set(ERR_UNSUPPORTED,
                       "config: \"use_sliding_window\" is true; sliding-window attention is not "
                       "supported");

    const char *act = "silu";
    CFG_TRY(cfg__string(root, "hidden_act", &act));
    if (strcmp(act, "silu") != 0)
        return err_set(ERR_UNSUPPORTED, "config: \"hidden_act\" is \"%s\"; only \"silu\" is supported",
                       act);

    bool mlp_bias = false;
    CFG_TRY(cfg__bool(root, "mlp_bias", &mlp_bias));
    if (mlp_bias)
        return err_set(ERR_UNSUPPORTED, "config: \"mlp_bias\" is true; MLP biases are not supported");

    if (cfg__get(root, "quantization_config"))
        return err_set(ERR_UNSUPPORTED,
                       "config: \"quantization_config\" is set; keel loads bf16/f16/f32 weights only");

    bool attention_bias = false;
    CFG_TRY(cfg__bool(root, "attention_bias", &attention_bias));
    cfg->qkv_bias = cfg->arch == MODEL_ARCH_QWEN2 ? true : attention_bias;
    cfg->qk_norm = cfg->arch == MODEL_ARCH_QWEN3;
    return 0;
}

// ---- shapes

static int cfg__shapes(const cJSON *root, struct model_config *cfg) {
    CFG_TRY(cfg__required_int(root, "hidden_size", &cfg->dim));
    CFG_TRY(cfg__required_int(root, "intermediate_size", &cfg->hidden_dim));
    CFG_TRY(cfg__required_int(root, "num_hidden_layers", &cfg->n_layers));
    CFG_TRY(cfg__required_int(root, "num_attention_heads", &cfg->n_heads));
    CFG_TRY(cfg__required_int(root, "vocab_size", &cfg->vocab_size));
    CFG_TRY(cfg__required_int(root, "max_position_embeddings", &cfg->max_position_embeddings));

    int rc = cfg__int(root, "num_key_value_heads", &cfg->n_kv_heads);
    if (rc < 0) return rc;
    if (rc == 0) cfg->n_kv_heads = cfg->n_heads;
    if (cfg->n_kv_heads <= 0)
        return err_set(ERR_UNSUPPORTED, "config: \"num_key_value_heads\" must be positive, got %d",
                       cfg->n_kv_heads);
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return err_set(ERR_UNSUPPORTED,
                       "config: \"num_attention_heads\" (%d) is not a multiple of "
                       "\"num_key_value_heads\" (%d)",
                       cfg->n_heads, cfg->n_kv_heads);

    rc = cfg__int(root, "head_dim", &cfg->head_dim);
    if (rc < 0) return rc;
    if (rc == 0) {
        if (cfg->dim % cfg->n_heads != 0)
            return err_set(ERR_UNSUPPORTED,
                           "config: \"hidden_size\" (%d) is not a multiple of "
                           "\"num_attention_heads\" (%d) and no \"head_dim\" is given",
                           cfg->dim, cfg->n_heads);
        cfg->head_dim = cfg->dim / cfg->n_heads;
    }
    if (cfg->head_dim <= 0 || cfg->head_dim % 2 != 0)
        return err_set(ERR_UNSUPPORTED, "config: \"head_dim\" must be positive and even (RoPE), got %d",
                       cfg->head_dim);

    // The biggest tensors (embedding, LM head, fused QKV and gate/up) must be addressable with
    // 64-bit element counts; the int fields themselves must not overflow when multiplied by 2.
    if ((int64_t)(cfg->n_heads + 2 * (int64_t)cfg->n_kv_heads) * cfg->head_dim > INT_MAX ||
        (int64_t)2 * cfg->hidden_dim > INT_MAX)
        return err_set(ERR_UNSUPPORTED, "config: projection sizes exceed 2^31 rows");

    if (cfg__float(root, "rms_norm_eps", &cfg->rms_norm_eps) < 0) return err_code();
    if (!cfg__get(root, "rms_norm_eps"))
        return err_set(ERR_UNSUPPORTED, "config: required field \"rms_norm_eps\" is missing");
    if (!(cfg->rms_norm_eps > 0) || !isfinite(cfg->rms_norm_eps))
        return err_set(ERR_UNSUPPORTED, "config: \"rms_norm_eps\" must be positive, got %g",
                       (double)cfg->rms_norm_eps);

    cfg->rope_theta = 10000.0f;
    CFG_TRY(cfg__float(root, "rope_theta", &cfg->rope_theta));
    if (!(cfg->rope_theta > 0) || !isfinite(cfg->rope_theta))
        return err_set(ERR_UNSUPPORTED, "config: \"rope_theta\" must be positive, got %g",
                       (double)cfg->rope_theta);
    return 0;
}

// ---- token ids and the rest

static int cfg__check_ids(const struct model_config *cfg, const char *file) {
    if (cfg->bos_id >= cfg->vocab_size)
        return err_set(ERR_FORMAT, "%s: \"bos_token_id\" %d is not below vocab_size %d", file,
                       cfg->bos_id, cfg->vocab_size);
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] >= cfg->vocab_size)
            return err_set(ERR_FORMAT, "%s: \"eos_token_id\" %d is not below vocab_size %d", file,
                           cfg->eos_ids[i], cfg->vocab_size);
    return 0;
}

static int cfg__ids(const cJSON *root, const char *file, struct model_config *cfg) {
    int bos[MODEL_MAX_EOS], n_bos = 0;
    int rc = cfg__token_ids(root, file, "bos_token_id", bos, &n_bos);
    if (rc < 0) return rc;
    if (rc == 1) {
        if (n_bos != 1 || cJSON_IsArray(cfg__get(root, "bos_token_id")))
            return err_set(ERR_FORMAT, "%s: \"bos_token_id\" must be one token id", file);
        cfg->bos_id = bos[0];
    }
    int eos[MODEL_MAX_EOS], n_eos = 0;
    rc = cfg__token_ids(root, file, "eos_token_id", eos, &n_eos);
    if (rc < 0) return rc;
    if (rc == 1) {
        cfg->n_eos = n_eos;
        memcpy(cfg->eos_ids, eos, sizeof(int) * (size_t)n_eos);
    }
    return cfg__check_ids(cfg, file);
}

static cJSON *cfg__parse_json(const char *json, size_t len, const char *file) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = (at && at >= json && at <= json + len) ? (long)(at - json) : -1;
        err_set(ERR_FORMAT, "%s: invalid JSON near byte %ld", file, off);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        err_set(ERR_FORMAT, "%s: the top level must be a JSON object", file);
        return NULL;
    }
    return root;
}

int model_config_parse(const char *json, size_t len, struct model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = -1;
    cJSON *root = cfg__parse_json(json, len, "config.json");
    if (!root) return ERR_FORMAT;
    int rc = cfg__arch(root, cfg);
    if (rc == 0) rc = cfg__shapes(root, cfg);
    if (rc == 0) rc = cfg__features(root, cfg);
    if (rc == 0) rc = cfg__bool(root, "tie_word_embeddings", &cfg->tie_word_embeddings);
    if (rc >= 0) rc = cfg__ids(root, "config.json", cfg);
    if (rc == 0) {
        // Newer transformers write "dtype"; older ones "torch_dtype". Informational only.
        const char *dt = NULL;
        rc = cfg__string(root, "torch_dtype", &dt);
        if (rc == 0) rc = cfg__string(root, "dtype", &dt);
        if (rc >= 0) {
            snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt ? dt : "");
            rc = 0;
        }
    }
    cJSON_Delete(root);
    return rc;
}

int model_config_parse_generation(const char *json, size_t len, struct model_config *cfg) {
    cJSON *root = cfg__parse_json(json, len, "generation_config.json");
    if (!root) return ERR_FORMAT;
    // Parse into a copy so a bad file leaves the caller's config untouched.
    struct model_config tmp = *cfg;
    int rc = cfg__ids(root, "generation_config.json", &tmp);
    cJSON_Delete(root);
    if (rc < 0) return rc;
    *cfg = tmp;
    return 0;
}

// ---- files

// Reads a whole file into a malloc'd buffer. Returns 0, ERR_NOT_FOUND or ERR_IO.
static int cfg__read_file(const char *path, char **out, size_t *len) {
    return file_read_all(path, (size_t)64 << 20, out, len);
}

// Prefixes the current error message with the file's path.
static int cfg__with_path(int rc, const char *path) {
    char msg[768];
    snprintf(msg, sizeof msg, "%s", err_msg());
    return err_set(rc, "%s: %s", path, msg);
}

int model_config_load(const char *dir, struct model_config *cfg) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *buf;
    size_t len;
    int rc = cfg__read_file(path, &buf, &len);
    if (rc < 0) return rc;
    rc = model_config_parse(buf, len, cfg);
    free(buf);
    if (rc < 0) return cfg__with_path(rc, path);

    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    rc = cfg__read_file(path, &buf, &len);
    if (rc == ERR_NOT_FOUND) {
        err_clear();
        return 0;
    }
    if (rc < 0) return rc;
    rc = model_config_parse_generation(buf, len, cfg);
    free(buf);
    if (rc < 0) return cfg__with_path(rc, path);
    return 0;
}

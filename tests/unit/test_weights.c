// Weight loading: tiny checkpoints built here (single and sharded, bf16/f16/f32 mixed) load into
// a host arena with q/k/v and gate/up fused in the documented order; conversions round to
// nearest even; missing or mis-shaped tensors are refused by name; dummy weights are
// deterministic per seed, independent of the staging path, and in their documented ranges.
#include "common/err.h"
#include "kernels/bf16.h"
#include "memory/arena.h"
#include "models/config.h"
#include "models/model.h"
#include "tests/test.h"
#include "tests/unit/st_write.h"

#include <stdint.h>
#include <time.h>

// ---- the backend: the CPU reference ops, with copies and syncs counted

// The staging buffer of the arena under test, if any, and what the loader did with it.
static const uint8_t *g_staging;
static size_t g_staging_bytes;
static int g_copies, g_syncs, g_staged_since_sync;
static size_t g_max_copy;

static int counting_copy(struct kern_ctx *c, void *dst, const void *src, size_t bytes) {
    g_copies++;
    if (bytes > g_max_copy) g_max_copy = bytes;
    // The loader fills one staging half, syncs, then queues its copy: so at most one copy out
    // of staging may be queued between two syncs, else a half could be overwritten in flight.
    const uint8_t *s = src;
    if (g_staging && s >= g_staging && s < g_staging + g_staging_bytes && ++g_staged_since_sync > 1)
        return err_set(ERR_INTERNAL, "two copies out of staging without a sync between");
    return kern_cpu_ops.copy_to_backend(c, dst, src, bytes);
}

static int counting_sync(struct kern_ctx *c) {
    g_syncs++;
    g_staged_since_sync = 0;
    return kern_cpu_ops.sync(c);
}

static struct kern_ops g_ops;
static struct kern_ctx *g_ctx;

// The CPU ops with counting copy/sync, and a context; reset the counters.
static void backend(const struct kern_ops **ops, struct kern_ctx **ctx) {
    if (!g_ctx) CHECK_OK(kern_cpu_ctx_init(&g_ctx, 2));
    g_ops = kern_cpu_ops;
    g_ops.copy_to_backend = counting_copy;
    g_ops.sync = counting_sync;
    g_copies = g_syncs = g_staged_since_sync = 0;
    g_max_copy = 0;
    *ops = &g_ops;
    *ctx = g_ctx;
}

// A host arena, optionally with staging, filled with a nonzero pattern so that "not written"
// cannot pass as zeros.
static void arena_init(struct mem_arena *a, size_t bytes, size_t staging) {
    CHECK_OK(mem_arena_init(a, MEM_HOST, 0, bytes, staging));
    memset(a->base, 0xEE, bytes);
    g_staging = a->staging;
    g_staging_bytes = a->staging_bytes;
}

static void arena_done(struct mem_arena *a) { mem_arena_free(a); }

// ---- tiny configs and checkpoints

static void tiny_config(struct model_config *c, const char *arch, bool tied) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"architectures\":[\"%s\"],\"hidden_size\":16,\"intermediate_size\":24,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"head_dim\":4,\"vocab_size\":40,\"rms_norm_eps\":1e-6,"
             "\"max_position_embeddings\":64,\"tie_word_embeddings\":%s}",
             arch, tied ? "true" : "false");
    CHECK_OK(model_config_parse(json, strlen(json), c));
}

// The value of element i of the named source tensor: multiples of 1/16 in [-1.875, 1.875],
// exact in bf16, f16 and f32, different for every tensor.
static float src_value(const char *name, int64_t i) {
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    int v = (int)((h + (uint32_t)i * 7u) % 61u) - 30;
    return v == 0 ? 0.0625f : (float)v / 16.0f;
}

// Which dtype each source is stored in: rotates by name so every fusion mixes dtypes.
static const char *src_dtype(const char *name, int mode) {
    if (mode == 0) return "BF16";
    uint32_t h = 0;
    for (const char *p = name; *p; p++) h = h * 31u + (uint8_t)*p;
    static const char *const d[3] = {"BF16", "F16", "F32"};
    return d[h % 3];
}

static uint16_t f32_to_f16_exact(float f) {
    // Only for the fixture's values (multiples of 1/16 below 2): normal f16 numbers.
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) == 0) return (uint16_t)(u >> 16);
    uint32_t sign = (u >> 16) & 0x8000u, exp = ((u >> 23) & 0xffu) - 127u + 15u;
    return (uint16_t)(sign | (exp << 10) | ((u >> 13) & 0x3ffu));
}

// Adds one source tensor with its values in the chosen dtype.
static void add_source(struct stw *w, const char *name, int64_t rows, int64_t cols, int mode,
                       int64_t bad_rows) {
    if (bad_rows) rows = bad_rows;
    int64_t n = rows * cols;
    const char *dt = src_dtype(name, mode);
    size_t es = strcmp(dt, "F32") == 0 ? 4 : 2;
    uint8_t *buf = malloc((size_t)n * es);
    CHECK(buf != NULL);
    for (int64_t i = 0; i < n; i++) {
        float v = src_value(name, i);
        if (es == 4) memcpy(buf + i * 4, &v, 4);
        else {
            uint16_t h = strcmp(dt, "F16") == 0 ? f32_to_f16_exact(v) : f32_to_bf16(v);
            memcpy(buf + i * 2, &h, 2);
        }
    }
    int64_t shape[2] = {rows, cols};
    stw_add(w, name, dt, cols == 1 ? 1 : 2, shape, buf, (size_t)n * es);
    free(buf);
}

struct fixture_opts {
    int mode;               // 0: all bf16; 1: mixed bf16/f16/f32
    bool sharded;           // layers in a second shard, with an index
    const char *skip;       // a tensor to leave out
    const char *misshape;   // a tensor written with the wrong number of rows
    bool with_lm_head;      // write lm_head.weight even for a tied model
    const char *norm_dtype; // when set, model.norm.weight is norm_raw in this dtype
    const void *norm_raw;
    size_t norm_bytes;
};

static void write_model(const char *dir, const struct model_config *c,
                        const struct fixture_opts *o) {
    struct stw w[2];
    stw_init(&w[0]);
    stw_init(&w[1]);
    char name[96];
    int64_t dim = c->dim, q = model_config_q_dim(c), kv = model_config_kv_dim(c);
    char index[8192] = "{";
#define ADD(shard, R, C, ...)                                                                   \
    do {                                                                                        \
        snprintf(name, sizeof name, __VA_ARGS__);                                               \
        if (!o->skip || strcmp(o->skip, name) != 0) {                                           \
            bool bad = o->misshape && strcmp(o->misshape, name) == 0;                           \
            add_source(&w[o->sharded ? (shard) : 0], name, (R), (C), o->mode, bad ? (R) + 1 : 0); \
            snprintf(index + strlen(index), sizeof index - strlen(index), "%s\"%s\":\"%s\"",    \
                     strlen(index) > 1 ? "," : "", name,                                        \
                     (shard) ? "model-00002-of-00002.safetensors"                               \
                             : "model-00001-of-00002.safetensors");                             \
        }                                                                                       \
    } while (0)
    ADD(0, c->vocab_size, dim, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        int s = l % 2;
        ADD(s, dim, 1, "model.layers.%d.input_layernorm.weight", l);
        ADD(s, q, dim, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(s, kv, dim, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(s, kv, dim, "model.layers.%d.self_attn.v_proj.weight", l);
        if (c->qkv_bias) {
            ADD(s, q, 1, "model.layers.%d.self_attn.q_proj.bias", l);
            ADD(s, kv, 1, "model.layers.%d.self_attn.k_proj.bias", l);
            ADD(s, kv, 1, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        if (c->qk_norm) {
            ADD(s, c->head_dim, 1, "model.layers.%d.self_attn.q_norm.weight", l);
            ADD(s, c->head_dim, 1, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        ADD(s, dim, q, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(s, dim, 1, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(s, c->hidden_dim, dim, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(s, c->hidden_dim, dim, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(s, dim, c->hidden_dim, "model.layers.%d.mlp.down_proj.weight", l);
    }
    if (o->norm_raw)
        stw_add(&w[o->sharded ? 1 : 0], "model.norm.weight", o->norm_dtype, 1, &dim, o->norm_raw,
                o->norm_bytes);
    else
        ADD(1, dim, 1, "model.norm.weight");
    if (!c->tie_word_embeddings || o->with_lm_head) ADD(1, c->vocab_size, dim, "lm_head.weight");
#undef ADD
    char path[256];
    if (o->sharded) {
        snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
        stw_write(&w[0], path);
        snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
        stw_write(&w[1], path);
        char text[9000];
        snprintf(text, sizeof text, "{\"metadata\":{},\"weight_map\":%s}}", index);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        stw_write_file(path, text, strlen(text));
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        stw_write(&w[0], path);
    }
    stw_free(&w[0]);
    stw_free(&w[1]);
}

// Checks rows [row0, row0 + rows) of a loaded tensor against a source tensor's values.
static void check_rows(const bf16 *t, int64_t cols, int64_t row0, int64_t rows, const char *src) {
    for (int64_t i = 0; i < rows * cols; i++) {
        bf16 want = f32_to_bf16(src_value(src, i)), got = t[row0 * cols + i];
        CHECK_MSG(got == want, "%s element %lld (fused row %lld): got 0x%04x (%g), want 0x%04x (%g)",
                  src, (long long)i, (long long)(row0 + i / cols), got, bf16_to_f32(got), want,
                  bf16_to_f32(want));
    }
}

static void check_loaded(const struct model_config *c, const struct model_weights *w) {
    int64_t dim = c->dim, q = model_config_q_dim(c), kv = model_config_kv_dim(c);
    char n[96];
    check_rows(w->embed, dim, 0, c->vocab_size, "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        const struct model_layer *L = &w->layers[l];
#define SRC(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
        check_rows(L->attn_norm, 1, 0, dim, SRC("model.layers.%d.input_layernorm.weight", l));
        // wqkv: q rows, then k rows, then v rows.
        check_rows(L->wqkv, dim, 0, q, SRC("model.layers.%d.self_attn.q_proj.weight", l));
        check_rows(L->wqkv, dim, q, kv, SRC("model.layers.%d.self_attn.k_proj.weight", l));
        check_rows(L->wqkv, dim, q + kv, kv, SRC("model.layers.%d.self_attn.v_proj.weight", l));
        if (c->qkv_bias) {
            check_rows(L->bqkv, 1, 0, q, SRC("model.layers.%d.self_attn.q_proj.bias", l));
            check_rows(L->bqkv, 1, q, kv, SRC("model.layers.%d.self_attn.k_proj.bias", l));
            check_rows(L->bqkv, 1, q + kv, kv, SRC("model.layers.%d.self_attn.v_proj.bias", l));
        } else {
            CHECK(L->bqkv == NULL);
        }
        if (c->qk_norm) {
            check_rows(L->q_norm, 1, 0, c->head_dim, SRC("model.layers.%d.self_attn.q_norm.weight", l));
            check_rows(L->k_norm, 1, 0, c->head_dim, SRC("model.layers.%d.self_attn.k_norm.weight", l));
        } else {
            CHECK(L->q_norm == NULL && L->k_norm == NULL);
        }
        check_rows(L->wo, q, 0, dim, SRC("model.layers.%d.self_attn.o_proj.weight", l));
        check_rows(L->ffn_norm, 1, 0, dim, SRC("model.layers.%d.post_attention_layernorm.weight", l));
        // w_gate_up: gate rows, then up rows.
        check_rows(L->w_gate_up, dim, 0, c->hidden_dim, SRC("model.layers.%d.mlp.gate_proj.weight", l));
        check_rows(L->w_gate_up, dim, c->hidden_dim, c->hidden_dim,
                   SRC("model.layers.%d.mlp.up_proj.weight", l));
        check_rows(L->w_down, c->hidden_dim, 0, dim, SRC("model.layers.%d.mlp.down_proj.weight", l));
#undef SRC
    }
    check_rows(w->final_norm, 1, 0, dim, "model.norm.weight");
    if (c->tie_word_embeddings) CHECK(w->lm_head == w->embed);
    else check_rows(w->lm_head, dim, 0, c->vocab_size, "lm_head.weight");
}

// Loads a checkpoint in `dir` into a fresh host arena and checks every element.
static void load_and_check(const struct model_config *c, const char *dir, size_t staging) {
    struct mem_arena a;
    int64_t bytes = model_weights_bytes(c);
    arena_init(&a, (size_t)bytes + 4096, staging);
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    backend(&ops, &ctx);
    struct model_weights w;
    CHECK_OK(model_weights_load(&w, c, dir, MODEL_LOAD_SAFETENSORS, 0, ops, ctx, &a));
    CHECK_EQ(a.n_regions, 1);
    CHECK_STR(a.regions[0].name, "weights");
    CHECK_EQ(a.used, bytes); // the loader carves exactly what model_weights_bytes promises
    check_loaded(c, &w);
    if (staging) {
        CHECK_MSG(g_max_copy <= staging / 2, "a copy of %zu bytes from a %zu-byte staging buffer",
                  g_max_copy, staging);
        CHECK_MSG(g_syncs >= g_copies && g_copies > 3, "%d copies, %d syncs", g_copies, g_syncs);
    }
    model_weights_free(&w);
    model_weights_free(&w); // idempotent
    arena_done(&a);
}

// ---- loading real layouts

TEST(weights_qwen2_fused_layout_bf16) {
    struct model_config c;
    tiny_config(&c, "Qwen2ForCausalLM", false);
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    write_model(dir, &c, &(struct fixture_opts){.mode = 0});
    load_and_check(&c, dir, 0);
    stw_rmdir(dir);
}

TEST(weights_mixed_dtypes_sharded_and_staged) {
    struct model_config c;
    tiny_config(&c, "Qwen2ForCausalLM", false);
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    write_model(dir, &c, &(struct fixture_opts){.mode = 1, .sharded = true});
    load_and_check(&c, dir, 0);
    // Through a staging buffer far smaller than a tensor: many pieces, same bytes.
    load_and_check(&c, dir, 1024);
    load_and_check(&c, dir, 1 << 20);
    stw_rmdir(dir);
}

TEST(weights_qwen3_qk_norm_tied) {
    struct model_config c;
    tiny_config(&c, "Qwen3ForCausalLM", true);
    CHECK(c.qk_norm && !c.qkv_bias);
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    write_model(dir, &c, &(struct fixture_opts){.mode = 1});
    load_and_check(&c, dir, 0);
    // A tied checkpoint that still carries lm_head.weight loads too (the copy is ignored).
    stw_rmdir(dir);
    stw_tmpdir(dir, sizeof dir);
    write_model(dir, &c, &(struct fixture_opts){.mode = 0, .with_lm_head = true});
    load_and_check(&c, dir, 0);
    stw_rmdir(dir);
}

// ---- refusals

static void expect_refusal(const struct model_config *c, const struct fixture_opts *o,
                           int want, const char *needle) {
    char dir[64];
    stw_tmpdir(dir, sizeof dir);
    write_model(dir, c, o);
    struct mem_arena a;
    arena_init(&a, (size_t)model_weights_bytes(c), 0);
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    backend(&ops, &ctx);
    struct model_weights w;
    err_clear();
    int rc = model_weights_load(&w, c, dir, MODEL_LOAD_SAFETENSORS, 0, ops, ctx, &a);
    CHECK_MSG(rc == want, "rc %s, want %s (%s)", err_name(rc), err_name(want), err_msg());
    CHECK_MSG(strstr(err_msg(), needle) != NULL, "message \"%s\" lacks \"%s\"", err_msg(), needle);
    CHECK(w.layers == NULL);
    CHECK_EQ(g_copies, 0); // validation happens before a byte is copied
    CHECK_EQ(a.used, 0);   // and before the region is carved
    arena_done(&a);
    stw_rmdir(dir);
}

TEST(weights_refuse_missing_and_misshapen_tensors) {
    struct model_config c;
    tiny_config(&c, "Qwen2ForCausalLM", false);
    expect_refusal(&c, &(struct fixture_opts){.skip = "model.layers.1.self_attn.k_proj.weight"},
                   ERR_FORMAT, "\"model.layers.1.self_attn.k_proj.weight\" is missing");
    expect_refusal(&c, &(struct fixture_opts){.skip = "model.layers.0.self_attn.v_proj.bias"},
                   ERR_FORMAT, "v_proj.bias\" is missing");
    expect_refusal(&c, &(struct fixture_opts){.skip = "lm_head.weight"}, ERR_FORMAT,
                   "\"lm_head.weight\" is missing");
    expect_refusal(&c, &(struct fixture_opts){.misshape = "model.layers.0.mlp.up_proj.weight"},
                   ERR_FORMAT, "up_proj.weight\" has shape [25, 16], config.json implies [24, 16]");
    expect_refusal(&c, &(struct fixture_opts){.misshape = "model.norm.weight"}, ERR_FORMAT,
                   "\"model.norm.weight\" has shape [17], config.json implies [16]");
    struct model_config c3;
    tiny_config(&c3, "Qwen3ForCausalLM", true);
    expect_refusal(&c3, &(struct fixture_opts){.skip = "model.layers.1.self_attn.q_norm.weight"},
                   ERR_FORMAT, "q_norm.weight\" is missing");
}

TEST(weights_refuse_small_arena_and_missing_folder) {
    struct model_config c;
    tiny_config(&c, "Qwen2ForCausalLM", false);
    struct mem_arena a;
    arena_init(&a, (size_t)model_weights_bytes(&c) - 256, 0);
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    backend(&ops, &ctx);
    struct model_weights w;
    CHECK_EQ(model_weights_load(&w, &c, NULL, MODEL_LOAD_DUMMY, 1, ops, ctx, &a), ERR_NOSPACE);
    CHECK_MSG(strstr(err_msg(), "weights"), "%s", err_msg());
    CHECK(w.layers == NULL);
    CHECK_EQ(model_weights_load(&w, &c, "/nonexistent/model", MODEL_LOAD_SAFETENSORS, 1, ops, ctx,
                                &a),
             ERR_NOT_FOUND);
    arena_done(&a);
    // A device arena without staging cannot be filled (faked: a host arena marked as device).
    arena_init(&a, (size_t)model_weights_bytes(&c), 0);
    a.kind = MEM_DEVICE;
    CHECK_EQ(model_weights_load(&w, &c, NULL, MODEL_LOAD_DUMMY, 1, ops, ctx, &a), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "staging"), "%s", err_msg());
    a.kind = MEM_HOST;
    arena_done(&a);
}

// ---- conversions

TEST(weights_f16_f32_conversion_rounds_to_nearest_even) {
    // A tiny Llama whose final norm (16 values) carries the interesting numbers.
    struct model_config c;
    tiny_config(&c, "LlamaForCausalLM", true);
    CHECK_EQ(c.dim, 16);
    static const struct {
        uint32_t f32;
        uint16_t bf16;
    } f32_cases[16] = {
        {0x3f800000, 0x3f80}, // 1.0
        {0x3f808000, 0x3f80}, // 1 + 2^-8: halfway, rounds to even (down)
        {0x3f818000, 0x3f82}, // 1 + 3*2^-8: halfway, rounds to even (up)
        {0x3f808001, 0x3f81}, // just above halfway: up
        {0x3f807fff, 0x3f80}, // just below halfway: down
        {0xbf818000, 0xbf82}, // negative halfway: to even
        {0x7f7fffff, 0x7f80}, // FLT_MAX rounds to infinity
        {0x7f800000, 0x7f80}, // +inf
        {0xff800000, 0xff80}, // -inf
        {0x00000001, 0x0000}, // smallest subnormal rounds to zero
        {0x00018000, 0x0002}, // subnormal halfway: to even
        {0x80000000, 0x8000}, // -0
        {0x40490fdb, 0x4049}, // pi
        {0x3dcccccd, 0x3dcd}, // 0.1
        {0xc2f6e979, 0xc2f7}, // -123.456
        {0x7fc00000, 0x7fc0}, // NaN stays NaN
    };
    static const struct {
        uint16_t f16, bf16;
    } f16_cases[16] = {
        {0x3c00, 0x3f80}, // 1.0
        {0x3c02, 0x3f80}, // 1 + 2^-9: below half an ulp of bf16, down
        {0x3c04, 0x3f80}, // 1 + 2^-8: halfway, to even (down)
        {0x3c0c, 0x3f82}, // 1 + 3*2^-8: halfway, to even (up)
        {0x3c05, 0x3f81}, // above halfway: up
        {0x7bff, 0x4780}, // 65504 rounds up to 65536
        {0x0001, 0x3380}, // smallest f16 subnormal 2^-24: exact in bf16
        {0x03ff, 0x3880}, // largest f16 subnormal rounds up to 2^-14
        {0x8400, 0xb880}, // -2^-14
        {0x7c00, 0x7f80}, // +inf
        {0xfc00, 0xff80}, // -inf
        {0x8000, 0x8000}, // -0
        {0x4248, 0x4049}, // 3.140625
        {0xc000, 0xc000}, // -2
        {0x3555, 0x3eab}, // 0.333251953125 -> 0.333984375
        {0x7e00, 0x7fc0}, // NaN
    };
    char dir[64];
    for (int which = 0; which < 2; which++) {
        stw_tmpdir(dir, sizeof dir);
        uint8_t raw[64];
        for (int i = 0; i < 16; i++) {
            if (which == 0) memcpy(raw + 4 * i, &f32_cases[i].f32, 4);
            else memcpy(raw + 2 * i, &f16_cases[i].f16, 2);
        }
        write_model(dir, &c,
                    &(struct fixture_opts){.norm_dtype = which == 0 ? "F32" : "F16",
                                           .norm_raw = raw, .norm_bytes = which == 0 ? 64 : 32});
        struct mem_arena a;
        arena_init(&a, (size_t)model_weights_bytes(&c), 0);
        const struct kern_ops *ops;
        struct kern_ctx *ctx;
        backend(&ops, &ctx);
        struct model_weights mw;
        CHECK_OK(model_weights_load(&mw, &c, dir, MODEL_LOAD_SAFETENSORS, 0, ops, ctx, &a));
        for (int i = 0; i < 16; i++) {
            uint16_t want = which == 0 ? f32_cases[i].bf16 : f16_cases[i].bf16;
            CHECK_MSG(mw.final_norm[i] == want, "%s case %d: got 0x%04x, want 0x%04x",
                      which == 0 ? "f32" : "f16", i, mw.final_norm[i], want);
        }
        model_weights_free(&mw);
        arena_done(&a);
        stw_rmdir(dir);
    }
}

// ---- dummy weights

static uint8_t *dummy_load(const struct model_config *c, uint64_t seed, size_t staging,
                           struct model_weights *w, struct mem_arena *a) {
    arena_init(a, (size_t)model_weights_bytes(c), staging);
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    backend(&ops, &ctx);
    CHECK_OK(model_weights_load(w, c, NULL, MODEL_LOAD_DUMMY, seed, ops, ctx, a));
    return a->base;
}

TEST(weights_dummy_is_deterministic_and_in_range) {
    struct model_config c;
    tiny_config(&c, "Qwen2ForCausalLM", false);
    size_t bytes = (size_t)model_weights_bytes(&c);
    struct mem_arena a1, a2, a3, a4;
    struct model_weights w1, w2, w3, w4;
    uint8_t *b1 = dummy_load(&c, 42, 0, &w1, &a1);
    uint8_t *b2 = dummy_load(&c, 42, 0, &w2, &a2);
    dummy_load(&c, 43, 0, &w3, &a3);
    uint8_t *b4 = dummy_load(&c, 42, 1024, &w4, &a4); // staged in small pieces
    CHECK_MSG(memcmp(b1, b2, bytes) == 0, "same seed gave different bytes");
    CHECK_MSG(memcmp(b1, b4, bytes) == 0, "staging changed the dummy values");
    // A different seed changes (almost) every element of every tensor.
    int64_t n = c.vocab_size * (int64_t)c.dim, same = 0;
    for (int64_t i = 0; i < n; i++) same += w1.embed[i] == w3.embed[i];
    CHECK_MSG(same < n / 20, "seeds 42 and 43 agree on %lld of %lld embedding values",
              (long long)same, (long long)n);
    CHECK(memcmp(w1.layers[1].w_down, w3.layers[1].w_down, 16) != 0);

    // Ranges: embedding within +-1, matrices within +-1/sqrt(fan_in), norms 1 +- 0.1, biases small.
    double sum = 0, lo = 1e9, hi = -1e9;
    for (int64_t i = 0; i < n; i++) {
        float v = bf16_to_f32(w1.embed[i]);
        sum += v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    CHECK_MSG(lo >= -1.0 && hi <= 1.0 && lo < -0.9 && hi > 0.9, "embed range [%g, %g]", lo, hi);
    CHECK_NEAR(sum / n, 0.0, 0.05);
    float lim = 1.0f / sqrtf((float)c.hidden_dim);
    for (int64_t i = 0; i < (int64_t)c.dim * c.hidden_dim; i++) {
        float v = bf16_to_f32(w1.layers[0].w_down[i]);
        CHECK_MSG(fabsf(v) <= lim, "w_down[%lld] = %g beyond %g", (long long)i, v, lim);
    }
    int n_distinct = 0;
    for (int i = 0; i < c.dim; i++) {
        float v = bf16_to_f32(w1.layers[1].ffn_norm[i]);
        CHECK_MSG(v >= 0.895f && v < 1.1f, "ffn_norm[%d] = %g", i, v); // 1 +- 0.1, bf16
        n_distinct += i > 0 && w1.layers[1].ffn_norm[i] != w1.layers[1].ffn_norm[i - 1];
    }
    CHECK_MSG(n_distinct > c.dim / 2, "ffn_norm has only %d changes over %d values", n_distinct,
              c.dim);
    for (int i = 0; i < model_config_qkv_dim(&c); i++)
        CHECK_MSG(fabsf(bf16_to_f32(w1.layers[0].bqkv[i])) <= 0.0201f, "bqkv[%d] = %g", i,
                  bf16_to_f32(w1.layers[0].bqkv[i]));
    // No tensor is left as the arena's fill pattern.
    CHECK(w1.final_norm[c.dim - 1] != 0xEEEE && w1.lm_head[c.vocab_size * c.dim - 1] != 0xEEEE);
    model_weights_free(&w1), model_weights_free(&w2), model_weights_free(&w3), model_weights_free(&w4);
    arena_done(&a1), arena_done(&a2), arena_done(&a3), arena_done(&a4);
}

TEST_TIMEOUT(weights_dummy_is_fast, 120) {
    // Qwen2.5-0.5B's shapes: about 1 GB of bf16. A speed check means nothing under the
    // sanitizers (make asan), which slow every store several times over.
#if defined(__SANITIZE_ADDRESS__)
    TEST_SKIP("a speed check, skipped under AddressSanitizer");
#endif
    struct model_config c;
    CHECK_OK(model_config_load("tests/data/configs/Qwen2.5-0.5B-Instruct", &c));
    struct mem_arena a;
    arena_init(&a, (size_t)model_weights_bytes(&c), 0); // touches every page before timing
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    backend(&ops, &ctx);
    struct model_weights w;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(model_weights_load(&w, &c, NULL, MODEL_LOAD_DUMMY, 7, ops, ctx, &a));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    double gbs = (double)model_weights_bytes(&c) / s / 1e9;
    fprintf(stderr, "  dummy fill of %.2f GB: %.3f s, %.2f GB/s\n",
            model_weights_bytes(&c) / 1e9, s, gbs);
    // A loose floor: CI machines are shared; the number above is what to watch.
    CHECK_MSG(gbs > 0.1, "dummy fill at %.2f GB/s", gbs);
    CHECK(w.lm_head == w.embed);
    model_weights_free(&w);
    arena_done(&a);
}

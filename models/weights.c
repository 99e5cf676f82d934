// The weights region: its exact size and layout (shared with the memory plan), and filling it
// from safetensors checkpoints or with deterministic dummy values.
//
// Layout: one arena region named "weights", in which every tensor starts on a MEM_ARENA_ALIGN
// boundary, in this order: embed, then per layer attn_norm, wqkv, bqkv (if any), q_norm, k_norm
// (if any), wo, ffn_norm, w_gate_up, w_down; then final_norm and lm_head (unless tied).
// model_weights_bytes() and the loader walk the same list (wt__layout), so they cannot disagree.
#include "common/err.h"
#include "models/model.h"

#include <string.h>

// ---- layout

enum wt_kind { WT_MATRIX, WT_NORM, WT_BIAS, WT_EMBED };

// One tensor of the weights region, as keel stores it.
struct wt_tensor {
    int layer;         // -1 for embed, final_norm, lm_head
    const char *what;  // keel's name, for messages
    enum wt_kind kind;
    int64_t rows, cols; // cols == 1 for vectors
    bf16 **dst;        // where the loader stores the pointer
};

static int64_t wt__align(int64_t bytes) {
    return (bytes + MEM_ARENA_ALIGN - 1) / MEM_ARENA_ALIGN * MEM_ARENA_ALIGN;
}

// Calls fn for every tensor in layout order; stops at the first non-zero return. `layers` may
// be NULL when only sizes are needed (dst is then NULL).
static int wt__layout(const struct model_config *c, struct model_weights *w,
                      int (*fn)(const struct wt_tensor *t, void *arg), void *arg) {
    const int64_t dim = c->dim, qkv = model_config_qkv_dim(c), hd = c->head_dim;
    struct wt_tensor t;
#define WT__EMIT(L, WHAT, KIND, R, C, DST)                                                     \
    do {                                                                                        \
        t = (struct wt_tensor){(L), (WHAT), (KIND), (R), (C), (DST)};                           \
        int wt__rc = fn(&t, arg);                                                               \
        if (wt__rc) return wt__rc;                                                              \
    } while (0)
    WT__EMIT(-1, "embed", WT_EMBED, c->vocab_size, dim, w ? &w->embed : NULL);
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *ly = (w && w->layers) ? &w->layers[l] : NULL;
        WT__EMIT(l, "attn_norm", WT_NORM, dim, 1, ly ? &ly->attn_norm : NULL);
        WT__EMIT(l, "wqkv", WT_MATRIX, qkv, dim, ly ? &ly->wqkv : NULL);
        if (c->qkv_bias) WT__EMIT(l, "bqkv", WT_BIAS, qkv, 1, ly ? &ly->bqkv : NULL);
        if (c->qk_norm) {
            WT__EMIT(l, "q_norm", WT_NORM, hd, 1, ly ? &ly->q_norm : NULL);
            WT__EMIT(l, "k_norm", WT_NORM, hd, 1, ly ? &ly->k_norm : NULL);
        }
        WT__EMIT(l, "wo", WT_MATRIX, dim, model_config_q_dim(c), ly ? &ly->wo : NULL);
        WT__EMIT(l, "ffn_norm", WT_NORM, dim, 1, ly ? &ly->ffn_norm : NULL);
        WT__EMIT(l, "w_gate_up", WT_MATRIX, 2 * (int64_t)c->hidden_dim, dim,
                 ly ? &ly->w_gate_up : NULL);
        WT__EMIT(l, "w_down", WT_MATRIX, dim, c->hidden_dim, ly ? &ly->w_down : NULL);
    }
    WT__EMIT(-1, "final_norm", WT_NORM, dim, 1, w ? &w->final_norm : NULL);
    if (!c->tie_word_embeddings)
        WT__EMIT(-1, "lm_head", WT_MATRIX, c->vocab_size, dim, w ? &w->lm_head : NULL);
#undef WT__EMIT
    return 0;
}

static int wt__sum_cb(const struct wt_tensor *t, void *arg) {
    *(int64_t *)arg += wt__align(t->rows * t->cols * (int64_t)sizeof(bf16));
    return 0;
}

int64_t model_weights_bytes(const struct model_config *cfg) {
    int64_t total = 0;
    wt__layout(cfg, NULL, wt__sum_cb, &total);
    return total;
}

void model_plan_shape(const struct model_config *cfg, struct mem_plan_shape *s) {
    memset(s, 0, sizeof *s);
    s->dim = cfg->dim;
    s->hidden_dim = cfg->hidden_dim;
    s->n_layers = cfg->n_layers;
    s->n_heads = cfg->n_heads;
    s->n_kv_heads = cfg->n_kv_heads;
    s->head_dim = cfg->head_dim;
    s->vocab_size = cfg->vocab_size;
    s->tie_word_embeddings = cfg->tie_word_embeddings;
    s->qkv_bias = cfg->qkv_bias;
    s->qk_norm = cfg->qk_norm;
    s->weights_bytes = model_weights_bytes(cfg);
}

int model_parse_load_format(const char *s, enum model_load_format *out) {
    if (s && (strcmp(s, "auto") == 0 || strcmp(s, "safetensors") == 0)) {
        *out = MODEL_LOAD_SAFETENSORS;
        return 0;
    }
    if (s && strcmp(s, "dummy") == 0) {
        *out = MODEL_LOAD_DUMMY;
        return 0;
    }
    return err_set(ERR_INVAL, "load format \"%s\" is not one of auto, safetensors, dummy",
                   s ? s : "(null)");
}

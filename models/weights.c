// The weights region: its exact size and layout (shared with the memory plan), and filling it
// from safetensors checkpoints or with deterministic dummy values.
//
// Layout: one arena region named "weights", in which every tensor starts on a MEM_ARENA_ALIGN
// boundary, in this order: embed, then per layer attn_norm, wqkv, bqkv (if any), q_norm, k_norm
// (if any), wo, ffn_norm, w_gate_up, w_down; then final_norm and lm_head (unless tied).
// model_weights_bytes() and the loader walk the same list (wt__layout), so they cannot disagree.
#include "common/err.h"
#include "common/log.h"
#include "models/model.h"
#include "models/safetensors.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// ---- layout

// How dummy values are drawn for a tensor (and whether it is a matrix or a vector).
enum wt_kind { WT_MATRIX, WT_NORM, WT_BIAS, WT_EMBED };

// How a tensor is split across the ranks of a tensor-parallel group (Megatron's scheme):
// replicated (norms), by rows of each source (column-parallel: q/k/v by heads, gate/up by
// hidden_dim), by columns (row-parallel: wo, down), or by vocabulary rows (embed, LM head; the
// vocabulary padded up to a multiple of tp_size with zero rows).
enum wt_split { WT_REPLICATED, WT_ROWS, WT_COLS, WT_VOCAB };

// Which shard this load builds: rank `rank` of `size` (1, 0 without tensor parallelism).
struct wt_shard {
    int size, rank;
};

// One tensor of the weights region, as keel stores it (this rank's shard of it).
struct wt_tensor {
    int layer;         // -1 for embed, final_norm, lm_head
    const char *what;  // keel's name (also selects the Hugging Face sources, see wt__sources)
    enum wt_kind kind;
    int64_t rows, cols; // this rank's shape; cols == 1 for vectors
    bf16 **dst;        // where the loader stores the pointer
    enum wt_split split;
    int64_t full_cols;  // the unsharded tensor's columns (dummy values' scale)
};

static int64_t wt__align(int64_t bytes) {
    return (bytes + MEM_ARENA_ALIGN - 1) / MEM_ARENA_ALIGN * MEM_ARENA_ALIGN;
}

// Calls fn for every tensor in layout order, with this rank's shapes; stops at the first
// non-zero return. `w` may be NULL when only sizes are needed (dst is then NULL). `c` is the
// full model's config. With tp.size > 1 the embedding shard has one extra zero row at the end
// (row vocab_shard): the forward pass maps token ids outside the rank's slice to it, so the
// unchanged embed op yields zeros for them and the all_reduce assembles the rows.
static int wt__layout(const struct model_config *c, struct wt_shard tp, struct model_weights *w,
                      int (*fn)(const struct wt_tensor *t, void *arg), void *arg) {
    const int64_t dim = c->dim, hd = c->head_dim, P = tp.size;
    const int64_t qkv = model_config_qkv_dim(c) / P, q = model_config_q_dim(c);
    const int64_t vocab_rows = P > 1 ? model_tp_vocab_shard(c, tp.size) : c->vocab_size;
    struct wt_tensor t;
#define WT__EMIT(L, WHAT, KIND, R, C, DST, SPLIT, FULL_C)                                      \
    do {                                                                                        \
        t = (struct wt_tensor){(L), (WHAT), (KIND), (R), (C), (DST), (SPLIT), (FULL_C)};        \
        int wt__rc = fn(&t, arg);                                                               \
        if (wt__rc) return wt__rc;                                                              \
    } while (0)
    WT__EMIT(-1, "embed", WT_EMBED, vocab_rows + (P > 1), dim, w ? &w->embed : NULL, WT_VOCAB,
             dim);
    for (int l = 0; l < c->n_layers; l++) {
        struct model_layer *ly = (w && w->layers) ? &w->layers[l] : NULL;
        WT__EMIT(l, "attn_norm", WT_NORM, dim, 1, ly ? &ly->attn_norm : NULL, WT_REPLICATED, 1);
        WT__EMIT(l, "wqkv", WT_MATRIX, qkv, dim, ly ? &ly->wqkv : NULL, WT_ROWS, dim);
        if (c->qkv_bias)
            WT__EMIT(l, "bqkv", WT_BIAS, qkv, 1, ly ? &ly->bqkv : NULL, WT_ROWS, 1);
        if (c->qk_norm) {
            WT__EMIT(l, "q_norm", WT_NORM, hd, 1, ly ? &ly->q_norm : NULL, WT_REPLICATED, 1);
            WT__EMIT(l, "k_norm", WT_NORM, hd, 1, ly ? &ly->k_norm : NULL, WT_REPLICATED, 1);
        }
        WT__EMIT(l, "wo", WT_MATRIX, dim, q / P, ly ? &ly->wo : NULL, WT_COLS, q);
        WT__EMIT(l, "ffn_norm", WT_NORM, dim, 1, ly ? &ly->ffn_norm : NULL, WT_REPLICATED, 1);
        WT__EMIT(l, "w_gate_up", WT_MATRIX, 2 * (int64_t)c->hidden_dim / P, dim,
                 ly ? &ly->w_gate_up : NULL, WT_ROWS, dim);
        WT__EMIT(l, "w_down", WT_MATRIX, dim, c->hidden_dim / P, ly ? &ly->w_down : NULL, WT_COLS,
                 c->hidden_dim);
    }
    WT__EMIT(-1, "final_norm", WT_NORM, dim, 1, w ? &w->final_norm : NULL, WT_REPLICATED, 1);
    if (!c->tie_word_embeddings)
        WT__EMIT(-1, "lm_head", WT_MATRIX, vocab_rows, dim, w ? &w->lm_head : NULL, WT_VOCAB, dim);
#undef WT__EMIT
    return 0;
}

static int wt__sum_cb(const struct wt_tensor *t, void *arg) {
    *(int64_t *)arg += wt__align(t->rows * t->cols * (int64_t)sizeof(bf16));
    return 0;
}

static int wt__sum_unpadded_cb(const struct wt_tensor *t, void *arg) {
    *(int64_t *)arg += t->rows * t->cols * (int64_t)sizeof(bf16);
    return 0;
}

int64_t model_weights_bytes(const struct model_config *cfg) {
    return model_weights_bytes_shard(cfg, 1, 0);
}

int64_t model_weights_bytes_shard(const struct model_config *cfg, int tp_size, int rank) {
    int64_t total = 0;
    wt__layout(cfg, (struct wt_shard){tp_size, rank}, NULL, wt__sum_cb, &total);
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

// ---- Hugging Face sources of each tensor

// A keel tensor is one Hugging Face tensor, or the row-wise concatenation of two or three
// (fusion): wqkv = [q_proj; k_proj; v_proj], w_gate_up = [gate_proj; up_proj]. Row-major storage
// makes fusion a matter of where each source's rows start.
struct wt_source {
    char name[96];
    int64_t rows, cols; // expected shape; cols == 1 means a 1-D tensor of `rows` elements
};

static int wt__sources(const struct model_config *c, const struct wt_tensor *t,
                       struct wt_source out[3]) {
    const int64_t dim = c->dim, q = model_config_q_dim(c), kv = model_config_kv_dim(c);
    char p[48];
    snprintf(p, sizeof p, "model.layers.%d.", t->layer);
    int n = 0;
#define WT__SRC(R, C, ...)                                                                      \
    do {                                                                                        \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                 \
        out[n].rows = (R);                                                                      \
        out[n].cols = (C);                                                                      \
        n++;                                                                                    \
    } while (0)
    const char *w = t->what;
    if (!strcmp(w, "embed")) WT__SRC(c->vocab_size, dim, "model.embed_tokens.weight");
    else if (!strcmp(w, "final_norm")) WT__SRC(dim, 1, "model.norm.weight");
    else if (!strcmp(w, "lm_head")) WT__SRC(c->vocab_size, dim, "lm_head.weight");
    else if (!strcmp(w, "attn_norm")) WT__SRC(dim, 1, "%sinput_layernorm.weight", p);
    else if (!strcmp(w, "ffn_norm")) WT__SRC(dim, 1, "%spost_attention_layernorm.weight", p);
    else if (!strcmp(w, "q_norm")) WT__SRC(c->head_dim, 1, "%sself_attn.q_norm.weight", p);
    else if (!strcmp(w, "k_norm")) WT__SRC(c->head_dim, 1, "%sself_attn.k_norm.weight", p);
    else if (!strcmp(w, "wo")) WT__SRC(dim, q, "%sself_attn.o_proj.weight", p);
    else if (!strcmp(w, "w_down")) WT__SRC(dim, c->hidden_dim, "%smlp.down_proj.weight", p);
    else if (!strcmp(w, "wqkv")) {
        WT__SRC(q, dim, "%sself_attn.q_proj.weight", p);
        WT__SRC(kv, dim, "%sself_attn.k_proj.weight", p);
        WT__SRC(kv, dim, "%sself_attn.v_proj.weight", p);
    } else if (!strcmp(w, "bqkv")) {
        WT__SRC(q, 1, "%sself_attn.q_proj.bias", p);
        WT__SRC(kv, 1, "%sself_attn.k_proj.bias", p);
        WT__SRC(kv, 1, "%sself_attn.v_proj.bias", p);
    } else if (!strcmp(w, "w_gate_up")) {
        WT__SRC(c->hidden_dim, dim, "%smlp.gate_proj.weight", p);
        WT__SRC(c->hidden_dim, dim, "%smlp.up_proj.weight", p);
    }
#undef WT__SRC
    return n;
}

// Checks that a checkpoint tensor exists and has the shape the config implies.
static int wt__check_source(const struct st_checkpoint *ck, const char *dir,
                            const struct wt_source *s) {
    const struct st_tensor *t = st_find(ck, s->name);
    if (!t) return err_set(ERR_FORMAT, "%s: tensor \"%s\" is missing from the checkpoint", dir, s->name);
    bool ok = s->cols == 1 ? (t->n_dims == 1 && t->shape[0] == s->rows)
                           : (t->n_dims == 2 && t->shape[0] == s->rows && t->shape[1] == s->cols);
    if (ok) return 0;
    char got[128] = "[";
    for (int i = 0; i < t->n_dims; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                 (long long)t->shape[i]);
    strncat(got, "]", sizeof got - strlen(got) - 1);
    if (s->cols == 1)
        return err_set(ERR_FORMAT, "%s: tensor \"%s\" has shape %s, config.json implies [%lld]",
                       dir, s->name, got, (long long)s->rows);
    return err_set(ERR_FORMAT, "%s: tensor \"%s\" has shape %s, config.json implies [%lld, %lld]",
                   dir, s->name, got, (long long)s->rows, (long long)s->cols);
}

// ---- producers: what goes into a stretch of a tensor

// Writes elements [begin, begin + n) of a source into out (host memory).
typedef void (*wt_produce_cb)(const void *arg, bf16 *out, int64_t begin, int64_t n);

static void wt__from_bf16(const void *arg, bf16 *out, int64_t begin, int64_t n) {
    memcpy(out, (const uint8_t *)arg + begin * 2, (size_t)n * 2);
}

static void wt__from_f16(const void *arg, bf16 *out, int64_t begin, int64_t n) {
    const uint8_t *src = (const uint8_t *)arg + begin * 2;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + i * 2, 2); // checkpoint offsets need not be aligned
        out[i] = f32_to_bf16(f16_to_f32(h));
    }
}

static void wt__from_f32(const void *arg, bf16 *out, int64_t begin, int64_t n) {
    const uint8_t *src = (const uint8_t *)arg + begin * 4;
    for (int64_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, src + i * 4, 4);
        out[i] = f32_to_bf16(f);
    }
}

// Dummy values: a counter-based generator (splitmix64's finalizer over a per-tensor key and the
// element's group of eight), so every element depends only on (seed, tensor, index): the same on
// any thread count and chunking, and different for another seed.
struct wt_dummy {
    uint64_t key;
    const bf16 *table; // [256]: the value for each 8-bit draw
};

static inline uint64_t wt__mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void wt__dummy(const void *arg, bf16 *out, int64_t begin, int64_t n) {
    const struct wt_dummy *d = arg;
    const bf16 *tab = d->table;
    int64_t i = begin, end = begin + n;
    // Each 64-bit draw gives eight 8-bit uniforms, for elements 8g .. 8g + 7, and a table lookup
    // turns each into its bf16 value. Eight bits are as fine as bf16's own mantissa, and this
    // measured about twice as fast as four 16-bit draws converted through float.
    for (; i < end && (i & 7); i++)
        out[i - begin] = tab[(wt__mix(d->key + (uint64_t)(i >> 3)) >> (8 * (i & 7))) & 0xff];
    for (; i + 8 <= end; i += 8) {
        uint64_t r = wt__mix(d->key + (uint64_t)(i >> 3));
        bf16 *o = out + (i - begin);
        for (int k = 0; k < 8; k++) o[k] = tab[(r >> (8 * k)) & 0xff];
    }
    for (; i < end; i++)
        out[i - begin] = tab[(wt__mix(d->key + (uint64_t)(i >> 3)) >> (8 * (i & 7))) & 0xff];
}

// Fills table[u] = center + scale * ((u + 0.5) / 128 - 1), truncated to bf16 (toward zero, so
// values stay inside center +- scale), for the tensor's kind.
static void wt__dummy_table(bf16 *table, const struct wt_tensor *t) {
    float center = 0.0f, scale = 1.0f;
    switch (t->kind) {
    case WT_EMBED: center = 0.0f, scale = 1.0f; break;
    case WT_NORM: center = 1.0f, scale = 0.1f; break;
    case WT_BIAS: center = 0.0f, scale = 0.02f; break;
    case WT_MATRIX: center = 0.0f, scale = 1.0f / sqrtf((float)t->full_cols); break;
    }
    for (uint32_t u = 0; u < 256; u++) {
        float v = center + scale * (((float)u + 0.5f) / 128.0f - 1.0f);
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        table[u] = (bf16)(bits >> 16);
    }
}

// A rank's piece of a source: `cols` columns starting at (row0, col0) of a row-major source of
// src_cols columns, read through the source's own producer. Element e of the piece is source
// element (row0 + e / cols) * src_cols + col0 + e % cols; each row is one contiguous run.
struct wt_window {
    wt_produce_cb fn;
    const void *arg;
    int64_t src_cols, row0, col0, cols;
};

static void wt__window(const void *arg, bf16 *out, int64_t begin, int64_t n) {
    const struct wt_window *w = arg;
    for (int64_t e = begin; e < begin + n;) {
        int64_t r = e / w->cols, c = e % w->cols;
        int64_t run = w->cols - c < begin + n - e ? w->cols - c : begin + n - e;
        w->fn(w->arg, out + (e - begin), (w->row0 + r) * w->src_cols + w->col0 + c, run);
        e += run;
    }
}

// The padding rows of a vocabulary shard (and the embedding's zero row).
static void wt__zero(const void *arg, bf16 *out, int64_t begin, int64_t n) {
    (void)arg, (void)begin;
    memset(out, 0, (size_t)n * sizeof(bf16));
}

// ---- the fill engine: producers -> (staging) -> backend memory, on a few threads

#define WT_MAX_THREADS 16
#define WT_HOST_CHUNK ((int64_t)32 << 20) // elements per step when writing host memory in place

struct wt_job {
    wt_produce_cb fn;
    const void *arg;
    bf16 *out;
    int64_t begin, n;
};

static void *wt__job_main(void *p) {
    struct wt_job *j = p;
    j->fn(j->arg, j->out, j->begin, j->n);
    return NULL;
}

// Runs fn over [begin, begin + n) split across threads; small ranges stay on this thread.
static void wt__par(int n_threads, wt_produce_cb fn, const void *arg, bf16 *out, int64_t begin,
                    int64_t n) {
    int64_t per = n / n_threads;
    if (n_threads <= 1 || per < (1 << 18)) {
        fn(arg, out, begin, n);
        return;
    }
    struct wt_job jobs[WT_MAX_THREADS];
    pthread_t th[WT_MAX_THREADS];
    bool started[WT_MAX_THREADS] = {false};
    for (int t = 0; t < n_threads; t++) {
        int64_t b = per * t, e = t == n_threads - 1 ? n : per * (t + 1);
        jobs[t] = (struct wt_job){fn, arg, out + b, begin + b, e - b};
        // Thread 0's share runs here; a thread that cannot start runs here too.
        if (t > 0) started[t] = pthread_create(&th[t], NULL, wt__job_main, &jobs[t]) == 0;
    }
    for (int t = 0; t < n_threads; t++)
        if (!started[t]) wt__job_main(&jobs[t]);
    for (int t = 1; t < n_threads; t++)
        if (started[t]) pthread_join(th[t], NULL);
}

struct wt_fill {
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    struct mem_arena *arena;
    int n_threads;
    // staging: two halves, filled alternately, so filling one overlaps the copy of the other
    uint8_t *half[2];
    size_t half_bytes;
    int cur;
    // progress
    int64_t total, done;
    double t0, last_draw;
    bool tty;
};

static double wt__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void wt__progress(struct wt_fill *f, int64_t bytes, bool final) {
    f->done += bytes;
    double now = wt__now(), dt = now - f->t0;
    double rate = dt > 0 ? (double)f->done / dt : 0;
    if (f->tty && (final || now - f->last_draw >= 0.1)) {
        f->last_draw = now;
        double eta = rate > 0 ? (double)(f->total - f->done) / rate : 0;
        fprintf(stderr, "\r\033[Kloading weights: %.2f / %.2f GB  %.2f GB/s  ETA %.0f s%s",
                f->done / 1e9, f->total / 1e9, rate / 1e9, eta, final ? "\n" : "");
        fflush(stderr);
    }
    if (final && !f->tty)
        log_info("loaded %.2f GB of weights in %.2f s (%.2f GB/s)", f->done / 1e9, dt, rate / 1e9);
}

// Fills n elements at dst (backend memory) from a producer's elements [src_begin, src_begin + n).
static int wt__put(struct wt_fill *f, bf16 *dst, int64_t n, wt_produce_cb fn, const void *arg,
                   int64_t src_begin) {
    int rc = 0;
    if (f->half_bytes) {
        int64_t step = (int64_t)(f->half_bytes / sizeof(bf16));
        for (int64_t b = 0; b < n && !rc; b += step) {
            int64_t m = n - b < step ? n - b : step;
            bf16 *buf = (bf16 *)f->half[f->cur];
            wt__par(f->n_threads, fn, arg, buf, src_begin + b, m);
            // The copy queued last used the other half; waiting for it here (after filling this
            // half) lets the fill overlap that copy.
            rc = f->ops->sync(f->ctx);
            if (!rc) rc = f->ops->copy_to_backend(f->ctx, dst + b, buf, (size_t)m * sizeof(bf16));
            f->cur ^= 1;
            wt__progress(f, m * (int64_t)sizeof(bf16), false);
        }
        return rc;
    }
    if (f->arena->kind != MEM_HOST)
        return err_set(ERR_INVAL, "loading weights into device memory needs the arena's staging "
                                  "buffer (staging_bytes is 0)");
    // Host backend: backend memory is host memory. bf16 goes through copy_to_backend straight
    // from the mapping; converted and dummy values are produced in place.
    for (int64_t b = 0; b < n && !rc; b += WT_HOST_CHUNK) {
        int64_t m = n - b < WT_HOST_CHUNK ? n - b : WT_HOST_CHUNK;
        if (fn == wt__from_bf16)
            rc = f->ops->copy_to_backend(f->ctx, dst + b, (const uint8_t *)arg + (src_begin + b) * 2,
                                         (size_t)m * sizeof(bf16));
        else
            wt__par(f->n_threads, fn, arg, dst + b, src_begin + b, m);
        wt__progress(f, m * (int64_t)sizeof(bf16), false);
    }
    return rc;
}

// ---- the loader

struct wt_load {
    const struct model_config *cfg; // the full model's
    struct wt_shard tp;
    struct model_weights *w;
    uint8_t *base;
    int64_t offset;
    int index;
    const char *dir;
    const struct st_checkpoint *ck; // NULL for dummy
    uint64_t seed;
    bf16 *table; // dummy: [256] values of the current tensor's distribution
    struct wt_fill *fill;
};

static int wt__assign_cb(const struct wt_tensor *t, void *arg) {
    struct wt_load *L = arg;
    *t->dst = (bf16 *)(L->base + L->offset);
    L->offset += wt__align(t->rows * t->cols * (int64_t)sizeof(bf16));
    return 0;
}

static int wt__check_cb(const struct wt_tensor *t, void *arg) {
    struct wt_load *L = arg;
    struct wt_source src[3];
    int n = wt__sources(L->cfg, t, src);
    for (int i = 0; i < n; i++) {
        int rc = wt__check_source(L->ck, L->dir, &src[i]);
        if (rc) return rc;
    }
    return 0;
}

// Fills this rank's shard of one tensor: for each source, the rows or columns of the rank's
// slice, then zero rows up to the shard's height. Dummy values are read from the full fused
// tensor (the TP=1 layout) at each element's global index, so every shard is a view of the same
// full tensor whatever tp_size is.
static int wt__fill_cb(const struct wt_tensor *t, void *arg) {
    struct wt_load *L = arg;
    int index = L->index++;
    struct wt_dummy d = {0};
    if (!L->ck) {
        // The key depends on the seed and the tensor's place in the layout only.
        d.key = wt__mix(wt__mix(L->seed) ^ wt__mix(0x6b65656cull + (uint64_t)index));
        d.table = L->table;
        wt__dummy_table(L->table, t);
    }
    const int64_t P = L->tp.size, rank = L->tp.rank;
    struct wt_source src[3];
    int n = wt__sources(L->cfg, t, src);
    int64_t row = 0, fused_row = 0; // rows written to the shard; source's first row in the fused tensor
    for (int i = 0; i < n; i++) {
        const int64_t R = src[i].rows, C = src[i].cols;
        int64_t row0 = 0, col0 = 0, rows = R, cols = C;
        switch (t->split) {
        case WT_REPLICATED: break;
        case WT_ROWS: rows = R / P, row0 = rank * rows; break;
        case WT_COLS: cols = C / P, col0 = rank * cols; break;
        case WT_VOCAB: {
            int64_t per = P > 1 ? model_tp_vocab_shard(L->cfg, (int)P) : R;
            row0 = rank * per;
            rows = R - row0 < per ? (R - row0 > 0 ? R - row0 : 0) : per;
            break;
        }
        }
        struct wt_window win = {.src_cols = C, .row0 = row0, .col0 = col0, .cols = cols};
        if (L->ck) {
            const struct st_tensor *st = st_find(L->ck, src[i].name);
            win.fn = st->dtype == ST_BF16 ? wt__from_bf16 : st->dtype == ST_F16 ? wt__from_f16
                                                                                : wt__from_f32;
            win.arg = st->data;
        } else {
            win.fn = wt__dummy, win.arg = &d, win.row0 += fused_row;
        }
        bf16 *dst = *t->dst + row * t->cols;
        int rc = rows == 0 ? 0
                 : cols == C ? wt__put(L->fill, dst, rows * C, win.fn, win.arg, win.row0 * C)
                             : wt__put(L->fill, dst, rows * cols, wt__window, &win, 0);
        if (rc) return rc;
        row += rows;
        fused_row += R;
    }
    if (row < t->rows) return wt__put(L->fill, *t->dst + row * t->cols, (t->rows - row) * t->cols,
                                      wt__zero, NULL, 0);
    return 0;
}

static int wt__threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > WT_MAX_THREADS ? WT_MAX_THREADS : (int)n;
}

int model_weights_load(struct model_weights *w, const struct model_config *cfg, const char *dir,
                       enum model_load_format fmt, uint64_t seed, const struct kern_ops *ops,
                       struct kern_ctx *ctx, struct mem_arena *arena) {
    return model_weights_load_shard(w, cfg, 1, 0, dir, fmt, seed, ops, ctx, arena);
}

int model_weights_load_shard(struct model_weights *w, const struct model_config *cfg, int tp_size,
                             int rank, const char *dir, enum model_load_format fmt, uint64_t seed,
                             const struct kern_ops *ops, struct kern_ctx *ctx,
                             struct mem_arena *arena) {
    memset(w, 0, sizeof *w);
    struct model_config local;
    int rc = model_config_shard(cfg, tp_size, rank, &local);
    if (rc) return rc;
    const struct wt_shard tp = {tp_size, rank};
    struct st_checkpoint ck = {0};
    if (fmt == MODEL_LOAD_SAFETENSORS) {
        // Open and validate everything before carving or copying a byte.
        rc = st_open(&ck, dir);
        if (rc) return rc;
    } else if (fmt != MODEL_LOAD_DUMMY) {
        return err_set(ERR_INVAL, "unknown load format %d", (int)fmt);
    }
    struct wt_fill fill = {.ops = ops, .ctx = ctx, .arena = arena, .n_threads = wt__threads()};
    struct wt_load L = {.cfg = cfg, .tp = tp, .w = w, .dir = dir, .seed = seed, .fill = &fill,
                        .ck = fmt == MODEL_LOAD_SAFETENSORS ? &ck : NULL};
    if (L.ck) rc = wt__layout(cfg, tp, NULL, wt__check_cb, &L);
    if (!rc && !L.ck && !(L.table = malloc(256 * sizeof(bf16))))
        rc = err_set(ERR_NOMEM, "weights: out of memory");

    int64_t bytes = model_weights_bytes_shard(cfg, tp_size, rank);
    void *base = NULL;
    if (!rc) {
        w->layers = calloc((size_t)cfg->n_layers, sizeof *w->layers);
        if (!w->layers) rc = err_set(ERR_NOMEM, "weights: out of memory for %d layers", cfg->n_layers);
    }
    if (!rc) rc = mem_arena_carve(arena, "weights", (size_t)bytes, &base);
    if (!rc) {
        L.base = base;
        wt__layout(cfg, tp, w, wt__assign_cb, &L);
        if (cfg->tie_word_embeddings) w->lm_head = w->embed;
        if (arena->staging && arena->staging_bytes >= 2 * MEM_ARENA_ALIGN) {
            fill.half_bytes = arena->staging_bytes / 2 / MEM_ARENA_ALIGN * MEM_ARENA_ALIGN;
            fill.half[0] = arena->staging;
            fill.half[1] = (uint8_t *)arena->staging + fill.half_bytes;
        }
        wt__layout(cfg, tp, NULL, wt__sum_unpadded_cb, &fill.total);
        fill.t0 = fill.last_draw = wt__now();
        fill.tty = isatty(STDERR_FILENO);
        rc = wt__layout(cfg, tp, w, wt__fill_cb, &L);
        if (!rc) rc = ops->sync(ctx);
        if (!rc) wt__progress(&fill, 0, true);
        else if (fill.tty) fputc('\n', stderr);
    }
    st_close(&ck);
    free(L.table);
    if (rc) model_weights_free(w);
    return rc;
}

void model_weights_free(struct model_weights *w) {
    if (!w) return;
    free(w->layers);
    memset(w, 0, sizeof *w);
}

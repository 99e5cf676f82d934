// The step profiler (see profile.h): host-clock marks charged to op groups and step kinds.
#include "models/profile.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- state

enum { PROF_DECODE = 0, PROF_PREFILL = 1, PROF_N_KINDS = 2 };

// Step times kept for the median; past this many the sums still count but no more samples do.
#define PROF_MAX_SAMPLES 16384

static const char *const prof_op_names[MODEL_PROF_N_OPS] = {
    "meta copy in", "embed",     "add_rmsnorm", "qkv gemm",     "qk_norm+rope",
    "kv_write",     "attention", "wo gemm",     "gate_up gemm", "silu_mul",
    "down gemm",    "logits",    "copy out",
};
static const char *const prof_kind_names[PROF_N_KINDS] = {"decode", "prefill"};

struct prof_kind {
    long long n_steps, n_tokens, n_seqs;
    double total_s;
    double gap_s; // host time between the previous step's end and this step's start
    double op_s[MODEL_PROF_N_OPS];
    long long op_calls[MODEL_PROF_N_OPS];
    int n_samples;
    float samples_ms[PROF_MAX_SAMPLES];
};

static struct {
    int mode; // -1 until read
    long long every, n_steps;
    int kind; // of the step in flight
    double step_t0, last_mark, last_end;
    struct prof_kind k[PROF_N_KINDS];
} prof = {.mode = -1};

static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void prof_atexit(void) {
    model_prof_print(stderr);
}

enum model_prof_mode model_prof_mode(void) {
    if (prof.mode >= 0) return (enum model_prof_mode)prof.mode;
    const char *v = getenv("KEEL_PROFILE");
    prof.mode = MODEL_PROF_OFF;
    if (v && !strcmp(v, "steps"))
        prof.mode = MODEL_PROF_STEPS;
    else if (v && *v && strcmp(v, "0") != 0)
        prof.mode = MODEL_PROF_OPS;
    const char *e = getenv("KEEL_PROFILE_EVERY");
    prof.every = e ? atoll(e) : 0;
    if (prof.mode != MODEL_PROF_OFF) atexit(prof_atexit);
    return (enum model_prof_mode)prof.mode;
}

// ---- marks

void model_prof_step_begin(int n_tokens, int n_seqs) {
    if (model_prof_mode() == MODEL_PROF_OFF) return;
    prof.kind = n_tokens == n_seqs ? PROF_DECODE : PROF_PREFILL;
    struct prof_kind *k = &prof.k[prof.kind];
    k->n_tokens += n_tokens;
    k->n_seqs += n_seqs;
    prof.step_t0 = prof.last_mark = prof_now();
    if (prof.last_end > 0) k->gap_s += prof.step_t0 - prof.last_end;
}

void model_prof_mark(enum model_prof_op op) {
    if (prof.mode != MODEL_PROF_OPS || op < 0 || op >= MODEL_PROF_N_OPS) return;
    double t = prof_now();
    struct prof_kind *k = &prof.k[prof.kind];
    k->op_s[op] += t - prof.last_mark;
    k->op_calls[op]++;
    prof.last_mark = t;
}

void model_prof_step_end(void) {
    if (prof.mode <= MODEL_PROF_OFF) return;
    prof.last_end = prof_now();
    double dt = prof.last_end - prof.step_t0;
    struct prof_kind *k = &prof.k[prof.kind];
    k->n_steps++;
    k->total_s += dt;
    if (k->n_samples < PROF_MAX_SAMPLES) k->samples_ms[k->n_samples++] = (float)(dt * 1e3);
    prof.n_steps++;
    if (prof.every > 0 && prof.n_steps % prof.every == 0) model_prof_print(stderr);
}

void model_prof_reset(void) {
    memset(prof.k, 0, sizeof prof.k);
    prof.n_steps = 0;
    prof.last_end = 0;
}

// ---- the table

static int prof_cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double prof_median_ms(const struct prof_kind *k) {
    if (k->n_samples == 0) return 0.0;
    static float tmp[PROF_MAX_SAMPLES];
    memcpy(tmp, k->samples_ms, sizeof(float) * k->n_samples);
    qsort(tmp, (size_t)k->n_samples, sizeof(float), prof_cmp_float);
    return tmp[k->n_samples / 2];
}

void model_prof_print(FILE *f) {
    if (prof.mode <= MODEL_PROF_OFF) return;
    fprintf(f, "keel profile (%s): %lld steps\n",
            prof.mode == MODEL_PROF_OPS ? "per op, synchronised" : "step times", prof.n_steps);
    fprintf(
        f, "| kind    |  steps |   tokens | tok/step | median ms | mean ms |   tok/s (median) |\n");
    for (int i = 0; i < PROF_N_KINDS; i++) {
        const struct prof_kind *k = &prof.k[i];
        if (!k->n_steps) continue;
        double med = prof_median_ms(k), mean = k->total_s * 1e3 / (double)k->n_steps;
        double per_step = (double)k->n_tokens / (double)k->n_steps;
        fprintf(f, "| %-7s | %6lld | %8lld | %8.1f | %9.3f | %7.3f | %16.1f | %16.3f |\n",
                prof_kind_names[i], k->n_steps, k->n_tokens, per_step, med, mean,
                med > 0 ? per_step / (med * 1e-3) : 0.0, k->gap_s * 1e3 / (double)k->n_steps);
    }
    if (prof.mode != MODEL_PROF_OPS) return;
    for (int i = 0; i < PROF_N_KINDS; i++) {
        const struct prof_kind *k = &prof.k[i];
        if (!k->n_steps) continue;
        double sum = 0;
        for (int o = 0; o < MODEL_PROF_N_OPS; o++)
            sum += k->op_s[o];
        fprintf(f, "| %-7s op      |   calls | total ms | ms/step |  share |\n",
                prof_kind_names[i]);
        for (int o = 0; o < MODEL_PROF_N_OPS; o++) {
            if (!k->op_calls[o]) continue;
            fprintf(f, "| %-15s | %7lld | %8.2f | %7.3f | %5.1f%% |\n", prof_op_names[o],
                    k->op_calls[o], k->op_s[o] * 1e3, k->op_s[o] * 1e3 / (double)k->n_steps,
                    sum > 0 ? 100.0 * k->op_s[o] / sum : 0.0);
        }
    }
    fflush(f);
}

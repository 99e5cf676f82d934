// The step profiler (models/profile.c): steps split into decode and prefill, per-op charges only
// in KEEL_PROFILE=1, nothing at all when it is off. Each test runs in its own process (the
// runner forks), so each sees KEEL_PROFILE as it sets it before the first call.
#include "models/profile.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void spin_ms(double ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) * 1e-6 < ms);
}

// The printed tables, as one string (caller frees).
static char *prof_text(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    model_prof_print(f);
    fclose(f);
    return buf;
}

// Two decode steps of 3 sequences and one prefill step of 40 tokens in 2 sequences.
static void run_steps(void) {
    for (int i = 0; i < 2; i++) {
        model_prof_step_begin(3, 3);
        spin_ms(2);
        model_prof_mark(MODEL_PROF_GATE_UP);
        model_prof_mark(MODEL_PROF_ATTENTION);
        model_prof_step_end();
    }
    model_prof_step_begin(40, 2);
    spin_ms(4);
    model_prof_mark(MODEL_PROF_QKV);
    model_prof_step_end();
}

TEST(profile_ops_mode_splits_kinds_and_charges_ops) {
    setenv("KEEL_PROFILE", "1", 1);
    CHECK_EQ(model_prof_mode(), MODEL_PROF_OPS);
    run_steps();
    char *t = prof_text();
    fprintf(stderr, "%s", t);
    CHECK_MSG(strstr(t, "| decode  |      2 |        6 |") != NULL,
              "no decode row of 2 steps, 6 tokens");
    CHECK_MSG(strstr(t, "| prefill |      1 |       40 |") != NULL,
              "no prefill row of 1 step, 40 tokens");
    // The gate_up mark came after a 2 ms spin in each decode step: about 4 ms in all.
    const char *g = strstr(t, "| gate_up gemm    |       2 |");
    CHECK_MSG(g != NULL, "gate_up charged twice");
    double ms = atof(g + strlen("| gate_up gemm    |       2 |"));
    CHECK_MSG(ms >= 3.9 && ms < 50, "gate_up total %.3f ms, want about 4", ms);
    CHECK_MSG(strstr(t, "| qkv gemm        |       1 |") != NULL, "qkv charged once (prefill)");
    CHECK_MSG(strstr(t, "| down gemm") == NULL, "an op never marked is printed");
    free(t);
    model_prof_reset();
    t = prof_text();
    CHECK_MSG(strstr(t, "| decode  |") == NULL, "reset kept the decode row");
    free(t);
}

TEST(profile_steps_mode_times_steps_without_ops) {
    setenv("KEEL_PROFILE", "steps", 1);
    CHECK_EQ(model_prof_mode(), MODEL_PROF_STEPS);
    run_steps();
    char *t = prof_text();
    CHECK_MSG(strstr(t, "| decode  |      2 |") != NULL, "no decode row: %s", t);
    CHECK_MSG(strstr(t, "gate_up") == NULL, "steps mode printed per-op figures: %s", t);
    free(t);
}

TEST(profile_off_prints_nothing) {
    unsetenv("KEEL_PROFILE");
    CHECK_EQ(model_prof_mode(), MODEL_PROF_OFF);
    run_steps();
    char *t = prof_text();
    CHECK_MSG(t == NULL || t[0] == '\0', "profiler off printed \"%s\"", t ? t : "");
    free(t);
    setenv("KEEL_PROFILE", "1", 1); // read once: a later change does not turn it on
    CHECK_EQ(model_prof_mode(), MODEL_PROF_OFF);
}

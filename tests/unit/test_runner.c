// Tests of the runner itself: it must report a failing, crashing or hanging test as failed.
// They run build/tests/unit on the fixtures below, which are only registered when
// KEEL_RUNNER_FIXTURES is set, so a normal run never sees them.
#include "common/err.h"
#include "tests/test.h"

#include <signal.h>
#include <unistd.h>

static int runner__fixtures(void) { return getenv("KEEL_RUNNER_FIXTURES") != NULL; }

TEST_TIMEOUT(fixture_hangs, 1) {
    if (!runner__fixtures()) return;
    for (;;) pause();
}

TEST(fixture_crashes) {
    if (!runner__fixtures()) return;
    raise(SIGSEGV);
}

TEST(fixture_fails) {
    if (!runner__fixtures()) return;
    CHECK_EQ(1 + 1, 3);
}

static char *runner__capture(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    static char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    *status = pclose(p);
    return out;
}

TEST(runner_reports_failures_crashes_and_timeouts) {
    int status;
    char *out = runner__capture("KEEL_RUNNER_FIXTURES=1 build/tests/unit fixture_hangs "
                                "fixture_crashes fixture_fails err_set_returns_code_and_keeps_message 2>&1",
                                &status);
    CHECK_MSG(strstr(out, "1 passed, 3 failed") != NULL, "runner output was:\n%s", out);
    CHECK(strstr(out, "timed out") != NULL);
    CHECK(strstr(out, "Segmentation fault") != NULL);
    CHECK(strstr(out, "1 + 1 != 3") == NULL); // the operands are printed, not the expression
    CHECK(strstr(out, "2 != 3") != NULL);
    CHECK(WEXITSTATUS(status) == 1);
}

TEST(runner_passes_when_all_pass) {
    int status;
    char *out = runner__capture("build/tests/unit err_set_returns_code_and_keeps_message 2>&1", &status);
    CHECK_MSG(strstr(out, "1 passed, 0 failed") != NULL, "runner output was:\n%s", out);
    CHECK_EQ(WEXITSTATUS(status), 0);
}

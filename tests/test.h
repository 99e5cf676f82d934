// The test harness: TEST(name) { ... } registers a test at load time; the runner
// (tests/runner.c) forks each one with a timeout. A failed CHECK prints both sides and ends the
// test's process with status 1. Tests run from the repository root.
#ifndef KEEL_TESTS_TEST_H
#define KEEL_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn, const char *file, int timeout_s);

// Index of the largest value (the first among equals), for greedy checks.
static inline int test_argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

// Whether a file exists (test data, or .cache prepared by scripts/setup).
int test_file_exists(const char *path);

// A whole file as a malloc'd, NUL-terminated string (the caller frees it); fails the test, naming
// the file, when it cannot be read.
char *test_read_file(const char *path);

#define TEST__REG(name, secs)                                                                   \
    static void test_##name(void);                                                              \
    __attribute__((constructor)) static void test_reg_##name(void) {                            \
        test_register(#name, test_##name, __FILE__, secs);                                      \
    }                                                                                           \
    static void test_##name(void)

// A test with the default timeout (60 s).
#define TEST(name) TEST__REG(name, 60)
// A test with its own timeout in seconds.
#define TEST_TIMEOUT(name, secs) TEST__REG(name, secs)

#define TEST__FAIL(...)                                                                         \
    do {                                                                                        \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                           \
        fprintf(stderr, "\n");                                                                  \
        fflush(stderr);                                                                         \
        exit(1);                                                                                \
    } while (0)

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) TEST__FAIL("CHECK(%s) failed", #cond);                                     \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                    \
    do {                                                                                        \
        if (!(cond)) TEST__FAIL(__VA_ARGS__);                                                   \
    } while (0)

#define CHECK_EQ(a, b)                                                                          \
    do {                                                                                        \
        long long check__a = (long long)(a), check__b = (long long)(b);                         \
        if (check__a != check__b)                                                               \
            TEST__FAIL("CHECK_EQ(%s, %s): %lld != %lld", #a, #b, check__a, check__b);           \
    } while (0)

#define CHECK_STR(a, b)                                                                         \
    do {                                                                                        \
        const char *check__a = (a), *check__b = (b);                                            \
        if (!check__a || !check__b || strcmp(check__a, check__b) != 0)                          \
            TEST__FAIL("CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b,                           \
                       check__a ? check__a : "(null)", check__b ? check__b : "(null)");         \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                   \
    do {                                                                                        \
        double check__a = (double)(a), check__b = (double)(b);                                  \
        if (!(fabs(check__a - check__b) <= (tol)))                                              \
            TEST__FAIL("CHECK_NEAR(%s, %s, %g): %.9g vs %.9g", #a, #b, (double)(tol), check__a, \
                       check__b);                                                               \
    } while (0)

// Checks a call that returns 0 on success; prints the error message otherwise.
#define CHECK_OK(call)                                                                          \
    do {                                                                                        \
        int check__rc = (call);                                                                 \
        if (check__rc != 0)                                                                     \
            TEST__FAIL("%s returned %d (%s): %s", #call, check__rc, err_name(check__rc),        \
                       err_msg());                                                              \
    } while (0)

// Skips the rest of a test (counted as passed, reported as skipped) when a precondition is missing.
#define TEST_SKIP(...)                                                                          \
    do {                                                                                        \
        fprintf(stderr, "  skipped: ");                                                         \
        fprintf(stderr, __VA_ARGS__);                                                           \
        fprintf(stderr, "\n");                                                                  \
        exit(77);                                                                               \
    } while (0)

#endif

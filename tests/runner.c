// The test runner: forks each registered test with a timeout, prints one line per test and ends
// with "N passed, N failed". `unit NAME...` runs only the named tests (or files, by basename);
// `unit --list` prints the names. Exit status is 1 when any test failed.
#include "tests/test.h"

#include "common/err.h"
#include "common/file.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_MAX 4096

struct test_case {
    const char *name;
    const char *file;
    test_fn fn;
    int timeout_s;
};

static struct test_case test__cases[TEST_MAX];
static int test__n;

void test_register(const char *name, test_fn fn, const char *file, int timeout_s) {
    if (test__n == TEST_MAX) {
        fprintf(stderr, "too many tests (max %d)\n", TEST_MAX);
        exit(2);
    }
    test__cases[test__n++] = (struct test_case){name, file, fn, timeout_s};
}

int test_file_exists(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0;
}

char *test_read_file(const char *path) {
    char *buf = NULL;
    size_t len = 0;
    int rc = file_read_all(path, (size_t)1 << 30, &buf, &len);
    CHECK_MSG(rc == 0, "cannot read %s: %s", path, err_msg());
    return buf;
}

static double test__now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static bool test__selected(const struct test_case *t, int argc, char **argv) {
    if (argc <= 1) return true;
    const char *base = strrchr(t->file, '/');
    base = base ? base + 1 : t->file;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], t->name) == 0) return true;
        size_t n = strlen(argv[i]);
        if (strncmp(base, argv[i], n) == 0 && (base[n] == '\0' || base[n] == '.')) return true;
    }
    return false;
}

// Runs one test in a child process; returns 0 passed, 77 skipped, anything else failed.
static int test__run(const struct test_case *t, double *secs) {
    double t0 = test__now();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        alarm((unsigned)t->timeout_s);
        t->fn();
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    kill(-pid, SIGKILL); // anything the test left running
    *secs = test__now() - t0;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        fprintf(stderr, "  %s: %s\n", t->name,
                sig == SIGALRM ? "timed out" : strsignal(sig));
        return 128 + sig;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < test__n; i++) printf("%s\t%s\n", test__cases[i].name, test__cases[i].file);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    int passed = 0, failed = 0, skipped = 0, ran = 0;
    for (int i = 0; i < test__n; i++) {
        const struct test_case *t = &test__cases[i];
        if (!test__selected(t, argc, argv)) continue;
        ran++;
        double secs = 0;
        int rc = test__run(t, &secs);
        if (rc == 0) {
            passed++;
            printf("ok      %-44s %7.2fs\n", t->name, secs);
        } else if (rc == 77) {
            passed++;
            skipped++;
            printf("skip    %-44s %7.2fs\n", t->name, secs);
        } else {
            failed++;
            printf("FAIL    %-44s %7.2fs  (%s)\n", t->name, secs, t->file);
        }
        fflush(stdout);
    }
    if (argc > 1 && ran == 0) {
        fprintf(stderr, "no test matches the names given\n");
        return 2;
    }
    if (skipped) printf("(%d skipped)\n", skipped);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

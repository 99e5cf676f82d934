#include "common/cuda_check.h"
#include "common/err.h"
#include "common/log.h"
#include "tests/test.h"

#include <pthread.h>
#include <unistd.h>

TEST(err_set_returns_code_and_keeps_message) {
    err_clear();
    CHECK_EQ(err_code(), 0);
    CHECK_STR(err_msg(), "");
    int rc = err_set(ERR_RANGE, "value %d is out of [%d, %d]", 9, 0, 5);
    CHECK_EQ(rc, ERR_RANGE);
    CHECK_EQ(err_code(), ERR_RANGE);
    CHECK_STR(err_msg(), "value 9 is out of [0, 5]");
    CHECK_STR(err_name(ERR_RANGE), "ERR_RANGE");
    CHECK_STR(err_name(12345), "ERR_UNKNOWN");
}

TEST(err_message_is_truncated_not_overflowed) {
    char big[4000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set(ERR_INVAL, "%s", big);
    CHECK(strlen(err_msg()) < sizeof big - 1);
    CHECK(strlen(err_msg()) > 100);
}

static void *err__thread(void *arg) {
    (void)arg;
    err_set(ERR_IO, "from the other thread");
    return NULL;
}

TEST(err_message_is_per_thread) {
    err_set(ERR_INVAL, "mine");
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, err__thread, NULL), 0);
    pthread_join(th, NULL);
    CHECK_STR(err_msg(), "mine");
    CHECK_EQ(err_code(), ERR_INVAL);
}

TEST(every_code_has_a_name) {
    for (int c = ERR_INVAL; c >= ERR_INTERNAL; c--) CHECK(strcmp(err_name(c), "ERR_UNKNOWN") != 0);
}

TEST(cuda_errors_are_classified) {
    CHECK_EQ(err_cuda_class(0), ERR_OK);
    CHECK_EQ(err_cuda_class(2), ERR_CUDA_ALLOC);    // cudaErrorMemoryAllocation
    CHECK_EQ(err_cuda_class(700), ERR_CUDA_FAULT);  // cudaErrorIllegalAddress
    CHECK_EQ(err_cuda_class(719), ERR_CUDA_FAULT);  // cudaErrorLaunchFailure
    CHECK_EQ(err_cuda_class(1), ERR_CUDA);          // cudaErrorInvalidValue
    CHECK_EQ(err_cublas_class(3), ERR_CUDA_ALLOC);  // CUBLAS_STATUS_ALLOC_FAILED
    CHECK_EQ(err_cublas_class(1), ERR_CUDA);        // CUBLAS_STATUS_NOT_INITIALIZED
    CHECK_STR(err_cublas_name(1), "CUBLAS_STATUS_NOT_INITIALIZED");
}

TEST(cuda_failure_message_names_call_site_and_class) {
    int rc = err_cuda_fail(700, "cudaErrorIllegalAddress", "an illegal memory access",
                           "cudaMemcpy(a, b, n)", "kernels/x.cu", 42);
    CHECK_EQ(rc, ERR_CUDA_FAULT);
    CHECK(strstr(err_msg(), "cudaMemcpy(a, b, n)") != NULL);
    CHECK(strstr(err_msg(), "kernels/x.cu:42") != NULL);
    CHECK(strstr(err_msg(), "cudaErrorIllegalAddress") != NULL);
    CHECK(strstr(err_msg(), "sticky") != NULL);
    rc = err_cublas_fail(3, "cublasGemmEx(...)", "kernels/cuda/gemm.c", 7);
    CHECK_EQ(rc, ERR_CUDA_ALLOC);
    CHECK(strstr(err_msg(), "CUBLAS_STATUS_ALLOC_FAILED") != NULL);
}

TEST(log_levels_parse_and_filter) {
    enum log_level l;
    CHECK_OK(log_parse_level("WARN", &l));
    CHECK_EQ(l, LOG_WARN);
    CHECK_EQ(log_parse_level("loud", &l), ERR_INVAL);
    CHECK(strstr(err_msg(), "loud") != NULL);

    // Capture stderr through a pipe and check what passes the filter.
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    int saved = dup(2);
    dup2(fds[1], 2);
    log_set_level(LOG_WARN);
    log_info("hidden %d", 1);
    log_warn("shown %d", 2);
    log_error("also shown");
    dup2(saved, 2);
    close(fds[1]);
    char buf[1024] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    CHECK(n > 0);
    CHECK(strstr(buf, "hidden") == NULL);
    CHECK(strstr(buf, "WARN  shown 2") != NULL);
    CHECK(strstr(buf, "ERROR also shown") != NULL);
    CHECK(buf[4] == '-' && strchr(buf, 'T') != NULL); // ISO timestamp first
}

#include "common/file.h"
#include "common/rng.h"

TEST(file_read_all_reads_whole_files_and_refuses_the_rest) {
    char path[] = "/tmp/keel-file-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    char data[200000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)('a' + i % 26);
    CHECK_EQ(write(fd, data, sizeof data), (long long)sizeof data);
    close(fd);
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(file_read_all(path, 1 << 20, &buf, &len));
    CHECK_EQ(len, sizeof data);
    CHECK(memcmp(buf, data, len) == 0);
    CHECK_EQ(buf[len], '\0');
    free(buf);
    CHECK_EQ(file_read_all(path, 1000, &buf, &len), ERR_FORMAT);
    CHECK(buf == NULL);
    CHECK(strstr(err_msg(), "larger than 1000 bytes") != NULL);
    unlink(path);
    CHECK_EQ(file_read_all(path, 1 << 20, &buf, &len), ERR_NOT_FOUND);
    CHECK(strstr(err_msg(), "no such file") != NULL);
    CHECK_EQ(file_read_all("/", 1 << 20, &buf, &len), ERR_IO); // a folder cannot be read
}

TEST(rng_repeats_from_a_seed_and_is_uniform) {
    uint64_t a[4], b[4];
    rng_seed(a, 42);
    rng_seed(b, 42);
    for (int i = 0; i < 1000; i++) CHECK_EQ(rng_next(a), rng_next(b));
    rng_seed(b, 43);
    CHECK(rng_next(a) != rng_next(b));
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = rng_uniform(a);
        CHECK(u >= 0 && u < 1);
        sum += u;
    }
    CHECK_NEAR(sum / 100000, 0.5, 0.01);
}

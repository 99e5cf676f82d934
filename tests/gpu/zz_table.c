// The last GPU test: prints the table that the others filled (gpu_util.c, gt_row), so
// `make test-gpu` ends with op | shape | max err | rel err | tol | ok.
#include "tests/gpu/gpu_util.h"
#include "tests/test.h"

#include <unistd.h>

TEST(gpu_table) {
    char path[256];
    gt_table_path(path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f) TEST_SKIP("no table rows at %s (no GPU test ran before this one)", path);
    printf("\n| op             | shape                                        | max err   | rel "
           "err   | tol     | ok |\n");
    printf("|----------------|----------------------------------------------|-----------|----------"
           "-|---------|----|\n");
    char line[512];
    int rows = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        rows++;
        bad += strstr(line, "| FAIL |") != NULL;
    }
    fclose(f);
    if (!getenv("KEEL_GPU_TABLE")) unlink(path);
    printf("%d rows, %d failed\n\n", rows, bad);
    CHECK_EQ(bad, 0);
}

// Settings of tensor parallelism: "devices" and "tensor_parallel_size" from the config file and
// from flags, how they fill each other in, and every way they can be wrong.
#include "common/err.h"
#include "server/settings.h"
#include "tests/test.h"

#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#define CHECK_HAS(hay, needle)                                                                     \
    CHECK_MSG(strstr((hay), (needle)) != NULL, "\"%s\" not in: %s", (needle), (hay))

// Parses a flag list the way `keel serve` does (argv without the program and subcommand).
static int args(struct srv_settings *s, int argc, char **argv) {
    bool help = false;
    int rc = srv_settings_from_args(s, argc, argv, &help);
    CHECK(!help);
    return rc;
}

// Applies a JSON config over the defaults and reconciles the two keys.
static int json(struct srv_settings *s, const char *text) {
    srv_settings_defaults(s);
    int rc = srv_settings_parse_json(s, text, strlen(text));
    return rc ? rc : srv_settings_resolve_devices(s);
}

static void check_devices(const struct srv_settings *s, int n, const int *want) {
    CHECK_EQ(s->n_devices, n);
    CHECK_EQ(s->tensor_parallel_size, n);
    for (int i = 0; i < n; i++)
        CHECK_MSG(s->devices[i] == want[i], "devices[%d] = %d, want %d", i, s->devices[i], want[i]);
}

TEST(settings_tp_defaults_to_one_gpu) {
    struct srv_settings s;
    CHECK_OK(args(&s, 0, NULL));
    check_devices(&s, 1, (int[]){0});
    CHECK(!s.devices_given);
}

TEST(settings_tp_size_alone_means_the_first_gpus) {
    struct srv_settings s;
    CHECK_OK(args(&s, 2, (char *[]){"--tensor-parallel-size", "4"}));
    check_devices(&s, 4, (int[]){0, 1, 2, 3});
    CHECK_OK(json(&s, "{\"tensor_parallel_size\": 2}"));
    check_devices(&s, 2, (int[]){0, 1});
    CHECK_OK(args(&s, 1, (char *[]){"--tensor-parallel-size=8"}));
    check_devices(&s, 8, (int[]){0, 1, 2, 3, 4, 5, 6, 7});
}

TEST(settings_tp_devices_alone_set_the_size) {
    struct srv_settings s;
    CHECK_OK(args(&s, 2, (char *[]){"--devices", "2,3"}));
    check_devices(&s, 2, (int[]){2, 3});
    CHECK(s.devices_given);
    CHECK_OK(json(&s, "{\"devices\": [6, 1, 4]}"));
    check_devices(&s, 3, (int[]){6, 1, 4});
    // A single number is one device (as --device N is).
    CHECK_OK(json(&s, "{\"devices\": 5}"));
    check_devices(&s, 1, (int[]){5});
}

TEST(settings_tp_both_given_must_agree) {
    struct srv_settings s;
    CHECK_OK(args(&s, 4, (char *[]){"--devices", "1,3", "--tensor-parallel-size", "2"}));
    check_devices(&s, 2, (int[]){1, 3});
    CHECK_EQ(args(&s, 4, (char *[]){"--devices", "1,3", "--tensor-parallel-size", "4"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "'tensor_parallel_size' (4) and 'devices' (2 ids) disagree");
    CHECK_EQ(json(&s, "{\"devices\": [0], \"tensor_parallel_size\": 2}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "'tensor_parallel_size' (2) and 'devices' (1 ids) disagree");

    // The file gives one, a flag the other: they still have to agree.
    char path[] = "/tmp/keel-settings-tp-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *cfg = "{\"devices\": [0, 1]}";
    CHECK_EQ(write(fd, cfg, strlen(cfg)), (long long)strlen(cfg));
    close(fd);
    CHECK_EQ(args(&s, 4, (char *[]){"--config", path, "--tensor-parallel-size", "4"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "disagree");
    CHECK_OK(args(&s, 4, (char *[]){"--config", path, "--tensor-parallel-size", "2"}));
    check_devices(&s, 2, (int[]){0, 1});
    // A flag's devices replace the file's.
    CHECK_OK(args(&s, 4, (char *[]){"--config", path, "--devices", "4,5,6,7"}));
    check_devices(&s, 4, (int[]){4, 5, 6, 7});
    unlink(path);
}

TEST(settings_tp_refuses_bad_devices_by_name) {
    struct srv_settings s;
    CHECK_EQ(args(&s, 2, (char *[]){"--devices", "0,1,0"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "'devices': device 0 is listed twice");
    CHECK_EQ(json(&s, "{\"devices\": [3, 3]}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "device 3 is listed twice");
    CHECK_EQ(args(&s, 2, (char *[]){"--devices", "0,-1"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "'devices': device id -1 is negative");
    CHECK_EQ(json(&s, "{\"devices\": [-2]}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "device id -2 is negative");
    CHECK_EQ(json(&s, "{\"devices\": []}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "'devices'");
    CHECK_EQ(args(&s, 2, (char *[]){"--devices", "0,,1"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "'devices'");
    // Nine GPUs is beyond tensor parallelism's 8.
    CHECK_EQ(args(&s, 2, (char *[]){"--devices", "0,1,2,3,4,5,6,7,8"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "'devices': 9 devices");
}

TEST(settings_tp_refuses_bad_sizes_by_name) {
    struct srv_settings s;
    const char *bad[] = {"0", "9", "-1", "1.5", "two"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(args(&s, 2, (char *[]){"--tensor-parallel-size", (char *)bad[i]}) == ERR_INVAL,
                  "--tensor-parallel-size %s was accepted", bad[i]);
        CHECK_HAS(err_msg(), "'tensor_parallel_size'");
    }
    CHECK_EQ(json(&s, "{\"tensor_parallel_size\": 16}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "'tensor_parallel_size': 16 is out of range [1, 8]");
    CHECK_EQ(json(&s, "{\"tensor_parallel_size\": \"2\"}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "'tensor_parallel_size': expected an integer, got a string");
    // Set directly (an embedding program), the size is still checked when reconciled.
    srv_settings_defaults(&s);
    s.tensor_parallel_size = 12;
    CHECK_EQ(srv_settings_resolve_devices(&s), ERR_INVAL);
    CHECK_HAS(err_msg(), "12 is out of range [1, 8]");
    // Validation catches fields set by hand that were never reconciled.
    srv_settings_defaults(&s);
    s.tensor_parallel_size = 2;
    CHECK_EQ(srv_settings_validate(&s), ERR_INVAL);
    CHECK_HAS(err_msg(), "'tensor_parallel_size' (2) and 'devices' (1 ids) disagree");
    CHECK_OK(srv_settings_resolve_devices(&s));
    CHECK_OK(srv_settings_validate(&s));
    check_devices(&s, 2, (int[]){0, 1});
}

TEST(settings_tp_help_and_dump) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    srv_settings_help(f);
    fclose(f);
    CHECK_HAS(buf, "--tensor-parallel-size");
    CHECK_HAS(buf, "--devices");
    CHECK_HAS(buf, "tensor-parallel rank");
    free(buf);

    struct srv_settings s;
    CHECK_OK(args(&s, 2, (char *[]){"--devices", "2,3"}));
    char *j = srv_settings_json(&s);
    CHECK(j != NULL);
    CHECK_HAS(j, "\"devices\":[2,3]");
    CHECK_HAS(j, "\"tensor_parallel_size\":2");
    free(j);
}

TEST(settings_tp_device_number_means_one_gpu) {
    // `--device N` names a GPU (devices [N]); `--device cuda` still names the backend.
    struct srv_settings s;
    CHECK_OK(args(&s, 2, (char *[]){"--device", "3"}));
    check_devices(&s, 1, (int[]){3});
    CHECK_STR(s.device, "");
    CHECK_OK(args(&s, 4, (char *[]){"--device", "cuda", "--devices", "0,1"}));
    CHECK_STR(s.device, "cuda");
    check_devices(&s, 2, (int[]){0, 1});
    CHECK_EQ(args(&s, 4, (char *[]){"--device", "1", "--tensor-parallel-size", "2"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "disagree");
    CHECK_EQ(args(&s, 2, (char *[]){"--device", "gpu1"}), ERR_INVAL);
    CHECK_HAS(err_msg(), "'device'");
    // The config file's "device": N is the same.
    CHECK_OK(json(&s, "{\"device\": 2}"));
    check_devices(&s, 1, (int[]){2});
    CHECK_EQ(json(&s, "{\"device\": -1}"), ERR_INVAL);
    CHECK_HAS(err_msg(), "'devices': device id -1 is negative");
}

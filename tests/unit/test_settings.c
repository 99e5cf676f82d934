// Settings: defaults, the JSON config file, flags, precedence, and every kind of mistake.
#include "common/err.h"
#include "server/settings.h"
#include "tests/test.h"

#include <stdbool.h>
#include <unistd.h>

static int parse(struct srv_settings *s, const char *json) {
    srv_settings_defaults(s);
    return srv_settings_parse_json(s, json, strlen(json));
}

TEST(settings_defaults_match_the_design) {
    struct srv_settings s;
    srv_settings_defaults(&s);
    CHECK_STR(s.host, "127.0.0.1");
    CHECK_EQ(s.port, 8000);
    CHECK_EQ(s.max_body_bytes, 8 << 20);
    CHECK_EQ(s.max_header_bytes, 64 << 10);
    CHECK_EQ(s.cpu_memory, (int64_t)2 << 30);
    CHECK_EQ(s.block_size, 16);
    CHECK_STR(s.api_key, "");
    CHECK_STR(s.cors_allow_origin, "");
    CHECK(!s.log_requests);
    CHECK_OK(srv_settings_validate(&s));
}

TEST(settings_json_sets_every_type) {
    struct srv_settings s;
    CHECK_OK(parse(&s, "{\"port\": 9123, \"gpu_memory_utilization\": 0.5, \"host\": \"0.0.0.0\","
                       " \"devices\": [1, 3], \"log_requests\": true, \"cpu_memory\": 1073741824,"
                       " \"limits\": {\"max_body_bytes\": 4096, \"idle_timeout_s\": 2.5},"
                       " \"max_queue\": 7, \"api_key\": \"sk-x\"}"));
    CHECK_EQ(s.port, 9123);
    CHECK_NEAR(s.gpu_memory_utilization, 0.5, 1e-12);
    CHECK_STR(s.host, "0.0.0.0");
    CHECK_EQ(s.n_devices, 2);
    CHECK_EQ(s.devices[0], 1);
    CHECK_EQ(s.devices[1], 3);
    CHECK(s.log_requests);
    CHECK_EQ(s.cpu_memory, 1073741824);
    CHECK_EQ(s.max_body_bytes, 4096);
    CHECK_NEAR(s.idle_timeout_s, 2.5, 1e-12);
    CHECK_EQ(s.max_queue, 7);
    CHECK_STR(s.api_key, "sk-x");
}

TEST(settings_json_unknown_key_is_named) {
    struct srv_settings s;
    CHECK_EQ(parse(&s, "{\"port\": 1, \"max_modle_len\": 5}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "'max_modle_len'"), "message: %s", err_msg());
    CHECK_EQ(parse(&s, "{\"limits\": {\"port\": 5}}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "limits.port"), "message: %s", err_msg());
    // Flag spelling is not a JSON key.
    CHECK_EQ(parse(&s, "{\"max-model-len\": 5}"), ERR_INVAL);
}

TEST(settings_json_wrong_type_is_named) {
    struct srv_settings s;
    CHECK_EQ(parse(&s, "{\"port\": \"8000\"}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "'port'") && strstr(err_msg(), "a string"), "message: %s",
              err_msg());
    CHECK_EQ(parse(&s, "{\"host\": 5}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "'host'"), "message: %s", err_msg());
    CHECK_EQ(parse(&s, "{\"log_requests\": 1}"), ERR_INVAL);
    CHECK_EQ(parse(&s, "{\"devices\": [0, \"1\"]}"), ERR_INVAL);
    CHECK_EQ(parse(&s, "{\"max_num_seqs\": 2.5}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "integer"), "message: %s", err_msg());
}

TEST(settings_json_range_and_choices) {
    struct srv_settings s;
    CHECK_EQ(parse(&s, "{\"gpu_memory_utilization\": 1.5}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "1.5") && strstr(err_msg(), "gpu_memory_utilization"),
              "message: %s", err_msg());
    CHECK_EQ(parse(&s, "{\"port\": 70000}"), ERR_INVAL);
    CHECK_EQ(parse(&s, "{\"device\": \"tpu\"}"), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "cpu|cuda"), "message: %s", err_msg());
    CHECK_OK(parse(&s, "{\"device\": \"cpu\", \"load_format\": \"dummy\"}"));
    CHECK_STR(s.device, "cpu");
}

TEST(settings_json_malformed) {
    struct srv_settings s;
    CHECK_EQ(parse(&s, "{\"port\": 1,"), ERR_FORMAT);
    CHECK_EQ(parse(&s, "[1, 2]"), ERR_FORMAT);
    CHECK_EQ(parse(&s, ""), ERR_FORMAT);
}

TEST(settings_flags_override_the_file) {
    char path[] = "/tmp/keel_settings_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *json = "{\"port\": 9001, \"max_model_len\": 512, \"host\": \"0.0.0.0\"}";
    CHECK_EQ(write(fd, json, strlen(json)), (long long)strlen(json));
    close(fd);
    char *argv[] = {"--port", "9002", "--config", path, "--log-requests", "--max-num-seqs=3",
                    "--devices", "0,2"};
    struct srv_settings s;
    bool help = true;
    int rc = srv_settings_from_args(&s, 8, argv, &help);
    unlink(path);
    CHECK_OK(rc);
    CHECK(!help);
    CHECK_EQ(s.port, 9002);          // the flag, though it came before --config
    CHECK_EQ(s.max_model_len, 512);  // the file
    CHECK_STR(s.host, "0.0.0.0");    // the file
    CHECK(s.log_requests);           // bare boolean flag
    CHECK_EQ(s.max_num_seqs, 3);
    CHECK_EQ(s.n_devices, 2);
    CHECK_EQ(s.devices[1], 2);
}

TEST(settings_flag_errors) {
    struct srv_settings s;
    bool help;
    char *a1[] = {"--prot", "1"};
    CHECK_EQ(srv_settings_from_args(&s, 2, a1, &help), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "--prot"), "message: %s", err_msg());
    char *a2[] = {"--port"};
    CHECK_EQ(srv_settings_from_args(&s, 1, a2, &help), ERR_INVAL);
    CHECK_MSG(strstr(err_msg(), "needs a value"), "message: %s", err_msg());
    char *a3[] = {"--port", "12x"};
    CHECK_EQ(srv_settings_from_args(&s, 2, a3, &help), ERR_INVAL);
    char *a4[] = {"--config", "/nonexistent/keel.json"};
    CHECK_EQ(srv_settings_from_args(&s, 2, a4, &help), ERR_NOT_FOUND);
    char *a5[] = {"serve"};
    CHECK_EQ(srv_settings_from_args(&s, 1, a5, &help), ERR_INVAL);
    char *a6[] = {"--log-level", "loud"};
    CHECK_EQ(srv_settings_from_args(&s, 2, a6, &help), ERR_INVAL);
    char *a7[] = {"--port", "1", "--help"};
    CHECK_OK(srv_settings_from_args(&s, 3, a7, &help));
    CHECK(help);
}

TEST(settings_help_lists_every_flag_with_defaults) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    srv_settings_help(f);
    fclose(f);
    const char *want[] = {"--max-model-len", "--served-model-name", "--device", "--api-key",
                          "--max-body-bytes", "(default: 8388608)", "(default: 8000)",
                          "--cors-allow-origin", "--shutdown-grace-s", "--num-kv-blocks"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strstr(buf, want[i]), "--help lacks %s", want[i]);
    free(buf);
}

TEST(settings_json_dump_redacts_the_key) {
    struct srv_settings s;
    CHECK_OK(parse(&s, "{\"api_key\": \"secret-123\"}"));
    char *j = srv_settings_json(&s);
    CHECK(j != NULL);
    CHECK_MSG(!strstr(j, "secret-123"), "key leaked: %s", j);
    CHECK_MSG(strstr(j, "\"port\":8000"), "dump: %s", j);
    free(j);
}

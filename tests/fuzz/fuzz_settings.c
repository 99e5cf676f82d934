// libFuzzer target: the server's JSON config file (server/settings.c). Any input must give 0 or
// a clean ERR_* code with a message; accepted settings must pass or fail validation cleanly.
#include "common/err.h"
#include "server/settings.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct srv_settings s;
    srv_settings_defaults(&s);
    int rc = srv_settings_parse_json(&s, (const char *)data, size);
    if (rc == 0) {
        srv_settings_validate(&s);
        char *json = srv_settings_json(&s);
        free(json);
    } else if (err_msg()[0] == '\0') {
        abort();
    }
    return 0;
}

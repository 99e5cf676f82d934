// libFuzzer target: config.json and generation_config.json parsing (models/config.c).
// Any input must give 0 or a clean ERR_* code; a successful parse must give sane shapes.
#include "common/err.h"
#include "models/config.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct model_config cfg;
    int rc = model_config_parse((const char *)data, size, &cfg);
    if (rc == 0) {
        if (cfg.dim <= 0 || cfg.n_layers <= 0 || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 ||
            cfg.head_dim <= 0 || cfg.vocab_size <= 0 || cfg.n_heads % cfg.n_kv_heads != 0)
            abort(); // the loader accepted shapes the forward pass cannot run
        model_config_parse_generation((const char *)data, size, &cfg);
        if (cfg.n_eos < 0 || cfg.n_eos > MODEL_MAX_EOS) abort();
    } else if (err_msg()[0] == '\0') {
        abort(); // every refusal says why
    }
    return 0;
}

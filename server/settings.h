// Every setting of `keel serve` (DESIGN.md "Configuration"): defaults, the JSON config file
// (--config keel.json) and command-line flags (--kebab-case of each key), in that order of
// precedence. One table in settings.c describes each setting once (name, type, range, help), so
// the file parser, the flag parser and --help cannot disagree.
//
// Unknown keys and values of the wrong type are errors that name the key. A config file may put
// the limit settings either at the top level or inside a "limits" object.
#ifndef KEEL_SERVER_SETTINGS_H
#define KEEL_SERVER_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define SRV_SETTINGS_MAX_DEVICES 16
#define SRV_SETTINGS_MAX_TP 8       // tensor_parallel_size at most (= MEM_PLAN_MAX_TP)

struct srv_settings {
    // the model
    char model[4096];             // model folder; "" = the built-in default (.cache/keel-default)
    char served_model_name[256];  // "" = the model folder's name
    char load_format[16];         // "auto", "safetensors" or "dummy"; "" = auto (dummy for default)
    int64_t seed;                 // seed of dummy weights and of unseeded sampling
    // the device and memory plan
    char device[16];              // "cpu", "cuda" or "" = cuda when a GPU is present
    // CUDA ordinals, one per tensor-parallel rank (rank r runs on devices[r]). After
    // srv_settings_from_args (srv_settings_resolve_devices), n_devices == tensor_parallel_size:
    // devices given alone set the size, a size given alone sets devices 0..N-1.
    int devices[SRV_SETTINGS_MAX_DEVICES];
    int n_devices;
    bool devices_given;           // "devices" came from the config file or a flag
    int tensor_parallel_size;     // GPUs the model is split over; 0 = not given (len(devices))
    double gpu_memory_utilization;
    int64_t cpu_memory;           // bytes of host memory the CPU backend treats as its device
    int max_model_len;            // 0 = the model's max_position_embeddings
    int max_num_seqs;
    int max_num_batched_tokens;
    int block_size;
    int num_kv_blocks;            // 0 = as many as the plan allows
    // HTTP
    char host[256];
    int port;
    char api_key[512];            // "" = no authentication
    char cors_allow_origin[512];  // "" = CORS off
    // limits
    int64_t max_body_bytes;
    int64_t max_header_bytes;
    int max_queue;
    double idle_timeout_s;
    double header_timeout_s;
    double request_timeout_s;     // 0 = none
    double shutdown_grace_s;
    int max_connections;
    // logging
    bool log_requests;            // prompts and outputs are logged only when true
    char log_level[16];           // debug, info, warn, error, off
};

// Fills every setting with its default.
void srv_settings_defaults(struct srv_settings *s);

// Applies a JSON config (len bytes) over *s. Returns 0, ERR_FORMAT (not JSON or not an object)
// or ERR_INVAL (unknown key, wrong type, out of range); err_msg() names the key.
int srv_settings_parse_json(struct srv_settings *s, const char *json, size_t len);

// Reads a config file and applies it (ERR_NOT_FOUND / ERR_IO when it cannot be read).
int srv_settings_load_file(struct srv_settings *s, const char *path);

// Sets one setting from its text form, by JSON key ("max_model_len") or flag name
// ("max-model-len"). Booleans take true/false/1/0; devices take "0,1". Same codes as above.
int srv_settings_set(struct srv_settings *s, const char *name, const char *value);

// The whole command line of `keel serve`: defaults, then --config FILE (wherever it appears),
// then every other flag (--name VALUE or --name=VALUE; a bare boolean flag means true).
// *help is set when --help/-h was given (nothing else is parsed then). Returns 0 or an ERR_*
// code with err_msg() naming the flag or key.
int srv_settings_from_args(struct srv_settings *s, int argc, char **argv, bool *help);

// Reconciles "devices" and "tensor_parallel_size" (called by srv_settings_from_args; call it
// after srv_settings_parse_json / srv_settings_set when not going through it): devices given
// -> tensor_parallel_size = their count; only the size given -> devices 0..N-1; neither ->
// devices [0], size 1. Returns 0 or ERR_INVAL naming the key: both given and disagreeing, a
// size outside 1..SRV_SETTINGS_MAX_TP, duplicate or negative device ids.
int srv_settings_resolve_devices(struct srv_settings *s);

// Cross-setting checks that need no model (e.g. a device name that exists). Returns 0 or ERR_INVAL.
int srv_settings_validate(const struct srv_settings *s);

// Prints every flag with its type, default and meaning.
void srv_settings_help(FILE *f);

// The settings as a JSON object (api_key redacted), malloc'd; the caller frees it.
char *srv_settings_json(const struct srv_settings *s);

// "a string", "a number", "an array", ... for error messages about JSON values (config file and
// API requests alike).
struct cJSON;
const char *srv_json_type_name(const struct cJSON *v);

#endif

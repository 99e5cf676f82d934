// Settings of `keel serve`: one table, three readers (JSON file, flags, --help).
#include "server/settings.h"

#include "common/err.h"
#include "common/file.h"
#include "common/log.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

// ---- the table

enum set_type { SET_STR, SET_INT, SET_I64, SET_DOUBLE, SET_BOOL, SET_INT_LIST };

struct set_def {
    const char *key;       // JSON key; the flag is the same with '-' for '_'
    enum set_type type;
    size_t offset;         // into struct srv_settings
    size_t str_cap;        // SET_STR: buffer size
    double min, max;       // numeric range, inclusive
    bool limit;            // may also appear inside a "limits" object
    const char *choices;   // SET_STR: allowed values separated by '|', or NULL for any
    const char *help;
};

#define S_(f) offsetof(struct srv_settings, f)
#define STR_(f) SET_STR, S_(f), sizeof(((struct srv_settings *)0)->f), 0, 0
static const struct set_def set__defs[] = {
    {"model", STR_(model), false, NULL, "model folder (Hugging Face layout); empty: .cache/keel-default"},
    {"served_model_name", STR_(served_model_name), false, NULL,
     "model name clients send and see; empty: the model folder's name"},
    {"load_format", STR_(load_format), false, "|auto|safetensors|dummy",
     "weights: safetensors files, or dummy random values (auto: dummy for the default model)"},
    {"seed", SET_I64, S_(seed), 0, 0, 9.2e18, false, NULL, "seed of dummy weights and of sampling"},
    {"device", STR_(device), false, "|cpu|cuda",
     "backend: cpu or cuda; empty: cuda when a GPU is present (a number N means devices [N])"},
    {"devices", SET_INT_LIST, S_(devices), 0, 0, 1024, false, NULL,
     "CUDA device ordinals, one per tensor-parallel rank, e.g. 0,1 (JSON: [0, 1]); sets "
     "tensor_parallel_size to their count"},
    {"tensor_parallel_size", SET_INT, S_(tensor_parallel_size), 0, 1, SRV_SETTINGS_MAX_TP, false,
     NULL, "GPUs the model is split over (Megatron: heads, MLP and vocab); alone it means "
           "devices 0..N-1; 0: the number of devices"},
    {"gpu_memory_utilization", SET_DOUBLE, S_(gpu_memory_utilization), 0, 0.01, 1.0, false, NULL,
     "fraction of the GPU's memory keel reserves (context included)"},
    {"cpu_memory", SET_I64, S_(cpu_memory), 0, 1 << 20, 1.0e15, false, NULL,
     "bytes of host memory the CPU backend treats as its device"},
    {"max_model_len", SET_INT, S_(max_model_len), 0, 0, 1 << 24, false, NULL,
     "longest sequence (prompt + output) in tokens; 0: the model's max_position_embeddings"},
    {"max_num_seqs", SET_INT, S_(max_num_seqs), 0, 1, 65536, false, NULL, "sequences in one batch at most"},
    {"max_num_batched_tokens", SET_INT, S_(max_num_batched_tokens), 0, 1, 1 << 24, false, NULL,
     "tokens in one forward step at most (chunked prefill)"},
    {"block_size", SET_INT, S_(block_size), 0, 1, 1024, false, NULL, "tokens per KV-cache block"},
    {"num_kv_blocks", SET_INT, S_(num_kv_blocks), 0, 0, 1 << 30, false, NULL,
     "cap on KV-cache blocks; 0: as many as the memory plan allows"},
    {"host", STR_(host), false, NULL, "address to listen on"},
    {"port", SET_INT, S_(port), 0, 0, 65535, false, NULL, "TCP port to listen on (0: any free port)"},
    {"api_key", STR_(api_key), false, NULL, "bearer token required on /v1/*; empty: no authentication"},
    {"cors_allow_origin", STR_(cors_allow_origin), true, NULL,
     "Access-Control-Allow-Origin value (e.g. *); empty: CORS off"},
    {"max_body_bytes", SET_I64, S_(max_body_bytes), 0, 1024, 1 << 30, true, NULL,
     "largest request body (413 beyond)"},
    {"max_header_bytes", SET_I64, S_(max_header_bytes), 0, 1024, 1 << 24, true, NULL,
     "largest request line plus headers (431 beyond)"},
    {"max_queue", SET_INT, S_(max_queue), 0, 1, 1 << 24, true, NULL,
     "waiting requests at most (503 with Retry-After beyond)"},
    {"idle_timeout_s", SET_DOUBLE, S_(idle_timeout_s), 0, 0.01, 86400, true, NULL,
     "seconds a keep-alive connection may sit idle"},
    {"header_timeout_s", SET_DOUBLE, S_(header_timeout_s), 0, 0.01, 86400, true, NULL,
     "seconds a client has to send a whole request once it started"},
    {"request_timeout_s", SET_DOUBLE, S_(request_timeout_s), 0, 0, 86400 * 7, true, NULL,
     "seconds a request may run; 0: no limit"},
    {"shutdown_grace_s", SET_DOUBLE, S_(shutdown_grace_s), 0, 0, 3600, true, NULL,
     "seconds in-flight requests get to finish on SIGINT/SIGTERM"},
    {"max_connections", SET_INT, S_(max_connections), 0, 1, 1 << 20, true, NULL,
     "open connections at most (503 and close beyond)"},
    {"log_requests", SET_BOOL, S_(log_requests), 0, 0, 1, false, NULL,
     "log each request's prompt and output (never logged otherwise)"},
    {"log_level", STR_(log_level), false, "debug|info|warn|error|off", "debug, info, warn, error or off"},
};
#define SET__N ((int)(sizeof set__defs / sizeof set__defs[0]))

void srv_settings_defaults(struct srv_settings *s) {
    memset(s, 0, sizeof *s);
    s->seed = 0;
    s->n_devices = 1;
    s->devices[0] = 0;
    s->devices_given = false;
    s->tensor_parallel_size = 0;
    s->gpu_memory_utilization = 0.9;
    s->cpu_memory = (int64_t)2 << 30;
    s->max_model_len = 0;
    s->max_num_seqs = 256;
    s->max_num_batched_tokens = 8192;
    s->block_size = 16;
    s->num_kv_blocks = 0;
    snprintf(s->host, sizeof s->host, "127.0.0.1");
    s->port = 8000;
    s->max_body_bytes = (int64_t)8 << 20;
    s->max_header_bytes = (int64_t)64 << 10;
    s->max_queue = 1024;
    s->idle_timeout_s = 60;
    s->header_timeout_s = 10;
    s->request_timeout_s = 0;
    s->shutdown_grace_s = 10;
    s->max_connections = 4096;
    s->log_requests = false;
    snprintf(s->log_level, sizeof s->log_level, "info");
}

// Finds a setting by JSON key or flag name (dashes and underscores are interchangeable).
static const struct set_def *set__find(const char *name) {
    for (int i = 0; i < SET__N; i++) {
        const char *a = set__defs[i].key, *b = name;
        while (*a && (*a == *b || (*a == '_' && *b == '-'))) a++, b++;
        if (*a == '\0' && *b == '\0') return &set__defs[i];
    }
    return NULL;
}

// The setting closest to a name nobody defined (edit distance, '-' and '_' alike), for the
// "did you mean" of an unknown-setting error; NULL when none is within a third of the name.
static const char *set__suggest(const char *name) {
    const char *best = NULL;
    int best_d = (int)strlen(name) / 3 + 1;
    for (int i = 0; i < SET__N; i++) {
        const char *k = set__defs[i].key;
        int n = (int)strlen(name), m = (int)strlen(k);
        if (n > 64 || m > 64) continue;
        int row[65];
        for (int j = 0; j <= m; j++)
            row[j] = j;
        for (int a = 1; a <= n; a++) {
            int diag = row[0];
            row[0] = a;
            for (int j = 1; j <= m; j++) {
                char x = name[a - 1] == '-' ? '_' : (char)tolower((unsigned char)name[a - 1]);
                int up = row[j], cost = x == k[j - 1] ? 0 : 1;
                int v = diag + cost;
                if (row[j] + 1 < v) v = row[j] + 1;
                if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
                row[j] = v, diag = up;
            }
        }
        if (row[m] < best_d) best_d = row[m], best = k;
    }
    return best;
}

// ERR_INVAL "unknown setting 'NAME'" with the closest known one and where the list is.
static int set__unknown(const char *prefix, const char *name) {
    const char *near = set__suggest(name);
    if (near)
        return err_set(ERR_INVAL, "unknown setting '%s%s' (did you mean '%s%s'? `keel serve "
                                  "--help` lists every setting)",
                       prefix, name, prefix, near);
    return err_set(ERR_INVAL, "unknown setting '%s%s' (`keel serve --help` lists every setting: "
                              "the flags' names with '_' for '-')",
                   prefix, name);
}

// ---- typed setters (shared by the JSON and flag readers)

static int set__range(const struct set_def *d, double v) {
    if (!(v >= d->min && v <= d->max))
        return err_set(ERR_INVAL, "setting '%s': %g is out of range [%g, %g]", d->key, v, d->min,
                       d->max);
    return 0;
}

static int set__string(struct srv_settings *s, const struct set_def *d, const char *v) {
    if (strlen(v) >= d->str_cap)
        return err_set(ERR_INVAL, "setting '%s': value is too long (%zu bytes, at most %zu)",
                       d->key, strlen(v), d->str_cap - 1);
    if (d->choices) {
        // Matches v against the '|'-separated list (an empty entry allows "").
        const char *c = d->choices;
        bool ok = false;
        size_t n = strlen(v);
        while (!ok) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && strncmp(c, v, n) == 0) ok = true;
            if (!bar) break;
            c = bar + 1;
        }
        if (!ok)
            return err_set(ERR_INVAL, "setting '%s': '%s' is not one of %s", d->key, v,
                           d->choices[0] == '|' ? d->choices + 1 : d->choices);
    }
    memcpy((char *)s + d->offset, v, strlen(v) + 1);
    return 0;
}

static int set__number(struct srv_settings *s, const struct set_def *d, double v) {
    int rc = set__range(d, v);
    if (rc) return rc;
    void *p = (char *)s + d->offset;
    switch (d->type) {
    case SET_INT:
    case SET_I64:
        if (v != floor(v))
            return err_set(ERR_INVAL, "setting '%s': expected an integer, got %g", d->key, v);
        if (d->type == SET_INT) *(int *)p = (int)v;
        else *(int64_t *)p = (int64_t)v;
        return 0;
    case SET_DOUBLE: *(double *)p = v; return 0;
    default: return err_set(ERR_INTERNAL, "setting '%s' is not numeric", d->key);
    }
}

static int set__devices(struct srv_settings *s, const struct set_def *d, const int *ids, int n) {
    if (n < 1 || n > SRV_SETTINGS_MAX_DEVICES)
        return err_set(ERR_INVAL, "setting '%s': expected 1 to %d device ids, got %d", d->key,
                       SRV_SETTINGS_MAX_DEVICES, n);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0)
            return err_set(ERR_INVAL, "setting '%s': device id %d is negative", d->key, ids[i]);
        int rc = set__range(d, ids[i]);
        if (rc) return rc;
        for (int j = 0; j < i; j++)
            if (ids[j] == ids[i])
                return err_set(ERR_INVAL, "setting '%s': device %d is listed twice (each GPU "
                                          "holds one rank)", d->key, ids[i]);
        s->devices[i] = ids[i];
    }
    s->n_devices = n;
    s->devices_given = true;
    return 0;
}

// ---- JSON

const char *srv_json_type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown value";
}

static int set__apply_json(struct srv_settings *s, const struct set_def *d, const cJSON *v) {
    static const char *want[] = {"a string", "an integer", "an integer", "a number", "a boolean",
                                 "an array of integers"};
    // "device": N names a GPU, as --device N does.
    if (!strcmp(d->key, "device") && cJSON_IsNumber(v)) d = set__find("devices");
    bool ok = false;
    switch (d->type) {
    case SET_STR: ok = cJSON_IsString(v) || cJSON_IsNull(v); break;
    case SET_INT:
    case SET_I64:
    case SET_DOUBLE: ok = cJSON_IsNumber(v); break;
    case SET_BOOL: ok = cJSON_IsBool(v); break;
    case SET_INT_LIST: ok = cJSON_IsArray(v) || cJSON_IsNumber(v); break;
    }
    if (!ok)
        return err_set(ERR_INVAL, "setting '%s': expected %s, got %s", d->key, want[d->type],
                       srv_json_type_name(v));
    switch (d->type) {
    case SET_STR: return set__string(s, d, cJSON_IsNull(v) ? "" : v->valuestring);
    case SET_BOOL: *(bool *)((char *)s + d->offset) = cJSON_IsTrue(v); return 0;
    case SET_INT_LIST: {
        int ids[SRV_SETTINGS_MAX_DEVICES], n = 0;
        if (cJSON_IsNumber(v)) {
            ids[n++] = v->valueint;
        } else {
            const cJSON *it;
            cJSON_ArrayForEach(it, v) {
                if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
                    return err_set(ERR_INVAL, "setting '%s': expected an array of integers, "
                                              "found %s", d->key, srv_json_type_name(it));
                if (n == SRV_SETTINGS_MAX_DEVICES)
                    return err_set(ERR_INVAL, "setting '%s': more than %d devices", d->key,
                                   SRV_SETTINGS_MAX_DEVICES);
                ids[n++] = it->valueint;
            }
        }
        return set__devices(s, d, ids, n);
    }
    default: return set__number(s, d, v->valuedouble);
    }
}

int srv_settings_parse_json(struct srv_settings *s, const char *json, size_t len) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        return err_set(ERR_FORMAT, "config is not valid JSON (error near byte %ld)", off);
    }
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = err_set(ERR_FORMAT, "config must be a JSON object, got %s", srv_json_type_name(root));
        goto out;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "limits") == 0 && cJSON_IsObject(item)) {
            const cJSON *lim;
            cJSON_ArrayForEach(lim, item) {
                const struct set_def *d = set__find(lim->string);
                if (!d || !d->limit || strchr(lim->string, '-')) {
                    rc = set__unknown("limits.", lim->string);
                    goto out;
                }
                if ((rc = set__apply_json(s, d, lim)) != 0) goto out;
            }
            continue;
        }
        const struct set_def *d = set__find(item->string);
        if (!d || strchr(item->string, '-')) {
            rc = set__unknown("", item->string);
            goto out;
        }
        if ((rc = set__apply_json(s, d, item)) != 0) goto out;
    }
out:
    cJSON_Delete(root);
    return rc;
}

int srv_settings_load_file(struct srv_settings *s, const char *path) {
    char *buf = NULL;
    size_t len = 0;
    int rc = file_read_all(path, (size_t)16 << 20, &buf, &len);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", err_msg());
        return err_set(rc, "cannot read config file: %s", msg);
    }
    rc = srv_settings_parse_json(s, buf, len);
    free(buf);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", err_msg());
        err_set(rc, "%s: %s", path, msg);
    }
    return rc;
}

// ---- flags

static int set__parse_number(const struct set_def *d, const char *v, double *out) {
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno == ERANGE || !isfinite(x))
        return err_set(ERR_INVAL, "setting '%s': expected a number, got '%s'", d->key, v);
    *out = x;
    return 0;
}

// `--device N` (a GPU ordinal rather than a backend name) keeps its old meaning: devices [N].
static bool set__device_ordinal(const struct set_def *d, const char *value) {
    if (strcmp(d->key, "device") != 0 || !*value) return false;
    for (const char *c = value; *c; c++)
        if (*c < '0' || *c > '9') return false;
    return true;
}

int srv_settings_set(struct srv_settings *s, const char *name, const char *value) {
    const struct set_def *d = set__find(name);
    if (!d) return set__unknown("", name);
    if (set__device_ordinal(d, value)) d = set__find("devices");
    switch (d->type) {
    case SET_STR: return set__string(s, d, value);
    case SET_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "1")) *(bool *)((char *)s + d->offset) = true;
        else if (!strcmp(value, "false") || !strcmp(value, "0"))
            *(bool *)((char *)s + d->offset) = false;
        else return err_set(ERR_INVAL, "setting '%s': expected true or false, got '%s'", d->key, value);
        return 0;
    case SET_INT_LIST: {
        int ids[SRV_SETTINGS_MAX_DEVICES], n = 0;
        const char *p = value;
        while (*p) {
            char *end = NULL;
            errno = 0;
            long x = strtol(p, &end, 10);
            if (end == p || errno || (*end && *end != ','))
                return err_set(ERR_INVAL, "setting '%s': expected ids like 0,1, got '%s'", d->key,
                               value);
            if (n == SRV_SETTINGS_MAX_DEVICES)
                return err_set(ERR_INVAL, "setting '%s': more than %d devices", d->key,
                               SRV_SETTINGS_MAX_DEVICES);
            ids[n++] = (int)(x < -1 ? -1 : x > 1 << 20 ? 1 << 20 : x);
            p = *end ? end + 1 : end;
        }
        return set__devices(s, d, ids, n);
    }
    default: {
        double x = 0;
        int rc = set__parse_number(d, value, &x);
        return rc ? rc : set__number(s, d, x);
    }
    }
}

int srv_settings_from_args(struct srv_settings *s, int argc, char **argv, bool *help) {
    srv_settings_defaults(s);
    *help = false;
    // --help wins over everything, and --config is applied before any other flag, wherever it is.
    const char *config = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            *help = true;
            return 0;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return err_set(ERR_INVAL, "--config needs a file name");
            config = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            config = argv[i] + 9;
        }
    }
    if (config) {
        int rc = srv_settings_load_file(s, config);
        if (rc) return rc;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return err_set(ERR_INVAL, "unexpected argument '%s' (flags look like --name value)", a);
        char name[128];
        const char *eq = strchr(a + 2, '=');
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n == 0 || n >= sizeof name) return err_set(ERR_INVAL, "bad flag '%s'", a);
        memcpy(name, a + 2, n);
        name[n] = '\0';
        if (!strcmp(name, "config")) {
            if (!eq) i++;
            continue;
        }
        const struct set_def *d = set__find(name);
        if (!d || strchr(name, '_')) return err_set(ERR_INVAL, "unknown flag '--%s' (see --help)", name);
        const char *value;
        if (eq) value = eq + 1;
        else if (d->type == SET_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            value = "true";
        else if (i + 1 < argc) value = argv[++i];
        else return err_set(ERR_INVAL, "flag '--%s' needs a value", name);
        int rc = srv_settings_set(s, name, value);
        if (rc) return rc;
    }
    int rc = srv_settings_resolve_devices(s);
    return rc ? rc : srv_settings_validate(s);
}

int srv_settings_resolve_devices(struct srv_settings *s) {
    int tp = s->tensor_parallel_size;
    if (tp != 0 && (tp < 1 || tp > SRV_SETTINGS_MAX_TP))
        return err_set(ERR_INVAL, "setting 'tensor_parallel_size': %d is out of range [1, %d]", tp,
                       SRV_SETTINGS_MAX_TP);
    if (s->devices_given) {
        if (s->n_devices > SRV_SETTINGS_MAX_TP)
            return err_set(ERR_INVAL, "setting 'devices': %d devices, but tensor parallelism "
                                      "takes 1 to %d", s->n_devices, SRV_SETTINGS_MAX_TP);
        if (tp != 0 && tp != s->n_devices)
            return err_set(ERR_INVAL, "settings 'tensor_parallel_size' (%d) and 'devices' (%d "
                                      "ids) disagree: give one, or make them match",
                           tp, s->n_devices);
        s->tensor_parallel_size = s->n_devices;
        return 0;
    }
    if (tp == 0) tp = 1;
    for (int i = 0; i < tp; i++) s->devices[i] = i;
    s->n_devices = tp;
    s->tensor_parallel_size = tp;
    return 0;
}

int srv_settings_validate(const struct srv_settings *s) {
    enum log_level lvl;
    if (log_parse_level(s->log_level, &lvl) != 0)
        return err_set(ERR_INVAL, "setting 'log_level': '%s' is not one of debug, info, warn, "
                                  "error, off", s->log_level);
    if (s->max_num_batched_tokens < s->max_num_seqs)
        return err_set(ERR_INVAL, "setting 'max_num_batched_tokens' (%d) must be at least "
                                  "max_num_seqs (%d)", s->max_num_batched_tokens, s->max_num_seqs);
    if (s->host[0] == '\0') return err_set(ERR_INVAL, "setting 'host' must not be empty");
    if (s->tensor_parallel_size > 0 && s->tensor_parallel_size != s->n_devices)
        return err_set(ERR_INVAL, "settings 'tensor_parallel_size' (%d) and 'devices' (%d ids) "
                                  "disagree", s->tensor_parallel_size, s->n_devices);
    return 0;
}

// ---- --help and the JSON dump

static void set__value_text(const struct srv_settings *s, const struct set_def *d, char *buf,
                            size_t cap) {
    const void *p = (const char *)s + d->offset;
    switch (d->type) {
    case SET_STR: snprintf(buf, cap, "\"%s\"", (const char *)p); break;
    case SET_INT: snprintf(buf, cap, "%d", *(const int *)p); break;
    case SET_I64: snprintf(buf, cap, "%lld", (long long)*(const int64_t *)p); break;
    case SET_DOUBLE: snprintf(buf, cap, "%g", *(const double *)p); break;
    case SET_BOOL: snprintf(buf, cap, "%s", *(const bool *)p ? "true" : "false"); break;
    case SET_INT_LIST: {
        size_t n = 0;
        buf[0] = '\0';
        for (int i = 0; i < s->n_devices && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%d", i ? "," : "", s->devices[i]);
        break;
    }
    }
}

void srv_settings_help(FILE *f) {
    static const char *types[] = {"STR", "INT", "INT", "NUM", "BOOL", "IDS"};
    struct srv_settings def;
    srv_settings_defaults(&def);
    fprintf(f, "usage: keel serve [--config FILE] [--name VALUE ...]\n\n"
               "Every setting can be given in a JSON config file (key: the name with '_') and\n"
               "overridden by a flag. Settings, with their defaults:\n\n"
               "  --config FILE                  JSON config file (unknown keys are errors)\n");
    for (int i = 0; i < SET__N; i++) {
        const struct set_def *d = &set__defs[i];
        char flag[64], val[128];
        snprintf(flag, sizeof flag, "--%s", d->key);
        for (char *c = flag; *c; c++)
            if (*c == '_') *c = '-';
        set__value_text(&def, d, val, sizeof val);
        fprintf(f, "  %-28s %-4s %s (default: %s)\n", flag, types[d->type], d->help, val);
    }
    fprintf(f, "  --help                         this list\n");
}

char *srv_settings_json(const struct srv_settings *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (int i = 0; i < SET__N; i++) {
        const struct set_def *d = &set__defs[i];
        const void *p = (const char *)s + d->offset;
        switch (d->type) {
        case SET_STR: {
            const char *v = (const char *)p;
            if (!strcmp(d->key, "api_key") && v[0]) v = "(set)";
            cJSON_AddStringToObject(o, d->key, v);
            break;
        }
        case SET_INT: cJSON_AddNumberToObject(o, d->key, *(const int *)p); break;
        case SET_I64: cJSON_AddNumberToObject(o, d->key, (double)*(const int64_t *)p); break;
        case SET_DOUBLE: cJSON_AddNumberToObject(o, d->key, *(const double *)p); break;
        case SET_BOOL: cJSON_AddBoolToObject(o, d->key, *(const bool *)p); break;
        case SET_INT_LIST:
            cJSON_AddItemToObject(o, d->key, cJSON_CreateIntArray(s->devices, s->n_devices));
            break;
        }
    }
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return out;
}

// `keel plan`: prints the memory plan for a model folder without loading weights or needing a
// GPU (memory/plan.h). Only config.json is read; the weights are sized from its shapes exactly
// as the loader will carve them.
#include "common/err.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/graph.h"
#include "models/model.h"
#include "models/tp.h"
#include "models/safetensors.h"
#include "server/cli.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_DEVICE_BYTES ((size_t)80 << 30)

static void usage(FILE *f) {
    fprintf(f,
            "usage: keel plan --model DIR [options]\n"
            "\n"
            "Prints where every byte of the GPU goes (weights, cuBLAS workspace, activation\n"
            "scratch, logits, sampling, KV blocks) and what that means in tokens of KV and\n"
            "sequences at full context. Reads only DIR/config.json; needs no GPU.\n"
            "\n"
            "options:\n"
            "  --model DIR                    model folder holding config.json (required)\n"
            "  --device-memory SIZE           plan for a device of SIZE bytes: 80GiB, 24GB, 512MiB,\n"
            "                                 or plain bytes (KiB/MiB/GiB/TiB and K/M/G/T are powers\n"
            "                                 of 1024, KB/MB/GB/TB powers of 1000); free memory is\n"
            "                                 taken as SIZE minus a typical 512 MiB CUDA context.\n"
            "                                 With several GPUs one SIZE applies to every GPU, or\n"
            "                                 give one per GPU: 80GiB,24GiB\n"
            "  --device N                     read total and free memory of CUDA device N\n"
            "                                 (default without either: an 80 GiB device)\n"
            "  --tensor-parallel-size N       split the model over N GPUs (1 to 8; Megatron: heads,\n"
            "                                 MLP and vocab) and print one plan per GPU\n"
            "  --devices 0,1                  the GPUs, one per rank (sets the size): their memory\n"
            "                                 is read unless --device-memory is given, in which\n"
            "                                 case the ids only label the plan\n"
            "  --gpu-memory-utilization F     fraction of the device keel may use (default 0.9)\n"
            "  --max-model-len N              longest sequence (default min(config's\n"
            "                                 max_position_embeddings, 32768))\n"
            "  --max-num-seqs N               sequences per step (default 256)\n"
            "  --max-num-batched-tokens N     tokens per step (default 8192)\n"
            "  --block-size N                 tokens per KV block: 8, 16, 32, 64, 128 (default 16)\n"
            "  --num-kv-blocks N              cap the KV pool at N blocks (default: no cap)\n"
            "  --json                         print the plan as JSON (bytes, integers)\n"
            "\n"
            "exit status: 0 it fits, 2 bad usage, 3 it does not fit, 4 model config missing or\n"
            "invalid, 1 anything else.\n");
}

// ---- argument parsing

// Parses a byte count with an optional unit (see usage). Returns 0 or ERR_INVAL.
static int parse_bytes(const char *s, size_t *out) {
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0) || !isfinite(v))
        return err_set(ERR_INVAL, "--device-memory: '%s' is not a positive size", s);
    while (isspace((unsigned char)*end)) end++;
    static const struct {
        const char *unit;
        double mul;
    } units[] = {
        {"", 1},           {"B", 1},          {"K", 0x1p10},     {"KiB", 0x1p10},
        {"Ki", 0x1p10},    {"KB", 1e3},       {"M", 0x1p20},     {"MiB", 0x1p20},
        {"Mi", 0x1p20},    {"MB", 1e6},       {"G", 0x1p30},     {"GiB", 0x1p30},
        {"Gi", 0x1p30},    {"GB", 1e9},       {"T", 0x1p40},     {"TiB", 0x1p40},
        {"Ti", 0x1p40},    {"TB", 1e12},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].unit) == 0) {
            double bytes = floor(v * units[i].mul);
            if (bytes < 1 || bytes > 0x1p60)
                return err_set(ERR_INVAL, "--device-memory: '%s' is out of range", s);
            *out = (size_t)bytes;
            return 0;
        }
    }
    return err_set(ERR_INVAL,
                   "--device-memory: unknown unit in '%s' (use B, KiB, MiB, GiB, TiB, KB, MB, GB "
                   "or TB)",
                   s);
}

static int parse_int(const char *opt, const char *s, int min, int *out) {
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < min || v > 1000000000)
        return err_set(ERR_INVAL, "%s: '%s' is not an integer >= %d", opt, s, min);
    *out = (int)v;
    return 0;
}

static int parse_util(const char *s, double *out) {
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !(v > 0.0 && v <= 1.0))
        return err_set(ERR_INVAL, "--gpu-memory-utilization: '%s' is not a number in (0, 1]", s);
    *out = v;
    return 0;
}

static int parse_tp(const char *s, int *out) {
    int rc = parse_int("--tensor-parallel-size", s, 1, out);
    if (rc || *out <= MEM_PLAN_MAX_TP) return rc;
    return err_set(ERR_INVAL, "--tensor-parallel-size: %d is more than %d GPUs", *out,
                   MEM_PLAN_MAX_TP);
}

// "0,1,3": 1 to MEM_PLAN_MAX_TP distinct non-negative ordinals.
static int parse_ids(const char *s, int *ids, int *n) {
    *n = 0;
    const char *p = s;
    do {
        errno = 0;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || errno || (*end && *end != ',') || (*end == ',' && !end[1]))
            return err_set(ERR_INVAL, "--devices: expected ids like 0,1, got '%s'", s);
        if (v < 0 || v > 1 << 20)
            return err_set(ERR_INVAL, "--devices: %ld is not a device ordinal", v);
        if (*n == MEM_PLAN_MAX_TP)
            return err_set(ERR_INVAL, "--devices: more than %d GPUs", MEM_PLAN_MAX_TP);
        for (int i = 0; i < *n; i++)
            if (ids[i] == (int)v)
                return err_set(ERR_INVAL, "--devices: device %ld is listed twice", v);
        ids[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    } while (*p);
    return 0;
}

struct plan_args {
    const char *model;
    const char *device_memory; // as given
    int device;                // -1: none
    int tp;                    // --tensor-parallel-size, 0: not given
    int devices[MEM_PLAN_MAX_TP];
    int n_devices;             // --devices, 0: not given
    const char *devices_text;  // as given
    bool json;
    // overrides; < 0 (or 0 for util) when not given
    double util;
    int max_model_len, max_num_seqs, max_num_batched_tokens, block_size, num_kv_blocks;
};

// Returns 0, ERR_INVAL (message set), or 1 for --help.
static int parse_args(int argc, char **argv, struct plan_args *a) {
    *a = (struct plan_args){.device = -1, .max_model_len = -1, .max_num_seqs = -1,
                            .max_num_batched_tokens = -1, .block_size = -1,
                            .num_kv_blocks = -1};
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) return 1;
        if (strcmp(arg, "--json") == 0) {
            a->json = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return err_set(ERR_INVAL, "unexpected argument '%s'", arg);
        // --name value or --name=value
        char name[64];
        const char *val;
        const char *eq = strchr(arg, '=');
        if (eq) {
            size_t n = (size_t)(eq - arg);
            if (n >= sizeof name) return err_set(ERR_INVAL, "unknown option '%s'", arg);
            memcpy(name, arg, n);
            name[n] = '\0';
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
            if (i + 1 >= argc) return err_set(ERR_INVAL, "%s needs a value", arg);
            val = argv[++i];
        }
        int rc = 0;
        if (strcmp(name, "--model") == 0)
            a->model = val;
        else if (strcmp(name, "--device-memory") == 0)
            a->device_memory = val;
        else if (strcmp(name, "--device") == 0)
            rc = parse_int(name, val, 0, &a->device);
        else if (strcmp(name, "--tensor-parallel-size") == 0)
            rc = parse_tp(val, &a->tp);
        else if (strcmp(name, "--devices") == 0)
            rc = parse_ids(val, a->devices, &a->n_devices), a->devices_text = val;
        else if (strcmp(name, "--gpu-memory-utilization") == 0)
            rc = parse_util(val, &a->util);
        else if (strcmp(name, "--max-model-len") == 0)
            rc = parse_int(name, val, 1, &a->max_model_len);
        else if (strcmp(name, "--max-num-seqs") == 0)
            rc = parse_int(name, val, 1, &a->max_num_seqs);
        else if (strcmp(name, "--max-num-batched-tokens") == 0)
            rc = parse_int(name, val, 1, &a->max_num_batched_tokens);
        else if (strcmp(name, "--block-size") == 0)
            rc = parse_int(name, val, 1, &a->block_size);
        else if (strcmp(name, "--num-kv-blocks") == 0)
            rc = parse_int(name, val, 0, &a->num_kv_blocks);
        else
            return err_set(ERR_INVAL, "unknown option '%s'", name);
        if (rc) return rc;
    }
    if (!a->model) return err_set(ERR_INVAL, "--model DIR is required");
    if (a->device_memory && a->device >= 0)
        return err_set(ERR_INVAL, "give --device-memory or --device, not both");
    if (a->device >= 0 && a->n_devices > 0)
        return err_set(ERR_INVAL, "give --device N or --devices LIST, not both");
    if (a->device >= 0) {
        a->devices[0] = a->device;
        a->n_devices = 1;
    }
    if (a->tp > 0 && a->n_devices > 0 && a->tp != a->n_devices)
        return err_set(ERR_INVAL, "--tensor-parallel-size %d and --devices (%d ids) disagree: "
                                  "give one, or make them match", a->tp, a->n_devices);
    return 0;
}

// ---- the command

// The device's memory and a line saying where it came from.
static int device_memory(const struct plan_args *a, size_t *total, size_t *free_b, char *src,
                         size_t src_n) {
    if (a->device >= 0) {
        int rc = mem_device_info(a->device, total, free_b);
        if (rc) return rc;
        snprintf(src, src_n, "CUDA device %d (measured)", a->device);
        return 0;
    }
    if (a->device_memory) {
        int rc = parse_bytes(a->device_memory, total);
        if (rc) return rc;
        if (*total <= MEM_PLAN_CONTEXT_BYTES)
            return err_set(ERR_INVAL, "--device-memory %s is not more than the %zu MiB a CUDA "
                                      "context takes",
                           a->device_memory, MEM_PLAN_CONTEXT_BYTES >> 20);
        snprintf(src, src_n, "--device-memory %s, free assumed total - %zu MiB (CUDA context)",
                 a->device_memory, MEM_PLAN_CONTEXT_BYTES >> 20);
    } else {
        *total = DEFAULT_DEVICE_BYTES;
        snprintf(src, src_n, "assumed 80 GiB device (no --device-memory or --device), free "
                             "assumed total - %zu MiB (CUDA context)",
                 MEM_PLAN_CONTEXT_BYTES >> 20);
    }
    *free_b = *total - MEM_PLAN_CONTEXT_BYTES;
    return 0;
}

// The memory of each of tp GPUs and a line saying where it came from: measured for --devices
// (or --device) without --device-memory; else --device-memory, one size for every GPU or one per
// GPU; else 80 GiB each. Ids default to 0..tp-1.
static int gpus_memory(const struct plan_args *a, int tp, size_t *total, size_t *free_b,
                       int *ids, char *src, size_t src_n) {
    for (int r = 0; r < tp; r++) ids[r] = a->n_devices ? a->devices[r] : r;
    if (a->n_devices && !a->device_memory) {
        for (int r = 0; r < tp; r++) {
            int rc = mem_device_info(ids[r], &total[r], &free_b[r]);
            if (rc) return rc;
        }
        snprintf(src, src_n, "CUDA devices %s (measured)", a->devices_text);
        return 0;
    }
    if (!a->device_memory) {
        for (int r = 0; r < tp; r++) {
            total[r] = DEFAULT_DEVICE_BYTES;
            free_b[r] = total[r] - MEM_PLAN_CONTEXT_BYTES;
        }
        snprintf(src, src_n, "assumed %d GPUs of 80 GiB (no --device-memory or --devices), free "
                             "assumed total - %zu MiB (CUDA context)",
                 tp, MEM_PLAN_CONTEXT_BYTES >> 20);
        return 0;
    }
    // One size, or one per GPU, separated by commas.
    char list[256];
    snprintf(list, sizeof list, "%s", a->device_memory);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (n == tp)
            return err_set(ERR_INVAL, "--device-memory %s: more sizes than the %d GPUs",
                           a->device_memory, tp);
        struct plan_args one = *a;
        one.device_memory = tok;
        one.device = -1;
        char ignored[160];
        int rc = device_memory(&one, &total[n], &free_b[n], ignored, sizeof ignored);
        if (rc) return rc;
        n++;
    }
    if (n != 1 && n != tp)
        return err_set(ERR_INVAL, "--device-memory %s: %d sizes for %d GPUs (give one for all, "
                                  "or one per GPU)", a->device_memory, n, tp);
    for (int r = n; r < tp; r++) {
        total[r] = total[0];
        free_b[r] = free_b[0];
    }
    snprintf(src, src_n, "--device-memory %s%s, free assumed total - %zu MiB (CUDA context)",
             a->device_memory, n == 1 ? " on every GPU" : "", MEM_PLAN_CONTEXT_BYTES >> 20);
    return 0;
}

// Parameters the config implies, as the checkpoint stores them (before fusion).
static int64_t config_params(const struct model_config *c) {
    int64_t dim = c->dim, hid = c->hidden_dim, hd = c->head_dim, V = c->vocab_size;
    int64_t qkv = model_config_qkv_dim(c), q = model_config_q_dim(c);
    int64_t layer = dim + qkv * dim + (c->qkv_bias ? qkv : 0) + (c->qk_norm ? 2 * hd : 0) +
                    dim * q + dim + 2 * hid * dim + dim * hid;
    return V * dim + c->n_layers * layer + dim + (c->tie_word_embeddings ? 0 : V * dim);
}

// What the safetensors headers say, when the folder has any: the weights region is sized from
// the config's shapes (the loader converts every dtype to bf16 and fuses QKV and gate/up), so
// the headers are a cross-check. Returns 0 (line written) or the st_open error for a checkpoint
// that is present but broken.
static int checkpoint_line(const char *dir, const struct model_config *cfg, char *line,
                           size_t n) {
    struct st_checkpoint ck;
    int rc = st_open(&ck, dir);
    if (rc == ERR_NOT_FOUND) {
        snprintf(line, n, "no safetensors in the folder: sized from config.json shapes (bf16)");
        return 0;
    }
    if (rc) return rc;
    int64_t params = 0;
    int n_by_dtype[3] = {0};
    for (int i = 0; i < ck.n_tensors; i++) {
        params += ck.tensors[i].n_elems;
        if ((int)ck.tensors[i].dtype < 3) n_by_dtype[ck.tensors[i].dtype]++;
    }
    int n_kinds = (n_by_dtype[ST_BF16] > 0) + (n_by_dtype[ST_F16] > 0) + (n_by_dtype[ST_F32] > 0);
    const char *dtype = n_kinds > 1 ? "mixed"
                        : n_by_dtype[ST_F32] ? "F32"
                        : n_by_dtype[ST_F16] ? "F16"
                                             : "BF16";
    int64_t want = config_params(cfg);
    double mib = (double)ck.data_bytes / (double)(1 << 20);
    int w = snprintf(line, n, "checkpoint of %d file%s, %d tensors, %lld parameters (%s, %.2f %s "
                              "on disk), loaded as bf16",
                     ck.n_files, ck.n_files == 1 ? "" : "s", ck.n_tensors, (long long)params,
                     dtype, mib >= 1024 ? mib / 1024 : mib, mib >= 1024 ? "GiB" : "MiB");
    if (params != want && w > 0 && (size_t)w < n)
        snprintf(line + w, n - (size_t)w,
                 "; WARNING: config.json implies %lld parameters, so the loader will refuse "
                 "this checkpoint",
                 (long long)want);
    st_close(&ck);
    return 0;
}

// The plan's JSON plus what `keel plan` knows beyond it: the model, where the device's numbers
// came from, and whether it fits.
static char *plan_json(const struct mem_plan *p, const struct mem_plan_settings *set,
                       const struct plan_args *a, const struct model_config *cfg,
                       const char *src, const char *ckpt, const char *error) {
    char *base = mem_plan_json(p, set);
    cJSON *o = base ? cJSON_Parse(base) : NULL;
    free(base);
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "architecture", cfg->arch_name);
    cJSON_AddStringToObject(o, "device_memory_source", src);
    cJSON_AddStringToObject(o, "weights_source", ckpt);
    cJSON_AddBoolToObject(o, "fits", error == NULL);
    if (error) cJSON_AddStringToObject(o, "error", error);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

// keel's defaults, then the config's context length, then the flags.
static int plan_settings(const struct plan_args *a, const struct model_config *cfg,
                         struct mem_plan_settings *set) {
    mem_plan_settings_defaults(set, cfg->max_position_embeddings);
    if (a->util > 0) set->gpu_memory_utilization = a->util;
    if (a->max_model_len > 0) set->max_model_len = a->max_model_len;
    if (a->max_num_seqs > 0) set->max_num_seqs = a->max_num_seqs;
    if (a->max_num_batched_tokens > 0) set->max_num_batched_tokens = a->max_num_batched_tokens;
    if (a->block_size > 0) set->block_size = a->block_size;
    if (a->num_kv_blocks >= 0) set->num_kv_blocks = a->num_kv_blocks;
    if (cfg->max_position_embeddings > 0 && set->max_model_len > cfg->max_position_embeddings)
        return err_set(ERR_INVAL,
                       "--max-model-len %d is longer than the model's max_position_embeddings "
                       "(%d in %s/config.json)",
                       set->max_model_len, cfg->max_position_embeddings, a->model);
    return 0;
}

static void print_header(const struct plan_args *a, const struct model_config *cfg,
                         const char *ckpt, const char *src) {
    printf("model: %s (%s): %d layers, dim %d, hidden %d, %d heads / %d KV heads of %d, "
           "vocab %d%s\n",
           a->model, cfg->arch_name, cfg->n_layers, cfg->dim, cfg->hidden_dim, cfg->n_heads,
           cfg->n_kv_heads, cfg->head_dim, cfg->vocab_size,
           cfg->tie_word_embeddings ? ", tied embeddings" : "");
    printf("weights: %s\n", ckpt);
    printf("memory: %s\n", src);
}

// `keel plan` over tp GPUs: one plan per GPU (mem_plan_compute_tp), the table with a column per
// GPU, or the JSON with a "gpus" array.
static int plan_tp(const struct plan_args *a, int tp, const struct model_config *cfg,
                   struct mem_plan_settings *set, const char *ckpt) {
    size_t total[MEM_PLAN_MAX_TP], free_b[MEM_PLAN_MAX_TP];
    char src[400];
    int rc = gpus_memory(a, tp, total, free_b, set->device_ids, src, sizeof src);
    if (rc) {
        fprintf(stderr, "keel plan: %s\n", err_msg());
        return rc == ERR_INVAL ? SRV_EXIT_USAGE : SRV_EXIT_FAILURE;
    }
    set->n_device_ids = tp;
    set->tensor_parallel_size = tp;
    // As keel serve plans it: every rank keeps its decode graphs' reservation unless graphs are
    // off for tensor parallelism (KEEL_TP_GRAPHS=0) or at all (KEEL_CUDA_GRAPHS=0).
    set->cuda_graphs = model_tp_graphs_on() && model_graphs_enabled();
    struct mem_plan_shape shape;
    model_plan_shape(cfg, &shape);
    struct mem_plan plans[MEM_PLAN_MAX_TP];
    rc = mem_plan_compute_tp(&shape, set, tp, total, free_b, plans);
    if (rc == ERR_INVAL) {
        fprintf(stderr, "keel plan: %s\n", err_msg());
        return SRV_EXIT_USAGE;
    }
    char error[2048];
    snprintf(error, sizeof error, "%s", rc ? err_msg() : "");
    char *out = NULL;
    if (a->json) {
        char *base = mem_plan_json_tp(plans, tp, set);
        cJSON *o = base ? cJSON_Parse(base) : NULL;
        free(base);
        if (o) {
            cJSON_AddStringToObject(o, "model", a->model);
            cJSON_AddStringToObject(o, "architecture", cfg->arch_name);
            cJSON_AddStringToObject(o, "device_memory_source", src);
            cJSON_AddStringToObject(o, "weights_source", ckpt);
            cJSON_AddBoolToObject(o, "fits", rc == 0);
            if (rc) cJSON_AddStringToObject(o, "error", error);
            out = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
        }
    } else {
        print_header(a, cfg, ckpt, src);
        out = mem_plan_table_tp(plans, tp, set);
    }
    if (!out) {
        fprintf(stderr, "keel plan: out of memory formatting the plan\n");
        return SRV_EXIT_FAILURE;
    }
    fputs(out, stdout);
    if (a->json) fputc('\n', stdout);
    free(out);
    if (rc) {
        fprintf(stderr, "keel plan: does not fit: %s\n", error);
        return srv_exit_code(rc);
    }
    return SRV_EXIT_OK;
}

int srv_cmd_plan(int argc, char **argv) {
    struct plan_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == 1) {
        usage(stdout);
        return SRV_EXIT_OK;
    }
    if (rc) {
        fprintf(stderr, "keel plan: %s\n\n", err_msg());
        usage(stderr);
        return SRV_EXIT_USAGE;
    }
    struct model_config cfg;
    struct mem_plan_settings set;
    size_t total = 0, free_b = 0;
    char src[160], ckpt[320];
    if ((rc = model_config_load(a.model, &cfg)) || (rc = plan_settings(&a, &cfg, &set)) ||
        (rc = checkpoint_line(a.model, &cfg, ckpt, sizeof ckpt))) {
        fprintf(stderr, "keel plan: %s\n", err_msg());
        return srv_exit_code(rc);
    }
    int tp = a.tp > 0 ? a.tp : a.n_devices > 0 ? a.n_devices : 1;
    if (tp > 1) return plan_tp(&a, tp, &cfg, &set, ckpt);
    // --devices N alone is --device N.
    if (a.n_devices == 1 && !a.device_memory) a.device = a.devices[0];
    if ((rc = device_memory(&a, &total, &free_b, src, sizeof src))) {
        fprintf(stderr, "keel plan: %s\n", err_msg());
        return rc == ERR_INVAL ? SRV_EXIT_USAGE : SRV_EXIT_FAILURE;
    }

    struct mem_plan_shape shape;
    model_plan_shape(&cfg, &shape);
    // The plan keel serve makes on a GPU: decode graphs on (their reservation in the budget)
    // unless KEEL_CUDA_GRAPHS=0 or KEEL_CUDA_GRAPH_MAX_SEQS=0 turn them off.
    set.cuda_graphs = model_graphs_enabled();
    struct mem_plan plan;
    rc = mem_plan_compute(&shape, &set, total, free_b, &plan);
    if (rc == ERR_INVAL) {
        fprintf(stderr, "keel plan: %s\n", err_msg());
        return SRV_EXIT_USAGE;
    }
    // A refusal still prints the plan as far as it got, then the reason and the fix.
    char error[1024];
    snprintf(error, sizeof error, "%s", rc ? err_msg() : "");
    char *out;
    if (a.json) {
        out = plan_json(&plan, &set, &a, &cfg, src, ckpt, rc ? error : NULL);
    } else {
        print_header(&a, &cfg, ckpt, src);
        out = mem_plan_table(&plan, &set);
    }
    if (!out) {
        fprintf(stderr, "keel plan: out of memory formatting the plan\n");
        return SRV_EXIT_FAILURE;
    }
    fputs(out, stdout);
    if (a.json) fputc('\n', stdout);
    free(out);
    if (rc) {
        fprintf(stderr, "keel plan: does not fit: %s\n", error);
        return srv_exit_code(rc);
    }
    return SRV_EXIT_OK;
}

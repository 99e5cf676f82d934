// `keel generate`: one prompt through the whole stack (config, tokenizer, memory plan, arena,
// weights, model) for quick runs and end-to-end tests.
//
//   keel generate --model DIR [--load-format auto|safetensors|dummy]
//                 (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N]
//                 [--temperature T] [--seed S] [--ignore-eos] [--device cpu|cuda]
//                 [--threads N] [--prefill-chunk N] [--json]
//
// Prints the completion's text, or with --json one object {"ids": [...], "text": "..."}
// ("text" is null when the model folder has no tokenizer.json: ids-only mode).
// The backend is picked in one place (open_backend), so the CUDA backend runs the same path.
// Generation runs through the engine (srv_engine_run_sync): the same scheduler, KV pool and
// sampler as `keel serve`, so a seed gives what the server gives.
#include "common/err.h"
#include "common/log.h"
#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "server/cli.h"
#include "server/engine.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GEN_BLOCK_SIZE 16
#define GEN_CHUNK 512 // prompt tokens per prefill step, unless --prefill-chunk says otherwise

struct gen_args {
    const char *model_dir, *load_format, *prompt, *prompt_ids, *device;
    int max_tokens, threads, prefill_chunk;
    float temperature;
    uint64_t seed;
    bool json, ignore_eos;
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: keel generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [options]\n"
            "\n"
            "  --model DIR           Hugging Face model folder (config.json, *.safetensors,\n"
            "                        tokenizer.json; the tokenizer is optional with --prompt-ids)\n"
            "  --load-format F       auto | safetensors | dummy (random weights)  [auto]\n"
            "  --prompt TEXT         the prompt, tokenized with the model's tokenizer\n"
            "  --prompt-ids LIST     the prompt as comma-separated token ids\n"
            "  --max-tokens N        tokens to generate at most  [16]\n"
            "  --temperature T       0 = greedy  [0]\n"
            "  --seed S              sampling seed  [0]\n"
            "  --ignore-eos          keep generating past the end-of-sequence token\n"
            "  --device D            cpu | cuda  [cuda when built with CUDA and a GPU is "
            "present]\n"
            "  --threads N           CPU backend threads, 0 = all cores  [0]\n"
            "  --prefill-chunk N     prompt tokens per prefill step (the activation scratch\n"
            "                        grows with it)  [512]\n"
            "  --json                print {\"ids\": [...], \"text\": \"...\"}\n");
}

// ---- arguments

static int parse_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return err_set(ERR_INVAL, "%s: \"%s\" is not an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct gen_args *a) {
    memset(a, 0, sizeof *a);
    a->load_format = "auto";
    a->max_tokens = 16;
    a->prefill_chunk = GEN_CHUNK;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--json")) {
            a->json = true;
            continue;
        }
        if (!strcmp(f, "--ignore-eos")) {
            a->ignore_eos = true;
            continue;
        }
        if (i + 1 >= argc) return err_set(ERR_INVAL, "unknown option or missing value: %s", f);
        const char *v = argv[++i];
        long n;
        int rc = 0;
        if (!strcmp(f, "--model"))
            a->model_dir = v;
        else if (!strcmp(f, "--load-format"))
            a->load_format = v;
        else if (!strcmp(f, "--prompt"))
            a->prompt = v;
        else if (!strcmp(f, "--prompt-ids"))
            a->prompt_ids = v;
        else if (!strcmp(f, "--device"))
            a->device = v;
        else if (!strcmp(f, "--max-tokens")) {
            if (!(rc = parse_int(f, v, 1, 1 << 20, &n))) a->max_tokens = (int)n;
        } else if (!strcmp(f, "--prefill-chunk")) {
            if (!(rc = parse_int(f, v, 1, 1 << 20, &n))) a->prefill_chunk = (int)n;
        } else if (!strcmp(f, "--threads")) {
            if (!(rc = parse_int(f, v, 0, 1024, &n))) a->threads = (int)n;
        } else if (!strcmp(f, "--seed")) {
            if (!(rc = parse_int(f, v, 0, 0x7fffffffffffffffL, &n))) a->seed = (uint64_t)n;
        } else if (!strcmp(f, "--temperature")) {
            char *end;
            a->temperature = strtof(v, &end);
            if (end == v || *end || !(a->temperature >= 0.0f) || a->temperature > 100.0f)
                rc = err_set(ERR_INVAL, "--temperature: \"%s\" is not a number in [0, 100]", v);
        } else
            return err_set(ERR_INVAL, "unknown option: %s", f);
        if (rc) return rc;
    }
    if (!a->model_dir) return err_set(ERR_INVAL, "--model DIR is required");
    if (!a->prompt == !a->prompt_ids)
        return err_set(ERR_INVAL, "give exactly one of --prompt TEXT and --prompt-ids LIST");
    return 0;
}

// "1,2,3" -> ids (malloc'd).
static int parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16, cnt = 0;
    int32_t *v = malloc(sizeof *v * cap);
    if (!v) return err_set(ERR_NOMEM, "prompt ids");
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX || (*end && *end != ',')) {
            free(v);
            return err_set(ERR_INVAL,
                           "--prompt-ids: \"%s\" is not a comma-separated list of "
                           "non-negative integers",
                           s);
        }
        if (cnt == cap) {
            int32_t *nv = realloc(v, sizeof *v * (cap *= 2));
            if (!nv) return free(v), err_set(ERR_NOMEM, "prompt ids");
            v = nv;
        }
        v[cnt++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    if (cnt == 0) return free(v), err_set(ERR_INVAL, "--prompt-ids: the list is empty");
    *ids = v;
    *n = cnt;
    return 0;
}

// ---- backend, memory and model

struct gen_run {
    struct model_config cfg;
    struct tok_tokenizer *tok; // NULL in ids-only mode
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    bool cuda;
    struct mem_arena arena;
    struct mem_plan plan;
    struct mem_plan_settings set;
    struct model m;
    bool weights_loaded, model_ready;
};

// The one switch point between backends: the plan's memory numbers, the arena's kind and the
// op table. A CPU "device" is the host: the plan is capped to exactly the KV blocks this one
// sequence needs, so its numbers are the arena's size.
static int open_backend(struct gen_run *r, const struct gen_args *a) {
    bool want_cuda = a->device ? !strcmp(a->device, "cuda") : kern_cuda_device_count() > 0;
    if (a->device && strcmp(a->device, "cuda") && strcmp(a->device, "cpu"))
        return err_set(ERR_INVAL, "--device: \"%s\" is not cpu or cuda", a->device);
    struct mem_plan_shape shape;
    model_plan_shape(&r->cfg, &shape);
    if (!want_cuda) {
        size_t host = (size_t)1 << 40; // the plan's budget; the pool cap decides the real size
        int rc = mem_plan_compute(&shape, &r->set, host, host, &r->plan);
        if (rc) return rc;
        if ((rc = mem_arena_init(&r->arena, MEM_HOST, 0, r->plan.arena_bytes, (size_t)4 << 20)))
            return rc;
        r->ops = &kern_cpu_ops;
        return kern_cpu_ctx_init(&r->ctx, a->threads);
    }
#ifdef KEEL_CUDA
    // The context first (its handle and kernels take device memory), so the free memory the
    // plan sees already accounts for it; the arena regions are bound after the arena exists.
    r->ops = &kern_cuda_ops;
    r->cuda = true;
    int rc = kern_cuda_ctx_init(&r->ctx, 0, NULL, 0, NULL, 0);
    if (rc) return rc;
    size_t total = 0, free_bytes = 0;
    rc = mem_device_info(0, &total, &free_bytes);
    if (rc) return rc;
    if ((rc = mem_plan_compute(&shape, &r->set, total, free_bytes, &r->plan))) return rc;
    if ((rc = mem_arena_init(&r->arena, MEM_DEVICE, 0, r->plan.arena_bytes, (size_t)64 << 20)))
        return rc;
    void *ws, *op_scratch;
    if ((rc = mem_arena_carve(&r->arena, "workspace", r->plan.workspace_bytes, &ws))) return rc;
    if ((rc = mem_arena_carve(&r->arena, "sampling", r->plan.sampling_bytes, &op_scratch)))
        return rc;
    return kern_cuda_ctx_set_regions(r->ctx, ws, r->plan.workspace_bytes, op_scratch,
                                     r->plan.sampling_bytes);
#else
    return err_set(ERR_UNSUPPORTED, "--device cuda: this keel was built without CUDA (CUDA=0)");
#endif
}

static void close_run(struct gen_run *r) {
    if (r->model_ready) model_free(&r->m);
    if (r->weights_loaded) model_weights_free(&r->m.w);
#ifdef KEEL_CUDA
    if (r->cuda) kern_cuda_ctx_free(r->ctx);
#endif
    if (!r->cuda && r->ctx) kern_cpu_ctx_free(r->ctx);
    mem_arena_free(&r->arena);
    tok_free(r->tok);
}

// ---- generation

// One request through the engine, run synchronously on this thread: the scheduler chunks the
// prompt, the KV pool hands out blocks, and the sampler draws exactly as `keel serve` would.
static int generate(struct gen_run *r, const struct gen_args *a, const int32_t *prompt,
                    int n_prompt, int32_t *out, int *n_out) {
    *n_out = 0;
    struct srv_engine_config ec = {.max_num_seqs = r->set.max_num_seqs,
                                   .max_num_batched_tokens = r->set.max_num_batched_tokens,
                                   .max_model_len = r->set.max_model_len,
                                   .max_queue = 1};
    struct srv_engine *e = NULL;
    int rc = srv_engine_init(&e, &r->m, r->tok, &ec, NULL, NULL);
    if (rc) return rc;
    struct srv_request *req = calloc(1, sizeof *req);
    if (!req) {
        srv_engine_free(e);
        return err_set(ERR_NOMEM, "generate: request");
    }
    srv_sampling_defaults(&req->sp);
    req->id = 1;
    req->n = 1;
    req->n_prompt = n_prompt;
    req->prompt_ids = malloc(sizeof(int32_t) * n_prompt);
    req->sp.temperature = a->temperature;
    req->sp.has_seed = true;
    req->sp.seed = a->seed;
    req->sp.max_tokens = a->max_tokens;
    req->sp.ignore_eos = a->ignore_eos;
    if (!req->prompt_ids) {
        srv_request_free(req);
        srv_engine_free(e);
        return err_set(ERR_NOMEM, "generate: prompt");
    }
    memcpy(req->prompt_ids, prompt, sizeof(int32_t) * n_prompt);
    struct srv_event *evs = NULL;
    int n_evs = 0;
    rc = srv_engine_run_sync(e, req, &evs, &n_evs); // the engine owns req from here
    for (int i = 0; i < n_evs; i++) {
        for (int k = 0; k < evs[i].n_tokens && *n_out < a->max_tokens; k++)
            out[(*n_out)++] = evs[i].token_ids[k];
        if (!rc && evs[i].finish == SRV_FINISH_ERROR)
            rc = err_set(evs[i].error_code ? evs[i].error_code : ERR_INTERNAL, "%s",
                         evs[i].error_msg ? evs[i].error_msg : "the engine failed");
        srv_event_free(&evs[i]);
    }
    free(evs);
    srv_engine_free(e);
    return rc;
}

// ---- output

static int print_result(const struct gen_run *r, const struct gen_args *a, const int32_t *ids,
                        int n) {
    char *text = NULL;
    size_t len = 0;
    if (r->tok) {
        int rc = tok_decode(r->tok, ids, n, true, &text, &len);
        if (rc) return rc;
    }
    if (a->json) {
        cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "ids");
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        if (text)
            cJSON_AddStringToObject(o, "text", text);
        else
            cJSON_AddNullToObject(o, "text");
        char *s = cJSON_PrintUnformatted(o);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(o);
    } else if (text) {
        printf("%s\n", text);
    } else {
        for (int i = 0; i < n; i++)
            printf("%s%d", i ? "," : "", ids[i]);
        printf("\n");
    }
    free(text);
    return 0;
}

// ---- the command

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run(const struct gen_args *a, struct gen_run *r) {
    int rc = model_config_load(a->model_dir, &r->cfg);
    if (rc) return rc;
    enum model_load_format fmt;
    if ((rc = model_parse_load_format(a->load_format, &fmt))) return rc;
    rc = tok_load(&r->tok, a->model_dir);
    if (rc && (a->prompt || rc != ERR_NOT_FOUND)) return rc; // ids-only mode needs no tokenizer
    if (rc) log_debug("generate: no tokenizer in %s, ids only", a->model_dir);

    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (a->prompt)
        rc = tok_encode(r->tok, a->prompt, strlen(a->prompt), true, &prompt, &n_prompt);
    else
        rc = parse_ids(a->prompt_ids, &prompt, &n_prompt);
    if (!rc && n_prompt == 0) rc = err_set(ERR_INVAL, "the prompt is empty");
    for (int i = 0; !rc && i < n_prompt; i++)
        if (prompt[i] >= r->cfg.vocab_size)
            rc = err_set(ERR_INVAL, "prompt token %d is outside the vocabulary (%d)", prompt[i],
                         r->cfg.vocab_size);
    int max_len = n_prompt + a->max_tokens;
    if (!rc && r->cfg.max_position_embeddings > 0 && max_len > r->cfg.max_position_embeddings)
        rc = err_set(ERR_INVAL, "prompt (%d) + max tokens (%d) exceed the model's context (%d)",
                     n_prompt, a->max_tokens, r->cfg.max_position_embeddings);
    int32_t *out = rc ? NULL : malloc(sizeof(int32_t) * a->max_tokens);
    if (!rc && !out) rc = err_set(ERR_NOMEM, "generate");

    // One sequence: exactly the blocks it can need, a prefill chunk per step at most.
    r->set.gpu_memory_utilization = 0.9;
    r->set.block_size = GEN_BLOCK_SIZE;
    r->set.max_model_len = max_len;
    r->set.max_num_seqs = 1;
    r->set.max_num_batched_tokens = max_len < a->prefill_chunk ? max_len : a->prefill_chunk;
    r->set.num_kv_blocks = (max_len + GEN_BLOCK_SIZE - 1) / GEN_BLOCK_SIZE;
    if (!rc) rc = open_backend(r, a);
    double t0 = now_s();
    if (!rc)
        rc = model_weights_load(&r->m.w, &r->cfg, a->model_dir, fmt, a->seed, r->ops, r->ctx,
                                &r->arena);
    r->weights_loaded = !rc;
    if (!rc) rc = model_init(&r->m, &r->cfg, r->ops, r->ctx, &r->arena, &r->plan, &r->set);
    r->model_ready = !rc;
    double t1 = now_s();
    int n_out = 0;
    if (!rc) rc = generate(r, a, prompt, n_prompt, out, &n_out);
    double t2 = now_s();
    if (!rc) {
        log_info("generate: %s backend, load %.2f s, %d prompt + %d generated tokens in %.2f s "
                 "(%.1f tokens/s)",
                 r->ops->name, t1 - t0, n_prompt, n_out, t2 - t1,
                 t2 > t1 ? (n_prompt + n_out) / (t2 - t1) : 0.0);
        rc = print_result(r, a, out, n_out);
    }
    free(prompt);
    free(out);
    return rc;
}

int srv_cmd_generate(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return SRV_EXIT_OK;
        }
    struct gen_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) {
        fprintf(stderr, "keel generate: %s\n\n", err_msg());
        usage(stderr);
        return SRV_EXIT_USAGE;
    }
    struct gen_run r;
    memset(&r, 0, sizeof r);
    rc = run(&a, &r);
    close_run(&r);
    if (rc) {
        fprintf(stderr, "keel generate: %s (%s)\n", err_msg(), err_name(rc));
        return srv_exit_code(rc);
    }
    return SRV_EXIT_OK;
}

// `keel serve`: settings -> model config -> tokenizer -> memory plan (logged) -> arena -> backend
// -> weights -> model -> engine -> HTTP. Every start-up failure is one clear message and an exit
// code from server/cli.h; after listen, SIGINT/SIGTERM drain: stop accepting, let in-flight
// requests finish within shutdown_grace_s, cancel the rest, exit 0.
#include "common/err.h"
#include "common/log.h"
#include "kernels/ops.h"
#include "memory/arena.h"
#include "memory/plan.h"
#include "models/config.h"
#include "models/graph.h"
#include "models/model.h"
#include "models/tokenizer.h"
#include "models/tp.h"
#include "server/api.h"
#include "server/cli.h"
#include "server/engine.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/settings.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

// Everything the server holds, released in reverse order by serve__free.
struct serve {
    struct srv_settings set;
    char model_dir[PATH_MAX];
    char name[256];
    bool cuda;
    struct model_config cfg;
    struct tok_tokenizer *tok;
    struct mem_plan_settings pset;
    struct mem_plan plan;
    struct mem_arena arena;
    bool arena_ok;
    const struct kern_ops *ops;
    struct kern_ctx *ctx;
    struct model model;
    bool model_ok, weights_ok;
    // Tensor parallelism (tp_size > 1): rank r runs on devices[r] with its own context, plan and
    // arena (rank 0's are the fields above); one engine drives the group through tp_model.
    int tp_size;
    struct kern_ctx *tp_ctx[SRV_SETTINGS_MAX_DEVICES];
    struct mem_plan tp_plan[SRV_SETTINGS_MAX_DEVICES];
    struct mem_arena tp_arena[SRV_SETTINGS_MAX_DEVICES];
    bool tp_arena_ok[SRV_SETTINGS_MAX_DEVICES];
    struct kern_comm *tp_comm[SRV_SETTINGS_MAX_DEVICES];
    struct model_group *tp_group;
    struct model *engine_model; // &model, or the group's model
    struct srv_metrics metrics;
    struct srv_engine *engine;
    struct api_server *api;
    struct srv_http_server *http;
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    uv_timer_t tick, grace;
    bool stopping, finished;
    int exit_code;
};

// ---- start-up helpers

static bool serve__is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

// The built-in default model folder: next to the executable's repo (build/../.cache), else the cwd.
static int serve__default_model(char *out, size_t cap) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            if (strlen(exe) + 24 < cap) {
                memcpy(out, exe, strlen(exe));
                memcpy(out + strlen(exe), "/../.cache/keel-default", 24);
                if (serve__is_dir(out)) return 0;
            }
        }
    }
    snprintf(out, cap, ".cache/keel-default");
    if (serve__is_dir(out)) return 0;
    return err_set(ERR_NOT_FOUND, "no --model given and the default model folder .cache/keel-default "
                                  "is missing (run scripts/setup, or pass --model DIR)");
}

static void serve__basename(const char *dir, char *out, size_t cap) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = '\0';
    const char *b = strrchr(tmp, '/');
    snprintf(out, cap, "%s", b ? b + 1 : tmp);
}

static void serve__log_lines(const char *text) {
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        log_info("%.*s", len, p);
        p = nl ? nl + 1 : NULL;
    }
}

// Fails fast when the port is taken, before minutes of loading: binds a probe socket the way
// libuv will (SO_REUSEADDR) and closes it. The real listen later still reports its own errors.
static int serve__probe_port(const struct srv_settings *set) {
    struct sockaddr_storage addr;
    if (uv_ip4_addr(set->host, set->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(set->host, set->port, (struct sockaddr_in6 *)&addr) != 0)
        return err_set(ERR_INVAL, "host '%s' is not an IPv4 or IPv6 address", set->host);
    if (set->port == 0) return 0;
    int fd = socket(addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int rc = bind(fd, (struct sockaddr *)&addr, len) == 0 ? 0 : errno;
    close(fd);
    if (rc == EADDRINUSE)
        return err_set(ERR_INVAL, "cannot listen on %s:%d: address already in use (another server "
                                  "is using the port; pick another with --port)", set->host, set->port);
    return 0;
}

// Prints a start-up failure and, for missing or broken model files, how to fix them; returns
// the exit code.
static int serve__fail(const struct serve *s, int rc) {
    fprintf(stderr, "keel serve: %s\n", err_msg());
    if (rc == ERR_NOT_FOUND || rc == ERR_FORMAT)
        fprintf(stderr,
                "keel serve: fix: --model must name a complete Hugging Face model folder "
                "(config.json, tokenizer.json, tokenizer_config.json and the *.safetensors "
                "files); download it again if a file is missing, truncated or corrupt, or use "
                "--load-format dummy to run its shapes with random weights (folder: %s)\n",
                s->model_dir[0] ? s->model_dir : s->set.model);
    return srv_exit_code(rc);
}

// Tensor parallel: one context per GPU, then the communicator (NCCL's buffers are allocated at
// its init, so they count as each GPU's overhead like the context's), then one plan per rank
// from its shard's shapes (mem_plan_compute_tp: every rank gets the smallest rank's KV block
// count, so the single scheduler's block ids mean the same everywhere). Returns an exit code.
static int serve__prepare_tp(struct serve *s) {
    int rc = 0, P = s->tp_size;
    if (s->cuda) {
#ifdef KEEL_CUDA
        for (int r = 0; r < P; r++)
            if ((rc = kern_cuda_ctx_init(&s->tp_ctx[r], s->set.devices[r], NULL, 0, NULL, 0)))
                goto fail;
        // Connect eagerly (no buffers allocated behind the plan's back at the first step), and
        // keep NVLink multicast off; a value set by the user wins.
        setenv("NCCL_RUNTIME_CONNECT", "0", 0);
        setenv("NCCL_NVLS_ENABLE", "0", 0);
        if ((rc = kern_nccl_comm_init_all(s->tp_comm, P, s->set.devices))) goto fail;
#endif
    } else {
        if ((rc = kern_cpu_comm_init_all(s->tp_comm, P))) goto fail;
    }
    size_t total[SRV_SETTINGS_MAX_DEVICES], free_b[SRV_SETTINGS_MAX_DEVICES];
    for (int r = 0; r < P; r++) {
        if (s->cuda) {
            if ((rc = mem_device_info(s->set.devices[r], &total[r], &free_b[r]))) goto fail;
        } else {
            total[r] = free_b[r] = (size_t)s->set.cpu_memory;
        }
    }
    s->pset.tensor_parallel_size = P;
    s->pset.n_device_ids = P;
#ifdef KEEL_CUDA
    // Each rank captures its decode graphs at start-up (models/tp.c): the plan keeps their memory.
    if (s->cuda) s->pset.cuda_graphs = model_tp_graphs_on() && model_graphs_usable(&kern_cuda_ops);
#endif
    for (int r = 0; r < P; r++) s->pset.device_ids[r] = s->set.devices[r];
    struct mem_plan_shape shape;
    model_plan_shape(&s->cfg, &shape);
    rc = mem_plan_compute_tp(&shape, &s->pset, P, total, free_b, s->tp_plan);
    char *table = mem_plan_table_tp(s->tp_plan, P, &s->pset);
    if (table) {
        log_info("memory plan (%s, %d GPUs, tensor parallel, %s):", s->cuda ? "cuda" : "cpu", P,
                 s->model_dir);
        serve__log_lines(table);
    }
    free(table);
    if (rc) {
        fprintf(stderr, "keel serve: the memory plan does not fit: %s\n", err_msg());
        return srv_exit_code(rc);
    }
    // The loader carves exactly what the plan counted for each shard.
    for (int r = 0; r < P; r++) {
        int64_t want = model_weights_bytes_shard(&s->cfg, P, r);
        if ((int64_t)s->tp_plan[r].weights_bytes != want) {
            rc = err_set(ERR_INTERNAL, "rank %d: the plan has %zu bytes of weights, the loader "
                                       "needs %lld", r, s->tp_plan[r].weights_bytes, (long long)want);
            goto fail;
        }
    }
    s->plan = s->tp_plan[0];
    s->ctx = s->tp_ctx[0];
    return 0;
fail:
    return serve__fail(s, rc);
}

// Arenas, backends, sharded weights, models and the group. Returns an exit code.
static int serve__load_tp(struct serve *s, enum model_load_format fmt) {
    int rc = 0, P = s->tp_size;
    struct model_tp_rank ranks[SRV_SETTINGS_MAX_DEVICES];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    for (int r = 0; r < P; r++) {
        const struct mem_plan *pl = &s->tp_plan[r];
        if ((rc = mem_arena_init(&s->tp_arena[r], s->cuda ? MEM_DEVICE : MEM_HOST,
                                 s->set.devices[r], pl->arena_bytes,
                                 s->cuda ? (size_t)64 << 20 : 0)))
            goto fail;
        s->tp_arena_ok[r] = true;
        if (s->cuda) {
#ifdef KEEL_CUDA
            void *ws = NULL, *scratch = NULL;
            if ((rc = mem_arena_carve(&s->tp_arena[r], "workspace", pl->workspace_bytes, &ws)) ||
                (rc = mem_arena_carve(&s->tp_arena[r], "op_scratch", pl->sampling_bytes, &scratch)) ||
                (rc = kern_cuda_ctx_set_regions(s->tp_ctx[r], ws, pl->workspace_bytes, scratch,
                                                pl->sampling_bytes)))
                goto fail;
            s->ops = &kern_cuda_ops;
#endif
        } else {
            // The ranks run at once: share the cores between them.
            int n = cores > P ? (int)(cores / P) : 1;
            if ((rc = kern_cpu_ctx_init(&s->tp_ctx[r], n))) goto fail;
            s->ops = &kern_cpu_ops;
        }
        ranks[r] = (struct model_tp_rank){s->ops, s->tp_ctx[r], &s->tp_arena[r], pl};
    }
    s->ctx = s->tp_ctx[0];
    log_info("loading weights (%s) from %s, %d tensor-parallel shards",
             fmt == MODEL_LOAD_DUMMY ? "dummy" : "safetensors", s->model_dir, P);
    rc = model_group_load(&s->tp_group, &s->cfg, s->model_dir, fmt, (uint64_t)s->set.seed, ranks,
                          s->tp_comm, P, &s->pset);
    for (int r = 0; r < P; r++) s->tp_comm[r] = NULL; // the group's now (freed on failure too)
    if (rc) goto fail;
    s->engine_model = model_group_model(s->tp_group);
    return 0;
fail:
    return serve__fail(s, rc);
}

// Settings, model folder, device, config, tokenizer, plan. Returns an exit code.
static int serve__prepare(struct serve *s) {
    int rc;
    const char *dir = s->set.model;
    bool is_default = dir[0] == '\0';
    if ((rc = serve__probe_port(&s->set))) {
        fprintf(stderr, "keel serve: %s\n", err_msg());
        return SRV_EXIT_USAGE;
    }
    if (is_default) {
        if ((rc = serve__default_model(s->model_dir, sizeof s->model_dir))) goto fail;
    } else {
        snprintf(s->model_dir, sizeof s->model_dir, "%s", dir);
        if (!serve__is_dir(s->model_dir)) {
            rc = err_set(ERR_NOT_FOUND, "model folder '%s' does not exist (pass --model with a "
                                        "Hugging Face model folder: config.json, tokenizer.json, "
                                        "*.safetensors)", s->model_dir);
            goto fail;
        }
    }
    if (s->set.served_model_name[0]) snprintf(s->name, sizeof s->name, "%s", s->set.served_model_name);
    else serve__basename(s->model_dir, s->name, sizeof s->name);

    int n_gpus = kern_cuda_device_count();
    if (!strcmp(s->set.device, "cuda")) {
        if (n_gpus <= 0) {
            fprintf(stderr, "keel serve: --device cuda, but %s\n",
#ifdef KEEL_CUDA
                    "no CUDA device is visible");
#else
                    "this keel was built without CUDA (make CUDA=1)");
#endif
            return SRV_EXIT_USAGE;
        }
        s->cuda = true;
    } else {
        s->cuda = s->set.device[0] == '\0' && n_gpus > 0;
    }
    s->tp_size = s->set.n_devices > 0 ? s->set.n_devices : 1;
    for (int r = 0; s->cuda && r < s->tp_size; r++)
        if (s->set.devices[r] >= n_gpus) {
            fprintf(stderr, "keel serve: device %d does not exist (%d CUDA device(s) visible)\n",
                    s->set.devices[r], n_gpus);
            return SRV_EXIT_USAGE;
        }

    if ((rc = model_config_load(s->model_dir, &s->cfg))) goto fail;
    if (s->tp_size > 1) {
        struct model_config local;
        if ((rc = model_config_shard(&s->cfg, s->tp_size, 0, &local))) {
            fprintf(stderr, "keel serve: %s\n", err_msg());
            return SRV_EXIT_USAGE;
        }
    }
    if ((rc = tok_load(&s->tok, s->model_dir))) goto fail;

    mem_plan_settings_defaults(&s->pset, s->cfg.max_position_embeddings);
    s->pset.gpu_memory_utilization = s->cuda ? s->set.gpu_memory_utilization : 1.0;
    if (s->set.max_model_len > 0) {
        if (s->cfg.max_position_embeddings > 0 && s->set.max_model_len > s->cfg.max_position_embeddings) {
            fprintf(stderr, "keel serve: --max-model-len %d is longer than the model's "
                            "max_position_embeddings (%d in %s/config.json)\n",
                    s->set.max_model_len, s->cfg.max_position_embeddings, s->model_dir);
            return SRV_EXIT_USAGE;
        }
        s->pset.max_model_len = s->set.max_model_len;
    }
    s->pset.max_num_seqs = s->set.max_num_seqs;
    s->pset.max_num_batched_tokens = s->set.max_num_batched_tokens;
    s->pset.block_size = s->set.block_size;
    s->pset.num_kv_blocks = s->set.num_kv_blocks;

    if (s->tp_size > 1) return serve__prepare_tp(s);
    size_t total, free_b;
    if (s->cuda) {
#ifdef KEEL_CUDA
        // The context first (its handle and kernels take device memory), so the free memory the
        // plan sees already accounts for it; the arena regions are bound after the arena exists.
        if ((rc = kern_cuda_ctx_init(&s->ctx, s->set.devices[0], NULL, 0, NULL, 0))) goto fail;
        s->pset.cuda_graphs = model_graphs_usable(&kern_cuda_ops); // the plan keeps their memory
#endif
        if ((rc = mem_device_info(s->set.devices[0], &total, &free_b))) goto fail;
    } else {
        total = free_b = (size_t)s->set.cpu_memory; // the CPU backend's "device" (cpu_memory)
    }
    struct mem_plan_shape shape;
    model_plan_shape(&s->cfg, &shape);
    rc = mem_plan_compute(&shape, &s->pset, total, free_b, &s->plan);
    char *table = mem_plan_table(&s->plan, &s->pset);
    if (table) {
        log_info("memory plan (%s, %s):", s->cuda ? "cuda" : "cpu", s->model_dir);
        serve__log_lines(table);
    }
    free(table);
    if (rc) {
        fprintf(stderr, "keel serve: the memory plan does not fit: %s\n", err_msg());
        return srv_exit_code(rc);
    }
    return 0;
fail:
    return serve__fail(s, rc);
}

// Arena, backend, weights, model. Returns an exit code.
static int serve__load(struct serve *s) {
    int rc;
    enum model_load_format fmt = MODEL_LOAD_SAFETENSORS;
    const char *lf = s->set.load_format;
    if (lf[0] == '\0' || !strcmp(lf, "auto")) fmt = s->set.model[0] == '\0' ? MODEL_LOAD_DUMMY
                                                                          : MODEL_LOAD_SAFETENSORS;
    else if ((rc = model_parse_load_format(lf, &fmt))) goto fail;
    if (s->tp_size > 1) return serve__load_tp(s, fmt);

    if ((rc = mem_arena_init(&s->arena, s->cuda ? MEM_DEVICE : MEM_HOST, s->set.devices[0],
                             s->plan.arena_bytes, s->cuda ? (size_t)64 << 20 : 0)))
        goto fail;
    s->arena_ok = true;
    if (s->cuda) {
#ifdef KEEL_CUDA
        void *ws = NULL, *scratch = NULL;
        if ((rc = mem_arena_carve(&s->arena, "workspace", s->plan.workspace_bytes, &ws))) goto fail;
        if ((rc = mem_arena_carve(&s->arena, "op_scratch", s->plan.sampling_bytes, &scratch))) goto fail;
        if ((rc = kern_cuda_ctx_set_regions(s->ctx, ws, s->plan.workspace_bytes, scratch,
                                            s->plan.sampling_bytes)))
            goto fail;
        s->ops = &kern_cuda_ops;
#endif
    } else {
        if ((rc = kern_cpu_ctx_init(&s->ctx, 0))) goto fail;
        s->ops = &kern_cpu_ops;
    }
    log_info("loading weights (%s) from %s", fmt == MODEL_LOAD_DUMMY ? "dummy" : "safetensors",
             s->model_dir);
    if ((rc = model_weights_load(&s->model.w, &s->cfg, s->model_dir, fmt, (uint64_t)s->set.seed,
                                 s->ops, s->ctx, &s->arena)))
        goto fail;
    s->weights_ok = true;
    if ((rc = model_init(&s->model, &s->cfg, s->ops, s->ctx, &s->arena, &s->plan, &s->pset))) goto fail;
    s->model_ok = true;
    s->engine_model = &s->model;
    // Every decode graph now, so no request waits for a capture (models/graph.h).
    if ((rc = model_graphs_warmup(&s->model)) < 0) goto fail;
    return 0;
fail:
    return serve__fail(s, rc);
}

// ---- shutdown

static void serve__close_walk_cb(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

// Cancels what is left, closes every connection and handle; uv_run then returns.
static void serve__finish(struct serve *s) {
    if (s->finished) return;
    s->finished = true;
    int left = api_n_active(s->api);
    if (left > 0) log_warn("shutdown: cancelling %d request(s) still in flight", left);
    if (s->engine) srv_engine_stop(s->engine); // every remaining choice ends with ABORT
    api_poll_events(s->api);                  // ... and is answered now
    srv_http_close(s->http);
    api_close(s->api);
    uv_walk(&s->loop, serve__close_walk_cb, NULL);
    // The signal handles are closed now; a further SIGINT/SIGTERM must not kill the process
    // halfway through its orderly exit (it would exit 130 instead of 0).
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
}

static void serve__grace_cb(uv_timer_t *t) {
    struct serve *s = t->data;
    log_warn("shutdown: grace period (%g s) over", s->set.shutdown_grace_s);
    serve__finish(s);
}

static void serve__begin_stop(struct serve *s, const char *why, int exit_code) {
    if (s->stopping) {
        log_warn("shutdown: %s again, stopping now", why);
        serve__finish(s);
        return;
    }
    s->stopping = true;
    s->exit_code = exit_code;
    log_info("shutdown (%s): no new connections; %d request(s) in flight get %g s to finish", why,
             api_n_active(s->api), s->set.shutdown_grace_s);
    srv_http_drain(s->http);
    api_drain(s->api);
    uv_timer_start(&s->grace, serve__grace_cb, (uint64_t)(s->set.shutdown_grace_s * 1000), 0);
}

static void serve__signal_cb(uv_signal_t *h, int signum) {
    struct serve *s = h->data;
    serve__begin_stop(s, signum == SIGINT ? "SIGINT" : "SIGTERM", SRV_EXIT_OK);
}

// Every 50 ms: a finished drain ends the server; a dead engine starts one (exit 1).
static void serve__tick_cb(uv_timer_t *t) {
    struct serve *s = t->data;
    if (s->finished) return;
    if (!s->stopping && s->engine) {
        struct srv_engine_stats st;
        srv_engine_stats(s->engine, &st);
        if (st.dead) {
            log_error("the engine hit a fatal device fault: draining and exiting");
            serve__begin_stop(s, "engine fault", SRV_EXIT_FAILURE);
        }
    }
    if (s->stopping && api_n_active(s->api) == 0 && srv_http_n_busy(s->http) == 0) serve__finish(s);
}

static void serve__free(struct serve *s) {
    srv_engine_free(s->engine);
    srv_http_free(s->http);
    api_free(s->api);
    if (s->model_ok) model_free(&s->model);
    if (s->weights_ok) model_weights_free(&s->model.w);
    if (s->tp_size > 1) {
        model_group_free(s->tp_group); // before the contexts and arenas its ranks use
        for (int r = 0; r < s->tp_size; r++) {
            kern_comm_free(s->tp_comm[r]);
#ifdef KEEL_CUDA
            if (s->cuda) kern_cuda_ctx_free(s->tp_ctx[r]);
            else
#endif
                if (s->tp_ctx[r]) kern_cpu_ctx_free(s->tp_ctx[r]);
            if (s->tp_arena_ok[r]) mem_arena_free(&s->tp_arena[r]);
        }
        s->ctx = NULL;
    }
#ifdef KEEL_CUDA
    if (s->cuda) kern_cuda_ctx_free(s->ctx);
    else
#endif
        if (s->ctx) kern_cpu_ctx_free(s->ctx);
    if (s->arena_ok) mem_arena_free(&s->arena);
    tok_free(s->tok);
}

// ---- the command

int srv_cmd_serve(int argc, char **argv) {
    struct serve *s = calloc(1, sizeof *s);
    if (!s) return SRV_EXIT_FAILURE;
    bool help = false;
    int rc = srv_settings_from_args(&s->set, argc, argv, &help);
    if (help) {
        srv_settings_help(stdout);
        free(s);
        return SRV_EXIT_OK;
    }
    if (rc) {
        fprintf(stderr, "keel serve: %s\n", err_msg());
        free(s);
        return srv_exit_code(rc) == SRV_EXIT_MODEL ? SRV_EXIT_USAGE : srv_exit_code(rc);
    }
    enum log_level lvl;
    if (log_parse_level(s->set.log_level, &lvl) == 0) log_set_level(lvl);
    signal(SIGPIPE, SIG_IGN); // a client gone mid-write is an EPIPE for that connection only
    // Thousands of connections need thousands of descriptors: raise the soft limit to the hard one.
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    int code = serve__prepare(s);
    if (code == 0) code = serve__load(s);
    if (code) {
        serve__free(s);
        free(s);
        return code;
    }

    uv_loop_init(&s->loop);
    srv_metrics_init(&s->metrics);
    char *plan_json = s->tp_size > 1 ? mem_plan_json_tp(s->tp_plan, s->tp_size, &s->pset)
                                     : mem_plan_json(&s->plan, &s->pset);
    struct api_config acfg = {.settings = &s->set, .model_name = s->name, .tok = s->tok,
                              .max_model_len = s->pset.max_model_len, .plan_json = plan_json,
                              .metrics = &s->metrics};
    rc = api_init(&s->api, &s->loop, &acfg);
    free(plan_json);
    struct srv_engine_config ecfg = {.max_num_seqs = s->pset.max_num_seqs,
                                     .max_num_batched_tokens = s->pset.max_num_batched_tokens,
                                     .max_model_len = s->pset.max_model_len,
                                     .max_queue = s->set.max_queue};
    if (rc == 0) rc = srv_engine_init(&s->engine, s->engine_model, s->tok, &ecfg, api_engine_notify, s->api);
    if (rc == 0) api_set_engine(s->api, s->engine);
    struct srv_http_config hcfg = {.host = s->set.host, .port = s->set.port,
                                   .max_body_bytes = (size_t)s->set.max_body_bytes,
                                   .max_header_bytes = (size_t)s->set.max_header_bytes,
                                   .idle_timeout_s = s->set.idle_timeout_s,
                                   .header_timeout_s = s->set.header_timeout_s,
                                   .max_connections = s->set.max_connections,
                                   .cors_allow_origin = s->set.cors_allow_origin,
                                   .metrics = &s->metrics};
    if (rc == 0) rc = srv_http_init(&s->http, &s->loop, &hcfg, api_handle, s->api);
    if (rc == 0) api_set_http(s->api, s->http);
    if (rc == 0) {
        rc = srv_http_listen(s->http);
        if (rc) code = SRV_EXIT_USAGE; // the port is taken or the address is wrong: configuration
    }
    if (rc == 0) rc = srv_engine_start(s->engine);
    if (rc) {
        fprintf(stderr, "keel serve: %s\n", err_msg());
        if (!code) code = srv_exit_code(rc);
        if (s->http) srv_http_close(s->http);
        if (s->api) api_close(s->api);
        uv_walk(&s->loop, serve__close_walk_cb, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        serve__free(s);
        free(s);
        return code ? code : SRV_EXIT_FAILURE;
    }

    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, serve__signal_cb, SIGINT);
    uv_signal_start(&s->sigterm, serve__signal_cb, SIGTERM);
    uv_timer_init(&s->loop, &s->tick);
    uv_timer_init(&s->loop, &s->grace);
    s->tick.data = s->grace.data = s;
    uv_timer_start(&s->tick, serve__tick_cb, 50, 50);

    log_info("keel serve: model '%s' (%s, %d layers) on %s%s, max_model_len %d, %lld KV blocks of "
             "%d tokens", s->name, s->cfg.arch_name, s->cfg.n_layers, s->cuda ? "cuda" : "cpu",
             s->tp_size > 1 ? " (tensor parallel)" : "", s->pset.max_model_len,
             (long long)s->engine_model->n_kv_blocks, s->pset.block_size);
    log_info("keel serve: listening on http://%s:%d%s", s->set.host, srv_http_port(s->http),
             s->set.api_key[0] ? " (API key required on /v1/*)" : "");
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    code = s->exit_code;
    log_info("keel serve: stopped");
    serve__free(s);
    free(s);
    return code;
}

// keel-bench: load-tests any OpenAI-compatible server (keel, vLLM, llama.cpp, SGLang) with the
// same workload and prints vLLM's result block. See docs/BENCH.md.
//
// Order of work: options, the model name (asked from the server when not given), the prompts,
// the request bodies and arrival times (all built before the clock starts), the warm-up, then
// one run per concurrency (one, or several with --sweep), each summarized and printed.
#include "bench/bench.h"

#include "common/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130 // the shell's code for a SIGINT

struct options {
    const char *base_url, *host, *endpoint, *model, *api_key, *dataset, *dataset_name;
    const char *prompt_format;
    int port, input_len, output_len, num_prompts, max_concurrency, warmup, id_lo, id_hi;
    double range_ratio, request_rate, burstiness, timeout_s;
    uint64_t seed;
    bool ignore_eos, no_progress;
    const char *json_path, *sweep, *sweep_csv, *sweep_svg;
    double pcts[BENCH_MAX_PCT];
    int n_pcts;
};

// ---- options

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: keel-bench [options]\n"
        "\n"
        "Load-tests an OpenAI-compatible server with streamed requests and prints the same\n"
        "result block as `vllm bench serve`.\n"
        "\n"
        "target:\n"
        "  --base-url URL        server address, http://host:port[/prefix] (default\n"
        "                        http://127.0.0.1:8000; --host and --port also work)\n"
        "  --endpoint E          completions (default), chat, or a path such as /v1/completions\n"
        "  --model NAME          model to ask for (default: the first of GET /v1/models)\n"
        "  --api-key KEY         bearer token (default: $OPENAI_API_KEY)\n"
        "workload:\n"
        "  --dataset D           random (default) or FILE: JSON Lines of {\"prompt\": ...} or\n"
        "                        ShareGPT conversations\n"
        "  --input-len N         random: mean prompt tokens (default 1024)\n"
        "  --output-len N        mean output tokens (default 128; for a FILE, overrides each\n"
        "                        prompt's own length)\n"
        "  --range-ratio R       random: lengths uniform in [N(1-R), N(1+R)] (default 0)\n"
        "  --prompt-format F     random: ids (token ids, default for completions) or text\n"
        "                        (words; always for chat)\n"
        "  --token-ids LO:HI     random ids are drawn from [LO, HI) (default 100:30000)\n"
        "  --num-prompts N       requests to send (default 1000)\n"
        "  --ignore-eos          fixed-length outputs: ignore_eos and min_tokens = max_tokens\n"
        "  --seed S              prompts and arrivals (default 0)\n"
        "load:\n"
        "  --max-concurrency N   requests in flight at most (default: no limit)\n"
        "  --request-rate R      requests per second, or inf (default inf: all at once)\n"
        "  --burstiness B        gamma shape of the gaps; 1 = Poisson (default 1)\n"
        "  --warmup N            requests sent and discarded before the run (default 0)\n"
        "  --timeout S           a request slower than this fails (default 600; 0 = none)\n"
        "  --sweep C1,C2,...     one run per max concurrency; writes a CSV and an SVG\n"
        "  --sweep-csv FILE      (default keel-bench-sweep.csv)\n"
        "  --sweep-svg FILE      (default keel-bench-sweep.svg)\n"
        "output:\n"
        "  --percentiles P,...   percentiles to print (default 90,99)\n"
        "  --json FILE           every figure and per-request timings (vLLM's keys)\n"
        "  --no-progress         no progress bar (it is drawn only when stderr is a terminal)\n"
        "\n"
        "Exit status: 0 when every run had a successful request, 1 when one had none or the\n"
        "run could not happen, 2 on bad options, 130 when Ctrl-C cut it short (the figures\n"
        "of what finished are still printed and saved).\n");
}

static int parse_int(const char *name, const char *v, int lo, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > 100000000)
        return err_set(ERR_INVAL, "%s wants an integer >= %d, got '%s'", name, lo, v);
    *out = (int)x;
    return 0;
}

static int parse_double(const char *name, const char *v, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || isnan(x))
        return err_set(ERR_INVAL, "%s wants a number, got '%s'", name, v);
    *out = x;
    return 0;
}

static int parse_pcts(const char *v, struct options *o) {
    o->n_pcts = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        double p = 0;
        if (o->n_pcts == BENCH_MAX_PCT || parse_double("--percentiles", t, &p) || p <= 0 ||
            p >= 100)
            return err_set(ERR_INVAL, "--percentiles wants up to %d numbers in (0, 100), got '%s'",
                           BENCH_MAX_PCT, v);
        o->pcts[o->n_pcts++] = p;
    }
    return 0;
}

// Returns 0, ERR_INVAL (message set), or 1 for --help.
static int parse_args(int argc, char **argv, struct options *o) {
    *o = (struct options){.base_url = NULL,
                          .host = "127.0.0.1",
                          .port = 8000,
                          .endpoint = "completions",
                          .dataset = "random",
                          .input_len = 1024,
                          .output_len = -1,
                          .num_prompts = 1000,
                          .id_lo = 100,
                          .id_hi = 30000,
                          .request_rate = INFINITY,
                          .burstiness = 1,
                          .timeout_s = 600,
                          .sweep_csv = "keel-bench-sweep.csv",
                          .sweep_svg = "keel-bench-sweep.svg",
                          .n_pcts = 2,
                          .pcts = {90, 99}};
    o->api_key = getenv("OPENAI_API_KEY");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char name[64];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq) { // --name=value, as argparse (and so vLLM) allows
            snprintf(name, sizeof(name), "%.*s", (int)(eq - a), a);
            a = name;
            v = eq + 1;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            continue;
        }
        if (!strcmp(a, "--no-progress") || !strcmp(a, "--disable-tqdm")) {
            o->no_progress = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) return err_set(ERR_INVAL, "unexpected argument '%s'", a);
        if (!v && i + 1 >= argc) return err_set(ERR_INVAL, "%s needs a value", a);
        if (!v) v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "--base-url"))
            o->base_url = v;
        else if (!strcmp(a, "--host"))
            o->host = v;
        else if (!strcmp(a, "--port"))
            rc = parse_int(a, v, 1, &o->port);
        else if (!strcmp(a, "--endpoint"))
            o->endpoint = v;
        else if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--api-key"))
            o->api_key = v;
        else if (!strcmp(a, "--dataset") || !strcmp(a, "--dataset-path"))
            o->dataset = v;
        else if (!strcmp(a, "--dataset-name"))
            o->dataset_name = v;
        else if (!strcmp(a, "--input-len") || !strcmp(a, "--random-input-len"))
            rc = parse_int(a, v, 1, &o->input_len);
        else if (!strcmp(a, "--output-len") || !strcmp(a, "--random-output-len"))
            rc = parse_int(a, v, 1, &o->output_len);
        else if (!strcmp(a, "--range-ratio") || !strcmp(a, "--random-range-ratio"))
            rc = parse_double(a, v, &o->range_ratio);
        else if (!strcmp(a, "--prompt-format"))
            o->prompt_format = v;
        else if (!strcmp(a, "--token-ids")) {
            if (sscanf(v, "%d:%d", &o->id_lo, &o->id_hi) != 2 || o->id_lo < 0 ||
                o->id_hi <= o->id_lo)
                rc = err_set(ERR_INVAL, "--token-ids wants LO:HI with 0 <= LO < HI, got '%s'", v);
        } else if (!strcmp(a, "--num-prompts"))
            rc = parse_int(a, v, 1, &o->num_prompts);
        else if (!strcmp(a, "--max-concurrency"))
            rc = parse_int(a, v, 1, &o->max_concurrency);
        else if (!strcmp(a, "--request-rate"))
            rc = parse_double(a, v, &o->request_rate);
        else if (!strcmp(a, "--burstiness"))
            rc = parse_double(a, v, &o->burstiness);
        else if (!strcmp(a, "--seed")) {
            char *end;
            o->seed = strtoull(v, &end, 10);
            if (end == v || *end) rc = err_set(ERR_INVAL, "--seed wants an integer, got '%s'", v);
        } else if (!strcmp(a, "--warmup") || !strcmp(a, "--num-warmups"))
            rc = parse_int(a, v, 0, &o->warmup);
        else if (!strcmp(a, "--timeout"))
            rc = parse_double(a, v, &o->timeout_s);
        else if (!strcmp(a, "--json"))
            o->json_path = v;
        else if (!strcmp(a, "--sweep"))
            o->sweep = v;
        else if (!strcmp(a, "--sweep-csv"))
            o->sweep_csv = v;
        else if (!strcmp(a, "--sweep-svg"))
            o->sweep_svg = v;
        else if (!strcmp(a, "--percentiles") || !strcmp(a, "--metric-percentiles"))
            rc = parse_pcts(v, o);
        else
            rc = err_set(ERR_INVAL, "unknown option '%s' (see --help)", a);
        if (rc) return rc;
    }
    // vLLM's --dataset-name: "random" forces random prompts; a file format needs the file.
    if (o->dataset_name && !strcmp(o->dataset_name, "random"))
        o->dataset = "random";
    else if (o->dataset_name && !strcmp(o->dataset, "random"))
        return err_set(ERR_INVAL, "--dataset-name %s needs --dataset-path FILE", o->dataset_name);
    if (!(o->request_rate > 0)) return err_set(ERR_INVAL, "--request-rate must be > 0 or inf");
    if (!(o->burstiness > 0)) return err_set(ERR_INVAL, "--burstiness must be > 0");
    if (!(o->range_ratio >= 0 && o->range_ratio < 1))
        return err_set(ERR_INVAL, "--range-ratio must be in [0, 1)");
    if (o->timeout_s < 0) return err_set(ERR_INVAL, "--timeout must be >= 0");
    if (o->prompt_format && strcmp(o->prompt_format, "ids") && strcmp(o->prompt_format, "text"))
        return err_set(ERR_INVAL, "--prompt-format is ids or text, got '%s'", o->prompt_format);
    return 0;
}

// "4,8,16" to concurrencies. Returns the count, or ERR_INVAL.
static int parse_sweep(const char *v, int *out, int cap) {
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", v);
    int n = 0;
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == cap || parse_int("--sweep", t, 1, &out[n]))
            return err_set(ERR_INVAL, "--sweep wants up to %d concurrencies >= 1, got '%s'", cap,
                           v);
        n++;
    }
    return n > 0 ? n : err_set(ERR_INVAL, "--sweep is empty");
}

// ---- runs

struct plan {
    struct bench_client_opts copts;
    struct bench_run_info info;
    char **bodies;
    int *prompt_lens;
    double *arrivals;
    int n;
};

// One run at concurrency `conc`: prints the block, fills *s, returns the per-request results
// (caller frees) or NULL when the run could not happen. *interrupted: Ctrl-C cut it short.
static struct bench_result *run_once(struct plan *pl, const struct options *o, int conc,
                                     const char *label, struct bench_summary *s,
                                     bool *interrupted) {
    struct bench_result *res = calloc((size_t)pl->n, sizeof(*res));
    if (!res) return NULL;
    pl->copts.max_concurrency = conc;
    pl->copts.label = label;
    pl->info.max_concurrency = conc;
    bench_print_header(stdout, &pl->info);
    fflush(stdout);
    double dur;
    int rc =
        bench_client_run(&pl->copts, pl->bodies, pl->prompt_lens, pl->arrivals, pl->n, res, &dur);
    *interrupted = rc == ERR_CANCELLED;
    if (*interrupted) {
        fprintf(stderr, "keel-bench: interrupted; the figures cover what finished\n");
        rc = 0;
    }
    if (rc || bench_summarize(res, pl->n, dur, o->pcts, o->n_pcts, s)) {
        fprintf(stderr, "keel-bench: %s\n", err_msg());
        for (int i = 0; i < pl->n; i++)
            bench_result_clear(&res[i]);
        free(res);
        return NULL;
    }
    bench_print_failures(stdout, res, pl->n);
    bench_print_result(stdout, s, &pl->info);
    fflush(stdout);
    return res;
}

static void free_results(struct bench_result *res, int n) {
    for (int i = 0; res && i < n; i++)
        bench_result_clear(&res[i]);
    free(res);
}

static int warmup(struct plan *pl, const struct options *o) {
    if (o->warmup <= 0) return 0;
    fprintf(stderr, "Warming up with %d requests...\n", o->warmup);
    char **bodies = malloc((size_t)o->warmup * sizeof(*bodies));
    int *lens = calloc((size_t)o->warmup, sizeof(*lens));
    double *arr = calloc((size_t)o->warmup, sizeof(*arr));
    struct bench_result *res = calloc((size_t)o->warmup, sizeof(*res));
    int rc = !bodies || !lens || !arr || !res ? err_set(ERR_NOMEM, "out of memory") : 0;
    if (!rc) {
        for (int i = 0; i < o->warmup; i++)
            bodies[i] = pl->bodies[0];
        struct bench_client_opts co = pl->copts;
        co.max_concurrency = o->max_concurrency;
        co.label = "warmup";
        double dur;
        rc = bench_client_run(&co, bodies, lens, arr, o->warmup, res, &dur);
        int failed = 0;
        for (int i = 0; i < o->warmup; i++)
            failed += !res[i].success;
        if (!rc && failed)
            fprintf(stderr, "warning: %d of %d warm-up requests failed (first: %s)\n", failed,
                    o->warmup, res[0].error ? res[0].error : "see the run");
        if (!rc) fprintf(stderr, "Warmup run completed.\n");
    }
    free_results(res, o->warmup);
    free(bodies), free(lens), free(arr);
    return rc;
}

// Builds the prompts, bodies and arrival times. Returns 0 or an ERR_* with the message set.
static int make_plan(const struct options *o, enum bench_endpoint ep, const char *model,
                     struct plan *pl) {
    struct bench_rng rng;
    bench_rng_seed(&rng, o->seed);
    struct bench_dataset ds;
    int rc;
    bool random = strcmp(o->dataset, "random") == 0;
    if (random) {
        struct bench_random_opts ro = {
            .input_len = o->input_len,
            .output_len = o->output_len > 0 ? o->output_len : 128,
            .range_ratio = o->range_ratio,
            .id_lo = o->id_lo,
            .id_hi = o->id_hi,
            .text = ep == BENCH_EP_CHAT || (o->prompt_format && !strcmp(o->prompt_format, "text"))};
        if (ep == BENCH_EP_CHAT && o->prompt_format && !strcmp(o->prompt_format, "ids"))
            return err_set(ERR_INVAL, "the chat endpoint takes text: use --prompt-format text");
        rc = bench_dataset_random(&ro, &rng, o->num_prompts, &ds);
    } else {
        rc = bench_dataset_load(o->dataset, o->num_prompts, o->output_len, &rng, &ds);
    }
    if (rc) return rc;
    pl->n = ds.n;
    pl->bodies = calloc((size_t)ds.n, sizeof(*pl->bodies));
    pl->prompt_lens = calloc((size_t)ds.n, sizeof(*pl->prompt_lens));
    pl->arrivals = calloc((size_t)ds.n, sizeof(*pl->arrivals));
    if (!pl->bodies || !pl->prompt_lens || !pl->arrivals) rc = err_set(ERR_NOMEM, "out of memory");
    struct bench_body_opts bo = {.endpoint = ep, .model = model, .ignore_eos = o->ignore_eos};
    for (int i = 0; !rc && i < ds.n; i++) {
        pl->bodies[i] = bench_body_build(&bo, &ds.items[i]);
        pl->prompt_lens[i] = ds.items[i].prompt_len;
        if (!pl->bodies[i]) rc = err_set(ERR_NOMEM, "out of memory building request %d", i);
    }
    // Arrivals have their own stream so the same seed gives the same schedule for any dataset.
    struct bench_rng arr_rng;
    bench_rng_seed(&arr_rng, o->seed ^ 0x6b65656c62656e63ULL);
    if (!rc) rc = bench_arrivals(&arr_rng, ds.n, o->request_rate, o->burstiness, pl->arrivals);
    bench_dataset_free(&ds);
    return rc;
}

static void free_plan(struct plan *pl) {
    for (int i = 0; pl->bodies && i < pl->n; i++)
        free(pl->bodies[i]);
    free(pl->bodies), free(pl->prompt_lens), free(pl->arrivals);
}

// Many streams need many sockets: raise the descriptor limit as far as allowed.
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int run_all(const struct options *o, struct plan *pl) {
    int conc[64], n_conc = 1;
    conc[0] = o->max_concurrency;
    if (o->sweep && (n_conc = parse_sweep(o->sweep, conc, 64)) < 0) return EXIT_USAGE;
    struct bench_sweep_point *pts = calloc((size_t)n_conc, sizeof(*pts));
    cJSON *runs = cJSON_CreateArray();
    int status = pts && runs ? 0 : 1, n_done = 0;
    for (int k = 0; !status && k < n_conc; k++) {
        char label[32];
        snprintf(label, sizeof(label), o->sweep ? "c=%d" : "benchmark", conc[k]);
        fprintf(stderr, "Starting main benchmark run%s...\n", o->sweep ? " (sweep point)" : "");
        bool interrupted = false;
        struct bench_result *res = run_once(pl, o, conc[k], label, &pts[k].s, &interrupted);
        if (!res) {
            status = 1;
            break;
        }
        pts[k].concurrency = conc[k];
        n_done++;
        if (pts[k].s.completed == 0) status = 1;
        if (interrupted) status = EXIT_INTERRUPTED;
        if (o->json_path)
            cJSON_AddItemToArray(runs, bench_result_json(&pts[k].s, &pl->info, res, pl->n));
        free_results(res, pl->n);
    }
    // A sweep cut short still writes the points it has.
    if (o->sweep && n_done > 0) {
        char title[256];
        snprintf(title, sizeof(title), "keel-bench sweep: %s, %s", pl->info.model,
                 pl->info.base_url);
        if (bench_sweep_write_csv(o->sweep_csv, pts, n_done) ||
            bench_sweep_write_svg(o->sweep_svg, pts, n_done, title)) {
            fprintf(stderr, "keel-bench: %s\n", err_msg());
            status = status ? status : 1;
        } else {
            fprintf(stderr, "Sweep written to %s and %s\n", o->sweep_csv, o->sweep_svg);
        }
    }
    if (o->json_path && cJSON_GetArraySize(runs) > 0) {
        cJSON *doc = o->sweep ? runs : cJSON_DetachItemFromArray(runs, 0);
        if (bench_write_json(o->json_path, doc)) {
            fprintf(stderr, "keel-bench: %s\n", err_msg());
            status = status ? status : 1;
        }
        if (doc != runs) cJSON_Delete(doc);
    }
    cJSON_Delete(runs);
    free(pts);
    return status;
}

int main(int argc, char **argv) {
    struct options o;
    int rc = parse_args(argc - 1, argv + 1, &o);
    if (rc == 1) {
        usage(stdout);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "keel-bench: %s\n", err_msg());
        return EXIT_USAGE;
    }
    char url[600];
    if (!o.base_url)
        snprintf(url, sizeof(url), "http://%s:%d", o.host, o.port);
    else
        snprintf(url, sizeof(url), "%s", o.base_url);
    enum bench_endpoint ep = BENCH_EP_COMPLETIONS;
    const char *path = "/v1/completions";
    if (!strcmp(o.endpoint, "chat"))
        ep = BENCH_EP_CHAT, path = "/v1/chat/completions";
    else if (o.endpoint[0] == '/') {
        path = o.endpoint;
        if (strstr(path, "chat/completions")) ep = BENCH_EP_CHAT;
    } else if (strcmp(o.endpoint, "completions") != 0) {
        fprintf(stderr, "keel-bench: --endpoint is completions, chat or a path, got '%s'\n",
                o.endpoint);
        return EXIT_USAGE;
    }
    struct bench_target target;
    if (bench_target_parse(url, path, &target)) {
        fprintf(stderr, "keel-bench: %s\n", err_msg());
        return EXIT_USAGE;
    }
    target.api_key = o.api_key && o.api_key[0] ? o.api_key : NULL;
    raise_fd_limit();
    // A server that closes a connection while a request is being written must fail that
    // request (EPIPE), not end the process.
    signal(SIGPIPE, SIG_IGN);
    char *model_owned = NULL;
    if (!o.model) {
        if (bench_first_model(&target, &model_owned)) {
            fprintf(stderr, "keel-bench: %s\n", err_msg());
            return 1;
        }
        o.model = model_owned;
    }
    struct plan pl = {0};
    if ((rc = make_plan(&o, ep, o.model, &pl)) != 0) {
        fprintf(stderr, "keel-bench: %s\n", err_msg());
        free_plan(&pl);
        free(model_owned);
        return rc == ERR_INVAL || rc == ERR_FORMAT || rc == ERR_NOT_FOUND ? EXIT_USAGE : 1;
    }
    pl.copts = (struct bench_client_opts){.target = &target,
                                          .endpoint = ep,
                                          .timeout_s = o.timeout_s,
                                          .progress = !o.no_progress && isatty(2)};
    pl.info = (struct bench_run_info){.base_url = url,
                                      .endpoint_path = target.path,
                                      .model = o.model,
                                      .dataset = o.dataset,
                                      .num_prompts = o.num_prompts,
                                      .request_rate = o.request_rate,
                                      .burstiness = o.burstiness,
                                      .seed = o.seed,
                                      .ignore_eos = o.ignore_eos};
    int status = 1;
    if (warmup(&pl, &o) != 0)
        fprintf(stderr, "keel-bench: warm-up: %s\n", err_msg());
    else
        status = run_all(&o, &pl);
    free_plan(&pl);
    free(model_owned);
    return status;
}

// Workloads for keel-bench: the seeded random generator, the arrival process, random prompts
// (token ids or words), prompt files (JSON Lines or ShareGPT) and the request bodies.
#include "bench/bench.h"

#include "common/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- the random generator

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void bench_rng_seed(struct bench_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t bench_rng_next(struct bench_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double bench_rng_uniform(struct bench_rng *rng) {
    return (double)(bench_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

int bench_rng_range(struct bench_rng *rng, int lo, int hi) {
    if (hi <= lo) return lo;
    uint64_t span = (uint64_t)((int64_t)hi - lo + 1);
    return lo + (int)(bench_rng_next(rng) % span);
}

static double rng_normal(struct bench_rng *rng) {
    // Box-Muller; 1 - u keeps the logarithm finite.
    double u = 1.0 - bench_rng_uniform(rng), v = bench_rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

// Marsaglia and Tsang's method; shapes below 1 use the boost gamma(k + 1) * U^(1/k).
double bench_rng_gamma(struct bench_rng *rng, double shape, double scale) {
    if (shape < 1.0) {
        double u = 1.0 - bench_rng_uniform(rng);
        return bench_rng_gamma(rng, shape + 1.0, scale) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(rng), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = 1.0 - bench_rng_uniform(rng);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * scale;
    }
}

// ---- the arrival process

int bench_arrivals(struct bench_rng *rng, int n, double rate, double burstiness, double *out_s) {
    if (n <= 0) return 0;
    if (!(rate > 0)) return err_set(ERR_INVAL, "request rate must be > 0 (or inf), got %g", rate);
    if (!(burstiness > 0)) return err_set(ERR_INVAL, "burstiness must be > 0, got %g", burstiness);
    if (isinf(rate)) {
        for (int i = 0; i < n; i++)
            out_s[i] = 0;
        return 0;
    }
    double t = 0;
    for (int i = 0; i < n; i++) {
        t += isinf(burstiness) ? 1.0 / rate
                               : bench_rng_gamma(rng, burstiness, 1.0 / (rate * burstiness));
        out_s[i] = t;
    }
    // Rescaling makes the offered load exactly n / rate whatever the seed, as vLLM does, so
    // runs with different seeds compare on throughput.
    double k = ((double)n / rate) / out_s[n - 1];
    for (int i = 0; i < n; i++)
        out_s[i] *= k;
    return 0;
}

// ---- random prompts

// Common English words; each is one token (with its leading space) in the usual BPE
// vocabularies, so a prompt of k words is close to k tokens. The server's usage has the truth.
static const char *const bench_words[] = {
    "time",     "year",    "people",   "way",    "day",    "man",     "thing",   "woman",
    "life",     "child",   "world",    "school", "state",  "family",  "student", "group",
    "country",  "problem", "hand",     "part",   "place",  "case",    "week",    "company",
    "system",   "program", "question", "work",   "number", "night",   "point",   "home",
    "water",    "room",    "mother",   "area",   "money",  "story",   "fact",    "month",
    "lot",      "right",   "study",    "book",   "eye",    "job",     "word",    "business",
    "issue",    "side",    "kind",     "head",   "house",  "service", "friend",  "father",
    "power",    "hour",    "game",     "line",   "end",    "member",  "law",     "car",
    "city",     "name",    "team",     "minute", "idea",   "kid",     "body",    "back",
    "parent",   "face",    "others",   "level",  "office", "door",    "health",  "person",
    "art",      "war",     "history",  "party",  "result", "change",  "morning", "reason",
    "research", "girl",    "guy",      "moment", "air",    "teacher", "force",   "education",
    "river",    "green",   "small",
};
#define BENCH_N_WORDS ((int)(sizeof(bench_words) / sizeof(bench_words[0])))

static int scaled_len(struct bench_rng *rng, int len, double r) {
    int lo = (int)floor(len * (1.0 - r)), hi = (int)ceil(len * (1.0 + r));
    if (lo < 1) lo = 1;
    if (hi < lo) hi = lo;
    return bench_rng_range(rng, lo, hi);
}

static char *random_text(struct bench_rng *rng, int n_words) {
    size_t cap = (size_t)n_words * 12 + 1, len = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    for (int i = 0; i < n_words; i++) {
        const char *w = bench_words[bench_rng_range(rng, 0, BENCH_N_WORDS - 1)];
        size_t wl = strlen(w);
        if (i > 0) s[len++] = ' ';
        memcpy(s + len, w, wl);
        len += wl;
    }
    s[len] = '\0';
    return s;
}

int bench_dataset_random(const struct bench_random_opts *o, struct bench_rng *rng, int n,
                         struct bench_dataset *out) {
    memset(out, 0, sizeof(*out));
    if (n <= 0) return err_set(ERR_INVAL, "--num-prompts must be > 0, got %d", n);
    if (o->input_len <= 0 || o->output_len <= 0)
        return err_set(ERR_INVAL, "--input-len and --output-len must be > 0 (got %d and %d)",
                       o->input_len, o->output_len);
    if (!(o->range_ratio >= 0 && o->range_ratio < 1))
        return err_set(ERR_INVAL, "--range-ratio must be in [0, 1), got %g", o->range_ratio);
    if (!o->text && (o->id_lo < 0 || o->id_hi <= o->id_lo))
        return err_set(ERR_INVAL, "token id range [%d, %d) is empty", o->id_lo, o->id_hi);
    out->items = calloc((size_t)n, sizeof(*out->items));
    if (!out->items) return err_set(ERR_NOMEM, "out of memory for %d prompts", n);
    out->n = n;
    for (int i = 0; i < n; i++) {
        struct bench_prompt *p = &out->items[i];
        p->prompt_len = scaled_len(rng, o->input_len, o->range_ratio);
        p->output_len = scaled_len(rng, o->output_len, o->range_ratio);
        if (o->text) {
            p->text = random_text(rng, p->prompt_len);
        } else {
            p->ids = malloc((size_t)p->prompt_len * sizeof(*p->ids));
            if (p->ids) {
                p->n_ids = p->prompt_len;
                for (int j = 0; j < p->n_ids; j++)
                    p->ids[j] = bench_rng_range(rng, o->id_lo, o->id_hi - 1);
            }
        }
        if (!p->text && !p->ids) {
            bench_dataset_free(out);
            return err_set(ERR_NOMEM, "out of memory for prompt %d", i);
        }
    }
    return 0;
}

void bench_dataset_free(struct bench_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) {
        free(ds->items[i].ids);
        free(ds->items[i].text);
    }
    free(ds->items);
    ds->items = NULL;
    ds->n = 0;
}

// ---- prompt files

// The text of a turn: "value" (ShareGPT) or "content" (OpenAI messages), when a string.
static const char *turn_text(const cJSON *turn) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(turn, "value");
    if (!cJSON_IsString(v)) v = cJSON_GetObjectItemCaseSensitive(turn, "content");
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool turn_is_user(const cJSON *turn) {
    const cJSON *who = cJSON_GetObjectItemCaseSensitive(turn, "from");
    if (!cJSON_IsString(who)) who = cJSON_GetObjectItemCaseSensitive(turn, "role");
    return cJSON_IsString(who) &&
           (strcmp(who->valuestring, "human") == 0 || strcmp(who->valuestring, "user") == 0);
}

// One record to a prompt; *skip = true for a conversation with no user turn followed by a
// reply (ShareGPT has some; vLLM drops them too).
static int record_prompt(const cJSON *rec, int output_len, struct bench_prompt *p, bool *skip) {
    *skip = false;
    memset(p, 0, sizeof(*p));
    if (!cJSON_IsObject(rec)) return err_set(ERR_FORMAT, "a record is not a JSON object");
    const char *prompt = NULL;
    int own_len = 0;
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(rec, "prompt");
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(rec, "conversations");
    if (!conv) conv = cJSON_GetObjectItemCaseSensitive(rec, "messages");
    if (cJSON_IsString(pr)) {
        prompt = pr->valuestring;
        const cJSON *ol = cJSON_GetObjectItemCaseSensitive(rec, "output_len");
        if (!cJSON_IsNumber(ol)) ol = cJSON_GetObjectItemCaseSensitive(rec, "max_tokens");
        if (cJSON_IsNumber(ol)) own_len = (int)ol->valuedouble;
    } else if (cJSON_IsArray(conv)) {
        bool have_reply = false;
        const cJSON *turn;
        cJSON_ArrayForEach(turn, conv) {
            if (!prompt) {
                if (turn_is_user(turn)) prompt = turn_text(turn);
                continue;
            }
            const char *reply = turn_text(turn);
            if (reply) {
                own_len = (int)(strlen(reply) / 4) + 1;
                have_reply = true;
            }
            break;
        }
        if (!prompt || (!have_reply && output_len <= 0)) {
            *skip = true;
            return 0;
        }
    } else {
        return err_set(ERR_FORMAT, "a record has neither \"prompt\" (a string) nor "
                                   "\"conversations\"/\"messages\" (an array)");
    }
    p->output_len = output_len > 0 ? output_len : own_len;
    if (p->output_len <= 0)
        return err_set(ERR_FORMAT, "a prompt has no output length: give --output-len or an "
                                   "\"output_len\" field");
    p->text = strdup(prompt);
    if (!p->text) return err_set(ERR_NOMEM, "out of memory");
    p->prompt_len = (int)(strlen(prompt) / 4) + 1;
    return 0;
}

static int push_record(const cJSON *rec, int output_len, struct bench_dataset *all, int *cap) {
    struct bench_prompt p;
    bool skip;
    int rc = record_prompt(rec, output_len, &p, &skip);
    if (rc || skip) return rc;
    if (all->n == *cap) {
        int ncap = *cap ? *cap * 2 : 64;
        struct bench_prompt *ni = realloc(all->items, (size_t)ncap * sizeof(*ni));
        if (!ni) {
            free(p.text);
            return err_set(ERR_NOMEM, "out of memory");
        }
        all->items = ni;
        *cap = ncap;
    }
    all->items[all->n++] = p;
    return 0;
}

// Reads every record: the whole text as one JSON array, or else one JSON value per line.
static int parse_records(const char *text, size_t len, const char *what, int output_len,
                         struct bench_dataset *all) {
    int cap = 0;
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (cJSON_IsArray(doc)) {
        int i = 0;
        const cJSON *rec;
        cJSON_ArrayForEach(rec, doc) {
            int rc = push_record(rec, output_len, all, &cap);
            if (rc) {
                cJSON_Delete(doc);
                return err_set(rc, "%s: record %d: %s", what, i, err_msg());
            }
            i++;
        }
        cJSON_Delete(doc);
        return 0;
    }
    cJSON_Delete(doc);
    int line_no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
        line_no++;
        const char *line = text + pos;
        pos += ll + 1;
        size_t k = 0;
        while (k < ll && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        if (k == ll) continue;
        cJSON *rec = cJSON_ParseWithLength(line, ll);
        if (!rec) return err_set(ERR_FORMAT, "%s:%d: not valid JSON", what, line_no);
        int rc = push_record(rec, output_len, all, &cap);
        cJSON_Delete(rec);
        if (rc) return err_set(rc, "%s:%d: %s", what, line_no, err_msg());
    }
    return 0;
}

int bench_dataset_parse(const char *text, size_t len, const char *what, int n, int output_len,
                        struct bench_rng *rng, struct bench_dataset *out) {
    memset(out, 0, sizeof(*out));
    if (n <= 0) return err_set(ERR_INVAL, "--num-prompts must be > 0, got %d", n);
    struct bench_dataset all = {0};
    int rc = parse_records(text, len, what, output_len, &all);
    if (rc == 0 && all.n == 0) rc = err_set(ERR_FORMAT, "%s: no usable prompts", what);
    if (rc) {
        bench_dataset_free(&all);
        return rc;
    }
    // Fisher-Yates with the run's seed, then as many passes as n needs.
    for (int i = all.n - 1; i > 0; i--) {
        int j = bench_rng_range(rng, 0, i);
        struct bench_prompt t = all.items[i];
        all.items[i] = all.items[j];
        all.items[j] = t;
    }
    out->items = calloc((size_t)n, sizeof(*out->items));
    if (!out->items) {
        bench_dataset_free(&all);
        return err_set(ERR_NOMEM, "out of memory for %d prompts", n);
    }
    out->n = n;
    for (int i = 0; i < n; i++) {
        const struct bench_prompt *src = &all.items[i % all.n];
        out->items[i] = *src;
        out->items[i].text = strdup(src->text);
        if (!out->items[i].text) {
            bench_dataset_free(&all);
            bench_dataset_free(out);
            return err_set(ERR_NOMEM, "out of memory");
        }
    }
    bench_dataset_free(&all);
    return 0;
}

int bench_dataset_load(const char *path, int n, int output_len, struct bench_rng *rng,
                       struct bench_dataset *out) {
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "cannot open dataset %s: %s", path,
                       strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return err_set(ERR_NOMEM, "out of memory reading %s", path);
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return err_set(ERR_IO, "cannot read %s", path);
    }
    int rc = bench_dataset_parse(buf, len, path, n, output_len, rng, out);
    free(buf);
    return rc;
}

// ---- request bodies

// The ids as a raw JSON array: cJSON would print each one as a double and read it back to
// check, which makes building a thousand long prompts take seconds.
static bool ids_json(cJSON *b, const struct bench_prompt *p) {
    char *s = malloc((size_t)p->n_ids * 12 + 3);
    if (!s) return false;
    size_t len = 0;
    s[len++] = '[';
    for (int i = 0; i < p->n_ids; i++)
        len += (size_t)sprintf(s + len, i ? ",%d" : "%d", (int)p->ids[i]);
    s[len++] = ']';
    s[len] = '\0';
    bool ok = cJSON_AddRawToObject(b, "prompt", s) != NULL;
    free(s);
    return ok;
}

char *bench_body_build(const struct bench_body_opts *o, const struct bench_prompt *p) {
    if (o->endpoint == BENCH_EP_CHAT && !p->text) return NULL;
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    if (o->model) cJSON_AddStringToObject(b, "model", o->model);
    if (o->endpoint == BENCH_EP_CHAT) {
        cJSON *msgs = cJSON_AddArrayToObject(b, "messages");
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(msgs, m);
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", p->text);
    } else if (p->text) {
        cJSON_AddStringToObject(b, "prompt", p->text);
    } else if (!ids_json(b, p)) {
        cJSON_Delete(b);
        return NULL;
    }
    cJSON_AddNumberToObject(b, "max_tokens", p->output_len);
    if (o->ignore_eos) {
        cJSON_AddBoolToObject(b, "ignore_eos", 1);
        cJSON_AddNumberToObject(b, "min_tokens", p->output_len);
    }
    cJSON_AddBoolToObject(b, "stream", 1);
    cJSON *so = cJSON_AddObjectToObject(b, "stream_options");
    cJSON_AddBoolToObject(so, "include_usage", 1);
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return s;
}

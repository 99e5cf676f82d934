// The chat template, hand-written for the Qwen ChatML families instead of interpreting Jinja.
//
// At load the template text of tokenizer_config.json is recognised by fragments that decide what
// it renders (Qwen3 with thinking, the classic Qwen2.5 template with its default system prompt,
// the original Qwen2 one); anything else is refused, so keel never renders a prompt the model
// was not trained on. Each renderer below follows its template statement by statement, and
// tests/unit/test_chat.c checks them against transformers' apply_chat_template.
//
// Values the templates print with `tojson` are re-serialised exactly as transformers' tojson
// filter does (Python's json.dumps with ensure_ascii=False): ", " and ": " separators, keys in
// their given order, Python's float repr.
#include "models/tok_internal.h"

#include "common/err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- recognising the template
// --------------------------------------------------------------------

// Fragments of the Jinja source (as stored: "\n" inside the template's string literals is a
// backslash and an n) that pin down the behaviour each renderer implements.
static const char *const qwen3_marks[] = {"<|im_start|>",
                                          "<tools></tools>",
                                          "multi_step_tool",
                                          "last_query_index",
                                          "reasoning_content",
                                          "message.content.split('</think>')[-1].lstrip('\\n')",
                                          "reasoning_content.strip('\\n')",
                                          "tool_call.arguments is string",
                                          "enable_thinking is defined and enable_thinking is false",
                                          "'<think>\\n\\n</think>\\n\\n'",
                                          NULL};
static const char *const qwen25_marks[] = {
    "<|im_start|>",
    "<tools></tools>",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "tool_call.arguments | tojson",
    "(message.role == \"assistant\" and not message.tool_calls)",
    NULL};
static const char *const qwen2_marks[] = {
    "<|im_start|>", "loop.first and messages[0]['role'] != 'system'",
    "<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n", NULL};

static bool has_all(const char *tmpl, const char *const *marks) {
    for (int i = 0; marks[i]; i++)
        if (!strstr(tmpl, marks[i])) return false;
    return true;
}

void tok__chat_detect(struct tok_tokenizer *t, const char *tmpl) {
    t->chat_kind = TOK__CHAT_NONE;
    t->chat_why[0] = 0;
    if (!tmpl) {
        snprintf(t->chat_why, sizeof(t->chat_why), "tokenizer_config.json has no chat_template");
    } else if (has_all(tmpl, qwen3_marks)) {
        t->chat_kind = TOK__CHAT_QWEN3;
    } else if (has_all(tmpl, qwen25_marks) && !strstr(tmpl, "reasoning_content")) {
        t->chat_kind = TOK__CHAT_QWEN25;
    } else if (has_all(tmpl, qwen2_marks) && !strstr(tmpl, "tool")) {
        t->chat_kind = TOK__CHAT_QWEN2;
    } else if (strstr(tmpl, "<|im_start|>")) {
        snprintf(
            t->chat_why, sizeof(t->chat_why),
            "the chat template is ChatML but not one keel renders exactly (Qwen3, Qwen2.5, Qwen2)");
    } else {
        snprintf(t->chat_why, sizeof(t->chat_why),
                 "the chat template is not ChatML; keel renders only the Qwen "
                 "ChatML templates");
    }
}

bool tok_chat_supported(const struct tok_tokenizer *t) {
    if (t->chat_kind != TOK__CHAT_NONE) return true;
    err_set(ERR_UNSUPPORTED, "%s", t->chat_why);
    return false;
}

// ---- output buffer
// --------------------------------------------------------------------------------

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void put(struct sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void puts_(struct sbuf *b, const char *s) {
    put(b, s, strlen(s));
}

// ---- Python's json.dumps, from JSON text
// ------------------------------------------------------------

struct jp {
    const char *s; // the JSON text, NUL-terminated
    size_t i;
};

static void jp_ws(struct jp *p) {
    while (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')
        p->i++;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

static void put_cp(struct sbuf *b, uint32_t c) {
    char u[4];
    int n;
    if (c < 0x80)
        u[0] = (char)c, n = 1;
    else if (c < 0x800)
        u[0] = (char)(0xC0 | c >> 6), u[1] = (char)(0x80 | (c & 0x3F)), n = 2;
    else if (c < 0x10000)
        u[0] = (char)(0xE0 | c >> 12), u[1] = (char)(0x80 | ((c >> 6) & 0x3F)),
        u[2] = (char)(0x80 | (c & 0x3F)), n = 3;
    else
        u[0] = (char)(0xF0 | c >> 18), u[1] = (char)(0x80 | ((c >> 12) & 0x3F)),
        u[2] = (char)(0x80 | ((c >> 6) & 0x3F)), u[3] = (char)(0x80 | (c & 0x3F)), n = 4;
    put(b, u, n);
}

// A JSON string, written back with Python's escapes: \" \\ \n \r \t \b \f and \u00xx for the
// other control characters; everything else (non-ASCII included) as UTF-8.
static int jp_string(struct jp *p, struct sbuf *b) {
    p->i++; // the opening quote
    put(b, "\"", 1);
    for (;;) {
        const uint8_t *s = (const uint8_t *)p->s + p->i;
        if (*s == '"') break;
        if (*s == 0) return err_set(ERR_INVAL, "JSON: unterminated string");
        if (*s < 0x20) return err_set(ERR_INVAL, "JSON: control character in a string");
        uint32_t c;
        if (*s == '\\') {
            char e = (char)s[1];
            p->i += 2;
            switch (e) {
            case '"':
                c = '"';
                break;
            case '\\':
                c = '\\';
                break;
            case '/':
                c = '/';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                uint32_t lo;
                if (hex4(p->s + p->i, &c)) return err_set(ERR_INVAL, "JSON: bad \\u escape");
                p->i += 4;
                if (c >= 0xD800 && c <= 0xDBFF && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u' &&
                    !hex4(p->s + p->i + 2, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                    p->i += 6;
                } else if (c >= 0xD800 && c <= 0xDFFF) {
                    return err_set(ERR_INVAL, "JSON: lone surrogate \\u%04x in a string", c);
                }
                break;
            }
            default:
                return err_set(ERR_INVAL, "JSON: bad escape '\\%c'", e);
            }
        } else {
            int len = tok__utf8_len(s, 4); // stops at the NUL: it is no continuation byte
            if (!len) return err_set(ERR_INVAL, "JSON: string is not valid UTF-8");
            c = (uint32_t)tok__utf8_cp(s, len);
            p->i += len;
        }
        static const char esc[] = "btn\0fr";
        if (c == '"' || c == '\\') {
            char two[2] = {'\\', (char)c};
            put(b, two, 2);
        } else if (c >= 8 && c <= 13 && c != 11) {
            char two[2] = {'\\', esc[c - 8]};
            put(b, two, 2);
        } else if (c < 0x20) {
            char u[8];
            snprintf(u, sizeof(u), "\\u%04x", c);
            put(b, u, 6);
        } else {
            put_cp(b, c);
        }
    }
    p->i++;
    put(b, "\"", 1);
    return 0;
}

// Python's repr of a float: the shortest digits that read back to the same double, in fixed
// notation when the decimal exponent is in [-4, 16), else as d.ddde+XX.
static void put_py_float(struct sbuf *b, double v) {
    if (isinf(v)) {
        puts_(b, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    char sci[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(sci, sizeof(sci), "%.*e", prec - 1, v);
        if (strtod(sci, NULL) == v) break;
    }
    // sci is [-]d[.ddd]e[+-]XX: split into sign, digits and exponent.
    const char *q = sci;
    bool neg = *q == '-';
    if (neg) q++;
    char digits[24];
    int nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    int decpt = exp10 + 1; // digits are 0.d1d2... x 10^decpt
    char out[64];
    int o = 0;
    if (neg) out[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0', out[o++] = '.';
            for (int k = 0; k < -decpt; k++)
                out[o++] = '0';
            for (int k = 0; k < nd; k++)
                out[o++] = digits[k];
        } else {
            for (int k = 0; k < decpt; k++)
                out[o++] = k < nd ? digits[k] : '0';
            out[o++] = '.';
            if (nd > decpt)
                for (int k = decpt; k < nd; k++)
                    out[o++] = digits[k];
            else
                out[o++] = '0';
        }
        put(b, out, o);
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int k = 1; k < nd; k++)
                out[o++] = digits[k];
        }
        o += snprintf(out + o, sizeof(out) - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
        put(b, out, o);
    }
}

static int jp_number(struct jp *p, struct sbuf *b) {
    const char *s = p->s + p->i, *q = s;
    if (*q == '-') q++;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (*q >= '0' && *q <= '9')
            q++;
    else
        return err_set(ERR_INVAL, "JSON: bad number at offset %zu", p->i);
    bool is_float = false;
    if (*q == '.') {
        is_float = true;
        if (!(*++q >= '0' && *q <= '9'))
            return err_set(ERR_INVAL, "JSON: bad number at offset %zu", p->i);
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        is_float = true;
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!(*q >= '0' && *q <= '9'))
            return err_set(ERR_INVAL, "JSON: bad number at offset %zu", p->i);
        while (*q >= '0' && *q <= '9')
            q++;
    }
    size_t n = (size_t)(q - s);
    p->i += n;
    if (is_float)
        put_py_float(b, strtod(s, NULL));
    else if (n == 2 && s[0] == '-' && s[1] == '0')
        put(b, "0", 1); // Python's int has no -0
    else
        put(b, s, n);
    return 0;
}

static int jp_value(struct jp *p, struct sbuf *b, int depth) {
    if (depth > 64) return err_set(ERR_INVAL, "JSON: nested too deeply");
    jp_ws(p);
    char c = p->s[p->i];
    int rc;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        put(b, &c, 1);
        p->i++;
        jp_ws(p);
        if (p->s[p->i] == close) {
            p->i++;
            put(b, &close, 1);
            return 0;
        }
        for (bool first = true;; first = false) {
            if (!first) puts_(b, ", ");
            if (c == '{') {
                jp_ws(p);
                if (p->s[p->i] != '"')
                    return err_set(ERR_INVAL, "JSON: object key is not a string");
                if ((rc = jp_string(p, b))) return rc;
                jp_ws(p);
                if (p->s[p->i++] != ':') return err_set(ERR_INVAL, "JSON: missing ':' after a key");
                puts_(b, ": ");
            }
            if ((rc = jp_value(p, b, depth + 1))) return rc;
            jp_ws(p);
            char d = p->s[p->i++];
            if (d == close) break;
            if (d != ',') return err_set(ERR_INVAL, "JSON: expected ',' or '%c'", close);
        }
        put(b, &close, 1);
        return 0;
    }
    if (c == '"') return jp_string(p, b);
    if (c == '-' || (c >= '0' && c <= '9')) return jp_number(p, b);
    // json.dumps writes Python's True, False and None back as the same JSON literals.
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(lits[k]);
        if (strncmp(p->s + p->i, lits[k], n) == 0) {
            p->i += n;
            puts_(b, lits[k]);
            return 0;
        }
    }
    return err_set(ERR_INVAL, "JSON: unexpected '%c' at offset %zu", c ? c : '0', p->i);
}

// Puts `what: ` before the current error message (copied first: err_set reuses its buffer).
static int prefix_err(int rc, const char *what) {
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", err_msg());
    return err_set(rc, "%s: %s", what, msg);
}

// Writes JSON text `json` as transformers' tojson would print the value it parses to.
static int put_tojson(struct sbuf *b, const char *json, const char *what) {
    struct jp p = {json, 0};
    int rc = jp_value(&p, b, 0);
    if (rc) return prefix_err(rc, what);
    jp_ws(&p);
    if (p.s[p.i]) return err_set(ERR_INVAL, "%s: text after the JSON value", what);
    return 0;
}

// The template's `for tool in tools: "\n" + tool | tojson`, from the request's JSON array.
static int put_tools(struct sbuf *b, const char *tools_json, int *n_tools) {
    struct jp p = {tools_json, 0};
    *n_tools = 0;
    jp_ws(&p);
    if (p.s[p.i] != '[') return err_set(ERR_INVAL, "tools: not a JSON array");
    p.i++;
    jp_ws(&p);
    if (p.s[p.i] == ']') {
        p.i++;
    } else {
        for (;;) {
            put(b, "\n", 1);
            struct sbuf tmp = {0};
            int rc = jp_value(&p, &tmp, 1);
            if (!rc) put(b, tmp.p, tmp.len);
            free(tmp.p);
            if (rc) return prefix_err(rc, "tools");
            ++*n_tools;
            jp_ws(&p);
            char d = p.s[p.i++];
            if (d == ']') break;
            if (d != ',') return err_set(ERR_INVAL, "tools: expected ',' or ']'");
        }
    }
    jp_ws(&p);
    if (p.s[p.i]) return err_set(ERR_INVAL, "tools: text after the JSON array");
    return 0;
}

// ---- shared pieces of the Qwen templates
// ------------------------------------------------------------

static const char tools_head[] =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
static const char tools_tail[] =
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";
static const char qwen_default_system[] =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

static bool is_role(const struct tok_chat_msg *m, const char *role) {
    return strcmp(m->role, role) == 0;
}
static const char *content_of(const struct tok_chat_msg *m) {
    return m->content ? m->content : "";
}

// Tool responses: consecutive tool messages share one user turn.
static void put_tool_msg(struct sbuf *b, const struct tok_chat_msg *msgs, int n, int i) {
    if (i == 0 || !is_role(&msgs[i - 1], "tool")) puts_(b, "<|im_start|>user");
    puts_(b, "\n<tool_response>\n");
    puts_(b, content_of(&msgs[i]));
    puts_(b, "\n</tool_response>");
    if (i == n - 1 || !is_role(&msgs[i + 1], "tool")) puts_(b, "<|im_end|>\n");
}

// A string view, for the template's split / strip arithmetic.
struct sv {
    const char *p;
    size_t n;
};

static struct sv sv_lstrip_nl(struct sv s) {
    while (s.n && *s.p == '\n')
        s.p++, s.n--;
    return s;
}
static struct sv sv_rstrip_nl(struct sv s) {
    while (s.n && s.p[s.n - 1] == '\n')
        s.n--;
    return s;
}
// The last occurrence of needle in s, or NULL.
static const char *sv_rfind(struct sv s, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = s.n >= k ? s.n - k + 1 : 0; i-- > 0;)
        if (memcmp(s.p + i, needle, k) == 0) return s.p + i;
    return NULL;
}

// ---- Qwen3
// ---------------------------------------------------------------------------------------------

static void qwen3_assistant(struct sbuf *b, const struct tok_chat_msg *m, bool after_last_query,
                            bool last) {
    struct sv content = {content_of(m), strlen(content_of(m))}, reasoning = {"", 0};
    if (m->reasoning_content) {
        reasoning = (struct sv){m->reasoning_content, strlen(m->reasoning_content)};
    } else {
        const char *first_end = strstr(content.p, "</think>");
        if (first_end) {
            // content.split('</think>')[-1].lstrip('\n')
            const char *last_end = sv_rfind(content, "</think>") + strlen("</think>");
            struct sv before =
                sv_rstrip_nl((struct sv){content.p, (size_t)(first_end - content.p)});
            content = sv_lstrip_nl((struct sv){last_end, strlen(last_end)});
            // content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
            const char *open = sv_rfind(before, "<think>");
            if (open) {
                const char *after = open + strlen("<think>");
                before = (struct sv){after, (size_t)(before.p + before.n - after)};
            }
            reasoning = sv_lstrip_nl(before);
        }
    }
    if (after_last_query && (last || reasoning.n > 0)) {
        puts_(b, "<|im_start|>assistant\n<think>\n");
        struct sv r = sv_rstrip_nl(sv_lstrip_nl(reasoning));
        put(b, r.p, r.n);
        puts_(b, "\n</think>\n\n");
        struct sv c = sv_lstrip_nl(content);
        put(b, c.p, c.n);
    } else {
        puts_(b, "<|im_start|>assistant\n");
        put(b, content.p, content.n);
    }
    for (int k = 0; k < m->n_tool_calls; k++) {
        const struct tok_chat_tool_call *tc = &m->tool_calls[k];
        if (k > 0 || content.n > 0) put(b, "\n", 1);
        puts_(b, "<tool_call>\n{\"name\": \"");
        puts_(b, tc->name);
        puts_(b, "\", \"arguments\": ");
        puts_(b, tc->arguments ? tc->arguments : "{}"); // a string argument is printed verbatim
        puts_(b, "}\n</tool_call>");
    }
    puts_(b, "<|im_end|>\n");
}

static int render_qwen3(struct sbuf *b, const struct tok_chat_msg *msgs, int n, bool agp,
                        int thinking, const char *tools_json) {
    bool sys0 = n > 0 && is_role(&msgs[0], "system");
    if (tools_json) {
        struct sbuf tools = {0};
        int n_tools, rc = put_tools(&tools, tools_json, &n_tools);
        if (!rc && n_tools > 0) {
            puts_(b, "<|im_start|>system\n");
            if (sys0) {
                puts_(b, content_of(&msgs[0]));
                puts_(b, "\n\n");
            }
            puts_(b, tools_head);
            put(b, tools.p, tools.len);
            puts_(b, tools_tail);
        }
        free(tools.p);
        if (rc) return rc;
        if (n_tools == 0) tools_json = NULL; // an empty list is false in Jinja
    }
    if (!tools_json && sys0) {
        puts_(b, "<|im_start|>system\n");
        puts_(b, content_of(&msgs[0]));
        puts_(b, "<|im_end|>\n");
    }
    // The last user query: the last user message that is not a wrapped tool response.
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        const char *c = content_of(&msgs[i]);
        size_t len = strlen(c);
        bool wrapped = strncmp(c, "<tool_response>", 15) == 0 && len >= 16 &&
                       strcmp(c + len - 16, "</tool_response>") == 0;
        if (is_role(&msgs[i], "user") && !wrapped) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        const struct tok_chat_msg *m = &msgs[i];
        if (is_role(m, "user") || (is_role(m, "system") && i > 0)) {
            puts_(b, "<|im_start|>");
            puts_(b, m->role);
            puts_(b, "\n");
            puts_(b, content_of(m));
            puts_(b, "<|im_end|>\n");
        } else if (is_role(m, "assistant")) {
            qwen3_assistant(b, m, i > last_query, i == n - 1);
        } else if (is_role(m, "tool")) {
            put_tool_msg(b, msgs, n, i);
        }
    }
    if (agp) {
        puts_(b, "<|im_start|>assistant\n");
        if (thinking == 0) puts_(b, "<think>\n\n</think>\n\n");
    }
    return 0;
}

// ---- Qwen2.5 and Qwen2
// -------------------------------------------------------------------------------------

static int render_qwen25(struct sbuf *b, const struct tok_chat_msg *msgs, int n, bool agp,
                         const char *tools_json) {
    bool sys0 = n > 0 && is_role(&msgs[0], "system");
    struct sbuf tools = {0};
    int n_tools = 0, rc = tools_json ? put_tools(&tools, tools_json, &n_tools) : 0;
    if (rc) {
        free(tools.p);
        return rc;
    }
    if (n_tools > 0) {
        puts_(b, "<|im_start|>system\n");
        puts_(b, sys0 ? content_of(&msgs[0]) : qwen_default_system);
        puts_(b, "\n\n");
        puts_(b, tools_head);
        put(b, tools.p, tools.len);
        puts_(b, tools_tail);
    } else {
        puts_(b, "<|im_start|>system\n");
        puts_(b, sys0 ? content_of(&msgs[0]) : qwen_default_system);
        puts_(b, "<|im_end|>\n");
    }
    free(tools.p);
    for (int i = 0; i < n; i++) {
        const struct tok_chat_msg *m = &msgs[i];
        if (is_role(m, "user") || (is_role(m, "system") && i > 0) ||
            (is_role(m, "assistant") && m->n_tool_calls == 0)) {
            puts_(b, "<|im_start|>");
            puts_(b, m->role);
            puts_(b, "\n");
            puts_(b, content_of(m));
            puts_(b, "<|im_end|>\n");
        } else if (is_role(m, "assistant")) {
            puts_(b, "<|im_start|>assistant");
            if (*content_of(m)) {
                puts_(b, "\n");
                puts_(b, content_of(m));
            }
            for (int k = 0; k < m->n_tool_calls; k++) {
                puts_(b, "\n<tool_call>\n{\"name\": \"");
                puts_(b, m->tool_calls[k].name);
                puts_(b, "\", \"arguments\": ");
                // This template applies tojson to the arguments: keel passes them parsed.
                const char *args = m->tool_calls[k].arguments ? m->tool_calls[k].arguments : "{}";
                if ((rc = put_tojson(b, args, "tool call arguments"))) return rc;
                puts_(b, "}\n</tool_call>");
            }
            puts_(b, "<|im_end|>\n");
        } else if (is_role(m, "tool")) {
            put_tool_msg(b, msgs, n, i);
        }
    }
    if (agp) puts_(b, "<|im_start|>assistant\n");
    return 0;
}

static int render_qwen2(struct sbuf *b, const struct tok_chat_msg *msgs, int n, bool agp) {
    for (int i = 0; i < n; i++) {
        if (i == 0 && !is_role(&msgs[0], "system"))
            puts_(b, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
        puts_(b, "<|im_start|>");
        puts_(b, msgs[i].role);
        puts_(b, "\n");
        puts_(b, content_of(&msgs[i]));
        puts_(b, "<|im_end|>\n");
    }
    if (agp) puts_(b, "<|im_start|>assistant\n");
    return 0;
}

// ---- public
// ------------------------------------------------------------------------------------------------

int tok_chat_render(const struct tok_tokenizer *t, const struct tok_chat_msg *msgs, int n,
                    bool add_generation_prompt, int enable_thinking, const char *tools_json,
                    char **out) {
    *out = NULL;
    if (t->chat_kind == TOK__CHAT_NONE) return err_set(ERR_UNSUPPORTED, "%s", t->chat_why);
    if (n < 0 || (n > 0 && !msgs)) return err_set(ERR_INVAL, "chat: bad message list");
    // The templates would silently drop a message of another role; a request with one is a
    // client's mistake, so it is refused instead.
    for (int i = 0; i < n; i++) {
        const struct tok_chat_msg *m = &msgs[i];
        if (!m->role || (strcmp(m->role, "system") && strcmp(m->role, "user") &&
                         strcmp(m->role, "assistant") && strcmp(m->role, "tool")))
            return err_set(
                ERR_INVAL,
                "chat: message %d has role '%s' (allowed: system, user, assistant, tool)", i,
                m->role ? m->role : "(none)");
        if (m->n_tool_calls < 0 || (m->n_tool_calls > 0 && !m->tool_calls))
            return err_set(ERR_INVAL, "chat: message %d has a bad tool call list", i);
        if (m->n_tool_calls > 0 && strcmp(m->role, "assistant") != 0)
            return err_set(ERR_INVAL, "chat: message %d: only assistant messages carry tool calls",
                           i);
        for (int k = 0; k < m->n_tool_calls; k++)
            if (!m->tool_calls[k].name)
                return err_set(ERR_INVAL, "chat: message %d: tool call %d has no function name", i,
                               k);
    }
    struct sbuf b = {0};
    int rc;
    switch (t->chat_kind) {
    case TOK__CHAT_QWEN3:
        rc = render_qwen3(&b, msgs, n, add_generation_prompt, enable_thinking, tools_json);
        break;
    case TOK__CHAT_QWEN25:
        rc = render_qwen25(&b, msgs, n, add_generation_prompt, tools_json);
        break;
    default:
        rc = render_qwen2(&b, msgs, n, add_generation_prompt);
        break;
    }
    if (!rc && b.oom) rc = err_set(ERR_NOMEM, "chat: out of memory rendering");
    if (!rc && !b.p) put(&b, "", 0);
    if (!rc && b.oom) rc = err_set(ERR_NOMEM, "chat: out of memory rendering");
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    return 0;
}

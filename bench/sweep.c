// Sweep outputs: a CSV with one row per concurrency and an SVG of throughput against latency,
// the picture people look for first: how many tokens per second the server gives, and what
// each user pays for it in time per output token and time to first token.
#include "bench/bench.h"

#include "common/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

// ---- CSV

int bench_sweep_write_csv(const char *path, const struct bench_sweep_point *pts, int n) {
    FILE *f = fopen(path, "w");
    if (!f) return err_set(ERR_IO, "cannot write %s", path);
    static const char *const names[] = {"ttft", "tpot", "itl", "e2el"};
    fprintf(f, "max_concurrency,completed,failed,duration_s,request_throughput,"
               "output_throughput,total_token_throughput,peak_output_throughput,"
               "peak_concurrent_requests");
    const struct bench_summary *s0 = n > 0 ? &pts[0].s : NULL;
    for (int m = 0; m < 4; m++) {
        fprintf(f, ",mean_%s_ms,median_%s_ms", names[m], names[m]);
        for (int i = 0; s0 && i < s0->n_pcts; i++)
            fprintf(f, ",p%g_%s_ms", s0->pcts[i], names[m]);
    }
    fputc('\n', f);
    for (int k = 0; k < n; k++) {
        const struct bench_summary *s = &pts[k].s;
        const struct bench_metric *ms[4] = {&s->ttft, &s->tpot, &s->itl, &s->e2el};
        fprintf(f, "%d,%d,%d,%.4f,%.4f,%.4f,%.4f,%.2f,%d", pts[k].concurrency, s->completed,
                s->failed, s->duration_s, s->request_throughput, s->output_throughput,
                s->total_token_throughput, s->peak_output_tps, s->peak_concurrent);
        for (int m = 0; m < 4; m++) {
            fprintf(f, ",%.3f,%.3f", ms[m]->mean, ms[m]->median);
            for (int i = 0; i < s->n_pcts; i++)
                fprintf(f, ",%.3f", ms[m]->pct[i]);
        }
        fputc('\n', f);
    }
    return fclose(f) == 0 ? 0 : err_set(ERR_IO, "cannot write %s", path);
}

// ---- SVG

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)k < b->cap) {
            b->len += (size_t)k;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + (size_t)k + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

// The smallest "round" number at or above x (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of
// ten): an axis maximum whose fifths people can read, without leaving half the plot empty.
static double nice_ceil(double x) {
    static const double steps[] = {1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10};
    if (!(x > 0)) return 1;
    double e = pow(10, floor(log10(x))), m = x / e;
    int i = 0;
    while (steps[i] < m - 1e-9)
        i++;
    return steps[i] * e;
}

static void svg_escape(struct sbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            sb_printf(b, "&lt;");
            break;
        case '>':
            sb_printf(b, "&gt;");
            break;
        case '&':
            sb_printf(b, "&amp;");
            break;
        case '"':
            sb_printf(b, "&quot;");
            break;
        default:
            sb_printf(b, "%c", *s);
        }
    }
}

#define PANEL_W 440
#define PANEL_H 330
#define MARGIN_L 70
#define MARGIN_T 60

// One panel at x offset ox: y = output token throughput, x = the latency metric chosen.
static void svg_panel(struct sbuf *b, const struct bench_sweep_point *pts, int n, int ox, int which,
                      const char *xlabel) {
    double xmax = 0, ymax = 0;
    for (int k = 0; k < n; k++) {
        double x = which ? pts[k].s.ttft.median : pts[k].s.tpot.median;
        xmax = fmax(xmax, x);
        ymax = fmax(ymax, pts[k].s.output_throughput);
    }
    xmax = nice_ceil(xmax * 1.05);
    ymax = nice_ceil(ymax * 1.05);
    int x0 = ox + MARGIN_L, y0 = MARGIN_T + PANEL_H;
    sb_printf(b,
              "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
              "stroke=\"#888\"/>\n",
              x0, MARGIN_T, PANEL_W, PANEL_H);
    for (int t = 0; t <= 5; t++) { // gridlines and tick labels
        double fx = x0 + PANEL_W * t / 5.0, fy = y0 - PANEL_H * t / 5.0;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>\n", fx,
                  MARGIN_T, fx, y0);
        sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#eee\"/>\n", x0,
                  fy, x0 + PANEL_W, fy);
        sb_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", fx, y0 + 18,
                  xmax * t / 5);
        sb_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", x0 - 6, fy + 4,
                  ymax * t / 5);
    }
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", x0 + PANEL_W / 2,
              y0 + 40, xlabel);
    sb_printf(b,
              "<text transform=\"translate(%d,%d) rotate(-90)\" text-anchor=\"middle\">"
              "Output token throughput (tok/s)</text>\n",
              ox + 18, MARGIN_T + PANEL_H / 2);
    sb_printf(b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
    for (int k = 0; k < n; k++) {
        double x = which ? pts[k].s.ttft.median : pts[k].s.tpot.median;
        sb_printf(b, "%s%.1f,%.1f", k ? " " : "", x0 + PANEL_W * x / xmax,
                  y0 - PANEL_H * pts[k].s.output_throughput / ymax);
    }
    sb_printf(b, "\"/>\n");
    for (int k = 0; k < n; k++) {
        double x = which ? pts[k].s.ttft.median : pts[k].s.tpot.median;
        double px = x0 + PANEL_W * x / xmax, py = y0 - PANEL_H * pts[k].s.output_throughput / ymax;
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f77b4\"/>\n", px, py);
        sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">c=%d</text>\n", px + 6, py - 6,
                  pts[k].concurrency);
    }
}

char *bench_sweep_svg(const struct bench_sweep_point *pts, int n, const char *title) {
    struct sbuf b = {0};
    int w = 2 * (MARGIN_L + PANEL_W + 30), h = MARGIN_T + PANEL_H + 60;
    sb_printf(&b,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
              "font-family=\"sans-serif\" font-size=\"12\">\n"
              "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
              w, h);
    sb_printf(&b, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", w / 2);
    svg_escape(&b, title ? title : "keel-bench sweep");
    sb_printf(&b, "</text>\n");
    svg_panel(&b, pts, n, 0, 0, "Median TPOT (ms)");
    svg_panel(&b, pts, n, MARGIN_L + PANEL_W + 30, 1, "Median TTFT (ms)");
    sb_printf(&b, "</svg>\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

int bench_sweep_write_svg(const char *path, const struct bench_sweep_point *pts, int n,
                          const char *title) {
    char *svg = bench_sweep_svg(pts, n, title);
    if (!svg) return err_set(ERR_NOMEM, "out of memory drawing %s", path);
    FILE *f = fopen(path, "w");
    if (!f) {
        free(svg);
        return err_set(ERR_IO, "cannot write %s", path);
    }
    int bad = fputs(svg, f) < 0;
    bad |= fclose(f) != 0;
    free(svg);
    return bad ? err_set(ERR_IO, "cannot write %s", path) : 0;
}

#include "common/log.h"

#include "common/err.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

// -1 until the environment has been read.
static atomic_int log__level = -1;

int log_parse_level(const char *s, enum log_level *out) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i <= LOG_OFF; i++) {
        if (s && strcasecmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return err_set(ERR_INVAL, "unknown log level '%s' (use debug, info, warn, error or off)",
                   s ? s : "");
}

enum log_level log_get_level(void) {
    int level = atomic_load(&log__level);
    if (level < 0) {
        enum log_level parsed = LOG_INFO;
        const char *env = getenv("KEEL_LOG_LEVEL");
        if (env && *env && log_parse_level(env, &parsed) != 0) parsed = LOG_INFO;
        level = (int)parsed;
        atomic_store(&log__level, level);
    }
    return (enum log_level)level;
}

void log_set_level(enum log_level level) { atomic_store(&log__level, (int)level); }

void log_write(enum log_level level, const char *fmt, ...) {
    static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < log_get_level() || level >= LOG_OFF) return;

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);

    char line[4096];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), tags[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t wr = write(STDERR_FILENO, line, len);
    (void)wr;
}

// A small leveled logger: one line per call on stderr, with a UTC timestamp and the level.
// The level comes from KEEL_LOG_LEVEL (debug, info, warn, error; default info), read once at the
// first call, or from log_set_level(). Thread-safe: each line is written with a single write().
#ifndef KEEL_COMMON_LOG_H
#define KEEL_COMMON_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

// Parses "debug", "info", "warn", "error", "off" (case-insensitive). Returns 0 or ERR_INVAL.
int log_parse_level(const char *s, enum log_level *out);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif

// Error codes and the thread-local error message.
//
// Fallible functions return 0 or a negative ERR_* code; results go through out-parameters.
// err_set() records a human-readable message for the caller on the current thread; the message
// stays valid until the next err_set() on the same thread.
#ifndef KEEL_COMMON_ERR_H
#define KEEL_COMMON_ERR_H

#include <stdarg.h>

enum {
    ERR_OK = 0,
    ERR_INVAL = -1,       // invalid argument or input (a client's or user's mistake)
    ERR_NOMEM = -2,       // host allocation failed
    ERR_IO = -3,          // file or socket I/O failed
    ERR_FORMAT = -4,      // malformed file or data (JSON, safetensors, tokenizer.json)
    ERR_UNSUPPORTED = -5, // a valid but unsupported feature (architecture, rope type, ...)
    ERR_NOT_FOUND = -6,   // a file, tensor, key or id that does not exist
    ERR_RANGE = -7,       // a value outside its allowed range
    ERR_NOSPACE = -8,     // a plan or pool does not fit (device memory, KV blocks)
    ERR_CUDA_ALLOC = -9,  // CUDA or cuBLAS allocation failure
    ERR_CUDA_FAULT = -10, // sticky CUDA fault: the context is dead, drain and exit
    ERR_CUDA = -11,       // any other CUDA or cuBLAS failure
    ERR_BUSY = -12,       // queue full or overloaded: try again later
    ERR_CANCELLED = -13,  // cancelled by the client or a timeout
    ERR_INTERNAL = -14,   // a broken invariant
};

// Records a formatted message for the current thread and returns `code`, so callers can write
// `return err_set(ERR_INVAL, "bad %s", what);`.
int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int err_setv(int code, const char *fmt, va_list ap);

// The current thread's last message ("" when none). Valid until the next err_set on this thread.
const char *err_msg(void);

// The last code passed to err_set on this thread (0 when none).
int err_code(void);

// Clears the current thread's message and code.
void err_clear(void);

// The symbolic name of a code: "ERR_INVAL", ... ("ERR_UNKNOWN" for unknown codes).
const char *err_name(int code);

#endif

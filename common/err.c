#include "common/err.h"

#include <stdio.h>

#define ERR_MSG_BYTES 1024

static _Thread_local char err__msg[ERR_MSG_BYTES];
static _Thread_local int err__code;

int err_setv(int code, const char *fmt, va_list ap) {
    vsnprintf(err__msg, sizeof err__msg, fmt, ap);
    err__code = code;
    return code;
}

int err_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_setv(code, fmt, ap);
    va_end(ap);
    return code;
}

const char *err_msg(void) { return err__msg; }

int err_code(void) { return err__code; }

void err_clear(void) {
    err__msg[0] = '\0';
    err__code = 0;
}

const char *err_name(int code) {
    switch (code) {
    case ERR_OK: return "ERR_OK";
    case ERR_INVAL: return "ERR_INVAL";
    case ERR_NOMEM: return "ERR_NOMEM";
    case ERR_IO: return "ERR_IO";
    case ERR_FORMAT: return "ERR_FORMAT";
    case ERR_UNSUPPORTED: return "ERR_UNSUPPORTED";
    case ERR_NOT_FOUND: return "ERR_NOT_FOUND";
    case ERR_RANGE: return "ERR_RANGE";
    case ERR_NOSPACE: return "ERR_NOSPACE";
    case ERR_CUDA_ALLOC: return "ERR_CUDA_ALLOC";
    case ERR_CUDA_FAULT: return "ERR_CUDA_FAULT";
    case ERR_CUDA: return "ERR_CUDA";
    case ERR_BUSY: return "ERR_BUSY";
    case ERR_CANCELLED: return "ERR_CANCELLED";
    case ERR_INTERNAL: return "ERR_INTERNAL";
    default: return "ERR_UNKNOWN";
    }
}

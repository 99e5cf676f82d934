// The arena (memory/arena.h): one allocation of exactly the planned size, carved front to back
// into named regions that live as long as the arena. Carving is bookkeeping only; nothing is
// ever freed region by region, so nothing can fragment.
//
// This file is the host half and the bookkeeping; memory/arena_cuda.c holds the CUDA calls and
// joins the build only when KEEL_CUDA is defined. Without it, MEM_DEVICE is ERR_UNSUPPORTED.
#include "memory/arena.h"

#include "common/err.h"
#include "common/log.h"
#include "memory/arena_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Host arenas start on a page, which is more than any CPU kernel's vector loads need.
#define HOST_ALIGN 4096

static size_t align_up(size_t n) {
    return (n + MEM_ARENA_ALIGN - 1) / MEM_ARENA_ALIGN * MEM_ARENA_ALIGN;
}

static int host_alloc(size_t bytes, void **ptr, const char *what) {
    *ptr = NULL;
    if (posix_memalign(ptr, HOST_ALIGN, bytes) != 0 || !*ptr) {
        *ptr = NULL;
        return err_set(ERR_NOMEM, "arena: cannot allocate %zu bytes (%.3f GiB) of host memory "
                                  "for the %s",
                       bytes, (double)bytes / (double)(1ull << 30), what);
    }
    return 0;
}

// ---- init and free

int mem_arena_init(struct mem_arena *a, enum mem_kind kind, int device, size_t bytes,
                   size_t staging_bytes) {
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->device = device;
    if (bytes == 0) return err_set(ERR_INVAL, "arena: size must be > 0");
    if (kind != MEM_HOST && kind != MEM_DEVICE)
        return err_set(ERR_INVAL, "arena: unknown memory kind %d", (int)kind);
    if (kind == MEM_HOST && device != 0)
        log_debug("arena: device %d ignored for a host arena", device);

    int rc = 0;
    void *base = NULL, *staging = NULL;
    if (kind == MEM_HOST) {
        rc = host_alloc(bytes, &base, "arena");
        if (!rc && staging_bytes) rc = host_alloc(staging_bytes, &staging, "staging buffer");
        if (rc) {
            free(base);
            return rc;
        }
    } else {
#ifdef KEEL_CUDA
        if (device < 0) return err_set(ERR_INVAL, "arena: device ordinal %d < 0", device);
        rc = mem__device_alloc(device, bytes, &base);
        if (rc) return rc;
        if (staging_bytes) {
            rc = mem__pinned_alloc(staging_bytes, &staging);
            if (rc) {
                mem__device_free(device, base);
                return rc;
            }
        }
#else
        return err_set(ERR_UNSUPPORTED,
                       "arena: device memory needs a CUDA build (this keel was built with CUDA=0)");
#endif
    }
    a->base = base;
    a->bytes = bytes;
    a->staging = staging;
    a->staging_bytes = staging ? staging_bytes : 0;
    log_debug("arena: %s, %zu bytes at %p, staging %zu bytes",
              kind == MEM_HOST ? "host" : "device", bytes, (void *)base, a->staging_bytes);
    return 0;
}

void mem_arena_free(struct mem_arena *a) {
    if (!a) return;
    if (a->kind == MEM_HOST) {
        free(a->base);
        free(a->staging);
    } else {
#ifdef KEEL_CUDA
        if (a->base) mem__device_free(a->device, a->base);
        if (a->staging) mem__pinned_free(a->staging);
#endif
    }
    int device = a->device;
    memset(a, 0, sizeof *a);
    a->device = device;
}

// ---- carving

int mem_arena_carve(struct mem_arena *a, const char *name, size_t bytes, void **ptr) {
    *ptr = NULL;
    if (!name) name = "(unnamed)";
    if (!a->base) return err_set(ERR_INVAL, "arena: carve '%s' from an arena that is not set up", name);
    size_t left = a->bytes - a->used;
    if (bytes > left || align_up(bytes) > left)
        return err_set(ERR_NOSPACE,
                       "arena: region '%s' needs %zu bytes but only %zu of %zu are left (%d "
                       "regions carved)",
                       name, align_up(bytes), left, a->bytes, a->n_regions);
    if (a->n_regions == MEM_ARENA_MAX_REGIONS)
        return err_set(ERR_NOSPACE, "arena: region '%s' is one more than the %d regions allowed",
                       name, MEM_ARENA_MAX_REGIONS);
    struct mem_region *r = &a->regions[a->n_regions++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->offset = a->used;
    r->bytes = align_up(bytes);
    a->used += r->bytes;
    *ptr = a->base + r->offset;
    return 0;
}

// ---- without CUDA

#ifndef KEEL_CUDA
int mem_device_alloc_count(void) { return 0; }

int mem_device_info(int device, size_t *total, size_t *free_bytes) {
    *total = 0;
    *free_bytes = 0;
    return err_set(ERR_UNSUPPORTED,
                   "device %d: reading GPU memory needs a CUDA build (this keel was built with "
                   "CUDA=0)",
                   device);
}
#endif

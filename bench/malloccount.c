/* Counts every malloc, calloc and realloc of the process it is preloaded into (LD_PRELOAD), for
 * bench/steps.py: with PYTHONMALLOC=malloc, every Python object is one of them, so the count per
 * request is how many allocations a request costs. Bench code, not part of iscsifs. */
#include <stddef.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);

static unsigned long long allocations;

void *malloc(size_t size) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, size);
}

unsigned long long iscsifs_bench_allocations(void) {
    return __atomic_load_n(&allocations, __ATOMIC_RELAXED);
}

/* The core's L2, which the products size their blocks of rows by. */
#ifndef RAINIER_CACHE_SIZE_H
#define RAINIER_CACHE_SIZE_H

#include <unistd.h>

/* The L2 in bytes as the system reports it, asked once; `fallback` where it does not say (or
 * says less than 256 KiB). Threads racing on the first call all store the same value. */
static inline long l2_bytes(long fallback) {
    static long found = -1;
    if (found < 0) found = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return found >= 256 * 1024 ? found : fallback;
}

#endif

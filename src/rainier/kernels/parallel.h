/* Loops spread over PyTorch's own threads.
 *
 * The library is built with -fopenmp, and PyTorch has already loaded its OpenMP runtime
 * (libgomp.so.1) when ctypes loads the kernels, so the dynamic linker binds the kernels to
 * that one: their parallel loops run on the same threads, in the number `torch.set_num_threads`
 * set, as PyTorch's own operators, never on a second pool competing for the cores. Built
 * without OpenMP the pragmas are ignored and every loop runs on the calling thread.
 *
 * Each loop is split statically, so which thread does which rows never changes what is
 * computed: results do not depend on the thread count, and a reduction over rows sums in a
 * fixed order after the loop.
 */
#ifndef RAINIER_PARALLEL_H
#define RAINIER_PARALLEL_H

#define RAINIER_PRAGMA(x) _Pragma(#x)

/* Below this many elements of work a loop stays on one thread: waking the others costs a few
 * microseconds. */
#define PARALLEL_MIN_WORK 16384

/* The next `for` over independent iterations, when `work` (elements touched) is worth it. */
#define PARALLEL_FOR(work) \
    RAINIER_PRAGMA(omp parallel for schedule(static) if ((work) >= PARALLEL_MIN_WORK))

/* The same over the next two nested `for`s as one iteration space. */
#define PARALLEL_FOR2(work) \
    RAINIER_PRAGMA(omp parallel for collapse(2) schedule(static) if ((work) >= PARALLEL_MIN_WORK))

#endif

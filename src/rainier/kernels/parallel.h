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

/* Subnormal floats as zero, in and out, for the thread running the block between these two:
 * softmax weights far below the largest are subnormal, and each product with one costs the
 * CPU a micro-code assist of some hundred cycles, which doubled a 100M model's decode
 * attention. What they would have added is below 1e-38 of the result. */
#if defined(__SSE__)
#include <xmmintrin.h>
#define SUBNORMALS_AS_ZERO_BEGIN \
    const unsigned int saved_csr_ = _mm_getcsr(); \
    _mm_setcsr(saved_csr_ | 0x8040u); /* FTZ | DAZ */
#define SUBNORMALS_AS_ZERO_END _mm_setcsr(saved_csr_);
#else
#define SUBNORMALS_AS_ZERO_BEGIN
#define SUBNORMALS_AS_ZERO_END
#endif

#endif

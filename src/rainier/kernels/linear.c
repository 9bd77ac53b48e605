/* out = x @ weight^T (+ bias) for the few rows of a serving step, on weights packed at load.
 *
 * A decode step multiplies a few dozen rows by each weight matrix. A general GEMM re-packs
 * its operands on every call and tunes its blocking for large squares; at these shapes the
 * packing and the edges are a third of its time, and inside a step, with attention's reads
 * between the calls, it reaches half of what the vector units can do. Here the weight is
 * packed once, when the model loads, into panels of 16 output columns laid out column-block
 * by column-block ([panel][k][16]), so a call streams each panel once, contiguously, and
 * reuses it from L1 for every block of rows. With AVX2 a tile is 6 rows by one panel, its 12
 * accumulators in AVX2's 16 registers beside the panel's row and the broadcast input; with
 * AVX-512, 12 rows by two panels, in its 32 (`tile_pair`): at 47 rows by 256, 184 GFLOP/s
 * on one core against 110 (the same CPU's peak measured through oneDNN is about 190).
 *
 * Each output is one chain of fused multiply-adds over k in order, so results are the same
 * run to run, whatever the thread count (panels are shared out among PyTorch's threads,
 * parallel.h) or the tile, and differ from a BLAS only in rounding.
 */
#include <stdint.h>
#include <string.h>

#include "cache_size.h"
#include "parallel.h"
#include "vec16.h"
#include "vec8.h"

/* PREFETCH_K: how many k steps ahead a tile asks for its panels' next line. A panel crosses
 * a 4 KiB page every 64 k steps, and the hardware's prefetchers stop at each; asked ahead, a
 * decode step of a model too big for the caches streams its weights at 12 GB/s on one core,
 * the most it reads, where it reached 8.6 (12 layers 1024 wide at 16 rows: 61.5 ms to 47.8,
 * 43.9 on 2 MiB pages). */
enum { NR = 16, MR = 6, PREFETCH_K = 32 };

/* The bytes of x rows a block may take: half the core's L2 (256 KiB of AMD Zen 3's 512, 1 MiB
 * of a recent Xeon's 2), the rest left to the panels passing over them; 192 KiB where the
 * system does not say. A block of 512 rows of 1024 then crosses a 2 MiB L2's weights twice,
 * not eleven times: 5-8% faster at prefill shapes there. */
static int64_t x_block_bytes(void) {
    const long l2 = l2_bytes(0);
    return l2 > 0 ? l2 / 2 : 192 * 1024;
}

int64_t packed_size(int64_t n, int64_t k) { return (n + NR - 1) / NR * NR * k; }

/* `w` [n, k] row-major (a torch Linear's weight) into `packed` [ceil(n/16), k, 16], the
 * columns past n zero. */
void pack_weight(const float *restrict w, int64_t n, int64_t k, float *restrict packed) {
    for (int64_t p = 0; p < (n + NR - 1) / NR; p++) {
        float *panel = packed + p * k * NR;
        for (int64_t j = 0; j < NR; j++) {
            const int64_t col = p * NR + j;
            for (int64_t kk = 0; kk < k; kk++) panel[kk * NR + j] = col < n ? w[col * k + kk] : 0.0f;
        }
    }
}

/* `rows` (<= MR, a constant once inlined) rows of x times one panel, into `cols` (<= NR)
 * columns of out. */
static inline __attribute__((always_inline)) void tile(const float *x, int64_t x_stride,
                                                       int64_t k, const float *panel,
                                                       const float *bias, float *out,
                                                       int64_t out_stride, int64_t cols,
                                                       const int rows) {
    v8 lo[MR], hi[MR];
    for (int r = 0; r < rows; r++) lo[r] = hi[r] = splat8(0.0f);
    for (int64_t kk = 0; kk < k; kk++) {
        __builtin_prefetch(panel + (kk + PREFETCH_K) * NR);
        const v8 w0 = load8(panel + kk * NR), w1 = load8(panel + kk * NR + 8);
        for (int r = 0; r < rows; r++) {
            const v8 xb = splat8(x[r * x_stride + kk]);
            lo[r] += xb * w0;
            hi[r] += xb * w1;
        }
    }
    float row[NR];
    for (int r = 0; r < rows; r++) {
        v8 a = lo[r], b = hi[r];
        if (bias != NULL) {
            a += load8(bias);
            b += load8(bias + 8);
        }
        float *o = out + r * out_stride;
        if (cols == NR) {
            store8(o, a);
            store8(o + 8, b);
        } else {
            store8(row, a);
            store8(row + 8, b);
            memcpy(o, row, sizeof(float) * (size_t)cols);
        }
    }
}

static void panel_rows(const float *x, int64_t x_stride, int64_t m, int64_t k, const float *panel,
                       const float *bias, float *out, int64_t out_stride, int64_t cols) {
    int64_t i = 0;
    for (; i + MR <= m; i += MR)
        tile(x + i * x_stride, x_stride, k, panel, bias, out + i * out_stride, out_stride, cols, MR);
    const float *xr = x + i * x_stride;
    float *o = out + i * out_stride;
    switch (m - i) {
        case 5: tile(xr, x_stride, k, panel, bias, o, out_stride, cols, 5); break;
        case 4: tile(xr, x_stride, k, panel, bias, o, out_stride, cols, 4); break;
        case 3: tile(xr, x_stride, k, panel, bias, o, out_stride, cols, 3); break;
        case 2: tile(xr, x_stride, k, panel, bias, o, out_stride, cols, 2); break;
        case 1: tile(xr, x_stride, k, panel, bias, o, out_stride, cols, 1); break;
        default: break;
    }
}

#ifdef __AVX512F__
/* With AVX-512: two neighbouring panels at once, 12 rows by 32 columns, whose 24
 * accumulators fill AVX-512's 32 registers with the two panel rows and the broadcast input
 * beside them. Each k step is then 24 fused multiply-adds of 16 lanes for 14 loads, where
 * the 6x16 tile above does 12 of 8 lanes for 8. The input is broadcast straight from memory
 * (`splat16`): built from a register, the broadcast is a shuffle on the port that also runs
 * half the multiply-adds, and the tile ran at the AVX2 tile's rate. Each output is the same
 * chain over k as in `tile`, so the results are bitwise the same. */
enum { MR2 = 12 };

static inline __attribute__((always_inline)) void tile_pair(const float *x, int64_t x_stride,
                                                            int64_t k, const float *panel,
                                                            const float *bias, float *out,
                                                            int64_t out_stride, int64_t cols,
                                                            const int rows) {
    const float *next = panel + k * NR;
    v16 lo[MR2], hi[MR2];
    for (int r = 0; r < rows; r++) lo[r] = hi[r] = (v16){0};
    for (int64_t kk = 0; kk < k; kk++) {
        __builtin_prefetch(panel + (kk + PREFETCH_K) * NR);
        __builtin_prefetch(next + (kk + PREFETCH_K) * NR);
        const v16 w0 = load16(panel + kk * NR), w1 = load16(next + kk * NR);
        for (int r = 0; r < rows; r++) {
            const v16 xb = splat16(x[r * x_stride + kk]);
            lo[r] += xb * w0;
            hi[r] += xb * w1;
        }
    }
    float row[2 * NR];
    for (int r = 0; r < rows; r++) {
        v16 a = lo[r], b = hi[r];
        if (bias != NULL) {
            a += load16(bias);
            b += load16(bias + NR);
        }
        float *o = out + r * out_stride;
        if (cols == 2 * NR) {
            store16(o, a);
            store16(o + NR, b);
        } else {
            store16(row, a);
            store16(row + NR, b);
            memcpy(o, row, sizeof(float) * (size_t)cols);
        }
    }
}

static void pair_rows(const float *x, int64_t x_stride, int64_t m, int64_t k, const float *panel,
                      const float *bias, float *out, int64_t out_stride, int64_t cols) {
    int64_t i = 0;
    for (; i + MR2 <= m; i += MR2)
        tile_pair(x + i * x_stride, x_stride, k, panel, bias, out + i * out_stride, out_stride,
                  cols, MR2);
    const float *xr = x + i * x_stride;
    float *o = out + i * out_stride;
#define TAIL(n) \
    case n: tile_pair(xr, x_stride, k, panel, bias, o, out_stride, cols, n); break;
    switch (m - i) {
        TAIL(11) TAIL(10) TAIL(9) TAIL(8) TAIL(7) TAIL(6)
        TAIL(5) TAIL(4) TAIL(3) TAIL(2) TAIL(1)
        default: break;
    }
#undef TAIL
}
#endif

#ifdef __AVX512F__
enum { PANELS_PER_STEP = 2 };
#else
enum { PANELS_PER_STEP = 1 };
#endif

/* One step of `linear`'s loop over panels: PANELS_PER_STEP panels from panel p on (two with
 * AVX-512, where a lone last panel takes `panel_rows`). */
static inline void panel_step(const float *x, int64_t x_stride, int64_t rows, int64_t k,
                              const float *packed, const float *bias, int64_t n, float *out,
                              int64_t out_stride, int64_t p, int64_t panels) {
    const int64_t left = n - p * NR;
    const float *b = bias != NULL ? bias + p * NR : NULL;
#ifdef __AVX512F__
    if (p + 1 < panels) {
        pair_rows(x, x_stride, rows, k, packed + p * k * NR, b, out + p * NR, out_stride,
                  left < 2 * NR ? left : 2 * NR);
        return;
    }
#endif
    (void)panels;
    panel_rows(x, x_stride, rows, k, packed + p * k * NR, b, out + p * NR, out_stride,
               left < NR ? left : NR);
}

/* `bias`, when given, is padded to a whole panel (packed_size(n, 1) floats). Rows of x are
 * taken in blocks that stay in L2 while every panel passes over them: a prefill chunk of
 * thousands of rows would otherwise be re-read from memory once per panel. */
void linear(const float *x, int64_t x_stride, int64_t m, int64_t k, const float *packed,
            const float *bias, int64_t n, float *out, int64_t out_stride) {
    /* whole tiles of rows: 12 is both tiles' multiple */
    int64_t block = x_block_bytes() / (int64_t)sizeof(float) / (k > 0 ? k : 1) / 12 * 12;
    if (block < 12) block = 12;
    const int64_t panels = (n + NR - 1) / NR;
    const int64_t steps = (panels + PANELS_PER_STEP - 1) / PANELS_PER_STEP;
    for (int64_t i = 0; i < m; i += block) {
        const int64_t rows = m - i < block ? m - i : block;
        PARALLEL_FOR(rows * panels * NR * k / 8)
        for (int64_t step = 0; step < steps; step++)
            panel_step(x + i * x_stride, x_stride, rows, k, packed, bias, n, out + i * out_stride,
                       out_stride, step * PANELS_PER_STEP, panels);
    }
}

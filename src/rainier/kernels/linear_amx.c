/* out = x @ weight^T (+ bias) on bf16 weights packed at load, multiplied on AMX tiles.
 *
 * A bf16 decode step is a weight stream: 16 rows against each matrix, a few MACs per weight
 * byte. oneDNN's AMX products read a 100M model's weights at about 9 GB/s on one core, where
 * the core reads 12: the hardware's prefetchers stop at every 4 KiB page, and each matrix is
 * a separate call that starts its stream cold. Here the weight is packed once into groups of
 * four 16-column panels, each group's tiles in k order ([group][k/32][4][16 pairs][16][2]),
 * so a decode step's product is one contiguous stream per thread, asked for PREFETCH_BYTES
 * ahead; a prefill's rows go through the same tiles two row tiles at a time.
 *
 * Activations come in float32 and are rounded to bf16 once per call (what autocast's product
 * does to its input); the tiles accumulate in float32 and the output is float32, without the
 * rounding to bf16 that PyTorch's bf16 product adds. Each output is one chain of tile dot
 * products over k in order, so results do not depend on the thread count.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cache_size.h"
#include "parallel.h"
#include "vec8.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
#include <immintrin.h>
#define HAVE_AMX 1
#else
#define HAVE_AMX 0
#endif

/* A tile: 16 rows of 64 bytes. A panel is 16 output columns; k goes 32 at a time (16 pairs,
 * the VNNI layout the tile dot product takes). */
enum { TILE_ROWS = 16, TILE_K = 32, PANEL = 16, GROUP_PANELS = 4, TILE_BYTES = 1024 };
enum { GROUP_COLS = PANEL * GROUP_PANELS, PREFETCH_BYTES = 8192, CHUNK_STEPS = 16 };

static int64_t padded_k(int64_t k) { return (k + TILE_K - 1) / TILE_K * TILE_K; }
static int64_t groups_of(int64_t n) { return (n + GROUP_COLS - 1) / GROUP_COLS; }

/* A SwiGLU's gate/up weight goes in groups of 32 of its ffn columns: gate and up panels of
 * the same columns side by side, so one group's tiles hold both factors of its outputs. */
static int64_t swiglu_groups(int64_t ffn) { return (ffn + 2 * PANEL - 1) / (2 * PANEL); }

/* Elements (bf16) of the packed form of an [n, k] weight, and of a [2 ffn, k] gate/up one. */
int64_t amx_packed_size(int64_t n, int64_t k) { return groups_of(n) * GROUP_COLS * padded_k(k); }
int64_t amx_swiglu_packed_size(int64_t ffn, int64_t k) {
    return swiglu_groups(ffn) * GROUP_COLS * padded_k(k);
}

/* The weight row (output column) that column c of panel p of group g holds, or -1 past the
 * matrix: in order, or, for a gate/up weight (`ffn` > 0), gate, up, gate, up of two
 * consecutive panels' columns. */
static int64_t source_row(int64_t g, int64_t p, int64_t c, int64_t n, int64_t ffn) {
    if (ffn == 0) {
        const int64_t col = (g * GROUP_PANELS + p) * PANEL + c;
        return col < n ? col : -1;
    }
    const int64_t col = (g * 2 + p / 2) * PANEL + c;
    return col < ffn ? col + (p % 2) * ffn : -1;
}

static void pack(const uint16_t *restrict w, int64_t n, int64_t ffn, int64_t groups, int64_t k,
                 uint16_t *restrict packed) {
    const int64_t kp = padded_k(k), steps = kp / TILE_K;
    PARALLEL_FOR(n * k)
    for (int64_t g = 0; g < groups; g++)
        for (int64_t s = 0; s < steps; s++)
            for (int64_t p = 0; p < GROUP_PANELS; p++) {
                uint16_t *tile = packed + ((g * steps + s) * GROUP_PANELS + p) * (TILE_BYTES / 2);
                for (int64_t pair = 0; pair < TILE_K / 2; pair++)
                    for (int64_t c = 0; c < PANEL; c++)
                        for (int64_t half = 0; half < 2; half++) {
                            const int64_t row = source_row(g, p, c, n, ffn);
                            const int64_t kk = s * TILE_K + 2 * pair + half;
                            tile[(pair * PANEL + c) * 2 + half] =
                                row >= 0 && kk < k ? w[row * k + kk] : 0;
                        }
            }
}

/* `w` [n, k] bf16 row-major into the tile layout above, columns past n and k past k zero. */
void amx_pack_weight(const uint16_t *restrict w, int64_t n, int64_t k, uint16_t *restrict packed) {
    pack(w, n, 0, groups_of(n), k, packed);
}

/* A SwiGLU's `w` [2 ffn, k] (gate rows, then up rows) into its groups, for amx_swiglu. */
void amx_pack_swiglu(const uint16_t *restrict w, int64_t ffn, int64_t k,
                     uint16_t *restrict packed) {
    pack(w, 2 * ffn, ffn, swiglu_groups(ffn), k, packed);
}

/* 1 where this build multiplies on AMX tiles (the compiler's target has them), else 0. */
int amx_built(void) { return HAVE_AMX; }

/* Asks the kernel for the AMX tile state (Linux keeps it off until a process asks); 0 when
 * granted, or when already granted, as PyTorch's oneDNN may have done. */
int amx_enable(void) {
#if HAVE_AMX && defined(SYS_arch_prctl)
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
#else
    return -1;
#endif
}

#if HAVE_AMX
struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static void load_tiles(void) {
    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = TILE_ROWS;
    }
    _tile_loadconfig(&cfg);
}

/* A finished 16x16 float32 tile into `out` (row stride `ldo`), plus the bias, keeping only
 * the `rows` x `cols` inside the output. */
static void store_tile(const float *tile, int64_t rows, int64_t cols, const float *bias,
                       float *out, int64_t ldo) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) out[r * ldo + c] = tile[r * PANEL + c] + (bias ? bias[c] : 0.0f);
}

/* out[r][col + c] = silu(gate[r][c]) * up[r][c] for the 16 columns from `col` before `ffn`,
 * in `silu_mul`'s arithmetic and order (eight columns at a time, a row's last few one by one),
 * so the fused product is bitwise the product and then `silu_mul`. */
static void swiglu_tile(const float *gate, const float *up, int64_t ld, int64_t rows,
                        int64_t col, int64_t ffn, float *out, int64_t ldo) {
    const v8 one = splat8(1.0f);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < PANEL && col + c < ffn; c += 8) {
            const float *g = gate + r * ld + c, *u = up + r * ld + c;
            float *o = out + r * ldo + col + c;
            if (col + c + 8 <= ffn) {
                const v8 x = load8(g);
                store8(o, x / (one + exp8(-x)) * load8(u));
            } else {
                for (int64_t j = 0; col + c + j < ffn; j++) o[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
            }
        }
}

/* Tiles gate and up of rows r0.. into the SwiGLU's outputs from column `col`. */
#define STORE_SWIGLU(gate, up, r0, col)                                                              \
    do {                                                                                      \
        _tile_stored(gate, scratch, PANEL * 4);                                               \
        _tile_stored(up, scratch + TILE_ROWS * PANEL, PANEL * 4);                             \
        if ((r0) < rows)                                                                      \
            swiglu_tile(scratch, scratch + TILE_ROWS * PANEL, PANEL,                          \
                        rows - (r0) < TILE_ROWS ? rows - (r0) : TILE_ROWS, col, ffn,          \
                        out + (r0) * ldo, ldo);                                               \
    } while (0)

#define STORE(t, r0, panel)                                                                   \
    do {                                                                                      \
        _tile_stored(t, scratch, PANEL * 4);                                                  \
        const int64_t col = (panel) * PANEL;                                                  \
        if ((r0) < rows && col < n)                                                           \
            store_tile(scratch, rows - (r0) < TILE_ROWS ? rows - (r0) : TILE_ROWS,            \
                       n - col < PANEL ? n - col : PANEL, bias ? bias + col : NULL,           \
                       out + (r0) * ldo + col, ldo);                                          \
    } while (0)

/* 16 rows (one row of A tiles, `a`) by one group of four panels, over
 * all of k: the decode shape, one contiguous stream of the group's tiles. */
static void rows16_by_group(const uint16_t *a, const uint16_t *group, int64_t steps,
                            int64_t r0, int64_t g, int64_t rows, int64_t n, int64_t ffn,
                            const float *bias, float *out, int64_t ldo, float *scratch) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t s = 0; s < steps; s++) {
        const char *b = (const char *)group + s * GROUP_PANELS * TILE_BYTES;
        for (int line = 0; line < GROUP_PANELS * TILE_BYTES; line += 64)
            __builtin_prefetch(b + PREFETCH_BYTES + line);
        _tile_loadd(4, (const char *)a + s * TILE_BYTES, 64);
        _tile_loadd(6, b, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + TILE_BYTES, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_loadd(6, b + 2 * TILE_BYTES, 64);
        _tile_dpbf16ps(2, 4, 6);
        _tile_loadd(7, b + 3 * TILE_BYTES, 64);
        _tile_dpbf16ps(3, 4, 7);
    }
    if (ffn > 0) {
        STORE_SWIGLU(0, 1, r0, 2 * g * PANEL);
        STORE_SWIGLU(2, 3, r0, (2 * g + 1) * PANEL);
        return;
    }
    const int64_t p = g * GROUP_PANELS;
    STORE(0, r0, p);
    STORE(1, r0, p + 1);
    STORE(2, r0, p + 2);
    STORE(3, r0, p + 3);
}

/* A block's rows by two panels of a group (`half` 0 or 1), 32 rows at a time: four
 * accumulators fed by two A and two B tiles per k step, the shape that keeps the tile unit
 * busy at prefill. k goes in chunks of CHUNK_STEPS, whose B tiles (32 KiB) stay in L1 while
 * every 32 rows pass over them; between chunks the accumulators wait in `acc` [block][32].
 * With `direct`, the last chunk stores them straight into the output there (row stride
 * `ldo`), which the caller passes when the block and both panels lie wholly inside it and
 * there is no bias.
 * Read from L2 each time instead, the B tiles held the products at two thirds of oneDNN's
 * rate. */
static void block_by_pair(const uint16_t *a, int64_t block, const uint16_t *group,
                          int64_t steps, int64_t half, float *acc, float *direct,
                          int64_t ldo) {
    const int64_t ldc = 2 * PANEL * 4;
    for (int64_t s0 = 0; s0 < steps; s0 += CHUNK_STEPS) {
        const int64_t s1 = s0 + CHUNK_STEPS < steps ? s0 + CHUNK_STEPS : steps;
        for (int64_t r = 0; r < block; r += 2 * TILE_ROWS) {
            float *c = acc + r * 2 * PANEL, *c1 = c + TILE_ROWS * 2 * PANEL;
            if (s0 == 0) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
            } else {
                _tile_loadd(0, c, ldc);
                _tile_loadd(1, c + PANEL, ldc);
                _tile_loadd(2, c1, ldc);
                _tile_loadd(3, c1 + PANEL, ldc);
            }
            const char *a0 = (const char *)(a + (r / TILE_ROWS) * steps * (TILE_BYTES / 2));
            const char *a1 = a0 + steps * TILE_BYTES;
            for (int64_t s = s0; s < s1; s++) {
                const char *b = (const char *)group + (s * GROUP_PANELS + 2 * half) * TILE_BYTES;
                for (int line = 0; line < TILE_BYTES; line += 64) {
                    __builtin_prefetch(a0 + (s + 2) * TILE_BYTES + line);
                    __builtin_prefetch(a1 + (s + 2) * TILE_BYTES + line);
                }
                _tile_loadd(4, a0 + s * TILE_BYTES, 64);
                _tile_loadd(6, b, 64);
                _tile_dpbf16ps(0, 4, 6);
                _tile_loadd(7, b + TILE_BYTES, 64);
                _tile_dpbf16ps(1, 4, 7);
                _tile_loadd(5, a1 + s * TILE_BYTES, 64);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            if (direct != NULL && s1 == steps) {
                float *o = direct + r * ldo, *o1 = o + TILE_ROWS * ldo;
                _tile_stored(0, o, ldo * 4);
                _tile_stored(1, o + PANEL, ldo * 4);
                _tile_stored(2, o1, ldo * 4);
                _tile_stored(3, o1 + PANEL, ldo * 4);
                continue;
            }
            _tile_stored(0, c, ldc);
            _tile_stored(1, c + PANEL, ldc);
            _tile_stored(2, c1, ldc);
            _tile_stored(3, c1 + PANEL, ldc);
        }
    }
}

/* Rows of x per block: as many as fill half the core's L2 in bf16 (1 MiB of a recent
 * Xeon's 2), in whole pairs of tiles, so a block stays in L2 while every group passes over
 * it; at most 512. Past that, each group read the block from L3 again, and products 2730
 * deep ran at half oneDNN's rate. */
static int64_t block_rows(int64_t kp) {
    const long l2 = l2_bytes(512 * 1024);
    const int64_t fit = l2 / 2 / (kp * 2) / (2 * TILE_ROWS) * (2 * TILE_ROWS);
    return fit < 2 * TILE_ROWS ? 2 * TILE_ROWS : fit > 512 ? 512 : fit;
}
#endif

/* The product of amx_linear, or with `ffn` > 0 that of amx_swiglu. */
static int product(const float *restrict x, int64_t ldx, int64_t rows, int64_t k,
                   const uint16_t *restrict w, const float *restrict bias, int64_t n,
                   int64_t ffn, float *restrict out, int64_t ldo) {
#if HAVE_AMX
    if (rows <= 0) return 0;
    const int64_t kp = padded_k(k), steps = kp / TILE_K;
    const int64_t groups = ffn > 0 ? swiglu_groups(ffn) : groups_of(n);
    const int64_t padded_rows = (rows + 2 * TILE_ROWS - 1) / (2 * TILE_ROWS) * (2 * TILE_ROWS);
    uint16_t *a = aligned_alloc(64, (size_t)(padded_rows * kp * 2));
    if (a == NULL) return -1;
    PARALLEL_FOR(padded_rows * kp)
    for (int64_t r = 0; r < padded_rows; r++) {
        /* row r of k-step s is at [r / 16][s][r % 16][32]: each A tile 1 KiB in a row. */
        uint16_t *row = a + (r / TILE_ROWS) * steps * (TILE_BYTES / 2) + (r % TILE_ROWS) * TILE_K;
        for (int64_t s = 0; s < steps; s++) {
            uint16_t *seg = row + s * (TILE_BYTES / 2);
            const int64_t k0 = s * TILE_K;
            int64_t j = 0;
            if (r < rows) {
                for (; j + 8 <= TILE_K && k0 + j + 8 <= k; j += 8)
                    store8_bf16(seg + j, load8(x + r * ldx + k0 + j));
                for (; j < TILE_K && k0 + j < k; j++) seg[j] = to_bf16(x[r * ldx + k0 + j]);
            }
            for (; j < TILE_K; j++) seg[j] = 0;
        }
    }
    const int64_t group_elems = steps * GROUP_PANELS * (TILE_BYTES / 2);
    int failed = 0;
    const int64_t most = block_rows(kp);
    for (int64_t b0 = 0; b0 < padded_rows; b0 += most) {
        const int64_t block = padded_rows - b0 < most ? padded_rows - b0 : most;
        RAINIER_PRAGMA(omp parallel if (groups * block * kp >= PARALLEL_MIN_WORK))
        {
            float scratch[2 * TILE_ROWS * PANEL] __attribute__((aligned(64)));
            float *acc = rows - b0 > TILE_ROWS ? aligned_alloc(64, (size_t)block * 2 * PANEL * 4)
                                               : NULL;
            load_tiles();
            RAINIER_PRAGMA(omp for schedule(static))
            for (int64_t g = 0; g < groups; g++) {
                const uint16_t *group = w + g * group_elems;
                if (rows - b0 <= TILE_ROWS) {
                    rows16_by_group(a + b0 * kp, group, steps, b0, g, rows, n, ffn, bias, out,
                                    ldo, scratch);
                    continue;
                }
                if (acc == NULL) {
                    failed = 1;
                    continue;
                }
                for (int64_t half = 0; half < 2; half++) {
                    const int64_t valid = rows - b0 < block ? rows - b0 : block;
                    if (ffn > 0) {
                        block_by_pair(a + b0 * kp, block, group, steps, half, acc, NULL, ldo);
                        swiglu_tile(acc, acc + PANEL, 2 * PANEL, valid, (2 * g + half) * PANEL,
                                    ffn, out + b0 * ldo, ldo);
                        continue;
                    }
                    const int64_t col = (g * GROUP_PANELS + 2 * half) * PANEL;
                    const int64_t cols = n - col < 2 * PANEL ? n - col : 2 * PANEL;
                    const int whole = bias == NULL && valid == block && cols == 2 * PANEL;
                    block_by_pair(a + b0 * kp, block, group, steps, half, acc,
                                  whole ? out + b0 * ldo + col : NULL, ldo);
                    if (whole) continue;
                    for (int64_t r = 0; r < valid; r++)
                        for (int64_t c = 0; c < cols; c++)
                            out[(b0 + r) * ldo + col + c] =
                                acc[r * 2 * PANEL + c] + (bias ? bias[col + c] : 0.0f);
                }
            }
            free(acc);
            _tile_release();
        }
    }
    free(a);
    return failed ? -1 : 0;
#else
    (void)x, (void)ldx, (void)rows, (void)k, (void)w, (void)bias, (void)n, (void)ffn, (void)out,
        (void)ldo;
    return -2;
#endif
}

/* out [rows, n] (row stride ldo) = x [rows, k] (row stride ldx, float32) @ w^T + bias, `w`
 * packed by amx_pack_weight. Returns 0, -1 where memory ran out, -2 where this build has no
 * AMX (the caller keeps its other path then). */
int amx_linear(const float *restrict x, int64_t ldx, int64_t rows, int64_t k,
               const uint16_t *restrict w, const float *restrict bias, int64_t n,
               float *restrict out, int64_t ldo) {
    return product(x, ldx, rows, k, w, bias, n, 0, out, ldo);
}

/* out [rows, ffn] = silu(x @ gate^T) * (x @ up^T), `w` the gate/up weight packed by
 * amx_pack_swiglu: the gate and up products of each output meet in one tile group, so the
 * SwiGLU is the products' epilogue, and neither the [rows, 2 ffn] product nor a pass over it
 * is written (in a 100M model's prefill, the widest output of a layer). Returns as
 * amx_linear. */
int amx_swiglu(const float *restrict x, int64_t ldx, int64_t rows, int64_t k,
               const uint16_t *restrict w, int64_t ffn, float *restrict out, int64_t ldo) {
    return product(x, ldx, rows, k, w, NULL, 2 * ffn, ffn, out, ldo);
}

/* Sixteen-float vectors, on CPUs with AVX-512 only (`RAINIER_VEC16` is defined where they
 * are): the width attention's inner loops run at there, where eight-float vectors leave
 * half of each register and twice the instructions. The arithmetic is exp8's and
 * softmax_row's in vec8.h, lane for lane. */
#ifndef RAINIER_VEC16_H
#define RAINIER_VEC16_H

#ifdef __AVX512F__
#define RAINIER_VEC16 1

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64)));

static inline v16 load16(const float *p) { return *(const v16u *)p; }
static inline void store16(float *p, v16 v) { *(v16u *)p = v; }
/* A vector literal, not `_mm512_set1_ps`: a broadcast the compiler can take straight from
 * memory into the instruction that uses it. */
static inline v16 splat16(float x) {
    return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}

/* bf16 widened as load8_bf16 does: a zero-extending load and a shift. */
static inline v16 load16_bf16(const uint16_t *p) {
    return (v16)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)),
                                  16);
}

#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE16(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE16(a, b, ...) __builtin_shuffle(a, b, (v16i){__VA_ARGS__})
#endif

/* Lane i holds the sum of v[i]: each pair of vectors folded into one by two shuffles and an
 * add, four times over (45 instructions where sixteen separate reductions take 64). */
static inline v16 hsum16x16(const v16 v[16]) {
    v16 halves[8], quarters[4], eighths[2];
    for (int i = 0; i < 8; i++) {
        const v16 a = v[2 * i], b = v[2 * i + 1];
        halves[i] = SHUFFLE16(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                    SHUFFLE16(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    for (int i = 0; i < 4; i++) {
        const v16 a = halves[2 * i], b = halves[2 * i + 1];
        quarters[i] =
            SHUFFLE16(a, b, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
            SHUFFLE16(a, b, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    }
    for (int i = 0; i < 2; i++) {
        const v16 a = quarters[2 * i], b = quarters[2 * i + 1];
        eighths[i] =
            SHUFFLE16(a, b, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
            SHUFFLE16(a, b, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    }
    const v16 a = eighths[0], b = eighths[1];
    return SHUFFLE16(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           SHUFFLE16(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* exp8 on sixteen lanes (the clamps keep a NaN, as its selects do). */
static inline v16 exp16(v16 x) {
    x = (v16)_mm512_max_ps(_mm512_set1_ps(-87.0f), (__m512)x);
    x = (v16)_mm512_min_ps(_mm512_set1_ps(88.0f), (__m512)x);
    const v16 magic = splat16(12582912.0f);
    v16 n = (x * splat16(1.44269504f) + magic) - magic;
    v16 r = x - n * splat16(0.693145752f) - n * splat16(1.42860677e-06f);
    v16 p = splat16(1.0f / 720);
    p = p * r + splat16(1.0f / 120);
    p = p * r + splat16(1.0f / 24);
    p = p * r + splat16(1.0f / 6);
    p = p * r + splat16(0.5f);
    p = p * r + splat16(1.0f);
    p = p * r + splat16(1.0f);
    v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16)bits;
}

/* s[0:n] = softmax(scale * s[0:n]) in place (n >= 1), the last partial vector under a mask
 * rather than element by element. */
static inline void softmax_row16(float *s, int64_t n, float scale) {
    const int64_t whole = n & ~(int64_t)15;
    const __mmask16 tail = (__mmask16)((1u << (n - whole)) - 1u);
    __m512 top = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < whole; j += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(s + j));
    top = _mm512_max_ps(top, _mm512_mask_loadu_ps(top, tail, s + whole));
    const float most = _mm512_reduce_max_ps(top);
    const v16 shift = splat16(most * scale), sv = splat16(scale);
    v16 acc = splat16(0.0f);
    for (int64_t j = 0; j < whole; j += 16) {
        const v16 e = exp16(load16(s + j) * sv - shift);
        store16(s + j, e);
        acc += e;
    }
    if (tail) {
        const v16 e = exp16((v16)_mm512_maskz_loadu_ps(tail, s + whole) * sv - shift);
        _mm512_mask_storeu_ps(s + whole, tail, (__m512)e);
        acc += (v16)_mm512_maskz_mov_ps(tail, (__m512)e);
    }
    const v16 norm = splat16(1.0f / _mm512_reduce_add_ps((__m512)acc));
    for (int64_t j = 0; j < whole; j += 16) store16(s + j, load16(s + j) * norm);
    if (tail) {
        const v16 e = (v16)_mm512_maskz_loadu_ps(tail, s + whole);
        _mm512_mask_storeu_ps(s + whole, tail, (__m512)(e * norm));
    }
}

#endif
#endif

/* Eight-float vectors for the kernels, as GCC/Clang vector extensions: AVX2 where
 * -march=native has it, split by the compiler elsewhere. Kernels are built without
 * -ffast-math, so sums keep the order written here and the rounding trick in exp8 holds. */
#ifndef RAINIER_VEC8_H
#define RAINIER_VEC8_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8 load8(const float *p) { return *(const v8u *)p; }
static inline void store8(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 splat8(float x) { return (v8){x, x, x, x, x, x, x, x}; }

/* Lanes of `yes` where `mask` is set, of `no` elsewhere. */
static inline v8 pick8(v8i mask, v8 yes, v8 no) {
    return (v8)(((v8i)yes & mask) | ((v8i)no & ~mask));
}

#if defined(__clang__) || __GNUC__ >= 12
#define SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

/* [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7]: AVX's horizontal add. */
static inline v8 pair_sums8(v8 a, v8 b) {
    return SHUFFLE8(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + SHUFFLE8(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

/* The sums of eight vectors at once, lane i holding the sum of v[i], each as
 * ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)): a handful of vector shuffles and adds
 * where eight separate sums would take a hundred scalar ones. */
static inline v8 hsum8x8(const v8 v[8]) {
    const v8 u0 = pair_sums8(pair_sums8(v[0], v[1]), pair_sums8(v[2], v[3]));
    const v8 u1 = pair_sums8(pair_sums8(v[4], v[5]), pair_sums8(v[6], v[7]));
    return SHUFFLE8(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUFFLE8(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
}

static inline float hsum8(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* bf16 is the top half of a float32 with the same bits: widening is a shift, narrowing
 * rounds to the nearest (ties to even), as PyTorch's conversion does; NaN stays NaN. */
typedef uint16_t u16x8 __attribute__((vector_size(16), aligned(2)));
typedef uint32_t v8ui __attribute__((vector_size(32)));

#ifdef __AVX2__
#include <immintrin.h>
/* One zero-extending load and a shift: the generic conversion below compiles to five
 * instructions here, on the path of every key and value a bf16 cache gives attention. */
static inline v8 load8_bf16(const uint16_t *p) {
    return (v8)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
}
#else
static inline v8 load8_bf16(const uint16_t *p) {
    return (v8)(__builtin_convertvector(*(const u16x8 *)p, v8i) << 16);
}
#endif

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#include <immintrin.h>
/* The CPU's own conversion (one instruction, the same rounding and NaN). */
static inline void store8_bf16(uint16_t *p, v8 x) {
    const __m128bh narrow = _mm256_cvtneps_pbh((__m256)x);
    memcpy(p, &narrow, sizeof narrow);
}
#else
static inline void store8_bf16(uint16_t *p, v8 x) {
    const v8ui bits = (v8ui)x;
    const v8ui rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const v8ui nan = (bits >> 16) | 0x40u;
    const v8ui out = (v8ui)pick8((v8i)(x != x), (v8)nan, (v8)rounded);
    *(u16x8 *)p = __builtin_convertvector(out, u16x8);
}
#endif

static inline float from_bf16(uint16_t x) {
    const uint32_t bits = (uint32_t)x << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/* e^x, relative error about 2e-7, with x clamped to [-87, 88] where 2^n stays a normal
 * float (so e^x saturates near 1.6e-38 and 1.7e38): x = n ln2 + r with |r| <= ln2 / 2, e^r by
 * its Taylor series to r^6, 2^n put into the exponent bits. */
static inline v8 exp8(v8 x) {
    const v8 lo = splat8(-87.0f), hi = splat8(88.0f);
    x = pick8(x < lo, lo, x);
    x = pick8(x > hi, hi, x);
    const v8 magic = splat8(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v8 n = (x * splat8(1.44269504f) + magic) - magic;
    v8 r = x - n * splat8(0.693145752f) - n * splat8(1.42860677e-06f);
    v8 p = splat8(1.0f / 720);
    p = p * r + splat8(1.0f / 120);
    p = p * r + splat8(1.0f / 24);
    p = p * r + splat8(1.0f / 6);
    p = p * r + splat8(0.5f);
    p = p * r + splat8(1.0f);
    p = p * r + splat8(1.0f);
    v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
    return p * (v8)bits;
}

/* The largest of x[0:n] (n >= 1), eight lanes at a time: a scalar running maximum waits on
 * its own result, four cycles an element, and was an eighth of attention's time. The maximum
 * is the same in any order. */
static inline float row_max(const float *x, int64_t n) {
    int64_t j = 0;
    float top = x[0];
    if (n >= 8) {
        v8 m = load8(x);
        for (j = 8; j + 8 <= n; j += 8) {
            const v8 v = load8(x + j);
            m = pick8(v > m, v, m);
        }
        top = m[0];
        for (int i = 1; i < 8; i++) top = m[i] > top ? m[i] : top;
    }
    for (; j < n; j++) top = x[j] > top ? x[j] : top;
    return top;
}

/* s[0:n] = softmax(scale * s[0:n]), in place. */
static inline void softmax_row(float *s, int64_t n, float scale) {
    const float top = row_max(s, n);
    const v8 shift = splat8(top * scale), sv = splat8(scale);
    v8 acc = splat8(0.0f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const v8 e = exp8(load8(s + j) * sv - shift);
        store8(s + j, e);
        acc += e;
    }
    float total = hsum8(acc);
    for (; j < n; j++) {
        s[j] = expf(s[j] * scale - top * scale);
        total += s[j];
    }
    const v8 norm = splat8(1.0f / total);
    for (j = 0; j + 8 <= n; j += 8) store8(s + j, load8(s + j) * norm);
    for (; j < n; j++) s[j] *= 1.0f / total;
}

#endif

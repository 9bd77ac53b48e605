/* The element-wise passes of a Llama layer, each one pass over its rows.
 *
 * Composed from PyTorch operators, an RMSNorm is eight calls and a rotary embedding six, each
 * reading and writing its whole input; with a few dozen tokens in a step, the calls' fixed
 * cost is most of the time. Each function here replaces one such chain. Every tensor is
 * float32 and row-major with rows `dim` floats apart unless a stride is given. Rows are
 * independent, and a prefill's many rows are spread over PyTorch's threads (parallel.h).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "parallel.h"
#include "vec8.h"

static float sum_squares(const float *x, int64_t n) {
    v8 a0 = splat8(0.0f), a1 = splat8(0.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const v8 u = load8(x + i), w = load8(x + i + 8);
        a0 += u * u;
        a1 += w * w;
    }
    for (; i + 8 <= n; i += 8) {
        const v8 u = load8(x + i);
        a0 += u * u;
    }
    float sum = hsum8(a0 + a1);
    for (; i < n; i++) sum += x[i] * x[i];
    return sum;
}

/* out = weight * (x / sqrt(mean(x^2) + eps)) */
static void normalise(float *restrict out, const float *restrict x, const float *restrict weight,
                      float sum_sq, int64_t dim, float eps) {
    const float inv = 1.0f / sqrtf(sum_sq / (float)dim + eps);
    const v8 iv = splat8(inv);
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) store8(out + i, load8(weight + i) * (load8(x + i) * iv));
    for (; i < dim; i++) out[i] = weight[i] * (x[i] * inv);
}

void rms_norm(const float *x, int64_t x_stride, const float *weight, float *out, int64_t rows,
              int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 2)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * x_stride;
        normalise(out + r * dim, row, weight, sum_squares(row, dim), dim, eps);
    }
}

/* normalise, writing bf16: the input of a bf16 matrix product. */
static void normalise_bf16(uint16_t *restrict out, const float *restrict x,
                           const float *restrict weight, float sum_sq, int64_t dim, float eps) {
    const float inv = 1.0f / sqrtf(sum_sq / (float)dim + eps);
    const v8 iv = splat8(inv);
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) store8_bf16(out + i, load8(weight + i) * (load8(x + i) * iv));
    for (; i < dim; i++) out[i] = to_bf16(weight[i] * (x[i] * inv));
}

void rms_norm_bf16(const float *x, int64_t x_stride, const float *weight, uint16_t *out,
                   int64_t rows, int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 2)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * x_stride;
        normalise_bf16(out + r * dim, row, weight, sum_squares(row, dim), dim, eps);
    }
}

/* add_rms_norm for a bf16 model: `delta` is a bf16 product's output, `hidden` stays float32,
 * and the normalised rows are written as bf16 for the next product. */
void add_rms_norm_bf16(float *hidden, const uint16_t *delta, const float *weight, uint16_t *out,
                       int64_t rows, int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 3)
    for (int64_t r = 0; r < rows; r++) {
        float *h = hidden + r * dim;
        const uint16_t *d = delta + r * dim;
        v8 acc = splat8(0.0f);
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8) {
            const v8 v = load8(h + i) + load8_bf16(d + i);
            store8(h + i, v);
            acc += v * v;
        }
        float sum_sq = hsum8(acc);
        for (; i < dim; i++) {
            h[i] += from_bf16(d[i]);
            sum_sq += h[i] * h[i];
        }
        normalise_bf16(out + r * dim, h, weight, sum_sq, dim, eps);
    }
}

/* hidden += delta, the last layer's residual, for a bf16 `delta`. */
void add_bf16(float *hidden, const uint16_t *delta, int64_t count) {
    PARALLEL_FOR(count)
    for (int64_t i = 0; i < count; i++) hidden[i] += from_bf16(delta[i]);
}

/* hidden += delta (the residual connection), then out = rms_norm(hidden): one read of each. */
void add_rms_norm(float *hidden, const float *delta, const float *weight, float *out,
                  int64_t rows, int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 3)
    for (int64_t r = 0; r < rows; r++) {
        float *h = hidden + r * dim;
        const float *d = delta + r * dim;
        v8 acc = splat8(0.0f);
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8) {
            const v8 v = load8(h + i) + load8(d + i);
            store8(h + i, v);
            acc += v * v;
        }
        float sum_sq = hsum8(acc);
        for (; i < dim; i++) {
            h[i] += d[i];
            sum_sq += h[i] * h[i];
        }
        normalise(out + r * dim, h, weight, sum_sq, dim, eps);
    }
}

/* Rotates `count` heads of one row in place, half-split layout. */
static void rotate_row(float *row, int64_t count, int64_t head_dim, const float *c,
                       const float *s) {
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < count; h++) {
        float *restrict x1 = row + h * head_dim, *restrict x2 = x1 + half;
        for (int64_t i = 0; i < half; i++) {
            const float a = x1[i], b = x2[i];
            x1[i] = a * c[i] - b * s[i];
            x2[i] = b * c[half + i] + a * s[half + i];
        }
    }
}

/* Rotary positions applied in place to the query and key heads of each row of a fused q/k/v
 * projection ([rows, heads + 2 * kv_heads, head_dim]), in the "rotate half" convention of HF
 * Llama, then the row's keys and values copied to its cache slot ([slots, kv_heads, head_dim]
 * each). `cos` and `sin` are tables [positions, head_dim]. */
void rope_store(float *qkv, int64_t rows, int64_t heads, int64_t kv_heads, int64_t head_dim,
                const float *cos, const float *sin, const int64_t *positions,
                const int64_t *slots, float *k_cache, float *v_cache) {
    const int64_t kv_width = kv_heads * head_dim;
    const int64_t width = (heads + 2 * kv_heads) * head_dim;
    PARALLEL_FOR(rows * width * 2)
    for (int64_t r = 0; r < rows; r++) {
        float *row = qkv + r * width;
        rotate_row(row, heads + kv_heads, head_dim, cos + positions[r] * head_dim,
                   sin + positions[r] * head_dim);
        memcpy(k_cache + slots[r] * kv_width, row + heads * head_dim, sizeof(float) * kv_width);
        memcpy(v_cache + slots[r] * kv_width, row + heads * head_dim + kv_width,
               sizeof(float) * kv_width);
    }
}

/* rope_store for a bf16 cache: the rotated keys and the values rounded as they are stored. */
void rope_store_bf16(float *qkv, int64_t rows, int64_t heads, int64_t kv_heads,
                     int64_t head_dim, const float *cos, const float *sin,
                     const int64_t *positions, const int64_t *slots, uint16_t *k_cache,
                     uint16_t *v_cache) {
    const int64_t kv_width = kv_heads * head_dim;
    const int64_t width = (heads + 2 * kv_heads) * head_dim;
    PARALLEL_FOR(rows * width * 2)
    for (int64_t r = 0; r < rows; r++) {
        float *row = qkv + r * width;
        rotate_row(row, heads + kv_heads, head_dim, cos + positions[r] * head_dim,
                   sin + positions[r] * head_dim);
        const float *k = row + heads * head_dim, *v = k + kv_width;
        uint16_t *kc = k_cache + slots[r] * kv_width, *vc = v_cache + slots[r] * kv_width;
        for (int64_t i = 0; i < kv_width; i++) {
            kc[i] = to_bf16(k[i]);
            vc[i] = to_bf16(v[i]);
        }
    }
}

/* out = silu(gate) * up, where each row of `gate_up` is [gate (ffn) | up (ffn)]. */
void silu_mul(const float *gate_up, float *out, int64_t rows, int64_t ffn) {
    const v8 one = splat8(1.0f);
    PARALLEL_FOR(rows * ffn * 3)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate_up + r * 2 * ffn, *u = g + ffn;
        float *o = out + r * ffn;
        int64_t i = 0;
        for (; i + 8 <= ffn; i += 8) {
            const v8 x = load8(g + i);
            store8(o + i, x / (one + exp8(-x)) * load8(u + i));
        }
        for (; i < ffn; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* silu_mul on bf16 rows, computed in float32 and rounded once. */
void silu_mul_bf16(const uint16_t *gate_up, uint16_t *out, int64_t rows, int64_t ffn) {
    const v8 one = splat8(1.0f);
    PARALLEL_FOR(rows * ffn * 3)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *g = gate_up + r * 2 * ffn, *u = g + ffn;
        uint16_t *o = out + r * ffn;
        int64_t i = 0;
        for (; i + 8 <= ffn; i += 8) {
            const v8 x = load8_bf16(g + i);
            store8_bf16(o + i, x / (one + exp8(-x)) * load8_bf16(u + i));
        }
        for (; i < ffn; i++) {
            const float x = from_bf16(g[i]);
            o[i] = to_bf16(x / (1.0f + expf(-x)) * from_bf16(u[i]));
        }
    }
}

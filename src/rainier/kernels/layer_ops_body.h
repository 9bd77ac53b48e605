/* The passes of a Llama layer that write the matrix products' inputs or read their outputs,
 * for one element type of those activations (`elem_begin.h`): `layer_ops.c` includes this
 * once for float32 and once for bf16. Arithmetic is float32 for every type, and a bf16 value
 * is rounded once, when it is stored. */

#include "elem_begin.h"

/* out = weight * (x / sqrt(mean(x^2) + eps)) */
static void NAME(normalise)(ELEM *restrict out, const float *restrict x,
                            const float *restrict weight, float sum_sq, int64_t dim, float eps) {
    const float inv = 1.0f / sqrtf(sum_sq / (float)dim + eps);
    const v8 iv = splat8(inv);
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) STORE8(out + i, load8(weight + i) * (load8(x + i) * iv));
    for (; i < dim; i++) out[i] = STORE1(weight[i] * (x[i] * inv));
}

void NAME(rms_norm)(const float *x, int64_t x_stride, const float *weight, ELEM *out,
                    int64_t rows, int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 2)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * x_stride;
        NAME(normalise)(out + r * dim, row, weight, sum_squares(row, dim), dim, eps);
    }
}

/* hidden += delta (the residual connection, `delta` a product's output), then
 * out = rms_norm(hidden), the next product's input: one read of each. */
void NAME(add_rms_norm)(float *hidden, const ELEM *delta, const float *weight, ELEM *out,
                        int64_t rows, int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 3)
    for (int64_t r = 0; r < rows; r++) {
        float *h = hidden + r * dim;
        const ELEM *d = delta + r * dim;
        v8 acc = splat8(0.0f);
        int64_t i = 0;
        for (; i + 8 <= dim; i += 8) {
            const v8 v = load8(h + i) + LOAD8(d + i);
            store8(h + i, v);
            acc += v * v;
        }
        float sum_sq = hsum8(acc);
        for (; i < dim; i++) {
            h[i] += LOAD1(d[i]);
            sum_sq += h[i] * h[i];
        }
        NAME(normalise)(out + r * dim, h, weight, sum_sq, dim, eps);
    }
}

/* Rotary positions applied in place to the query and key heads of each row of a fused q/k/v
 * projection ([rows, heads + 2 * kv_heads, head_dim], float32), in the "rotate half"
 * convention of HF Llama, then the row's keys and values stored in its cache slot
 * ([slots, kv_heads, head_dim] each). `cos` and `sin` are tables [positions, head_dim]. */
void NAME(rope_store)(float *qkv, int64_t rows, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, const float *cos, const float *sin,
                      const int64_t *positions, const int64_t *slots, ELEM *k_cache,
                      ELEM *v_cache) {
    const int64_t kv_width = kv_heads * head_dim;
    const int64_t width = (heads + 2 * kv_heads) * head_dim;
    PARALLEL_FOR(rows * width * 2)
    for (int64_t r = 0; r < rows; r++) {
        float *row = qkv + r * width;
        rotate_row(row, heads + kv_heads, head_dim, cos + positions[r] * head_dim,
                   sin + positions[r] * head_dim);
        const float *k = row + heads * head_dim, *v = k + kv_width;
        ELEM *kc = k_cache + slots[r] * kv_width, *vc = v_cache + slots[r] * kv_width;
        int64_t i = 0;
        for (; i + 8 <= kv_width; i += 8) {
            STORE8(kc + i, load8(k + i));
            STORE8(vc + i, load8(v + i));
        }
        for (; i < kv_width; i++) {
            kc[i] = STORE1(k[i]);
            vc[i] = STORE1(v[i]);
        }
    }
}

/* out = silu(gate) * up, where each row of `gate_up` is [gate (ffn) | up (ffn)]. */
void NAME(silu_mul)(const ELEM *gate_up, ELEM *out, int64_t rows, int64_t ffn) {
    const v8 one = splat8(1.0f);
    PARALLEL_FOR(rows * ffn * 3)
    for (int64_t r = 0; r < rows; r++) {
        const ELEM *g = gate_up + r * 2 * ffn, *u = g + ffn;
        ELEM *o = out + r * ffn;
        int64_t i = 0;
        for (; i + 8 <= ffn; i += 8) {
            const v8 x = LOAD8(g + i);
            STORE8(o + i, x / (one + exp8(-x)) * LOAD8(u + i));
        }
        for (; i < ffn; i++) {
            const float x = LOAD1(g[i]);
            o[i] = STORE1(x / (1.0f + expf(-x)) * LOAD1(u[i]));
        }
    }
}

#include "elem_end.h"

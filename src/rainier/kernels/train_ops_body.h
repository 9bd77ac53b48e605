/* RMSNorm, SwiGLU, the rotary head split and attention's softmax backward, for one element
 * type of the activations (`elem_begin.h`): `train_ops.c` includes this once for float32 and once for bf16.
 * Arithmetic is float32 for every type, so a bf16 value is rounded once, when it is stored,
 * where PyTorch's bf16 operators round after every step of the chain. */

#include "elem_begin.h"

/* out = silu(gate) * up, where each row of `gate_up` is `width` gate values then `width` up
 * values (the fused projection's output). */
void NAME(swiglu_forward)(const ELEM *restrict gate_up, ELEM *restrict out, int64_t rows,
                          int64_t width) {
    PARALLEL_FOR(rows * width * 3)
    for (int64_t i = 0; i < rows; i++) {
        const ELEM *g = gate_up + 2 * i * width, *u = g + width;
        ELEM *o = out + i * width;
        int64_t j = 0;
        for (; j + 8 <= width; j += 8) {
            const v8 gv = LOAD8(g + j);
            STORE8(o + j, gv * vsigmoid(gv) * LOAD8(u + j));
        }
        for (; j < width; j++) {
            const float gj = LOAD1(g[j]);
            o[j] = STORE1(gj * sigmoid(gj) * LOAD1(u[j]));
        }
    }
}

/* Both halves of the gradient of the fused projection's output in one pass:
 * d gate = grad * up * s * (1 + gate * (1 - s)), d up = grad * gate * s, s = sigmoid(gate). */
void NAME(swiglu_backward)(const ELEM *restrict gate_up, const ELEM *restrict grad,
                           ELEM *restrict grad_gate_up, int64_t rows, int64_t width) {
    const v8 one = splat8(1.0f);
    PARALLEL_FOR(rows * width * 5)
    for (int64_t i = 0; i < rows; i++) {
        const ELEM *g = gate_up + 2 * i * width, *u = g + width;
        const ELEM *d = grad + i * width;
        ELEM *dg = grad_gate_up + 2 * i * width, *du = dg + width;
        int64_t j = 0;
        for (; j + 8 <= width; j += 8) {
            const v8 gv = LOAD8(g + j), dv = LOAD8(d + j), s = vsigmoid(gv);
            STORE8(du + j, dv * (gv * s));
            STORE8(dg + j, dv * LOAD8(u + j) * (s * (one + gv * (one - s))));
        }
        for (; j < width; j++) {
            const float gj = LOAD1(g[j]), dj = LOAD1(d[j]), s = sigmoid(gj);
            du[j] = STORE1(dj * (gj * s));
            dg[j] = STORE1(dj * LOAD1(u[j]) * (s * (1.0f + gj * (1.0f - s))));
        }
    }
}

/* Rotates one head row by its position's angles, half-split layout (dimension j pairs with
 * j + half): out1 = x1 cos - sign x2 sin, out2 = x2 cos + sign x1 sin. */
static inline void NAME(rotate_row)(const ELEM *restrict x, const float *restrict c,
                                    const float *restrict s, ELEM *restrict out, int64_t half,
                                    float sign) {
    const ELEM *x1 = x, *x2 = x + half;
    ELEM *o1 = out, *o2 = out + half;
    const v8 sv = splat8(sign);
    int64_t j = 0;
    for (; j + 8 <= half; j += 8) {
        const v8 a = LOAD8(x1 + j), b = LOAD8(x2 + j), cv = load8(c + j), ss = load8(s + j) * sv;
        STORE8(o1 + j, a * cv - b * ss);
        STORE8(o2 + j, b * cv + a * ss);
    }
    for (; j < half; j++) {
        const float a = LOAD1(x1[j]), b = LOAD1(x2[j]), ss = s[j] * sign;
        o1[j] = STORE1(a * c[j] - b * ss);
        o2[j] = STORE1(b * c[j] + a * ss);
    }
}

/* The fused projection's output [batch, seq, heads + 2 kv_heads, head_dim] as q, k and v, each
 * [batch, its heads, seq, head_dim], q and k rotated by `cos`/`sin` [seq, head_dim / 2]. */
void NAME(rotary_heads_forward)(const ELEM *restrict qkv, const float *restrict cos_t,
                                const float *restrict sin_t, ELEM *restrict q, ELEM *restrict k,
                                ELEM *restrict v, int64_t batch, int64_t seq, int64_t heads,
                                int64_t kv_heads, int64_t head_dim) {
    const int64_t half = head_dim / 2, all = heads + 2 * kv_heads;
    PARALLEL_FOR2(batch * seq * all * head_dim * 2)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < seq; t++) {
            const ELEM *row = qkv + (b * seq + t) * all * head_dim;
            const float *c = cos_t + t * half, *s = sin_t + t * half;
            for (int64_t h = 0; h < heads; h++)
                NAME(rotate_row)(row + h * head_dim, c, s,
                                 q + ((b * heads + h) * seq + t) * head_dim, half, 1.0f);
            for (int64_t h = 0; h < kv_heads; h++) {
                const ELEM *src = row + (heads + h) * head_dim;
                const int64_t at = ((b * kv_heads + h) * seq + t) * head_dim;
                NAME(rotate_row)(src, c, s, k + at, half, 1.0f);
                memcpy(v + at, src + kv_heads * head_dim, sizeof(ELEM) * (size_t)head_dim);
            }
        }
}

/* The inverse: the gradients of q, k and v, q and k rotated back, into the fused layout. */
void NAME(rotary_heads_backward)(const ELEM *restrict grad_q, const ELEM *restrict grad_k,
                                 const ELEM *restrict grad_v, const float *restrict cos_t,
                                 const float *restrict sin_t, ELEM *restrict grad_qkv,
                                 int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                                 int64_t head_dim) {
    const int64_t half = head_dim / 2, all = heads + 2 * kv_heads;
    PARALLEL_FOR2(batch * seq * all * head_dim * 2)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t t = 0; t < seq; t++) {
            ELEM *row = grad_qkv + (b * seq + t) * all * head_dim;
            const float *c = cos_t + t * half, *s = sin_t + t * half;
            for (int64_t h = 0; h < heads; h++)
                NAME(rotate_row)(grad_q + ((b * heads + h) * seq + t) * head_dim, c, s,
                                 row + h * head_dim, half, -1.0f);
            for (int64_t h = 0; h < kv_heads; h++) {
                ELEM *dst = row + (heads + h) * head_dim;
                const int64_t at = ((b * kv_heads + h) * seq + t) * head_dim;
                NAME(rotate_row)(grad_k + at, c, s, dst, half, -1.0f);
                memcpy(dst + kv_heads * head_dim, grad_v + at, sizeof(ELEM) * (size_t)head_dim);
            }
        }
}

/* The softmax backward in place over a block of scores' gradients [batch, rows, cols]:
 * grad = (grad - delta[row]) * weights * scale, delta the row's sum of grad * weights (float32
 * whatever the element), given with `delta_stride` floats between batch entries; `scale` is
 * the scores' own, folded in. */
void NAME(softmax_grad)(ELEM *restrict grad, const ELEM *restrict weights,
                        const float *restrict delta, int64_t delta_stride, int64_t batch,
                        int64_t rows, int64_t cols, float scale) {
    const v8 sv = splat8(scale);
    PARALLEL_FOR2(batch * rows * cols * 2)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < rows; i++) {
            ELEM *g = grad + (b * rows + i) * cols;
            const ELEM *w = weights + (b * rows + i) * cols;
            const float d = delta[b * delta_stride + i];
            const v8 dv = splat8(d);
            int64_t j = 0;
            for (; j + 8 <= cols; j += 8) STORE8(g + j, (LOAD8(g + j) - dv) * (LOAD8(w + j) * sv));
            for (; j < cols; j++) g[j] = STORE1((LOAD1(g[j]) - d) * (LOAD1(w[j]) * scale));
        }
}

/* out = weight * (x * r), r = 1 / sqrt(mean(x^2) + eps) per row, kept for the backward; `x`
 * is the float32 residual stream, `out` a product's input. */
void NAME(rmsnorm_forward)(const float *restrict x, const float *restrict weight,
                           ELEM *restrict out, float *restrict rstd, int64_t rows, int64_t dim,
                           float eps) {
    PARALLEL_FOR(rows * dim * 2)
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * dim;
        ELEM *oi = out + i * dim;
        v8 acc = splat8(0.0f);
        int64_t j = 0;
        for (; j + 8 <= dim; j += 8) acc += load8(xi + j) * load8(xi + j);
        float ss = hsum8(acc);
        for (; j < dim; j++) ss += xi[j] * xi[j];
        const float r = 1.0f / sqrtf(ss / (float)dim + eps);
        rstd[i] = r;
        const v8 rv = splat8(r);
        for (j = 0; j + 8 <= dim; j += 8) STORE8(oi + j, load8(weight + j) * (load8(xi + j) * rv));
        for (; j < dim; j++) oi[j] = STORE1(weight[j] * (xi[j] * r));
    }
}

/* With n = x * r and gn = grad * weight: grad_x = (gn - n * mean(gn * n)) * r per row, and
 * grad_weight = sum over rows of grad * n, accumulated in double: in row order within groups
 * of NORM_ROW_GROUP rows, then over the groups in order. Returns -1 if the accumulators cannot
 * be allocated. */
int NAME(rmsnorm_backward)(const float *restrict x, const float *restrict weight,
                           const float *restrict rstd, const ELEM *restrict grad,
                           float *restrict grad_x, float *restrict grad_weight, int64_t rows,
                           int64_t dim) {
    const int64_t groups = rows > 0 ? (rows + NORM_ROW_GROUP - 1) / NORM_ROW_GROUP : 1;
    const int64_t stride = dim + 4;
    double *partial = calloc((size_t)(groups * stride), sizeof(double));
    if (partial == NULL) return -1;
    PARALLEL_FOR(rows * dim * 3)
    for (int64_t group = 0; group < groups; group++) {
        double *acc_w = partial + group * stride;
        const int64_t end = (group + 1) * NORM_ROW_GROUP < rows ? (group + 1) * NORM_ROW_GROUP : rows;
        for (int64_t i = group * NORM_ROW_GROUP; i < end; i++) {
            const float *xi = x + i * dim;
            const ELEM *gi = grad + i * dim;
            float *dx = grad_x + i * dim;
            const float r = rstd[i];
            const v8 rv = splat8(r);
            v8 acc = splat8(0.0f);
            int64_t j = 0;
            for (; j + 8 <= dim; j += 8) {
                const v8 n = load8(xi + j) * rv, g = LOAD8(gi + j);
                acc += (g * load8(weight + j)) * n;
                const v8 gn = g * n;
                const v4d lo = __builtin_convertvector((v4f){gn[0], gn[1], gn[2], gn[3]}, v4d);
                const v4d hi = __builtin_convertvector((v4f){gn[4], gn[5], gn[6], gn[7]}, v4d);
                *(v4du *)(acc_w + j) += lo;
                *(v4du *)(acc_w + j + 4) += hi;
            }
            float dot = hsum8(acc);
            for (; j < dim; j++) {
                const float n = xi[j] * r;
                dot += (LOAD1(gi[j]) * weight[j]) * n;
                acc_w[j] += (double)(LOAD1(gi[j]) * n);
            }
            const float mean = dot / (float)dim;
            const v8 mv = splat8(mean);
            for (j = 0; j + 8 <= dim; j += 8) {
                const v8 n = load8(xi + j) * rv;
                store8(dx + j, (LOAD8(gi + j) * load8(weight + j) - n * mv) * rv);
            }
            for (; j < dim; j++) dx[j] = (LOAD1(gi[j]) * weight[j] - xi[j] * r * mean) * r;
        }
    }
    for (int64_t group = 1; group < groups; group++)
        for (int64_t j = 0; j < dim; j++) partial[j] += partial[group * stride + j];
    for (int64_t j = 0; j < dim; j++) grad_weight[j] = (float)partial[j];
    free(partial);
    return 0;
}

#include "elem_end.h"

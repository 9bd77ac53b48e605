/* One AdamW step over float32 master weights whose gradients came in bf16, writing the bf16
 * copy of the weights the next step computes with.
 *
 * Under bf16 autocast PyTorch casts every weight matrix to bf16 on each forward and each bf16
 * weight gradient back to float32 on the backward: four passes over a matrix (two reads, two
 * writes) that, for a 100M-parameter model on one CPU core, took an eighth of the step. Here
 * the step reads the bf16 gradient where it is, and the copy forward needs is written while
 * the new weight is still in a register: one more store of two bytes per weight.
 *
 * Each element is updated as `torch.optim.AdamW` (decoupled weight decay, bias-corrected
 * moments, lerp for the first moment) computes it in float32; the bias corrections are
 * scalars the caller computes in double. Elements are independent, so the result does not
 * depend on the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "parallel.h"
#include "vec8.h"

#ifdef __AVX__
static inline v8 sqrt8(v8 x) { return (v8)_mm256_sqrt_ps((__m256)x); }
#else
static inline v8 sqrt8(v8 x) {
    v8 r;
    for (int i = 0; i < 8; i++) r[i] = sqrtf(x[i]);
    return r;
}
#endif

#define CHUNK 8192

/* `decay` is 1 - lr * weight_decay, `step_size` lr / (1 - beta1^t), `bias2_sqrt`
 * sqrt(1 - beta2^t), and `grad_scale` the clipping coefficient (1 when the norm was under
 * the limit). */
void adamw_step_bf16_grad(float *restrict param, float *restrict exp_avg,
                          float *restrict exp_avg_sq, const uint16_t *restrict grad,
                          uint16_t *restrict working, int64_t n, float decay, float beta1,
                          float beta2, float step_size, float bias2_sqrt, float eps,
                          float grad_scale) {
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
    PARALLEL_FOR(n)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t begin = c * CHUNK, end = begin + CHUNK < n ? begin + CHUNK : n;
        int64_t i = begin;
        for (; i + 8 <= end; i += 8) {
            const v8 g = load8_bf16(grad + i) * splat8(grad_scale);
            const v8 m = load8(exp_avg + i), v = load8(exp_avg_sq + i);
            const v8 m2 = m + splat8(1.0f - beta1) * (g - m);
            const v8 v2 = splat8(beta2) * v + splat8(1.0f - beta2) * g * g;
            const v8 denom = sqrt8(v2) / splat8(bias2_sqrt) + splat8(eps);
            const v8 p = load8(param + i) * splat8(decay) - splat8(step_size) * m2 / denom;
            store8(exp_avg + i, m2);
            store8(exp_avg_sq + i, v2);
            store8(param + i, p);
            store8_bf16(working + i, p);
        }
        for (; i < end; i++) {
            const float g = from_bf16(grad[i]) * grad_scale, m = exp_avg[i];
            const float m2 = m + (1.0f - beta1) * (g - m);
            const float v2 = beta2 * exp_avg_sq[i] + (1.0f - beta2) * g * g;
            const float denom = sqrtf(v2) / bias2_sqrt + eps;
            const float p = param[i] * decay - step_size * m2 / denom;
            exp_avg[i] = m2;
            exp_avg_sq[i] = v2;
            param[i] = p;
            working[i] = to_bf16(p);
        }
    }
}

/* The sum of squares of a bf16 gradient, for the norm clipping takes: PyTorch's norm of a
 * bf16 tensor is rounded to bf16 (a 0.4% error in the clipping coefficient), and asking it
 * for float32 casts the whole gradient first. Chunks are summed in float32 and added up in
 * double in chunk order, whatever the thread count. Returns -1 where memory ran out. */
double sum_squares_bf16(const uint16_t *restrict grad, int64_t n) {
    const int64_t chunks = (n + CHUNK - 1) / CHUNK;
    double *partial = malloc(sizeof(double) * (size_t)(chunks > 0 ? chunks : 1));
    if (partial == NULL) return -1.0;
    PARALLEL_FOR(n)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t begin = c * CHUNK, end = begin + CHUNK < n ? begin + CHUNK : n;
        v8 acc = splat8(0.0f);
        int64_t i = begin;
        for (; i + 8 <= end; i += 8) {
            const v8 g = load8_bf16(grad + i);
            acc += g * g;
        }
        float tail = 0.0f;
        for (; i < end; i++) tail += from_bf16(grad[i]) * from_bf16(grad[i]);
        partial[c] = (double)hsum8(acc) + (double)tail;
    }
    double total = 0.0;
    for (int64_t c = 0; c < chunks; c++) total += partial[c];
    free(partial);
    return total;
}

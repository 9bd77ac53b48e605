/* Fused passes for the element-wise parts of a training step on a CPU.
 *
 * Each function does in one sweep over its rows what PyTorch's operators do in several, each
 * of which reads and writes a full activation: cross-entropy (row maximum, log-sum-exp and
 * loss; in the backward, softmax minus one-hot), SwiGLU, RMSNorm, the rotation of the fused
 * q/k/v projection into attention heads, and the softmax of causal attention's blocks of
 * scores. Rows are spread over PyTorch's threads (parallel.h); every sum runs in a fixed
 * order whatever the thread count, so results are bitwise repeatable from run to run on one
 * machine (a resumed run must match an uninterrupted one).
 *
 * Row widths need not be multiples of eight: each row ends with a scalar tail.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "parallel.h"
#include "vec8.h"

typedef double v4d __attribute__((vector_size(32)));
typedef double v4du __attribute__((vector_size(32), aligned(8)));
typedef float v4f __attribute__((vector_size(16)));

static inline v8 vsigmoid(v8 x) { return splat8(1.0f) / (splat8(1.0f) + exp8(-x)); }
static inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Cross-entropy forward: per row, its maximum and log-sum-exp (kept for the backward) and the
 * sum over rows of lse - logit[target], in double. Returns -1 on a target outside the row. */
int cross_entropy_forward(const float *restrict logits, const int64_t *restrict targets,
                          float *restrict lse, double *restrict loss, int64_t rows,
                          int64_t vocab) {
    for (int64_t i = 0; i < rows; i++)
        if (targets[i] < 0 || targets[i] >= vocab) return -1;
    double *row_loss = malloc(sizeof(double) * (size_t)(rows > 0 ? rows : 1));
    if (row_loss == NULL) return -2;
    PARALLEL_FOR(rows * vocab)
    for (int64_t i = 0; i < rows; i++) {
        const float *x = logits + i * vocab;
        const int64_t t = targets[i];
        const float top = vocab > 0 ? row_max(x, vocab) : -INFINITY;
        int64_t j;
        const v8 shift = splat8(top);
        v8 acc = splat8(0.0f);
        for (j = 0; j + 8 <= vocab; j += 8) acc += exp8(load8(x + j) - shift);
        float sum = hsum8(acc);
        for (; j < vocab; j++) sum += expf(x[j] - top);
        lse[i] = top + logf(sum);
        row_loss[i] = (double)lse[i] - (double)x[t];
    }
    double total = 0.0;
    for (int64_t i = 0; i < rows; i++) total += row_loss[i];
    free(row_loss);
    *loss = total;
    return 0;
}

/* grad = scale * (softmax(logits) - onehot(target)), softmax as exp(logit - lse). */
void cross_entropy_backward(const float *restrict logits, const int64_t *restrict targets,
                            const float *restrict lse, float *restrict grad, int64_t rows,
                            int64_t vocab, float scale) {
    const v8 s = splat8(scale);
    PARALLEL_FOR(rows * vocab)
    for (int64_t i = 0; i < rows; i++) {
        const float *x = logits + i * vocab;
        float *g = grad + i * vocab;
        const v8 shift = splat8(lse[i]);
        int64_t j = 0;
        for (; j + 8 <= vocab; j += 8) store8(g + j, exp8(load8(x + j) - shift) * s);
        for (; j < vocab; j++) g[j] = expf(x[j] - lse[i]) * scale;
        g[targets[i]] -= scale;
    }
}

/* out = weight * (x * r), r = 1 / sqrt(mean(x^2) + eps) per row, kept for the backward. */
void rmsnorm_forward(const float *restrict x, const float *restrict weight, float *restrict out,
                     float *restrict rstd, int64_t rows, int64_t dim, float eps) {
    PARALLEL_FOR(rows * dim * 2)
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * dim;
        float *oi = out + i * dim;
        v8 acc = splat8(0.0f);
        int64_t j = 0;
        for (; j + 8 <= dim; j += 8) acc += load8(xi + j) * load8(xi + j);
        float ss = hsum8(acc);
        for (; j < dim; j++) ss += xi[j] * xi[j];
        const float r = 1.0f / sqrtf(ss / (float)dim + eps);
        rstd[i] = r;
        const v8 rv = splat8(r);
        for (j = 0; j + 8 <= dim; j += 8) store8(oi + j, load8(weight + j) * (load8(xi + j) * rv));
        for (; j < dim; j++) oi[j] = weight[j] * (xi[j] * r);
    }
}

/* Rows of the norm's backward summed into one partial weight gradient each: the partials are
 * what threads share out, and they are added up in group order. */
#define NORM_ROW_GROUP 32

/* With n = x * r and gn = grad * weight: grad_x = (gn - n * mean(gn * n)) * r per row, and
 * grad_weight = sum over rows of grad * n, accumulated in double: in row order within groups
 * of NORM_ROW_GROUP rows, then over the groups in order. Returns -1 if the accumulators cannot
 * be allocated. */
int rmsnorm_backward(const float *restrict x, const float *restrict weight,
                     const float *restrict rstd, const float *restrict grad,
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
            const float *xi = x + i * dim, *gi = grad + i * dim;
            float *dx = grad_x + i * dim;
            const float r = rstd[i];
            const v8 rv = splat8(r);
            v8 acc = splat8(0.0f);
            int64_t j = 0;
            for (; j + 8 <= dim; j += 8) {
                const v8 n = load8(xi + j) * rv, g = load8(gi + j);
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
                dot += (gi[j] * weight[j]) * n;
                acc_w[j] += (double)(gi[j] * n);
            }
            const float mean = dot / (float)dim;
            const v8 mv = splat8(mean);
            for (j = 0; j + 8 <= dim; j += 8) {
                const v8 n = load8(xi + j) * rv;
                store8(dx + j, (load8(gi + j) * load8(weight + j) - n * mv) * rv);
            }
            for (; j < dim; j++) dx[j] = (gi[j] * weight[j] - xi[j] * r * mean) * r;
        }
    }
    for (int64_t group = 1; group < groups; group++)
        for (int64_t j = 0; j < dim; j++) partial[j] += partial[group * stride + j];
    for (int64_t j = 0; j < dim; j++) grad_weight[j] = (float)partial[j];
    free(partial);
    return 0;
}

/* A block of causal attention scores [batch, rows, cols] in place: row i is query position
 * first_row + i and sees keys 0 ..= first_row + i; those become softmax(scale * score), the
 * rest 0. The mask is implicit, so masked scores are neither read nor exponentiated. */
void causal_softmax(float *restrict scores, int64_t batch, int64_t rows, int64_t cols,
                    int64_t first_row, float scale) {
    PARALLEL_FOR2(batch * rows * cols)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < rows; i++) {
            float *s = scores + (b * rows + i) * cols;
            const int64_t n = first_row + i + 1 < cols ? first_row + i + 1 : cols;
            softmax_row(s, n, scale);
            for (int64_t j = n; j < cols; j++) s[j] = 0.0f;
        }
}

/* The softmax backward in place over a block of scores' gradients [batch, rows, cols]:
 * grad = (grad - delta[row]) * weights * scale, delta the row's sum of grad * weights, given
 * with `delta_stride` floats between batch entries; `scale` is the scores' own, folded in. */
void softmax_grad(float *restrict grad, const float *restrict weights,
                  const float *restrict delta, int64_t delta_stride, int64_t batch,
                  int64_t rows, int64_t cols, float scale) {
    const v8 sv = splat8(scale);
    PARALLEL_FOR2(batch * rows * cols * 2)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < rows; i++) {
            float *g = grad + (b * rows + i) * cols;
            const float *w = weights + (b * rows + i) * cols;
            const float d = delta[b * delta_stride + i];
            const v8 dv = splat8(d);
            int64_t j = 0;
            for (; j + 8 <= cols; j += 8) store8(g + j, (load8(g + j) - dv) * (load8(w + j) * sv));
            for (; j < cols; j++) g[j] = (g[j] - d) * (w[j] * scale);
        }
}

/* SwiGLU and the rotary head split, forward and backward, once on float32 activations and
 * once on bf16 ones, as autocast leaves them (`train_ops_body.h`). */
#define ELEM_BF16 0
#include "train_ops_body.h"

#define ELEM_BF16 1
#include "train_ops_body.h"

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

/* Rows of the norm's backward summed into one partial weight gradient each: the partials are
 * what threads share out, and they are added up in group order. */
#define NORM_ROW_GROUP 32

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

/* SwiGLU, the rotary head split and the softmax backward of attention's blocks, once on
 * float32 activations and once on bf16 ones, as autocast leaves them (`train_ops_body.h`). */
#define ELEM_BF16 0
#include "train_ops_body.h"

/* causal_softmax on bf16 scores, a bf16 product's output: each row is widened into float32,
 * takes the same softmax, and is rounded once on the way back, as PyTorch's bf16 softmax
 * computes. Rows are short (blocked attention's are at most 512 keys). */
void causal_softmax_bf16(uint16_t *restrict scores, int64_t batch, int64_t rows, int64_t cols,
                         int64_t first_row, float scale) {
    PARALLEL_FOR2(batch * rows * cols)
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < rows; i++) {
            uint16_t *s = scores + (b * rows + i) * cols;
            const int64_t n = first_row + i + 1 < cols ? first_row + i + 1 : cols;
            float row[n];
            int64_t j = 0;
            for (; j + 8 <= n; j += 8) store8(row + j, load8_bf16(s + j));
            for (; j < n; j++) row[j] = from_bf16(s[j]);
            softmax_row(row, n, scale);
            for (j = 0; j + 8 <= n; j += 8) store8_bf16(s + j, load8(row + j));
            for (; j < n; j++) s[j] = to_bf16(row[j]);
            for (j = n; j < cols; j++) s[j] = 0;
        }
}

#define ELEM_BF16 1
#include "train_ops_body.h"

/* The element-wise passes of a Llama layer, each one pass over its rows.
 *
 * Composed from PyTorch operators, an RMSNorm is eight calls and a rotary embedding six, each
 * reading and writing its whole input; with a few dozen tokens in a step, the calls' fixed
 * cost is most of the time. Each function here replaces one such chain. Every tensor is
 * row-major with rows `dim` elements apart unless a stride is given; the residual stream and
 * the fused q/k/v rows are float32, the rest float32 or, in the `_bf16` forms, bf16. Rows are
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

/* hidden += delta, the last layer's residual, for a bf16 `delta`. */
void add_bf16(float *hidden, const uint16_t *delta, int64_t count) {
    PARALLEL_FOR(count)
    for (int64_t i = 0; i < count; i++) hidden[i] += from_bf16(delta[i]);
}

/* The passes around the matrix products, once for float32 activations and once for bf16 ones
 * (the products' inputs and outputs in a bf16 model; its KV cache is bf16 too), from
 * `layer_ops_body.h`. The residual stream stays float32 in both. */
#define ELEM_BF16 0
#include "layer_ops_body.h"

#define ELEM_BF16 1
#include "layer_ops_body.h"

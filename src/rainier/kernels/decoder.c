/* A whole Llama forward pass over a paged KV cache, as one call.
 *
 * The kernels beside this file each replace a chain of PyTorch operators; called one by one
 * from Python, a step of a few dozen tokens still makes some fifty calls, and their Python
 * side (argument checks, output allocation, ctypes conversion) was a sixth of the step. Here
 * the same kernels run in the same order with the step's buffers allocated once, so a step's
 * cost is its arithmetic and its memory traffic. Results are bitwise those of calling the
 * kernels one by one.
 *
 * Weights come as an array of pointers, LAYER_FIELDS per layer, in the order of `enum field`.
 * `decoder_forward` takes float32 matrices packed by `pack_weight` (biases padded to whole
 * panels or NULL) and a float32 cache; `decoder_forward_bf16` bf16 matrices packed by
 * `amx_pack_weight` for the AMX tiles (the gate/up one by `amx_pack_swiglu`) and a bf16 cache. Both keep the activations float32.
 */
#include "layer_ops.c"
#include "linear.c"
#include "linear_amx.c"
#include "paged_attention.c"

#include <stdlib.h>

enum field { INPUT_NORM, POST_NORM, QKV, QKV_BIAS, O, O_BIAS, GATE_UP, DOWN, LAYER_FIELDS };

struct shape {
    int64_t layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
    float eps, scale;
};

/* The two products behind one signature, `w` packed for each. */
static int product_f32(const float *x, int64_t ldx, int64_t rows, int64_t k, const void *w,
                       const float *bias, int64_t n, float *out, int64_t ldo) {
    linear(x, ldx, rows, k, (const float *)w, bias, n, out, ldo);
    return 0;
}

static int product_amx(const float *x, int64_t ldx, int64_t rows, int64_t k, const void *w,
                       const float *bias, int64_t n, float *out, int64_t ldo) {
    return amx_linear(x, ldx, rows, k, (const uint16_t *)w, bias, n, out, ldo);
}

/* act [rows, ffn] = silu(gate) * up from x [rows, h] and the gate/up weight: the product into
 * `gate_up` [rows, 2 ffn] and then `silu_mul`, or on AMX one product with the SwiGLU as its
 * epilogue (`gate_up` unused), bitwise the same. */
static int swiglu_f32(const float *x, int64_t rows, int64_t h, const void *w, int64_t ffn,
                      float *gate_up, float *act) {
    linear(x, h, rows, h, (const float *)w, NULL, 2 * ffn, gate_up, 2 * ffn);
    silu_mul(gate_up, act, rows, ffn);
    return 0;
}

static int swiglu_amx(const float *x, int64_t rows, int64_t h, const void *w, int64_t ffn,
                      float *gate_up, float *act) {
    (void)gate_up;
    return amx_swiglu(x, h, rows, h, (const uint16_t *)w, ffn, act, ffn);
}

#define DECODER_BF16 0
#include "decoder_body.h"
#define DECODER_BF16 1
#include "decoder_body.h"

/* A whole Llama forward pass over a paged KV cache, as one call.
 *
 * The kernels beside this file each replace a chain of PyTorch operators; called one by one
 * from Python, a step of a few dozen tokens still makes some fifty calls, and their Python
 * side (argument checks, output allocation, ctypes conversion) was a sixth of the step. Here
 * the same kernels run in the same order with the step's buffers allocated once, so a step's
 * cost is its arithmetic and its memory traffic. Results are bitwise those of calling the
 * kernels one by one.
 *
 * Weights come as an array of pointers, LAYER_FIELDS per layer, in the order of `enum field`;
 * the matrices are packed by `pack_weight`, the biases padded to whole panels or NULL.
 */
#include "layer_ops.c"
#include "linear.c"
#include "paged_attention.c"

#include <stdlib.h>

enum field { INPUT_NORM, POST_NORM, QKV, QKV_BIAS, O, O_BIAS, GATE_UP, DOWN, LAYER_FIELDS };

struct shape {
    int64_t layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
    float eps, scale;
};

/* `hidden` [tokens, hidden] holds the tokens' embeddings and is left holding the residual
 * stream; `kv_cache` is [layers, 2, slots, kv_heads, head_dim]; `logits` [len(logits_index),
 * vocab] receives the logits of the rows `logits_index` names. Returns 0, or -1 when memory
 * for the step's buffers cannot be had (nothing is written to `logits` then). */
int decoder_forward(const struct shape *s, const float *const *weights, const float *final_norm,
                    const float *lm_head, const float *cos, const float *sin, float *kv_cache,
                    int64_t slots, int64_t block_size, float *hidden, int64_t tokens,
                    const int64_t *positions, const int64_t *slot_mapping,
                    const int64_t *block_tables, int64_t max_blocks, const int64_t *token_seq,
                    const int64_t *context_lens, const int64_t *logits_index, int64_t num_logits,
                    float *logits) {
    const int64_t h = s->hidden, qkv_width = (s->heads + 2 * s->kv_heads) * s->head_dim;
    const int64_t attn_width = s->heads * s->head_dim;
    const int64_t cache_half = slots * s->kv_heads * s->head_dim;
    const size_t floats = (size_t)(tokens * (h + qkv_width + attn_width + h + 3 * s->ffn) +
                                   num_logits * h);
    float *x = malloc(sizeof(float) * (floats > 0 ? floats : 1));
    if (x == NULL) return -1;
    float *qkv = x + tokens * h, *attn = qkv + tokens * qkv_width, *delta = attn + tokens * attn_width;
    float *gate_up = delta + tokens * h, *act = gate_up + tokens * 2 * s->ffn;
    float *last = act + tokens * s->ffn;

    rms_norm(hidden, h, weights[INPUT_NORM], x, tokens, h, s->eps);
    for (int64_t i = 0; i < s->layers; i++) {
        const float *const *w = weights + i * LAYER_FIELDS;
        float *k_cache = kv_cache + 2 * i * cache_half, *v_cache = k_cache + cache_half;
        linear(x, h, tokens, h, w[QKV], w[QKV_BIAS], qkv_width, qkv, qkv_width);
        rope_store(qkv, tokens, s->heads, s->kv_heads, s->head_dim, cos, sin, positions,
                   slot_mapping, k_cache, v_cache);
        if (paged_attention(qkv, qkv_width, k_cache, v_cache, block_tables, max_blocks, token_seq,
                            context_lens, attn, tokens, s->heads, s->kv_heads, s->head_dim,
                            block_size, s->scale) != 0) {
            free(x);
            return -1;
        }
        linear(attn, attn_width, tokens, attn_width, w[O], w[O_BIAS], h, delta, h);
        add_rms_norm(hidden, delta, w[POST_NORM], x, tokens, h, s->eps);
        linear(x, h, tokens, h, w[GATE_UP], NULL, 2 * s->ffn, gate_up, 2 * s->ffn);
        silu_mul(gate_up, act, tokens, s->ffn);
        linear(act, s->ffn, tokens, s->ffn, w[DOWN], NULL, h, delta, h);
        if (i + 1 < s->layers) {
            add_rms_norm(hidden, delta, w[LAYER_FIELDS + INPUT_NORM], x, tokens, h, s->eps);
        } else {
            for (int64_t j = 0; j < tokens * h; j++) hidden[j] += delta[j];
        }
    }
    for (int64_t j = 0; j < num_logits; j++)
        rms_norm(hidden + logits_index[j] * h, h, final_norm, last + j * h, 1, h, s->eps);
    linear(last, h, num_logits, h, lm_head, NULL, s->vocab, logits, s->vocab);
    free(x);
    return 0;
}

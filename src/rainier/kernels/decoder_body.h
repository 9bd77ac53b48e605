/* The body of `decoder.c`'s forward pass, included once per weight and cache type: with
 * DECODER_BF16 1, bf16 matrices on the AMX tiles and a bf16 cache (`decoder_forward_bf16`),
 * else float32 ones (`decoder_forward`). Activations are float32 either way. */
#if DECODER_BF16
#define CACHE uint16_t
#define FORWARD decoder_forward_bf16
#define PRODUCT product_amx
#define SWIGLU swiglu_amx
#define ROPE_STORE rope_store_bf16
#define ATTENTION paged_attention_bf16
#else
#define CACHE float
#define FORWARD decoder_forward
#define PRODUCT product_f32
#define SWIGLU swiglu_f32
#define ROPE_STORE rope_store
#define ATTENTION paged_attention
#endif

/* `hidden` [tokens, hidden] holds the tokens' embeddings and is left holding the residual
 * stream; `kv_cache` is [layers, 2, slots, kv_heads, head_dim]; `logits` [len(logits_index),
 * vocab] receives the logits of the rows `logits_index` names. Returns 0, or -1 when memory
 * for the step's buffers cannot be had (nothing is written to `logits` then). */
int FORWARD(const struct shape *s, const void *const *weights, const float *final_norm,
            const void *lm_head, const float *cos, const float *sin, CACHE *kv_cache,
            int64_t slots, int64_t block_size, float *hidden, int64_t tokens,
            const int64_t *positions, const int64_t *slot_mapping, const int64_t *block_tables,
            int64_t max_blocks, const int64_t *token_seq, const int64_t *context_lens,
            const int64_t *logits_index, int64_t num_logits, float *logits) {
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
    int failed = 0;

    rms_norm(hidden, h, (const float *)weights[INPUT_NORM], x, tokens, h, s->eps);
    for (int64_t i = 0; i < s->layers && !failed; i++) {
        const void *const *w = weights + i * LAYER_FIELDS;
        CACHE *k_cache = kv_cache + 2 * i * cache_half, *v_cache = k_cache + cache_half;
        failed |= PRODUCT(x, h, tokens, h, w[QKV], w[QKV_BIAS], qkv_width, qkv, qkv_width);
        ROPE_STORE(qkv, tokens, s->heads, s->kv_heads, s->head_dim, cos, sin, positions,
                   slot_mapping, k_cache, v_cache);
        failed |= ATTENTION(qkv, qkv_width, k_cache, v_cache, block_tables, max_blocks, token_seq,
                            context_lens, attn, tokens, s->heads, s->kv_heads, s->head_dim,
                            block_size, s->scale);
        failed |= PRODUCT(attn, attn_width, tokens, attn_width, w[O], w[O_BIAS], h, delta, h);
        add_rms_norm(hidden, delta, (const float *)w[POST_NORM], x, tokens, h, s->eps);
        failed |= SWIGLU(x, tokens, h, w[GATE_UP], s->ffn, gate_up, act);
        failed |= PRODUCT(act, s->ffn, tokens, s->ffn, w[DOWN], NULL, h, delta, h);
        if (i + 1 < s->layers) {
            add_rms_norm(hidden, delta, (const float *)w[LAYER_FIELDS + INPUT_NORM], x, tokens, h,
                         s->eps);
        } else {
            for (int64_t j = 0; j < tokens * h; j++) hidden[j] += delta[j];
        }
    }
    for (int64_t j = 0; j < num_logits && !failed; j++)
        rms_norm(hidden + logits_index[j] * h, h, final_norm, last + j * h, 1, h, s->eps);
    if (!failed) failed |= PRODUCT(last, h, num_logits, h, lm_head, NULL, s->vocab, logits, s->vocab);
    free(x);
    return failed ? -1 : 0;
}

#undef CACHE
#undef FORWARD
#undef PRODUCT
#undef SWIGLU
#undef ROPE_STORE
#undef ATTENTION
#undef DECODER_BF16

/* Attention of each query token over its sequence's context in a paged KV cache, in place.
 *
 * The cache holds one layer's keys and values as [slots, kv_heads, head_dim], where slot =
 * block * block_size + offset and each sequence's blocks are listed in its row of
 * `block_tables`. A query token t belongs to sequence `token_seq[t]` and sees its first
 * `context_lens[t]` positions: a decode sees the whole context, a prefill token the prefix up
 * to and including itself, so one call serves a step that mixes both.
 *
 * Grouped-query attention: the `groups` query heads sharing a KV head are handled together,
 * so each key and value row is read once per KV head, straight from its block; nothing is
 * gathered or padded. Scores are kept in full for the softmax (a context of a few thousand
 * positions is a few KiB per head), which is exact, not the online rescaling a GPU kernel
 * needs to stay in registers.
 *
 * `head_dim` must be a multiple of 8, the vector width.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "vec8.h"

/* Scores of one query row against `n` key rows `stride` floats apart. Eight keys at a time,
 * each with its own accumulator, so eight independent chains of fused multiply-adds keep the
 * vector units busy instead of waiting on one chain's latency. */
static void scores_block(float *restrict out, const float *restrict query,
                         const float *restrict key, int64_t n, int64_t stride, int64_t dim) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8, key += 8 * stride) {
        v8 a[8] = {0};
        for (int64_t c = 0; c < dim; c += 8) {
            const v8 qv = load8(query + c);
            for (int i = 0; i < 8; i++) a[i] += qv * load8(key + i * stride + c);
        }
        for (int i = 0; i < 8; i++) out[j + i] = hsum8(a[i]);
    }
    for (; j < n; j++, key += stride) {
        v8 a = splat8(0.0f);
        for (int64_t c = 0; c < dim; c += 8) a += load8(query + c) * load8(key + c);
        out[j] = hsum8(a);
    }
}

/* out[0:64] += sum_j w[j] * value_j[0:64] over `n` value rows `stride` floats apart; the 64
 * outputs stay in eight registers for the whole run. */
static void weigh_block_64(v8 acc[8], const float *restrict w, const float *restrict value,
                           int64_t n, int64_t stride) {
    for (int64_t j = 0; j < n; j++, value += stride) {
        const v8 wv = splat8(w[j]);
        for (int i = 0; i < 8; i++) acc[i] += wv * load8(value + 8 * i);
    }
}

static void weigh_block_8(v8 *acc, const float *restrict w, const float *restrict value,
                          int64_t n, int64_t stride) {
    for (int64_t j = 0; j < n; j++, value += stride) *acc += splat8(w[j]) * load8(value);
}

/* s[j] = softmax(scale * s)[j], in place. */
static void softmax(float *s, int64_t n, float scale) {
    float top = s[0];
    for (int64_t j = 1; j < n; j++) top = s[j] > top ? s[j] : top;
    const v8 shift = splat8(top * scale), sv = splat8(scale);
    v8 acc = splat8(0.0f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        v8 e = exp8(load8(s + j) * sv - shift);
        store8(s + j, e);
        acc += e;
    }
    float total = hsum8(acc);
    for (; j < n; j++) {
        s[j] = expf(s[j] * scale - top * scale);
        total += s[j];
    }
    const v8 norm = splat8(1.0f / total);
    for (j = 0; j + 8 <= n; j += 8) store8(s + j, load8(s + j) * norm);
    for (; j < n; j++) s[j] *= 1.0f / total;
}

int paged_attention(
    const float *q, int64_t q_token_stride,       /* [tokens, heads, head_dim], rows strided */
    const float *k_cache, const float *v_cache,   /* [slots, kv_heads, head_dim] each */
    const int64_t *block_tables, int64_t max_blocks,
    const int64_t *token_seq, const int64_t *context_lens,
    float *out,                                   /* [tokens, heads, head_dim], contiguous */
    int64_t num_tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
    int64_t block_size, float scale) {
    const int64_t groups = heads / kv_heads;
    int64_t longest = 1;
    for (int64_t t = 0; t < num_tokens; t++)
        if (context_lens[t] > longest) longest = context_lens[t];
    float *scores = malloc(sizeof(float) * (size_t)(groups * longest));
    if (scores == NULL) return -1;
    const int64_t slot_stride = kv_heads * head_dim;

    for (int64_t t = 0; t < num_tokens; t++) {
        const int64_t *table = block_tables + token_seq[t] * max_blocks;
        const int64_t length = context_lens[t];
        for (int64_t h = 0; h < kv_heads; h++) {
            const float *query = q + t * q_token_stride + h * groups * head_dim;
            const float *keys = k_cache + h * head_dim, *values = v_cache + h * head_dim;
            for (int64_t start = 0; start < length; start += block_size) {
                const int64_t n = length - start < block_size ? length - start : block_size;
                const int64_t row = table[start / block_size] * block_size * slot_stride;
                for (int64_t g = 0; g < groups; g++)
                    scores_block(scores + g * length + start, query + g * head_dim, keys + row, n,
                                 slot_stride, head_dim);
            }
            for (int64_t g = 0; g < groups; g++) softmax(scores + g * length, length, scale);
            for (int64_t g = 0; g < groups; g++) {
                float *o = out + (t * heads + h * groups + g) * head_dim;
                const float *w = scores + g * length;
                int64_t c = 0;
                for (; c + 64 <= head_dim; c += 64) {
                    v8 acc[8] = {0};
                    for (int64_t start = 0; start < length; start += block_size) {
                        const int64_t n = length - start < block_size ? length - start : block_size;
                        const int64_t row = table[start / block_size] * block_size * slot_stride;
                        weigh_block_64(acc, w + start, values + row + c, n, slot_stride);
                    }
                    for (int i = 0; i < 8; i++) store8(o + c + 8 * i, acc[i]);
                }
                for (; c < head_dim; c += 8) {
                    v8 acc = splat8(0.0f);
                    for (int64_t start = 0; start < length; start += block_size) {
                        const int64_t n = length - start < block_size ? length - start : block_size;
                        const int64_t row = table[start / block_size] * block_size * slot_stride;
                        weigh_block_8(&acc, w + start, values + row + c, n, slot_stride);
                    }
                    store8(o + c, acc);
                }
            }
        }
    }
    free(scores);
    return 0;
}

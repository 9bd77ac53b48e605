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
 * The cache is float32 (`paged_attention`) or bf16 (`paged_attention_bf16`, half the bytes
 * to read per step, widened to float32 as loaded); queries and outputs are float32.
 * `head_dim` must be a multiple of 8, the vector width.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "parallel.h"
#include "vec16.h"
#include "vec8.h"

#define KV_T float
#define LOAD_KV load8
#define LOAD16_KV load16
#define SUFFIX f32_
#include "paged_attention_body.h"
#undef KV_T
#undef LOAD_KV
#undef LOAD16_KV
#undef SUFFIX

#define KV_T uint16_t
#define LOAD_KV load8_bf16
#define LOAD16_KV load16_bf16
#define SUFFIX bf16_
#include "paged_attention_body.h"
#undef KV_T
#undef LOAD_KV
#undef LOAD16_KV
#undef SUFFIX

int paged_attention(const float *q, int64_t q_token_stride, const float *k_cache,
                    const float *v_cache, const int64_t *block_tables, int64_t max_blocks,
                    const int64_t *token_seq, const int64_t *context_lens, float *out,
                    int64_t num_tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
                    int64_t block_size, float scale) {
    return paged_attention_f32_(q, q_token_stride, k_cache, v_cache, block_tables, max_blocks,
                               token_seq, context_lens, out, num_tokens, heads, kv_heads,
                               head_dim, block_size, scale);
}

int paged_attention_bf16(const float *q, int64_t q_token_stride, const uint16_t *k_cache,
                         const uint16_t *v_cache, const int64_t *block_tables,
                         int64_t max_blocks, const int64_t *token_seq,
                         const int64_t *context_lens, float *out, int64_t num_tokens,
                         int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t block_size,
                         float scale) {
    return paged_attention_bf16_(q, q_token_stride, k_cache, v_cache, block_tables, max_blocks,
                                 token_seq, context_lens, out, num_tokens, heads, kv_heads,
                                 head_dim, block_size, scale);
}

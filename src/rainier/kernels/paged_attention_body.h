/* The body of `paged_attention.c`, included there once per element type of the KV cache:
 * KV_T (the cache's element), LOAD_KV (eight of them as floats) and SUFFIX (the functions'
 * name suffix). Queries, scores and outputs are float32 whatever the cache holds. */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* Scores of two query rows of a group against `n` key rows `stride` floats apart. Each key
 * load serves both rows, and four keys at a time give eight independent chains of fused
 * multiply-adds, so the vector units do not wait on one chain's latency. A group with one
 * row passes it twice. */
static void CAT(scores_pair_, SUFFIX)(float *restrict out0, float *restrict out1, const float *q0,
                        const float *q1, const KV_T *restrict key, int64_t n, int64_t stride,
                        int64_t dim) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4, key += 4 * stride) {
        v8 acc[8] = {0}; /* keys j..j+3 against q0, then against q1 */
        for (int64_t c = 0; c < dim; c += 8) {
            const v8 x0 = load8(q0 + c), x1 = load8(q1 + c);
            for (int i = 0; i < 4; i++) {
                const v8 k = LOAD_KV(key + i * stride + c);
                acc[i] += x0 * k;
                acc[4 + i] += x1 * k;
            }
        }
        const v8 sums = hsum8x8(acc);
        for (int i = 0; i < 4; i++) {
            out0[j + i] = sums[i];
            out1[j + i] = sums[4 + i];
        }
    }
    for (; j < n; j++, key += stride) {
        v8 a = splat8(0.0f), b = splat8(0.0f);
        for (int64_t c = 0; c < dim; c += 8) {
            const v8 k = LOAD_KV(key + c);
            a += load8(q0 + c) * k;
            b += load8(q1 + c) * k;
        }
        out0[j] = hsum8(a);
        out1[j] = hsum8(b);
    }
}

/* acc0/acc1 += sum_j w0[j] / w1[j] * value_j over `blocks` x 8 columns of `n` value rows:
 * each value load serves both rows of the pair. Always inlined with a constant `blocks`, so
 * its loop unrolls and the sums stay in registers. */
static inline __attribute__((always_inline)) void CAT(weigh_pair_, SUFFIX)(
    v8 *acc0, v8 *acc1, int blocks, const float *w0, const float *w1, const KV_T *restrict value,
    int64_t n, int64_t stride) {
    for (int64_t j = 0; j < n; j++, value += stride) {
        const v8 x0 = splat8(w0[j]), x1 = splat8(w1[j]);
        for (int i = 0; i < blocks; i++) {
            const v8 v = LOAD_KV(value + 8 * i);
            acc0[i] += x0 * v;
            acc1[i] += x1 * v;
        }
    }
}

/* o0/o1[0, 8 blocks) = the pair's weights s0/s1 over the whole context times its values
 * (`values` at the pair's first column), block by block of the cache. */
static inline __attribute__((always_inline)) void CAT(weigh_pair_columns_, SUFFIX)(
    float *o0, float *o1, int blocks, const float *s0, const float *s1, const KV_T *values,
    const int64_t *table, int64_t length, int64_t block_size, int64_t slot_stride) {
    v8 acc0[8] = {0}, acc1[8] = {0};
    for (int64_t start = 0; start < length; start += block_size) {
        const int64_t n = length - start < block_size ? length - start : block_size;
        const int64_t row = table[start / block_size] * block_size * slot_stride;
        CAT(weigh_pair_, SUFFIX)(acc0, acc1, blocks, s0 + start, s1 + start, values + row, n,
                                 slot_stride);
    }
    for (int i = 0; i < blocks; i++) {
        store8(o0 + 8 * i, acc0[i]);
        store8(o1 + 8 * i, acc1[i]);
    }
}

#ifdef __AVX512VL__
/* With AVX-512's 32 vector registers: the scores of four query rows (a whole group of four)
 * per pass over the keys, so each key row is loaded once for all of them, and the weighted
 * sum over 64 columns at once, so each value row is loaded whole. */
static void CAT(scores_quad_, SUFFIX)(float *restrict out[4], const float *q[4],
                                      const KV_T *restrict key, int64_t n, int64_t stride,
                                      int64_t dim) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4, key += 4 * stride) {
        v8 acc[16] = {0}; /* acc[4 * r + i]: key j + i against row r */
        for (int64_t c = 0; c < dim; c += 8) {
            const v8 x0 = load8(q[0] + c), x1 = load8(q[1] + c), x2 = load8(q[2] + c),
                     x3 = load8(q[3] + c);
            for (int i = 0; i < 4; i++) {
                const v8 k = LOAD_KV(key + i * stride + c);
                acc[i] += x0 * k;
                acc[4 + i] += x1 * k;
                acc[8 + i] += x2 * k;
                acc[12 + i] += x3 * k;
            }
        }
        const v8 lo = hsum8x8(acc), hi = hsum8x8(acc + 8);
        for (int i = 0; i < 4; i++) {
            out[0][j + i] = lo[i];
            out[1][j + i] = lo[4 + i];
            out[2][j + i] = hi[i];
            out[3][j + i] = hi[4 + i];
        }
    }
    for (; j < n; j++, key += stride) {
        v8 a[4] = {0};
        for (int64_t c = 0; c < dim; c += 8) {
            const v8 k = LOAD_KV(key + c);
            for (int r = 0; r < 4; r++) a[r] += load8(q[r] + c) * k;
        }
        for (int r = 0; r < 4; r++) out[r][j] = hsum8(a[r]);
    }
}

/* The weighted sum of four rows over 32 columns: each value half-row is loaded once for all
 * four, so a group's values are read once in all. */
static void CAT(weigh_quad_32_, SUFFIX)(v8 acc[16], float *const w[4], const KV_T *restrict value,
                                        int64_t n, int64_t stride) {
    for (int64_t j = 0; j < n; j++, value += stride) {
        const v8 x0 = splat8(w[0][j]), x1 = splat8(w[1][j]), x2 = splat8(w[2][j]),
                 x3 = splat8(w[3][j]);
        for (int i = 0; i < 4; i++) {
            const v8 v = LOAD_KV(value + 8 * i);
            acc[i] += x0 * v;
            acc[4 + i] += x1 * v;
            acc[8 + i] += x2 * v;
            acc[12 + i] += x3 * v;
        }
    }
}
#endif

#ifdef RAINIER_VEC16
/* The scores of four query rows against `n` key rows on AVX-512's full width: each key row
 * loaded once for the four, and the sixteen sums of four keys by four rows reduced together.
 * Against the eight-float quad (`scores_quad_`), 12 layers of a 100M model's decode attention (16
 * sequences, bf16 cache) went from 2.7 ms to 2.1 at 128 tokens from L2 and from 9.5 to 7.8
 * at 256 from memory, and its decode step from 28.9 ms to 26.0 on one core. */
static void CAT(scores_quad16_, SUFFIX)(float *restrict out[4], const float *q[4],
                                        const KV_T *restrict key, int64_t n, int64_t stride,
                                        int64_t dim) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4, key += 4 * stride) {
        v16 acc[16] = {0}; /* acc[4 * r + i]: key j + i against row r */
        for (int64_t c = 0; c < dim; c += 16) {
            const v16 x0 = load16(q[0] + c), x1 = load16(q[1] + c), x2 = load16(q[2] + c),
                      x3 = load16(q[3] + c);
            for (int i = 0; i < 4; i++) {
                const v16 k = LOAD16_KV(key + i * stride + c);
                acc[i] += x0 * k;
                acc[4 + i] += x1 * k;
                acc[8 + i] += x2 * k;
                acc[12 + i] += x3 * k;
            }
        }
        const __m512 sums = (__m512)hsum16x16(acc);
        _mm_storeu_ps(out[0] + j, _mm512_extractf32x4_ps(sums, 0));
        _mm_storeu_ps(out[1] + j, _mm512_extractf32x4_ps(sums, 1));
        _mm_storeu_ps(out[2] + j, _mm512_extractf32x4_ps(sums, 2));
        _mm_storeu_ps(out[3] + j, _mm512_extractf32x4_ps(sums, 3));
    }
    for (; j < n; j++, key += stride) {
        v16 a[4] = {0};
        for (int64_t c = 0; c < dim; c += 16) {
            const v16 k = LOAD16_KV(key + c);
            for (int r = 0; r < 4; r++) a[r] += load16(q[r] + c) * k;
        }
        for (int r = 0; r < 4; r++) out[r][j] = _mm512_reduce_add_ps((__m512)a[r]);
    }
}

/* o[r][0:64] = the weights w[r] over the whole context times its values (`values` at the
 * first of the 64 columns), block by block of the cache: each value row's 64 columns are
 * loaded once for the four rows, and the sixteen sums stay in registers. */
static void CAT(weigh_quad16_, SUFFIX)(float *const o[4], float *const w[4],
                                       const KV_T *values, const int64_t *table,
                                       int64_t length, int64_t block_size, int64_t stride) {
    v16 acc[16] = {0}; /* acc[4 * r + i]: row r, columns 16 i .. 16 i + 15 */
    for (int64_t start = 0; start < length; start += block_size) {
        const int64_t n = length - start < block_size ? length - start : block_size;
        const KV_T *value = values + table[start / block_size] * block_size * stride;
        for (int64_t j = start; j < start + n; j++, value += stride) {
            const v16 x0 = splat16(w[0][j]), x1 = splat16(w[1][j]), x2 = splat16(w[2][j]),
                      x3 = splat16(w[3][j]);
            for (int i = 0; i < 4; i++) {
                const v16 v = LOAD16_KV(value + 16 * i);
                acc[i] += x0 * v;
                acc[4 + i] += x1 * v;
                acc[8 + i] += x2 * v;
                acc[12 + i] += x3 * v;
            }
        }
    }
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 4; i++) store16(o[r] + 16 * i, acc[4 * r + i]);
}
#endif

/* The `n` rows of one head from `rows` on (row stride `stride`), asked for. */
static inline void CAT(prefetch_rows_, SUFFIX)(const KV_T *rows, int64_t n, int64_t stride,
                                               int64_t head_dim) {
    for (int64_t s = 0; s < n; s++)
        for (int64_t b = 0; b < head_dim * (int64_t)sizeof(KV_T); b += 64)
            __builtin_prefetch((const char *)(rows + s * stride) + b);
}

/* While the block at `start` is scored: its value rows, which the weighing reads only after
 * the whole context is scored, and the next block's keys. Blocks lie at scattered places,
 * where the hardware's prefetchers do not follow; waiting for each row when it was read
 * took 12 layers of a 100M bf16 model's decode attention (16 sequences of 256 tokens, from
 * memory) 15.9 ms, asked for ahead 9.2. */
static inline __attribute__((always_inline)) void CAT(prefetch_ahead_, SUFFIX)(const KV_T *keys, const KV_T *values,
                                                const int64_t *table, int64_t start,
                                                int64_t length, int64_t block_size,
                                                int64_t stride, int64_t head_dim) {
    const int64_t n = length - start < block_size ? length - start : block_size;
    CAT(prefetch_rows_, SUFFIX)(values + table[start / block_size] * block_size * stride, n,
                                stride, head_dim);
    const int64_t next = start + block_size;
    if (next < length) {
        const int64_t m = length - next < block_size ? length - next : block_size;
        CAT(prefetch_rows_, SUFFIX)(keys + table[next / block_size] * block_size * stride, m,
                                    stride, head_dim);
    }
}

static int CAT(paged_attention_, SUFFIX)(
    const float *q, int64_t q_token_stride,       /* [tokens, heads, head_dim], rows strided */
    const KV_T *k_cache, const KV_T *v_cache,     /* [slots, kv_heads, head_dim] each */
    const int64_t *block_tables, int64_t max_blocks,
    const int64_t *token_seq, const int64_t *context_lens,
    float *out,                                   /* [tokens, heads, head_dim], contiguous */
    int64_t num_tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
    int64_t block_size, float scale) {
    const int64_t groups = heads / kv_heads;
    int64_t longest = 1;
    for (int64_t t = 0; t < num_tokens; t++)
        if (context_lens[t] > longest) longest = context_lens[t];
    const int64_t slot_stride = kv_heads * head_dim;
    int failed = 0;

    /* (token, KV head) pairs dealt out one at a time, round robin: a prefill's tokens see
     * contexts of every length, so contiguous shares would leave one thread the longest. */
    RAINIER_PRAGMA(omp parallel if (num_tokens * heads * longest * head_dim >= PARALLEL_MIN_WORK))
    {
    SUBNORMALS_AS_ZERO_BEGIN
    float *scores = malloc(sizeof(float) * (size_t)(4 * longest));
    if (scores == NULL) {
        RAINIER_PRAGMA(omp atomic write)
        failed = 1;
    }
    RAINIER_PRAGMA(omp for collapse(2) schedule(static, 1))
    for (int64_t t = 0; t < num_tokens; t++) {
        for (int64_t h = 0; h < kv_heads; h++) {
            if (scores == NULL) continue;
            const int64_t *table = block_tables + token_seq[t] * max_blocks;
            const int64_t length = context_lens[t];
            const KV_T *keys = k_cache + h * head_dim, *values = v_cache + h * head_dim;
            int quad_scored = 0; /* the scores of rows g .. g + 3 are in place */
            for (int64_t g = 0; g < groups; g += 2) {
                const int64_t g1 = g + 1 < groups ? g + 1 : g;
                const float *q0 = q + t * q_token_stride + (h * groups + g) * head_dim;
                const float *q1 = q + t * q_token_stride + (h * groups + g1) * head_dim;
                float *s0 = scores + (g % 4) * length, *s1 = s0 + length;
#ifdef RAINIER_VEC16
                if (g % 4 == 0 && g + 4 <= groups && head_dim % 64 == 0) {
                    float *rows[4] = {scores, scores + length, scores + 2 * length,
                                      scores + 3 * length};
                    const float *qs[4] = {q0, q0 + head_dim, q0 + 2 * head_dim,
                                          q0 + 3 * head_dim};
                    for (int64_t start = 0; start < length; start += block_size) {
                        const int64_t n = length - start < block_size ? length - start : block_size;
                        const int64_t row = table[start / block_size] * block_size * slot_stride;
                        float *at[4] = {rows[0] + start, rows[1] + start, rows[2] + start,
                                        rows[3] + start};
                        CAT(prefetch_ahead_, SUFFIX)(keys, values, table, start, length,
                                                     block_size, slot_stride, head_dim);
                        CAT(scores_quad16_, SUFFIX)(at, qs, keys + row, n, slot_stride,
                                                    head_dim);
                    }
                    for (int r = 0; r < 4; r++) softmax_row16(rows[r], length, scale);
                    for (int64_t c = 0; c < head_dim; c += 64) {
                        float *o[4];
                        for (int r = 0; r < 4; r++)
                            o[r] = out + (t * heads + h * groups + g + r) * head_dim + c;
                        CAT(weigh_quad16_, SUFFIX)(o, rows, values + c, table, length,
                                                   block_size, slot_stride);
                    }
                    quad_scored = 0;
                    g += 2; /* rows g + 2, g + 3 are done too */
                    continue;
                }
#endif
#ifdef __AVX512VL__
                if (g % 4 == 0 && g + 4 <= groups) {
                    float *rows[4] = {scores, scores + length, scores + 2 * length,
                                      scores + 3 * length};
                    const float *qs[4] = {q0, q1, q1 + head_dim, q1 + 2 * head_dim};
                    for (int64_t start = 0; start < length; start += block_size) {
                        const int64_t n = length - start < block_size ? length - start : block_size;
                        const int64_t row = table[start / block_size] * block_size * slot_stride;
                        float *at[4] = {rows[0] + start, rows[1] + start, rows[2] + start,
                                        rows[3] + start};
                        CAT(prefetch_ahead_, SUFFIX)(keys, values, table, start, length,
                                                     block_size, slot_stride, head_dim);
                        CAT(scores_quad_, SUFFIX)(at, qs, keys + row, n, slot_stride, head_dim);
                    }
                    for (int r = 0; r < 4; r++) softmax_row(rows[r], length, scale);
                    quad_scored = 1;
                    if (head_dim % 32 == 0) {
                        for (int64_t c = 0; c < head_dim; c += 32) {
                            v8 acc[16] = {0};
                            for (int64_t start = 0; start < length; start += block_size) {
                                const int64_t n =
                                    length - start < block_size ? length - start : block_size;
                                const int64_t row =
                                    table[start / block_size] * block_size * slot_stride;
                                float *w[4] = {rows[0] + start, rows[1] + start, rows[2] + start,
                                               rows[3] + start};
                                CAT(weigh_quad_32_, SUFFIX)(acc, w, values + row + c, n,
                                                            slot_stride);
                            }
                            for (int r = 0; r < 4; r++) {
                                float *o = out + (t * heads + h * groups + g + r) * head_dim + c;
                                for (int i = 0; i < 4; i++) store8(o + 8 * i, acc[4 * r + i]);
                            }
                        }
                        g += 2; /* rows g + 2, g + 3 are done too */
                        continue;
                    }
                } else if (g % 4 == 0) {
                    quad_scored = 0;
                }
#endif
                if (!quad_scored) {
                    s0 = scores;
                    s1 = scores + length;
                    for (int64_t start = 0; start < length; start += block_size) {
                        const int64_t n = length - start < block_size ? length - start : block_size;
                        const int64_t row = table[start / block_size] * block_size * slot_stride;
                        CAT(prefetch_ahead_, SUFFIX)(keys, values, table, start, length,
                                                     block_size, slot_stride, head_dim);
                        CAT(scores_pair_, SUFFIX)(s0 + start, s1 + start, q0, q1, keys + row, n,
                                                  slot_stride, head_dim);
                    }
                    softmax_row(s0, length, scale);
                    softmax_row(s1, length, scale);
                }
                float *o0 = out + (t * heads + h * groups + g) * head_dim;
                float *o1 = out + (t * heads + h * groups + g1) * head_dim;
                int64_t c = 0;
#ifdef __AVX512VL__
                for (; c + 64 <= head_dim; c += 64)
                    CAT(weigh_pair_columns_, SUFFIX)(o0 + c, o1 + c, 8, s0, s1, values + c, table,
                                                     length, block_size, slot_stride);
#endif
                for (; c + 32 <= head_dim; c += 32)
                    CAT(weigh_pair_columns_, SUFFIX)(o0 + c, o1 + c, 4, s0, s1, values + c, table,
                                                     length, block_size, slot_stride);
                for (; c < head_dim; c += 8)
                    CAT(weigh_pair_columns_, SUFFIX)(o0 + c, o1 + c, 1, s0, s1, values + c, table,
                                                     length, block_size, slot_stride);
            }
        }
    }
    free(scores);
    SUBNORMALS_AS_ZERO_END
    }
    return failed ? -1 : 0;
}

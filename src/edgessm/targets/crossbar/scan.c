/* The native kernels of the crossbar's hardware-aware training step (see hw.py): the S4D
   layer's recurrence forward and backward, and the elementwise converters and write noise
   around it.

   One channel h is one real block matrix M_h (K x K, K = n2 + 1, (out, in)):
       [ A  bcol ]      rows 0..n2-1: the state, row n2: the output
       [ c  d    ]
   For t = 0 .. L-1 (w_(-1) = 0), per batch row b:
       y_t = c . w_(t-1) + d v_t               (before its ADC, which the caller applies)
       n_t = A w_(t-1) + bcol v_t
       m   = ADC(n_t)     if adc: clip n/fs to [-1, 1], round half up to qa steps, times fs
       w_t = DAC(m)       if dac: clip to [-1, 1], round half up to qd steps
   With dither (no ADC then): w_t = floor(clip(n_t, -1, 1) * qd + U[h][t][row]) / qd, the
   offsets U in (0, 1) given per channel, token and state row, the same for every lane.
   The converters give the bits of the torch ops (floor(clamp(v / fs, -1, 1) * q + 0.5) / q * fs):
   the same operations in the same order, the division by the step q as an exact product (QDIV);
   only the order of the sums of the products differs. Straight-through gradients: d w_t / d n_t
   is 1 where no clip was active (|n/fs| <= 1 and |m| <= 1, as torch.clamp's gradient), else 0;
   stored as one byte.

   Forward: per token one blocked product M [w; v] (mv), each block of state rows through the
   converters right after its products; what the backward needs is kept: the masks and the
   states, as the DAC's int8 codes when there is a DAC of at most 8 bits (w = code / qd), else
   as floats. Backward: back over the tokens the state gradient (M^T [gn; gy], the same mv); the
   gradient of M as one tiled product G S^T per chunk of tokens (gmacc), or with pairs only at
   the entries of a block of complex pairs (gmpairs). With sparse (M exactly zero outside the
   complex-pair structure: a digital recurrence, or a block without write noise) both products
   skip the zeros (mvpairs): 3 products per state row instead of K, the same values.

   Layout (contiguous), batch innermost so that every inner loop runs over b in SIMD lanes:
   v, Y, gY, gv (H, L, B); W, codes, mask (H, L, n2, B); M, gM (H, K, K); fs (H, n2).
   Built without -ffast-math: the roundings must be IEEE. Channels are independent: with
   -fopenmp they are split over `threads` threads (each with its own scratch), and every channel
   is computed by one thread in the same order, so the results do not depend on `threads`. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#ifdef _OPENMP
#define PRAGMA(x) _Pragma(#x)
#define OMP_PARALLEL(n, clause) PRAGMA(omp parallel num_threads(n) clause)
#define OMP_FOR PRAGMA(omp for schedule(static))
#else
#define OMP_PARALLEL(n, clause)
#define OMP_FOR
#endif

/* B is a multiple of 8 (the caller pads): VL = 32 bytes of lanes, loads unaligned. */
typedef float vf32 __attribute__((vector_size(32), aligned(4)));
typedef double vf64 __attribute__((vector_size(32), aligned(8)));

/* k / q for an integer-valued k with |k| <= q, q an integer below 2^15, without a division:
   q0 = k * (1/q), its remainder k - q0 q (exact in one fma), q0 corrected by remainder / q. The
   result is the correctly rounded k / q (the IEEE division's bits): checked for every such k
   and q in float32 and float64 (the converters' steps are 2^(bits-1) - 1, bits <= 16);
   larger q divide. */
#define QDIV_f32(k, q, rq, fast) ((fast) ? fmaf(fmaf(-((k) * (rq)), (q), (k)), (rq), (k) * (rq)) : (k) / (q))
#define QDIV_f64(k, q, rq, fast) ((fast) ? fma(fma(-((k) * (rq)), (q), (k)), (rq), (k) * (rq)) : (k) / (q))
#define QFAST(q) ((q) < 32768)

/* The state converters (ADC then DAC, both steps below 2^15) on 32 lanes of float32, written
   with AVX2 / FMA: the operations of conv1's loop in the same order (min / max with the constant
   first are its clamps, NaN passing through; compares ordered: NaN false), about half the
   instructions the compiler makes of that loop (blends, mask widening). */
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VEC32_f32 1
static inline __attribute__((always_inline)) __m256i
conv8_f32(float *n, __m256 fo, __m256 fqa, __m256 rqa, __m256 fqd, __m256 rqd, __m256i *sat, __m256i *code)
{
    const __m256 one = _mm256_set1_ps(1.f), mone = _mm256_set1_ps(-1.f), half = _mm256_set1_ps(.5f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 x0 = _mm256_loadu_ps(n);
    __m256 x = _mm256_div_ps(x0, fo);
    *sat = _mm256_sub_epi32(*sat, _mm256_castps_si256(_mm256_cmp_ps(_mm256_and_ps(x0, absm), fo, _CMP_GT_OQ)));
    __m256 ok = _mm256_cmp_ps(_mm256_and_ps(x, absm), one, _CMP_LE_OQ);
    x = _mm256_max_ps(mone, _mm256_min_ps(one, x));
    __m256 k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, fqa), half));
    __m256 q0 = _mm256_mul_ps(k, rqa);
    x = _mm256_mul_ps(_mm256_fmadd_ps(_mm256_fnmadd_ps(q0, fqa, k), rqa, q0), fo);
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_and_ps(x, absm), one, _CMP_LE_OQ));
    x = _mm256_max_ps(mone, _mm256_min_ps(one, x));
    k = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(x, fqd), half));
    q0 = _mm256_mul_ps(k, rqd);
    _mm256_storeu_ps(n, _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, fqd, k), rqd, q0));
    *code = _mm256_cvttps_epi32(k);
    return _mm256_castps_si256(ok);
}

/* 4 x 8 int32 lanes (each in [-128, 127]) -> 32 int8 in lane order */
static inline __attribute__((always_inline)) __m256i pack32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline __attribute__((always_inline)) int
conv32_f32(float *n, uint8_t *m, int8_t *cd, float fo_, float fqa_, float rqa_, float fqd_, float rqd_)
{
    const __m256 fo = _mm256_set1_ps(fo_), fqa = _mm256_set1_ps(fqa_), rqa = _mm256_set1_ps(rqa_);
    const __m256 fqd = _mm256_set1_ps(fqd_), rqd = _mm256_set1_ps(rqd_);
    __m256i sat = _mm256_setzero_si256(), c0, c1, c2, c3;
    const __m256i o0 = conv8_f32(n, fo, fqa, rqa, fqd, rqd, &sat, &c0);
    const __m256i o1 = conv8_f32(n + 8, fo, fqa, rqa, fqd, rqd, &sat, &c1);
    const __m256i o2 = conv8_f32(n + 16, fo, fqa, rqa, fqd, rqd, &sat, &c2);
    const __m256i o3 = conv8_f32(n + 24, fo, fqa, rqa, fqd, rqd, &sat, &c3);
    _mm256_storeu_si256((__m256i *)m, _mm256_and_si256(pack32(o0, o1, o2, o3), _mm256_set1_epi8(1)));
    if (cd)
        _mm256_storeu_si256((__m256i *)cd, pack32(c0, c1, c2, c3));
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(sat), _mm256_extracti128_si256(sat, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    return _mm_cvtsi128_si32(t);
}
#else
#define VEC32_f32 0
static inline int conv32_f32(float *n, uint8_t *m, int8_t *cd, float fo, float fqa, float rqa, float fqd,
                             float rqd) { (void)n; (void)m; (void)cd; (void)fo; (void)fqa; (void)rqa;
                                          (void)fqd; (void)rqd; return 0; }
#endif
#define VEC32_f64 0
static inline int conv32_f64(double *n, uint8_t *m, int8_t *cd, double fo, double fqa, double rqa,
                             double fqd, double rqd) { (void)n; (void)m; (void)cd; (void)fo; (void)fqa;
                                                       (void)rqa; (void)fqd; (void)rqd; return 0; }

#define DEFINE_SCAN(T, SUF, FLOOR, ABS, VT)                                                           \
enum { VL_##SUF = 32 / sizeof(T) };                                                              \
/* out[r] = mat[r][n2] * lead + sum_{i < n2} mat[r][i] * w[i] for the rows r = r0 .. r0+R-1 and \
   the lane groups c0 .. c0+C-1 (VL lanes of b each): R x C independent accumulators, each w    \
   vector loaded once for R rows and each coefficient once for C lane groups; every output's    \
   products summed in the same order as one chain (lead term first, then i = 0 .. n2-1). */     \
static inline __attribute__((always_inline)) void                                               \
mvblk_##SUF(const T *mat, int K, int n2, int r0, const int R, const T *w, const T *lead, size_t B, \
            int c0, const int C, T *out_rows, T *out_last)                                      \
{                                                                                               \
    VT a[4][2], x[2];                                                                           \
    _Pragma("GCC unroll 4")                                                                     \
    for (int j = 0; j < R; j++) {                                                               \
        const T m = mat[(size_t)(r0 + j) * K + n2];                                             \
        _Pragma("GCC unroll 2")                                                                 \
        for (int q = 0; q < C; q++)                                                             \
            a[j][q] = m * *(const VT *)(lead + c0 + q * VL);                                    \
    }                                                                                           \
    for (int i = 0; i < n2; i++) {                                                              \
        _Pragma("GCC unroll 2")                                                                 \
        for (int q = 0; q < C; q++)                                                             \
            x[q] = *(const VT *)(w + (size_t)i * B + c0 + q * VL);                              \
        _Pragma("GCC unroll 4")                                                                 \
        for (int j = 0; j < R; j++) {                                                           \
            const T m = mat[(size_t)(r0 + j) * K + i];                                          \
            _Pragma("GCC unroll 2")                                                             \
            for (int q = 0; q < C; q++)                                                         \
                a[j][q] += m * x[q];                                                            \
        }                                                                                       \
    }                                                                                           \
    _Pragma("GCC unroll 4")                                                                     \
    for (int j = 0; j < R; j++) {                                                               \
        T *o = r0 + j < n2 ? out_rows + (size_t)(r0 + j) * B : out_last;                        \
        _Pragma("GCC unroll 2")                                                                 \
        for (int q = 0; q < C; q++)                                                             \
            *(VT *)(o + c0 + q * VL) = a[j][q];                                                 \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* the converters on rows r0 .. r0+R-1 (all < n2) and lanes c0 .. c0+nl-1 of the state n, in   \
   place, in the order of the torch ops (see the header); writes the straight-through mask and   \
   returns the ADC saturations. Run right after the block's products so that the divisions of    \
   one block overlap the products of the next. */                                                \
static inline __attribute__((always_inline)) int                                                \
conv1_##SUF(T *restrict n, uint8_t *restrict m, int8_t *restrict cd, int nl, T fo, const int adc, \
            const int dac, const int keep, const int fast, T fqa, T rqa, T fqd, T rqd, T hd)    \
{                                                                                               \
    int s = 0, b0 = 0;                                                                          \
    if (VEC32_##SUF && adc && dac && fast)      /* by hand in SIMD, 32 lanes at a time */        \
        for (; b0 + 32 <= nl; b0 += 32)                                                         \
            s += conv32_##SUF(n + b0, m + b0, keep ? cd + b0 : NULL, fo, fqa, rqa, fqd, rqd);   \
    for (int b = b0; b < nl; b++) {                                                             \
        T x = n[b];                                                                             \
        uint8_t ok = 1;                                                                         \
        if (adc) {                                                                              \
            const T x0 = x;                                                                     \
            x = x0 / fo;                                                                        \
            s += ABS(x0) > fo;              /* (|v| > fs and |u| <= 1 as compares of the value  */ \
            ok = ABS(x) <= 1;               /*  and its negation: the same, NaN false too)     */ \
            x = x > 1 ? 1 : x;                                                                  \
            x = x < -1 ? -1 : x;                                                                \
            x = QDIV_##SUF(FLOOR(x * fqa + (T)0.5), fqa, rqa, fast) * fo;                       \
        }                                                                                       \
        if (dac) {                                                                              \
            ok &= ABS(x) <= 1;                                                                  \
            x = x > 1 ? 1 : x;                                                                  \
            x = x < -1 ? -1 : x;                                                                \
            const T k = FLOOR(x * fqd + hd);                                                    \
            x = QDIV_##SUF(k, fqd, rqd, fast);                                                  \
            if (keep) cd[b] = (int8_t)k;                                                        \
        }                                                                                       \
        n[b] = x;                                                                               \
        m[b] = ok;                                                                              \
    }                                                                                           \
    return s;                                                                                   \
}                                                                                               \
                                                                                                \
static inline __attribute__((always_inline)) int                                                \
conv_##SUF(T *rows, uint8_t *mk, int8_t *code, const T *f, const T *dh, int r0, int R, size_t B, \
           int c0, int nl, int adc, int dac, T fqa, T fqd)                                      \
{                                                                                               \
    const T rqa = (T)1 / fqa, rqd = (T)1 / fqd;                                                 \
    int s = 0;                                                                                  \
    for (int j = 0; j < R; j++) {                                                               \
        T *n = rows + (size_t)(r0 + j) * B + c0;                                                \
        uint8_t *m = mk + (size_t)(r0 + j) * B + c0;                                            \
        int8_t *cd = code ? code + (size_t)(r0 + j) * B + c0 : NULL;                            \
        const T fo = f[r0 + j];                                                                 \
        const int fast = QFAST(fqa) && QFAST(fqd);                                              \
        if (dh && !adc && dac && cd && QFAST(fqd))      /* the dithered state rounding */       \
            s += conv1_##SUF(n, m, cd, nl, fo, 0, 1, 1, 1, fqa, rqa, fqd, rqd, dh[r0 + j]);     \
        else if (dh && !adc && dac && QFAST(fqd))                                               \
            s += conv1_##SUF(n, m, cd, nl, fo, 0, 1, 0, 1, fqa, rqa, fqd, rqd, dh[r0 + j]);     \
        else if (dh && !adc && dac)                                                             \
            s += conv1_##SUF(n, m, cd, nl, fo, 0, 1, cd != NULL, 0, fqa, rqa, fqd, rqd, dh[r0 + j]); \
        else if (adc && dac && cd && fast)                                                      \
            s += conv1_##SUF(n, m, cd, nl, fo, 1, 1, 1, 1, fqa, rqa, fqd, rqd, (T)0.5);         \
        else if (adc && dac && fast)                                                            \
            s += conv1_##SUF(n, m, cd, nl, fo, 1, 1, 0, 1, fqa, rqa, fqd, rqd, (T)0.5);         \
        else if (adc && !dac && fast)                                                           \
            s += conv1_##SUF(n, m, cd, nl, fo, 1, 0, 0, 1, fqa, rqa, fqd, rqd, (T)0.5);         \
        else if (adc || dac)          /* the rest: steps of more than 16 bits, digital state   \
                                         without ADC (calibration) */                           \
            s += conv1_##SUF(n, m, cd, nl, fo, adc, dac, cd != NULL, 0, fqa, rqa, fqd, rqd, (T)0.5); \
        else                                                                                    \
            memset(m, 1, nl);                                                                   \
    }                                                                                           \
    return s;                                                                                   \
}                                                                                               \
                                                                                                \
/* all K rows and all B lanes of the product above; with cv (the forward) each block of state  \
   rows goes through the converters right after its products. Returns the ADC saturations. */  \
typedef struct { uint8_t *mk; int8_t *code; const T *f; const T *dh; int adc, dac; T fqa, fqd; } cv_##SUF;   \
static inline __attribute__((always_inline)) int                                                \
mv_##SUF(const T *mat, int K, int n2, const T *w, const T *lead, int B, T *out_rows, T *out_last, \
         const cv_##SUF *cv)                                                                    \
{                                                                                               \
    int s = 0;                                                                                  \
    int r = 0;                                                                                  \
    for (; r < K; r += 4) {                                                                     \
        const int R = K - r < 4 ? K - r : 4;                                                    \
        for (int c = 0; c < B; c += 2 * VL) {                                                   \
            const int two = c + 2 * VL <= B;                                                    \
            if (R == 4) {                                                                       \
                if (two) mvblk_##SUF(mat, K, n2, r, 4, w, lead, (size_t)B, c, 2, out_rows, out_last); \
                else mvblk_##SUF(mat, K, n2, r, 4, w, lead, (size_t)B, c, 1, out_rows, out_last); \
            } else                                                                              \
                for (int j = r; j < K; j++) {                                                   \
                    if (two) mvblk_##SUF(mat, K, n2, j, 1, w, lead, (size_t)B, c, 2, out_rows, out_last); \
                    else mvblk_##SUF(mat, K, n2, j, 1, w, lead, (size_t)B, c, 1, out_rows, out_last); \
                }                                                                               \
        }                                                                                       \
        if (cv && r < n2)                                                                       \
            s += conv_##SUF(out_rows, cv->mk, cv->code, cv->f, cv->dh, r, (r + R <= n2 ? R : n2 - r), (size_t)B, 0, B, \
                            cv->adc, cv->dac, cv->fqa, cv->fqd);                                \
    }                                                                                           \
    return s;                                                                                   \
}                                                                                               \
                                                                                                \
/* mv for a block made of complex pairs only (hw.block_matrix, or its transpose): state row r   \
   has its lead coefficient and two more, at the columns p and n2/2 + p (p = r mod n2/2); every   \
   other entry of the state rows must be exactly 0. The same sums as mv (lead term first, then   \
   the two products in column order: the skipped products are 0 and leave each sum's value      \
   unchanged, without FMA contraction), the last row in full. */                               \
static inline __attribute__((always_inline)) int                                                \
mvpairs_##SUF(const T *mat, int K, int n2, const T *w, const T *lead, int B, T *out_rows,       \
              T *out_last, const cv_##SUF *cv)                                                  \
{                                                                                               \
    int s = 0;                                                                                  \
    const int n = n2 / 2;                                                                       \
    for (int r = 0; r < n2; r++) {                                                              \
        const int p = r < n ? r : r - n;                                                        \
        const T m0 = mat[(size_t)r * K + n2], m1 = mat[(size_t)r * K + p];                     \
        const T m2 = mat[(size_t)r * K + n + p];                                                \
        const T *restrict w1 = w + (size_t)p * B, *restrict w2 = w + (size_t)(n + p) * B;       \
        T *restrict o = out_rows + (size_t)r * B;                                               \
        for (int b = 0; b < B; b++) {                                                           \
            T a = m0 * lead[b];                                                                 \
            a += m1 * w1[b];                                                                    \
            a += m2 * w2[b];                                                                    \
            o[b] = a;                                                                           \
        }                                                                                       \
        if (cv)                                                                                 \
            s += conv_##SUF(out_rows, cv->mk, cv->code, cv->f, cv->dh, r, 1, (size_t)B, 0, B,   \
                            cv->adc, cv->dac, cv->fqa, cv->fqd);                                \
    }                                                                                           \
    for (int c = 0; c < B; c += 2 * VL) {                                                       \
        if (c + 2 * VL <= B) mvblk_##SUF(mat, K, n2, n2, 1, w, lead, (size_t)B, c, 2, out_rows, out_last); \
        else mvblk_##SUF(mat, K, n2, n2, 1, w, lead, (size_t)B, c, 1, out_rows, out_last);     \
    }                                                                                           \
    return s;                                                                                   \
}                                                                                               \
                                                                                                \
/* acc[o][i] (VL lanes each) += sum over the ns tokens s and the lane groups c of              \
   G[s][o][c..] * S[s][i][c..] for the rows o0 .. o0+R-1 and the columns i0 .. i0+C-1: a tile    \
   of R x C accumulators in registers, each G vector loaded once for C columns and each S vector \
   once for R rows. Every sum runs over (s, c) in the same order. */                             \
static inline __attribute__((always_inline)) void                                               \
gmtile_##SUF(T *acc, const T *G, const T *S, int ns, int K, size_t B, int o0, const int R,       \
             int i0, const int C)                                                               \
{                                                                                               \
    VT a[4][3], x[3];                                                                           \
    _Pragma("GCC unroll 4")                                                                     \
    for (int j = 0; j < R; j++)                                                                 \
        _Pragma("GCC unroll 3")                                                                 \
        for (int q = 0; q < C; q++)                                                             \
            a[j][q] = *(const VT *)(acc + ((size_t)(o0 + j) * K + i0 + q) * VL);                \
    const size_t slot = (size_t)K * B;                                                          \
    for (int s = 0; s < ns; s++) {                                                              \
        const T *g = G + s * slot + (size_t)o0 * B, *sv = S + s * slot + (size_t)i0 * B;        \
        for (size_t c = 0; c < B; c += VL) {                                                    \
            _Pragma("GCC unroll 3")                                                             \
            for (int q = 0; q < C; q++)                                                         \
                x[q] = *(const VT *)(sv + (size_t)q * B + c);                                   \
            _Pragma("GCC unroll 4")                                                             \
            for (int j = 0; j < R; j++) {                                                       \
                const VT gj = *(const VT *)(g + (size_t)j * B + c);                             \
                _Pragma("GCC unroll 3")                                                         \
                for (int q = 0; q < C; q++)                                                     \
                    a[j][q] += gj * x[q];                                                       \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    _Pragma("GCC unroll 4")                                                                     \
    for (int j = 0; j < R; j++)                                                                 \
        _Pragma("GCC unroll 3")                                                                 \
        for (int q = 0; q < C; q++)                                                             \
            *(VT *)(acc + ((size_t)(o0 + j) * K + i0 + q) * VL) = a[j][q];                      \
}                                                                                               \
                                                                                                \
/* Only the entries of a block matrix made of complex pairs (A: a 2 x 2 block on the states p   \
   and np + p for each pair p, b, c and d dense): per pair the 3 x 3 tile of the rows and        \
   columns {p, np + p, n2}, d (the corner) with the first pair only. */                          \
static inline __attribute__((always_inline)) void                                               \
pairtile_##SUF(T *acc, const T *G, const T *S, int ns, int K, size_t B, int r0, int r1,           \
               const int withd)                                                                 \
{                                                                                               \
    const int r[3] = {r0, r1, K - 1};                                                           \
    VT a[3][3];                                                                                 \
    _Pragma("GCC unroll 3")                                                                     \
    for (int j = 0; j < 3; j++)                                                                 \
        _Pragma("GCC unroll 3")                                                                 \
        for (int q = 0; q < 3; q++)                                                             \
            a[j][q] = *(const VT *)(acc + ((size_t)r[j] * K + r[q]) * VL);                      \
    const size_t slot = (size_t)K * B;                                                          \
    for (int s = 0; s < ns; s++) {                                                              \
        const T *g = G + s * slot, *sv = S + s * slot;                                          \
        for (size_t c = 0; c < B; c += VL) {                                                    \
            VT x[3], gj[3];                                                                     \
            _Pragma("GCC unroll 3")                                                             \
            for (int q = 0; q < 3; q++) {                                                       \
                x[q] = *(const VT *)(sv + (size_t)r[q] * B + c);                                \
                gj[q] = *(const VT *)(g + (size_t)r[q] * B + c);                                \
            }                                                                                   \
            _Pragma("GCC unroll 3")                                                             \
            for (int j = 0; j < 3; j++)                                                         \
                _Pragma("GCC unroll 3")                                                         \
                for (int q = 0; q < 3; q++)                                                     \
                    if (withd || j < 2 || q < 2)                                                \
                        a[j][q] += gj[j] * x[q];                                                \
        }                                                                                       \
    }                                                                                           \
    _Pragma("GCC unroll 3")                                                                     \
    for (int j = 0; j < 3; j++)                                                                 \
        _Pragma("GCC unroll 3")                                                                 \
        for (int q = 0; q < 3; q++)                                                             \
            *(VT *)(acc + ((size_t)r[j] * K + r[q]) * VL) = a[j][q];                            \
}                                                                                               \
                                                                                                \
static void gmpairs_##SUF(T *acc, const T *G, const T *S, int ns, int K, int B, int np)          \
{                                                                                               \
    pairtile_##SUF(acc, G, S, ns, K, (size_t)B, 0, np, 1);                                      \
    for (int p = 1; p < np; p++)                                                                \
        pairtile_##SUF(acc, G, S, ns, K, (size_t)B, p, np + p, 0);                              \
}                                                                                               \
                                                                                                \
/* the block-matrix gradient of ns tokens as one product: acc += G S^T over (token, lane) */    \
static void gmacc_##SUF(T *acc, const T *G, const T *S, int ns, int K, int B)                    \
{                                                                                               \
    for (int o = 0; o < K; o += 4) {                                                            \
        const int R = K - o < 4 ? K - o : 4;                                                    \
        for (int i = 0; i < K; i += 3) {                                                        \
            const int C = K - i < 3 ? K - i : 3;                                                \
            switch (R * 4 + C) {                                                                \
            case 4 * 4 + 3: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 4, i, 3); break;       \
            case 4 * 4 + 2: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 4, i, 2); break;       \
            case 4 * 4 + 1: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 4, i, 1); break;       \
            case 3 * 4 + 3: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 3, i, 3); break;       \
            case 3 * 4 + 2: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 3, i, 2); break;       \
            case 3 * 4 + 1: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 3, i, 1); break;       \
            case 2 * 4 + 3: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 2, i, 3); break;       \
            case 2 * 4 + 2: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 2, i, 2); break;       \
            case 2 * 4 + 1: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 2, i, 1); break;       \
            case 1 * 4 + 3: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 1, i, 3); break;       \
            case 1 * 4 + 2: gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 1, i, 2); break;       \
            default:        gmtile_##SUF(acc, G, S, ns, K, (size_t)B, o, 1, i, 1); break;       \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
int64_t hw_scan_fwd_##SUF(int B, int L, int H, int n2, const T *M, const T *V, const T *fs,      \
                          int adc, int dac, int qa, int qd, const T *dith, T *Y, T *W,            \
                          int8_t *codes, uint8_t *mask, int sparse, int threads)                 \
{                                                                                                \
    int64_t sat = 0;                                                                             \
    int fail = 0;                                                                                \
    const int K = n2 + 1;                                                                        \
    const size_t nb = (size_t)n2 * B;                                                            \
    OMP_PARALLEL(threads, reduction(+:sat, fail))                                                \
    {                                                                                            \
    T *zero = calloc(3 * nb, sizeof(T));          /* w_(-1) = 0, then two states in turn */     \
    uint8_t *mscr = malloc(nb);                   /* the mask when it is not kept */            \
    const int ok = zero && mscr;                                                                 \
    if (!ok) fail = 1;                                                                           \
    OMP_FOR                                                                                      \
    for (int h = 0; h < H; h++) {                                                                \
        if (!ok) continue;                                                                       \
        const T *mh = M + (size_t)h * K * K;                                                    \
        cv_##SUF cv = {NULL, NULL, fs + (size_t)h * n2, NULL, adc, dac, (T)qa, (T)qd};          \
        const T *w = zero;                                                                       \
        for (int t = 0; t < L; t++) {                                                            \
            const size_t tb = (size_t)h * L + t;                                                 \
            T *wo = W ? W + tb * nb : zero + (1 + (t & 1)) * nb;                                 \
            cv.mk = mask ? mask + tb * nb : mscr;                                                \
            cv.code = codes && dac ? codes + tb * nb : NULL;                                     \
            cv.dh = dith ? dith + tb * n2 : NULL;                                                \
            /* y and n = M [w_(t-1); v], blocked over rows and lanes (mv), each block of       \
               state rows through the converters as soon as it is computed */                   \
            sat += sparse ? mvpairs_##SUF(mh, K, n2, w, V + tb * B, B, wo, Y + tb * B, &cv)      \
                          : mv_##SUF(mh, K, n2, w, V + tb * B, B, wo, Y + tb * B, &cv);         \
            w = wo;                                                                              \
        }                                                                                        \
    }                                                                                            \
    free(zero); free(mscr);                                                                      \
    }                                                                                            \
    return fail ? -1 : sat;                                                                      \
}                                                                                                \
                                                                                                 \
/* gY: the gradient at Y; out: gv (H, L, B), gM (H, K, K) (overwritten). Per channel, going back \
   over the tokens, each token's [gn; gy] (G) and [w_(t-1); v_t] (S) are kept for a chunk of     \
   TC tokens; the block-matrix gradient gM = sum over (t, b) of G S^T is then one tiled product  \
   per chunk (gmacc), its partial sums in VL lanes, summed over the lanes at the end. pairs != 0 \
   (n2 even): only the entries of the complex-pair structure (gmpairs), the others 0. */        \
int hw_scan_bwd_##SUF(int B, int L, int H, int n2, const T *M, const T *V, const T *W,           \
                      const int8_t *codes, int qd, const uint8_t *mask, const T *gY, T *gV,      \
                      T *gM, int pairs, int sparse, int threads)                                 \
{                                                                                                \
    const int K = n2 + 1;                                                                        \
    const size_t slot = (size_t)K * B;                                                           \
    const T iq = (T)1 / (T)(qd > 0 ? qd : 1);                                                    \
    int fail = 0;                                                                                \
    OMP_PARALLEL(threads, reduction(+:fail))                                                     \
    {                                                                                            \
    T *gw = calloc((size_t)n2 * B, sizeof(T));      /* gradient at w_t */                        \
    T *Gc = malloc(sizeof(T) * TC_##SUF * slot);   /* [gn; gy] of a chunk of tokens */           \
    T *Sc = malloc(sizeof(T) * TC_##SUF * slot);   /* [w_(t-1); v_t] of the same tokens */       \
    T *acc = malloc(sizeof(T) * (size_t)K * K * VL);  /* gM partial sums per lane */            \
    T *mt = malloc(sizeof(T) * (size_t)K * K);      /* M transposed: (in, out) */               \
    const int ok = gw && Gc && Sc && acc && mt;                                                 \
    if (!ok) fail = 1;                                                                           \
    OMP_FOR                                                                                      \
    for (int h = 0; h < H; h++) {                                                                \
        if (!ok) continue;                                                                       \
        const T *mh = M + (size_t)h * K * K;                                                    \
        for (int o = 0; o < K; o++)                                                             \
            for (int i = 0; i < K; i++)                                                         \
                mt[(size_t)i * K + o] = mh[(size_t)o * K + i];                                  \
        memset(gw, 0, sizeof(T) * n2 * B);                                                      \
        memset(acc, 0, sizeof(T) * K * K * VL);                                                  \
        int ns = 0;                                                                              \
        for (int t = L - 1; t >= 0; t--) {                                                       \
            const size_t tb = (size_t)h * L + t;                                                 \
            const uint8_t *restrict mk = mask + tb * n2 * B;                                     \
            if (t >= PF) {      /* going back in memory: fetch the states and masks ahead */     \
                const char *pw = codes ? (const char *)(codes + (tb - PF) * n2 * B)              \
                                       : (const char *)(W + (tb - PF) * n2 * B);                 \
                const char *pm = (const char *)(mask + (tb - PF + 1) * n2 * B);                  \
                for (size_t k = 0; k < (codes ? 1 : sizeof(T)) * n2 * B; k += 64)                \
                    __builtin_prefetch(pw + k);                                                  \
                for (size_t k = 0; k < (size_t)n2 * B; k += 64)                                  \
                    __builtin_prefetch(pm + k);                                                  \
            }                                                                                    \
            T *restrict g = Gc + ns * slot, *restrict sv = Sc + ns * slot;                       \
            for (size_t k = 0; k < (size_t)n2 * B; k++)                                          \
                g[k] = (T)mk[k] * gw[k];                                                         \
            memcpy(g + (size_t)n2 * B, gY + tb * B, sizeof(T) * B);                              \
            if (t > 0 && codes) {   /* w = code / qd, rebuilt as code * (1 / qd) */              \
                const int8_t *restrict cd = codes + (tb - 1) * n2 * B;                           \
                for (size_t k = 0; k < (size_t)n2 * B; k++)                                      \
                    sv[k] = (T)cd[k] * iq;                                                       \
            } else if (t > 0)                                                                    \
                memcpy(sv, W + (tb - 1) * n2 * B, sizeof(T) * n2 * B);                           \
            else                                                                                 \
                memset(sv, 0, sizeof(T) * n2 * B);                                               \
            memcpy(sv + (size_t)n2 * B, V + tb * B, sizeof(T) * B);                              \
            /* [gw; gv] = M^T [gn; gy]: gradient at w_(t-1) (c gy + A^T gn) and at v_t          \
               (d gy + bcol . gn), the same blocked product over the transposed matrix */       \
            if (sparse) mvpairs_##SUF(mt, K, n2, g, g + (size_t)n2 * B, B, gw, gV + tb * B, NULL); \
            else mv_##SUF(mt, K, n2, g, g + (size_t)n2 * B, B, gw, gV + tb * B, NULL);           \
            if (++ns == TC_##SUF || t == 0) {                                                    \
                if (pairs) gmpairs_##SUF(acc, Gc, Sc, ns, K, B, n2 / 2);                         \
                else gmacc_##SUF(acc, Gc, Sc, ns, K, B);                                         \
                ns = 0;                                                                          \
            }                                                                                    \
        }                                                                                        \
        T *gmh = gM + (size_t)h * K * K;                                                         \
        for (int k = 0; k < K * K; k++) {                                                        \
            T s = 0;                                                                             \
            const T *a = acc + (size_t)k * VL;                                                   \
            for (int b = 0; b < VL; b++) s += a[b];                                              \
            gmh[k] = s;                                                                          \
        }                                                                                        \
    }                                                                                            \
    free(gw); free(Gc); free(Sc); free(acc); free(mt);                                          \
    }                                                                                            \
    return fail ? -1 : 0;                                                                        \
}

/* tokens per chunk of the block-matrix gradient (its G and S buffers stay in L1 / L2) */
#ifndef PF
#define PF 3
#endif
#ifndef TC_f32
#define TC_f32 8
#endif
#ifndef TC_f64
#define TC_f64 4
#endif
#define VL VL_f32
DEFINE_SCAN(float, f32, floorf, fabsf, vf32)
#undef VL
#define VL VL_f64
DEFINE_SCAN(double, f64, floor, fabs, vf64)
#undef VL

/* ---- the layouts and the elementwise converters around the scan ---------------------------------

   hw_to_hlb: x (B, L, H) -> out (H, L, Bp), the lanes b >= B zero; hw_to_blh: the way back (the
   first B lanes). Plain copies. */
/* one (rows x cols) slab transposed: dst[c * ds + r] = src[r * ss + c]; 8 x 8 tiles in AVX
   registers for float32, the rest element by element (plain copies: the same bits) */
#if VEC32_f32
static inline void tr8x8_f32(const float *s, size_t ss, float *d, size_t ds)
{
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + i * ss);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(d + i * ds, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
        _mm256_storeu_ps(d + (i + 4) * ds, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
    }
}
#endif
#define TRANSPOSE(T, SUF, src, ss, dst, ds, rows, cols)                                          \
    do {                                                                                         \
        int r0_ = 0;                                                                             \
        if (VEC32_##SUF && sizeof(T) == 4)                                                       \
            for (; r0_ + 8 <= (rows); r0_ += 8)                                                  \
                for (int c0_ = 0; c0_ + 8 <= (cols); c0_ += 8)                                   \
                    TR8_##SUF((src) + (size_t)r0_ * (ss) + c0_, (ss), (dst) + (size_t)c0_ * (ds) + r0_, (ds)); \
        for (int r_ = 0; r_ < (rows); r_++)                                                      \
            for (int c_ = r_ < r0_ ? (cols) - (cols) % 8 : 0; c_ < (cols); c_++)                \
                (dst)[(size_t)c_ * (ds) + r_] = (src)[(size_t)r_ * (ss) + c_];                   \
    } while (0)
#if VEC32_f32
#define TR8_f32 tr8x8_f32
#else
#define TR8_f32(s, ss, d, ds) ((void)0)
#endif
#define TR8_f64(s, ss, d, ds) ((void)0)

#define DEFINE_ELEM(T, SUF, FLOOR, ABS)                                                               \
void hw_to_hlb_##SUF(int B, int L, int H, int Bp, const T *x, T *out, int threads)               \
{                                                                                                \
    OMP_PARALLEL(threads, )                                                                      \
    {                                                                                            \
    OMP_FOR                                                                                      \
    for (int t = 0; t < L; t++) {     /* per token the slab (B x H) -> (H x B) */               \
        TRANSPOSE(T, SUF, x + (size_t)t * H, (size_t)L * H, out + (size_t)t * Bp, (size_t)L * Bp, B, H); \
        for (int h = 0; h < H; h++)                                                              \
            for (int b = B; b < Bp; b++)                                                         \
                out[((size_t)h * L + t) * Bp + b] = 0;                                           \
    }                                                                                            \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
void hw_to_blh_##SUF(int B, int L, int H, int Bp, const T *x, T *out, int threads)               \
{                                                                                                \
    OMP_PARALLEL(threads, )                                                                      \
    {                                                                                            \
    OMP_FOR                                                                                      \
    for (int t = 0; t < L; t++)       /* per token the slab (H x B) -> (B x H) */               \
        TRANSPOSE(T, SUF, x + (size_t)t * Bp, (size_t)L * Bp, out + (size_t)t * H, (size_t)L * H, H, B); \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* out[c] = max over the rows of |x[r][c]| (x: rows x cols); NaN if any is NaN (as torch.amax) */ \
void hw_amax_abs_##SUF(int64_t rows, int cols, const T *x, T *out)                               \
{                                                                                                \
    for (int c = 0; c < cols; c++) out[c] = 0;                                                   \
    int nan = 0;                                                                                 \
    for (int64_t r = 0; r < rows; r++) {                                                         \
        const T *restrict xr = x + r * cols;                                                     \
        for (int c = 0; c < cols; c++) {                                                         \
            const T a = xr[c] < 0 ? -xr[c] : xr[c];                                              \
            nan |= a != a;                                                                       \
            out[c] = a > out[c] ? a : out[c];                                                    \
        }                                                                                        \
    }                                                                                            \
    if (nan)                                                                                     \
        for (int64_t r = 0; r < rows; r++)                                                       \
            for (int c = 0; c < cols; c++)                                                       \
                if (x[r * cols + c] != x[r * cols + c]) out[c] = x[r * cols + c];                \
}                                                                                                \
                                                                                                 \
/* One converter, as the torch ops of hw.fake_converter in their order, on x (rows x cols):     \
       v = x / pre;  u = v / fs[c];  m = (u >= -1) & (u <= 1);                                   \
       out = floor(clamp(u, -1, 1) * q + 1/2) / q * fs[c] * post                                 \
   fs: one per column; pre, post: one value each, 1 where torch has no such op (a division or   \
   a product by 1 is exact, so the bits are those of the ops without it). Returns the count of  \
   |v| > fs (the ADC saturations). */                                                           \
static inline __attribute__((always_inline)) int                                                 \
conv_row_##SUF(int cols, const T *restrict xr, T pre, const T *restrict fs, T q, T rq, T post,    \
               T *restrict o, uint8_t *restrict m, const int fast)                                \
{                                                                                                \
    int s = 0;                                                                                   \
    for (int c = 0; c < cols; c++) {                                                             \
        const T f = fs[c];                                                                       \
        const T v = xr[c] / pre;                                                                 \
        s += ABS(v) > f;                                                                         \
        T u = v / f;                                                                             \
        m[c] = ABS(u) <= 1;                                                                      \
        u = u > 1 ? 1 : u;                                                                       \
        u = u < -1 ? -1 : u;                                                                     \
        o[c] = QDIV_##SUF(FLOOR(u * q + (T)0.5), q, rq, fast) * f * post;                        \
    }                                                                                            \
    return s;                                                                                    \
}                                                                                                \
                                                                                                 \
int64_t hw_conv_fwd_##SUF(int64_t rows, int cols, const T *x, T pre, const T *fs, T q, T post,   \
                          T *out, uint8_t *mask, int threads)                                    \
{                                                                                                \
    int64_t sat = 0;                                                                             \
    const T rq = (T)1 / q;                                                                       \
    const int fast = QFAST(q);                                                                   \
    OMP_PARALLEL(threads, reduction(+:sat))                                                      \
    {                                                                                            \
    OMP_FOR                                                                                      \
    for (int64_t r = 0; r < rows; r++) {                                                         \
        if (fast)                                                                                \
            sat += conv_row_##SUF(cols, x + r * cols, pre, fs, q, rq, post, out + r * cols,      \
                                  mask + r * cols, 1);                                           \
        else                                                                                     \
            sat += conv_row_##SUF(cols, x + r * cols, pre, fs, q, rq, post, out + r * cols,      \
                                  mask + r * cols, 0);                                           \
    }                                                                                            \
    }                                                                                            \
    return sat;                                                                                  \
}                                                                                                \
                                                                                                 \
/* its straight-through gradient in the order of torch's backward: ((g * post) * m) / pre */    \
void hw_conv_bwd_##SUF(int64_t n, const T *g, const uint8_t *mask, T pre, T post, T *out,        \
                       int threads)                                                              \
{                                                                                                \
    OMP_PARALLEL(threads, )                                                                      \
    {                                                                                            \
    OMP_FOR                                                                                      \
    for (int64_t k = 0; k < n; k++)                                                              \
        out[k] = g[k] * post * (T)mask[k] / pre;                                                 \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* The converters of an S4D layer's input and output joined to the scan's layout changes (the   \
   same bits as hw_to_hlb / hw_to_blh with hw_conv_fwd / hw_conv_bwd around them, one pass      \
   fewer each way):                                                                              \
   hw_in_hlb: out (H, L, Bp) = the input DAC of x (B, L, H), C(x / pre) with full scale 1 and q  \
   steps, the lanes b >= B zero; mask (H, L, Bp): its straight-through mask. Returns 0, or       \
   -1 when out of memory. */                                                                     \
int hw_in_hlb_##SUF(int B, int L, int H, int Bp, const T *x, T pre, T q, T *out, uint8_t *mask,  \
                    int threads)                                                                 \
{                                                                                                \
    const T rq = (T)1 / q;                                                                       \
    const int fast = QFAST(q);                                                                   \
    int fail = 0;                                                                                \
    OMP_PARALLEL(threads, reduction(+:fail))                                                     \
    {                                                                                            \
    T *one = malloc(sizeof(T) * 2 * (size_t)Bp), *row = one + Bp;                                \
    const int ok = one != NULL;                                                                  \
    if (!ok) fail = 1;                                                                           \
    for (int b = 0; ok && b < Bp; b++) one[b] = 1;                                               \
    OMP_FOR                                                                                      \
    for (int t = 0; t < L; t++) {                                                                \
        if (!ok) continue;                                                                       \
        TRANSPOSE(T, SUF, x + (size_t)t * H, (size_t)L * H, out + (size_t)t * Bp, (size_t)L * Bp, B, H); \
        for (int h = 0; h < H; h++) {                                                            \
            T *o = out + ((size_t)h * L + t) * Bp;                                               \
            uint8_t *m = mask + ((size_t)h * L + t) * Bp;                                        \
            if (fast) conv_row_##SUF(B, o, pre, one, q, rq, 1, row, m, 1);                       \
            else conv_row_##SUF(B, o, pre, one, q, rq, 1, row, m, 0);                            \
            memcpy(o, row, sizeof(T) * B);                                                       \
            for (int b = B; b < Bp; b++) { o[b] = 0; m[b] = 0; }                                 \
        }                                                                                        \
    }                                                                                            \
    free(one);                                                                                   \
    }                                                                                            \
    return fail ? -1 : 0;                                                                        \
}                                                                                                \
                                                                                                 \
/* hw_out_blh: the output ADC of the tokens t0 .. L-1 of Y (H, L, Bp) (its first B lanes):      \
   out (B, L - t0, H) = C(Y) * post with the full scale fs[h] of channel h and q steps; mask     \
   (H, L - t0, Bp) its straight-through mask; peak[h] = max |Y| of the channel over those tokens \
   (NaN if one is NaN), before the ADC. Y is overwritten (its converted values). Returns the     \
   ADC saturations, or -1 when out of memory. */                                                 \
int64_t hw_out_blh_##SUF(int B, int L, int H, int Bp, int t0, T *Y, const T *fs, T q, T post,   \
                         T *out, uint8_t *mask, T *peak, int threads)                            \
{                                                                                                \
    const T rq = (T)1 / q;                                                                       \
    const int fast = QFAST(q), Lo = L - t0;                                                      \
    int64_t sat = 0;                                                                             \
    int fail = 0;                                                                                \
    OMP_PARALLEL(threads, reduction(+:sat, fail))                                                \
    {                                                                                            \
    T *f = malloc(sizeof(T) * 2 * (size_t)Bp), *row = f + Bp;                                    \
    const int ok = f != NULL;                                                                    \
    if (!ok) fail = 1;                                                                           \
    OMP_FOR                                                                                      \
    for (int h = 0; h < H; h++) {                                                                \
        if (!ok) continue;                                                                       \
        T pk = 0;                                                                                \
        int nan = 0;                                                                             \
        for (int b = 0; b < B; b++) f[b] = fs[h];                                                \
        for (int t = t0; t < L; t++) {                                                           \
            T *y = Y + ((size_t)h * L + t) * Bp;                                                 \
            for (int b = 0; b < B; b++) {                                                        \
                const T a = ABS(y[b]);                                                           \
                nan |= a != a;                                                                   \
                pk = a > pk ? a : pk;                                                            \
            }                                                                                    \
            uint8_t *m = mask + ((size_t)h * Lo + t - t0) * Bp;                                  \
            sat += fast ? conv_row_##SUF(B, y, 1, f, q, rq, post, row, m, 1)                     \
                        : conv_row_##SUF(B, y, 1, f, q, rq, post, row, m, 0);                    \
            memcpy(y, row, sizeof(T) * B);                                                       \
        }                                                                                        \
        peak[h] = nan ? (T)NAN : pk;                                                             \
    }                                                                                            \
    free(f);                                                                                     \
    OMP_FOR                                                                                      \
    for (int t = t0; t < L; t++)                                                                 \
        TRANSPOSE(T, SUF, Y + (size_t)t * Bp, (size_t)L * Bp, out + (size_t)(t - t0) * H, (size_t)Lo * H, H, B); \
    }                                                                                            \
    return fail ? -1 : sat;                                                                      \
}                                                                                                \
                                                                                                 \
/* hw_gout_hlb: the gradient at Y (H, L, Bp) from g (B, L - t0, H) at the output: the ADC's     \
   straight-through gradient ((g * post) * m) / 1 for the tokens t0 .. L-1, 0 before them and   \
   in the lanes b >= B. */                                                                       \
void hw_gout_hlb_##SUF(int B, int L, int H, int Bp, int t0, const T *g, const uint8_t *mask,     \
                       T post, T *out, int threads)                                              \
{                                                                                                \
    const int Lo = L - t0;                                                                       \
    OMP_PARALLEL(threads, )                                                                      \
    {                                                                                            \
    OMP_FOR                                                                                      \
    for (int t = 0; t < L; t++) {                                                                \
        if (t < t0) {                                                                            \
            for (int h = 0; h < H; h++) memset(out + ((size_t)h * L + t) * Bp, 0, sizeof(T) * Bp); \
            continue;                                                                            \
        }                                                                                        \
        TRANSPOSE(T, SUF, g + (size_t)(t - t0) * H, (size_t)Lo * H, out + (size_t)t * Bp, (size_t)L * Bp, B, H); \
        for (int h = 0; h < H; h++) {                                                            \
            T *o = out + ((size_t)h * L + t) * Bp;                                               \
            const uint8_t *m = mask + ((size_t)h * Lo + t - t0) * Bp;                            \
            for (int b = 0; b < B; b++) o[b] = o[b] * post * (T)m[b] / (T)1;                     \
            for (int b = B; b < Bp; b++) o[b] = 0;                                               \
        }                                                                                        \
    }                                                                                            \
    }                                                                                            \
}                                                                                                \
                                                                                                 \
/* hw_gin_blh: the gradient at x (B, L, H) from gV (H, L, Bp) at the DAC's output: its          \
   straight-through gradient ((gV * 1) * m) / pre, the first B lanes. Returns 0, or -1 when      \
   out of memory. */                                                                             \
int hw_gin_blh_##SUF(int B, int L, int H, int Bp, const T *gV, const uint8_t *mask, T pre, T *out, \
                     int threads)                                                                \
{                                                                                                \
    int fail = 0;                                                                                \
    OMP_PARALLEL(threads, reduction(+:fail))                                                     \
    {                                                                                            \
    T *slab = malloc(sizeof(T) * (size_t)H * Bp);                                                \
    const int ok = slab != NULL;                                                                 \
    if (!ok) fail = 1;                                                                           \
    OMP_FOR                                                                                      \
    for (int t = 0; t < L; t++) {                                                                \
        if (!ok) continue;                                                                       \
        for (int h = 0; h < H; h++) {                                                            \
            const T *g = gV + ((size_t)h * L + t) * Bp;                                          \
            const uint8_t *m = mask + ((size_t)h * L + t) * Bp;                                  \
            T *o = slab + (size_t)h * Bp;                                                        \
            for (int b = 0; b < B; b++) o[b] = g[b] * (T)1 * (T)m[b] / pre;                      \
        }                                                                                        \
        TRANSPOSE(T, SUF, slab, (size_t)Bp, out + (size_t)t * H, (size_t)L * H, H, B);          \
    }                                                                                            \
    free(slab);                                                                                  \
    }                                                                                            \
    return fail ? -1 : 0;                                                                        \
}

DEFINE_ELEM(float, f32, floorf, fabsf)
DEFINE_ELEM(double, f64, floor, fabs)

/* ---- write noise ----------------------------------------------------------------------------------
   The programming error of a differential pair per weight q (in [-1, 1]), as the torch ops of
   hw.write_noise without write-verify, in their order: gp = gmin + max(q, 0) win, gm = gmin -
   min(q, 0) win, sigma(g) = max(s0 + slope (g - gmin), 0) kf, e = (sigma(gp) ep - sigma(gm) em)
   / win for the normal draws ep, em; acc = acc + e (acc: the sum over the pairs so far). */
#define DEFINE_NOISE(T, SUF)                                                                     \
void hw_write_noise_##SUF(int64_t n, const T *q, const T *ep, const T *em, T gmin, T win, T s0,  \
                          T slope, T kf, T *acc)                                                 \
{                                                                                                \
    for (int64_t k = 0; k < n; k++) {                                                            \
        const T qk = q[k];                                                                       \
        const T qp = qk < 0 ? 0 : qk, qm = qk > 0 ? 0 : qk;                                      \
        const T gp = gmin + qp * win, gm = gmin - qm * win;                                      \
        T sp = s0 + slope * (gp - gmin), sm = s0 + slope * (gm - gmin);                          \
        sp = (sp < 0 ? 0 : sp) * kf;                                                             \
        sm = (sm < 0 ? 0 : sm) * kf;                                                             \
        acc[k] = acc[k] + (sp * ep[k] - sm * em[k]) / win;                                       \
    }                                                                                            \
}

DEFINE_NOISE(float, f32)
DEFINE_NOISE(double, f64)

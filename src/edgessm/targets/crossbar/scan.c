/* The hardware-aware S4D layer of the crossbar (see hw.py), forward and backward.

   One channel h is one real block matrix M_h (K x K, K = n2 + 1, (out, in)):
       [ A  bcol ]      rows 0..n2-1: the state, row n2: the output
       [ c  d    ]
   For t = 0 .. L-1 (w_(-1) = 0), per batch row b:
       y_t = c . w_(t-1) + d v_t               (before its ADC, which the caller applies)
       n_t = A w_(t-1) + bcol v_t
       m   = ADC(n_t)     if adc: clip n/fs to [-1, 1], round half up to qa steps, times fs
       w_t = DAC(m)       if dac: clip to [-1, 1], round half up to qd steps
   The converters are the same float operations in the same order as the torch ones
   (floor(clamp(v / fs, -1, 1) * q + 0.5) / q * fs); only the order of the sums of the
   products differs. Straight-through gradients: d w_t / d n_t is 1 where no clip was active
   (|n/fs| <= 1 and |m| <= 1, as torch.clamp's gradient), else 0; stored as one byte.

   Layout (contiguous), batch innermost so that every inner loop runs over b in SIMD lanes:
   v, Y, gY, gv (H, L, B); W, mask (H, L, n2, B); M, gM (H, K, K); fs (H, n2).
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

#define DEFINE_SCAN(T, SUF, FLOOR, VT)                                                           \
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
/* all K rows and all B lanes of the product above */                                           \
static void mv_##SUF(const T *mat, int K, int n2, const T *w, const T *lead, int B, T *out_rows, T *out_last) \
{                                                                                               \
    for (int c = 0; c < B; c += 2 * VL) {                                                       \
        const int two = c + 2 * VL <= B;                                                        \
        int r = 0;                                                                              \
        for (; r + 4 <= K; r += 4) {                                                            \
            if (two) mvblk_##SUF(mat, K, n2, r, 4, w, lead, (size_t)B, c, 2, out_rows, out_last); \
            else mvblk_##SUF(mat, K, n2, r, 4, w, lead, (size_t)B, c, 1, out_rows, out_last);   \
        }                                                                                       \
        for (; r < K; r++) {                                                                    \
            if (two) mvblk_##SUF(mat, K, n2, r, 1, w, lead, (size_t)B, c, 2, out_rows, out_last); \
            else mvblk_##SUF(mat, K, n2, r, 1, w, lead, (size_t)B, c, 1, out_rows, out_last);   \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
int64_t hw_scan_fwd_##SUF(int B, int L, int H, int n2, const T *M, const T *V, const T *fs,      \
                          int adc, int dac, int qa, int qd, T *Y, T *W, uint8_t *mask,           \
                          int threads)                                                           \
{                                                                                                \
    int64_t sat = 0;                                                                             \
    int fail = 0;                                                                                \
    const int K = n2 + 1;                                                                        \
    const T fqa = (T)qa, fqd = (T)qd;                                                            \
    OMP_PARALLEL(threads, reduction(+:sat, fail))                                                \
    {                                                                                            \
    T *zero = calloc((size_t)n2 * B, sizeof(T));                                                 \
    if (!zero) fail = 1;                                                                         \
    OMP_FOR                                                                                      \
    for (int h = 0; h < H; h++) {                                                                \
        if (!zero) continue;                                                                     \
        const T *mh = M + (size_t)h * K * K, *f = fs + (size_t)h * n2;                           \
        const T *w = zero;                                                                       \
        for (int t = 0; t < L; t++) {                                                            \
            const size_t tb = (size_t)h * L + t;                                                 \
            const T *restrict v = V + tb * B;                                                    \
            T *restrict y = Y + tb * B;                                                          \
            T *wo = W + tb * n2 * B;                                                             \
            uint8_t *mk = mask + tb * n2 * B;                                                    \
            /* y and n = M [w_(t-1); v], blocked over rows and lanes (mv) */                    \
            mv_##SUF(mh, K, n2, w, v, B, wo, y);                                                \
            for (int o = 0; o < n2; o++) {                                                       \
                T *restrict n = wo + (size_t)o * B;                                              \
                uint8_t *restrict m = mk + (size_t)o * B;                                        \
                const T fo = f[o];                                                               \
                int s = 0;                                                                       \
                if (adc) {                                                                       \
                    for (int b = 0; b < B; b++) {                                                \
                        const T x0 = n[b];                                                       \
                        T x = x0 / fo;                                                           \
                        s += (x0 > fo) | (x0 < -fo);                                             \
                        m[b] = (x <= 1) & (x >= -1);                                             \
                        x = x > 1 ? 1 : x;                                                       \
                        x = x < -1 ? -1 : x;                                                     \
                        n[b] = FLOOR(x * fqa + (T)0.5) / fqa * fo;                               \
                    }                                                                            \
                } else                                                                           \
                    memset(m, 1, B);                                                             \
                if (dac)                                                                         \
                    for (int b = 0; b < B; b++) {                                                \
                        const T x0 = n[b];                                                       \
                        m[b] &= (x0 <= 1) & (x0 >= -1);                                          \
                        T x = x0 > 1 ? 1 : x0;                                                   \
                        x = x < -1 ? -1 : x;                                                     \
                        n[b] = FLOOR(x * fqd + (T)0.5) / fqd;                                    \
                    }                                                                            \
                sat += s;                                                                        \
            }                                                                                    \
            w = wo;                                                                              \
        }                                                                                        \
    }                                                                                            \
    free(zero);                                                                                  \
    }                                                                                            \
    return fail ? -1 : sat;                                                                      \
}                                                                                                \
                                                                                                 \
/* gY: the gradient at Y; out: gv (H, L, B), gM (H, K, K) (overwritten). Per channel the        \
   K x K x B partial sums run in SIMD lanes over b and are summed over b at the end. */         \
int hw_scan_bwd_##SUF(int B, int L, int H, int n2, const T *M, const T *V, const T *W,           \
                      const uint8_t *mask, const T *gY, T *gV, T *gM, int threads)               \
{                                                                                                \
    const int K = n2 + 1;                                                                        \
    int fail = 0;                                                                                \
    OMP_PARALLEL(threads, reduction(+:fail))                                                     \
    {                                                                                            \
    T *gw = calloc((size_t)n2 * B, sizeof(T));      /* gradient at w_t */                        \
    T *gn = calloc((size_t)n2 * B, sizeof(T));      /* gradient at n_t */                        \
    T *acc = calloc((size_t)K * K * B, sizeof(T));  /* partial sums of gM per lane */            \
    T *zero = calloc((size_t)n2 * B, sizeof(T));                                                \
    T *mt = malloc(sizeof(T) * (size_t)K * K);      /* M transposed: (in, out) */               \
    const int ok = gw && gn && acc && zero && mt;                                               \
    if (!ok) fail = 1;                                                                           \
    OMP_FOR                                                                                      \
    for (int h = 0; h < H; h++) {                                                                \
        if (!ok) continue;                                                                       \
        const T *mh = M + (size_t)h * K * K;                                                    \
        for (int o = 0; o < K; o++)                                                             \
            for (int i = 0; i < K; i++)                                                         \
                mt[(size_t)i * K + o] = mh[(size_t)o * K + i];                                  \
        memset(gw, 0, sizeof(T) * n2 * B);                                                      \
        memset(acc, 0, sizeof(T) * K * K * B);                                                   \
        for (int t = L - 1; t >= 0; t--) {                                                       \
            const size_t tb = (size_t)h * L + t;                                                 \
            const uint8_t *restrict mk = mask + tb * n2 * B;                                     \
            const T *restrict v = V + tb * B;                                                    \
            const T *restrict gy = gY + tb * B;                                                  \
            T *restrict gv = gV + tb * B;                                                        \
            const T *wp = t > 0 ? W + (tb - 1) * n2 * B : zero;      /* w_(t-1) */               \
            for (size_t k = 0; k < (size_t)n2 * B; k++)                                          \
                gn[k] = (T)mk[k] * gw[k];                                                        \
            for (int c = 0; c < B; c += VL) {                                                    \
                const VT gyc = *(const VT *)(gy + c), vc = *(const VT *)(v + c);                 \
                /* gM partial sums: rows o (state) and n2 (output) times [w_(t-1); v_t] */       \
                for (int o = 0; o <= n2; o++) {                                                  \
                    const VT g = o < n2 ? *(const VT *)(gn + (size_t)o * B + c) : gyc;           \
                    T *ar = acc + (size_t)o * K * B + c;                                         \
                    for (int i = 0; i < n2; i++)                                                 \
                        *(VT *)(ar + (size_t)i * B) += g * *(const VT *)(wp + (size_t)i * B + c); \
                    *(VT *)(ar + (size_t)n2 * B) += g * vc;                                      \
                }                                                                                \
            }                                                                                    \
            /* [gw; gv] = M^T [gn; gy]: gradient at w_(t-1) (c gy + A^T gn) and at v_t          \
               (d gy + bcol . gn), the same blocked product over the transposed matrix */       \
            mv_##SUF(mt, K, n2, gn, gy, B, gw, gv);                                             \
        }                                                                                        \
        T *gmh = gM + (size_t)h * K * K;                                                         \
        for (int k = 0; k < K * K; k++) {                                                        \
            T s = 0;                                                                             \
            const T *a = acc + (size_t)k * B;                                                    \
            for (int b = 0; b < B; b++) s += a[b];                                               \
            gmh[k] = s;                                                                          \
        }                                                                                        \
    }                                                                                            \
    free(gw); free(gn); free(acc); free(zero); free(mt);                                        \
    }                                                                                            \
    return fail ? -1 : 0;                                                                        \
}

#define VL VL_f32
DEFINE_SCAN(float, f32, floorf, vf32)
#undef VL
#define VL VL_f64
DEFINE_SCAN(double, f64, floor, vf64)
#undef VL

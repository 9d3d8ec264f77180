/* The FFT-domain products of the S4D layer's causal FFT convolution (ssm/fftconv.py).
 *
 * Spectra are interleaved complex (re, im) pairs, rows of F bins: U^ and G^ are (B, H, F),
 * K^ is (H, F) and broadcast over the batch.
 *   fc_mul_fwd:  Y^[b,h] = U^[b,h] K^[h]
 *   fc_mul_bwd:  dK^[h] = sum_b G^[b,h] conj(U^[b,h])   and   G^[b,h] <- G^[b,h] conj(K^[h])
 * in one pass over G^ and U^. The batch sum runs over b in order for every bin, whatever the
 * number of threads: the threads split channels and blocks of bins, never the batch, so the
 * result does not depend on the thread count.
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define FB 256          /* bins per block of the backward: the dK^ block stays in L1 */

#define DEFINE(T, SUF)                                                                       \
void fc_mul_fwd_##SUF(int64_t B, int64_t H, int64_t F, const T *restrict U,                  \
                      const T *restrict K, T *restrict Y, int nthreads)                      \
{                                                                                            \
    int64_t rows = B * H;                                                                    \
    (void)nthreads;                                                                          \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                       \
    for (int64_t r = 0; r < rows; r++) {                                                     \
        const T *u = U + 2 * r * F, *k = K + 2 * (r % H) * F;                                \
        T *y = Y + 2 * r * F;                                                                \
        for (int64_t f = 0; f < F; f++) {                                                    \
            T ur = u[2 * f], ui = u[2 * f + 1], kr = k[2 * f], ki = k[2 * f + 1];            \
            y[2 * f] = ur * kr - ui * ki;                                                    \
            y[2 * f + 1] = ur * ki + ui * kr;                                                \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
                                                                                             \
void fc_mul_bwd_##SUF(int64_t B, int64_t H, int64_t F, T *restrict G, const T *restrict U,   \
                      const T *restrict K, T *restrict dK, int need_du, int need_dk,         \
                      int nthreads)                                                          \
{                                                                                            \
    int64_t nblk = (F + FB - 1) / FB, tasks = H * nblk;                                      \
    (void)nthreads;                                                                          \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                       \
    for (int64_t t = 0; t < tasks; t++) {                                                    \
        int64_t h = t / nblk, f0 = (t % nblk) * FB;                                          \
        int64_t nf = F - f0 < FB ? F - f0 : FB;                                              \
        T acc[2 * FB];                                                                       \
        const T *k = K + 2 * (h * F + f0);                                                   \
        memset(acc, 0, sizeof acc);                                                          \
        for (int64_t b = 0; b < B; b++) {                                                    \
            T *g = G + 2 * ((b * H + h) * F + f0);                                           \
            const T *u = U + 2 * ((b * H + h) * F + f0);                                     \
            for (int64_t f = 0; f < nf; f++) {      /* the flags are hoisted (unswitched) */ \
                T gr = g[2 * f], gi = g[2 * f + 1];                                          \
                if (need_dk) {                                                               \
                    T ur = u[2 * f], ui = u[2 * f + 1];                                      \
                    acc[2 * f] += gr * ur + gi * ui;                                         \
                    acc[2 * f + 1] += gi * ur - gr * ui;                                     \
                }                                                                            \
                if (need_du) {                                                               \
                    T kr = k[2 * f], ki = k[2 * f + 1];                                      \
                    g[2 * f] = gr * kr + gi * ki;                                            \
                    g[2 * f + 1] = gi * kr - gr * ki;                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        if (need_dk)                                                                         \
            memcpy(dK + 2 * (h * F + f0), acc, (size_t)(2 * nf) * sizeof(T));                \
    }                                                                                        \
}

DEFINE(float, f32)
DEFINE(double, f64)

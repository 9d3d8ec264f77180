/* The FFT-domain products of the S4D layer's causal FFT convolution (ssm/fftconv.py).
 *
 * Spectra are interleaved complex (re, im) pairs, rows of F bins: U^ and G^ are (B, H, F),
 * K^ is (H, F) and broadcast over the batch.
 *   fc_mul_fwd:  Y^[b,h] = U^[b,h] K^[h]                (in place when Y is U)
 *   fc_mul_bwd:  dK^[h] = sum_b G^[b,h] conj(U^[b,h])   and   G^[b,h] <- G^[b,h] conj(K^[h])
 * in one pass over G^ and U^. The batch sum runs over b in order for every bin, whatever the
 * number of threads: the threads split channels and blocks of bins, never the batch, so the
 * result does not depend on the thread count.
 *
 * The last output alone (a last-token readout's last layer), in the time domain, with the
 * kernel reversed, R[h, j] = K[h, L-1-j]:
 *   fc_last_fwd:  y[b,h] = sum_j u[b,h,j] R[h,j]                       (one pass over u)
 *   fc_last_bwd:  du[b,h,j] = g[b,h] R[h,j];   dR[h,j] = sum_b g[b,h] u[b,h,j]  (b in order)
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define FB 256          /* bins per block of the backward: the dK^ block stays in L1 */

#define DEFINE(T, SUF)                                                                       \
void fc_mul_fwd_##SUF(int64_t B, int64_t H, int64_t F, const T *U,                           \
                      const T *restrict K, T *Y, int nthreads)     /* Y may be U */          \
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

#define DEFINE_LAST(T, SUF)                                                                  \
void fc_last_fwd_##SUF(int64_t B, int64_t H, int64_t L, const T *restrict u,                 \
                       const T *restrict R, T *restrict y, int nthreads)                     \
{                                                                                            \
    (void)nthreads;                                                                          \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                       \
    for (int64_t r = 0; r < B * H; r++) {                                                    \
        const T *x = u + r * L, *k = R + (r % H) * L;                                        \
        T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s = 0;                                          \
        int64_t j = 0;                                                                       \
        for (; j + 8 <= L; j += 8)                                                           \
            for (int i = 0; i < 8; i++) acc[i] += x[j + i] * k[j + i];                       \
        for (; j < L; j++) s += x[j] * k[j];                                                 \
        y[r] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + s; \
    }                                                                                        \
}                                                                                            \
                                                                                             \
void fc_last_bwd_##SUF(int64_t B, int64_t H, int64_t L, const T *restrict g,                 \
                       const T *restrict u, const T *restrict R, T *restrict du,             \
                       T *restrict dR, int nthreads)                                         \
{                                                                                            \
    (void)nthreads;                                                                          \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                       \
    for (int64_t h = 0; h < H; h++) {                                                        \
        const T *k = R + h * L;                                                              \
        T *dk = dR ? dR + h * L : 0;                                                         \
        if (dk) memset(dk, 0, (size_t)L * sizeof(T));                                        \
        for (int64_t b = 0; b < B; b++) {                                                    \
            const T gb = g[b * H + h];                                                       \
            const T *x = u + (b * H + h) * L;                                                \
            if (du) { T *o = du + (b * H + h) * L; for (int64_t j = 0; j < L; j++) o[j] = gb * k[j]; } \
            if (dk) for (int64_t j = 0; j < L; j++) dk[j] += gb * x[j];                      \
        }                                                                                    \
    }                                                                                        \
}

DEFINE(float, f32)
DEFINE(double, f64)
DEFINE_LAST(float, f32)
DEFINE_LAST(double, f64)

/* The S4D block's tail on channel-major activations (B, C, L), contiguous, fused into one pass
   per job, forward and backward (see fused.py):

     act_drop:  y = dropout(act(x))                                  (after the convolution)
     mix:       y = dropout(f(m gain + bias)) [+ res]                (after the mixing product)
                f = GLU over the channels (m has 2H rows: a | gate, y = a * sigmoid(gate))
                    or the activation (m has H rows); gain per channel (NULL: 1)
     chstat:    mean and biased variance per channel c of m over (b, l)  (batch norm statistics)
     affine2:   y = A_c y + B_c x + C_c in place, per channel         (batch norm backward)
     ln:        LayerNorm over the channel axis 1, per (b, l) column

   act: 0 none, 1 ReLU, 2 GELU (exact: x Phi(x)).

   Dropout is counter-based: element l of row r (r = b * C + c of the output) is kept when the
   24 high bits of hash(seed, r, l) are >= thr (thr = round(p 2^24)), and scaled by 1 / (1 - p).
   With DROP_TIED set in thr, the bits are hash(seed, r) for every l: one draw per row, so a
   channel of a sequence is kept or dropped as a whole (tied dropout).
   The mask is a function of (seed, r, l) only: the same for every thread count, and the backward
   recomputes it (nothing stored).

   Operands read are rows of L values with a row stride (ld*: uniformly strided rows, e.g. the
   first L columns of a wider buffer); outputs are contiguous.

   Threads: OpenMP over rows (act_drop, mix) or over (b, chunk of l) items (ln), static; every
   output and every partial sum is computed by one thread in a fixed order, the partial sums
   added in a fixed order after the parallel loop, so no result depends on `nt`.

   float: exp, sigmoid and GELU are written out so the compiler vectorizes them (AVX2): exp with
   a Cephes polynomial (about 1 ulp), Phi by Abramowitz-Stegun 7.1.26 as torch's CPU erf (absolute
   error <= 1.5e-7 of erf). double: the C library's exp and erfc (for gradient checks). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#define PRAGMA(x) _Pragma(#x)
#define OMP_PAR_FOR(n) PRAGMA(omp parallel for num_threads(n) schedule(static))
#else
#define OMP_PAR_FOR(n)
#endif

#define LN_CHUNK 128     /* columns of one LayerNorm work item: H x 128 values stay in L2 */

/* ---- dropout mask ------------------------------------------------------------------------ */
static inline uint64_t splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint32_t mix32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; x ^= x >> 16;
    return x;
}

/* Two 32-bit keys per row, k1 odd; the element's bits are a 32-bit bijective mix of
   l k1 + k0: distinct positions of a row give distinct inputs, and two rows' input sequences
   are no shifts of each other (their multipliers differ), so rows do not repeat each other.
   Tied: k1 = 0, the same bits at every position of the row. */
#define ROW_KEYS(seed, r, tied, k0, k1) \
    uint64_t u_ = splitmix64((seed) + splitmix64((uint64_t)(r))); \
    uint32_t k0 = (uint32_t)u_, k1 = (tied) ? 0u : (uint32_t)(u_ >> 32) | 1u
#define DROP_BITS(k0, k1, l) ((int32_t)(mix32((uint32_t)(l) * (k1) + (k0)) >> 8))
/* thr's flag for tied dropout (thr itself is at most 2^24); DROP_SPEC splits it off */
#define DROP_TIED (1 << 30)
#define DROP_SPEC(thr, tied) const int tied = ((thr) & DROP_TIED) != 0; thr &= ~DROP_TIED

void fb_dropout_mask(int64_t rows, int64_t L, uint64_t seed, int32_t thr, uint8_t *mask, int nt)
{
    DROP_SPEC(thr, tied);
    OMP_PAR_FOR(nt)
    for (int64_t r = 0; r < rows; r++) {
        ROW_KEYS(seed, r, tied, k0, k1);
        uint8_t *mr = mask + r * L;
        for (int32_t l = 0; l < (int32_t)L; l++) mr[l] = DROP_BITS(k0, k1, l) >= thr;
    }
}

/* ---- float math, vectorizable -------------------------------------------------------------- */
static inline float exp_f32(float x)
{
    x = x < -87.0f ? -87.0f : x;            /* NaN passes (compares false) */
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return y * s;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

/* Phi(x) (the normal CDF) and, in *pdf, phi(x) */
static inline float phi_f32(float x, float *pdf)
{
    float z = fabsf(x) * 0.70710678118654752f;
    float t = 1.0f / (1.0f + 0.3275911f * z);
    float e = exp_f32(-z * z);
    float q = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t
               + 0.254829592f) * t * e * 0.5f;              /* Phi(-|x|) */
    *pdf = 0.39894228040143268f * e;
    return x < 0.0f ? q : 1.0f - q;
}

static inline float gelu_f32(float x) { float d; return x * phi_f32(x, &d); }
static inline float gelu_grad_f32(float x) { float d; float c = phi_f32(x, &d); return c + x * d; }

static inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double gelu_f64(double x) { return x * 0.5 * erfc(-x * 0.70710678118654752); }
static inline double gelu_grad_f64(double x)
{
    return 0.5 * erfc(-x * 0.70710678118654752) + x * 0.39894228040143268 * exp(-0.5 * x * x);
}

/* relu keeps NaN (as torch's clamp_min); its gradient is 1 where x > 0 */
#define RELU(x) ((x) < 0 ? 0 : (x))
#define RELU_GRAD(x) ((x) > 0 ? 1 : 0)

/* ---- the kernels, per type ------------------------------------------------------------------- */
#define DEFINE(T, SUF)                                                                              \
static inline T rowsum_##SUF(const T *v, int64_t n)                                                 \
{                                                                                                   \
    T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                            \
    int64_t i = 0;                                                                                  \
    for (; i + 8 <= n; i += 8)                                                                      \
        for (int j = 0; j < 8; j++) acc[j] += v[i + j];                                             \
    T s = 0;                                                                                        \
    for (; i < n; i++) s += v[i];                                                                   \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + s;   \
}                                                                                                   \
                                                                                                    \
/* sum over l of g[l] (x[l] - mu) rs, in eight lanes as rowsum */                                    \
static inline T centered_dot_##SUF(const T *g, const T *x, T mu, T rs, int64_t n)                    \
{                                                                                                   \
    T acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                            \
    int64_t i = 0;                                                                                  \
    for (; i + 8 <= n; i += 8)                                                                      \
        for (int j = 0; j < 8; j++) acc[j] += g[i + j] * (x[i + j] - mu);                           \
    T s = 0;                                                                                        \
    for (; i < n; i++) s += g[i] * (x[i] - mu);                                                     \
    return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + s) * rs; \
}                                                                                                   \
                                                                                                    \
/* gbias (C) = sum over b of part (B x C), added in order of b: the same bits for any thread count */ \
static void bias_grad_##SUF(int64_t B, int64_t C, const T *part, T *gbias)                          \
{                                                                                                   \
    for (int64_t c = 0; c < C; c++) gbias[c] = 0;                                                   \
    for (int64_t b = 0; b < B; b++)                                                                 \
        for (int64_t c = 0; c < C; c++) gbias[c] += part[b * C + c];                                \
}                                                                                                   \
                                                                                                    \
/* y = act(x) * keep / (1 - p) over rows x L; rows count from r0 for the dropout mask (a chunk of   \
   a larger tensor draws that tensor's mask); xc (rows x L, may be NULL) receives a copy of x.       \
*/                                                                                                  \
void fb_act_drop_fwd_##SUF(int64_t rows, int64_t L, const T *x, int64_t ldx, T *y, T *xc, int act, \
                           uint64_t seed, int32_t thr, T scale, int64_t r0, int nt)                 \
{                                                                                                   \
    DROP_SPEC(thr, tied);                                                                           \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < rows; r++) {                                                            \
        const T *xr = x + r * ldx;                                                                  \
        T *yr = y + r * L;                                                                          \
        ROW_KEYS(seed, r0 + r, tied, k0, k1);                                                       \
        if (xc) memcpy(xc + r * L, xr, (size_t)L * sizeof(T));                                      \
        if (thr > 0) {                                                                              \
            if (act == 2) for (int32_t l = 0; l < (int32_t)L; l++)                                           \
                yr[l] = gelu_##SUF(xr[l]) * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0);           \
            else if (act == 1) for (int32_t l = 0; l < (int32_t)L; l++)                                      \
                yr[l] = RELU(xr[l]) * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0);                 \
            else for (int32_t l = 0; l < (int32_t)L; l++)                                                    \
                yr[l] = xr[l] * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0);                       \
        } else {                                                                                    \
            if (act == 2) for (int32_t l = 0; l < (int32_t)L; l++) yr[l] = gelu_##SUF(xr[l]);                \
            else if (act == 1) for (int32_t l = 0; l < (int32_t)L; l++) yr[l] = RELU(xr[l]);                 \
            else memcpy(yr, xr, (size_t)L * sizeof(T));                                             \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* gx = g * keep / (1 - p) * act'(x), gx rows of stride ldo; rows count from r0 (as forward) */    \
void fb_act_drop_bwd_##SUF(int64_t rows, int64_t L, const T *x, int64_t ldx, const T *g,          \
                           int64_t ldg, T *gx, int64_t ldo, int act, uint64_t seed, int32_t thr,    \
                           T scale, int64_t r0, int nt)                                             \
{                                                                                                   \
    DROP_SPEC(thr, tied);                                                                           \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < rows; r++) {                                                            \
        const T *xr = x + r * ldx, *gr = g + r * ldg;                                               \
        T *or_ = gx + r * ldo;                                                                      \
        ROW_KEYS(seed, r0 + r, tied, k0, k1);                                                       \
        if (thr > 0) {                                                                              \
            if (act == 2) for (int32_t l = 0; l < (int32_t)L; l++)                                           \
                or_[l] = gr[l] * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0) * gelu_grad_##SUF(xr[l]); \
            else if (act == 1) for (int32_t l = 0; l < (int32_t)L; l++)                                      \
                or_[l] = gr[l] * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0) * (T)RELU_GRAD(xr[l]); \
            else for (int32_t l = 0; l < (int32_t)L; l++)                                                    \
                or_[l] = gr[l] * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0);                      \
        } else {                                                                                    \
            if (act == 2) for (int32_t l = 0; l < (int32_t)L; l++) or_[l] = gr[l] * gelu_grad_##SUF(xr[l]);  \
            else if (act == 1) for (int32_t l = 0; l < (int32_t)L; l++) or_[l] = gr[l] * (T)RELU_GRAD(xr[l]); \
            else memcpy(or_, gr, (size_t)L * sizeof(T));                                            \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* The backward of y = dropout(relu(v)) from its output (ReLU with nothing added after it):   \
   gv = g / (1 - p) where y > 0, else 0 (y > 0 exactly where v > 0 and the element was kept;     \
   y <= 0 as torch's threshold_backward, NaN passing the gradient), no mask recomputed.           \
   y (B, C, L) contiguous; part (B x C scratch) and gbias (C): the sums of gv over l, then b. */  \
void fb_relu_out_bwd_##SUF(int64_t B, int64_t C, int64_t L, const T *y, const T *g, int64_t ldg,   \
                           T *gv, T *part, T *gbias, T scale, int nt)                               \
{                                                                                                   \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < B * C; r++) {                                                           \
        const T *yr = y + r * L, *gr = g + r * ldg;                                                 \
        T *o = gv + r * L;                                                                          \
        for (int32_t l = 0; l < (int32_t)L; l++) o[l] = yr[l] <= 0 ? (T)0 : gr[l] * scale;                  \
        if (part) part[r] = rowsum_##SUF(o, L);                                                     \
    }                                                                                               \
    if (part && gbias) bias_grad_##SUF(B, C, part, gbias);                                          \
}                                                                                                   \
                                                                                                    \
/* out (B, H, L) = dropout(f(m gain + bias)) [+ res]; glu: m (B, 2H, L), else m (B, H, L),          \
   f = act. gain and bias (C) may be NULL (1, 0), res (B, H, L) may be NULL. */                     \
void fb_mix_fwd_##SUF(int64_t B, int64_t H, int64_t L, const T *m, const T *gain, const T *bias,    \
                      const T *res, int64_t ldr, T *out, int glu, int act, uint64_t seed, int32_t thr, \
                      T scale, int nt)                                                              \
{                                                                                                   \
    DROP_SPEC(thr, tied);                                                                           \
    const int64_t C = glu ? 2 * H : H;                                                              \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < B * H; r++) {                                                           \
        const int64_t b = r / H, h = r % H;                                                         \
        const T *a = m + (b * C + h) * L, *gt = a + H * L;                                          \
        const T *rr = res ? res + r * ldr : 0;                                                      \
        T *o = out + r * L;                                                                         \
        const T ba = bias ? bias[h] : 0, bg = bias && glu ? bias[H + h] : 0;                        \
        const T ka = gain ? gain[h] : 1, kg = gain && glu ? gain[H + h] : 1;                        \
        if (glu) for (int32_t l = 0; l < (int32_t)L; l++)                                                    \
            o[l] = (a[l] * ka + ba) * sigmoid_##SUF(gt[l] * kg + bg);                               \
        else if (act == 2) for (int32_t l = 0; l < (int32_t)L; l++) o[l] = gelu_##SUF(a[l] * ka + ba);       \
        else if (act == 1) for (int32_t l = 0; l < (int32_t)L; l++) { T v = a[l] * ka + ba; o[l] = RELU(v); } \
        else for (int32_t l = 0; l < (int32_t)L; l++) o[l] = a[l] * ka + ba;                                 \
        if (thr > 0) {                                                                              \
            ROW_KEYS(seed, r, tied, k0, k1);                                                        \
            for (int32_t l = 0; l < (int32_t)L; l++) o[l] *= DROP_BITS(k0, k1, l) >= thr ? scale : (T)0;     \
        }                                                                                           \
        if (rr) for (int32_t l = 0; l < (int32_t)L; l++) o[l] += rr[l];                                      \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* gm = d out / d (m gain + bias) for the upstream gradient g (B, H, L) (the gradient of the       \
   pre-activation; with gain NULL that of m); gbias (C) = its sum over b and l, from part (B x C   \
   scratch) added in order of b. With xmean and xrstd (C) given, also gxh (C) = the sum of gm       \
   (m - xmean) xrstd over b and l, from part2 (B x C scratch): the batch-norm weight gradient. */   \
void fb_mix_bwd_##SUF(int64_t B, int64_t H, int64_t L, const T *m, const T *gain, const T *bias,   \
                      const T *g, int64_t ldg, T *gm, T *part, T *gbias, const T *xmean,            \
                      const T *xrstd, T *part2, T *gxh, int glu, int act, uint64_t seed,            \
                      int32_t thr, T scale, int nt)                                                 \
{                                                                                                   \
    DROP_SPEC(thr, tied);                                                                           \
    const int64_t C = glu ? 2 * H : H;                                                              \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < B * H; r++) {                                                           \
        const int64_t b = r / H, h = r % H;                                                         \
        const T *a = m + (b * C + h) * L, *gt = a + H * L;                                          \
        const T *gr = g + r * ldg;                                                                  \
        T *ga = gm + (b * C + h) * L, *gg = ga + H * L;                                             \
        const T ba = bias ? bias[h] : 0, bg = bias && glu ? bias[H + h] : 0;                        \
        const T ka = gain ? gain[h] : 1, kg = gain && glu ? gain[H + h] : 1;                        \
        /* ga first holds the gradient after the dropout */                                         \
        if (thr > 0) {                                                                              \
            ROW_KEYS(seed, r, tied, k0, k1);                                                        \
            for (int32_t l = 0; l < (int32_t)L; l++) ga[l] = gr[l] * (DROP_BITS(k0, k1, l) >= thr ? scale : (T)0); \
        } else memcpy(ga, gr, (size_t)L * sizeof(T));                                               \
        if (glu) for (int32_t l = 0; l < (int32_t)L; l++) {                                                  \
            T s = sigmoid_##SUF(gt[l] * kg + bg), d = ga[l];                                        \
            ga[l] = d * s;                                                                          \
            gg[l] = d * (a[l] * ka + ba) * s * (1 - s);                                             \
        }                                                                                           \
        else if (act == 2) for (int32_t l = 0; l < (int32_t)L; l++) ga[l] *= gelu_grad_##SUF(a[l] * ka + ba); \
        else if (act == 1) for (int32_t l = 0; l < (int32_t)L; l++) ga[l] *= (T)RELU_GRAD(a[l] * ka + ba);  \
        if (part) {                                                                                 \
            part[b * C + h] = rowsum_##SUF(ga, L);                                                  \
            if (glu) part[b * C + H + h] = rowsum_##SUF(gg, L);                                     \
        }                                                                                           \
        if (part2) {                                                                                \
            part2[b * C + h] = centered_dot_##SUF(ga, a, xmean[h], xrstd[h], L);                    \
            if (glu) part2[b * C + H + h] = centered_dot_##SUF(gg, gt, xmean[H + h], xrstd[H + h], L); \
        }                                                                                           \
    }                                                                                               \
    if (part && gbias) bias_grad_##SUF(B, C, part, gbias);                                          \
    if (part2 && gxh) bias_grad_##SUF(B, C, part2, gxh);                                            \
}                                                                                                   \
                                                                                                    \
/* Batch-norm statistics of m (B, C, L) per channel over (b, l): mean and biased variance (C).     \
   Each row's mean and sum of squared deviations in two sweeps (the row is in cache), the rows     \
   of a channel combined in order of b in double (Chan et al.): the same bits for any thread     \
   count. part: B x C x 2 doubles of scratch. */                                                    \
void fb_chstat_##SUF(int64_t B, int64_t C, int64_t L, const T *m, double *part, T *mean, T *var,   \
                     int nt)                                                                        \
{                                                                                                   \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < B * C; r++) {                                                           \
        const T *x = m + r * L;                                                                     \
        double mu = (double)rowsum_##SUF(x, L) / (double)L;                                         \
        T mt = (T)mu, acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                            \
        int64_t l = 0;                                                                              \
        for (; l + 8 <= L; l += 8)                                                                  \
            for (int j = 0; j < 8; j++) { T d = x[l + j] - mt; acc[j] += d * d; }                   \
        T s = 0;                                                                                    \
        for (; l < L; l++) { T d = x[l] - mt; s += d * d; }                                         \
        s += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));     \
        /* the sweep was centred on mu rounded to T: correct the sum to the exact row mean */       \
        double dm = mu - (double)mt;                                                                \
        part[2 * r] = mu;                                                                           \
        part[2 * r + 1] = (double)s - (double)L * dm * dm;                                          \
    }                                                                                               \
    for (int64_t c = 0; c < C; c++) {                                                               \
        double n = 0, mu = 0, m2 = 0;                                                               \
        for (int64_t b = 0; b < B; b++) {                                                           \
            const double mb = part[2 * (b * C + c)], m2b = part[2 * (b * C + c) + 1];               \
            const double nn = n + (double)L, d = mb - mu;                                           \
            mu += d * (double)L / nn;                                                               \
            m2 += m2b + d * d * n * (double)L / nn;                                                 \
            n = nn;                                                                                 \
        }                                                                                           \
        mean[c] = (T)mu;                                                                            \
        var[c] = (T)(m2 > 0 ? m2 / n : 0);                                                          \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* y (B, C, L) = A_c y + Bx_c x + Cc_c in place, x (B, C, L): the batch-norm input gradient */      \
void fb_affine2_##SUF(int64_t B, int64_t C, int64_t L, T *y, const T *x, const T *A, const T *Bx,  \
                      const T *Cc, int nt)                                                          \
{                                                                                                   \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < B * C; r++) {                                                           \
        const int64_t c = r % C;                                                                    \
        const T a = A[c], bx = Bx[c], cc = Cc[c];                                                   \
        T *yr = y + r * L;                                                                          \
        const T *xr = x + r * L;                                                                    \
        for (int32_t l = 0; l < (int32_t)L; l++) yr[l] = a * yr[l] + bx * xr[l] + cc;                        \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* LayerNorm over axis 1 of x (B, H, L): y = (x - mean) rstd w + bias; mean, rstd (B, L) kept */   \
void fb_ln_fwd_##SUF(int64_t B, int64_t H, int64_t L, const T *x, int64_t ldx, const T *w,         \
                     const T *bias, T *y, T *mean, T *rstd, double eps, int nt)                     \
{                                                                                                   \
    const int64_t nch = (L + LN_CHUNK - 1) / LN_CHUNK;                                              \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t it = 0; it < B * nch; it++) {                                                      \
        const int64_t b = it / nch, l0 = (it % nch) * LN_CHUNK;                                     \
        const int64_t n = L - l0 < LN_CHUNK ? L - l0 : LN_CHUNK;                                    \
        const T *xb = x + b * H * ldx + l0;                                                         \
        T *yb = y + b * H * L + l0;                                                                 \
        T mu[LN_CHUNK], rs[LN_CHUNK];                                                               \
        for (int64_t l = 0; l < n; l++) mu[l] = 0, rs[l] = 0;                                       \
        for (int64_t h = 0; h < H; h++)                                                             \
            for (int64_t l = 0; l < n; l++) mu[l] += xb[h * ldx + l];                               \
        for (int64_t l = 0; l < n; l++) mu[l] /= (T)H;                                              \
        for (int64_t h = 0; h < H; h++)                                                             \
            for (int64_t l = 0; l < n; l++) { T d = xb[h * ldx + l] - mu[l]; rs[l] += d * d; }      \
        for (int64_t l = 0; l < n; l++) rs[l] = (T)1 / sqrt##SUF(rs[l] / (T)H + (T)eps);            \
        for (int64_t h = 0; h < H; h++) {                                                           \
            const T wh = w ? w[h] : 1, bh = bias ? bias[h] : 0;                                     \
            for (int64_t l = 0; l < n; l++) yb[h * L + l] = (xb[h * ldx + l] - mu[l]) * rs[l] * wh + bh; \
        }                                                                                           \
        memcpy(mean + b * L + l0, mu, (size_t)n * sizeof(T));                                       \
        memcpy(rstd + b * L + l0, rs, (size_t)n * sizeof(T));                                       \
    }                                                                                               \
}                                                                                                   \
                                                                                                    \
/* its backward: gx; gw, gbias (H) from part (2 x B*nch x H scratch), may be NULL */                \
void fb_ln_bwd_##SUF(int64_t B, int64_t H, int64_t L, const T *x, int64_t ldx, const T *w,         \
                     const T *mean, const T *rstd, const T *g, int64_t ldg, T *gx, T *part, T *gw,  \
                     T *gbias, int nt)                                                              \
{                                                                                                   \
    const int64_t nch = (L + LN_CHUNK - 1) / LN_CHUNK, np = B * nch;                                \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t it = 0; it < np; it++) {                                                           \
        const int64_t b = it / nch, l0 = (it % nch) * LN_CHUNK;                                     \
        const int64_t n = L - l0 < LN_CHUNK ? L - l0 : LN_CHUNK;                                    \
        const T *xb = x + b * H * ldx + l0, *gb = g + b * H * ldg + l0;                             \
        const T *mu = mean + b * L + l0, *rs = rstd + b * L + l0;                                   \
        T *ob = gx + b * H * L + l0;                                                                \
        T s1[LN_CHUNK], s2[LN_CHUNK], tmp[LN_CHUNK];                                                \
        for (int64_t l = 0; l < n; l++) s1[l] = 0, s2[l] = 0;                                       \
        for (int64_t h = 0; h < H; h++) {                                                           \
            const T wh = w ? w[h] : 1;                                                              \
            const T *xr = xb + h * ldx, *gr = gb + h * ldg;                                         \
            for (int64_t l = 0; l < n; l++) {                                                       \
                T xh = (xr[l] - mu[l]) * rs[l], gw_ = gr[l] * wh;                                   \
                s1[l] += gw_;                                                                       \
                s2[l] += gw_ * xh;                                                                  \
                tmp[l] = gr[l] * xh;                                                                \
            }                                                                                       \
            if (part) {                                                                             \
                part[it * H + h] = rowsum_##SUF(tmp, n);                                            \
                part[(np + it) * H + h] = rowsum_##SUF(gr, n);                                      \
            }                                                                                       \
        }                                                                                           \
        for (int64_t l = 0; l < n; l++) s1[l] /= (T)H, s2[l] /= (T)H;                               \
        for (int64_t h = 0; h < H; h++) {                                                           \
            const T wh = w ? w[h] : 1;                                                              \
            const T *xr = xb + h * ldx, *gr = gb + h * ldg;                                         \
            T *o = ob + h * L;                                                                      \
            for (int64_t l = 0; l < n; l++) {                                                       \
                T xh = (xr[l] - mu[l]) * rs[l];                                                     \
                o[l] = rs[l] * (gr[l] * wh - s1[l] - xh * s2[l]);                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    if (part) {                                                                                     \
        for (int64_t h = 0; h < H; h++) { if (gw) gw[h] = 0; if (gbias) gbias[h] = 0; }             \
        for (int64_t i = 0; i < np; i++)                                                            \
            for (int64_t h = 0; h < H; h++) {                                                       \
                if (gw) gw[h] += part[i * H + h];                                                   \
                if (gbias) gbias[h] += part[(np + i) * H + h];                                      \
            }                                                                                       \
    }                                                                                               \
}

/* Fake quantization of an activation (quantization-aware training), one pass: q = floor(x / s +
   1/2) (round half up; s a power of two, so x / s is exact; a division, never contracted into an
   fma), y = clamp(q, lo, hi) s, with relu clamp(q, 0, hi) s; keep (may be NULL) = 1 where the
   straight-through gradient passes: lo <= q <= hi, with relu 1 <= q <= hi. The same operations,
   in the same order and precision, as the torch ops they replace: the same bits. x rows of
   stride ldx, y and keep rows x L contiguous. */
#define DEFINE_FQ(T, SUF, FLOOR)                                                                    \
void fb_fq_fwd_##SUF(int64_t rows, int64_t L, const T *x, int64_t ldx, T *y, uint8_t *keep, T s,    \
                     T lo, T hi, int relu, int nt)                                                  \
{                                                                                                   \
    const T lo_y = relu ? (T)0 : lo, lo_g = relu ? (T)1 : lo;                                       \
    OMP_PAR_FOR(nt)                                                                                 \
    for (int64_t r = 0; r < rows; r++) {                                                            \
        const T *xr = x + r * ldx;                                                                  \
        T *yr = y + r * L;                                                                          \
        uint8_t *kr = keep ? keep + r * L : 0;                                                      \
        for (int64_t l = 0; l < L; l++) {                                                           \
            T q = FLOOR(xr[l] / s + (T)0.5);                                                        \
            if (kr) kr[l] = (q >= lo_g) & (q <= hi);                                                \
            T c = q < lo_y ? lo_y : q;                                                              \
            c = c > hi ? hi : c;                                                                    \
            yr[l] = c * s;                                                                          \
        }                                                                                           \
    }                                                                                               \
}

#define sqrtf32 sqrtf
#define sqrtf64 sqrt
DEFINE(float, f32)
DEFINE(double, f64)
DEFINE_FQ(float, f32, floorf)
DEFINE_FQ(double, f64, floor)

/* The crossbar simulator's inner loops (program.py: CrossbarProgram.run): the analog MVMs of a
   stage on the used cells of its arrays, with per-read Gaussian read noise and the column ADCs,
   for many input vectors at once; and an S4D stage over a whole sequence (one MVM per token,
   the state through ADC and DAC as in CrossbarProgram.step).

   Per array a (compact: Ru used rows, Cu used columns), input vector v:
       V_r   = v[cin[a, r]]                    (index n_in: an undriven row, V = 0)
       n_c   = sum_r V_r q[a, r, c]
       n_c  += sqrt(sum_r V_r^2 var[a, r, c]) * N(0, 1)      if var
       n_c   = ADC(n_c) = floor(clamp(n_c / fs, -1, 1) * qa + 1/2) / qa * fs    if conv[a, c]
       out[cout[a, c]] += n_c                  (index n_out: a column not read)
   and the crossbar energy sum_r V_r^2 rowg[a, r] (times V_read^2 t_pulse by the caller).

   Normal deviates: the ziggurat method of Marsaglia and Tsang (2000), 128 levels, on
   xoshiro256+ uniforms; one stream per input row, seeded from (seed, row), so the result does
   not depend on how rows are split into calls or threads (OpenMP over rows when built with
   -fopenmp). Built without -ffast-math (IEEE converters). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { uint64_t s[4]; } rng_t;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next64(rng_t *r)
{
    uint64_t *s = r->s, res = s[0] + s[3], t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return res;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed * 0x2545f4914f6cdd1dULL ^ (stream + 0x632be59bd9b4e019ULL);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&x);
}

static inline double uni(rng_t *r) { return ((next64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static uint32_t kn[128];
static double wn[128], fn[128];
static int zig_ready = 0;

static void zig_init(void)
{
    const double m1 = 2147483648.0, vn = 9.91256303526217e-3;
    double dn = 3.442619855899, tn = dn;
    double q = vn / exp(-0.5 * dn * dn);
    kn[0] = (uint32_t)((dn / q) * m1); kn[1] = 0;
    wn[0] = q / m1; wn[127] = dn / m1;
    fn[0] = 1.0; fn[127] = exp(-0.5 * dn * dn);
    for (int i = 126; i >= 1; i--) {
        dn = sqrt(-2.0 * log(vn / dn + exp(-0.5 * dn * dn)));
        kn[i + 1] = (uint32_t)((dn / tn) * m1);
        tn = dn;
        fn[i] = exp(-0.5 * dn * dn);
        wn[i] = dn / m1;
    }
    zig_ready = 1;
}

static double normal(rng_t *r)
{
    for (;;) {
        uint64_t u = next64(r);
        int32_t hz = (int32_t)(u >> 32);
        int iz = (int)(u & 127);
        uint32_t ahz = hz < 0 ? (uint32_t)(-(int64_t)hz) : (uint32_t)hz;
        if (ahz < kn[iz]) return hz * wn[iz];
        double x = hz * wn[iz];
        if (iz == 0) {                         /* the tail beyond r */
            const double rr = 3.442619855899;
            double y;
            do { x = -log(uni(r)) / rr; y = -log(uni(r)); } while (y + y < x * x);
            return hz > 0 ? rr + x : -rr - x;
        }
        if (fn[iz] + uni(r) * (fn[iz - 1] - fn[iz]) < exp(-0.5 * x * x)) return x;
    }
}

void xbar_normals(int64_t n, uint64_t seed, uint64_t stream, double *out)
{
    if (!zig_ready) zig_init();
    rng_t r;
    rng_seed(&r, seed, stream);
    for (int64_t i = 0; i < n; i++) out[i] = normal(&r);
}

typedef struct {
    int A, Ru, Cu, n_in, n_out, adc_q;
    const float *q, *var, *fs, *rowg;      /* (A, Ru, Cu), (A, Ru, Cu) or NULL, (A, Cu), (A, Ru) */
    const int64_t *cin, *cout;             /* (A, Ru), (A, Cu) */
    const uint8_t *conv;                   /* (A, Cu) */
} stage_t;

/* One input vector v (n_in + 1, v[n_in] = 0) through every array of the stage: out (n_out + 1)
   accumulated; returns the ADC saturations; adds the energy sum to *e. */
static int64_t stage_mvm(const stage_t *st, const float *v, float *out, rng_t *r, double *e,
                         float *restrict V, float *restrict n, float *restrict s)
{
    int64_t sat = 0;
    const int Ru = st->Ru, Cu = st->Cu;
    const float qa = (float)st->adc_q;
    double en = 0;
    for (int a = 0; a < st->A; a++) {
        const int64_t *ci = st->cin + (size_t)a * Ru;
        const float *rg = st->rowg + (size_t)a * Ru;
        for (int k = 0; k < Ru; k++) { V[k] = v[ci[k]]; en += (double)(V[k] * V[k]) * rg[k]; }
        const float *qa_ = st->q + (size_t)a * Ru * Cu;
        for (int c = 0; c < Cu; c++) n[c] = 0;
        for (int k = 0; k < Ru; k++) {
            const float vk = V[k];
            if (vk == 0) continue;
            const float *restrict row = qa_ + (size_t)k * Cu;
            for (int c = 0; c < Cu; c++) n[c] += vk * row[c];
        }
        if (st->var) {
            const float *va = st->var + (size_t)a * Ru * Cu;
            for (int c = 0; c < Cu; c++) s[c] = 0;
            for (int k = 0; k < Ru; k++) {
                const float v2 = V[k] * V[k];
                if (v2 == 0) continue;
                const float *restrict row = va + (size_t)k * Cu;
                for (int c = 0; c < Cu; c++) s[c] += v2 * row[c];
            }
            for (int c = 0; c < Cu; c++) {
                float sd = sqrtf(s[c] > 0 ? s[c] : 0);
                n[c] += sd * (float)normal(r);
            }
        }
        const float *fa = st->fs + (size_t)a * Cu;
        const uint8_t *cv = st->conv + (size_t)a * Cu;
        const int64_t *co = st->cout + (size_t)a * Cu;
        for (int c = 0; c < Cu; c++) {
            float x = n[c];
            if (cv[c]) {
                const float f = fa[c];
                sat += (x > f) | (x < -f);
                float y = x / f;
                y = y > 1 ? 1 : (y < -1 ? -1 : y);
                x = floorf(y * qa + 0.5f) / qa * f;
            }
            out[co[c]] += x;
        }
    }
    *e += en;
    return sat;
}

static int alloc_work(const stage_t *st, float **V, float **n, float **s)
{
    *V = *n = *s = NULL;
    *V = malloc(sizeof(float) * (st->Ru + 1));
    *n = malloc(sizeof(float) * (st->Cu + 1));
    *s = malloc(sizeof(float) * (st->Cu + 1));
    return *V && *n && *s;
}

#define STAGE_ARGS int A, int Ru, int Cu, int n_in, int n_out, int adc_q, const float *q,          \
    const float *var, const float *fs, const float *rowg, const int64_t *cin, const int64_t *cout,  \
    const uint8_t *conv
#define STAGE_INIT {A, Ru, Cu, n_in, n_out, adc_q, q, var, fs, rowg, cin, cout, conv}

/* A stateless stage on rows x (R, n_in) (already DAC'd): y (R, n_out). Stream of row i: row0 + i. */
int64_t xbar_stage(STAGE_ARGS, int64_t R, const float *x, float *y, uint64_t seed, uint64_t row0,
                   double *energy, int threads)
{
    if (!zig_ready) zig_init();
    stage_t st = STAGE_INIT;
    int64_t sat = 0, fail = 0;
    double en = 0;
#pragma omp parallel num_threads(threads) reduction(+:sat, en, fail)
    {
        float *V, *n, *s, *v = malloc(sizeof(float) * (n_in + 1)), *out = malloc(sizeof(float) * (n_out + 1));
        if (!alloc_work(&st, &V, &n, &s) || !v || !out) fail = 1;
        else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < R; i++) {
                rng_t r;
                rng_seed(&r, seed, row0 + (uint64_t)i);
                memcpy(v, x + (size_t)i * n_in, sizeof(float) * n_in);
                v[n_in] = 0;
                memset(out, 0, sizeof(float) * (n_out + 1));
                sat += stage_mvm(&st, v, out, &r, &en, V, n, s);
                memcpy(y + (size_t)i * n_out, out, sizeof(float) * n_out);
            }
        }
        free(V); free(n); free(s); free(v); free(out);
    }
    *energy += en;
    return fail ? -1 : sat;
}

/* An S4D stage over sequences: vu (B, L, H) DAC'd inputs; scale (H * K) the digital column
   scales; state: digital (DAC, dac_q steps) or analog (clamp to [-1, 1]); y (B, L, H) the
   output column (times scale, before the caller's range gain). Stream of batch row b: row0 + b. */
int64_t xbar_s4d(STAGE_ARGS, int B, int L, int H, int K, const float *scale, const float *vu,
                 int digital, int dac_q, float *y, uint64_t seed, uint64_t row0, double *energy,
                 int threads)
{
    if (!zig_ready) zig_init();
    stage_t st = STAGE_INIT;
    const int N = H * K;
    const float qd = (float)dac_q;
    int64_t sat = 0, fail = 0;
    double en = 0;
#pragma omp parallel num_threads(threads) reduction(+:sat, en, fail)
    {
        float *V, *n, *s, *v = malloc(sizeof(float) * (N + 1)), *out = malloc(sizeof(float) * (N + 1));
        if (!alloc_work(&st, &V, &n, &s) || !v || !out) fail = 1;
        else {
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < B; b++) {
                rng_t r;
                rng_seed(&r, seed, row0 + (uint64_t)b);
                memset(v, 0, sizeof(float) * (N + 1));            /* w_(-1) = 0 */
                for (int t = 0; t < L; t++) {
                    const float *u = vu + ((size_t)b * L + t) * H;
                    for (int h = 0; h < H; h++) v[(size_t)h * K + K - 1] = u[h];
                    memset(out, 0, sizeof(float) * (N + 1));
                    sat += stage_mvm(&st, v, out, &r, &en, V, n, s);
                    float *yo = y + ((size_t)b * L + t) * H;
                    for (int h = 0; h < H; h++) {
                        const float *o = out + (size_t)h * K, *sc = scale + (size_t)h * K;
                        float *w = v + (size_t)h * K;
                        for (int k = 0; k < K - 1; k++) {
                            float x = o[k] * sc[k];
                            if (digital) {
                                float z = x / 1.0f;
                                z = z > 1 ? 1 : (z < -1 ? -1 : z);
                                x = floorf(z * qd + 0.5f) / qd * 1.0f;
                            } else
                                x = x > 1 ? 1 : (x < -1 ? -1 : x);
                            w[k] = x;
                        }
                        yo[h] = o[K - 1] * sc[K - 1];
                    }
                }
            }
        }
        free(V); free(n); free(s); free(v); free(out);
    }
    *energy += en;
    return fail ? -1 : sat;
}

/* The crossbar simulator's inner loops (program.py: CrossbarProgram.run): the analog MVMs of a
   stage on the used cells of its arrays, with per-read Gaussian read noise and the column ADCs,
   for many input vectors at once; and an S4D stage over whole sequences (one MVM per token,
   the state through ADC and DAC as in CrossbarProgram.step).

   Per array a (compact: Ru used rows, Cu used columns), input vector v:
       V_r   = v[cin[a, r]]                    (index n_in: an undriven row, V = 0)
       n_c   = sum_r V_r q[a, r, c]
       n_c  += sqrt(sum_r V_r^2 var[a, r, c]) * N(0, 1)      if var
       n_c   = ADC(n_c) = floor(clamp(n_c / fs, -1, 1) * qa + 1/2) / qa * fs    if conv[a, c]
       out[cout[a, c]] += n_c                  (index n_out: a column not read)
   and the crossbar energy sum_r V_r^2 rowg[a, r] (times V_read^2 t_pulse by the caller).

   Batching: the conductances of a device instance are the same for every input vector, so
   many vectors (rows of a linear stage; the samples of an S4D stage, token by token) pass one
   array while its weights sit in the L1 cache; per vector the mean and the read-noise variance
   are one pass over the driven rows (zero inputs skipped), in SIMD vectors of 8 columns (GCC
   vector extensions: AVX2/FMA with -march=native on x86, plain code elsewhere).

   Normal deviates: the ziggurat method of Marsaglia and Tsang (2000), 128 levels, 25-bit
   values (float precision), fed by 8 lanes of xoshiro128++ (Blackman and Vigna) stepped as one
   SIMD vector; the rare draws outside the rectangles (about 1.2%) finish on a scalar
   xoshiro256+ of the same stream. One stream per input row of a linear stage and per sample of
   an S4D stage (over all its tokens), seeded from (seed, row): the result does not depend on
   how rows or samples are split into calls, chunks or threads (OpenMP over chunks of rows or
   samples when built with -fopenmp). Built without -ffast-math (IEEE converters). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf8 __attribute__((vector_size(32)));
typedef float vf8u __attribute__((vector_size(32), aligned(4)));
typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef uint32_t vu8u __attribute__((vector_size(32), aligned(4)));

/* ---- random numbers ------------------------------------------------------------------------ */
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

static inline double uni(rng_t *r) { return ((next64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* one stream: 8 xoshiro128++ lanes (word w of lane l at s[w][l]) and a scalar xoshiro256+ for
   the ziggurat's slow path, seeded on first use from the same splitmix sequence */
typedef struct {
    uint32_t s[4][8];
    rng_t sc;
    uint64_t sx;
    int sc_ready;
} stream_t;

static void stream_seed(stream_t *st, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed * 0x2545f4914f6cdd1dULL ^ (stream + 0x632be59bd9b4e019ULL);
    for (int w = 0; w < 4; w++)
        for (int l = 0; l < 8; l += 2) {
            uint64_t z = splitmix(&x);
            st->s[w][l] = (uint32_t)z;
            st->s[w][l + 1] = (uint32_t)(z >> 32);
        }
    st->sx = x;
    st->sc_ready = 0;
}

static rng_t *stream_scalar(stream_t *st)
{
    if (!st->sc_ready) {
        for (int i = 0; i < 4; i++) st->sc.s[i] = splitmix(&st->sx);
        st->sc_ready = 1;
    }
    return &st->sc;
}

#define ZIG_M 16777216.0                 /* 2^24: |hz| < 2^24, 25-bit signed values */
static uint32_t kn[128];
static double wn[128], fn[128];
static float wnf[128];
static volatile int zig_ready = 0;

static void zig_init(void)
{
    if (zig_ready) return;
    const double m1 = ZIG_M, vn = 9.91256303526217e-3;
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
    for (int i = 0; i < 128; i++) wnf[i] = (float)wn[i];
    zig_ready = 1;
}

/* the ziggurat's slow path for a candidate (hz, iz) outside its rectangle's core */
static float zig_slow(stream_t *st, int32_t hz, int iz)
{
    rng_t *r = stream_scalar(st);
    for (;;) {
        double x = hz * wn[iz];
        if (iz == 0) {                         /* the tail beyond r */
            const double rr = 3.442619855899;
            double y;
            do { x = -log(uni(r)) / rr; y = -log(uni(r)); } while (y + y < x * x);
            return (float)(hz > 0 ? rr + x : -rr - x);
        }
        if (fn[iz] + uni(r) * (fn[iz - 1] - fn[iz]) < exp(-0.5 * x * x)) return (float)x;
        uint32_t u = (uint32_t)(next64(r) >> 32);
        hz = (int32_t)u >> 7;
        iz = (int)(u & 127);
        uint32_t ahz = hz < 0 ? (uint32_t)(-(int64_t)hz) : (uint32_t)hz;
        if (ahz < kn[iz]) return (float)(hz * wn[iz]);
    }
}

static inline vu8 vrotl(vu8 x, int k) { return (x << k) | (x >> (32 - k)); }

/* n standard normal deviates (n a multiple of 8) of the stream into out */
static void stream_normals(stream_t *st, int n, float *restrict out)
{
    vu8 s0 = *(const vu8u *)st->s[0], s1 = *(const vu8u *)st->s[1];
    vu8 s2 = *(const vu8u *)st->s[2], s3 = *(const vu8u *)st->s[3];
    for (int i = 0; i < n; i += 8) {
        vu8 r = vrotl(s0 + s3, 7) + s0;              /* xoshiro128++ */
        vu8 t = s1 << 9;
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = vrotl(s3, 11);
        uint32_t rv[8];
        memcpy(rv, &r, sizeof rv);
        for (int l = 0; l < 8; l++) {                 /* index: low 7 bits; value: high 25 */
            const int iz = (int)(rv[l] & 127);
            const int32_t h = (int32_t)rv[l] >> 7;
            const uint32_t ah = h < 0 ? (uint32_t)(-h) : (uint32_t)h;
            out[i + l] = ah < kn[iz] ? (float)h * wnf[iz] : zig_slow(st, h, iz);
        }
    }
    *(vu8u *)st->s[0] = s0; *(vu8u *)st->s[1] = s1; *(vu8u *)st->s[2] = s2; *(vu8u *)st->s[3] = s3;
}

void xbar_normals(int64_t n, uint64_t seed, uint64_t stream, double *out)
{
    zig_init();
    stream_t st;
    float buf[1024];
    stream_seed(&st, seed, stream);
    for (int64_t i = 0; i < n; i += 1024) {
        stream_normals(&st, 1024, buf);
        for (int64_t j = 0; j < 1024 && i + j < n; j++) out[i + j] = buf[j];
    }
}

/* ---- one array, one input vector ----------------------------------------------------------- */
typedef struct {
    int A, Ru, Cu, n_in, n_out, adc_q;
    const float *q, *var, *fs, *rowg;      /* (A, Ru, Cu), (A, Ru, Cu) or NULL, (A, Cu), (A, Ru) */
    const int64_t *cin, *cout;             /* (A, Ru), (A, Cu) */
    const uint8_t *conv;                   /* (A, Cu) */
} stage_t;

typedef struct { float *V, *n, *s; } work_t;

static int work_alloc(work_t *w, const stage_t *st)
{
    w->V = malloc(sizeof(float) * (st->Ru + 8));
    w->n = malloc(sizeof(float) * (st->Cu + 8));
    w->s = malloc(sizeof(float) * (st->Cu + 8));
    return w->V && w->n && w->s;
}

static void work_free(work_t *w) { free(w->V); free(w->n); free(w->s); }

/* columns c0 .. c0 + 8 NV of n (and s) over the Ru rows of V (a zero input adds exactly 0) */
static inline __attribute__((always_inline)) void
block(const int NV, const int VAR, int Ru, const float *restrict V, const float *restrict q,
      const float *restrict var, int Cu, int c0, float *restrict n, float *restrict s)
{
    vf8 an[4] = {{0}}, as[4] = {{0}};
    for (int k = 0; k < Ru; k++) {
        const float vk = V[k], v2 = vk * vk;
        const vf8 bv = (vf8){0} + vk, b2 = (vf8){0} + v2;
        const float *qr = q + (size_t)k * Cu + c0;
        for (int j = 0; j < NV; j++) an[j] += bv * *(const vf8u *)(qr + 8 * j);
        if (VAR) {
            const float *vr = var + (size_t)k * Cu + c0;
            for (int j = 0; j < NV; j++) as[j] += b2 * *(const vf8u *)(vr + 8 * j);
        }
    }
    for (int j = 0; j < NV; j++) {
        *(vf8u *)(n + c0 + 8 * j) = an[j];
        if (VAR) *(vf8u *)(s + c0 + 8 * j) = as[j];
    }
}

/* array a on its row voltages V (Ru): the Cu column outputs (after noise and ADC) into n, z the
   Cu normal deviates of this read (if var), s (Cu) scratch; returns the ADC saturations; adds
   the energy sum_r V_r^2 rowg_r to *e */
static int64_t array_core(const stage_t *st, int a, const float *restrict V, const float *restrict z,
                          float *restrict n, float *restrict s, double *e)
{
    const int Ru = st->Ru, Cu = st->Cu;
    const float *rg = st->rowg + (size_t)a * Ru;
    vf8 ea = {0};                              /* energy: 8 float lanes, summed in double */
    int k = 0;
    for (; k + 8 <= Ru; k += 8) {
        const vf8 x = *(const vf8u *)(V + k);
        ea += x * x * *(const vf8u *)(rg + k);
    }
    double en = 0;
    for (int l = 0; l < 8; l++) en += ea[l];
    for (; k < Ru; k++) en += (double)(V[k] * V[k]) * rg[k];
    *e += en;
    const float *q = st->q + (size_t)a * Ru * Cu;
    const float *var = st->var ? st->var + (size_t)a * Ru * Cu : NULL;
    int c0 = 0;
    for (; c0 + 8 <= Cu; c0 += 32) {
        const int nv = (Cu - c0) / 8 < 4 ? (Cu - c0) / 8 : 4;
        if (var) {
            switch (nv) {
            case 4: block(4, 1, Ru, V, q, var, Cu, c0, n, s); break;
            case 3: block(3, 1, Ru, V, q, var, Cu, c0, n, s); break;
            case 2: block(2, 1, Ru, V, q, var, Cu, c0, n, s); break;
            default: block(1, 1, Ru, V, q, var, Cu, c0, n, s); break;
            }
        } else {
            switch (nv) {
            case 4: block(4, 0, Ru, V, q, var, Cu, c0, n, s); break;
            case 3: block(3, 0, Ru, V, q, var, Cu, c0, n, s); break;
            case 2: block(2, 0, Ru, V, q, var, Cu, c0, n, s); break;
            default: block(1, 0, Ru, V, q, var, Cu, c0, n, s); break;
            }
        }
        if (nv < 4) { c0 += 8 * nv; break; }
    }
    for (int c = c0 < Cu ? c0 : Cu; c < Cu; c++) {        /* columns beyond whole vectors */
        float sn = 0, ss = 0;
        for (int r = 0; r < Ru; r++) {
            sn += V[r] * q[(size_t)r * Cu + c];
            if (var) ss += (V[r] * V[r]) * var[(size_t)r * Cu + c];
        }
        n[c] = sn;
        s[c] = ss;
    }
    if (var)
        for (int c = 0; c < Cu; c++) {
            const float sv = s[c] > 0 ? s[c] : 0;
            n[c] += sqrtf(sv) * z[c];
        }
    const float qa = (float)st->adc_q;
    const float *fa = st->fs + (size_t)a * Cu;
    const uint8_t *cv = st->conv + (size_t)a * Cu;
    int sat = 0;
    for (int c = 0; c < Cu; c++) {
        const float x = n[c], f = fa[c];
        const int on = cv[c] != 0;
        sat += on & ((x > f) | (x < -f));
        float y = x / f;
        y = y > 1 ? 1 : (y < -1 ? -1 : y);
        const float xq = floorf(y * qa + 0.5f) / qa * f;
        n[c] = on ? xq : x;
    }
    return sat;
}

/* vector v (n_in + 1, v[n_in] = 0) through array a: out (n_out + 1) accumulated */
static int64_t array_mvm(const stage_t *st, int a, const float *v, const float *z, float *out,
                         double *e, work_t *w)
{
    const int Ru = st->Ru, Cu = st->Cu;
    const int64_t *ci = st->cin + (size_t)a * Ru, *co = st->cout + (size_t)a * Cu;
    for (int k = 0; k < Ru; k++) w->V[k] = v[ci[k]];
    const int64_t sat = array_core(st, a, w->V, z, w->n, w->s, e);
    for (int c = 0; c < Cu; c++) out[co[c]] += w->n[c];
    return sat;
}

#define STAGE_ARGS int A, int Ru, int Cu, int n_in, int n_out, int adc_q, const float *q,          \
    const float *var, const float *fs, const float *rowg, const int64_t *cin, const int64_t *cout,  \
    const uint8_t *conv
#define STAGE_INIT {A, Ru, Cu, n_in, n_out, adc_q, q, var, fs, rowg, cin, cout, conv}

static int nz_of(const stage_t *st) { return st->var ? ((st->A * st->Cu + 7) / 8) * 8 : 0; }

/* A stateless stage on rows x (R, n_in) (already DAC'd): y (R, n_out). Stream of row i: row0 + i.
   Rows in chunks of ROWS (fixed, so the energy sum does not depend on the threads). */
#define ROWS 32
int64_t xbar_stage(STAGE_ARGS, int64_t R, const float *x, float *y, uint64_t seed, uint64_t row0,
                   double *energy, int threads)
{
    zig_init();
    stage_t st = STAGE_INIT;
    const int64_t nch = (R + ROWS - 1) / ROWS;
    const int NZ = nz_of(&st);
    double *ech = calloc(nch > 0 ? nch : 1, sizeof(double));
    int64_t sat = 0, fail = ech == NULL;
    if (fail) return -1;
#pragma omp parallel num_threads(threads) reduction(+:sat, fail)
    {
        work_t w;
        float *v = malloc(sizeof(float) * ROWS * (n_in + 1)), *out = malloc(sizeof(float) * ROWS * (n_out + 1));
        float *z = malloc(sizeof(float) * ROWS * (NZ + 8));
        stream_t *rs = malloc(sizeof(stream_t) * ROWS);
        if (!work_alloc(&w, &st) || !v || !out || !z || !rs) fail = 1;
        else {
#pragma omp for schedule(dynamic, 4)
            for (int64_t ch = 0; ch < nch; ch++) {
                const int64_t i0 = ch * ROWS;
                const int nr = (int)(R - i0 < ROWS ? R - i0 : ROWS);
                double en = 0;
                for (int i = 0; i < nr; i++) {
                    float *vi = v + (size_t)i * (n_in + 1);
                    memcpy(vi, x + (size_t)(i0 + i) * n_in, sizeof(float) * n_in);
                    vi[n_in] = 0;
                    memset(out + (size_t)i * (n_out + 1), 0, sizeof(float) * (n_out + 1));
                    if (NZ) {
                        stream_seed(rs + i, seed, row0 + (uint64_t)(i0 + i));
                        stream_normals(rs + i, NZ, z + (size_t)i * NZ);
                    }
                }
                for (int a = 0; a < st.A; a++)
                    for (int i = 0; i < nr; i++)
                        sat += array_mvm(&st, a, v + (size_t)i * (n_in + 1), z + (size_t)i * NZ + (size_t)a * Cu,
                                         out + (size_t)i * (n_out + 1), &en, &w);
                for (int i = 0; i < nr; i++)
                    memcpy(y + (size_t)(i0 + i) * n_out, out + (size_t)i * (n_out + 1), sizeof(float) * n_out);
                ech[ch] = en;
            }
        }
        work_free(&w); free(v); free(out); free(z); free(rs);
    }
    double en = 0;
    for (int64_t ch = 0; ch < nch; ch++) en += ech[ch];
    free(ech);
    *energy += en;
    return fail ? -1 : sat;
}

/* An S4D stage over sequences: vu (B, L, H) DAC'd inputs; scale (H * K) the digital column
   scales; state: digital (DAC, dac_q steps) or analog (clamp to [-1, 1]); y (B, L, H) the
   output column (times scale, before the caller's range gain). Stream of sample b: row0 + b.
   Samples in chunks (at most SAMPLES, balanced over the threads), each chunk token by token,
   every array passing all samples of the chunk in turn. */
#define SAMPLES 16
int64_t xbar_s4d(STAGE_ARGS, int B, int L, int H, int K, const float *scale, const float *vu,
                 int digital, int dac_q, float *y, uint64_t seed, uint64_t row0, double *energy,
                 int threads)
{
    zig_init();
    stage_t st = STAGE_INIT;
    const int N = H * K, NZ = nz_of(&st);
    const float qd = (float)dac_q;
    const int T = threads > 0 ? threads : 1;
    int nch = T * ((B + SAMPLES * T - 1) / (SAMPLES * T));
    const int Bc = nch > 0 ? (B + nch - 1) / nch : 1;
    nch = (B + Bc - 1) / Bc;
    double *eb = calloc(B > 0 ? B : 1, sizeof(double));
    int64_t sat = 0, fail = eb == NULL;
    if (fail) return -1;
#pragma omp parallel num_threads(threads) reduction(+:sat, fail)
    {
        work_t w;
        float *v = malloc(sizeof(float) * Bc * (N + 1)), *out = malloc(sizeof(float) * Bc * (N + 1));
        float *z = malloc(sizeof(float) * Bc * (NZ + 8));
        stream_t *rs = malloc(sizeof(stream_t) * Bc);
        if (!work_alloc(&w, &st) || !v || !out || !z || !rs) fail = 1;
        else {
#pragma omp for schedule(dynamic, 1)
            for (int ch = 0; ch < nch; ch++) {
                const int b0 = ch * Bc, nb = B - b0 < Bc ? B - b0 : Bc;
                for (int i = 0; i < nb; i++) {
                    stream_seed(rs + i, seed, row0 + (uint64_t)(b0 + i));
                    memset(v + (size_t)i * (N + 1), 0, sizeof(float) * (N + 1));      /* w_(-1) = 0 */
                }
                for (int t = 0; t < L; t++) {
                    for (int i = 0; i < nb; i++) {
                        const float *u = vu + ((size_t)(b0 + i) * L + t) * H;
                        float *vi = v + (size_t)i * (N + 1);
                        for (int h = 0; h < H; h++) vi[(size_t)h * K + K - 1] = u[h];
                        memset(out + (size_t)i * (N + 1), 0, sizeof(float) * (N + 1));
                        if (NZ) stream_normals(rs + i, NZ, z + (size_t)i * NZ);
                    }
                    for (int a = 0; a < st.A; a++)
                        for (int i = 0; i < nb; i++)
                            sat += array_mvm(&st, a, v + (size_t)i * (N + 1), z + (size_t)i * NZ + (size_t)a * Cu,
                                             out + (size_t)i * (N + 1), eb + b0 + i, &w);
                    for (int i = 0; i < nb; i++) {
                        const float *oi = out + (size_t)i * (N + 1);
                        float *vi = v + (size_t)i * (N + 1);
                        float *yo = y + ((size_t)(b0 + i) * L + t) * H;
                        for (int h = 0; h < H; h++) {
                            const float *o = oi + (size_t)h * K, *sc = scale + (size_t)h * K;
                            float *wv = vi + (size_t)h * K;
                            for (int k = 0; k < K - 1; k++) {
                                float x = o[k] * sc[k];
                                if (digital) {
                                    float zz = x / 1.0f;
                                    zz = zz > 1 ? 1 : (zz < -1 ? -1 : zz);
                                    x = floorf(zz * qd + 0.5f) / qd * 1.0f;
                                } else
                                    x = x > 1 ? 1 : (x < -1 ? -1 : x);
                                wv[k] = x;
                            }
                            yo[h] = o[K - 1] * sc[K - 1];
                        }
                    }
                }
            }
        }
        work_free(&w); free(v); free(out); free(z); free(rs);
    }
    double en = 0;
    for (int b = 0; b < B; b++) en += eb[b];
    free(eb);
    *energy += en;
    return fail ? -1 : sat;
}

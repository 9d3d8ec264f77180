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
   are one pass over the array's rows (a zero input adds exactly 0), in SIMD vectors of 8
   columns (GCC vector extensions: AVX2/FMA with -march=native on x86, plain code elsewhere).
   The S4D stage feeds its state back from the column outputs through maps built once per call.

   Normal deviates: Box-Muller on 24-bit uniforms from 8 lanes of xoshiro128++ (Blackman and
   Vigna) stepped as one SIMD vector, log, sine and cosine as single-precision polynomials
   (Cephes). One stream per input row of a linear stage and per sample of an S4D stage (over all
   its tokens), seeded from (seed, row): the result does not depend on how rows or samples are
   split into calls, chunks or threads (OpenMP over chunks of rows or samples when built with
   -fopenmp). Built without -ffast-math (IEEE converters). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf8 __attribute__((vector_size(32)));
typedef float vf8u __attribute__((vector_size(32), aligned(4)));
typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef uint32_t vu8u __attribute__((vector_size(32), aligned(4)));

/* ---- random numbers ------------------------------------------------------------------------ */
static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* one stream: 8 xoshiro128++ lanes (word w of lane l at s[w][l]) seeded by splitmix64 */
typedef struct { uint32_t s[4][8]; } stream_t;

static void stream_seed(stream_t *st, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed * 0x2545f4914f6cdd1dULL ^ (stream + 0x632be59bd9b4e019ULL);
    for (int w = 0; w < 4; w++)
        for (int l = 0; l < 8; l += 2) {
            uint64_t z = splitmix(&x);
            st->s[w][l] = (uint32_t)z;
            st->s[w][l + 1] = (uint32_t)(z >> 32);
        }
}

static inline vu8 vrotl(vu8 x, int k) { return (x << k) | (x >> (32 - k)); }

typedef int32_t vi8 __attribute__((vector_size(32)));

static inline vf8 vsel(vi8 m, vf8 a, vf8 b) { return (vf8)((m & (vi8)a) | (~m & (vi8)b)); }

/* ln x for x in (0, 1) (normal floats), the single-precision Cephes polynomial: relative error
   about 1e-7 */
static inline vf8 vlog(vf8 x)
{
    const vi8 bits = (vi8)x;
    vi8 e = ((bits >> 23) & 0xff) - 127;
    vf8 m = (vf8)((bits & 0x007fffff) | 0x3f800000);            /* [1, 2) */
    const vi8 big = m > 1.41421356237f;
    m = vsel(big, m * 0.5f, m);                                   /* [sqrt(1/2), sqrt(2)) */
    e -= big;                                                     /* big is -1 where true */
    const vf8 f = m - 1.0f, z = f * f;
    vf8 y = 7.0376836292E-2f * f - 1.1514610310E-1f;
    y = y * f + 1.1676998740E-1f;
    y = y * f - 1.2420140846E-1f;
    y = y * f + 1.4249322787E-1f;
    y = y * f - 1.6668057665E-1f;
    y = y * f + 2.0000714765E-1f;
    y = y * f - 2.4999993993E-1f;
    y = y * f + 3.3333331174E-1f;
    y = y * f * z;
    const vf8 ef = __builtin_convertvector(e, vf8);
    y += -2.12194440E-4f * ef;
    y += -0.5f * z;
    return f + y + 0.693359375f * ef;
}

/* Box-Muller: 16 standard normal deviates from two vectors of 8 uniform 32-bit words (the top
   24 bits of each), log, sin and cos as single-precision polynomials */
static inline __attribute__((always_inline)) void box_muller(vu8 r0, vu8 r1, float *out)
{
    const vf8 u1 = (__builtin_convertvector((vi8)(r0 >> 8), vf8) + 0.5f) * (1.0f / 16777216.0f);   /* (0, 1) */
    const vf8 t4 = __builtin_convertvector((vi8)(r1 >> 8), vf8) * (4.0f / 16777216.0f);   /* 4 u2, [0, 4) */
    vf8 rad = -2.0f * vlog(u1);
    float rl[8];
    memcpy(rl, &rad, sizeof rl);
    for (int l = 0; l < 8; l++) rl[l] = sqrtf(rl[l]);
    memcpy(&rad, rl, sizeof rl);
    /* angle 2 pi u2 = q pi/2 + f, q the nearest quadrant, |f| <= pi/4 */
    const vi8 q = __builtin_convertvector(t4 + 0.5f, vi8);
    const vf8 f = (t4 - __builtin_convertvector(q, vf8)) * 1.57079632679f, x2 = f * f;
    const vf8 sf = f + f * x2 * ((-1.9515295891E-4f * x2 + 8.3321608736E-3f) * x2 - 1.6666654611E-1f);
    const vf8 cf = 1.0f - 0.5f * x2 + x2 * x2 * ((2.443315711809948E-5f * x2 - 1.388731625493765E-3f) * x2
                                                 + 4.166664568298827E-2f);
    const vi8 swap = -(q & 1);
    const vi8 cs = (vi8)((((vu8)q + 1) & 2) << 30), ss = (vi8)(((vu8)q & 2) << 30);     /* sign bits */
    const vf8 c = (vf8)((vi8)vsel(swap, sf, cf) ^ cs), s = (vf8)((vi8)vsel(swap, cf, sf) ^ ss);
    *(vf8u *)out = rad * c;
    *(vf8u *)(out + 8) = rad * s;
}

/* n standard normal deviates (n a multiple of 32) of the stream into out */
static void stream_normals(stream_t *st, int n, float *restrict out)
{
    vu8 s0 = *(const vu8u *)st->s[0], s1 = *(const vu8u *)st->s[1];
    vu8 s2 = *(const vu8u *)st->s[2], s3 = *(const vu8u *)st->s[3];
    for (int i = 0; i < n; i += 32) {
        vu8 r[4];
        for (int j = 0; j < 4; j++) {
            r[j] = vrotl(s0 + s3, 7) + s0;              /* xoshiro128++ */
            const vu8 t = s1 << 9;
            s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = vrotl(s3, 11);
        }
        box_muller(r[0], r[1], out + i);                /* two independent chains in flight */
        box_muller(r[2], r[3], out + i + 16);
    }
    *(vu8u *)st->s[0] = s0; *(vu8u *)st->s[1] = s1; *(vu8u *)st->s[2] = s2; *(vu8u *)st->s[3] = s3;
}

void xbar_normals(int64_t n, uint64_t seed, uint64_t stream, double *out)
{
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

/* sum_r V_r^2 g_r over n rows: 8 float lanes (relative error ~1e-7), summed in double */
static double energy_sum(const float *V, const float *g, int n)
{
    vf8 ea = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const vf8 x = *(const vf8u *)(V + k);
        ea += x * x * *(const vf8u *)(g + k);
    }
    double en = 0;
    for (int l = 0; l < 8; l++) en += ea[l];
    for (; k < n; k++) en += (double)(V[k] * V[k]) * g[k];
    return en;
}

/* array a on its row voltages V (Ru): the Cu column outputs (after noise and ADC) into n, z the
   Cu normal deviates of this read (if var), s (Cu) scratch; returns the ADC saturations */
static int64_t array_core(const stage_t *st, int a, const float *restrict V, const float *restrict z,
                          float *restrict n, float *restrict s)
{
    const int Ru = st->Ru, Cu = st->Cu;
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
    *e += energy_sum(w->V, st->rowg + (size_t)a * Ru, Ru);
    const int64_t sat = array_core(st, a, w->V, z, w->n, w->s);
    for (int c = 0; c < Cu; c++) out[co[c]] += w->n[c];
    return sat;
}

#define STAGE_ARGS int A, int Ru, int Cu, int n_in, int n_out, int adc_q, const float *q,          \
    const float *var, const float *fs, const float *rowg, const int64_t *cin, const int64_t *cout,  \
    const uint8_t *conv
#define STAGE_INIT {A, Ru, Cu, n_in, n_out, adc_q, q, var, fs, rowg, cin, cout, conv}

static int nz_of(const stage_t *st) { return st->var ? ((st->A * st->Cu + 31) / 32) * 32 : 0; }

/* A stateless stage on rows x (R, n_in) (already DAC'd): y (R, n_out). Stream of row i: row0 + i.
   Rows in chunks of ROWS (fixed, so the energy sum does not depend on the threads). */
#define ROWS 32
int64_t xbar_stage(STAGE_ARGS, int64_t R, const float *x, float *y, uint64_t seed, uint64_t row0,
                   double *energy, int threads)
{
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
        float *z = malloc(sizeof(float) * ROWS * (NZ + 32));
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
   scales; state: digital (DAC, dac_q steps; with dith (L, H, K - 1) the rounding offset of each
   token, channel and state instead of 1/2) or analog (clamp to [-1, 1]); y (B, L, H) the
   output column (times scale, before the caller's range gain). Stream of sample b: row0 + b.
   Samples in chunks (at most SAMPLES, balanced over the threads), each chunk token by token,
   every array passing all samples of the chunk in turn. */
#define SAMPLES 16
int64_t xbar_s4d(STAGE_ARGS, int B, int L, int H, int K, const float *scale, const float *vu,
                 int digital, int dac_q, const float *dith, float *y, uint64_t seed, uint64_t row0,
                 double *energy, int threads)
{
    stage_t st = STAGE_INIT;
    const int N = H * K, NZ = nz_of(&st), S = A * Ru, C = A * Cu;
    const float qd = (float)dac_q;
    const int T = threads > 0 ? threads : 1;
    int nch = T * ((B + SAMPLES * T - 1) / (SAMPLES * T));
    const int Bc = nch > 0 ? (B + nch - 1) / nch : 1;
    nch = (B + Bc - 1) / Bc;
    /* Maps. Row slot i = (a, r) drives state index j = cin[i]: the input u[j / K] (k = K - 1),
       else the state DAC(out[j] scale[j]) of the previous token (0 before the first), out[j]
       read from the one array column that computes it (opos[j]; none: the zero after the
       columns); an undriven row reads that zero too. An output computed by two columns (never
       for S4D blocks) is an error (-2). */
    int *cnt = calloc((size_t)N + 1, sizeof(int)), *opos = malloc(sizeof(int) * (N + 1));
    int *srcn = malloc(sizeof(int) * (S + 8)), *uslot = malloc(sizeof(int) * (S + 1)), *uh = malloc(sizeof(int) * (S + 1));
    int *ysrc = malloc(sizeof(int) * (H + 1)), *doff = malloc(sizeof(int) * (S + 8));
    float *scl = malloc(sizeof(float) * (S + 8)), *ysc = malloc(sizeof(float) * (H + 1));
    double *eb = calloc(B > 0 ? B : 1, sizeof(double));
    int64_t sat = 0, fail = !cnt || !opos || !srcn || !uslot || !uh || !ysrc || !doff || !scl || !ysc || !eb, dup = 0;
    int nu = 0;
    if (!fail) {
        for (int i = 0; i < C; i++) {
            const int64_t j = cout[i];
            if (j >= 0 && j < N) { cnt[j]++; opos[j] = i; }
        }
        for (int j = 0; j < N; j++) {
            dup |= cnt[j] > 1;
            if (!cnt[j]) opos[j] = C;
        }
        for (int i = 0; i < S; i++) {
            const int64_t j = cin[i];
            srcn[i] = C;
            scl[i] = 0;
            doff[i] = -1;                              /* dither offset of the state in the slot */
            if (j >= 0 && j < N) {
                if (j % K == K - 1) { uslot[nu] = i; uh[nu++] = (int)(j / K); }
                else { srcn[i] = opos[j]; scl[i] = scale[j]; doff[i] = (int)(j / K * (K - 1) + j % K); }
            }
        }
        for (int h = 0; h < H; h++) {
            const int j = h * K + K - 1;
            ysrc[h] = opos[j];
            ysc[h] = scale[j];
        }
    }
    if (!fail && !dup) {
#pragma omp parallel num_threads(threads) reduction(+:sat, fail)
    {
        work_t w;
        float *V = malloc(sizeof(float) * Bc * (S + 8)), *nb = malloc(sizeof(float) * Bc * (C + 8));
        float *z = malloc(sizeof(float) * Bc * (NZ + 32));
        stream_t *rs = malloc(sizeof(stream_t) * Bc);
        if (!work_alloc(&w, &st) || !V || !nb || !z || !rs) fail = 1;
        else {
#pragma omp for schedule(dynamic, 1)
            for (int ch = 0; ch < nch; ch++) {
                const int b0 = ch * Bc, nb_ = B - b0 < Bc ? B - b0 : Bc;
                for (int i = 0; i < nb_; i++) {
                    stream_seed(rs + i, seed, row0 + (uint64_t)(b0 + i));
                    memset(nb + (size_t)i * (C + 8), 0, sizeof(float) * (C + 8));     /* w_(-1) = 0 */
                }
                for (int t = 0; t < L; t++) {
                    for (int i = 0; i < nb_; i++) {
                        const float *src = nb + (size_t)i * (C + 8);
                        const float *u = vu + ((size_t)(b0 + i) * L + t) * H;
                        float *Vi = V + (size_t)i * (S + 8);
                        for (int s = 0; s < S; s++) Vi[s] = src[srcn[s]];
                        /* the state made at token t - 1 (0 before the first), rounded now */
                        const float *dt = dith && t > 0 ? dith + (size_t)(t - 1) * H * (K - 1) : NULL;
                        if (digital)
                            for (int s = 0; s < S; s++) {
                                float x = Vi[s] * scl[s];
                                float zz = x / 1.0f;
                                zz = zz > 1 ? 1 : (zz < -1 ? -1 : zz);
                                const float off = dt && doff[s] >= 0 ? dt[doff[s]] : 0.5f;
                                Vi[s] = floorf(zz * qd + off) / qd * 1.0f;
                            }
                        else
                            for (int s = 0; s < S; s++) {
                                const float x = Vi[s] * scl[s];
                                Vi[s] = x > 1 ? 1 : (x < -1 ? -1 : x);
                            }
                        for (int m = 0; m < nu; m++) Vi[uslot[m]] = u[uh[m]];
                        eb[b0 + i] += energy_sum(Vi, rowg, S);
                        if (NZ) stream_normals(rs + i, NZ, z + (size_t)i * NZ);
                    }
                    for (int a = 0; a < A; a++)
                        for (int i = 0; i < nb_; i++)
                            sat += array_core(&st, a, V + (size_t)i * (S + 8) + (size_t)a * Ru,
                                              z + (size_t)i * NZ + (size_t)a * Cu,
                                              nb + (size_t)i * (C + 8) + (size_t)a * Cu, w.s);
                    for (int i = 0; i < nb_; i++) {
                        const float *src = nb + (size_t)i * (C + 8);
                        float *yo = y + ((size_t)(b0 + i) * L + t) * H;
                        for (int h = 0; h < H; h++) yo[h] = src[ysrc[h]] * ysc[h];
                    }
                }
            }
        }
        work_free(&w); free(V); free(nb); free(z); free(rs);
    }
    }
    double en = 0;
    for (int b = 0; b < B && !fail; b++) en += eb[b];
    free(cnt); free(opos); free(srcn); free(uslot); free(uh); free(ysrc); free(doff); free(scl); free(ysc); free(eb);
    *energy += en;
    return fail ? -1 : dup ? -2 : sat;
}

/* edgessm fast CPU streaming kernel: one token of a whole S4D network, float32,
 * for a batch of independent streams, no allocation.
 *
 * Layout (all row-major, float32):
 *   encoder W (H x d_in), b (H); per layer: dA and C~ = C * dB as (H x N2) real and
 *   imaginary planes (no dB: the state is kept scaled as x~ = x / dB, so
 *   x~' = dA x~ + u and y = Re(C~ x~), the same outputs as x' = dA x + dB u, y = Re(C x),
 *   with no division, exact also where dB is 0), D (H), mixing W (M x H) with M = 2H (GLU) or H, b (M), norm gamma/beta (H);
 *   decoder W (d_out x H), b (d_out).
 *   state per stream: per layer (H x N2) real plane then imaginary plane; then the running
 *   sum of the last block's output (H) for a mean readout.
 *
 * Two paths: one stream at a time (matrix-vector products), and, for 2+ streams, tiles of
 * up to LANES streams processed layer by layer with activations stored transposed
 * (feature-major, LANES streams contiguous), so every weight is read once per tile and the
 * mixing layer is a small GEMM (an outer-product micro-kernel over LANES streams).
 * Activation functions run as separate loops so they vectorize (glibc libmvec erff/expf).
 */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* -fno-finite-math-only leaves __FAST_MATH__ undefined, so glibc does not declare its vector
 * (libmvec) variants of erff/expf; declare them here so the activation loops vectorize.
 * Compiled on the machine that runs it, so the headers describe the libm that is loaded. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__FAST_MATH__) && \
    defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 35)
float erff(float) __attribute__((__simd__("notinbranch")));
#endif
#if __GLIBC_PREREQ(2, 22)
float expf(float) __attribute__((__simd__("notinbranch")));
#endif
#endif

enum { ACT_RELU = 0, ACT_GELU = 1 };
enum { MIX_LINEAR = 0, MIX_GLU = 1 };
enum { NORM_NONE = 0, NORM_LAYER = 1, NORM_AFFINE = 2 };
enum { LANES = 16, ROWS = 8 };

typedef struct {
    int d_in, H, N2, d_out, n_layers;
    int act, mix, residual, norm, prenorm, readout_mean;
    float eps;
    const float *enc_w, *enc_b, *dec_w, *dec_b;
    const float *const *dA_re, *const *dA_im;
    const float *const *C_re, *const *C_im, *const *D;
    const float *const *mix_w, *const *mix_b, *const *gamma, *const *beta;
    const float *const *mix_wt;   /* mixing W transposed (H x M), for the one-stream path */
} Net;

/* in-place activation over n contiguous values (vectorizes: no branch on kind inside) */
static void act_vec(float *restrict v, int n, int kind) {
    if (kind == ACT_RELU) {
        for (int i = 0; i < n; i++) v[i] = v[i] > 0.f ? v[i] : 0.f;
    } else {
        for (int i = 0; i < n; i++) v[i] = 0.5f * v[i] * (1.f + erff(v[i] * 0.70710678118654752f));
    }
}

/* out[i] = a[i] * sigmoid(g[i]) */
static void glu_vec(float *restrict out, const float *restrict a, const float *restrict g, int n) {
    for (int i = 0; i < n; i++) out[i] = a[i] / (1.f + expf(-g[i]));
}

static void matvec(const float *restrict W, const float *restrict b, const float *restrict x,
                   float *restrict y, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        const float *restrict w = W + (size_t)r * cols;
        float acc = 0.f;
        for (int c = 0; c < cols; c++) acc += w[c] * x[c];
        y[r] = acc + b[r];
    }
}

/* y = b + W x from W transposed (WT: cols x rows): blocks of rows held in vector registers
 * while the columns stream past, so no horizontal sums and no dependency chain per row
 * (the row-major dot product above is latency-bound on its single accumulator). */
typedef float v16 __attribute__((vector_size(16 * sizeof(float)), aligned(sizeof(float))));

static void matvec_t(const float *restrict WT, const float *restrict b, const float *restrict x,
                     float *restrict y, int rows, int cols) {
    int r = 0;
    for (; r + 128 <= rows; r += 128) {
        v16 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = *(const v16 *)(b + r + 16 * i);
        for (int c = 0; c < cols; c++) {
            const float *restrict w = WT + (size_t)c * rows + r;
            float xc = x[c];
            for (int i = 0; i < 8; i++) acc[i] += *(const v16 *)(w + 16 * i) * xc;
        }
        for (int i = 0; i < 8; i++) *(v16 *)(y + r + 16 * i) = acc[i];
    }
    for (; r + 16 <= rows; r += 16) {
        v16 acc = *(const v16 *)(b + r);
        for (int c = 0; c < cols; c++) acc += *(const v16 *)(WT + (size_t)c * rows + r) * x[c];
        *(v16 *)(y + r) = acc;
    }
    for (; r < rows; r++) {
        float acc = b[r];
        for (int c = 0; c < cols; c++) acc += WT[(size_t)c * rows + r] * x[c];
        y[r] = acc;
    }
}

/* one channel of the diagonal complex SSM: update N2 modes, return Re(C x) */
static inline float ssm_channel(const float *restrict ar, const float *restrict ai,
                                const float *restrict cr, const float *restrict ci,
                                float *restrict xr, float *restrict xi, float u, int N2) {
    float y = 0.f;
    for (int k = 0; k < N2; k++) {
        float r = ar[k] * xr[k] - ai[k] * xi[k] + u;
        float i = ar[k] * xi[k] + ai[k] * xr[k];
        xr[k] = r; xi[k] = i;
        y += cr[k] * r - ci[k] * i;
    }
    return y;
}

static void normalize(const Net *n, int l, const float *restrict x, float *restrict y) {
    int H = n->H;
    const float *restrict g = n->gamma[l], *restrict be = n->beta[l];
    if (n->norm == NORM_LAYER) {
        float mean = 0.f, var = 0.f;
        for (int h = 0; h < H; h++) mean += x[h];
        mean /= H;
        for (int h = 0; h < H; h++) { float d = x[h] - mean; var += d * d; }
        float inv = 1.f / sqrtf(var / H + n->eps);
        for (int h = 0; h < H; h++) y[h] = (x[h] - mean) * inv * g[h] + be[h];
    } else if (n->norm == NORM_AFFINE) {  /* batch norm in eval mode, folded */
        for (int h = 0; h < H; h++) y[h] = x[h] * g[h] + be[h];
    } else {
        memcpy(y, x, sizeof(float) * H);
    }
}

/* ---- one stream ------------------------------------------------------------------------ */
/* work: at least 4*H floats */
static void one_stream(const Net *n, float *state, const float *x, float *out, float *work, long t) {
    int H = n->H, N2 = n->N2;
    float *h = work, *z = work + H, *m = work + 2 * H;   /* m: 2H */
    matvec(n->enc_w, n->enc_b, x, h, H, n->d_in);
    for (int l = 0; l < n->n_layers; l++) {
        float *xr = state + (size_t)l * 2 * H * N2, *xi = xr + (size_t)H * N2;
        if (n->prenorm) normalize(n, l, h, z); else memcpy(z, h, sizeof(float) * H);
        const float *ar = n->dA_re[l], *ai = n->dA_im[l];
        const float *cr = n->C_re[l], *ci = n->C_im[l], *D = n->D[l];
        for (int c = 0; c < H; c++) {
            size_t o = (size_t)c * N2;
            float u = z[c];
            float y = ssm_channel(ar + o, ai + o, cr + o, ci + o, xr + o, xi + o, u, N2);
            z[c] = 2.f * y + D[c] * u;
        }
        act_vec(z, H, n->act);
        if (n->mix == MIX_GLU) {
            matvec_t(n->mix_wt[l], n->mix_b[l], z, m, 2 * H, H);
            glu_vec(z, m, m + H, H);
        } else {
            matvec_t(n->mix_wt[l], n->mix_b[l], z, m, H, H);
            memcpy(z, m, sizeof(float) * H);
            act_vec(z, H, n->act);
        }
        if (n->residual) for (int c = 0; c < H; c++) z[c] += h[c];
        if (!n->prenorm && n->norm != NORM_NONE) normalize(n, l, z, h); else memcpy(h, z, sizeof(float) * H);
    }
    if (n->readout_mean) {
        float *sum = state + (size_t)n->n_layers * 2 * H * N2;
        float inv = 1.f / (float)t;
        for (int c = 0; c < H; c++) { sum[c] += h[c]; z[c] = sum[c] * inv; }
        matvec(n->dec_w, n->dec_b, z, out, n->d_out, H);
    } else {
        matvec(n->dec_w, n->dec_b, h, out, n->d_out, H);
    }
}

/* ---- a tile of up to LANES streams, feature-major activations ------------------------- */
/* Y[r][:] = b[r] + sum_c W[r][c] * X[c][:], X (cols x LANES), Y (rows x LANES) */
typedef float vlanes __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));

static void gemm_t(const float *restrict W, const float *restrict b, const float *restrict X,
                   float *restrict Y, int rows, int cols) {
    int r = 0;
    for (; r + ROWS <= rows; r += ROWS) {
        vlanes acc[ROWS];
        for (int i = 0; i < ROWS; i++) acc[i] = (vlanes){0} + b[r + i];
        const float *restrict w = W + (size_t)r * cols;
        for (int c = 0; c < cols; c++) {
            vlanes xc = *(const vlanes *)(X + (size_t)c * LANES);
            for (int i = 0; i < ROWS; i++) acc[i] += w[(size_t)i * cols + c] * xc;
        }
        for (int i = 0; i < ROWS; i++) *(vlanes *)(Y + (size_t)(r + i) * LANES) = acc[i];
    }
    for (; r < rows; r++) {
        vlanes acc = (vlanes){0} + b[r];
        const float *restrict w = W + (size_t)r * cols;
        for (int c = 0; c < cols; c++) acc += w[c] * *(const vlanes *)(X + (size_t)c * LANES);
        *(vlanes *)(Y + (size_t)r * LANES) = acc;
    }
}

static void normalize_t(const Net *n, int l, const float *restrict X, float *restrict Y) {
    int H = n->H;
    const float *restrict g = n->gamma[l], *restrict be = n->beta[l];
    if (n->norm == NORM_LAYER) {
        float mean[LANES] = {0}, var[LANES] = {0}, inv[LANES];
        for (int h = 0; h < H; h++) for (int s = 0; s < LANES; s++) mean[s] += X[h * LANES + s];
        for (int s = 0; s < LANES; s++) mean[s] /= H;
        for (int h = 0; h < H; h++)
            for (int s = 0; s < LANES; s++) { float d = X[h * LANES + s] - mean[s]; var[s] += d * d; }
        for (int s = 0; s < LANES; s++) inv[s] = 1.f / sqrtf(var[s] / H + n->eps);
        for (int h = 0; h < H; h++)
            for (int s = 0; s < LANES; s++) Y[h * LANES + s] = (X[h * LANES + s] - mean[s]) * inv[s] * g[h] + be[h];
    } else if (n->norm == NORM_AFFINE) {
        for (int h = 0; h < H; h++)
            for (int s = 0; s < LANES; s++) Y[h * LANES + s] = X[h * LANES + s] * g[h] + be[h];
    } else {
        memcpy(Y, X, sizeof(float) * H * LANES);
    }
}

size_t edgessm_state_floats(const Net *n) {
    return (size_t)n->n_layers * 2 * n->H * n->N2 + (n->readout_mean ? n->H : 0);
}

/* work floats needed by every entry point */
size_t edgessm_work_floats(const Net *n) {
    int H = n->H, io = n->d_in > n->d_out ? n->d_in : n->d_out;
    return (size_t)LANES * (4 * (size_t)H + io) + 16;
}

/* cnt (1..LANES) streams: st[s] state, x row s at x + s*d_in, out row s at out + s*d_out */
static void tile_streams(const Net *n, float *const *st, const float *x, float *out,
                         const long *t, int cnt, float *work) {
    int H = n->H, N2 = n->N2, din = n->d_in, dout = n->d_out;
    float *restrict h = work, *restrict z = h + (size_t)H * LANES, *restrict m = z + (size_t)H * LANES;
    float *restrict io = m + (size_t)2 * H * LANES;   /* d_in or d_out rows x LANES */
    /* encoder */
    memset(io, 0, sizeof(float) * din * LANES);
    for (int s = 0; s < cnt; s++) for (int i = 0; i < din; i++) io[i * LANES + s] = x[(size_t)s * din + i];
    gemm_t(n->enc_w, n->enc_b, io, h, H, din);
    for (int l = 0; l < n->n_layers; l++) {
        size_t off = (size_t)l * 2 * H * N2;
        if (n->prenorm) normalize_t(n, l, h, z); else memcpy(z, h, sizeof(float) * H * LANES);
        const float *ar = n->dA_re[l], *ai = n->dA_im[l];
        const float *cr = n->C_re[l], *ci = n->C_im[l], *D = n->D[l];
        /* stream by stream (each stream's layer state is read sequentially); the layer's
         * SSM coefficients stay in L2 across the tile */
        for (int s = 0; s < cnt; s++) {
            float *xr = st[s] + off, *xi = xr + (size_t)H * N2;
            for (int c = 0; c < H; c++) {
                size_t o = (size_t)c * N2;
                float u = z[(size_t)c * LANES + s];
                float y = ssm_channel(ar + o, ai + o, cr + o, ci + o, xr + o, xi + o, u, N2);
                z[(size_t)c * LANES + s] = 2.f * y + D[c] * u;
            }
        }
        for (int c = 0; c < H; c++) for (int s = cnt; s < LANES; s++) z[(size_t)c * LANES + s] = 0.f;
        act_vec(z, H * LANES, n->act);
        if (n->mix == MIX_GLU) {
            gemm_t(n->mix_w[l], n->mix_b[l], z, m, 2 * H, H);
            glu_vec(z, m, m + (size_t)H * LANES, H * LANES);
        } else {
            gemm_t(n->mix_w[l], n->mix_b[l], z, m, H, H);
            memcpy(z, m, sizeof(float) * H * LANES);
            act_vec(z, H * LANES, n->act);
        }
        if (n->residual) for (int i = 0; i < H * LANES; i++) z[i] += h[i];
        if (!n->prenorm && n->norm != NORM_NONE) normalize_t(n, l, z, h);
        else memcpy(h, z, sizeof(float) * H * LANES);
    }
    if (n->readout_mean) {
        for (int s = 0; s < cnt; s++) {
            float *sum = st[s] + (size_t)n->n_layers * 2 * H * N2;
            float inv = 1.f / (float)t[s];
            for (int c = 0; c < H; c++) { sum[c] += h[c * LANES + s]; z[c * LANES + s] = sum[c] * inv; }
        }
        gemm_t(n->dec_w, n->dec_b, z, io, dout, H);
    } else {
        gemm_t(n->dec_w, n->dec_b, h, io, dout, H);
    }
    for (int s = 0; s < cnt; s++) for (int o = 0; o < dout; o++) out[(size_t)s * dout + o] = io[o * LANES + s];
}

/* Scratch memory: one block per calling thread (grown on demand, freed when the thread
 * exits), so any number of threads may step different states of one network at once; the
 * network itself is only read. */
static pthread_key_t work_key;
static pthread_once_t work_once = PTHREAD_ONCE_INIT;
typedef struct { size_t cap; float data[]; } Work;

static void work_key_init(void) { pthread_key_create(&work_key, free); }

static float *thread_work(const Net *n) {
    size_t need = edgessm_work_floats(n);
    pthread_once(&work_once, work_key_init);
    Work *w = (Work *)pthread_getspecific(work_key);
    if (w && w->cap >= need) return w->data;
    Work *g = (Work *)malloc(sizeof(Work) + need * sizeof(float));
    if (!g) return NULL;
    g->cap = need;
    if (pthread_setspecific(work_key, g)) { free(g); return NULL; }
    free(w);
    return g->data;
}

/* One token for `batch` streams. states: batch blocks of edgessm_state_floats; t: tokens
 * seen by each stream after this one (for the mean readout); work: edgessm_work_floats. */
static void step_batch(const Net *n, float *states, const float *x, float *out, const long *t,
                       int batch, float *work) {
    size_t S = edgessm_state_floats(n);
    if (batch == 1) { one_stream(n, states, x, out, work, t[0]); return; }
    for (int b0 = 0; b0 < batch; b0 += LANES) {
        int cnt = batch - b0 < LANES ? batch - b0 : LANES;
        float *st[LANES];
        for (int s = 0; s < cnt; s++) st[s] = states + (size_t)(b0 + s) * S;
        tile_streams(n, st, x + (size_t)b0 * n->d_in, out + (size_t)b0 * n->d_out, t + b0, cnt, work);
    }
}

/* Token check, before anything changes: 0 if every |x| <= max_abs, 1 if some value is NaN
 * or infinite, 2 if some finite value is larger in magnitude than max_abs. Reads the bits
 * (IEEE order of magnitudes), so it holds whatever the floating-point flags. */
static int check_tokens(const float *x, size_t count, float max_abs) {
    uint32_t lim, bits;
    int rc = 0;
    memcpy(&lim, &max_abs, sizeof lim);
    lim &= 0x7fffffffu;
    for (size_t i = 0; i < count; i++) {
        memcpy(&bits, x + i, sizeof bits);
        bits &= 0x7fffffffu;
        if (bits > lim) {
            if (bits >= 0x7f800000u) return 1;
            rc = 2;
        }
    }
    return rc;
}

/* A whole sequence of L tokens for one stream: x (L x d_in) -> out (L x d_out); tokens seen
 * before: t0. Returns 0, or the check_tokens code (nothing changed), or 3 (no memory). */
int edgessm_run(const Net *n, float *state, const float *x, float *out, long L, long t0, float max_abs) {
    int rc = check_tokens(x, (size_t)L * n->d_in, max_abs);
    if (rc) return rc;
    float *work = thread_work(n);
    if (!work) return 3;
    for (long k = 0; k < L; k++)
        one_stream(n, state, x + k * n->d_in, out + k * n->d_out, work, t0 + k + 1);
    return 0;
}

/* One checked call from Python with every pointer bound in advance (one argument crosses the
 * FFI per token). Tokens are validated here, before anything changes (check_tokens codes;
 * 3: no memory). Otherwise each stream's token count goes up by one, the step runs and 0 is
 * returned. */
typedef struct {
    const Net *net;
    float *states;
    const float *x;
    float *out;
    long *t;
    float max_abs;
    int batch;
} StepCall;

int edgessm_step_call(const StepCall *c) {
    int rc = check_tokens(c->x, (size_t)c->batch * c->net->d_in, c->max_abs);
    if (rc) return rc;
    float *work = thread_work(c->net);
    if (!work) return 3;
    for (int b = 0; b < c->batch; b++) c->t[b] += 1;
    step_batch(c->net, c->states, c->x, c->out, c->t, c->batch, work);
    return 0;
}

/* A pool of streams: rows of `states`, token counts `t`. */
typedef struct {
    const Net *net;
    float *states;
    long *t;
    float max_abs;
} Pool;

/* L tokens (L x d_in) for stream row `sid` -> out (L x d_out). Same return codes. */
int edgessm_pool_push(const Pool *p, long sid, const float *x, long L, float *out) {
    size_t S = edgessm_state_floats(p->net);
    int rc = edgessm_run(p->net, p->states + (size_t)sid * S, x, out, L, p->t[sid], p->max_abs);
    if (!rc) p->t[sid] += L;
    return rc;
}

/* One token for each of `count` distinct stream rows idx; x and out have count rows. */
int edgessm_pool_step_rows(const Pool *p, const long *idx, int count, const float *x, float *out) {
    const Net *n = p->net;
    int rc = check_tokens(x, (size_t)count * n->d_in, p->max_abs);
    if (rc) return rc;
    float *work = thread_work(n);
    if (!work) return 3;
    size_t S = edgessm_state_floats(n);
    for (int j = 0; j < count; j++) p->t[idx[j]] += 1;
    if (count == 1) { one_stream(n, p->states + idx[0] * S, x, out, work, p->t[idx[0]]); return 0; }
    for (int j0 = 0; j0 < count; j0 += LANES) {
        int cnt = count - j0 < LANES ? count - j0 : LANES;
        float *st[LANES];
        long tt[LANES];
        for (int s = 0; s < cnt; s++) { st[s] = p->states + idx[j0 + s] * S; tt[s] = p->t[idx[j0 + s]]; }
        tile_streams(n, st, x + (size_t)j0 * n->d_in, out + (size_t)j0 * n->d_out, tt, cnt, work);
    }
    return 0;
}

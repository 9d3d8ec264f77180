/* edgessm fast CPU streaming kernel: one token of a whole S4D network, float32,
 * for a batch of independent streams, no allocation.
 *
 * Layout (all row-major, float32):
 *   encoder W (H x d_in), b (H); per layer: dA, dB, C as (H x N2) real and imaginary
 *   planes, D (H), mixing W (M x H) with M = 2H (GLU) or H, b (M), norm gamma/beta (H);
 *   decoder W (d_out x H), b (d_out).
 *   state per stream: per layer (H x N2) real plane then imaginary plane; then the running
 *   sum of the last block's output (H) for a mean readout.
 */
#include <math.h>
#include <stddef.h>

enum { ACT_RELU = 0, ACT_GELU = 1 };
enum { MIX_LINEAR = 0, MIX_GLU = 1 };
enum { NORM_NONE = 0, NORM_LAYER = 1, NORM_AFFINE = 2 };

typedef struct {
    int d_in, H, N2, d_out, n_layers;
    int act, mix, residual, norm, prenorm, readout_mean;
    float eps;
    const float *enc_w, *enc_b, *dec_w, *dec_b;
    const float *const *dA_re, *const *dA_im, *const *dB_re, *const *dB_im;
    const float *const *C_re, *const *C_im, *const *D;
    const float *const *mix_w, *const *mix_b, *const *gamma, *const *beta;
} Net;

static inline float act(float v, int kind) {
    if (kind == ACT_RELU) return v > 0.f ? v : 0.f;
    return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
}

static void matvec(const float *W, const float *b, const float *x, float *y, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * cols;
        float acc = 0.f;
        for (int c = 0; c < cols; c++) acc += w[c] * x[c];
        y[r] = acc + b[r];
    }
}

static void normalize(const Net *n, int l, const float *x, float *y) {
    int H = n->H;
    if (n->norm == NORM_LAYER) {
        float mean = 0.f, var = 0.f;
        for (int h = 0; h < H; h++) mean += x[h];
        mean /= H;
        for (int h = 0; h < H; h++) { float d = x[h] - mean; var += d * d; }
        float inv = 1.f / sqrtf(var / H + n->eps);
        for (int h = 0; h < H; h++) y[h] = (x[h] - mean) * inv * n->gamma[l][h] + n->beta[l][h];
    } else if (n->norm == NORM_AFFINE) {  /* batch norm in eval mode, folded */
        for (int h = 0; h < H; h++) y[h] = x[h] * n->gamma[l][h] + n->beta[l][h];
    } else {
        for (int h = 0; h < H; h++) y[h] = x[h];
    }
}

/* work: at least 5*H floats per call */
static void one_stream(const Net *n, float *state, const float *x, float *out, float *work, long t) {
    int H = n->H, N2 = n->N2;
    float *h = work, *z = work + H, *m = work + 2 * H;   /* m: 2H */
    matvec(n->enc_w, n->enc_b, x, h, H, n->d_in);
    for (int l = 0; l < n->n_layers; l++) {
        float *xr = state + (size_t)l * 2 * H * N2, *xi = xr + (size_t)H * N2;
        if (n->prenorm) normalize(n, l, h, z); else for (int i = 0; i < H; i++) z[i] = h[i];
        const float *ar = n->dA_re[l], *ai = n->dA_im[l], *br = n->dB_re[l], *bi = n->dB_im[l];
        const float *cr = n->C_re[l], *ci = n->C_im[l], *D = n->D[l];
        for (int c = 0; c < H; c++) {
            float u = z[c], y = 0.f;
            size_t o = (size_t)c * N2;
            for (int k = 0; k < N2; k++) {
                float r = ar[o + k] * xr[o + k] - ai[o + k] * xi[o + k] + br[o + k] * u;
                float i = ar[o + k] * xi[o + k] + ai[o + k] * xr[o + k] + bi[o + k] * u;
                xr[o + k] = r; xi[o + k] = i;
                y += cr[o + k] * r - ci[o + k] * i;
            }
            z[c] = act(2.f * y + D[c] * u, n->act);
        }
        if (n->mix == MIX_GLU) {
            matvec(n->mix_w[l], n->mix_b[l], z, m, 2 * H, H);
            for (int c = 0; c < H; c++) z[c] = m[c] / (1.f + expf(-m[H + c]));
        } else {
            matvec(n->mix_w[l], n->mix_b[l], z, m, H, H);
            for (int c = 0; c < H; c++) z[c] = act(m[c], n->act);
        }
        if (n->residual) for (int c = 0; c < H; c++) z[c] += h[c];
        if (!n->prenorm && n->norm != NORM_NONE) normalize(n, l, z, h); else for (int c = 0; c < H; c++) h[c] = z[c];
    }
    if (n->readout_mean) {
        float *sum = state + (size_t)n->n_layers * 2 * H * N2;
        for (int c = 0; c < H; c++) { sum[c] += h[c]; z[c] = sum[c] / (float)t; }
        matvec(n->dec_w, n->dec_b, z, out, n->d_out, H);
    } else {
        matvec(n->dec_w, n->dec_b, h, out, n->d_out, H);
    }
}

size_t edgessm_state_floats(const Net *n) {
    return (size_t)n->n_layers * 2 * n->H * n->N2 + (n->readout_mean ? n->H : 0);
}

/* One token for `batch` streams. states: batch blocks of edgessm_state_floats; t: tokens
 * seen by each stream after this one (for the mean readout); work: 5*H floats. */
void edgessm_step(const Net *n, float *states, const float *x, float *out, const long *t,
                  int batch, float *work) {
    size_t S = edgessm_state_floats(n);
    for (int b = 0; b < batch; b++)
        one_stream(n, states + b * S, x + (size_t)b * n->d_in, out + (size_t)b * n->d_out, work, t[b]);
}

/* A whole sequence of L tokens for one stream: x (L x d_in) -> out (L x d_out). */
void edgessm_run(const Net *n, float *state, const float *x, float *out, long L, long t0, float *work) {
    for (long k = 0; k < L; k++)
        one_stream(n, state, x + k * n->d_in, out + k * n->d_out, work, t0 + k + 1);
}

/* One token for the streams listed in idx (rows of `states`); x and out have n rows. */
void edgessm_step_rows(const Net *n, float *states, const long *idx, int count, const float *x,
                       float *out, const long *t, float *work) {
    size_t S = edgessm_state_floats(n);
    for (int j = 0; j < count; j++)
        one_stream(n, states + idx[j] * S, x + (size_t)j * n->d_in, out + (size_t)j * n->d_out,
                   work, t[idx[j]]);
}

/* Test harness of the edgessm C export on the host (targets/fixed/verify.py).
 *
 * Built with the exported model and its float helpers: -DEDGESSM_HEADER='"<name>.h"'
 * -DEDGESSM_NAME=<name> -DEDGESSM_D_INPUT=.. -DEDGESSM_D_OUTPUT=.. -DEDGESSM_READOUT_MEAN=0|1
 * -DEDGESSM_FLOAT_HELPERS.
 *
 * harness IN OUT MIN_SECONDS
 * IN:  int32 n, L, d_in; float32 x[n][L][d_in]; int32 x_in[n][L][d_in] (encoded by Python)
 * OUT: int32 logits[n][L][d_out]; stdout: one JSON object of counters and timing
 *
 * Every sequence starts from <name>_init; <name>_encode is checked against the Python
 * encoding; with a mean readout the state's running sum and <name>_predict are checked
 * against the sums of the written logits at the end of every sequence ("readout_mismatches");
 * then the step is timed over the sequences, repeated for at least MIN_SECONDS. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include EDGESSM_HEADER

#define EDGESSM_CAT_(a, b) a##b
#define EDGESSM_CAT(a, b) EDGESSM_CAT_(a, b)
#define EDGESSM_API(f) EDGESSM_CAT(EDGESSM_NAME, f)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(const char *msg)
{
    fprintf(stderr, "harness: %s\n", msg);
    return 1;
}

int main(int argc, char **argv)
{
    FILE *f;
    int32_t hdr[3];
    long n, L, i, t, k, reps = 0;
    size_t nin, nout;
    float *xf;
    int32_t *xm, *y;
    int32_t yb[EDGESSM_D_OUTPUT];
    EDGESSM_API(_state) s;
    unsigned long long over[4] = {0, 0, 0, 0}, enc_mism = 0, readout_mism = 0;
    double t0, el, min_s;
    clock_t c0;
    volatile int32_t sink = 0;
    if (argc != 4)
        return fail("usage: harness IN OUT MIN_SECONDS");
    min_s = atof(argv[3]);
    f = fopen(argv[1], "rb");
    if (!f)
        return fail("cannot open the input file");
    if (fread(hdr, sizeof hdr[0], 3, f) != 3)
        return fail("short header");
    n = hdr[0];
    L = hdr[1];
    if (hdr[2] != EDGESSM_D_INPUT || n < 1 || L < 1)
        return fail("bad header");
    nin = (size_t)n * (size_t)L * EDGESSM_D_INPUT;
    nout = (size_t)n * (size_t)L * EDGESSM_D_OUTPUT;
    xf = (float *)malloc(nin * sizeof *xf);
    xm = (int32_t *)malloc(nin * sizeof *xm);
    y = (int32_t *)malloc(nout * sizeof *y);
    if (!xf || !xm || !y)
        return fail("out of memory");
    if (fread(xf, sizeof *xf, nin, f) != nin || fread(xm, sizeof *xm, nin, f) != nin)
        return fail("short input");
    fclose(f);
    for (i = 0; i < n; ++i) {
        EDGESSM_API(_init)(&s);
        for (t = 0; t < L; ++t) {
            size_t off = (size_t)i * (size_t)L + (size_t)t;
            int32_t e[EDGESSM_D_INPUT];
            EDGESSM_API(_encode)(&s, xf + off * EDGESSM_D_INPUT, e);
            for (k = 0; k < EDGESSM_D_INPUT; ++k)
                if (e[k] != xm[off * EDGESSM_D_INPUT + k])
                    ++enc_mism;
            EDGESSM_API(_step)(&s, xm + off * EDGESSM_D_INPUT, y + off * EDGESSM_D_OUTPUT);
        }
#if EDGESSM_READOUT_MEAN
        {
            long long sum[EDGESSM_D_OUTPUT];
            int j, best = 0;
            for (j = 0; j < EDGESSM_D_OUTPUT; ++j)
                sum[j] = 0;
            for (t = 0; t < L; ++t)
                for (j = 0; j < EDGESSM_D_OUTPUT; ++j)
                    sum[j] += y[((size_t)i * (size_t)L + (size_t)t) * EDGESSM_D_OUTPUT + (size_t)j];
            for (j = 0; j < EDGESSM_D_OUTPUT; ++j) {
                if (sum[j] != (long long)s.total[j])
                    ++readout_mism;
                if (sum[j] > sum[best])
                    best = j;
            }
            if (EDGESSM_API(_predict)(&s) != best)
                ++readout_mism;
        }
#endif
        over[0] += s.overflow_input;
        over[1] += s.overflow_accumulator;
        over[2] += s.overflow_activations;
        over[3] += s.overflow_state;
    }
    f = fopen(argv[2], "wb");
    if (!f || fwrite(y, sizeof *y, nout, f) != nout)
        return fail("cannot write the output file");
    fclose(f);
    t0 = now_s();
    c0 = clock();
    do {
        for (i = 0; i < n; ++i) {
            EDGESSM_API(_init)(&s);
            for (t = 0; t < L; ++t) {
                EDGESSM_API(_step)(&s, xm + ((size_t)i * (size_t)L + (size_t)t) * EDGESSM_D_INPUT, yb);
                sink ^= yb[0];
            }
        }
        ++reps;
        el = now_s() - t0;
    } while (el < min_s);
    printf("{\"encode_mismatches\": %llu, \"readout_mismatches\": %llu, \"input\": %llu, \"accumulator\": %llu, \"activations\": %llu, "
           "\"state\": %llu, \"sizeof_state\": %lu, \"timed_tokens\": %ld, \"seconds\": %.9f, \"cpu_seconds\": %.9f, \"sink\": %ld}\n",
           enc_mism, readout_mism, over[0], over[1], over[2], over[3], (unsigned long)sizeof(EDGESSM_API(_state)),
           reps * n * L, el, (double)(clock() - c0) / CLOCKS_PER_SEC, (long)sink);
    free(xf);
    free(xm);
    free(y);
    return 0;
}

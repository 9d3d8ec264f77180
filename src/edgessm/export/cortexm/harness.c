/* Test harness of the edgessm C export on a Cortex-M core under emulation.
 *
 * Built with the exported model (-DEDGESSM_HEADER='"<name>.h"' -DEDGESSM_NAME=<name>
 * -DEDGESSM_D_INPUT=.. -DEDGESSM_D_OUTPUT=..), start-up.c and cortexm.ld, linked with newlib's
 * semihosting library (rdimon): the files below are the host's, read and written through the
 * emulator's semihosting.
 *
 * edgessm_in.bin:  int32 n, L, d_in, traced; int32 x_in[n][L][d_in] (encoded input mantissas)
 * edgessm_out.bin: per sequence: int32 logits[L][d_out], then uint32 overflow counters
 *                  (input, accumulator, activations, state) of the stream after its last token
 *
 * Every sequence starts from <name>_init; the first `traced` tokens of the first sequence are
 * stepped between edgessm_mark_begin() and edgessm_mark_end(), whose addresses delimit the
 * instructions counted in an execution trace. Exit status 0: done; 1: a file or format error. */
#include <stdint.h>
#include <stdio.h>
#include EDGESSM_HEADER

#define EDGESSM_CAT_(a, b) a##b
#define EDGESSM_CAT(a, b) EDGESSM_CAT_(a, b)
#define EDGESSM_API(f) EDGESSM_CAT(EDGESSM_NAME, f)

void edgessm_mark_begin(void);
void edgessm_mark_end(void);

static EDGESSM_API(_state) stream;      /* one stream's state, in .bss */

static int fail(const char *msg)
{
    fprintf(stderr, "harness: %s\n", msg);
    return 1;
}

int main(void)
{
    int32_t hdr[4], x[EDGESSM_D_INPUT], y[EDGESSM_D_OUTPUT];
    uint32_t over[4];
    long i, t, n, L, traced;
    FILE *in = fopen("edgessm_in.bin", "rb"), *out = fopen("edgessm_out.bin", "wb");
    if (!in || !out)
        return fail("cannot open edgessm_in.bin / edgessm_out.bin");
    if (fread(hdr, sizeof hdr[0], 4, in) != 4)
        return fail("short header");
    n = hdr[0];
    L = hdr[1];
    traced = hdr[3];
    if (hdr[2] != EDGESSM_D_INPUT || n < 1 || L < 1 || traced < 0)
        return fail("bad header");
    for (i = 0; i < n; ++i) {
        EDGESSM_API(_init)(&stream);
        for (t = 0; t < L; ++t) {
            const int mark = i == 0 && t < traced;
            if (fread(x, sizeof x[0], EDGESSM_D_INPUT, in) != EDGESSM_D_INPUT)
                return fail("short input");
            if (mark)
                edgessm_mark_begin();
            EDGESSM_API(_step)(&stream, x, y);
            if (mark)
                edgessm_mark_end();
            if (fwrite(y, sizeof y[0], EDGESSM_D_OUTPUT, out) != EDGESSM_D_OUTPUT)
                return fail("cannot write the output");
        }
        over[0] = stream.overflow_input;
        over[1] = stream.overflow_accumulator;
        over[2] = stream.overflow_activations;
        over[3] = stream.overflow_state;
        if (fwrite(over, sizeof over[0], 4, out) != 4)
            return fail("cannot write the output");
    }
    if (fclose(out) != 0)
        return fail("cannot close the output");
    fclose(in);
    return 0;
}

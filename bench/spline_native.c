/*
 * spline_native.c - per-point cost of the spline kernels in C, next to the
 * floors a kernel cannot beat on the same array: memcpy and a * x + b.
 *
 * Build from the repository root (needs only csrc/spline.c):
 *
 *   mkdir -p bench/bin && cc -O3 -std=gnu11 -Icsrc bench/spline_native.c \
 *       csrc/spline.c -lm -o bench/bin/spline_native
 *
 * Run: bench/bin/spline_native [points] [knots]
 */
#include "spline.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPEATS 11

static double
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of REPEATS timings, in ns per point. */
static double
median(double *t)
{
    qsort(t, REPEATS, sizeof(double), cmp_double);
    return t[REPEATS / 2];
}

static volatile double sink;

int
main(int argc, char **argv)
{
    int64_t npts = argc > 1 ? atoll(argv[1]) : 1000000;
    int64_t nk = argc > 2 ? atoll(argv[2]) : 1000;
    double *x = malloc(sizeof(double) * nk), *y = malloc(sizeof(double) * nk);
    double *xo = malloc(sizeof(double) * nk);
    double *co = malloc(sizeof(double) * nk * 4);
    double *sorted = malloc(sizeof(double) * npts);
    double *shuffled = malloc(sizeof(double) * npts);
    double *out = malloc(sizeof(double) * npts);
    double t[REPEATS], t0;
    tes_spline_fit_opts opts = {0};
    tes_spline s = {0};
    int64_t count, i, bad;
    int r;

    if (!x || !y || !xo || !co || !sorted || !shuffled || !out)
        return 1;

    /* A not-a-knot cubic through sin on nk even knots over [0, 1]. */
    for (i = 0; i < nk; i++) {
        x[i] = (double)i / (double)(nk - 1);
        y[i] = sin(7.0 * x[i]);
    }
    opts.kind = TES_SPLINE_NOT_A_KNOT;
    if (tes_spline_fit(&opts, x, y, nk, xo, co, &count) != TES_SPLINE_OK)
        return 1;
    s.x = xo;
    s.c = co;
    s.count = &count;
    s.ncurves = 1;
    s.nmax = nk;
    s.order = 4;
    s.shared_x = 1;
    s.extrapolate = TES_SPLINE_EXT_EXTRAPOLATE;

    /* Queries: sorted, and the same values shuffled (fixed seed). */
    srand(12345);
    for (i = 0; i < npts; i++)
        sorted[i] = (double)rand() / RAND_MAX;
    qsort(sorted, (size_t)npts, sizeof(double), cmp_double);
    memcpy(shuffled, sorted, sizeof(double) * npts);
    for (i = npts - 1; i > 0; i--) {
        int64_t j = rand() % (i + 1);
        double tmp = shuffled[i];

        shuffled[i] = shuffled[j];
        shuffled[j] = tmp;
    }
    memset(out, 0, sizeof(double) * npts);

    for (r = 0; r < REPEATS; r++) {
        t0 = now_ns();
        memcpy(out, sorted, sizeof(double) * npts);
        t[r] = (now_ns() - t0) / npts;
    }
    printf("%-28s %8.3f ns/point\n", "memcpy", median(t));

    for (r = 0; r < REPEATS; r++) {
        t0 = now_ns();
        for (i = 0; i < npts; i++)
            out[i] = 1.5 * sorted[i] + 2.0;
        t[r] = (now_ns() - t0) / npts;
    }
    sink = out[npts / 2];
    printf("%-28s %8.3f ns/point\n", "a*x+b", median(t));

    for (r = 0; r < REPEATS; r++) {
        t0 = now_ns();
        tes_spline_eval(&s, sorted, npts, 0, out, &bad);
        t[r] = (now_ns() - t0) / npts;
    }
    sink = out[npts / 2];
    printf("%-28s %8.3f ns/point\n", "spline eval, sorted", median(t));

    for (r = 0; r < REPEATS; r++) {
        t0 = now_ns();
        tes_spline_eval(&s, shuffled, npts, 0, out, &bad);
        t[r] = (now_ns() - t0) / npts;
    }
    sink = out[npts / 2];
    printf("%-28s %8.3f ns/point\n", "spline eval, random", median(t));

    for (r = 0; r < REPEATS; r++) {
        int64_t hint = 0;

        t0 = now_ns();
        for (i = 0; i < npts; i++)
            out[i] = tes_spline_eval_point(&s, 0, sorted[i], 0, &hint);
        t[r] = (now_ns() - t0) / npts;
    }
    sink = out[npts / 2];
    printf("%-28s %8.3f ns/point\n", "eval_point loop, sorted", median(t));
    printf("(%lld points, %lld knots, median of %d)\n", (long long)npts,
           (long long)nk, REPEATS);
    return 0;
}

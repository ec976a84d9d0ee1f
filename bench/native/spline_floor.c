/*
 * spline_floor.c - the spline kernel per evaluated point, in C, beside the
 * floors no kernel over the same array can beat: copying it (memcpy) and
 * one multiply-add per element (a * x + b).
 *
 * Uses csrc/spline.h alone.  The workload is the benchmark's: yield curves
 * on the 11 maturities of the Treasury archive (1 month .. 30 years), each
 * evaluated on a grid of every month from 1 month to 30 years.  Figures:
 *
 *   batch    tes_spline_eval of every curve at once on the grid (the shape
 *            a worker's job has), value and first derivative;
 *   long     one curve on a long sorted array, next to memcpy and a*x+b
 *            on an array of the same length.
 *
 * Each figure is the median of several timed batches.
 *
 * Usage: spline_floor [curves] [long_points]   (default 4096, 1000000)
 */
#define _GNU_SOURCE
#include "spline.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_BATCHES 11
#define BENCH_GRID_POINTS 360
#define BENCH_MATURITIES 11

static const double bench_maturities[BENCH_MATURITIES] = {
    1.0 / 12, 0.25, 0.5, 1, 2, 3, 5, 7, 10, 20, 30,
};

/* Returns CLOCK_MONOTONIC now, in nanoseconds. */
static double bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* qsort order for doubles; returns <0, 0 or >0. */
static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Returns the median of n values, sorting them in place. */
static double bench_median(double *values, int n)
{
    qsort(values, (size_t)n, sizeof(*values), bench_cmp_double);
    return values[n / 2];
}

/* Returns a buffer of n doubles, exiting when memory runs out. */
static double *bench_alloc(size_t n)
{
    double *p = calloc(n, sizeof(double));

    if (p == NULL) {
        fprintf(stderr, "spline_floor: out of memory\n");
        exit(1);
    }
    return p;
}

/*
 * Fills y with a Nelson-Siegel curve whose level, slope and curvature vary
 * with the curve number, so the batch holds rising, falling and humped
 * curves.  Returns nothing.
 */
static void bench_curve(int64_t j, double *y)
{
    double level = 4.0 + 2.0 * sin(0.013 * (double)j);
    double slope = -2.0 + 3.0 * cos(0.007 * (double)j);
    double hump = 1.5 * sin(0.021 * (double)j);
    double tau = 1.0 + 0.8 * cos(0.003 * (double)j);
    int i;

    for (i = 0; i < BENCH_MATURITIES; i++) {
        double x = bench_maturities[i] / tau;
        double decay = (1.0 - exp(-x)) / x;

        y[i] = level + slope * decay + hump * (decay - exp(-x));
    }
}

/*
 * Fits ncurves curves of the given kind into one tes_spline sharing x.
 * Returns 0, or -1 after printing why a fit failed.  The arrays it
 * allocates are owned by *s until bench_free.
 */
static int bench_fit(int32_t kind, int64_t ncurves, tes_spline *s)
{
    tes_spline_fit_opts opts;
    int32_t order = tes_spline_order(kind, 3);
    int64_t rows = tes_spline_fit_rows(kind, 3, BENCH_MATURITIES);
    double *x = bench_alloc((size_t)rows);
    double *c = bench_alloc((size_t)(ncurves * rows * order));
    int64_t *count = calloc((size_t)ncurves, sizeof(int64_t));
    double y[BENCH_MATURITIES];
    int64_t j;

    memset(&opts, 0, sizeof(opts));
    opts.kind = kind;
    opts.degree = 3;
    for (j = 0; j < ncurves; j++) {
        bench_curve(j, y);
        if (count == NULL ||
            tes_spline_fit(&opts, bench_maturities, y, BENCH_MATURITIES, x,
                           c + j * rows * order, &count[j]) != TES_SPLINE_OK) {
            fprintf(stderr, "spline_floor: fit of curve %lld failed\n",
                    (long long)j);
            return -1;
        }
    }
    memset(s, 0, sizeof(*s));
    s->x = x;
    s->c = c;
    s->count = count;
    s->ncurves = ncurves;
    s->nmax = rows;
    s->order = order;
    s->shared_x = 1;
    s->extrapolate = TES_SPLINE_EXT_EXTRAPOLATE;
    return 0;
}

/* Releases what bench_fit allocated; returns nothing. */
static void bench_free(tes_spline *s)
{
    free((void *)s->x);
    free((void *)s->c);
    free((void *)s->count);
}

/* Returns the median ns per point of evaluating every curve on the grid. */
static double bench_batch(const tes_spline *s, const double *grid, int nu,
                          double *out)
{
    double ns[BENCH_BATCHES];
    double points = (double)s->ncurves * BENCH_GRID_POINTS;
    int64_t bad;
    int b;

    for (b = 0; b < BENCH_BATCHES; b++) {
        double t0 = bench_now_ns();

        tes_spline_eval(s, grid, BENCH_GRID_POINTS, nu, out, &bad);
        ns[b] = (bench_now_ns() - t0) / points;
    }
    return bench_median(ns, BENCH_BATCHES);
}

int main(int argc, char **argv)
{
    int64_t ncurves = argc > 1 ? atoll(argv[1]) : 4096;
    int64_t npoints = argc > 2 ? atoll(argv[2]) : 1000000;
    static const struct { int32_t kind; const char *name; } kinds[] = {
        {TES_SPLINE_PCHIP, "pchip"},
        {TES_SPLINE_NOT_A_KNOT, "not-a-knot"},
        {TES_SPLINE_LINEAR, "linear"},
    };
    double grid[BENCH_GRID_POINTS];
    double *out, *along, *ashuffled, *aout, ns[BENCH_BATCHES];
    double copy_ns, axpb_ns;
    uint64_t lcg = 88172645463325252u;
    double checksum = 0.0;
    int64_t i;
    int b;
    size_t k;

    if (ncurves < 1 || npoints < 2) {
        fprintf(stderr, "usage: spline_floor [curves] [long_points]\n");
        return 2;
    }
    for (i = 0; i < BENCH_GRID_POINTS; i++)
        grid[i] = (double)(i + 1) / 12.0;
    out = bench_alloc((size_t)(ncurves * BENCH_GRID_POINTS));
    along = bench_alloc((size_t)npoints);
    aout = bench_alloc((size_t)npoints);
    ashuffled = bench_alloc((size_t)npoints);
    for (i = 0; i < npoints; i++)
        along[i] = 1.0 / 12 + (30.0 - 1.0 / 12) * (double)i / (npoints - 1);

    /* The same points in random order (Fisher-Yates, a fixed LCG), for an
     * interval search that cannot lean on the previous point. */
    memcpy(ashuffled, along, (size_t)npoints * sizeof(double));
    for (i = npoints - 1; i > 0; i--) {
        int64_t j;
        double t;

        lcg = lcg * 6364136223846793005u + 1442695040888963407u;
        j = (int64_t)((lcg >> 33) % (uint64_t)(i + 1));
        t = ashuffled[i];
        ashuffled[i] = ashuffled[j];
        ashuffled[j] = t;
    }

    /* The floors: the least any pass over the array can cost. */
    for (b = 0; b < BENCH_BATCHES; b++) {
        double t0 = bench_now_ns();

        memcpy(aout, along, (size_t)npoints * sizeof(double));
        ns[b] = (bench_now_ns() - t0) / (double)npoints;
        checksum += aout[b];
    }
    copy_ns = bench_median(ns, BENCH_BATCHES);
    for (b = 0; b < BENCH_BATCHES; b++) {
        double a = 1.0 + b * 1e-3, c = 0.5;
        double t0 = bench_now_ns();

        for (i = 0; i < npoints; i++)
            aout[i] = a * along[i] + c;
        ns[b] = (bench_now_ns() - t0) / (double)npoints;
        checksum += aout[b];
    }
    axpb_ns = bench_median(ns, BENCH_BATCHES);

    printf("spline kernel, C only (csrc/spline.h): %lld curves x %d grid "
           "points (batch),\none curve x %lld points, sorted and shuffled "
           "(long)\n",
           (long long)ncurves, BENCH_GRID_POINTS, (long long)npoints);
    printf("floors on %lld doubles: memcpy %.3f ns/element, "
           "a*x+b %.3f ns/element\n\n", (long long)npoints, copy_ns, axpb_ns);
    printf("%-11s %12s %12s %12s %12s %11s %11s\n", "kind", "batch value",
           "batch slope", "long sorted", "long random", "x memcpy",
           "x a*x+b");
    printf("%-11s %12s %12s %12s %12s %11s %11s\n", "", "ns/point",
           "ns/point", "ns/point", "ns/point", "(sorted)", "(sorted)");

    for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        tes_spline s, one;
        double value_ns, slope_ns, long_ns, random_ns;
        int64_t bad;

        if (bench_fit(kinds[k].kind, ncurves, &s) != 0)
            return 1;
        value_ns = bench_batch(&s, grid, 0, out);
        checksum += out[0];
        slope_ns = bench_batch(&s, grid, 1, out);
        checksum += out[0];

        /* The first curve alone, on the long array. */
        one = s;
        one.ncurves = 1;
        for (b = 0; b < BENCH_BATCHES; b++) {
            double t0 = bench_now_ns();

            tes_spline_eval(&one, along, npoints, 0, aout, &bad);
            ns[b] = (bench_now_ns() - t0) / (double)npoints;
            checksum += aout[b];
        }
        long_ns = bench_median(ns, BENCH_BATCHES);
        for (b = 0; b < BENCH_BATCHES; b++) {
            double t0 = bench_now_ns();

            tes_spline_eval(&one, ashuffled, npoints, 0, aout, &bad);
            ns[b] = (bench_now_ns() - t0) / (double)npoints;
            checksum += aout[b];
        }
        random_ns = bench_median(ns, BENCH_BATCHES);
        printf("%-11s %12.3f %12.3f %12.3f %12.3f %10.1fx %10.1fx\n",
               kinds[k].name, value_ns, slope_ns, long_ns, random_ns,
               long_ns / copy_ns, long_ns / axpb_ns);
        bench_free(&s);
    }

    /* Printed so that no timed loop can be optimised away. */
    printf("\n(checksum %.6g)\n", checksum);
    free(out);
    free(along);
    free(ashuffled);
    free(aout);
    return 0;
}

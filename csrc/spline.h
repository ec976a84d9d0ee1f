/*
 * spline.h - fitting and evaluation of piecewise polynomial curves.
 *
 * Every curve kind (linear, C2 cubics, monotone cubics, Akima, Catmull-Rom,
 * interpolating B-splines, Hermite) is fitted into one representation, so
 * that one evaluation kernel serves all of them:
 *
 *   breakpoints  x[0] < x[1] < ... < x[n-1]             (n = count)
 *   rows         c[i][0..order-1], i = 0 .. n-1
 *
 * Row i holds the local power-basis coefficients of the piece that starts
 * at x[i], in ascending powers:
 *
 *   f(q) = c[i][0] + c[i][1] t + ... + c[i][order-1] t^(order-1),
 *   t = q - x[i],  for x[i] <= q < x[i+1].
 *
 * The last row (i = n-1) is the last piece re-expanded about x[n-1]. It
 * serves queries at or beyond x[n-1], so a query equal to the last
 * breakpoint lands on t = 0 like every other breakpoint. For interpolating
 * kinds the fitter stores each data value as the constant term of its row,
 * hence evaluation at a data site returns that value bit for bit.
 *
 * Several curves live in one tes_spline. Curve j owns rows
 * c + j * nmax * order, with count[j] <= nmax of them in use. When
 * shared_x is nonzero every curve uses the breakpoints of row 0 of x
 * (and all counts are equal); otherwise curve j uses x + j * nmax. Entries
 * past count[j] are padding and never read.
 *
 * Evaluation allocates nothing, touches no global state and never fails
 * except in the TES_SPLINE_EXT_RAISE mode, where it reports the first
 * query outside a curve's breakpoints. A NaN query gives NaN in every mode.
 * The arrays may be read-only and shared between processes: evaluation
 * only reads them. Callers own all memory passed in.
 *
 * What evaluation trusts. The fields of tes_spline describe allocations
 * and are trusted: x holds (shared_x ? 1 : ncurves) * nmax doubles, c
 * holds ncurves * nmax * order, count holds ncurves; ncurves >= 1,
 * nmax >= 2 and 2 <= order <= TES_SPLINE_MAX_ORDER. The contents of the
 * three arrays are not: they may live in shared memory that another
 * process rewrites while a read is in progress. Every evaluator reads
 * each count once and uses nmax instead when it is outside [2, nmax]
 * (tes_spline_rows), and derives every row index from that count alone,
 * whatever x holds: unsorted, repeated or NaN breakpoints give
 * meaningless numbers, never an access outside the arrays. The fitter
 * and tes_spline_check_x establish the documented layout; these checks
 * only keep a damaged one harmless.
 */
#ifndef TES_SPLINE_H
#define TES_SPLINE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest supported polynomial order (degree + 1): quintic B-splines. */
#define TES_SPLINE_MAX_ORDER 6
/* Highest derivative the evaluators compute. */
#define TES_SPLINE_MAX_NU 3

/* Return codes. Zero is success; failures are negative. */
enum {
    TES_SPLINE_OK = 0,
    TES_SPLINE_EDOMAIN = -1,   /* query outside the data, RAISE mode */
    TES_SPLINE_EINVAL = -2,    /* arguments inconsistent or too few points */
    TES_SPLINE_ENOMEM = -3,    /* scratch allocation failed while fitting */
    TES_SPLINE_ESINGULAR = -4  /* a linear system had a zero pivot */
};

/* Curve kinds. The numbering is part of the stored format: append only. */
enum {
    TES_SPLINE_LINEAR = 0,
    TES_SPLINE_NOT_A_KNOT = 1,
    TES_SPLINE_NATURAL = 2,
    TES_SPLINE_CLAMPED = 3,
    TES_SPLINE_PERIODIC = 4,
    TES_SPLINE_PCHIP = 5,
    TES_SPLINE_AKIMA = 6,
    TES_SPLINE_MAKIMA = 7,
    TES_SPLINE_STEFFEN = 8,
    TES_SPLINE_CATMULL_ROM = 9,
    TES_SPLINE_BSPLINE = 10,
    TES_SPLINE_HERMITE = 11,
    TES_SPLINE_KIND_COUNT = 12
};

/* What evaluation does with a query outside [x[0], x[n-1]]. */
enum {
    TES_SPLINE_EXT_EXTRAPOLATE = 0,  /* continue the end pieces */
    TES_SPLINE_EXT_CLIP = 1,         /* hold the end value, derivatives 0 */
    TES_SPLINE_EXT_NAN = 2,          /* NaN */
    TES_SPLINE_EXT_RAISE = 3,        /* report TES_SPLINE_EDOMAIN */
    TES_SPLINE_EXT_PERIODIC = 4,     /* wrap into [x[0], x[n-1]) */
    TES_SPLINE_EXT_COUNT = 5
};

/* A fitted set of curves; see the layout described above. */
typedef struct tes_spline {
    const double *x;        /* breakpoints, 1 or ncurves rows of nmax */
    const double *c;        /* ncurves * nmax rows of order coefficients */
    const int64_t *count;   /* breakpoints in use, one per curve */
    int64_t ncurves;
    int64_t nmax;           /* padded row capacity per curve */
    int32_t order;          /* coefficients per row, 2 .. MAX_ORDER */
    int32_t shared_x;       /* nonzero: every curve reads x row 0 */
    int32_t extrapolate;    /* one of TES_SPLINE_EXT_* */
    int32_t reserved;       /* zero */
} tes_spline;

/* Fitting options. Fields that a kind does not use are ignored. */
typedef struct tes_spline_fit_opts {
    int32_t kind;           /* one of TES_SPLINE_* kinds */
    int32_t degree;         /* B-spline degree, 1 .. 5 */
    double slope_left;      /* clamped: f'(x[0]) */
    double slope_right;     /* clamped: f'(x[n-1]) */
    double tension;         /* Catmull-Rom: 0 (default) .. 1 (flat) */
    const double *dydx;     /* Hermite: n slopes, contiguous */
} tes_spline_fit_opts;

/*
 * Returns the coefficient count per row (degree + 1) for a kind, or
 * TES_SPLINE_EINVAL for an unknown kind or a B-spline degree outside 1..5.
 */
int32_t tes_spline_order(int32_t kind, int32_t degree);

/*
 * Returns the fewest data points a kind accepts, or TES_SPLINE_EINVAL for
 * an unknown kind or degree.
 */
int64_t tes_spline_min_points(int32_t kind, int32_t degree);

/*
 * Returns how many breakpoints a fit of n points produces (n, except for
 * even-degree B-splines whose knots sit between data sites), or
 * TES_SPLINE_EINVAL when n is below tes_spline_min_points.
 */
int64_t tes_spline_fit_rows(int32_t kind, int32_t degree, int64_t n);

/*
 * Returns the index of the first element of x[0..n-1] that is not finite
 * or not above its predecessor, or -1 when x is finite and strictly
 * increasing. Never fails.
 */
int64_t tes_spline_check_x(const double *x, int64_t n);

/*
 * Fits one curve through the n points (x, y), x strictly increasing and
 * all values finite (the caller checks). Writes tes_spline_fit_rows(...)
 * breakpoints to x_out, as many rows of order coefficients to c_out, and
 * their number to *count_out. Returns TES_SPLINE_OK, TES_SPLINE_EINVAL
 * for bad options or too few points, TES_SPLINE_ENOMEM when scratch space
 * cannot be allocated, TES_SPLINE_ESINGULAR if a solve breaks down. The
 * outputs are unspecified on failure. Allocates and frees its own scratch.
 */
int tes_spline_fit(const tes_spline_fit_opts *opts, const double *x,
                   const double *y, int64_t n, double *x_out, double *c_out,
                   int64_t *count_out);

/*
 * Returns the number of breakpoints evaluation uses for curve `curve`
 * (0 <= curve < ncurves): count[curve], read once, or nmax when that is
 * outside [2, nmax].
 * Equal to count[curve] for any spline the fitter wrote. Never fails.
 */
int64_t tes_spline_rows(const tes_spline *s, int64_t curve);

/*
 * Returns the nu-th derivative (0 .. 3) of curve `curve` at q. The
 * RAISE mode behaves as EXTRAPOLATE here: callers that need it check
 * tes_spline_in_domain first. *hint is the row to try first and receives
 * the row used; any value is safe. Never fails.
 */
double tes_spline_eval_point(const tes_spline *s, int64_t curve, double q,
                             int32_t nu, int64_t *hint);

/*
 * Returns nonzero when q is NaN or inside [x[0], x[n-1]] of the curve.
 * Never fails.
 */
int tes_spline_in_domain(const tes_spline *s, int64_t curve, double q);

/*
 * Evaluates the nu-th derivative of every curve at nq queries, writing
 * out[k * ncurves + j] for query k and curve j. Returns TES_SPLINE_OK, or
 * TES_SPLINE_EDOMAIN in RAISE mode with *bad set to the first offending
 * query index (out is then partly written). Allocates nothing.
 */
int tes_spline_eval(const tes_spline *s, const double *q, int64_t nq,
                    int32_t nu, double *out, int64_t *bad);

/*
 * Writes the integral from a to b of every curve to out[0..ncurves-1],
 * following the extrapolation mode outside the data (NaN mode gives NaN).
 * Returns TES_SPLINE_OK, or TES_SPLINE_EDOMAIN in RAISE mode when a or b
 * lies outside a curve's data. NaN bounds give NaN.
 */
int tes_spline_integrate(const tes_spline *s, double a, double b,
                         double *out);

#ifdef __cplusplus
}
#endif

#endif /* TES_SPLINE_H */

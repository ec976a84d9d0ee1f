/*
 * spline.c - fitting and evaluation kernels behind tesenv.Spline.
 *
 * Plain C11: no Python, no global state. See spline.h for the layout of a
 * fitted curve. Fitting may allocate scratch space; evaluation never does.
 */
#include "spline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * No fused multiply-add contraction: the scalar, block and multi-curve
 * paths, and copies built for different instruction sets, must round
 * alike so that one query gives the same bits whichever path serves it.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/*
 * Akima's slope weights are treated as "all zero" below this fraction of
 * the largest weight of the curve, as SciPy does; the fill value (the
 * average of the outer slopes) is used there instead.
 */
#define AKIMA_BREAK_FRACTION 1e-9

/* Catmull-Rom tension is documented on [0, 1]. */
#define TENSION_MIN 0.0
#define TENSION_MAX 1.0

/* Forces inlining where constant arguments must reach the loop body. */
#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif

/* m! / (m - nu)!, the factor a derivative of order nu puts on t^m. */
static const double FALLING[TES_SPLINE_MAX_NU + 1][TES_SPLINE_MAX_ORDER] = {
    {1.0, 1.0, 1.0, 1.0, 1.0, 1.0},
    {0.0, 1.0, 2.0, 3.0, 4.0, 5.0},
    {0.0, 0.0, 2.0, 6.0, 12.0, 20.0},
    {0.0, 0.0, 0.0, 6.0, 24.0, 60.0},
};

/* ------------------------------------------------------------------ */
/* Small kernels shared by fitting and evaluation                      */
/* ------------------------------------------------------------------ */

/*
 * Returns the nu-th derivative at t of the polynomial a[0] + a[1] t + ...
 * (Horner). The leading coefficient starts the recurrence, rather than
 * zero, so that an infinite t gives an infinity and not 0 * inf = NaN.
 */
static inline ALWAYS_INLINE double
poly_eval(const double *a, int32_t order, int32_t nu, double t)
{
    double acc;
    int32_t m;

    if (nu == 0) {
        acc = a[order - 1];
        for (m = order - 2; m >= 0; m--)
            acc = acc * t + a[m];
        return acc;
    }
    if (nu >= order)
        return 0.0;
    acc = a[order - 1] * FALLING[nu][order - 1];
    for (m = order - 2; m >= nu; m--)
        acc = acc * t + a[m] * FALLING[nu][m];
    return acc;
}

/* Returns the antiderivative, zero at t = 0, of a[0] + a[1] t + ... at t. */
static inline double
poly_integral(const double *a, int32_t order, double t)
{
    double acc = a[order - 1] / (double)order;
    int32_t m;

    for (m = order - 2; m >= 0; m--)
        acc = acc * t + a[m] / (double)(m + 1);
    return acc * t;
}

/*
 * Returns the largest i in [lo, lo + len) with x[i] <= q, or lo when there
 * is none or len is 0. Whatever x and q hold (unsorted, NaN), the result
 * stays in [lo, lo + len - 1] for len >= 1: each step only moves base
 * within the remaining range. Branch-free so that random queries do not
 * pay for mispredicted comparisons: the select compiles to a conditional
 * move.
 */
static inline int64_t
bisect(const double *x, int64_t lo, int64_t len, double q)
{
    const double *base = x + lo;

    while (len > 1) {
        int64_t half = len / 2;

        base = (base[half] <= q) ? base + half : base;
        len -= half;
    }
    return base - x;
}

/*
 * Returns the row for q among n >= 2 breakpoints: the largest i with
 * x[i] <= q, or 0 below x[0]. The hint row and the one after it are tried
 * first, which makes sorted queries nearly free. Any hint, q and x
 * content give a row in [0, n - 1].
 */
static inline int64_t
find_row(const double *x, int64_t n, double q, int64_t hint)
{
    if (hint < 0 || hint >= n)
        hint = 0;
    if (x[hint] <= q) {
        if (hint == n - 1 || q < x[hint + 1])
            return hint;
        if (hint + 1 == n - 1 || q < x[hint + 2])
            return hint + 1;
        return bisect(x, hint + 2, n - hint - 2, q);
    }
    return bisect(x, 0, hint, q);
}

/*
 * Returns the breakpoints in use for a curve: count[curve] when it lies in
 * [2, nmax], else nmax. The count may sit in shared memory that another
 * process rewrites, so it is read exactly once: a relaxed atomic load,
 * which orders nothing and pairs with nothing, only stops the compiler
 * from loading it again after the check. The check is one unsigned
 * compare (counts below 2 wrap to huge values), as it sits on the path of
 * every single-point evaluation.
 */
static inline int64_t
curve_rows(const tes_spline *s, int64_t curve)
{
#if defined(__GNUC__)
    int64_t n = __atomic_load_n(s->count + curve, __ATOMIC_RELAXED);
#else
    int64_t n = s->count[curve];
#endif

    if ((uint64_t)n - 2 > (uint64_t)s->nmax - 2)
        n = s->nmax;
    return n;
}

/* Returns q moved by whole periods into [lo, hi); q must be finite. */
static inline double
wrap_periodic(double q, double lo, double hi)
{
    double period = hi - lo;
    double r = fmod(q - lo, period);

    if (r < 0.0)
        r += period;
    return lo + r;
}

/*
 * Rewrites a[0..order-1] (ascending powers of t) as the same polynomial in
 * s = t - h, by repeated synthetic division. Cannot fail.
 */
static void
taylor_shift(double *a, int32_t order, double h)
{
    int32_t i, j;

    for (i = 0; i < order - 1; i++)
        for (j = order - 2; j >= i; j--)
            a[j] += h * a[j + 1];
}

/*
 * Fills row n-1 with the last piece re-expanded about x[n-1] and pins its
 * constant term to the data value there. Cannot fail.
 */
static void
finish_last_row(const double *x, const double *y, int64_t n, int32_t order,
                double *c)
{
    double *last = c + (n - 1) * order;

    memcpy(last, c + (n - 2) * order, (size_t)order * sizeof(double));
    taylor_shift(last, order, x[n - 1] - x[n - 2]);
    last[0] = y[n - 1];
}

/*
 * Writes the cubic Hermite rows for values y and slopes s at x (n >= 2),
 * the form every cubic kind ends in. Cannot fail.
 */
static void
hermite_rows(const double *x, const double *y, const double *s, int64_t n,
             double *c)
{
    int64_t i;

    for (i = 0; i < n - 1; i++) {
        /* One division per piece: fitting a million points is bound by
         * divider throughput otherwise. */
        double inv_h = 1.0 / (x[i + 1] - x[i]);
        double m = (y[i + 1] - y[i]) * inv_h;
        double t = (s[i] + s[i + 1] - 2.0 * m) * inv_h;
        double *row = c + 4 * i;

        row[0] = y[i];
        row[1] = s[i];
        row[2] = (m - s[i]) * inv_h - t;
        row[3] = t * inv_h;
    }
    finish_last_row(x, y, n, 4, c);
}

/*
 * Factors a tridiagonal matrix in place without pivoting: sub[i] (row i,
 * column i-1; sub[0] unused) becomes the elimination multiplier, diag the
 * reciprocals of the pivots. Returns TES_SPLINE_OK, or
 * TES_SPLINE_ESINGULAR on a zero pivot.
 * The matrices built here are diagonally dominant or close to it, which is
 * what makes elimination without pivoting safe.
 */
static int
tridiag_factor(int64_t n, double *sub, double *diag, const double *sup)
{
    int64_t i;

    if (diag[0] == 0.0)
        return TES_SPLINE_ESINGULAR;
    diag[0] = 1.0 / diag[0];
    for (i = 1; i < n; i++) {
        sub[i] *= diag[i - 1];
        diag[i] -= sub[i] * sup[i - 1];
        if (diag[i] == 0.0)
            return TES_SPLINE_ESINGULAR;
        diag[i] = 1.0 / diag[i];
    }
    return TES_SPLINE_OK;
}

/* Solves in place with the factors of tridiag_factor. Cannot fail. */
static void
tridiag_solve(int64_t n, const double *sub, const double *diag,
              const double *sup, double *rhs)
{
    int64_t i;

    for (i = 1; i < n; i++)
        rhs[i] -= sub[i] * rhs[i - 1];
    rhs[n - 1] *= diag[n - 1];
    for (i = n - 2; i >= 0; i--)
        rhs[i] = (rhs[i] - sup[i] * rhs[i + 1]) * diag[i];
}

/* ------------------------------------------------------------------ */
/* C2 cubic splines: slopes from a tridiagonal system                  */
/* ------------------------------------------------------------------ */

/*
 * Slopes of the periodic C2 cubic (y[0] == y[n-1], n >= 4): the n-1
 * unknown slopes form a cyclic tridiagonal system, solved as a tridiagonal
 * one plus a rank-one correction (Sherman-Morrison). work holds 4n.
 * Returns TES_SPLINE_OK or TES_SPLINE_ESINGULAR.
 */
static int
periodic_slopes(const double *x, const double *y, int64_t n, double *s,
                double *work)
{
    int64_t big = n - 1, i;
    double *sub = work, *diag = work + n, *sup = work + 2 * n;
    double *z = work + 3 * n;
    double alpha, beta, gamma, fact;
    int rc;

    /* 1. Row i couples s[i-1], s[i], s[i+1], indices modulo n-1. */
    for (i = 0; i < big; i++) {
        int64_t prev = (i == 0) ? big - 1 : i - 1;
        double hp = x[prev + 1] - x[prev], hi = x[i + 1] - x[i];
        double mp = (y[prev + 1] - y[prev]) / hp;
        double mi = (y[i + 1] - y[i]) / hi;

        sub[i] = hi;
        diag[i] = 2.0 * (hp + hi);
        sup[i] = hp;
        s[i] = 3.0 * (hi * mp + hp * mi);
    }
    beta = sub[0];           /* row 0, column n-2 */
    alpha = sup[big - 1];    /* row n-2, column 0 */

    /* 2. Fold the corners into the diagonal; u = (gamma, 0.., alpha). */
    gamma = -diag[0];
    diag[0] -= gamma;
    diag[big - 1] -= alpha * beta / gamma;
    for (i = 0; i < big; i++)
        z[i] = 0.0;
    z[0] = gamma;
    z[big - 1] = alpha;

    /* 3. Solve T y = r and T z = u, then correct y along z. */
    rc = tridiag_factor(big, sub, diag, sup);
    if (rc != TES_SPLINE_OK)
        return rc;
    tridiag_solve(big, sub, diag, sup, s);
    tridiag_solve(big, sub, diag, sup, z);
    fact = (s[0] + beta * s[big - 1] / gamma) /
           (1.0 + z[0] + beta * z[big - 1] / gamma);
    for (i = 0; i < big; i++)
        s[i] -= fact * z[i];
    s[n - 1] = s[0];
    return TES_SPLINE_OK;
}

/*
 * Slopes of the C2 cubic through (x, y) with the end condition of kind,
 * following SciPy's CubicSpline system (including its special cases for
 * n = 2 and n = 3). work holds 4n. Returns TES_SPLINE_OK or
 * TES_SPLINE_ESINGULAR.
 */
static int
cubic_slopes(const tes_spline_fit_opts *o, const double *x, const double *y,
             int64_t n, double *s, double *work)
{
    double *sub = work, *diag = work + n, *sup = work + 2 * n;
    double h0 = x[1] - x[0], m0 = (y[1] - y[0]) / h0;
    int64_t i;
    int rc;

    if (n == 2 && o->kind != TES_SPLINE_CLAMPED &&
        o->kind != TES_SPLINE_NATURAL) {
        s[0] = s[1] = m0;
        return TES_SPLINE_OK;
    }
    if (n == 3 && o->kind == TES_SPLINE_NOT_A_KNOT) {
        /* Both conditions coincide: the parabola through the points. */
        double h1 = x[2] - x[1], m1 = (y[2] - y[1]) / h1;
        double d2 = (m1 - m0) / (h0 + h1);

        s[0] = m0 - d2 * h0;
        s[1] = m0 + d2 * h0;
        s[2] = m0 + d2 * (h0 + 2.0 * h1);
        return TES_SPLINE_OK;
    }
    if (o->kind == TES_SPLINE_PERIODIC) {
        if (n == 3) {
            double h1 = x[2] - x[1], m1 = (y[2] - y[1]) / h1;
            double t = (m0 / h0 + m1 / h1) / (1.0 / h0 + 1.0 / h1);

            s[0] = s[1] = s[2] = t;
            return TES_SPLINE_OK;
        }
        return periodic_slopes(x, y, n, s, work);
    }

    /* Interior rows: continuity of the second derivative at x[i]. */
    for (i = 1; i < n - 1; i++) {
        double hp = x[i] - x[i - 1], hi = x[i + 1] - x[i];
        double mp = (y[i] - y[i - 1]) / hp, mi = (y[i + 1] - y[i]) / hi;

        sub[i] = hi;
        diag[i] = 2.0 * (hp + hi);
        sup[i] = hp;
        s[i] = 3.0 * (hi * mp + hp * mi);
    }

    /* End rows. */
    if (o->kind == TES_SPLINE_NOT_A_KNOT) {
        double h1 = x[2] - x[1], m1 = (y[2] - y[1]) / h1;
        double d = x[2] - x[0];
        double hl = x[n - 1] - x[n - 2], hl1 = x[n - 2] - x[n - 3];
        double ml = (y[n - 1] - y[n - 2]) / hl;
        double ml1 = (y[n - 2] - y[n - 3]) / hl1;
        double dl = x[n - 1] - x[n - 3];

        diag[0] = h1;
        sup[0] = d;
        s[0] = ((h0 + 2.0 * d) * h1 * m0 + h0 * h0 * m1) / d;
        sub[n - 1] = dl;
        diag[n - 1] = hl1;
        s[n - 1] = (hl * hl * ml1 + (2.0 * dl + hl) * hl1 * ml) / dl;
    } else if (o->kind == TES_SPLINE_NATURAL) {
        double hl = x[n - 1] - x[n - 2];

        diag[0] = 2.0 * h0;
        sup[0] = h0;
        s[0] = 3.0 * (y[1] - y[0]);
        sub[n - 1] = hl;
        diag[n - 1] = 2.0 * hl;
        s[n - 1] = 3.0 * (y[n - 1] - y[n - 2]);
    } else {
        diag[0] = 1.0;
        sup[0] = 0.0;
        s[0] = o->slope_left;
        sub[n - 1] = 0.0;
        diag[n - 1] = 1.0;
        s[n - 1] = o->slope_right;
    }

    rc = tridiag_factor(n, sub, diag, sup);
    if (rc != TES_SPLINE_OK)
        return rc;
    tridiag_solve(n, sub, diag, sup, s);
    return TES_SPLINE_OK;
}

/* ------------------------------------------------------------------ */
/* Local (shape-preserving) slopes                                     */
/* ------------------------------------------------------------------ */

static inline double
sign_of(double v)
{
    return (v > 0.0) - (v < 0.0);
}

/*
 * PCHIP end slope from the two end secants: a one-sided three-point
 * estimate, limited to keep the shape (Moler, Numerical Computing with
 * MATLAB, 3.6, as SciPy's PchipInterpolator does).
 */
static double
pchip_end_slope(double h0, double h1, double m0, double m1)
{
    double d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);

    if (sign_of(d) != sign_of(m0))
        return 0.0;
    if (sign_of(m0) != sign_of(m1) && fabs(d) > 3.0 * fabs(m0))
        return 3.0 * m0;
    return d;
}

/*
 * PCHIP slopes (Fritsch and Carlson 1980, with Fritsch and Butland's
 * weighted harmonic mean, as in SciPy's PchipInterpolator), n >= 3.
 */
static void
pchip_slopes(const double *x, const double *y, int64_t n, double *s)
{
    int64_t i;

    for (i = 1; i < n - 1; i++) {
        double hp = x[i] - x[i - 1], hi = x[i + 1] - x[i];
        double mp = (y[i] - y[i - 1]) / hp, mi = (y[i + 1] - y[i]) / hi;
        double w1 = 2.0 * hi + hp, w2 = hi + 2.0 * hp;

        /* 1. A local extremum or a flat secant gets a zero slope. */
        if (sign_of(mp) != sign_of(mi) || mp == 0.0 || mi == 0.0) {
            s[i] = 0.0;
            continue;
        }
        /* 2. Otherwise the weighted harmonic mean of the secants. */
        s[i] = 1.0 / ((w1 / mp + w2 / mi) / (w1 + w2));
    }

    /* 3. Ends: the shape-limited three-point estimate. */
    s[0] = pchip_end_slope(x[1] - x[0], x[2] - x[1],
                           (y[1] - y[0]) / (x[1] - x[0]),
                           (y[2] - y[1]) / (x[2] - x[1]));
    s[n - 1] = pchip_end_slope(x[n - 1] - x[n - 2], x[n - 2] - x[n - 3],
                               (y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]),
                               (y[n - 2] - y[n - 3]) / (x[n - 2] - x[n - 3]));
}

/*
 * Akima slopes (Akima 1970), or the modified Akima weights ("makima",
 * Moler 2019) that add |m_i + m_{i+1}| / 2 to each weight, n >= 3. m holds
 * n + 3 secants: two extrapolated on each side of the n - 1 real ones.
 */
static void
akima_slopes(const double *x, const double *y, int64_t n, int modified,
             double *s, double *m)
{
    double wmax = 0.0;
    int64_t i;

    /* 1. Secants, with two linearly extended on each side. */
    for (i = 0; i < n - 1; i++)
        m[i + 2] = (y[i + 1] - y[i]) / (x[i + 1] - x[i]);
    m[1] = 2.0 * m[2] - m[3];
    m[0] = 2.0 * m[1] - m[2];
    m[n + 1] = 2.0 * m[n] - m[n - 1];
    m[n + 2] = 2.0 * m[n + 1] - m[n];

    /* 2. The weights' sum at each point; its largest value sets the
     *    threshold below which a slope counts as undetermined. */
    for (i = 0; i < n; i++) {
        double w1 = fabs(m[i + 3] - m[i + 2]), w2 = fabs(m[i + 1] - m[i]);

        if (modified) {
            w1 += 0.5 * fabs(m[i + 3] + m[i + 2]);
            w2 += 0.5 * fabs(m[i + 1] + m[i]);
        }
        if (w1 + w2 > wmax)
            wmax = w1 + w2;
    }

    /* 3. Weighted slope where determined, else the mean of outer ones. */
    for (i = 0; i < n; i++) {
        double w1 = fabs(m[i + 3] - m[i + 2]), w2 = fabs(m[i + 1] - m[i]);

        if (modified) {
            w1 += 0.5 * fabs(m[i + 3] + m[i + 2]);
            w2 += 0.5 * fabs(m[i + 1] + m[i]);
        }
        if (w1 + w2 > AKIMA_BREAK_FRACTION * wmax)
            s[i] = m[i + 1] + (w2 / (w1 + w2)) * (m[i + 2] - m[i + 1]);
        else
            s[i] = 0.5 * (m[i + 3] + m[i]);
    }
}

/*
 * Steffen slopes (M. Steffen, "A simple method for monotonic interpolation
 * in one dimension", Astron. Astrophys. 239, 443-450, 1990), n >= 3. The
 * result is monotone wherever the data are.
 */
static void
steffen_slopes(const double *x, const double *y, int64_t n, double *s)
{
    int64_t i;

    for (i = 1; i < n - 1; i++) {
        double hp = x[i] - x[i - 1], hi = x[i + 1] - x[i];
        double sp = (y[i] - y[i - 1]) / hp, si = (y[i + 1] - y[i]) / hi;

        /* Eq. 11: slope of the parabola through the three points. */
        double p = (sp * hi + si * hp) / (hp + hi);

        /* Eq. 13: limited by twice the smaller secant, zero at extrema. */
        double lim = fmin(fabs(sp), fabs(si));

        s[i] = (sign_of(sp) + sign_of(si)) * fmin(lim, 0.5 * fabs(p));
    }

    /* Eqs. 26-27: one-sided parabola at each end, then limited. */
    for (i = 0; i < 2; i++) {
        int64_t a = i ? n - 1 : 0, b = i ? n - 2 : 1, c = i ? n - 3 : 2;
        double h0 = fabs(x[b] - x[a]), h1 = fabs(x[c] - x[b]);
        double s0 = (y[b] - y[a]) / (x[b] - x[a]);
        double s1 = (y[c] - y[b]) / (x[c] - x[b]);
        double p = s0 * (1.0 + h0 / (h0 + h1)) - s1 * h0 / (h0 + h1);

        if (p * s0 <= 0.0)
            p = 0.0;
        else if (fabs(p) > 2.0 * fabs(s0))
            p = 2.0 * s0;
        s[a] = p;
    }
}

/*
 * Cardinal (Catmull-Rom with tension) slopes for y as a function of x on
 * non-uniform x: (1 - tension) times the secant over the two neighbours,
 * the one-sided secant at the ends. n >= 2.
 */
static void
catmull_rom_slopes(const double *x, const double *y, int64_t n,
                   double tension, double *s)
{
    double scale = 1.0 - tension;
    int64_t i;

    for (i = 1; i < n - 1; i++)
        s[i] = scale * (y[i + 1] - y[i - 1]) / (x[i + 1] - x[i - 1]);
    s[0] = scale * (y[1] - y[0]) / (x[1] - x[0]);
    s[n - 1] = scale * (y[n - 1] - y[n - 2]) / (x[n - 1] - x[n - 2]);
}

/* ------------------------------------------------------------------ */
/* Interpolating B-splines of degree 1 .. 5                            */
/* ------------------------------------------------------------------ */

/*
 * Fills val[q][j] = N_{l-q+j, q}(u), j = 0..q, for q = 0..k: the nonzero
 * B-splines of every degree up to k on knot span l (Cox-de Boor). Terms
 * with a zero knot gap are zero.
 */
static void
basis_table(const double *t, int64_t l, int32_t k, double u,
            double val[TES_SPLINE_MAX_ORDER][TES_SPLINE_MAX_ORDER])
{
    int32_t q, j;

    val[0][0] = 1.0;
    for (q = 1; q <= k; q++) {
        for (j = 0; j <= q; j++) {
            int64_t i = l - q + j;
            double v = 0.0;

            if (j > 0 && t[i + q] != t[i])
                v += (u - t[i]) / (t[i + q] - t[i]) * val[q - 1][j - 1];
            if (j < q && t[i + q + 1] != t[i + 1])
                v += (t[i + q + 1] - u) / (t[i + q + 1] - t[i + 1]) *
                     val[q - 1][j];
            val[q][j] = v;
        }
    }
}

/*
 * Writes der[d][j], the d-th derivative at u of N_{l-k+j, k}, for
 * d = 0..k, j = 0..k. Uses N'_{i,q} = q (N_{i,q-1} / (t[i+q] - t[i]) -
 * N_{i+1,q-1} / (t[i+q+1] - t[i+1])) applied d times from degree k - d.
 */
static void
basis_derivatives(const double *t, int64_t l, int32_t k, double u,
                  double der[TES_SPLINE_MAX_ORDER][TES_SPLINE_MAX_ORDER])
{
    double val[TES_SPLINE_MAX_ORDER][TES_SPLINE_MAX_ORDER];
    double cur[TES_SPLINE_MAX_ORDER], next[TES_SPLINE_MAX_ORDER];
    int32_t d, q, j;

    basis_table(t, l, k, u, val);
    for (d = 0; d <= k; d++) {
        /* Start from the degree k - d values, lift d times. */
        for (j = 0; j <= k - d; j++)
            cur[j] = val[k - d][j];
        for (q = k - d + 1; q <= k; q++) {
            for (j = 0; j <= q; j++) {
                int64_t i = l - q + j;
                double v = 0.0;

                if (j > 0 && t[i + q] != t[i])
                    v += cur[j - 1] / (t[i + q] - t[i]);
                if (j < q && t[i + q + 1] != t[i + 1])
                    v -= cur[j] / (t[i + q + 1] - t[i + 1]);
                next[j] = q * v;
            }
            memcpy(cur, next, (size_t)(q + 1) * sizeof(double));
        }
        memcpy(der[d], cur, (size_t)(k + 1) * sizeof(double));
    }
}

/*
 * Interpolating B-spline of degree k with SciPy's default (not-a-knot)
 * knots, converted to rows on the union of data sites and knots.
 * Returns TES_SPLINE_OK, TES_SPLINE_ENOMEM or TES_SPLINE_ESINGULAR.
 */
static int
fit_bspline(int32_t k, const double *x, const double *y, int64_t n,
            double *x_out, double *c_out, int64_t *count_out)
{
    int64_t nt = n + k + 1, width = 2 * (int64_t)k + 1;
    int64_t i, p, r, col, m, kept;
    int32_t order = k + 1;
    double *t, *band, *coef;
    int rc = TES_SPLINE_OK;

    t = malloc((size_t)(nt + n * width + n) * sizeof(double));
    if (t == NULL)
        return TES_SPLINE_ENOMEM;
    band = t + nt;
    coef = band + n * width;

    /* 1. Knots: k+1 copies of each end; inside, the data sites (odd k)
     *    or the midpoints between them (even k), minus k/2 at each end
     *    so that their count matches the n coefficients (de Boor). */
    for (i = 0; i <= k; i++) {
        t[i] = x[0];
        t[nt - 1 - i] = x[n - 1];
    }
    for (i = 0; i < n - k - 1; i++) {
        int64_t j = i + (k + 1) / 2;

        t[k + 1 + i] = (k % 2) ? x[j] : (x[j] + x[j + 1]) / 2.0;
    }

    /* 2. Collocation rows: row i holds B_j(x[i]) at band[i][k + j - i]. */
    memset(band, 0, (size_t)(n * width) * sizeof(double));
    for (i = 0; i < n; i++) {
        double val[TES_SPLINE_MAX_ORDER][TES_SPLINE_MAX_ORDER];
        int64_t l = bisect(t, k, n - k, x[i]);

        basis_table(t, l, k, x[i], val);
        for (r = 0; r <= k; r++)
            band[i * width + k + (l - k + r) - i] = val[k][r];
        coef[i] = y[i];
    }

    /* 3. Gaussian elimination without pivoting: a collocation matrix is
     *    totally positive, for which that is stable (de Boor, ch. XIII). */
    for (p = 0; p < n; p++) {
        double piv = band[p * width + k];

        if (piv == 0.0) {
            rc = TES_SPLINE_ESINGULAR;
            goto done;
        }
        for (r = p + 1; r < n && r <= p + k; r++) {
            double f = band[r * width + k + p - r] / piv;

            if (f == 0.0)
                continue;
            for (col = p + 1; col < n && col <= p + k; col++)
                band[r * width + k + col - r] -= f * band[p * width + k +
                                                          col - p];
            coef[r] -= f * coef[p];
        }
    }
    for (p = n - 1; p >= 0; p--) {
        double v = coef[p];

        for (col = p + 1; col < n && col <= p + k; col++)
            v -= band[p * width + k + col - p] * coef[col];
        coef[p] = v / band[p * width + k];
    }

    /* 4. Breakpoints: merge data sites with the interior knots. */
    m = 0;
    kept = k + 1;
    for (i = 0; i < n; i++) {
        while (kept < n && t[kept] < x[i]) {
            if (m == 0 || t[kept] > x_out[m - 1])
                x_out[m++] = t[kept];
            kept++;
        }
        if (m == 0 || x[i] > x_out[m - 1])
            x_out[m++] = x[i];
        else
            x_out[m - 1] = x[i];
    }

    /* 5. Taylor coefficients of the piece starting at each breakpoint;
     *    the last breakpoint uses the last span, which is the last piece
     *    re-expanded as the layout requires. */
    for (r = 0; r < m; r++) {
        double der[TES_SPLINE_MAX_ORDER][TES_SPLINE_MAX_ORDER];
        int64_t l = bisect(t, k, n - k, x_out[r]);
        double fact = 1.0;
        int32_t d, j;

        basis_derivatives(t, l, k, x_out[r], der);
        for (d = 0; d <= k; d++) {
            double v = 0.0;

            for (j = 0; j <= k; j++)
                v += der[d][j] * coef[l - k + j];
            if (d > 0)
                fact *= d;
            c_out[r * order + d] = v / fact;
        }
    }

    /* 6. Data values exactly at data sites. */
    for (i = 0, r = 0; i < n; i++) {
        while (x_out[r] < x[i])
            r++;
        c_out[r * order] = y[i];
    }
    *count_out = m;

done:
    free(t);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Public fitting entry points                                         */
/* ------------------------------------------------------------------ */

int32_t
tes_spline_order(int32_t kind, int32_t degree)
{
    if (kind < 0 || kind >= TES_SPLINE_KIND_COUNT)
        return TES_SPLINE_EINVAL;
    if (kind == TES_SPLINE_LINEAR)
        return 2;
    if (kind == TES_SPLINE_BSPLINE) {
        if (degree < 1 || degree > TES_SPLINE_MAX_ORDER - 1)
            return TES_SPLINE_EINVAL;
        return degree + 1;
    }
    return 4;
}

int64_t
tes_spline_min_points(int32_t kind, int32_t degree)
{
    int32_t order = tes_spline_order(kind, degree);

    if (order < 0)
        return order;
    if (kind == TES_SPLINE_BSPLINE)
        return degree + 1;
    return 2;
}

int64_t
tes_spline_fit_rows(int32_t kind, int32_t degree, int64_t n)
{
    int64_t least = tes_spline_min_points(kind, degree);

    if (least < 0 || n < least)
        return TES_SPLINE_EINVAL;
    if (kind == TES_SPLINE_BSPLINE && degree % 2 == 0)
        return 2 * n - 1 - degree;
    return n;
}

int64_t
tes_spline_check_x(const double *x, int64_t n)
{
    int64_t i;

    for (i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return i;
        if (i > 0 && !(x[i] > x[i - 1]))
            return i;
    }
    return -1;
}

int
tes_spline_fit(const tes_spline_fit_opts *o, const double *x,
               const double *y, int64_t n, double *x_out, double *c_out,
               int64_t *count_out)
{
    int64_t rows = tes_spline_fit_rows(o->kind, o->degree, n), i;
    double *work;
    int rc = TES_SPLINE_OK;

    if (rows < 0)
        return TES_SPLINE_EINVAL;
    if (o->kind == TES_SPLINE_CATMULL_ROM &&
        !(o->tension >= TENSION_MIN && o->tension <= TENSION_MAX))
        return TES_SPLINE_EINVAL;
    if (o->kind == TES_SPLINE_HERMITE && o->dydx == NULL)
        return TES_SPLINE_EINVAL;
    if (o->kind == TES_SPLINE_BSPLINE)
        return fit_bspline(o->degree, x, y, n, x_out, c_out, count_out);

    memcpy(x_out, x, (size_t)n * sizeof(double));
    *count_out = n;
    if (o->kind == TES_SPLINE_LINEAR) {
        for (i = 0; i < n - 1; i++) {
            c_out[2 * i] = y[i];
            c_out[2 * i + 1] = (y[i + 1] - y[i]) / (x[i + 1] - x[i]);
        }
        finish_last_row(x, y, n, 2, c_out);
        return TES_SPLINE_OK;
    }
    if (o->kind == TES_SPLINE_HERMITE) {
        hermite_rows(x, y, o->dydx, n, c_out);
        return TES_SPLINE_OK;
    }

    /* Slopes go first, then 4n of scratch for the solvers. */
    work = malloc((size_t)(5 * n + 3) * sizeof(double));
    if (work == NULL)
        return TES_SPLINE_ENOMEM;
    if (n == 2 && o->kind >= TES_SPLINE_PCHIP) {
        /* Every local method reduces to the straight line here. */
        double m = (y[1] - y[0]) / (x[1] - x[0]);

        work[0] = work[1] = m;
        if (o->kind == TES_SPLINE_CATMULL_ROM)
            work[0] = work[1] = (1.0 - o->tension) * m;
    } else {
        switch (o->kind) {
        case TES_SPLINE_NOT_A_KNOT:
        case TES_SPLINE_NATURAL:
        case TES_SPLINE_CLAMPED:
        case TES_SPLINE_PERIODIC:
            rc = cubic_slopes(o, x, y, n, work, work + n);
            break;
        case TES_SPLINE_PCHIP:
            pchip_slopes(x, y, n, work);
            break;
        case TES_SPLINE_AKIMA:
        case TES_SPLINE_MAKIMA:
            akima_slopes(x, y, n, o->kind == TES_SPLINE_MAKIMA, work,
                         work + n);
            break;
        case TES_SPLINE_STEFFEN:
            steffen_slopes(x, y, n, work);
            break;
        case TES_SPLINE_CATMULL_ROM:
            catmull_rom_slopes(x, y, n, o->tension, work);
            break;
        default:
            rc = TES_SPLINE_EINVAL;
        }
    }
    if (rc == TES_SPLINE_OK)
        hermite_rows(x, y, work, n, c_out);
    free(work);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Evaluation                                                          */
/* ------------------------------------------------------------------ */

/*
 * Returns the value for a query outside [lo, hi] (or NaN) in the modes
 * that do not evaluate a piece there; *q receives the wrapped query for
 * PERIODIC. Returns 1 with *out set when the answer is final.
 */
static inline int
outside_value(const double *cr, int64_t n, int32_t order, int32_t ext,
              double lo, double hi, double *q, int32_t nu, double *out)
{
    if (*q != *q) {
        *out = *q;
        return 1;
    }
    switch (ext) {
    case TES_SPLINE_EXT_CLIP:
        *out = (nu > 0) ? 0.0 : (*q < lo ? cr[0] : cr[(n - 1) * order]);
        return 1;
    case TES_SPLINE_EXT_NAN:
        *out = NAN;
        return 1;
    case TES_SPLINE_EXT_PERIODIC:
        if (!isfinite(*q)) {
            *out = NAN;
            return 1;
        }
        *q = wrap_periodic(*q, lo, hi);
        return 0;
    default:
        return 0;
    }
}

/* Returns the nu-th derivative of one curve at q; see eval_point. */
static inline double
eval_curve(const double *xr, const double *cr, int64_t n, int32_t order,
           int32_t ext, double q, int32_t nu, int64_t *hint)
{
    double r;
    int64_t i;

    if (!(q >= xr[0] && q <= xr[n - 1]) &&
        outside_value(cr, n, order, ext, xr[0], xr[n - 1], &q, nu, &r))
        return r;
    i = find_row(xr, n, q, *hint);
    *hint = i;
    return poly_eval(cr + i * order, order, nu, q - xr[i]);
}

int64_t
tes_spline_rows(const tes_spline *s, int64_t curve)
{
    return curve_rows(s, curve);
}

double
tes_spline_eval_point(const tes_spline *s, int64_t curve, double q,
                      int32_t nu, int64_t *hint)
{
    const double *xr = s->x + (s->shared_x ? 0 : curve * s->nmax);
    const double *cr = s->c + curve * s->nmax * s->order;

    return eval_curve(xr, cr, curve_rows(s, curve), s->order,
                      s->extrapolate, q, nu, hint);
}

int
tes_spline_in_domain(const tes_spline *s, int64_t curve, double q)
{
    const double *xr = s->x + (s->shared_x ? 0 : curve * s->nmax);

    return q != q || (q >= xr[0] && q <= xr[curve_rows(s, curve) - 1]);
}

/*
 * Returns the row for q, lo <= q <= hi, trying in turn: the row after
 * prev (sorted queries that just crossed a breakpoint), the row a uniform
 * grid would put q in (random queries on even spacing), then bisection.
 * Any x content gives a row in [0, n - 1].
 */
static inline int64_t
locate_row(const double *xr, int64_t n, double q, int64_t prev,
           double lo, double rows_per_unit)
{
    double guess = (q - lo) * rows_per_unit;
    int64_t g, next = prev + 1;

    /* Clamped while still a double: damaged breakpoints can make the
     * guess NaN or huge, and converting such a value to an integer is
     * undefined. The first test is false for NaN, sending it to n - 2. */
    guess = (guess < (double)(n - 2)) ? guess : (double)(n - 2);
    g = (guess > 0.0) ? (int64_t)guess : 0;
    if ((xr[g] <= q) & (q < xr[g + 1]))
        return g;
    if (next < n - 1 && (xr[next] <= q) & (q < xr[next + 1]))
        return next;
    if (xr[g] <= q) {
        if (g + 2 >= n || q < xr[g + 2])
            return g + 1;
        return bisect(xr, g + 2, n - g - 2, q);
    }
    return bisect(xr, 0, g, q);
}

/* Queries checked and evaluated together in the sorted fast path. */
#define EVAL_BLOCK 8

#if defined(__GNUC__)
/* Four doubles; GCC and Clang lower it to whatever vector width the
 * target has (two SSE2 halves on baseline x86-64, one AVX2 register on
 * the x86-64-v3 copy). */
typedef double vec4 __attribute__((vector_size(32)));
typedef int64_t mask4 __attribute__((vector_size(32)));
#define BLOCK_VECS (EVAL_BLOCK / 4)

/*
 * Returns 1 and writes out[0..EVAL_BLOCK-1] when every query q[0..] lies
 * in [xi, xnext), the span of row; returns 0 and writes nothing otherwise
 * (a NaN query fails the test too).
 */
static inline ALWAYS_INLINE int
block_eval(const double *row, int32_t order, int32_t nu, double xi,
           double xnext, const double *q, double *out)
{
    vec4 t[BLOCK_VECS], acc[BLOCK_VECS];
    const vec4 zero = {0.0, 0.0, 0.0, 0.0};
    mask4 inside = {-1, -1, -1, -1};
    int32_t h, m;

    for (h = 0; h < BLOCK_VECS; h++) {
        memcpy(&t[h], q + 4 * h, sizeof(vec4));
        inside &= (t[h] >= xi) & (t[h] < xnext);
    }
    if (!(inside[0] & inside[1] & inside[2] & inside[3]))
        return 0;
    for (h = 0; h < BLOCK_VECS; h++) {
        t[h] -= xi;
        acc[h] = zero + row[order - 1] * FALLING[nu][order - 1];
        for (m = order - 2; m >= nu; m--)
            acc[h] = acc[h] * t[h] + row[m] * FALLING[nu][m];
        if (nu >= order)
            acc[h] = zero;
        memcpy(out + 4 * h, &acc[h], sizeof(vec4));
    }
    return 1;
}
#else
/* Scalar form of the block test and evaluation; same contract. */
static inline int
block_eval(const double *row, int32_t order, int32_t nu, double xi,
           double xnext, const double *q, double *out)
{
    int m;

    for (m = 0; m < EVAL_BLOCK; m++)
        if (!(q[m] >= xi && q[m] < xnext))
            return 0;
    for (m = 0; m < EVAL_BLOCK; m++)
        out[m] = poly_eval(row, order, nu, q[m] - xi);
    return 1;
}
#endif

/*
 * Evaluates one curve at nq queries into out[k * stride]. order and nu
 * come in as constants from the call sites below so that the compiler
 * unrolls Horner for each. The current row's span [xi, xnext) is kept in
 * registers; when a whole block of queries falls inside it (sorted input),
 * the block is evaluated without branches, which lets the compiler use
 * vector instructions. Returns TES_SPLINE_OK or, in RAISE mode,
 * TES_SPLINE_EDOMAIN with *bad set.
 */
static inline ALWAYS_INLINE int
eval_run(const double *xr, const double *cr, int64_t n, int32_t order,
         int32_t ext, const double *q, int64_t nq, int32_t nu, double *out,
         int64_t stride, int64_t *bad)
{
    double lo = xr[0], hi = xr[n - 1];
    double rows_per_unit = (double)(n - 1) / (hi - lo);
    double xi = xr[0], xnext = xr[1], past_hi = nextafter(hi, INFINITY);
    double row[TES_SPLINE_MAX_ORDER];
    int64_t i = 0, k = 0;
    int try_block = 1;

    /* A local copy of the current row: stores to out cannot alias it, so
     * its coefficients stay in registers from block to block. */
    memcpy(row, cr, (size_t)order * sizeof(double));

    while (k < nq) {
        double v, r;

        /* 1. A block inside the current row: no search, no branches.
         *    Tried again only once a query stayed in its row, so random
         *    queries do not pay for blocks that never fit. */
        if (try_block && stride == 1 && k + EVAL_BLOCK <= nq) {
            if (block_eval(row, order, nu, xi, xnext, q + k, out + k)) {
                k += EVAL_BLOCK;
                continue;
            }
            try_block = 0;
        }

        /* 2. One query; move to its row when it left the current one. */
        v = q[k];
        try_block = (v >= xi && v < xnext);
        if (!try_block) {
            if (!(v >= lo && v <= hi)) {
                if (ext == TES_SPLINE_EXT_RAISE && v == v) {
                    *bad = k;
                    return TES_SPLINE_EDOMAIN;
                }
                if (outside_value(cr, n, order, ext, lo, hi, &v, nu, &r)) {
                    out[k * stride] = r;
                    k++;
                    continue;
                }
                if (!(v >= lo && v <= hi)) {
                    /* Extrapolating: evaluate an end row, keep the span. */
                    int64_t e = (v < lo) ? 0 : n - 1;

                    out[k * stride] = poly_eval(cr + e * order, order, nu,
                                                v - xr[e]);
                    k++;
                    continue;
                }
            }
            i = locate_row(xr, n, v, i, lo, rows_per_unit);
            xi = xr[i];
            /* The last row's span holds only hi itself. */
            xnext = (i < n - 1) ? xr[i + 1] : past_hi;
            memcpy(row, cr + i * order, (size_t)order * sizeof(double));
        }
        out[k * stride] = poly_eval(row, order, nu, v - xi);
        k++;
    }
    return TES_SPLINE_OK;
}

/*
 * Dispatches eval_run on constant order and nu for the common cases.
 * Where the compiler supports it, a second copy is built for x86-64-v3
 * (AVX2 and FMA) and chosen at load time, since the block path is
 * vectorised Horner; other machines run the baseline copy.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static int
eval_one_curve(const double *xr, const double *cr, int64_t n, int32_t order,
               int32_t ext, const double *q, int64_t nq, int32_t nu,
               double *out, int64_t stride, int64_t *bad)
{
    if (order == 4 && nu == 0)
        return eval_run(xr, cr, n, 4, ext, q, nq, 0, out, stride, bad);
    if (order == 4)
        return eval_run(xr, cr, n, 4, ext, q, nq, nu, out, stride, bad);
    if (order == 2 && nu == 0)
        return eval_run(xr, cr, n, 2, ext, q, nq, 0, out, stride, bad);
    return eval_run(xr, cr, n, order, ext, q, nq, nu, out, stride, bad);
}

/*
 * Curves sharing breakpoints: one row search per query serves all of
 * them. Same contract as eval_run, out is row-major (query, curve).
 */
static int
eval_shared(const tes_spline *s, const double *q, int64_t nq, int32_t nu,
            double *out, int64_t *bad)
{
    const double *xr = s->x;
    int64_t n = curve_rows(s, 0), nc = s->ncurves, hint = 0, k, j;
    int64_t curve_step = s->nmax * s->order;
    int32_t order = s->order, ext = s->extrapolate;
    double lo = xr[0], hi = xr[n - 1];

    for (k = 0; k < nq; k++) {
        double v = q[k], r;
        int64_t i;

        if (!(v >= lo && v <= hi)) {
            int all_nan = (v != v);

            if (!all_nan && ext == TES_SPLINE_EXT_RAISE) {
                *bad = k;
                return TES_SPLINE_EDOMAIN;
            }
            if (!all_nan && (ext == TES_SPLINE_EXT_CLIP ||
                             ext == TES_SPLINE_EXT_NAN)) {
                for (j = 0; j < nc; j++) {
                    double w = v;

                    outside_value(s->c + j * curve_step, n, order, ext, lo,
                                  hi, &w, nu, &r);
                    out[k * nc + j] = r;
                }
                continue;
            }
            if (ext == TES_SPLINE_EXT_PERIODIC) {
                if (!isfinite(v))
                    all_nan = 1;
                else
                    v = wrap_periodic(v, lo, hi);
            }
            if (all_nan) {
                for (j = 0; j < nc; j++)
                    out[k * nc + j] = NAN;
                continue;
            }
        }
        i = find_row(xr, n, v, hint);
        hint = i;
        for (j = 0; j < nc; j++)
            out[k * nc + j] = poly_eval(s->c + j * curve_step + i * order,
                                        order, nu, v - xr[i]);
    }
    return TES_SPLINE_OK;
}

int
tes_spline_eval(const tes_spline *s, const double *q, int64_t nq,
                int32_t nu, double *out, int64_t *bad)
{
    int64_t nc = s->ncurves, j;
    int rc = TES_SPLINE_OK;

    if (nc > 1 && s->shared_x)
        return eval_shared(s, q, nq, nu, out, bad);
    for (j = 0; j < nc && rc == TES_SPLINE_OK; j++) {
        const double *xr = s->x + (s->shared_x ? 0 : j * s->nmax);
        const double *cr = s->c + j * s->nmax * s->order;
        int64_t n = curve_rows(s, j);

        rc = eval_one_curve(xr, cr, n, s->order, s->extrapolate, q, nq, nu,
                            out + j, nc, bad);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Integration                                                         */
/* ------------------------------------------------------------------ */

/*
 * Returns the integral from a to b (any order) of the pieces of one curve,
 * extending the end pieces beyond the data. a and b are finite.
 */
static double
integrate_pieces(const double *xr, const double *cr, int64_t n,
                 int32_t order, double a, double b)
{
    double sign = 1.0, sum;
    int64_t ia, ib, i;

    if (a > b) {
        double tmp = a;

        a = b;
        b = tmp;
        sign = -1.0;
    }
    ia = find_row(xr, n, a, 0);
    ib = find_row(xr, n, b, ia);
    /* ib < ia only when x is damaged (not increasing); one piece then
     * keeps the loop below from reading x[n]. */
    if (ib <= ia)
        return sign * (poly_integral(cr + ia * order, order, b - xr[ia]) -
                       poly_integral(cr + ia * order, order, a - xr[ia]));
    sum = poly_integral(cr + ia * order, order, xr[ia + 1] - xr[ia]) -
          poly_integral(cr + ia * order, order, a - xr[ia]);
    for (i = ia + 1; i < ib; i++)
        sum += poly_integral(cr + i * order, order, xr[i + 1] - xr[i]);
    sum += poly_integral(cr + ib * order, order, b - xr[ib]);
    return sign * sum;
}

/*
 * Returns the integral from a to b of one curve under extrapolation mode
 * ext (RAISE is checked by the caller and behaves as EXTRAPOLATE here).
 */
static double
integrate_curve(const double *xr, const double *cr, int64_t n, int32_t order,
                int32_t ext, double a, double b)
{
    double lo = xr[0], hi = xr[n - 1], sign = 1.0, sum = 0.0;

    if (a != a || b != b)
        return NAN;
    if (a == b)
        return 0.0;
    if (a > b) {
        double tmp = a;

        a = b;
        b = tmp;
        sign = -1.0;
    }
    if (ext == TES_SPLINE_EXT_NAN && (a < lo || b > hi))
        return NAN;
    if (ext == TES_SPLINE_EXT_CLIP) {
        /* Constant end values outside, the pieces inside. */
        if (a < lo)
            sum += (fmin(b, lo) - a) * cr[0];
        if (b > hi)
            sum += (b - fmax(a, hi)) * cr[(n - 1) * order];
        if (fmax(a, lo) < fmin(b, hi))
            sum += integrate_pieces(xr, cr, n, order, fmax(a, lo),
                                    fmin(b, hi));
        return sign * sum;
    }
    if (ext == TES_SPLINE_EXT_PERIODIC) {
        /* Whole periods, then the remainder starting inside the data. */
        double period = hi - lo, span = b - a, whole, left;

        if (!isfinite(span))
            return NAN;
        left = fmod(span, period);
        whole = nearbyint((span - left) / period);
        if (whole > 0.0)
            sum = whole * integrate_pieces(xr, cr, n, order, lo, hi);
        a = wrap_periodic(a, lo, hi);
        b = a + left;
        if (b <= hi)
            sum += integrate_pieces(xr, cr, n, order, a, b);
        else
            sum += integrate_pieces(xr, cr, n, order, a, hi) +
                   integrate_pieces(xr, cr, n, order, lo, lo + (b - hi));
        return sign * sum;
    }
    return sign * integrate_pieces(xr, cr, n, order, a, b);
}

int
tes_spline_integrate(const tes_spline *s, double a, double b, double *out)
{
    int64_t j;

    for (j = 0; j < s->ncurves; j++) {
        const double *xr = s->x + (s->shared_x ? 0 : j * s->nmax);
        const double *cr = s->c + j * s->nmax * s->order;
        int64_t n = curve_rows(s, j);

        if (s->extrapolate == TES_SPLINE_EXT_RAISE &&
            (!tes_spline_in_domain(s, j, a) ||
             !tes_spline_in_domain(s, j, b)))
            return TES_SPLINE_EDOMAIN;
        out[j] = integrate_curve(xr, cr, n, s->order, s->extrapolate, a, b);
    }
    return TES_SPLINE_OK;
}

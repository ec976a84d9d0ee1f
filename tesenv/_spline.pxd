# C-level API of tesenv._spline for other Cython modules.
#
# cimport the kernels to evaluate a fitted Spline without the GIL:
#
#     from tesenv._spline cimport Spline, tes_spline_eval_point
#     cdef Spline s = ...
#     with nogil:
#         v = s.eval_scalar(0.37, 0)
#
# Declarations only; the glue lives in _spline.pyx.

from libc.stdint cimport int32_t, int64_t


cdef extern from "spline.h" nogil:
    enum:
        TES_SPLINE_MAX_ORDER
        TES_SPLINE_MAX_NU

    enum:
        TES_SPLINE_OK
        TES_SPLINE_EDOMAIN
        TES_SPLINE_EINVAL
        TES_SPLINE_ENOMEM
        TES_SPLINE_ESINGULAR

    enum:
        TES_SPLINE_LINEAR
        TES_SPLINE_NOT_A_KNOT
        TES_SPLINE_NATURAL
        TES_SPLINE_CLAMPED
        TES_SPLINE_PERIODIC
        TES_SPLINE_PCHIP
        TES_SPLINE_AKIMA
        TES_SPLINE_MAKIMA
        TES_SPLINE_STEFFEN
        TES_SPLINE_CATMULL_ROM
        TES_SPLINE_BSPLINE
        TES_SPLINE_HERMITE
        TES_SPLINE_KIND_COUNT

    enum:
        TES_SPLINE_EXT_EXTRAPOLATE
        TES_SPLINE_EXT_CLIP
        TES_SPLINE_EXT_NAN
        TES_SPLINE_EXT_RAISE
        TES_SPLINE_EXT_PERIODIC
        TES_SPLINE_EXT_COUNT

    ctypedef struct tes_spline:
        const double *x
        const double *c
        const int64_t *count
        int64_t ncurves
        int64_t nmax
        int32_t order
        int32_t shared_x
        int32_t extrapolate
        int32_t reserved

    ctypedef struct tes_spline_fit_opts:
        int32_t kind
        int32_t degree
        double slope_left
        double slope_right
        double tension
        const double *dydx

    # Cannot fail: they return a code or a documented sentinel.
    int32_t tes_spline_order(int32_t kind, int32_t degree) noexcept
    int64_t tes_spline_min_points(int32_t kind, int32_t degree) noexcept
    int64_t tes_spline_fit_rows(int32_t kind, int32_t degree,
                                int64_t n) noexcept
    int64_t tes_spline_check_x(const double *x, int64_t n) noexcept
    int64_t tes_spline_rows(const tes_spline *s, int64_t curve) noexcept
    int tes_spline_fit(const tes_spline_fit_opts *opts, const double *x,
                       const double *y, int64_t n, double *x_out,
                       double *c_out, int64_t *count_out) noexcept
    double tes_spline_eval_point(const tes_spline *s, int64_t curve,
                                 double q, int32_t nu,
                                 int64_t *hint) noexcept
    int tes_spline_in_domain(const tes_spline *s, int64_t curve,
                             double q) noexcept
    int tes_spline_eval(const tes_spline *s, const double *q, int64_t nq,
                        int32_t nu, double *out, int64_t *bad) noexcept
    int tes_spline_integrate(const tes_spline *s, double a, double b,
                             double *out) noexcept


cdef class Spline:
    # The C view of the fitted curves; its pointers stay valid for as long
    # as the Spline lives (it holds the arrays, and is never refitted).
    # Before fitting it points at a placeholder curve that gives NaN.
    cdef tes_spline view
    # Row to try first in the scalar path; any value is safe.
    cdef int64_t hint
    cdef readonly str kind
    cdef readonly str extrapolate
    cdef readonly int64_t ncurves
    cdef readonly int32_t order
    cdef readonly int32_t degree
    cdef readonly object tension
    cdef bint two_d
    cdef object x_arr
    cdef object c_arr
    cdef object count_arr

    cdef int _adopt(self, int32_t kind_id, int32_t ext_id, int32_t degree,
                    bint two_d, tension, x_arr, c_arr,
                    count_arr) except -1

    # Raises ValueError for a Spline made by __new__ and never fitted.
    cdef int _require_fitted(self) except -1

    # Value (nu = 0) or derivative of curve 0 at q; RAISE behaves as
    # extrapolation here, check in_domain first where that matters.
    cdef double eval_scalar(self, double q, int32_t nu) noexcept nogil
    # Nonzero when q is NaN or inside the data of `curve`.
    cdef int in_domain(self, int64_t curve, double q) noexcept nogil

# cython: language_level=3
"""Fitted curves as data: piecewise polynomials evaluated in C.

Every kind of curve is fitted into breakpoints plus per-interval power-basis
coefficients (see csrc/spline.h), so one kernel evaluates all of them, and a
fitted curve can be stored as three plain arrays and rebuilt elsewhere
without refitting.
"""

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_CheckExact
from libc.math cimport NAN, isfinite, fabs
from libc.stdint cimport int32_t, int64_t

import numbers

import numpy as np

# Curve kinds by name, in the order of the TES_SPLINE_* kind numbers.
KINDS = ("linear", "not-a-knot", "natural", "clamped", "periodic", "pchip",
         "akima", "makima", "steffen", "catmull-rom", "bspline", "hermite")

# Extrapolation modes by name, in the order of TES_SPLINE_EXT_*.
EXTRAPOLATE_MODES = ("extrapolate", "clip", "nan", "raise", "periodic")

MISSING_MODES = ("raise", "drop")

# Options that only some kinds use; giving one to another kind is an error
# rather than silently ignored.
KIND_OPTIONS = {"k": ("bspline",), "bc": ("clamped",), "dydx": ("hermite",),
                "tension": ("catmull-rom",)}

# Version of the parts written by _store_parts; bump on layout changes.
STORE_FORMAT = "tesenv.spline"
STORE_VERSION = 1

# y[0] and y[-1] of a periodic curve may differ by this much (absolute
# plus relative), as SciPy allows.
cdef double PERIODIC_END_TOL = 1e-15

# Arrays with fewer values than this are evaluated holding the GIL: the
# release and reacquisition cost more than the work.
cdef int64_t NOGIL_MIN_VALUES = 256

# What an unfitted Spline (made by __new__ alone) points its view at, so
# that the nogil entry points read valid memory: one linear piece of NaN.
cdef double UNFITTED_X[2]
cdef double UNFITTED_C[4]
cdef int64_t UNFITTED_COUNT[1]
UNFITTED_X[0] = 0.0
UNFITTED_X[1] = 1.0
UNFITTED_C[:] = [NAN, NAN, NAN, NAN]
UNFITTED_COUNT[0] = 2

# Fitting errors found in nogil code, besides the C TES_SPLINE_E* codes.
cdef enum:
    FIT_NONFINITE_Y = 1
    FIT_TOO_FEW = 2
    FIT_PERIODIC_ENDS = 3

# Everything the nogil fitting loop needs, and where it reports a failure.
cdef struct FitJob:
    tes_spline_fit_opts opts
    const double *x
    const double *y           # n rows of y_stride values
    const double *dydx        # same layout as y, or NULL
    const double *bc_left     # one per curve, or NULL
    const double *bc_right
    int64_t n
    int64_t ncurves
    int64_t y_stride
    bint drop
    bint shared
    bint direct               # one curve, no copy: xs, ys, ds unused
    double *xs                # scratch, n values each
    double *ys
    double *ds
    double *x_spare           # breakpoints of curves past the first, shared
    double *x_out
    double *c_out
    int64_t *count
    int64_t nmax
    int32_t order
    # Failure report.
    int err
    int64_t bad_curve
    int64_t bad_index


cdef int fit_curves(FitJob *job) noexcept nogil:
    """Fits every curve of job; returns 0 or an error code (also in
    job.err) with job.bad_curve / job.bad_index naming the culprit."""
    cdef int64_t j, i, kept, rc
    cdef double v, d
    cdef double *x_dst
    cdef const double *yk
    cdef bint ok

    for j in range(job.ncurves):
        # 1. Gather the curve's points, dropping or refusing non-finite y.
        #    A single curve that must be all finite is used in place.
        kept = 0
        if job.direct:
            for i in range(job.n):
                if not (isfinite(job.y[i]) and (job.dydx == NULL or
                                                isfinite(job.dydx[i]))):
                    job.err = FIT_NONFINITE_Y
                    job.bad_curve = j
                    job.bad_index = i
                    return job.err
            kept = job.n
        for i in range(0 if job.direct else job.n):
            v = job.y[i * job.y_stride + j]
            d = 0.0
            if job.dydx != NULL:
                d = job.dydx[i * job.y_stride + j]
            ok = isfinite(v) and isfinite(d)
            if not ok:
                if job.drop:
                    continue
                job.err = FIT_NONFINITE_Y
                job.bad_curve = j
                job.bad_index = i
                return job.err
            job.xs[kept] = job.x[i]
            job.ys[kept] = v
            job.ds[kept] = d
            kept += 1

        # 2. Checks that depend on the points kept.
        if kept < tes_spline_min_points(job.opts.kind, job.opts.degree):
            job.err = FIT_TOO_FEW
            job.bad_curve = j
            job.bad_index = kept
            return job.err
        yk = job.y if job.direct else job.ys
        if job.opts.kind == TES_SPLINE_PERIODIC:
            if fabs(yk[0] - yk[kept - 1]) > PERIODIC_END_TOL * (
                    1.0 + fabs(yk[kept - 1])):
                job.err = FIT_PERIODIC_ENDS
                job.bad_curve = j
                return job.err

        # 3. Fit into the curve's rows.
        if job.bc_left != NULL:
            job.opts.slope_left = job.bc_left[j]
            job.opts.slope_right = job.bc_right[j]
        job.opts.dydx = job.ds
        if job.direct:
            job.opts.dydx = job.dydx
        if job.shared:
            x_dst = job.x_out if j == 0 else job.x_spare
        else:
            x_dst = job.x_out + j * job.nmax
        rc = tes_spline_fit(&job.opts, job.x if job.direct else job.xs,
                            yk, kept, x_dst,
                            job.c_out + j * job.nmax * job.order,
                            &job.count[j])
        if rc != TES_SPLINE_OK:
            job.err = <int>rc
            job.bad_curve = j
            return job.err
    return 0


def _float_array(name, value):
    """Returns value as a float64 array; complex or non-numeric input is a
    TypeError that names the argument."""
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real; got complex values "
                        "(take .real or abs() first)")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype "
                        f"{arr.dtype}")
    # asarray with order="C" keeps 0-d arrays 0-d (ascontiguousarray would
    # make them 1-d) and copies only when needed.
    return np.asarray(arr, dtype=np.float64, order="C")


def _mode_index(value, choices, what, also=""):
    """Returns the index of value among choices, or raises ValueError
    listing the valid ones (and `also`, other accepted spellings)."""
    if isinstance(value, str) and value in choices:
        return choices.index(value)
    valid = ", ".join(repr(c) for c in choices)
    raise ValueError(f"unknown {what} {value!r}; valid: {valid}{also}")


def _is_int(value):
    """True for Python and numpy integers, False for bools."""
    return (isinstance(value, (int, np.integer))
            and not isinstance(value, bool))


def _check_kind_options(kind, given):
    """Raises ValueError naming the first option in `given` (name: value,
    None meaning not given) that kind does not use."""
    for name, value in given.items():
        kinds = KIND_OPTIONS[name]
        if value is not None and kind not in kinds:
            where = " or ".join(repr(k) for k in kinds)
            raise ValueError(f"option {name} applies to kind {where} only; "
                             f"got {name}={value!r} with kind {kind!r}")


def _bspline_degree(k):
    """Returns the B-spline degree k (None means 3) as an int, or raises
    TypeError / ValueError."""
    if k is None:
        return 3
    if not _is_int(k):
        raise TypeError(f"B-spline degree k must be an int from 1 to 5; got "
                        f"{k!r} ({type(k).__name__})")
    if not 1 <= k <= 5:
        raise ValueError(f"B-spline degree k must be 1..5; got {k!r}")
    return int(k)


def _tension(value):
    """Returns the Catmull-Rom tension (None means 0.0) as a float in
    [0, 1], or raises TypeError / ValueError."""
    if value is None:
        return 0.0
    if isinstance(value, (bool, np.bool_)) or not isinstance(value,
                                                            numbers.Real):
        raise TypeError(f"tension must be a real number in [0, 1]; got "
                        f"{value!r} ({type(value).__name__})")
    tension = float(value)
    if not 0.0 <= tension <= 1.0:
        raise ValueError(f"tension must be in [0, 1]; got {tension!r}")
    return tension


# The default of nu in Spline.__call__; a call that leaves nu out passes
# this very object, so an identity test spares the one-point path the
# conversion.
cdef object NU_DEFAULT = 0


cdef inline int32_t derivative_order(nu) except -1:
    """Returns nu as the derivative order 0..3; TypeError unless nu is an
    int (bools and floats included), ValueError out of range."""
    cdef int overflow = 0
    cdef long value

    # Checked on every call: the exact-int case costs no Python calls.
    if PyLong_CheckExact(nu):
        value = PyLong_AsLongAndOverflow(nu, &overflow)
        if overflow == 0 and 0 <= value <= TES_SPLINE_MAX_NU:
            return <int32_t>value
    elif not _is_int(nu):
        raise TypeError(f"derivative order nu must be an int from 0 to 3; "
                        f"got {nu!r} ({type(nu).__name__})")
    elif 0 <= nu <= TES_SPLINE_MAX_NU:
        return <int32_t>int(nu)
    raise ValueError(f"derivative order nu must be 0..3; got {nu!r}")


def _per_curve(name, value, int64_t ncurves):
    """Returns value broadcast to one float64 per curve."""
    arr = _float_array(name, value)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, ncurves)):
        raise ValueError(f"{name} must be a number or one per curve "
                         f"({ncurves}); got shape {arr.shape}")
    return np.ascontiguousarray(np.broadcast_to(arr.reshape(-1), (ncurves,)))


def _spline_from_parts(meta, arrays):
    """Unpickling entry point: rebuilds a Spline from its store parts."""
    return Spline._from_store_parts(meta, arrays)


cdef class Spline:
    """Spline(x, y, kind='not-a-knot', *, k=None, bc=None, dydx=None,
    tension=None, extrapolate=None, missing='raise')

    A fitted curve, or a batch of curves sharing x, evaluated in C.

    x : strictly increasing, finite, 1-D.
    y : 1-D (one curve) or 2-D with one column per curve.
    kind : one of 'linear', 'not-a-knot' (default), 'natural', 'clamped',
        'periodic' (C2 cubics with that end condition, as SciPy's
        CubicSpline), 'pchip', 'akima', 'makima', 'steffen' (monotone,
        Steffen 1990), 'catmull-rom', 'bspline', 'hermite'.
    k : B-spline degree, an int from 1 to 5, default 3 ('bspline' only;
        SciPy's make_interp_spline with its default knots).
    bc : (slope_left, slope_right) for 'clamped': the first derivative at
        x[0] and at x[-1]; each a number or one per curve.
    dydx : slopes at x for 'hermite', shaped like y.
    tension : 'catmull-rom' only, 0 (Catmull-Rom, the default) to 1 (flat
        tangents); the slope at x[i] is (1 - tension) times the secant
        through its neighbours, the one-sided secant at the ends.
        Giving k, bc, dydx or tension to a kind that does not use it is a
        ValueError.
    extrapolate : outside [x[0], x[-1]]: 'extrapolate' (continue the end
        pieces; the default), 'clip' (hold the end value, derivatives 0),
        'nan', 'raise' (ValueError naming the query) or 'periodic'. The
        default for kind 'periodic' is 'periodic'. True and False mean
        'extrapolate' and 'nan'. A NaN query gives NaN in every mode,
        'raise' included.
    missing : 'raise' (default) refuses NaN or inf in y; 'drop' fits each
        curve on its own finite points.

    s(q, nu=0) gives the nu-th derivative (nu an int, 0..3) at q: a float
    for a float and one curve, else an array shaped like q, with a trailing
    axis of one entry per curve when y was 2-D. s.integrate(a, b) gives the
    definite integral. Results are float64 whatever the input float type.

    A Spline is immutable: x, c and counts are read-only, and evaluation
    stays within its arrays whatever they hold.
    """

    def __cinit__(self):
        self.view.x = UNFITTED_X
        self.view.c = UNFITTED_C
        self.view.count = UNFITTED_COUNT
        self.view.ncurves = 1
        self.view.nmax = 2
        self.view.order = 2
        self.view.shared_x = 1
        self.view.extrapolate = TES_SPLINE_EXT_NAN
        self.view.reserved = 0
        self.ncurves = 1

    def __init__(self, x, y, kind="not-a-knot", *, k=None, bc=None,
                 dydx=None, tension=None, extrapolate=None, missing="raise"):
        cdef FitJob job
        cdef int32_t kind_id, degree, order
        cdef int64_t n, ncurves, nmax, bad, rc

        # 0. Refitting would free arrays that a nogil evaluation in another
        #    thread may still be reading.
        if self.x_arr is not None:
            raise TypeError("a Spline cannot be fitted again; make a new one")

        # 1. Options.
        kind_id = _mode_index(kind, KINDS, "curve kind")
        _check_kind_options(kind, {"k": k, "bc": bc, "dydx": dydx,
                                   "tension": tension})
        missing_id = _mode_index(missing, MISSING_MODES, "missing mode")
        if extrapolate is None:
            extrapolate = "periodic" if kind == "periodic" else "extrapolate"
        elif extrapolate is True:
            extrapolate = "extrapolate"
        elif extrapolate is False:
            extrapolate = "nan"
        ext_id = _mode_index(
            extrapolate, EXTRAPOLATE_MODES, "extrapolate mode",
            ", or True ('extrapolate'), False ('nan') or None (the kind's "
            "default)")
        degree = 3
        if kind_id == TES_SPLINE_BSPLINE:
            degree = _bspline_degree(k)
        order = tes_spline_order(kind_id, degree)
        if kind_id == TES_SPLINE_CATMULL_ROM:
            tension = _tension(tension)

        # 2. Data.
        xa = _float_array("x", x)
        ya = _float_array("y", y)
        if xa.ndim != 1:
            raise ValueError(f"x must be 1-D; got shape {xa.shape}")
        if ya.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D; got shape {ya.shape}")
        n = xa.shape[0]
        if ya.shape[0] != n:
            raise ValueError(f"x and y differ in length: {n} x values, "
                             f"{ya.shape[0]} rows of y")
        two_d = ya.ndim == 2
        ncurves = ya.shape[1] if two_d else 1
        if ncurves < 1:
            raise ValueError("y has no curves (zero columns)")
        least = tes_spline_min_points(kind_id, degree)
        if n < least:
            raise ValueError(f"kind {kind!r} needs at least {least} points; "
                             f"got {n}")
        cdef const double[::1] xv = xa
        bad = tes_spline_check_x(&xv[0], n)
        if bad >= 0:
            if not isfinite(xv[bad]):
                raise ValueError(f"x must be finite; x[{bad}] = {xv[bad]}")
            raise ValueError(f"x must be strictly increasing; x[{bad}] = "
                             f"{xv[bad]} follows x[{bad - 1}] = "
                             f"{xv[bad - 1]}")

        # 3. Kind-specific inputs.
        da = None
        bcl = bcr = None
        if kind_id == TES_SPLINE_CLAMPED:
            if bc is None:
                raise ValueError("kind 'clamped' needs the end slopes: "
                                 "bc=(slope_left, slope_right)")
            try:
                left, right = bc
            except (TypeError, ValueError):
                raise ValueError("bc must be a pair (slope_left, "
                                 f"slope_right); got {bc!r}") from None
            bcl = _per_curve("bc[0]", left, ncurves)
            bcr = _per_curve("bc[1]", right, ncurves)
            if not (np.isfinite(bcl).all() and np.isfinite(bcr).all()):
                raise ValueError("end slopes bc must be finite")
        if kind_id == TES_SPLINE_HERMITE:
            if dydx is None:
                raise ValueError("kind 'hermite' needs the slopes dydx")
            da = _float_array("dydx", dydx)
            if da.shape != ya.shape:
                raise ValueError(f"dydx must be shaped like y {ya.shape}; "
                                 f"got {da.shape}")

        # 4. Storage: shared breakpoints unless dropping leaves gaps.
        drop = missing_id == 1
        finite = True
        if drop:
            finite = bool(np.isfinite(ya).all())
            if da is not None:
                finite = finite and bool(np.isfinite(da).all())
        shared = not drop or finite
        nmax = tes_spline_fit_rows(kind_id, degree, n)
        direct = ncurves == 1 and not drop
        x_arr = np.zeros((1 if shared else ncurves, nmax))
        c_arr = np.empty((ncurves, nmax, order))
        count_arr = np.zeros(ncurves, dtype=np.int64)
        scratch = np.empty((1 if direct else 4, max(n, nmax)))

        cdef const double[::1] yv = ya.reshape(-1)
        cdef const double[::1] dv
        cdef const double[::1] blv
        cdef const double[::1] brv
        cdef double[:, ::1] sv = scratch
        cdef double[:, ::1] xo = x_arr
        cdef double[:, :, ::1] co = c_arr
        cdef int64_t[::1] cnt = count_arr

        job.opts.kind = kind_id
        job.opts.degree = degree
        job.opts.slope_left = 0.0
        job.opts.slope_right = 0.0
        job.opts.tension = tension if kind_id == TES_SPLINE_CATMULL_ROM else 0.0
        job.opts.dydx = NULL
        job.x = &xv[0]
        job.y = &yv[0]
        job.dydx = NULL
        if da is not None:
            dv = da.reshape(-1)
            job.dydx = &dv[0]
        job.bc_left = job.bc_right = NULL
        if bcl is not None:
            blv = bcl
            brv = bcr
            job.bc_left = &blv[0]
            job.bc_right = &brv[0]
        job.n = n
        job.ncurves = ncurves
        job.y_stride = ncurves
        job.drop = drop
        job.shared = shared
        job.direct = direct
        job.xs = job.ys = job.ds = job.x_spare = &sv[0, 0]
        if not direct:
            job.ys = &sv[1, 0]
            job.ds = &sv[2, 0]
            job.x_spare = &sv[3, 0]
        job.x_out = &xo[0, 0]
        job.c_out = &co[0, 0, 0]
        job.count = &cnt[0]
        job.nmax = nmax
        job.order = order
        job.err = 0
        job.bad_curve = job.bad_index = 0

        # 5. Fit without the GIL; report after taking it back.
        with nogil:
            rc = fit_curves(&job)
        if rc != 0:
            raise_fit_error(&job, kind, xa, two_d)

        # 6. Zero the padding so that equal curves are equal bytes.
        for j, used in enumerate(count_arr):
            c_arr[j, used:] = 0.0
            if not shared:
                x_arr[j, used:] = 0.0

        self._adopt(kind_id, ext_id, degree, two_d, None
                    if kind_id != TES_SPLINE_CATMULL_ROM else tension,
                    x_arr, c_arr, count_arr)

    cdef int _adopt(self, int32_t kind_id, int32_t ext_id, int32_t degree,
                    bint two_d, tension, x_arr, c_arr,
                    count_arr) except -1:
        """Points the C view at the arrays and keeps them alive. Keeps
        read-only views, so that nothing reached through this Spline can
        change them (their owner still can: see spline.h on what the
        kernels trust)."""
        cdef const double[:, ::1] xv
        cdef const double[:, :, ::1] cv
        cdef const int64_t[::1] nv

        x_arr, c_arr, count_arr = x_arr.view(), c_arr.view(), count_arr.view()
        for arr in (x_arr, c_arr, count_arr):
            arr.flags.writeable = False
        xv = x_arr
        cv = c_arr
        nv = count_arr

        self.kind = KINDS[kind_id]
        self.extrapolate = EXTRAPOLATE_MODES[ext_id]
        self.degree = degree
        self.order = cv.shape[2]
        self.tension = tension
        self.two_d = two_d
        self.ncurves = cv.shape[0]
        self.x_arr = x_arr
        self.c_arr = c_arr
        self.count_arr = count_arr
        self.hint = 0
        self.view.x = &xv[0, 0]
        self.view.c = &cv[0, 0, 0]
        self.view.count = &nv[0]
        self.view.ncurves = cv.shape[0]
        self.view.nmax = cv.shape[1]
        self.view.order = cv.shape[2]
        self.view.shared_x = xv.shape[0] == 1
        self.view.extrapolate = ext_id
        self.view.reserved = 0
        return 0

    cdef double eval_scalar(self, double q, int32_t nu) noexcept nogil:
        return tes_spline_eval_point(&self.view, 0, q, nu, &self.hint)

    cdef int in_domain(self, int64_t curve, double q) noexcept nogil:
        return tes_spline_in_domain(&self.view, curve, q)

    cdef int _require_fitted(self) except -1:
        if self.x_arr is None:
            raise ValueError("this Spline was never fitted; make one with "
                             "Spline(x, y, ...)")
        return 0

    def __call__(self, q, nu=NU_DEFAULT):
        """s(q, nu=0): the nu-th derivative (nu an int, 0..3) at q."""
        cdef double v
        cdef int32_t d = 0 if nu is NU_DEFAULT else derivative_order(nu)

        # The scalar path: no numpy, no allocation beyond the result.
        if (PyFloat_Check(q) or PyLong_CheckExact(q)) and not self.two_d:
            if self.x_arr is None:
                self._require_fitted()
            v = q
            if (self.view.extrapolate == TES_SPLINE_EXT_RAISE and
                    not tes_spline_in_domain(&self.view, 0, v)):
                self._raise_domain(v, 0)
            return tes_spline_eval_point(&self.view, 0, v, d, &self.hint)
        return self._evaluate(q, d)

    def _evaluate(self, q, int nu):
        """Array path of __call__."""
        cdef int64_t nq, bad = -1
        cdef int rc

        self._require_fitted()
        if not 0 <= nu <= TES_SPLINE_MAX_NU:
            raise ValueError(f"derivative order nu must be 0..3; got {nu}")
        qa = _float_array("query", q)
        shape = qa.shape + ((self.ncurves,) if self.two_d else ())
        out = np.empty(shape)
        nq = qa.size
        if nq == 0:
            return out
        cdef const double[::1] qv = qa.reshape(-1)
        cdef double[::1] ov = out.reshape(-1)
        if nq * self.ncurves >= NOGIL_MIN_VALUES:
            with nogil:
                rc = tes_spline_eval(&self.view, &qv[0], nq, nu, &ov[0], &bad)
        else:
            rc = tes_spline_eval(&self.view, &qv[0], nq, nu, &ov[0], &bad)
        if rc == TES_SPLINE_EDOMAIN:
            self._raise_domain(qv[bad], -1)
        if qa.ndim == 0 and not self.two_d:
            return out[()]
        return out

    def integrate(self, a, b):
        """The definite integral from a to b: a float for one curve, else
        one value per curve. Outside the data it follows `extrapolate`."""
        cdef double lo = a, hi = b
        self._require_fitted()
        out = np.empty(self.ncurves)
        cdef double[::1] ov = out
        if tes_spline_integrate(&self.view, lo, hi, &ov[0]) != TES_SPLINE_OK:
            self._raise_domain(lo if not tes_spline_in_domain(&self.view, 0, lo)
                               else hi, -1)
        if not self.two_d:
            return float(ov[0])
        return out

    def _raise_domain(self, double q, int64_t curve):
        """Raises the ValueError of extrapolate='raise' for query q."""
        ends = [self.breakpoints_of(j)[[0, -1]] for j in range(self.ncurves)]
        lo = float(min(e[0] for e in ends))
        hi = float(max(e[1] for e in ends))
        raise ValueError(f"query {q!r} is outside the data [{lo!r}, {hi!r}] "
                         "and extrapolate='raise'")

    def breakpoints_of(self, int64_t curve):
        """The breakpoints of one curve (a read-only view)."""
        self._require_fitted()
        if not 0 <= curve < self.ncurves:
            raise IndexError(f"curve {curve} out of range({self.ncurves})")
        row = 0 if self.view.shared_x else curve
        return self.x_arr[row, :tes_spline_rows(&self.view, curve)]

    @property
    def x(self):
        """Breakpoints: 1-D when shared by all curves, else the padded
        (ncurves, nmax) array (see `counts`). Read-only."""
        self._require_fitted()
        if self.view.shared_x:
            return self.breakpoints_of(0)
        if self.ncurves == 1 and not self.two_d:
            return self.breakpoints_of(0)
        return self.x_arr

    @property
    def c(self):
        """Coefficients, ascending powers of (q - x[i]) per breakpoint row;
        the last row is the last piece re-expanded about x[-1]. Shape
        (rows, order) for one curve, else padded (ncurves, nmax, order)."""
        self._require_fitted()
        if not self.two_d:
            return self.c_arr[0, :tes_spline_rows(&self.view, 0)]
        return self.c_arr

    @property
    def counts(self):
        """Breakpoints in use per curve (read-only)."""
        self._require_fitted()
        return self.count_arr

    def __repr__(self):
        if self.x_arr is None:
            return "Spline(<not fitted>)"
        xs = self.breakpoints_of(0)
        first, last = float(xs[0]), float(xs[len(xs) - 1])
        extra = ""
        if self.kind == "bspline":
            extra = f", k={self.degree}"
        if self.kind == "catmull-rom":
            extra = f", tension={self.tension!r}"
        return (f"Spline(kind={self.kind!r}{extra}, ncurves={self.ncurves}, "
                f"breakpoints={len(xs)}, domain=[{first!r}, {last!r}], "
                f"extrapolate={self.extrapolate!r})")

    def _store_parts(self):
        """Returns (meta, arrays) describing this Spline completely; meta
        holds str/int/float/bool/None only, arrays float64 and int64."""
        self._require_fitted()
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "kind": self.kind,
            "degree": int(self.degree),
            "order": int(self.order),
            "ncurves": int(self.ncurves),
            "nmax": int(self.view.nmax),
            "shared_x": bool(self.view.shared_x),
            "two_d": bool(self.two_d),
            "extrapolate": self.extrapolate,
            "tension": self.tension,
        }
        arrays = {"x": self.x_arr, "c": self.c_arr, "count": self.count_arr}
        return meta, arrays

    @staticmethod
    def _from_store_parts(meta, arrays):
        """Rebuilds a Spline from _store_parts output without refitting or
        copying; the arrays may be read-only. Raises ValueError when the
        parts are inconsistent."""
        cdef Spline s = Spline.__new__(Spline)
        kind_id, ext_id, degree, two_d, tension, xa, ca, na = _check_parts(
            meta, arrays)
        s._adopt(kind_id, ext_id, degree, two_d, tension, xa, ca, na)
        return s

    def __reduce__(self):
        return (_spline_from_parts, self._store_parts())


def _expect(bint cond, str msg):
    if not cond:
        raise ValueError(f"corrupt spline parts: {msg}")


def _check_parts(meta, arrays):
    """Validates store parts; returns the fields _adopt needs. Every check
    that keeps evaluation in bounds happens here, so parts from a damaged
    or foreign segment raise ValueError instead of reading past the
    arrays."""
    cdef int64_t j, nmax, ncurves, bad
    cdef int32_t order, degree

    _expect(isinstance(meta, dict), "meta is not a dict")
    _expect(isinstance(arrays, dict), "arrays is not a dict")
    _expect(meta.get("format") == STORE_FORMAT, "unknown format")
    _expect(meta.get("version") == STORE_VERSION, "unsupported version")
    kind = meta.get("kind")
    _expect(kind in KINDS, f"unknown kind {kind!r}")
    ext = meta.get("extrapolate")
    _expect(ext in EXTRAPOLATE_MODES, f"unknown extrapolate {ext!r}")
    kind_id = KINDS.index(kind)
    ext_id = EXTRAPOLATE_MODES.index(ext)
    raw_degree = meta.get("degree")
    _expect(type(raw_degree) is int and 0 <= raw_degree <= 5, "bad degree")
    degree = raw_degree
    order = tes_spline_order(kind_id, degree if kind == "bspline" else 3)
    _expect(order > 0 and meta.get("order") == order, "order mismatch")
    two_d = meta.get("two_d")
    shared = meta.get("shared_x")
    _expect(type(two_d) is bool and type(shared) is bool, "bad flags")
    tension = meta.get("tension")
    _expect(tension is None or type(tension) is float, "bad tension")

    _expect(set(arrays) == {"x", "c", "count"}, "unexpected array names")
    xa, ca, na = arrays["x"], arrays["c"], arrays["count"]
    for name, arr, dtype, ndim in (("x", xa, np.float64, 2),
                                   ("c", ca, np.float64, 3),
                                   ("count", na, np.int64, 1)):
        _expect(isinstance(arr, np.ndarray), f"{name} is not an array")
        _expect(arr.dtype == dtype, f"{name} has dtype {arr.dtype}")
        _expect(arr.ndim == ndim, f"{name} has shape {arr.shape}")
        _expect(arr.flags.c_contiguous and arr.flags.aligned,
                f"{name} is not contiguous and aligned")
    ncurves = ca.shape[0]
    nmax = ca.shape[1]
    _expect(ncurves >= 1 and nmax >= 2, f"c has shape {ca.shape}")
    _expect(ca.shape[2] == order, f"c has shape {ca.shape}")
    _expect(meta.get("ncurves") == ncurves and meta.get("nmax") == nmax,
            "shape does not match meta")
    _expect(two_d or ncurves == 1, "several curves but one-dimensional")
    _expect(na.shape[0] == ncurves, f"count has shape {na.shape}")
    _expect(xa.shape == ((1 if shared else ncurves), nmax),
            f"x has shape {xa.shape}")

    # The counts may sit in memory another process writes: check a private
    # copy, so that the bound used to scan x is the one just checked.
    cdef const int64_t[::1] nv = np.array(na, copy=True)
    cdef const double[:, ::1] xv = xa
    least = tes_spline_min_points(kind_id, degree if kind == "bspline" else 3)
    for j in range(ncurves):
        _expect(least <= nv[j] <= nmax, f"count[{j}] = {nv[j]}")
        if shared:
            _expect(nv[j] == nv[0], "counts differ with shared x")
    for j in range(xv.shape[0]):
        bad = tes_spline_check_x(&xv[j, 0], nv[j])
        _expect(bad < 0, f"x[{j}] not finite and strictly increasing")
    return kind_id, ext_id, degree, two_d, tension, xa, ca, na


cdef int raise_fit_error(const FitJob *job, kind, xa, two_d) except -1:
    """Turns the failure report of fit_curves into an exception; always
    raises."""
    where = f" in column {job.bad_curve}" if two_d else ""
    if job.err == FIT_NONFINITE_Y:
        raise ValueError(f"y{where} is not finite at x = "
                         f"{xa[job.bad_index]!r}; pass missing='drop' to fit "
                         "each curve on its finite points")
    if job.err == FIT_TOO_FEW:
        least = tes_spline_min_points(job.opts.kind, job.opts.degree)
        raise ValueError(f"kind {kind!r} needs at least {least} points; "
                         f"curve{where} has {job.bad_index} finite ones")
    if job.err == FIT_PERIODIC_ENDS:
        raise ValueError(f"kind 'periodic' needs y[0] == y[-1]{where}")
    if job.err == TES_SPLINE_ENOMEM:
        raise MemoryError("out of memory while fitting")
    if job.err == TES_SPLINE_ESINGULAR:
        raise ValueError(f"the {kind!r} system is singular{where}")
    raise ValueError(f"invalid {kind!r} options{where}")

"""tesenv.Spline: fitting, evaluation, edge cases, store parts, GIL release.

Comparisons against SciPy live in test_spline_scipy.py; this file needs
only numpy.
"""

import ctypes
import math
import mmap
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_splines as ref  # noqa: E402

from tesenv._spline import KINDS, Spline  # noqa: E402

# Agreement with the plain-Python references, relative to the value scale.
REF_RTOL = 1e-12

EXTRAPOLATE_MODES = ("extrapolate", "clip", "nan", "raise", "periodic")


def random_curve(rng, n=12, lo=0.0, hi=10.0):
    x = np.sort(rng.uniform(lo, hi, n))
    return x, rng.normal(size=n)


def options_for(kind, y):
    """Keyword arguments a kind needs to be fitted to y."""
    if kind == "clamped":
        return {"bc": (0.25, -0.5)}
    if kind == "hermite":
        return {"dydx": np.linspace(-1.0, 1.0, y.shape[0])}
    if kind == "bspline":
        return {"k": 3}
    return {}


def periodic_y(y):
    y = np.array(y, dtype=float)
    y[-1] = y[0]
    return y


# --- the value at every data site is the data value, bit for bit ------------

@pytest.mark.parametrize("kind", KINDS)
def test_exact_at_every_knot(kind):
    rng = np.random.default_rng(3)
    x, y = random_curve(rng, 15)
    if kind == "periodic":
        y = periodic_y(y)
    s = Spline(x, y, kind, **options_for(kind, y))
    for xi, yi in zip(x, y):
        assert s(float(xi)) == yi
    assert np.array_equal(s(x), y)
    assert s(float(x[-1])) == y[-1]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_bspline_exact_at_every_knot(k):
    rng = np.random.default_rng(k)
    x, y = random_curve(rng, 11)
    s = Spline(x, y, "bspline", k=k)
    assert np.array_equal(s(x), y)


# --- steffen and catmull-rom against the references and their properties ---

def check_against_hermite_reference(s, x, y, d):
    q = np.concatenate([np.linspace(x[0] - 1, x[-1] + 1, 301), x])
    scale = max(abs(v) for v in y)
    for nu in range(4):
        want = [ref.hermite_eval(list(x), list(y), d, float(v), nu) for v in q]
        got = s(q, nu)
        span = (x[-1] - x[0]) ** nu
        assert np.max(np.abs(got - want)) <= REF_RTOL * max(
            np.max(np.abs(want)), scale / span)
    want = ref.hermite_integral(list(x), list(y), d, float(x[1]), float(x[-2]))
    assert abs(s.integrate(x[1], x[-2]) - want) <= REF_RTOL * scale * (
        x[-1] - x[0])


@pytest.mark.parametrize("seed", range(5))
def test_steffen_matches_reference(seed):
    rng = np.random.default_rng(seed)
    x, y = random_curve(rng, 9 + seed)
    d = ref.steffen_slopes(list(x), list(y))
    check_against_hermite_reference(Spline(x, y, "steffen"), x, y, d)


@pytest.mark.parametrize("tension", [0.0, 0.3, 1.0])
def test_catmull_rom_matches_reference(tension):
    rng = np.random.default_rng(11)
    x, y = random_curve(rng, 10)
    d = ref.catmull_rom_slopes(list(x), list(y), tension)
    s = Spline(x, y, "catmull-rom", tension=tension)
    check_against_hermite_reference(s, x, y, d)


@pytest.mark.parametrize("kind", ["steffen", "pchip"])
@pytest.mark.parametrize("increasing", [True, False])
def test_monotone_kinds_keep_monotone_data_monotone(kind, increasing):
    rng = np.random.default_rng(5)
    x = np.sort(rng.uniform(0, 10, 14))
    y = np.cumsum(rng.exponential(size=14) * (rng.uniform(size=14) > 0.3))
    if not increasing:
        y = -y
    q = np.linspace(x[0], x[-1], 5001)
    assert ref.is_monotone(list(Spline(x, y, kind)(q)), increasing)


@pytest.mark.parametrize("kind", ["steffen", "catmull-rom"])
def test_first_derivative_continuous_at_knots(kind):
    rng = np.random.default_rng(8)
    x, y = random_curve(rng, 10)
    s = Spline(x, y, kind)
    for xi in x[1:-1]:
        left = s(float(np.nextafter(xi, -np.inf)), 1)
        right = s(float(xi), 1)
        assert abs(left - right) <= 1e-9 * (1 + abs(right))


# --- one call, many curves ---------------------------------------------------

def test_batch_equals_single_curves():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(0, 10, 20))
    ys = rng.normal(size=(20, 4))
    q = np.linspace(-1, 11, 123)
    batch = Spline(x, ys)
    assert batch(q).shape == (123, 4)
    assert batch(0.5).shape == (4,)
    for j in range(4):
        assert np.array_equal(batch(q)[:, j], Spline(x, ys[:, j])(q))
        assert np.array_equal(batch(q, 2)[:, j], Spline(x, ys[:, j])(q, 2))


def test_missing_points_of_one_curve_leave_others_alone():
    rng = np.random.default_rng(2)
    x = np.sort(rng.uniform(0, 10, 20))
    ys = rng.normal(size=(20, 3))
    holes = ys.copy()
    holes[[0, 4, 9], 0] = np.nan
    q = np.linspace(-1, 11, 200)
    batch = Spline(x, holes, missing="drop")
    alone = Spline(x, ys[:, 1])
    for nu in range(4):
        assert np.array_equal(batch(q, nu)[:, 1], alone(q, nu))
    keep = np.isfinite(holes[:, 0])
    assert np.array_equal(batch(q)[:, 0], Spline(x[keep], ys[keep, 0])(q))
    assert list(batch.counts) == [17, 20, 20]


def test_missing_raise_is_default():
    x = np.arange(6.0)
    y = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    with pytest.raises(ValueError, match="missing='drop'"):
        Spline(x, y)


# --- types and shapes --------------------------------------------------------

def test_float_in_float_out_and_shapes():
    x = np.linspace(0, 1, 8)
    s = Spline(x, x**2)
    assert type(s(0.37)) is float
    assert type(s(1)) is float
    assert s(np.float64(0.37)) == s(0.37)
    assert s(np.zeros((2, 3))).shape == (2, 3)
    assert s(np.array(0.5)).shape == ()
    assert s(np.float32(0.5)) == pytest.approx(0.25)


def test_float32_inputs():
    x = np.linspace(0, 1, 9, dtype=np.float32)
    y = (x**3).astype(np.float32)
    s = Spline(x, y)
    q = np.linspace(0, 1, 50, dtype=np.float32)
    want = Spline(x.astype(float), y.astype(float))(q.astype(float))
    assert np.array_equal(s(q), want)


# --- extrapolation modes -----------------------------------------------------

@pytest.mark.parametrize("mode", EXTRAPOLATE_MODES)
def test_nan_query_gives_nan_in_every_mode(mode):
    x = np.linspace(0, 1, 6)
    y = np.sin(x)
    y[-1] = y[0]
    s = Spline(x, y, extrapolate=mode)
    assert math.isnan(s(float("nan")))
    for nu in range(4):
        assert np.isnan(s(np.array([np.nan, 0.5, np.nan]), nu)[[0, 2]]).all()


def test_extrapolation_modes():
    x = np.linspace(0.0, 2.0, 7)
    y = np.cos(x)
    q = np.array([-1.0, 3.0])
    assert np.array_equal(Spline(x, y, extrapolate="clip")(q), y[[0, -1]])
    assert np.array_equal(Spline(x, y, extrapolate="clip")(q, 1), [0.0, 0.0])
    assert np.isnan(Spline(x, y, extrapolate="nan")(q)).all()
    with pytest.raises(ValueError, match="-1.0"):
        Spline(x, y, extrapolate="raise")(-1.0)
    with pytest.raises(ValueError, match="3.0"):
        Spline(x, y, extrapolate="raise")(q[::-1])
    yp = periodic_y(y)
    per = Spline(x, yp, "periodic")
    assert per.extrapolate == "periodic"
    assert per(2.5) == pytest.approx(per(0.5), abs=1e-14)
    assert per.integrate(0.0, 4.0) == pytest.approx(2 * per.integrate(0, 2))


def test_integrate_clip_and_nan():
    x = np.linspace(0.0, 1.0, 5)
    y = np.full(5, 2.0)
    assert Spline(x, y, extrapolate="clip").integrate(-1.0, 2.0) == (
        pytest.approx(6.0))
    assert math.isnan(Spline(x, y, extrapolate="nan").integrate(-1.0, 0.5))
    with pytest.raises(ValueError):
        Spline(x, y, extrapolate="raise").integrate(-1.0, 0.5)
    assert Spline(x, y).integrate(1.0, 0.0) == pytest.approx(-2.0)


# --- bad input: clear errors, never a crash ---------------------------------

def test_error_x_descending():
    with pytest.raises(ValueError, match="strictly increasing"):
        Spline([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])


def test_error_repeated_first_value():
    with pytest.raises(ValueError, match="strictly increasing"):
        Spline([1.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


def test_error_repeated_interior_value():
    with pytest.raises(ValueError, match=r"x\[3\]"):
        Spline([0.0, 1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0])


def test_error_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        Spline([0.0, 1.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize("kind,k,n", [("not-a-knot", None, 1),
                                      ("linear", None, 1), ("pchip", None, 1),
                                      ("bspline", 5, 5), ("bspline", 2, 2)])
def test_error_too_few_points(kind, k, n):
    with pytest.raises(ValueError, match="at least"):
        Spline(np.arange(float(n)), np.ones(n), kind, k=k)


def test_error_too_few_points_after_drop():
    y = np.array([[1.0, 1.0], [np.nan, 2.0], [np.nan, 3.0]])
    with pytest.raises(ValueError, match="column 0"):
        Spline([0.0, 1.0, 2.0], y, missing="drop")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_error_nonfinite_x(bad):
    with pytest.raises(ValueError, match="finite"):
        Spline([0.0, bad, 2.0], [1.0, 2.0, 3.0])


def test_error_nan_in_y_without_drop():
    with pytest.raises(ValueError, match="not finite"):
        Spline([0.0, 1.0, 2.0], [1.0, np.nan, 3.0])


def test_error_complex_y():
    with pytest.raises(TypeError, match="real"):
        Spline([0.0, 1.0, 2.0], [1.0 + 1j, 2.0, 3.0])


def test_error_periodic_ends_differ():
    with pytest.raises(ValueError, match=r"y\[0\] == y\[-1\]"):
        Spline([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 0.0, 1.5], "periodic")


def test_error_clamped_without_slopes():
    with pytest.raises(ValueError, match="bc="):
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], "clamped")


def test_error_unknown_kind_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], "cubic")
    for kind in KINDS:
        assert repr(kind) in str(info.value)


def test_error_bad_options():
    x, y = [0.0, 1.0, 2.0], [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="extrapolate"):
        Spline(x, y, extrapolate="wrap")
    with pytest.raises(ValueError, match="missing"):
        Spline(x, y, missing="ignore")
    with pytest.raises(ValueError, match="degree"):
        Spline(x, y, "bspline", k=6)
    with pytest.raises(ValueError, match="tension"):
        Spline(x, y, "catmull-rom", tension=1.5)
    with pytest.raises(ValueError, match="dydx"):
        Spline(x, y, "hermite")
    with pytest.raises(ValueError, match="nu"):
        Spline(x, y)(np.array([0.5]), 4)
    with pytest.raises(TypeError):
        Spline(x, y)(np.array([0.5 + 1j]))


# Options a kind does not use, and how each is spelled: {option: value}.
FOREIGN_OPTIONS = {"k": 3, "bc": (0.0, 0.0), "dydx": [1.0, 1.0, 1.0],
                   "tension": 0.5}
KIND_OF_OPTION = {"k": "bspline", "bc": "clamped", "dydx": "hermite",
                  "tension": "catmull-rom"}


@pytest.mark.parametrize("kind,option", [
    (kind, option) for kind in KINDS for option in sorted(FOREIGN_OPTIONS)
    if KIND_OF_OPTION[option] != kind])
def test_error_option_for_another_kind(kind, option):
    x, y = [0.0, 1.0, 2.0], [1.0, 2.0, 1.0]
    with pytest.raises(ValueError) as info:
        Spline(x, y, kind, **{option: FOREIGN_OPTIONS[option]})
    message = str(info.value)
    assert f"option {option}" in message
    assert repr(KIND_OF_OPTION[option]) in message and repr(kind) in message


def test_error_tension_string_for_pchip():
    with pytest.raises(ValueError, match="option tension.*'catmull-rom'"):
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 1.0], "pchip", tension="x")


@pytest.mark.parametrize("kind", KINDS)
def test_omitted_and_none_options_still_fit(kind):
    x = np.linspace(0.0, 3.0, 7)
    y = periodic_y(np.sin(x)) if kind == "periodic" else np.sin(x)
    need = options_for(kind, y)
    nones = {name: None for name in FOREIGN_OPTIONS if name not in need}
    a = Spline(x, y, kind, **need)
    b = Spline(x, y, kind, **need, **nones)
    assert np.array_equal(a(x + 0.1), b(x + 0.1))


def test_bspline_degree_defaults_to_3():
    x = np.linspace(0.0, 1.0, 9)
    assert Spline(x, x**3, "bspline").degree == 3
    assert Spline(x, x**3, "bspline", k=np.int64(5)).degree == 5


@pytest.mark.parametrize("k", [True, False, np.bool_(True), 3.0, "3",
                               np.float64(3.0)])
def test_error_k_not_an_int(k):
    with pytest.raises(TypeError, match="k must be an int"):
        Spline(np.linspace(0.0, 1.0, 9), np.ones(9), "bspline", k=k)


@pytest.mark.parametrize("nu", [2.0, True, False, np.bool_(True), "1",
                                np.float64(1.0), None])
@pytest.mark.parametrize("query", [0.5, np.array([0.25, 0.5])],
                         ids=["scalar", "array"])
def test_error_nu_not_an_int(nu, query):
    s = Spline(np.linspace(0.0, 1.0, 5), np.arange(5.0))
    with pytest.raises(TypeError, match="nu must be an int"):
        s(query, nu)


@pytest.mark.parametrize("nu", [-1, 4, 10**30, -10**30, np.int64(4)])
def test_error_nu_out_of_range(nu):
    s = Spline(np.linspace(0.0, 1.0, 5), np.arange(5.0))
    for query in (0.5, np.array([0.5])):
        with pytest.raises(ValueError, match="nu must be 0..3"):
            s(query, nu)


def test_nu_numpy_int_equals_python_int():
    s = Spline(np.linspace(0.0, 1.0, 5), np.arange(5.0) ** 2)
    for nu in range(4):
        assert s(0.3, np.int32(nu)) == s(0.3, nu)
        assert np.array_equal(s(np.array([0.3]), np.int64(nu)),
                              s(np.array([0.3]), nu))


@pytest.mark.parametrize("tension", ["0.5", True, np.bool_(False), [0.5],
                                     1j])
def test_error_tension_not_a_real_number(tension):
    with pytest.raises(TypeError, match="tension must be a real number"):
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 1.0], "catmull-rom",
               tension=tension)


@pytest.mark.parametrize("tension", [-0.1, 1.5, float("nan"), float("inf")])
def test_error_tension_out_of_range(tension):
    with pytest.raises(ValueError, match=r"tension must be in \[0, 1\]"):
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 1.0], "catmull-rom",
               tension=tension)


def test_tension_accepts_numpy_reals_and_defaults_to_0():
    x, y = [0.0, 1.0, 2.0], [1.0, 2.0, 1.0]
    assert Spline(x, y, "catmull-rom").tension == 0.0
    s = Spline(x, y, "catmull-rom", tension=np.float32(0.5))
    assert s.tension == 0.5 and type(s.tension) is float
    assert Spline(x, y, "catmull-rom", tension=1).tension == 1.0


@pytest.mark.parametrize("value", ["wrap", 1, 0, "", None.__class__, 2.5])
def test_error_extrapolate_lists_valid_choices(value):
    with pytest.raises(ValueError) as info:
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], extrapolate=value)
    message = str(info.value)
    for mode in EXTRAPOLATE_MODES:
        assert repr(mode) in message
    assert "True" in message and "False" in message and "None" in message


@pytest.mark.parametrize("value", ["ignore", None, True, 1])
def test_error_missing_lists_valid_choices(value):
    with pytest.raises(ValueError) as info:
        Spline([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], missing=value)
    assert "'raise'" in str(info.value) and "'drop'" in str(info.value)


# --- store parts and pickling -----------------------------------------------

def read_only_copies(arrays):
    out = {}
    for name, arr in arrays.items():
        arr = arr.copy()
        arr.flags.writeable = False
        out[name] = arr
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_store_parts_round_trip(kind):
    rng = np.random.default_rng(4)
    x, y = random_curve(rng, 12)
    if kind == "periodic":
        y = periodic_y(y)
    s = Spline(x, y, kind, extrapolate="clip", **options_for(kind, y))
    meta, arrays = s._store_parts()
    for value in meta.values():
        assert value is None or type(value) in (str, int, float, bool)
    back = Spline._from_store_parts(meta, read_only_copies(arrays))
    q = np.linspace(x[0] - 2, x[-1] + 2, 333)
    for nu in range(4):
        assert np.array_equal(back(q, nu), s(q, nu))
    assert back.integrate(-1.0, 5.0) == s.integrate(-1.0, 5.0)
    assert back.kind == s.kind and back.extrapolate == "clip"
    again = pickle.loads(pickle.dumps(s))
    assert np.array_equal(again(q), s(q))


def test_store_parts_batch_with_holes_round_trip():
    rng = np.random.default_rng(6)
    x = np.sort(rng.uniform(0, 10, 15))
    ys = rng.normal(size=(15, 3))
    ys[2, 1] = np.nan
    s = Spline(x, ys, "pchip", missing="drop")
    meta, arrays = s._store_parts()
    back = Spline._from_store_parts(meta, read_only_copies(arrays))
    q = np.linspace(-1, 11, 97)
    assert np.array_equal(back(q), s(q))
    assert np.array_equal(pickle.loads(pickle.dumps(s))(q), s(q))


def corrupt(s, change):
    meta, arrays = s._store_parts()
    meta = dict(meta)
    arrays = {k: v.copy() for k, v in arrays.items()}
    change(meta, arrays)
    return meta, arrays


CORRUPTIONS = {
    "x_not_increasing": lambda m, a: a["x"].__setitem__((0, 3), a["x"][0, 1]),
    "x_nan": lambda m, a: a["x"].__setitem__((0, 2), np.nan),
    "count_too_large": lambda m, a: a["count"].__setitem__(0, 10**9),
    "count_negative": lambda m, a: a["count"].__setitem__(0, -5),
    "count_too_small": lambda m, a: a["count"].__setitem__(0, 1),
    "x_wrong_dtype": lambda m, a: a.__setitem__("x", a["x"].astype(np.float32)),
    "c_wrong_dtype": lambda m, a: a.__setitem__("c", a["c"].astype(np.int64)),
    "count_wrong_dtype": lambda m, a: a.__setitem__(
        "count", a["count"].astype(np.int32)),
    "c_wrong_shape": lambda m, a: a.__setitem__("c", a["c"][:, :, :2].copy()),
    "c_too_short": lambda m, a: a.__setitem__("c", a["c"][:, :5].copy()),
    "x_wrong_shape": lambda m, a: a.__setitem__("x", a["x"][:, :4].copy()),
    "x_one_dimensional": lambda m, a: a.__setitem__("x", a["x"][0].copy()),
    "x_not_contiguous": lambda m, a: a.__setitem__(
        "x", np.repeat(a["x"], 2, axis=1)[:, ::2]),
    "array_missing": lambda m, a: a.pop("c"),
    "array_not_numpy": lambda m, a: a.__setitem__("x", a["x"].tolist()),
    "kind_unknown": lambda m, a: m.__setitem__("kind", "quartic"),
    "order_mismatch": lambda m, a: m.__setitem__("order", 6),
    "version_unknown": lambda m, a: m.__setitem__("version", 99),
    "ncurves_mismatch": lambda m, a: m.__setitem__("ncurves", 2),
    "extrapolate_unknown": lambda m, a: m.__setitem__("extrapolate", "wrap"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_store_parts_raise(name):
    s = Spline(np.linspace(0, 1, 10), np.linspace(0, 1, 10) ** 2)
    meta, arrays = corrupt(s, CORRUPTIONS[name])
    with pytest.raises(ValueError, match="corrupt"):
        Spline._from_store_parts(meta, arrays)


def test_corrupt_shared_counts_differ():
    s = Spline(np.linspace(0, 1, 10), np.ones((10, 2)))
    meta, arrays = corrupt(s, lambda m, a: a["count"].__setitem__(1, 5))
    with pytest.raises(ValueError, match="corrupt"):
        Spline._from_store_parts(meta, arrays)


def test_repr_and_attributes():
    s = Spline(np.linspace(0, 1, 5), np.arange(5.0), "pchip")
    assert "pchip" in repr(s) and "ncurves=1" in repr(s)
    assert s.kind == "pchip" and s.ncurves == 1
    assert s.extrapolate == "extrapolate"
    assert s.x.shape == (5,) and s.c.shape == (5, 4)


# --- damaged arrays: garbage numbers or an error, never a stray access ------
#
# The arrays behind a Spline read from shared memory can be rewritten by
# another process at any time, after every check made when it was built.
# Each array here sits flush against an unreadable page (before or after
# it), so a read past either end kills the test run with SIGSEGV instead of
# passing by luck.

def guarded_copy(arr, flush):
    """Copy of arr in fresh memory whose first (flush='start') or last
    (flush='end') byte borders a PROT_NONE page; the copy is writable."""
    page = mmap.PAGESIZE
    data_pages = max(1, -(-arr.nbytes // page))
    region = mmap.mmap(-1, (data_pages + 2) * page)
    raw = (ctypes.c_char * len(region)).from_buffer(region)
    base = ctypes.addressof(raw)
    del raw
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for guard in (base, base + (data_pages + 1) * page):
        assert libc.mprotect(guard, page, 0) == 0, ctypes.get_errno()
    offset = page + (data_pages * page - arr.nbytes if flush == "end" else 0)
    out = np.frombuffer(region, dtype=arr.dtype, count=arr.size,
                        offset=offset).reshape(arr.shape)
    out[...] = arr
    return out


needs_guard_pages = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="uses mprotect via ctypes")


def guarded_splines(flush):
    """(label, Spline, its writable arrays) for one curve, a batch sharing
    x and a batch with holes (own x per curve), in every extrapolation
    mode; the Splines were built from valid arrays."""
    x = np.linspace(0.0, 10.0, 11)
    y = np.sin(x)
    batch = np.column_stack([y, np.cos(x), x])
    holes = batch.copy()
    holes[3, 1] = np.nan
    fitted = {"one": Spline(x, periodic_y(y), "periodic"),
              "shared": Spline(x, batch, "pchip"),
              "holes": Spline(x, holes, "akima", missing="drop"),
              "bspline": Spline(x, y, "bspline", k=4)}
    for label, s in fitted.items():
        for mode in EXTRAPOLATE_MODES:
            meta, arrays = s._store_parts()
            meta = dict(meta, extrapolate=mode)
            arrays = {k: guarded_copy(v, flush) for k, v in arrays.items()}
            yield f"{label}/{mode}", Spline._from_store_parts(meta, arrays), \
                arrays


def exercise(s):
    """Every way of reading s; errors a damaged Spline may raise are
    fine, a crash is not."""
    rng = np.random.default_rng(5)
    sorted_q = np.linspace(-25.0, 35.0, 2001)
    odd_q = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 5.0, 0.0,
                      10.0, 5e-324])
    for q in (sorted_q, rng.permutation(sorted_q), odd_q):
        for nu in range(4):
            try:
                s(q, nu)
            except ValueError:      # extrapolate='raise'
                pass
    for q in list(odd_q) + [-3.0, 2.5, 12.0]:
        for nu in range(4):
            try:
                s(float(q), nu)
            except ValueError:
                pass
    for a, b in ((-5.0, 15.0), (2.0, 7.5), (7.5, 2.0), (np.nan, 1.0),
                 (-np.inf, np.inf), (0.0, 1e300)):
        try:
            s.integrate(a, b)
        except ValueError:
            pass
    repr(s)
    s.x, s.c, s.counts
    for j in range(s.ncurves):
        s.breakpoints_of(j)


# Values a damaged count may hold; nmax is 11 (20 for bspline k=4).
BAD_COUNTS = [0, 1, -1, -5, 12, 21, 10**12, 2**63 - 1, -2**63]


@needs_guard_pages
@pytest.mark.parametrize("flush", ["start", "end"])
@pytest.mark.parametrize("count", BAD_COUNTS)
def test_damaged_count_stays_in_bounds(count, flush):
    for label, s, arrays in guarded_splines(flush):
        arrays["count"][...] = count
        exercise(s)


# Ways the breakpoints or coefficients can be damaged after the checks.
BAD_CONTENTS = {
    "x_nan": lambda a, rng: a["x"].fill(np.nan),
    "x_reversed": lambda a, rng: a["x"].__setitem__(
        Ellipsis, a["x"][:, ::-1].copy()),
    "x_constant": lambda a, rng: a["x"].fill(5.0),
    "x_inf": lambda a, rng: a["x"].__setitem__((Ellipsis, slice(1, None, 2)),
                                               np.inf),
    "x_huge_span": lambda a, rng: a["x"].__setitem__(
        Ellipsis, np.linspace(-1.0, 1.0, a["x"].shape[-1]) * 1e308),
    "x_random_bits": lambda a, rng: a["x"].view(np.uint64).__setitem__(
        Ellipsis, rng.integers(0, 2**64, a["x"].shape, dtype=np.uint64)),
    "c_random_bits": lambda a, rng: a["c"].view(np.uint64).__setitem__(
        Ellipsis, rng.integers(0, 2**64, a["c"].shape, dtype=np.uint64)),
    "all_random_bits": lambda a, rng: [
        v.view(np.uint64).__setitem__(
            Ellipsis, rng.integers(0, 2**64, v.shape, dtype=np.uint64))
        for v in a.values()],
}


@needs_guard_pages
@pytest.mark.parametrize("flush", ["start", "end"])
@pytest.mark.parametrize("damage", sorted(BAD_CONTENTS))
def test_damaged_contents_stay_in_bounds(damage, flush):
    rng = np.random.default_rng(11)
    for label, s, arrays in guarded_splines(flush):
        BAD_CONTENTS[damage](arrays, rng)
        exercise(s)


def test_counts_exposed_by_a_spline_are_read_only():
    s = Spline(np.linspace(0, 10, 11), np.arange(11.0))
    with pytest.raises(ValueError, match="read-only"):
        s.counts[0] = 10**12
    q = np.linspace(0, 10, 1000)
    assert np.allclose(s(q), q)


def test_arrays_exposed_by_a_spline_are_read_only():
    x = np.linspace(0.0, 1.0, 6)
    one = Spline(x, x**2)
    batch = Spline(x, np.column_stack([x, x**2]), "pchip", missing="drop")
    holes = np.column_stack([x, x**2])
    holes[2, 0] = np.nan
    own_x = Spline(x, holes, missing="drop")
    for s in (one, batch, own_x):
        views = [s.x, s.c, s.counts, s.breakpoints_of(0)]
        views += list(s._store_parts()[1].values())
        for arr in views:
            assert not arr.flags.writeable


def test_store_parts_stay_writable_for_their_owner():
    s = Spline(np.linspace(0.0, 1.0, 6), np.arange(6.0))
    meta, arrays = s._store_parts()
    arrays = {k: v.copy() for k, v in arrays.items()}
    back = Spline._from_store_parts(meta, arrays)
    assert all(v.flags.writeable for v in arrays.values())
    assert not back.counts.flags.writeable
    assert np.shares_memory(back.c, arrays["c"])


def test_owner_rewriting_counts_after_adopt_cannot_crash():
    s = Spline(np.linspace(0, 10, 11), np.arange(11.0))
    meta, arrays = s._store_parts()
    arrays = {k: v.copy() for k, v in arrays.items()}
    back = Spline._from_store_parts(meta, arrays)
    arrays["count"][0] = 10**12
    q = np.linspace(0, 10, 1000)
    assert np.allclose(back(q), q)      # nmax rows: still the fitted curve
    assert back(3.5) == 3.5


def test_unfitted_spline_raises_instead_of_crashing():
    s = Spline.__new__(Spline)
    assert "not fitted" in repr(s)
    for use in (lambda: s(0.5), lambda: s(np.linspace(0, 1, 300)),
                lambda: s.integrate(0.0, 1.0), lambda: s.x, lambda: s.c,
                lambda: s.counts, lambda: s.breakpoints_of(0),
                lambda: s._store_parts(), lambda: pickle.dumps(s)):
        with pytest.raises(ValueError, match="never fitted"):
            use()


def test_spline_cannot_be_fitted_again():
    x = np.linspace(0.0, 1.0, 6)
    s = Spline(x, x)
    with pytest.raises(TypeError, match="fitted again"):
        s.__init__(x, x**2)
    assert s(0.5) == 0.5


# --- the GIL is released during array evaluation ----------------------------

def test_array_evaluation_releases_the_gil():
    x = np.linspace(0.0, 1.0, 1000)
    s = Spline(x, np.sin(7 * x))
    q = np.random.default_rng(0).random(20_000_000)
    counter = [0]
    running = threading.Event()
    done = threading.Event()

    def count():
        running.set()
        while not done.is_set():
            counter[0] += 1

    worker = threading.Thread(target=count, daemon=True)
    worker.start()
    try:
        assert running.wait(5.0)
        before = counter[0]
        started = time.perf_counter()
        s(q)
        elapsed = time.perf_counter() - started
        during = counter[0] - before
    finally:
        done.set()
        worker.join(5.0)
    assert not worker.is_alive()
    # Holding the GIL for the whole call would leave the counter at most a
    # switch interval's worth ahead; released, it runs the whole time.
    switches = elapsed / sys.getswitchinterval()
    assert during > 1000, (during, switches)

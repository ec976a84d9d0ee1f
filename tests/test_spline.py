"""tesenv.Spline: fitting, evaluation, edge cases, store parts, GIL release.

Comparisons against SciPy live in test_spline_scipy.py; this file needs
only numpy.
"""

import math
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


@pytest.mark.parametrize("kind,k,n", [("not-a-knot", 3, 1), ("linear", 3, 1),
                                      ("pchip", 3, 1), ("bspline", 5, 5),
                                      ("bspline", 2, 2)])
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

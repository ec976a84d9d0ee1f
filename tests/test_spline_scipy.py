"""tesenv.Spline against SciPy's interpolators, on random data and on every
day of the U.S. Treasury par yield curve archive."""

import csv
from pathlib import Path

import numpy as np
import pytest

from tesenv._spline import Spline

si = pytest.importorskip("scipy.interpolate")

# Agreement with SciPy, relative to the scale of the compared quantity.
SCIPY_RTOL = 1e-12

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
ARCHIVE = DATA_DIR / "ust-par-yield-1990-2022.csv"


def scale_of(want, y, span, nu):
    """The scale a derivative of order nu is compared on: its own largest
    magnitude, but no less than the values' scale over the span to the
    power nu (a third derivative that is zero up to rounding has no scale
    of its own)."""
    return max(float(np.max(np.abs(want))), float(np.max(np.abs(y))) / span**nu)


def assert_close(got, want, scale, what):
    err = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    assert err <= SCIPY_RTOL * scale, f"{what}: error {err:.3e}, scale {scale:.3e}"


class BSplineRef:
    """make_interp_spline result with derivatives past the degree as 0."""

    def __init__(self, x, y, k):
        self.spline = si.make_interp_spline(x, y, k=k)
        self.k = k

    def __call__(self, q, nu=0):
        if nu > self.k:
            return np.zeros(np.shape(q) + np.shape(self.spline.c)[1:])
        return self.spline(q, nu)

    def integrate(self, a, b):
        return self.spline.integrate(a, b)


def scipy_pair(kind, x, y, rng=None):
    """(tesenv Spline, SciPy reference) for one kind."""
    if kind in ("not-a-knot", "natural"):
        return Spline(x, y, kind), si.CubicSpline(x, y, bc_type=kind)
    if kind == "periodic":
        # SciPy's periodic evaluation wraps every query, which can move one
        # sitting on a breakpoint by a rounding onto the previous piece and
        # change a (discontinuous) third derivative there; compare without
        # wrapping here and test the wrap separately.
        return (Spline(x, y, kind, extrapolate="extrapolate"),
                si.CubicSpline(x, y, bc_type=kind, extrapolate=True))
    if kind == "clamped":
        shape = np.shape(y)[1:]
        bc = ((1, np.full(shape, 0.4)), (1, np.full(shape, -0.7)))
        return (Spline(x, y, "clamped", bc=(0.4, -0.7)),
                si.CubicSpline(x, y, bc_type=bc))
    if kind == "pchip":
        return Spline(x, y, "pchip"), si.PchipInterpolator(x, y)
    if kind in ("akima", "makima"):
        return (Spline(x, y, kind),
                si.Akima1DInterpolator(x, y, method=kind, extrapolate=True))
    if kind == "hermite":
        d = np.cos(np.arange(len(x)))
        if np.ndim(y) == 2:
            d = np.repeat(d[:, None], y.shape[1], axis=1)
        return Spline(x, y, "hermite", dydx=d), si.CubicHermiteSpline(x, y, d)
    k = int(kind[-1])
    return Spline(x, y, "bspline", k=k), BSplineRef(x, y, k)


KINDS = ["not-a-knot", "natural", "clamped", "periodic", "pchip", "akima",
         "makima", "hermite", "bspline1", "bspline2", "bspline3", "bspline4",
         "bspline5"]


def compare(ours, theirs, x, y, q, what):
    span = float(x[-1] - x[0])
    for nu in range(4):
        want = theirs(q, nu)
        assert_close(ours(q, nu), want, scale_of(want, y, span, nu),
                     f"{what} nu={nu}")
    for a, b in ((x[0], x[-1]), (x[1] - 0.3, x[-2] + 0.2),
                 (x[0] - 0.5, x[-1] + 0.7), (x[-1], x[0])):
        want = theirs.integrate(a, b)
        assert_close(ours.integrate(a, b), want,
                     max(float(np.max(np.abs(want))), 1.0) * span,
                     f"{what} integral {a}..{b}")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_random_data_matches_scipy(kind, seed):
    rng = np.random.default_rng(seed)
    n = [6, 9, 17, 40][seed]
    x = np.sort(rng.uniform(-3, 7, n))
    y = rng.normal(scale=10.0 ** rng.uniform(-3, 3), size=n)
    if kind == "periodic":
        y[-1] = y[0]
    ours, theirs = scipy_pair(kind, x, y)
    q = np.concatenate([np.linspace(x[0] - 1.0, x[-1] + 1.0, 501), x])
    compare(ours, theirs, x, y, q, f"{kind} seed {seed}")


@pytest.mark.parametrize("seed", range(3))
def test_periodic_wrap_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 7, 11))
    y = rng.normal(size=11)
    y[-1] = y[0]
    ours = Spline(x, y, "periodic")
    theirs = si.CubicSpline(x, y, bc_type="periodic")
    q = np.concatenate([np.linspace(x[0] - 25.0, x[0], 400, endpoint=False),
                        np.linspace(x[-1], x[-1] + 25.0, 400)[1:]])
    # Values and the continuous derivatives; a wrapped query may land a
    # rounding away from SciPy's, hence the looser scale on q's error.
    for nu in range(3):
        want = theirs(q, nu)
        err = np.max(np.abs(ours(q, nu) - want))
        assert err <= 1e-10 * max(np.max(np.abs(want)), 1.0)
    for a, b in ((x[0] - 13.0, x[-1] + 7.5), (x[-1] + 30.0, x[0] - 2.0)):
        want = theirs.integrate(a, b)
        assert abs(ours.integrate(a, b) - want) <= 1e-10 * max(abs(want), 1)


@pytest.mark.parametrize("kind", ["not-a-knot", "natural", "clamped",
                                  "periodic", "pchip", "akima", "makima"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_few_points_match_scipy(kind, n):
    if kind in ("akima", "makima") and n < 2:
        pytest.skip("needs two points")
    rng = np.random.default_rng(n)
    x = np.sort(rng.uniform(0, 4, n))
    y = rng.normal(size=n)
    if kind == "periodic":
        y[-1] = y[0]
    ours, theirs = scipy_pair(kind, x, y)
    q = np.linspace(x[0], x[-1], 77)[:-1]
    compare(ours, theirs, x, y, q, f"{kind} n={n}")


@pytest.mark.parametrize("kind", ["not-a-knot", "pchip", "bspline4"])
def test_batch_matches_scipy_2d(kind):
    rng = np.random.default_rng(9)
    x = np.sort(rng.uniform(0, 5, 14))
    y = rng.normal(size=(14, 5))
    ours, theirs = scipy_pair(kind, x, y)
    q = np.linspace(-0.5, 5.5, 211)
    for nu in range(4):
        want = theirs(q, nu)
        assert_close(ours(q, nu), want, scale_of(want, y, 5.0, nu), kind)


# --- every day of the Treasury par yield archive ----------------------------

def load_archive():
    """(maturities in years, yields with NaN where missing): one column per
    day. A 0.0 cell is a maturity not issued that day; BC_30YEARDISPLAY
    repeats the 30-year column and is left out."""
    if not ARCHIVE.exists():
        pytest.skip(f"Treasury archive not found at {ARCHIVE}")
    with ARCHIVE.open(newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    columns = [i for i, name in enumerate(header)
               if name.startswith("BC_") and name != "BC_30YEARDISPLAY"]
    maturities = []
    for i in columns:
        name = header[i][3:]
        if name.endswith("MONTH"):
            maturities.append(float(name[:-5]) / 12.0)
        else:
            maturities.append(float(name[:-4]))
    values = np.array([[float(r[i]) for i in columns] for r in rows]).T
    values[values == 0.0] = np.nan
    order = np.argsort(maturities)
    return np.array(maturities)[order], values[order]


YIELD_KINDS = ["not-a-knot", "natural", "clamped", "pchip", "akima",
               "makima", "bspline1", "bspline2", "bspline3", "bspline4",
               "bspline5"]


@pytest.fixture(scope="module")
def archive():
    return load_archive()


def test_archive_shape(archive):
    x, values = archive
    assert values.shape == (11, 8055)
    assert np.isnan(values).any()


@pytest.mark.parametrize("kind", YIELD_KINDS)
def test_every_archive_day_matches_scipy(archive, kind):
    x, values = archive
    options = {"bc": (0.4, -0.7)} if kind == "clamped" else {}
    if kind.startswith("bspline"):
        ours = Spline(x, values, "bspline", k=int(kind[-1]), missing="drop")
    else:
        ours = Spline(x, values, kind, missing="drop", **options)
    q = np.concatenate([np.linspace(-0.5, 31.0, 64), x])
    got = {nu: ours(q, nu) for nu in range(4)}
    integrals = ours.integrate(0.25, 25.0)

    # Days sharing a set of maturities are fitted by SciPy in one go, except
    # Akima, whose SciPy threshold couples the columns of a 2-D fit.
    present = np.isfinite(values)
    patterns = {}
    for day in range(values.shape[1]):
        patterns.setdefault(present[:, day].tobytes(), []).append(day)
    for days in patterns.values():
        mask = present[:, days[0]]
        xs = x[mask]
        groups = [[d] for d in days] if "akima" in kind else [days]
        for group in groups:
            ys = values[mask][:, group]
            _, theirs = scipy_pair(kind, xs, ys)
            span = float(xs[-1] - xs[0])
            for nu in range(4):
                want = theirs(q, nu)
                assert_close(got[nu][:, group], want,
                             scale_of(want, ys, span, nu),
                             f"{kind} days {group[:3]} nu={nu}")
            want = theirs.integrate(0.25, 25.0)
            assert_close(integrals[group], want, float(np.max(np.abs(want)))
                         * span, f"{kind} integral days {group[:3]}")

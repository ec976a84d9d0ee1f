"""Spline speed next to SciPy and numpy, measured in the same run.

    python bench/bench_spline.py [--json FILE] [--repeats N]

Every figure is the median of N repeats. Ratios above 1 mean tesenv is
faster (for the a*x+b line: how many times slower than that floor).
"""

import argparse
import json
import statistics
import time
import timeit

import numpy as np

from tesenv import Spline
from tesenv.bench import machine_info

try:
    from scipy.interpolate import CubicSpline
except ImportError:  # the table then shows tesenv alone
    CubicSpline = None

KNOTS = 1_000
POINTS = 1_000_000


def median_seconds(fn, repeats, number=1):
    """Median over repeats of the time of one call of fn."""
    times = timeit.repeat(fn, number=number, repeat=repeats)
    return statistics.median(times) / number


def run(repeats):
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 1.0, KNOTS)
    y = np.sin(7.0 * x)
    ours = Spline(x, y)
    theirs = CubicSpline(x, y) if CubicSpline else None
    rows = []

    def row(name, ours_s, theirs_s, note=""):
        rows.append({"case": name, "tesenv_s": ours_s, "other_s": theirs_s,
                     "ratio": (theirs_s / ours_s) if theirs_s else None,
                     "note": note})

    # 1. One point from Python.
    calls = 200_000
    t_ours = median_seconds(lambda: ours(0.37), repeats, calls)
    t_theirs = (median_seconds(lambda: theirs(0.37), repeats, 2_000)
                if theirs else None)
    row("s(0.37), one float", t_ours, t_theirs, "vs scipy CubicSpline")

    # 2. A million points, sorted and in random order.
    sorted_q = np.sort(rng.random(POINTS))
    random_q = rng.permutation(sorted_q)
    for name, q in (("sorted", sorted_q), ("random", random_q)):
        t_ours = median_seconds(lambda: ours(q), repeats)
        t_theirs = median_seconds(lambda: theirs(q), repeats) if theirs else None
        row(f"1e6 {name} queries, 1e3 knots", t_ours, t_theirs,
            "vs scipy CubicSpline")
    t_floor = median_seconds(lambda: 1.5 * sorted_q + 2.0, repeats)
    t_ours = median_seconds(lambda: ours(sorted_q), repeats)
    rows.append({"case": "1e6 sorted vs numpy a*x+b", "tesenv_s": t_ours,
                 "other_s": t_floor, "ratio": t_ours / t_floor,
                 "note": "times slower than a*x+b (goal <= 3)"})

    # 3. Uneven knots (log-spaced): the uniform-grid guess misses.
    xl = np.geomspace(0.01, 30.0, KNOTS)
    uneven = Spline(xl, np.log(xl))
    ql = rng.uniform(0.01, 30.0, POINTS)
    t_ours = median_seconds(lambda: uneven(ql), repeats)
    uneven_theirs = CubicSpline(xl, np.log(xl)) if theirs else None
    t_theirs = (median_seconds(lambda: uneven_theirs(ql), repeats)
                if theirs else None)
    row("1e6 random queries, uneven knots", t_ours, t_theirs,
        "vs scipy CubicSpline")

    # 4. Fitting a million points.
    xf = np.cumsum(rng.uniform(0.5, 1.5, POINTS))
    yf = np.sin(xf / 100.0)
    t_ours = median_seconds(lambda: Spline(xf, yf), repeats)
    t_theirs = (median_seconds(lambda: CubicSpline(xf, yf), repeats)
                if theirs else None)
    row("fit 1e6 points, not-a-knot", t_ours, t_theirs, "vs scipy CubicSpline")
    return rows


def fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:8.2f} {unit}"
    return f"{seconds / 1e-9:8.2f} ns"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, "
          f"{info['platform']}, Python {info['python']}, "
          f"numpy {info['numpy']}")
    started = time.perf_counter()
    rows = run(args.repeats)
    print(f"{'case':36s} {'tesenv':>11s} {'other':>11s} {'ratio':>8s}  note")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:7.1f}x"
        print(f"{r['case']:36s} {fmt_time(r['tesenv_s'])} "
              f"{fmt_time(r['other_s'])} {ratio:>8s}  {r['note']}")
    print(f"(median of {args.repeats} repeats; "
          f"{time.perf_counter() - started:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "repeats": args.repeats,
                       "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()

"""The worker benchmark on real curves, checked against SciPy in one process.

A reduced run (100 days, 2 workers) of every method: the figures the workers
computed must match a slow SciPy evaluation of the same days, no job may be
computed with a configuration older than an acknowledged one, and nothing may
be left running or in /dev/shm afterwards.
"""

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from tesenv import bench
from tesenv.curves import load_curves

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARCHIVE = DATA / "ust-par-yield-1990-2022.csv"

DAYS = 100
# Enough jobs that each half of the run, before and after the change, covers
# every day many times over even if the parent is slow to make the change.
JOBS = 6000
# Same algorithms, different operation order: agreement to rounding.
SUMMARY_RTOL = 1e-9
SUMMARY_ATOL = 1e-10
SCIPY_KINDS = {"pchip": "PchipInterpolator", "not-a-knot": "CubicSpline"}


def my_segments():
    """Benchmark stores of this process still in /dev/shm."""
    prefix = f"{bench.STORE_PREFIX}{os.getpid()}-"
    try:
        return [name for name in os.listdir("/dev/shm")
                if name.startswith(prefix)]
    except OSError:
        return []


def scipy_summaries(curves, kind, grid):
    """Per day, one curve at a time: mean, min, max and largest absolute
    slope of the SciPy fit through that day's published maturities."""
    interpolate = pytest.importorskip("scipy.interpolate")
    make = getattr(interpolate, SCIPY_KINDS[kind])
    out = np.empty((len(curves), 4))
    for day, row in enumerate(curves.yields):
        have = np.isfinite(row)
        curve = make(curves.maturities[have], row[have])
        level = curve(grid)
        slope = curve(grid, 1)
        out[day] = (level.mean(), level.min(), level.max(),
                    np.abs(slope).max())
    return out


@pytest.fixture(scope="module")
def report():
    if not ARCHIVE.exists():
        pytest.skip(f"real data file {ARCHIVE} is not on this machine")
    options = bench.parse_args([
        "--curves", str(ARCHIVE), "--days", str(DAYS), "--workers", "2",
        "--jobs", str(JOBS), "--block", "10", "--changes", "1", "--no-kernel",
        "--no-progress", "--timeout", "45"])
    result = bench.run(options)
    assert multiprocessing.active_children() == []
    assert my_segments() == []
    return result


def test_every_method_ran_every_job_right(report):
    assert list(report["methods"]) == list(bench.METHODS)
    for name, figures in report["methods"].items():
        assert figures["jobs"] == JOBS, name
        assert figures["wrong_results"] == 0, name
        assert figures["config_versions"] == 2, name
        assert figures["propagation_ms"]["samples"] >= 1, name
        assert figures["jobs_per_s"] > 0, name
        assert figures["read_ns"] > 0, name
    assert report["methods"]["env"]["restarts"] == 1
    assert report["methods"]["tesenv"]["restarts"] == 0


def test_tesenv_never_runs_a_stale_configuration(report):
    tesenv = report["methods"]["tesenv"]
    assert tesenv["stale_jobs"] == 0
    assert tesenv["lagging_jobs"] == 0
    # A Manager dict read is a round trip to one server: it cannot be stale.
    assert report["methods"]["manager"]["stale_jobs"] == 0


@pytest.mark.parametrize("kind", sorted(SCIPY_KINDS))
def test_worker_results_match_scipy(report, kind):
    curves = load_curves(ARCHIVE)[:DAYS]
    grid = bench.make_grid(report["options"]["grid"])
    assert grid[0] == pytest.approx(1 / 12) and grid[-1] == pytest.approx(30)
    expected = scipy_summaries(curves, kind, grid)
    for name, figures in report["methods"].items():
        got = figures["_summaries"][kind]
        assert got.shape == (DAYS, 4)
        done = np.isfinite(got).all(axis=1)
        # The first curve type runs half the jobs for sure; how much of the
        # second half follows the change depends on how soon the parent,
        # sharing the CPUs with the workers, got to make it.
        if kind == report["options"]["curve_type"]:
            assert done.all(), f"{name}: days left uncomputed"
        else:
            assert done.sum() >= 10, f"{name}: no job after the change"
        np.testing.assert_allclose(got[done], expected[done],
                                   rtol=SUMMARY_RTOL, atol=SUMMARY_ATOL,
                                   err_msg=name)


def test_report_text_names_machine_and_definitions(report):
    text = bench.format_report(report)
    assert report["machine"]["cpu"] in text
    assert "acknowledged" in text and "restart" in text
    for name in bench.METHODS:
        assert f"\n{name} " in text


def test_json_and_generated_curves(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = bench.main(["--days", "64", "--jobs", "40", "--block", "16",
                       "--workers", "2", "--changes", "1",
                       "--methods", "tesenv", "--kernel-seconds", "0.05",
                       "--json", str(path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "no --curves given" in out
    data = json.loads(path.read_text())
    assert data["curves"]["generated"] is True
    assert data["methods"]["tesenv"]["stale_jobs"] == 0
    for key in ("platform", "cpu", "cores", "python", "numpy"):
        assert data["machine"][key]
    assert set(data["kernel"]["kinds"]) == {"pchip", "not-a-knot"}
    assert multiprocessing.active_children() == []
    assert my_segments() == []


def test_unreadable_curve_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("Date,1 Mo,30 Yr\n2024-01-02,5.5,four\n")
    code = bench.main(["--curves", str(path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "row 2, column 3 (30 Yr): 'four' is not a number" in err


def test_plot_without_matplotlib_says_how(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code = bench.main(["--days", "20", "--plot", str(tmp_path / "p.png"),
                       "--no-progress"])
    assert code == 1
    assert "tesenv[plot]" in capsys.readouterr().err


@pytest.mark.parametrize("text, points, first, last", [
    ("1", 360, 1 / 12, 30.0), ("3m", 120, 0.25, 30.0),
    ("500p", 500, 1 / 12, 30.0), ("7", 51, 7 / 12, 29.75)])
def test_grid_option(text, points, first, last):
    grid = bench.parse_grid(text)
    values = bench.make_grid(grid)
    assert len(values) == points
    assert values[0] == pytest.approx(first)
    assert values[-1] == pytest.approx(last)
    if not text.endswith("p"):
        np.testing.assert_allclose(np.diff(values), values[0])

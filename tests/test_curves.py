"""Reading Treasury par yield curve files and generating synthetic curves."""

from pathlib import Path

import numpy as np
import pytest

from tesenv.curves import (CurveFileError, TREASURY_MATURITIES, load_curves,
                           synthetic_curves)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARCHIVE = DATA / "ust-par-yield-1990-2022.csv"
OFFICIAL = DATA / "ust-par-yield-2024-official-format.csv"

OFFICIAL_HEADER = "Date,1 Mo,2 Mo,3 Mo,6 Mo,1 Yr,2 Yr,5 Yr,10 Yr,30 Yr"


def need(path):
    if not path.exists():
        pytest.skip(f"real data file {path} is not on this machine")
    return path


def write(tmp_path, text, name="curves.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_ascending(curves):
    assert np.all(np.diff(curves.dates.astype(np.int64)) > 0)
    assert np.all(np.diff(curves.maturities) > 0)


# ---- the real files ---------------------------------------------------------

def test_archive_file():
    curves = load_curves(need(ARCHIVE))
    assert len(curves) == 8055
    assert curves.dates[0] == np.datetime64("1990-01-02")
    assert curves.dates[-1] == np.datetime64("2022-03-11")
    assert curves.yields.shape == (8055, 11)
    # BC_30YEARDISPLAY is not a maturity of its own.
    np.testing.assert_allclose(
        curves.maturities,
        [1 / 12, 3 / 12, 6 / 12, 1, 2, 3, 5, 7, 10, 20, 30])
    assert_ascending(curves)
    # 0.0 marks bills and bonds not issued: the 1-month bill in 1990, the
    # 20-year bond before late 1993, the 30-year bond in 2002-2006.
    first = curves.yields[0]
    assert np.isnan(first[0]) and np.isnan(first[9])
    assert first[10] == 8.0 and first[1] == 7.83
    in_2004 = curves.dates == np.datetime64("2004-06-01")
    assert np.isnan(curves.yields[in_2004, 10]).all()
    assert not (curves.yields == 0.0).any()
    assert curves.available().min() >= 9


def test_official_file_newest_first():
    curves = load_curves(need(OFFICIAL))
    assert len(curves) == 250
    assert curves.yields.shape == (250, 13)
    np.testing.assert_allclose(curves.maturities, TREASURY_MATURITIES)
    assert_ascending(curves)
    assert curves.dates[0] == np.datetime64("2024-01-02")
    assert curves.dates[-1] == np.datetime64("2024-12-31")
    # The file's last row is its oldest day.
    np.testing.assert_allclose(curves.yields[0, :3], [5.55, 5.54, 5.46])
    assert np.isfinite(curves.yields).all()


# ---- each quirk, in a small file ------------------------------------------

def test_us_dates_and_newest_first(tmp_path):
    path = write(tmp_path, OFFICIAL_HEADER + "\n"
                 "01/03/2024,5.54,5.54,5.48,5.25,4.81,4.33,3.9,3.91,4.05\n"
                 "1/2/2024,5.55,5.54,5.46,5.24,4.8,4.33,3.93,3.95,4.08\n")
    curves = load_curves(path)
    assert list(curves.dates.astype(str)) == ["2024-01-02", "2024-01-03"]
    assert curves.yields[0, 0] == 5.55
    assert curves.yields[1, -1] == 4.05


def test_empty_cells_are_missing_and_zero_is_a_yield(tmp_path):
    path = write(tmp_path, OFFICIAL_HEADER + "\n"
                 "2021-01-04,0.0,,0.09,0.09,0.1,0.11,0.36,0.93,\n")
    curves = load_curves(path)
    assert curves.yields[0, 0] == 0.0       # the official layout's 0.00 is real
    assert np.isnan(curves.yields[0, 1])
    assert np.isnan(curves.yields[0, -1])
    assert curves.available()[0] == 7


def test_archive_zero_is_missing_and_display_column_ignored(tmp_path):
    path = write(tmp_path,
                 "date,BC_1MONTH,BC_3MONTH,BC_1YEAR,BC_30YEAR,BC_30YEARDISPLAY\n"
                 "2004-06-01,0.97,1.1,1.8,0.0,5.4\n")
    curves = load_curves(path)
    np.testing.assert_allclose(curves.maturities, [1 / 12, 0.25, 1, 30])
    assert np.isnan(curves.yields[0, 3])


def test_six_week_bill_and_columns_by_name(tmp_path):
    # Columns out of order, with the 1.5-month bill of 2025: names decide.
    path = write(tmp_path, "Date,3 Mo,1.5 Mo,1 Mo,10 Yr,2 Mo,1 Yr\n"
                 "2025-03-03,4.3,4.35,4.36,4.16,4.33,4.08\n")
    curves = load_curves(path)
    np.testing.assert_allclose(curves.maturities,
                               [1 / 12, 1.5 / 12, 2 / 12, 3 / 12, 1, 10])
    np.testing.assert_allclose(curves.yields[0],
                               [4.36, 4.35, 4.33, 4.3, 4.08, 4.16])


def test_trailing_comma_column_is_ignored(tmp_path):
    path = write(tmp_path, "Date,1 Mo,30 Yr,\n2024-01-02,5.55,4.08,\n")
    curves = load_curves(path)
    np.testing.assert_allclose(curves.yields, [[5.55, 4.08]])


def test_slice_of_days():
    curves = synthetic_curves(50, seed=3)
    part = curves[10:20]
    assert len(part) == 10
    np.testing.assert_array_equal(part.yields, curves.yields[10:20])
    assert part.dates[0] == curves.dates[10]


# ---- files that cannot be read: one line naming row and column ---------------

@pytest.mark.parametrize("text, expected", [
    (OFFICIAL_HEADER + "\n2024-01-02,5.55,5.54,5.4x,5.24,4.8,4.33,3.93,3.95,4.08\n",
     r"row 2, column 4 \(3 Mo\): '5\.4x' is not a number"),
    ("2024-01-02,5.55,5.54\n2024-01-03,5.55,5.54\n",
     r"row 1, column 1: missing header"),
    ("Date,1 Mo,Spread,30 Yr\n2024-01-02,5.5,0.1,4.0\n",
     r"row 1, column 3: unknown column 'Spread'"),
    (OFFICIAL_HEADER + "\n2024-13-02,5.55,5.54,5.4,5.24,4.8,4.33,3.93,3.95,4.08\n",
     r"row 2, column 1 \(Date\): '2024-13-02' is not a calendar date"),
    (OFFICIAL_HEADER + "\nyesterday,5.55,5.54,5.4,5.24,4.8,4.33,3.93,3.95,4.08\n",
     r"row 2, column 1 \(Date\): 'yesterday' is not a date"),
    (OFFICIAL_HEADER + "\n2024-01-02,5.55,5.54\n",
     r"row 2: 3 cells, the header has 10"),
    ("Date,1 Mo,BC_1MONTH\n2024-01-02,5.5,5.5\n",
     r"row 1, column 3 \(BC_1MONTH\): maturity repeats column 2"),
    (OFFICIAL_HEADER + "\n2024-01-02,5.55,5.54,5.4,5.24,4.8,4.33,3.93,3.95,4.08\n"
     "2024-01-02,5.55,5.54,5.4,5.24,4.8,4.33,3.93,3.95,4.08\n",
     r"row 3, column 1 \(Date\): date 2024-01-02 repeats row 2"),
    (OFFICIAL_HEADER + "\n2024-01-02,5.55,inf,5.4,5.24,4.8,4.33,3.93,3.95,4.08\n",
     r"row 2, column 3 \(2 Mo\): 'inf' is not a finite yield"),
    (OFFICIAL_HEADER + "\n", r"row 1: no data rows"),
    ("Date,1 Mo,,30 Yr\n2024-01-02,5.5,7,4.0\n",
     r"row 2, column 3: '7' under a column without a name"),
    ("", r"row 1: the file is empty"),
], ids=["bad-cell", "no-header", "unknown-column", "bad-date", "not-a-date",
        "short-row", "duplicate-maturity", "duplicate-date", "infinite",
        "no-rows", "unnamed-column-with-data", "empty"])
def test_unreadable_file_names_row_and_column(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(CurveFileError, match=expected) as caught:
        load_curves(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert isinstance(caught.value, ValueError)


# ---- synthetic curves ---------------------------------------------------------

def test_synthetic_curves_are_plausible_and_repeatable():
    curves = synthetic_curves(2000, seed=7)
    again = synthetic_curves(2000, seed=7)
    np.testing.assert_array_equal(curves.yields, again.yields)
    assert not np.array_equal(curves.yields, synthetic_curves(2000, 8).yields)
    assert curves.yields.shape == (2000, len(TREASURY_MATURITIES))
    assert_ascending(curves)
    assert np.isfinite(curves.yields).all()
    assert -2 < curves.yields.min() and curves.yields.max() < 15
    # Varied parameters: both upward-sloping and inverted days occur.
    spread = curves.yields[:, -1] - curves.yields[:, 0]
    assert (spread > 0.5).any() and (spread < -0.5).any()
    # Business days only.
    assert np.is_busday(curves.dates).all()


def test_synthetic_missing_cells_leave_enough_points():
    curves = synthetic_curves(500, seed=1, missing_fraction=0.3)
    assert np.isnan(curves.yields).any()
    assert curves.available().min() >= 4


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="days"):
        synthetic_curves(0)
    with pytest.raises(ValueError, match="missing_fraction"):
        synthetic_curves(10, missing_fraction=0.7)


def test_binary_garbage_is_one_line(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CurveFileError, match="not UTF-8") as info:
        load_curves(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cell", ["1e308", "-2000", "1_0"])
def test_cells_that_are_no_yield(tmp_path, cell):
    path = tmp_path / "bad.csv"
    path.write_text(f"Date,1 Mo,2 Yr\n2024-01-02,5.0,{cell}\n")
    with pytest.raises(CurveFileError, match=r"row 2, column 3"):
        load_curves(path)

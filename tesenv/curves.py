"""Daily yield curves: U.S. Treasury par yield CSV files and synthetic curves.

Two layouts are read, both as the Treasury publishes them:

- the archive layout, ``date,BC_1MONTH,...,BC_30YEAR,BC_30YEARDISPLAY``, where a
  maturity that was not issued that day is written ``0.0`` and
  ``BC_30YEARDISPLAY`` is a display copy of the 30-year column;
- the official download layout, ``Date,1 Mo,1.5 Mo,...,30 Yr``, where such a
  cell is empty.

Column names, not positions, define the maturities: the set of columns changes
over the years.  Dates may be ISO (``2024-12-31``) or U.S. style
(``12/31/2024``); rows come in either order and are returned oldest first.
"""

import csv
import logging
import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["CurveFileError", "Curves", "load_curves", "synthetic_curves",
           "TREASURY_MATURITIES"]

log = logging.getLogger(__name__)

# The maturities of the official layout in 2024, in years.
TREASURY_MATURITIES = (1 / 12, 2 / 12, 3 / 12, 4 / 12, 6 / 12,
                       1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 30.0)

# "BC_3MONTH", "BC_30YEAR" (archive) and "3 Mo", "1.5 Mo", "30 Yr" (official).
_ARCHIVE_COLUMN = re.compile(r"BC_(\d+(?:\.\d+)?)(MONTH|YEAR)", re.IGNORECASE)
_OFFICIAL_COLUMN = re.compile(r"(\d+(?:\.\d+)?)\s*(Mo|Month|Yr|Year)s?",
                              re.IGNORECASE)
# Columns that repeat another one for display and carry no maturity of their own.
_IGNORED_COLUMNS = {"bc_30yeardisplay"}
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_US_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
# Cells that mean "not published that day" besides an empty one.
_MISSING_WORDS = {"", "n/a", "na", "nd"}


# Larger than any yield ever quoted, small enough that fitting and
# evaluating a curve cannot overflow.
MAX_YIELD_PCT = 1000.0


class CurveFileError(ValueError):
    """A curve file that cannot be read.  The message is one line naming the
    file, the row (1 is the header) and, where there is one, the column."""


@dataclass(frozen=True)
class Curves:
    """Daily curves on one maturity grid.

    dates: datetime64[D], strictly ascending.
    maturities: years, float64, strictly ascending.
    yields: percent, float64 of shape (days, maturities), NaN where the
        maturity was not published that day.
    source: where the curves came from, for reports.
    """

    dates: np.ndarray
    maturities: np.ndarray
    yields: np.ndarray
    source: str

    def __len__(self):
        return len(self.dates)

    def __getitem__(self, days):
        """The curves of a slice or index array of days, as Curves."""
        if isinstance(days, (int, np.integer)):
            days = slice(days, days + 1 or None)
        return Curves(self.dates[days], self.maturities,
                      np.ascontiguousarray(self.yields[days]), self.source)

    def available(self):
        """Finite values per day: an int array of length len(self)."""
        return np.isfinite(self.yields).sum(axis=1)

    def describe(self):
        """One line saying what these curves are."""
        if not len(self):
            return f"{self.source}: no days"
        missing = int(np.isnan(self.yields).sum())
        return (f"{self.source}: {len(self):,} days {self.dates[0]} .. "
                f"{self.dates[-1]}, {len(self.maturities)} maturities "
                f"{_years_label(self.maturities[0])} .. "
                f"{_years_label(self.maturities[-1])}, "
                f"{missing:,} missing cells")


def _years_label(years):
    """'1 Mo', '1.5 Mo' or '30 Yr' for a maturity in years."""
    if years < 1:
        months = round(years * 12, 6)
        return f"{months:g} Mo"
    return f"{years:g} Yr"


def _maturity_years(name):
    """Years for a maturity column name, None for an ignored column, or
    raises KeyError for a name that is not a maturity."""
    text = name.strip()
    if text.lower() in _IGNORED_COLUMNS:
        return None
    match = (_ARCHIVE_COLUMN.fullmatch(text)
             or _OFFICIAL_COLUMN.fullmatch(text))
    if match is None:
        raise KeyError(text)
    count = float(match.group(1))
    unit = match.group(2).lower()
    years = count / 12 if unit.startswith("mo") else count
    if not years > 0:
        raise KeyError(text)
    return years


def _parse_date(text):
    """numpy datetime64[D] for an ISO or U.S.-style date, or raises
    ValueError."""
    text = text.strip()
    match = _ISO_DATE.fullmatch(text)
    if match:
        year, month, day = match.groups()
    else:
        match = _US_DATE.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD or "
                             f"MM/DD/YYYY)")
        month, day, year = match.groups()
    iso = f"{int(year):04d}-{int(month):02d}-{int(day):02d}"
    try:
        return np.datetime64(iso, "D")
    except ValueError:
        raise ValueError(f"{text!r} is not a calendar date") from None


def load_curves(path):
    """Reads a Treasury par yield curve CSV file in either layout.

    Returns Curves with the days sorted ascending and the maturity columns
    sorted by maturity; missing cells (empty, or 0.0 in the archive layout)
    are NaN.  Raises CurveFileError, with a one-line message naming the row
    and column, for a missing header, a column that is not a maturity, a
    duplicate maturity or date, a bad date or number, or a row of the wrong
    length; OSError if the file cannot be opened.
    """
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(number, row)
                    for number, row in enumerate(csv.reader(f), 1)
                    if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as e:
        raise CurveFileError(f"{path}: byte {e.start} is not UTF-8 text; "
                             f"expected a CSV file") from None
    except csv.Error as e:
        raise CurveFileError(f"{path}: not a CSV file: {e}") from None

    def fail(row, message, column=None, header=None):
        where = f"row {row}"
        if column is not None:
            where += f", column {column + 1}"
            if header is not None and column < len(header):
                where += f" ({header[column].strip()})"
        raise CurveFileError(f"{path}: {where}: {message}")

    # 1. The header: a date column first, then maturity columns.
    if not rows:
        fail(1, "the file is empty; expected a header such as 'Date,1 Mo,...'")
    header_row, header = rows[0]
    if header[0].strip().lower() != "date":
        fail(header_row, f"missing header: the first column is "
                         f"{header[0].strip()!r}, expected 'Date'", 0)
    columns = []    # (cell index, years)
    blank = []      # columns without a name, as a trailing comma makes
    seen = {}
    for index, name in enumerate(header[1:], 1):
        if not name.strip():
            blank.append(index)
            continue
        try:
            years = _maturity_years(name)
        except KeyError:
            fail(header_row, f"unknown column {name.strip()!r}: not a "
                             f"maturity such as '3 Mo', '1.5 Mo', '30 Yr' or "
                             f"'BC_3MONTH'", index)
        if years is None:
            continue
        if years in seen:
            fail(header_row, f"maturity repeats column {seen[years] + 1}",
                 index, header)
        seen[years] = index
        columns.append((index, years))
    if not columns:
        fail(header_row, "no maturity columns")
    columns.sort(key=lambda column: column[1])
    # In the archive layout 0.0 stands for "not issued"; in the official one
    # a real yield can be 0.00, and a missing one is an empty cell.
    zero_is_missing = any(_ARCHIVE_COLUMN.fullmatch(header[i].strip())
                          for i, _ in columns)

    # 2. The days.
    data = rows[1:]
    if not data:
        fail(header_row, "no data rows after the header")
    dates = np.empty(len(data), dtype="datetime64[D]")
    yields = np.empty((len(data), len(columns)))
    first_row = {}
    for k, (number, row) in enumerate(data):
        if len(row) != len(header):
            fail(number, f"{len(row)} cells, the header has {len(header)}")
        for index in blank:
            if row[index].strip():
                fail(number, f"{row[index].strip()!r} under a column without "
                             f"a name", index)
        try:
            dates[k] = day = _parse_date(row[0])
        except ValueError as exc:
            fail(number, str(exc), 0, header)
        if day in first_row:
            fail(number, f"date {day} repeats row {first_row[day]}", 0, header)
        first_row[day] = number
        for j, (index, _) in enumerate(columns):
            yields[k, j] = _parse_yield(row[index], zero_is_missing, number,
                                        index, header, fail)

    order = np.argsort(dates, kind="stable")
    curves = Curves(dates[order], np.array([y for _, y in columns]),
                    np.ascontiguousarray(yields[order]), path)
    log.debug("loaded %s", curves.describe())
    return curves


def _parse_yield(cell, zero_is_missing, row, column, header, fail):
    """The yield in one cell as a float, NaN when missing; calls fail (which
    raises) for anything that is not a finite number."""
    text = cell.strip()
    if text.lower() in _MISSING_WORDS:
        return math.nan
    try:
        # float() would also take "1_0" for 10.
        value = float(text) if "_" not in text else None
    except ValueError:
        value = None
    if value is None:
        fail(row, f"{text!r} is not a number", column, header)
    if not math.isfinite(value):
        fail(row, f"{text!r} is not a finite yield", column, header)
    if abs(value) > MAX_YIELD_PCT:
        fail(row, f"{text!r} is not a yield in percent (more than "
                  f"{MAX_YIELD_PCT:g} in size)", column, header)
    if value == 0.0 and zero_is_missing:
        return math.nan
    return value


def _nelson_siegel_svensson(tau, b0, b1, b2, b3, l1, l2):
    """Yields at maturities tau (years) for NSS parameters, one row per day;
    every parameter is an array with one entry per day."""
    tau = np.asarray(tau)[None, :]
    x1 = tau / l1[:, None]
    x2 = tau / l2[:, None]
    decay1 = (1 - np.exp(-x1)) / x1
    decay2 = (1 - np.exp(-x2)) / x2
    return (b0[:, None] + b1[:, None] * decay1
            + b2[:, None] * (decay1 - np.exp(-x1))
            + b3[:, None] * (decay2 - np.exp(-x2)))


def synthetic_curves(days, seed=0, maturities=TREASURY_MATURITIES,
                     missing_fraction=0.0, start="2000-01-03"):
    """Generated daily curves from a Nelson-Siegel-Svensson model.

    The level, slope, curvature and decay parameters wander day to day as
    mean-reverting random walks, so the set holds normal, flat, inverted and
    humped curves.  With missing_fraction > 0 that share of cells is NaN
    (never more than leaves 4 points a day).  Business days from start.
    Returns Curves; raises ValueError for days < 1 or a bad fraction.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if not 0.0 <= missing_fraction < 0.5:
        raise ValueError(f"missing_fraction must be in [0, 0.5), got "
                         f"{missing_fraction}")
    rng = np.random.default_rng(seed)
    maturities = np.asarray(maturities, dtype=float)

    def wander(mean, spread, low, high, persistence=0.995):
        # AR(1) around mean: spread is the stationary standard deviation.
        shock = spread * math.sqrt(1 - persistence ** 2)
        out = np.empty(days)
        value = mean + spread * rng.standard_normal()
        for day in range(days):
            value = mean + persistence * (value - mean) \
                + shock * rng.standard_normal()
            out[day] = value
        return np.clip(out, low, high)

    b0 = wander(4.5, 1.5, 0.5, 9.0)      # long-run level
    b1 = wander(-1.5, 1.5, -5.0, 3.0)    # short end minus long end
    b2 = wander(0.0, 2.0, -6.0, 6.0)     # medium-term hump
    b3 = wander(0.0, 1.5, -5.0, 5.0)     # second hump
    l1 = wander(1.5, 0.6, 0.3, 4.0)
    l2 = wander(8.0, 2.5, 4.5, 20.0)
    yields = _nelson_siegel_svensson(maturities, b0, b1, b2, b3, l1, l2)
    yields = np.round(yields, 2)

    if missing_fraction > 0:
        holes = rng.random(yields.shape) < missing_fraction
        keep = max(4, len(maturities) // 2)
        holes[:, rng.permutation(len(maturities))[:keep]] = False
        yields[holes] = np.nan

    dates = np.busday_offset(np.datetime64(start, "D"), np.arange(days),
                             roll="forward")
    source = f"synthetic Nelson-Siegel-Svensson curves (seed {seed})"
    return Curves(dates, maturities, np.ascontiguousarray(yields), source)

"""Slow, plain-Python references for the curve kinds SciPy does not provide.

Written from the defining formulas, one point at a time, with no numpy in
the arithmetic, so that they share no code path with the C kernels they
check.
"""

import math


def _sign(v):
    return (v > 0) - (v < 0)


def _floats(values):
    # Python floats, so that no numpy scalar arithmetic sneaks in.
    return [float(v) for v in values]


def steffen_slopes(x, y):
    """Slopes of Steffen's monotone cubic (Astron. Astrophys. 239, 1990)."""
    x, y = _floats(x), _floats(y)
    n = len(x)
    h = [x[i + 1] - x[i] for i in range(n - 1)]
    s = [(y[i + 1] - y[i]) / h[i] for i in range(n - 1)]
    if n == 2:
        return [s[0], s[0]]
    d = [0.0] * n
    for i in range(1, n - 1):
        p = (s[i - 1] * h[i] + s[i] * h[i - 1]) / (h[i - 1] + h[i])
        d[i] = (_sign(s[i - 1]) + _sign(s[i])) * min(
            abs(s[i - 1]), abs(s[i]), 0.5 * abs(p))
    for end, (a, b) in ((0, (0, 1)), (n - 1, (n - 2, n - 3))):
        h0, h1 = h[a], h[b]
        s0, s1 = s[a], s[b]
        p = s0 * (1 + h0 / (h0 + h1)) - s1 * h0 / (h0 + h1)
        if p * s0 <= 0:
            p = 0.0
        elif abs(p) > 2 * abs(s0):
            p = 2 * s0
        d[end] = p
    return d


def catmull_rom_slopes(x, y, tension=0.0):
    """Cardinal-spline slopes on non-uniform x: (1 - tension) times the
    secant through the neighbours; one-sided secants at the ends."""
    x, y = _floats(x), _floats(y)
    n = len(x)
    d = [0.0] * n
    for i in range(1, n - 1):
        d[i] = (1 - tension) * (y[i + 1] - y[i - 1]) / (x[i + 1] - x[i - 1])
    d[0] = (1 - tension) * (y[1] - y[0]) / (x[1] - x[0])
    d[-1] = (1 - tension) * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return d


def hermite_eval(x, y, d, q, nu=0):
    """The nu-th derivative (0..3) at q of the cubic Hermite interpolant
    with values y and slopes d, written with the Hermite basis functions
    and extended past the ends by the end pieces."""
    x, y, d, q = _floats(x), _floats(y), _floats(d), float(q)
    n = len(x)
    i = 0
    while i < n - 2 and q >= x[i + 1]:
        i += 1
    h = x[i + 1] - x[i]
    u = (q - x[i]) / h
    # Basis functions of u and their derivatives with respect to u.
    basis = [
        (2 * u**3 - 3 * u**2 + 1, 6 * u**2 - 6 * u, 12 * u - 6, 12.0),
        (u**3 - 2 * u**2 + u, 3 * u**2 - 4 * u + 1, 6 * u - 4, 6.0),
        (-2 * u**3 + 3 * u**2, -6 * u**2 + 6 * u, -12 * u + 6, -12.0),
        (u**3 - u**2, 3 * u**2 - 2 * u, 6 * u - 2, 6.0),
    ]
    weights = (y[i], h * d[i], y[i + 1], h * d[i + 1])
    total = sum(w * b[nu] for w, b in zip(weights, basis))
    return total / h**nu


def hermite_integral(x, y, d, a, b):
    """Integral from a to b (inside the data) by Simpson's rule on each
    piece, which is exact for cubics."""
    if a > b:
        return -hermite_integral(x, y, d, b, a)
    cuts = [a] + [v for v in x if a < v < b] + [b]
    total = 0.0
    for lo, hi in zip(cuts, cuts[1:]):
        mid = 0.5 * (lo + hi)
        total += (hi - lo) / 6 * (hermite_eval(x, y, d, lo)
                                  + 4 * hermite_eval(x, y, d, mid)
                                  + hermite_eval(x, y, d, hi))
    return total


def is_monotone(values, increasing):
    """True when values never step against the given direction."""
    if increasing:
        return all(b >= a for a, b in zip(values, values[1:]))
    return all(b <= a for a, b in zip(values, values[1:]))


def finite(values):
    return all(math.isfinite(v) for v in values)

"""How numbers appear in the report: by significant digits, not fixed decimals.

Fixed decimals hide the story where a metric lives near zero (centred anisotropy printed as
0.006 and 0.007 is a 17% change shown as one digit); four significant digits keep it whatever
the scale. ``AXIS_FORMAT`` is the same rule for figure axes (d3-format, trailing zeros trimmed).
"""

from __future__ import annotations

import numpy as np

DIGITS = 4
AXIS_FORMAT = ".3~g"


def sig(x: float, digits: int = DIGITS) -> str:
    """``x`` with ``digits`` significant digits; '–' for NaN or infinity."""
    x = float(x)
    if not np.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 10**digits or abs(x) < 1e-4:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def format_value(x: object) -> str:
    """How every cell of a report table appears (and what tests look for)."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return sig(float(x))
    return str(x)


def with_ci(mean: float, low: float, high: float) -> str:
    """'mean [low, high]', or the mean alone where there is no interval (one seed)."""
    if not np.isfinite(mean):
        return "–"
    if np.isfinite(low) and np.isfinite(high):
        return f"{sig(mean)} [{sig(low)}, {sig(high)}]"
    return sig(mean)


def with_se(value: float, se: float, n: float | None = None) -> str:
    """'value ± se (n=n)': a behavioural number with its standard error and the items behind
    it; the value alone where no SE was recorded (evaluations older than SEs), '–' for none.
    ``n`` None or NaN leaves the count out (a column whose n is the same everywhere says it
    once, in its header)."""
    if not np.isfinite(value):
        return "–"
    out = sig(value)
    if se is not None and np.isfinite(se):
        out += f" ± {sig(se, 2)}"
    if n is not None and np.isfinite(n):
        out += f" (n={int(n)})"
    return out

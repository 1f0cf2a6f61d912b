"""Numbers as reports keep and show them: one place for each rule.

* :func:`finite`: a value as a float when it is a finite real number, else ``None`` (an
  unknown is ``None`` everywhere: JSON ``null``, never NaN);
* :func:`json_safe`: a copy of a report's dict that ``json.dumps(allow_nan=False)`` accepts
  (NaN and infinities as ``None``, numpy/torch scalars as Python numbers);
* :func:`ms_text`: seconds as milliseconds for a table column (``"12.345"``; ``"-"`` unknown);
* the text for people, one set of rules for the report's table and summary, the TensorBoard
  text and the Roofline tab's labels (``tensorboard/static/index.js`` writes the same
  functions in JavaScript; a test runs both on the same numbers): :func:`fixed_text` (three
  figures: ``"1,234"``, ``"12.3"``, ``"1.23"``), :func:`si_text` (``"1.50 TFLOP/s"``,
  ``"6.10 µs"``: SI prefixes, seconds never above ``s``), :func:`percent_text` (a 0-1 share as
  ``"12.3 %"``). An unknown number is :data:`UNKNOWN` (``"-"``) in all of them.

Example::

    >>> finite(float("nan")), finite(2), ms_text(0.0123456), ms_text(None)
    (None, 2.0, '12.346', '-')
    >>> si_text(1.5e12, "FLOP/s"), si_text(6.1e-6, "s"), percent_text(0.1234), si_text(None, "B")
    ('1.50 TFLOP/s', '6.10 µs', '12.3 %', '-')
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Optional, Tuple

__all__ = ["finite", "json_safe", "ms_text", "UNKNOWN", "SI_PREFIXES", "fixed_text", "si_text", "percent_text"]

#: How every text for people writes an unknown number.
UNKNOWN = "-"

#: SI prefixes, largest first: (scale, prefix).
SI_PREFIXES: Tuple[Tuple[float, str], ...] = (
    (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""),
    (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"),
)
_TIME_PREFIXES = tuple(p for p in SI_PREFIXES if p[0] <= 1.0)  # 1,234 s, never 1.23 ks


def finite(value: Any) -> Optional[float]:
    """``value`` as a float when it is a finite real number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def json_safe(value: Any, caller: str = "to_json", path: str = "report") -> Any:
    """A copy of ``value`` that ``json.dumps(allow_nan=False)`` accepts: NaN and infinite floats
    become ``None``, numpy/torch scalars Python numbers, mapping keys strings.

    Raises:
        TypeError: a value JSON cannot encode, naming ``caller`` and where it is (``path``).
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, caller, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, caller, f"{path}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        return json_safe(item(), caller, path)
    raise TypeError(
        f"{caller}: {path} holds a {type(value).__name__}, which JSON cannot encode; "
        "expected numbers, strings, lists and dicts as report.to_dict() returns them."
    )


def ms_text(seconds: Optional[float]) -> str:
    """``seconds`` as milliseconds with three decimals (``"12.346"``), ``"-"`` when unknown."""
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


_QUANTA = (Decimal("1"), Decimal("0.1"), Decimal("0.01"))
_SCALES = (1.0, 10.0, 100.0)


def _to_fixed(x: float, places: int, grouped: bool = False) -> str:
    """``x`` rounded to ``places`` decimals as JavaScript's ``toFixed`` does (the float's exact
    value, ties away from zero), so the tab's labels and these texts never differ by a digit;
    ``grouped``: thousands separated.

    Only an exact tie rounds differently from Python's formatting (ties to even). A tie at 0-2
    places is a multiple of 1/8, whose product with 1, 10 or 100 is exact, so the test below
    finds every one (a non-tie it flags merely takes the exact path too)."""
    if (abs(x) * _SCALES[places]) % 1.0 != 0.5:
        return format(x, f",.{places}f" if grouped else f".{places}f")
    exact = Decimal(x).quantize(_QUANTA[places], rounding=ROUND_HALF_UP)
    return f"{exact:,}" if grouped else str(exact)


def fixed_text(x: float) -> str:
    """``x`` with three figures or more: ``"1,234"`` (100 and above: whole, thousands
    separated), ``"12.3"``, ``"1.23"``; ``"0"`` for zero."""
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return _to_fixed(x, 0, grouped=True)
    return _to_fixed(x, 1 if a >= 10 else 2)


def si_text(value: Any, unit: str, significant: Optional[int] = None) -> str:
    """``value`` in ``unit`` with an SI prefix: ``si_text(1.5e12, "FLOP/s")`` is
    ``"1.50 TFLOP/s"``, ``si_text(6.1e-6, "s")`` ``"6.10 µs"`` (seconds never take a prefix
    above one: ``"1,234 s"``); ``"0 B"`` for zero; :data:`UNKNOWN` when not a finite number.
    ``significant``: that many significant digits instead of :func:`fixed_text`'s figures
    (``"~6 µs"`` style approximate figures: ``significant=2``)."""
    v = finite(value)
    if v is None:
        return UNKNOWN
    if v == 0:
        return f"0 {unit}"
    if significant:  # round first, so 999.4 µs at 2 digits reads "1 ms", not "1e+03 µs"
        v = float(f"{v:.{significant}g}")
    for scale, prefix in _TIME_PREFIXES if unit == "s" else SI_PREFIXES:
        if abs(v) >= scale * 0.9995:
            x = v / scale
            return f"{x:.{significant}g} {prefix}{unit}" if significant else f"{fixed_text(x)} {prefix}{unit}"
    return f"{v:.2e} {unit}"


def percent_text(share: Any, sign: bool = True) -> str:
    """A 0-1 share as a percentage: ``"12.3 %"`` (``sign=False``: ``"12.3"``, for a column
    whose header says %); :data:`UNKNOWN` when not a finite number."""
    v = finite(share)
    if v is None:
        return UNKNOWN
    text = _to_fixed(100.0 * v, 1)
    return f"{text} %" if sign else text

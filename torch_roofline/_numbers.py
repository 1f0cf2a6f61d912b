"""Numbers as reports keep and show them: one place for each rule.

* :func:`finite`: a value as a float when it is a finite real number, else ``None`` (an
  unknown is ``None`` everywhere: JSON ``null``, never NaN);
* :func:`json_safe`: a copy of a report's dict that ``json.dumps(allow_nan=False)`` accepts
  (NaN and infinities as ``None``, numpy/torch scalars as Python numbers);
* :func:`ms_text`: seconds as milliseconds for a table column (``"12.345"``; ``"-"`` unknown).

Example::

    >>> finite(float("nan")), finite(2), ms_text(0.0123456), ms_text(None)
    (None, 2.0, '12.346', '-')
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

__all__ = ["finite", "json_safe", "ms_text"]


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

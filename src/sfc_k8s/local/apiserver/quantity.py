"""Kubernetes quantities (`100k`, `250m`, `1.5Gi`, `2e3`) as integers of thousandths.

The HPA reads metric values and targets as quantities and writes its status with them; the
admission code, the HPA algorithm and the `kubectl get hpa` columns call `parse_milli()` and
`format_milli()`. Values are kept in thousandths ("milli-units") as the Kubernetes HPA does, so
that `250m` packets/s and `180k` packets/s compare exactly.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_DECIMAL_SUFFIXES = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY_RE = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE])?$"
)
_FORMAT_SUFFIXES = ("", "k", "M", "G", "T", "P", "E")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_milli(text: str | int | float) -> int:
    """The quantity in thousandths, rounded up as Kubernetes' `MilliValue()` does."""
    if isinstance(text, bool):
        raise QuantityError(f"quantity {text!r} is not a number")
    if isinstance(text, int | float):
        text = str(text)
    match = _QUANTITY_RE.match(text.strip())
    if match is None:
        raise QuantityError(
            f"quantity {text!r} does not match the expected form (a number with an optional "
            "suffix such as 100k, 250m, 1Gi or 2e3)"
        )
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation as err:  # the pattern admits only decimal numbers
        raise QuantityError(f"quantity {text!r} is not a number") from err
    if suffix in _BINARY_SUFFIXES:
        value *= Decimal(2) ** _BINARY_SUFFIXES[suffix]
    elif suffix[:1] in ("e", "E") and len(suffix) > 1:
        value *= Decimal(10) ** int(suffix[1:])
    else:
        value *= Decimal(10) ** _DECIMAL_SUFFIXES[suffix]
    return int((value * 1000).to_integral_value(rounding=ROUND_CEILING))


def format_milli(milli: int) -> str:
    """The canonical decimal form (`180k`, `1500m`, `2M`, `0`), as Kubernetes prints it."""
    if milli % 1000:
        return f"{milli}m"
    value = milli // 1000
    index = 0
    while value and value % 1000 == 0 and index < len(_FORMAT_SUFFIXES) - 1:
        value //= 1000
        index += 1
    return f"{value}{_FORMAT_SUFFIXES[index]}"

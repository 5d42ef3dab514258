"""The one way a USD amount is printed: fixed decimals chosen by magnitude, never exponents.

Every human-facing text (report tables, run summaries, the dry-run quote, progress lines, the
HTML report) prints money through `usd` or `amount`; JSON and CSV carry the exact amount
(`exact`) so that sums can be checked to the last digit. Pure: imports nothing from batchroute.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

# (smallest magnitude, decimals): $1 and up to the cent, cents to 4 places, then 6, then the
# store's own 12 (1e-12 USD), so that a per-token price or a tiny call never shows as 0.00.
_STEPS = ((Decimal(1), 2), (Decimal("0.01"), 4), (Decimal("0.0001"), 6), (Decimal(0), 12))


def amount(value: Decimal | int | str) -> str:
    """`value` in dollars without the sign: '1,234.50', '0.2823', '0.000456', '0.00'."""
    d = Decimal(value)
    if not d.is_finite():
        return str(d)
    if d == 0:
        return "0.00"
    places = next(p for floor, p in _STEPS if abs(d) >= floor)
    with localcontext(prec=max(28, d.adjusted() + places + 2)):  # a huge cap keeps its digits
        rounded = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return format(rounded, f",.{places}f")


def usd(value: Decimal | int | str) -> str:
    """`value` as '$1,234.50' (or '-$0.25'): `amount` with the dollar sign."""
    text = amount(value)
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def exact(value: Decimal | int | str) -> str:
    """The exact amount as plain fixed-point text (no exponent, no trailing zeros beyond two
    decimals): what JSON and CSV carry, e.g. '0.000001148945', '2.00'."""
    d = Decimal(value)
    if not d.is_finite():
        return str(d)
    text = format(d.normalize(), "f") if d else "0"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"

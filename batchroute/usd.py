"""The one way a USD amount is printed: fixed decimals chosen by magnitude, never exponents.

Every human-facing text (report tables, run summaries, the dry-run quote, progress lines, the
HTML report) prints money through `usd` or `amount`; JSON and CSV carry the exact amount
(`exact`) so that sums can be checked to the last digit. It also owns the one way an amount
is brought to the store's 12 places (`ceil_usd`: up, never down). Pure: imports nothing from
batchroute.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

USD_PLACES = Decimal("1e-12")
"""The store keeps money at 12 decimal places (DECIMAL(38,12))."""


def ceil_usd(value: Decimal) -> Decimal:
    """`value` rounded up to the store's 12 places: what the store keeps of an amount.

    A cast to DECIMAL(38,12) rounds to nearest (`0.0000000000004` → 0), so an amount with more
    decimals could be stored below the bill; rounded up here first, it never is (overcount by
    < 1e-12, never undercount). Non-finite values come back as they are (the runner judges
    them).
    """
    try:  # positional: a keyword costs the C call a third more (issue 11: twice a call)
        return value.quantize(USD_PLACES, ROUND_CEILING)
    except InvalidOperation:  # infinite, or more digits than the context's precision
        if not value.is_finite():
            return value
        with localcontext(prec=value.adjusted() + 14):
            return value.quantize(USD_PLACES, rounding=ROUND_CEILING)


# (smallest magnitude, decimals): $1 and up to the cent, cents to 4 places, then 6; below
# $0.0001, as many as three significant digits need (`$0.0000643`), so that a per-token price or
# a tiny call never shows as 0.00 and no row carries a dozen zeros.
_STEPS = ((Decimal(1), 2), (Decimal("0.01"), 4), (Decimal("0.0001"), 6))
_SIGNIFICANT = 3


def _places(d: Decimal) -> int:
    """Decimals for a nonzero amount of this magnitude."""
    return next((p for floor, p in _STEPS if abs(d) >= floor), _SIGNIFICANT - 1 - d.adjusted())


def _rounded(d: Decimal, places: int) -> Decimal:
    with localcontext(prec=max(28, d.adjusted() + places + 2)):  # a huge cap keeps its digits
        return d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def amount(value: Decimal | int | str) -> str:
    """`value` in dollars without the sign: '1,234.50', '0.2823', '0.000456', '0.0000643',
    '0.00'."""
    d = Decimal(value)
    if not d.is_finite():
        return str(d)
    if d == 0:
        return "0.00"
    places = _places(d)
    rounded = _rounded(d, places)
    if _places(rounded) < places:  # 0.999999 rounds to 1: print it as $1.00, not $1.0000
        places = _places(rounded)
        rounded = _rounded(d, places)
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

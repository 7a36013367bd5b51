"""Exact fixed-point units for prices and sizes.

Why integers: since 2026 Kalshi sends dollar strings with up to 4 (documented: up to 6) decimals and
fractional contract counts with 2 decimals. Floats would merge or split levels ("0.54" vs "0.540"),
whole cents would collapse sub-penny levels. So every typed column, table and training row holds:

* prices in **micro-dollars** (1e-6 USD): ``"0.5400"`` -> 540_000, legacy cents ``54`` -> 540_000;
* sizes in **centi-contracts** (1/100 contract): ``"10.67"`` -> 1067, legacy int ``10`` -> 1000.

A value that cannot be represented exactly (more decimals than the unit) raises ``ValueError``; the
caller keeps the raw frame and leaves the typed column null rather than rounding.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PRICE_SCALE = 1_000_000
"""Micro-dollars per dollar. 6 decimals is the most the official field docs allow."""

SIZE_SCALE = 100
"""Centi-contracts per contract. Kalshi's minimum fractional granularity is 0.01 contract."""

_PRICE_Q = Decimal(1) / PRICE_SCALE
_SIZE_Q = Decimal(1) / SIZE_SCALE


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The range of the log's and the tables' BIGINT columns (every exact value must fit)."""


def scaled_int(text: str, places: int, what: str) -> int:
    """Any decimal text ``Decimal`` accepts -> the exact int in units of ``10**-places``, within
    int64; ``ValueError`` for anything else.

    Works on the digit tuple, never on ``Decimal`` arithmetic: a 28-digit context would round
    ``"1.00000000000000000000000000001"`` to a whole unit, and ``"1e999999"`` would raise
    ``decimal.Overflow`` after building a huge integer. This is exact and cheap for any input.
    """
    if isinstance(text, str) and "_" in text:
        # Decimal("1_000") is 1000 (PEP 515), but no JSON number or exchange decimal string has
        # digit separators: refuse them, as the recorder's fast parser does.
        raise ValueError(f"{what} {text!r} is not a decimal number")
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise ValueError(f"{what} {text!r} is not a decimal number") from exc
    if not value.is_finite():
        raise ValueError(f"{what} {text!r} is not finite")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    n = len(digits)
    while n and digits[n - 1] == 0:  # trailing zeros: move them into the exponent
        n -= 1
        exponent += 1
    if n == 0:
        return 0
    shift = exponent + places
    if shift < 0:
        raise ValueError(f"{what} {text!r} has more precision than 1/{10**places}")
    if n + shift > 19:
        raise ValueError(f"{what} {text!r} is outside int64 in units of 1/{10**places}")
    scaled = int("".join(map(str, digits[:n]))) * 10**shift
    if scaled > INT64_MAX + sign:  # -2**63 is representable, +2**63 is not
        raise ValueError(f"{what} {text!r} is outside int64 in units of 1/{10**places}")
    return -scaled if sign else scaled


def _fast(text: str, places: int) -> int | None:
    """The common ``digits.digits`` shape (at most ``places`` decimals, at most 12 whole digits),
    exactly and cheaply; None for anything else, which then takes :func:`scaled_int`."""
    whole, dot, frac = text.partition(".")
    if (
        not dot
        or not frac
        or len(frac) > places
        or not 0 < len(whole) <= 12
        or not text.isascii()
        or not whole.isdigit()
        or not frac.isdigit()
    ):
        return None
    return int(whole) * 10**places + int(frac) * 10 ** (places - len(frac))


def fixed_point(text: str, places: int, what: str) -> int:
    """Decimal text -> the exact int in units of ``10**-places`` (the one exact decimal parser:
    a fast path for the shape the exchange sends, :func:`scaled_int` for everything else)."""
    value = _fast(text, places)
    return scaled_int(text, places, what) if value is None else value


_PRICE_PLACES = 6
_SIZE_PLACES = 2
assert 10**_PRICE_PLACES == PRICE_SCALE and 10**_SIZE_PLACES == SIZE_SCALE


def parse_price(value: str | int | float) -> int:
    """Dollar string (``"0.0850"``) -> micro-dollars; an ``int`` is legacy whole cents."""
    if isinstance(value, bool):
        raise ValueError(f"price {value!r} is a boolean")
    if isinstance(value, int):
        return value * (PRICE_SCALE // 100)
    if isinstance(value, float):
        raise ValueError(f"price {value!r} is a float; refusing to guess its exact value")
    return fixed_point(value, _PRICE_PLACES, "price")


def parse_size(value: str | int | float) -> int:
    """Contract count (``"10.67"`` or legacy int ``10``) -> centi-contracts."""
    if isinstance(value, bool):
        raise ValueError(f"size {value!r} is a boolean")
    if isinstance(value, int):
        return value * SIZE_SCALE
    if isinstance(value, float):
        raise ValueError(f"size {value!r} is a float; refusing to guess its exact value")
    return fixed_point(value, _SIZE_PLACES, "size")


def price_to_decimal(micros: int) -> Decimal:
    """Micro-dollars -> exact ``Decimal`` dollars (for display and NUMERIC columns)."""
    return (Decimal(micros) * _PRICE_Q).normalize()


def size_to_decimal(centi: int) -> Decimal:
    """Centi-contracts -> exact ``Decimal`` contracts."""
    return (Decimal(centi) * _SIZE_Q).normalize()

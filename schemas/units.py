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

from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow

PRICE_SCALE = 1_000_000
"""Micro-dollars per dollar. 6 decimals is the most the official field docs allow."""

SIZE_SCALE = 100
"""Centi-contracts per contract. Kalshi's minimum fractional granularity is 0.01 contract."""

_PRICE_Q = Decimal(1) / PRICE_SCALE
_SIZE_Q = Decimal(1) / SIZE_SCALE


_MAX_TEXT = 64  # longer than any exact int64 fixed-point value can be; refuse, don't compute
_CTX = Context(prec=100, Emin=-200, Emax=200, traps=[InvalidOperation, Overflow, DivisionByZero])
_INT64_MAX = 2**63 - 1


def _scaled(text: str, scale: int, what: str) -> int:
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise ValueError(f"{what} {str(text)[:_MAX_TEXT]!r} is not a short decimal string")
    try:
        value = Decimal(text)
        if not value.is_finite():
            raise ValueError(f"{what} {text!r} is not finite")
        if abs(value.adjusted()) > 30:  # beyond int64 either way; avoids huge exponents
            raise ValueError(f"{what} {text!r} is out of range")
        scaled = _CTX.multiply(value, Decimal(scale))
    except (InvalidOperation, Overflow, DivisionByZero, TypeError) as exc:
        raise ValueError(f"{what} {text!r} is not a decimal number") from exc
    if scaled != scaled.to_integral_value(context=_CTX):
        raise ValueError(f"{what} {text!r} has more precision than 1/{scale}")
    out = int(scaled)
    if abs(out) > _INT64_MAX:
        raise ValueError(f"{what} {text!r} is out of range")
    return out


def parse_price(value: str | int | float) -> int:
    """Dollar string (``"0.0850"``) -> micro-dollars; an ``int`` is legacy whole cents."""
    if isinstance(value, bool):
        raise ValueError(f"price {value!r} is a boolean")
    if isinstance(value, int):
        return value * (PRICE_SCALE // 100)
    if isinstance(value, float):
        raise ValueError(f"price {value!r} is a float; refusing to guess its exact value")
    return _scaled(value, PRICE_SCALE, "price")


def parse_size(value: str | int | float) -> int:
    """Contract count (``"10.67"`` or legacy int ``10``) -> centi-contracts."""
    if isinstance(value, bool):
        raise ValueError(f"size {value!r} is a boolean")
    if isinstance(value, int):
        return value * SIZE_SCALE
    if isinstance(value, float):
        raise ValueError(f"size {value!r} is a float; refusing to guess its exact value")
    return _scaled(value, SIZE_SCALE, "size")


def price_to_decimal(micros: int) -> Decimal:
    """Micro-dollars -> exact ``Decimal`` dollars (for display and NUMERIC columns)."""
    return (Decimal(micros) * _PRICE_Q).normalize()


def size_to_decimal(centi: int) -> Decimal:
    """Centi-contracts -> exact ``Decimal`` contracts."""
    return (Decimal(centi) * _SIZE_Q).normalize()

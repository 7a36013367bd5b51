"""True order books and their wire encodings (current fixed-point and legacy integer formats).

Prices are integers in units of $0.0001 ("pips", so "0.4500" is 4500) and sizes integers in
units of 0.01 contract, because the exchange's grid is decimal: floats would make "0.54" and
"0.540" two levels. Only the encoders produce strings, with exactly 4 price decimals and 2 size
decimals as the current exchange does (docs/protocol.md §4).
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.units import PRICE_SCALE, SIZE_SCALE, parse_price, parse_size

PIPS_PER_DOLLAR = 10_000
PIPS_PER_CENT = 100
MICROS_PER_PIP = PRICE_SCALE // PIPS_PER_DOLLAR
assert SIZE_SCALE == 100  # sizes here are hundredths of a contract: schemas.units' centi-contracts

# Price grids by price_level_structure (sub-penny tick grids, docs/protocol.md §4). NO bids use
# the same grid mirrored (1 - p), and every grid here is symmetric, so one tuple serves both.
_CENT = tuple(range(100, 10_000, 100))
_DECI = tuple(range(10, 10_000, 10))
_TAPERED = (
    tuple(range(10, 1_000, 10)) + tuple(range(1_000, 9_001, 100)) + tuple(range(9_010, 10_000, 10))
)
GRIDS: dict[str, tuple[int, ...]] = {
    "linear_cent": _CENT,
    "deci_cent": _DECI,
    "tapered_deci_cent": _TAPERED,
}
PRICE_RANGES: dict[str, list[dict[str, str]]] = {
    "linear_cent": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
    "deci_cent": [{"start": "0.0000", "end": "1.0000", "step": "0.0010"}],
    "tapered_deci_cent": [
        {"start": "0.0000", "end": "0.1000", "step": "0.0010"},
        {"start": "0.1000", "end": "0.9000", "step": "0.0100"},
        {"start": "0.9000", "end": "1.0000", "step": "0.0010"},
    ],
}


def to_pips(price: str | int) -> int:
    """A dollar string ("0.4500") or int cents (45), parsed exactly by ``schemas.units``."""
    micros = parse_price(price)
    if micros % MICROS_PER_PIP:
        raise ValueError(f"price {price!r} is finer than the simulator's grid; use 4 decimals")
    return micros // MICROS_PER_PIP


def to_hundredths(size: str | int) -> int:
    """A contract count ("10.00", "-2.5", 10), parsed exactly by ``schemas.units``."""
    return parse_size(size)


# price_str and size_str are schemas.wire's format_price/format_size for the simulator's units, at
# twice their speed (every delta frame is built with them); tests/simulator/test_units.py pins
# them to those.


def price_str(p: int) -> str:
    """4-decimal dollar string of a price in pips ("0.4500")."""
    return f"{p // 10_000}.{p % 10_000:04d}"


def size_str(s: int) -> str:
    """2-decimal signed contract string of a size in hundredths ("-33.00")."""
    if s < 0:
        s = -s
        return f"-{s // 100}.{s % 100:02d}"
    return f"{s // 100}.{s % 100:02d}"


class Book:
    """One market's resting bids: side -> {price_pips: size_hundredths}."""

    __slots__ = ("no", "yes")

    def __init__(self) -> None:
        self.yes: dict[int, int] = {}
        self.no: dict[int, int] = {}

    def side(self, side: str) -> dict[int, int]:
        return self.yes if side == "yes" else self.no

    def apply(self, side: str, price: int, delta: int) -> int:
        """Apply a signed change; return the new level size (0 = level removed)."""
        levels = self.yes if side == "yes" else self.no
        new = levels.get(price, 0) + delta
        if new < 0:
            raise ValueError(f"level {side}@{price} would go negative ({new})")
        if new == 0:
            levels.pop(price, None)
        else:
            levels[price] = new
        return new

    def clear_deltas(self) -> list[tuple[str, int, int]]:
        """The negative deltas that empty the book (used when resting orders are cancelled)."""
        out = [("yes", p, -s) for p, s in sorted(self.yes.items())]
        out += [("no", p, -s) for p, s in sorted(self.no.items())]
        return out

    def levels(self, side: str) -> list[tuple[int, int]]:
        """Ascending (price, size) list, the order every stored example uses."""
        return sorted(self.side(side).items())

    def best(self, side: str) -> int | None:
        levels = self.side(side)
        return max(levels) if levels else None


def fp_levels(levels: Iterable[tuple[int, int]]) -> list[list[str]]:
    return [[price_str(p), size_str(s)] for p, s in levels]


def legacy_cents(levels: Iterable[tuple[int, int]]) -> list[list[int]]:
    return [[p // PIPS_PER_CENT, s // 100] for p, s in levels]


def legacy_dollars(levels: Iterable[tuple[int, int]]) -> list[list[str | int]]:
    return [[price_str(p), s // 100] for p, s in levels]

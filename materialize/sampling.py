"""Which book updates become training rows: the phase of a market's life and the middle sampling.

Pure (no I/O, no clock): the same inputs and seed always give the same rows.

**Life.** ``open`` = the ``open_ts`` of the market's ``created`` event (fallback: the receive time
of that event); ``end`` = the determination time (``determination_ts`` of the ``determined``
event, else the last ``close_ts`` known at determination, else the receive time of ``determined``).
Life fraction ``f = (t - open) / (end - open)``, ``t`` = the update's receive time.

**Phases** (:class:`PhasePolicy`, recorded in the manifest), decided with exact integer
arithmetic on nanoseconds (no float rounding at the boundaries): ``pre_open`` (t < open: the market
exists but does not trade yet; kept, every update), ``early`` (every update), ``middle`` (sampled),
``late`` (every update; updates after ``end`` but before the ``determined`` frame arrived stay
``late``). Three policies, per the specification's two rules:

* ``fractions`` (default, "full data for first/last 20%"): early while ``f < early_fraction``,
  late once ``f >= 1 - late_fraction``;
* ``absolute`` ("first hour (price discovery) and last 6 hours (settlement urgency)"): early while
  ``t - open < first_hours``, late once ``end - t <= last_hours``;
* ``union``: early or late if either rule says so (a short life is then all early/late).

Early wins where both hold. Each policy reduces to two per-market instants, ``early_until``
(exclusive) and ``late_from`` (inclusive), computed with Python integers and exact fractions
(:func:`phase_cuts`), so the vectorised rule only compares times and never overflows.

**Middle rule** (seeded, configurable): one row per interval of ``middle_every_s`` seconds, the
*last* valid book state in that interval (what an agent acting on a fixed clock would have seen at
the interval's end). The interval grid starts at ``open`` shifted by a per-market offset drawn
uniformly from ``[0, middle_every_s)``, seeded by ``(seed, session_id, market_ticker)`` via
BLAKE2b so it is stable across processes, Python versions and incremental builds, and two markets
do not share one grid. Same seed -> same rows; another seed moves the grid.

Note: ``end`` is future knowledge at time ``t``; phase and life fraction are therefore sampling
metadata / label-like columns, not features (see ``materialize.training``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction
from typing import Literal

import polars as pl

EARLY_NUM, EARLY_DEN = 1, 5
"""f < 1/5: the first 20% of life (price discovery), every update kept."""
LATE_NUM, LATE_DEN = 4, 5
"""f >= 4/5: the last 20% (settlement urgency), every update kept."""

PhaseKind = Literal["fractions", "absolute", "union"]
PHASE_KINDS: tuple[str, ...] = ("fractions", "absolute", "union")
NS_PER_HOUR = 3_600 * 1_000_000_000


def exact(value: float | str | Fraction | Decimal) -> Fraction:
    """The decimal the user wrote, exactly (``0.2`` is 1/5, not the nearest binary float)."""
    if isinstance(value, Fraction):
        return value
    try:
        return Fraction(Decimal(str(value)))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not a number: {value!r}") from exc


@dataclass(frozen=True, slots=True)
class PhasePolicy:
    """Where a market's life is kept in full: see the module docstring."""

    kind: PhaseKind = "fractions"
    early_fraction: Fraction = Fraction(EARLY_NUM, EARLY_DEN)
    late_fraction: Fraction = Fraction(LATE_DEN - LATE_NUM, LATE_DEN)
    first_hours: Fraction = Fraction(1)
    last_hours: Fraction = Fraction(6)

    def __post_init__(self) -> None:
        if self.kind not in PHASE_KINDS:
            raise ValueError(f"phase policy must be one of {', '.join(PHASE_KINDS)}")
        for name in ("early_fraction", "late_fraction"):
            v = exact(getattr(self, name))
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be within 0..1, got {float(v)}")
            object.__setattr__(self, name, v)
        for name in ("first_hours", "last_hours"):
            v = exact(getattr(self, name))
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {float(v)}")
            object.__setattr__(self, name, v)

    @property
    def first_ns(self) -> int:
        return int(self.first_hours * NS_PER_HOUR)

    @property
    def last_ns(self) -> int:
        return int(self.last_hours * NS_PER_HOUR)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"phase_policy": self.kind}
        if self.kind in ("fractions", "union"):
            out["early_fraction"] = str(self.early_fraction)
            out["late_fraction"] = str(self.late_fraction)
        if self.kind in ("absolute", "union"):
            out["first_hours"] = str(self.first_hours)
            out["last_hours"] = str(self.last_hours)
        return out


def _ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def phase_cuts(open_ns: int, end_ns: int, policy: PhasePolicy) -> tuple[int, int]:
    """``(early_until, late_from)``: early is ``open <= t < early_until``, late ``t >= late_from``
    (unless early). Exact: ``f < e`` for integer ``t`` is ``t - open < ceil(e * life)``."""
    life = end_ns - open_ns
    frac = (
        open_ns + _ceil(policy.early_fraction * life),
        open_ns + _ceil((1 - policy.late_fraction) * life),
    )
    absolute = (open_ns + policy.first_ns, end_ns - policy.last_ns)
    if policy.kind == "fractions":
        return frac
    if policy.kind == "absolute":
        return absolute
    return max(frac[0], absolute[0]), min(frac[1], absolute[1])


class Phase(StrEnum):
    """Where in its life a book state is: the training rows' ``phase`` column."""

    PRE_OPEN = "pre_open"
    EARLY = "early"
    MIDDLE = "middle"
    LATE = "late"


RULE_NAME = "last_state_per_interval_seeded_grid"


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    """The middle-phase rule and its parameters, recorded in every build's manifest."""

    seed: int = 0
    middle_every_s: float = 1.0
    phases: PhasePolicy = PhasePolicy()

    def __post_init__(self) -> None:
        if not self.middle_every_s > 0:
            raise ValueError(f"middle_every_s must be > 0, got {self.middle_every_s}")

    @property
    def every_ns(self) -> int:
        return max(1, round(self.middle_every_s * 1_000_000_000))

    def describe(self) -> dict[str, object]:
        return {
            "rule": RULE_NAME,
            "seed": self.seed,
            "middle_every_s": self.middle_every_s,
            **self.phases.describe(),
            "pre_open": "kept, every update",
        }


def grid_offset_ns(policy: SamplingPolicy, session_id: int, market_ticker: str) -> int:
    """Per-market shift of the middle interval grid, uniform in ``[0, every_ns)``."""
    digest = hashlib.blake2b(
        f"{policy.seed}\x00{session_id}\x00{market_ticker}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % policy.every_ns


def phase_expr(t: pl.Expr, open_ns: pl.Expr, early_until: pl.Expr, late_from: pl.Expr) -> pl.Expr:
    """Phase as a polars expression over the per-market :func:`phase_cuts` (exact comparisons);
    ``tests/support/oracles.py`` holds the scalar definition it is tested against."""
    return (
        pl.when(t < open_ns)
        .then(pl.lit(Phase.PRE_OPEN))
        .when(t < early_until)
        .then(pl.lit(Phase.EARLY))
        .when(t < late_from)
        .then(pl.lit(Phase.MIDDLE))
        .otherwise(pl.lit(Phase.LATE))
    )


def interval_expr(t: pl.Expr, open_ns: pl.Expr, offset_ns: pl.Expr, every_ns: int) -> pl.Expr:
    """Index of the middle-phase interval holding ``t`` on the market's shifted grid."""
    return (t - open_ns - offset_ns) // every_ns


def keep_expr(*, market: str, phase: str, interval: str, order: str) -> pl.Expr:
    """True for rows kept: every non-middle row, and the middle row with the greatest ``order``
    in each (market, interval). Apply to valid book states only."""
    middle = pl.col(phase) == Phase.MIDDLE
    last = pl.col(order).filter(middle).max().over(market, interval)
    return ~middle | (pl.col(order) == last)

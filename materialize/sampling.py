"""Which book updates become training rows: the phase of a market's life and the middle sampling.

Pure (no I/O, no clock): the same inputs and seed always give the same rows.

**Life.** ``open`` = the ``open_ts`` of the market's ``created`` event (fallback: the receive time
of that event); ``end`` = the determination time (``determination_ts`` of the ``determined``
event, else the last ``close_ts`` known at determination, else the receive time of ``determined``).
Life fraction ``f = (t - open) / (end - open)``, ``t`` = the update's receive time.

**Phases**, decided with exact integer arithmetic on nanoseconds (no float rounding at the
boundaries): ``pre_open`` (t < open: the market exists but does not trade yet; kept, every update),
``early`` (0 <= f < 0.2, every update), ``middle`` (0.2 <= f < 0.8, sampled), ``late`` (f >= 0.8,
every update; updates after ``end`` but before the ``determined`` frame arrived have f > 1 and
stay ``late``).

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

import polars as pl

EARLY_NUM, EARLY_DEN = 1, 5
"""f < 1/5: the first 20% of life (price discovery), every update kept."""
LATE_NUM, LATE_DEN = 4, 5
"""f >= 4/5: the last 20% (settlement urgency), every update kept."""

PHASE_PRE_OPEN = "pre_open"
PHASE_EARLY = "early"
PHASE_MIDDLE = "middle"
PHASE_LATE = "late"

RULE_NAME = "last_state_per_interval_seeded_grid"


@dataclass(frozen=True, slots=True)
class SamplingPolicy:
    """The middle-phase rule and its parameters, recorded in every build's manifest."""

    seed: int = 0
    middle_every_s: float = 1.0

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
            "early_fraction": EARLY_NUM / EARLY_DEN,
            "late_fraction": LATE_NUM / LATE_DEN,
            "pre_open": "kept, every update",
        }


def grid_offset_ns(policy: SamplingPolicy, session_id: int, market_ticker: str) -> int:
    """Per-market shift of the middle interval grid, uniform in ``[0, every_ns)``."""
    digest = hashlib.blake2b(
        f"{policy.seed}\x00{session_id}\x00{market_ticker}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % policy.every_ns


def phase_of(t_ns: int, open_ns: int, end_ns: int) -> str:
    """Reference (scalar) phase of an update at ``t_ns``; ``phase_expr`` is the vectorised twin."""
    life = end_ns - open_ns
    since = t_ns - open_ns
    if since < 0:
        return PHASE_PRE_OPEN
    if EARLY_DEN * since < EARLY_NUM * life:
        return PHASE_EARLY
    if LATE_DEN * since < LATE_NUM * life:
        return PHASE_MIDDLE
    return PHASE_LATE


def phase_expr(t: pl.Expr, open_ns: pl.Expr, end_ns: pl.Expr) -> pl.Expr:
    """Phase as a polars expression (exact integer comparisons, as ``phase_of``)."""
    life = end_ns - open_ns
    since = t - open_ns
    return (
        pl.when(since < 0)
        .then(pl.lit(PHASE_PRE_OPEN))
        .when(since * EARLY_DEN < life * EARLY_NUM)
        .then(pl.lit(PHASE_EARLY))
        .when(since * LATE_DEN < life * LATE_NUM)
        .then(pl.lit(PHASE_MIDDLE))
        .otherwise(pl.lit(PHASE_LATE))
    )


def interval_expr(t: pl.Expr, open_ns: pl.Expr, offset_ns: pl.Expr, every_ns: int) -> pl.Expr:
    """Index of the middle-phase interval holding ``t`` on the market's shifted grid."""
    return (t - open_ns - offset_ns) // every_ns


def keep_expr(*, market: str, phase: str, interval: str, order: str) -> pl.Expr:
    """True for rows kept: every non-middle row, and the middle row with the greatest ``order``
    in each (market, interval). Apply to valid book states only."""
    middle = pl.col(phase) == PHASE_MIDDLE
    last = pl.col(order).filter(middle).max().over(market, interval)
    return ~middle | (pl.col(order) == last)


def sample_reference(
    times_ns: list[int], open_ns: int, end_ns: int, offset_ns: int, every_ns: int
) -> list[int]:
    """Reference (scalar) rule for one market: indices of the kept updates, in order."""
    kept: list[int] = []
    last_by_interval: dict[int, int] = {}
    for i, t in enumerate(times_ns):
        if phase_of(t, open_ns, end_ns) == PHASE_MIDDLE:
            last_by_interval[(t - open_ns - offset_ns) // every_ns] = i
        else:
            kept.append(i)
    kept.extend(last_by_interval.values())
    return sorted(kept)

"""Equivalence oracles: slow, obviously-right versions of the production rules, for tests only.

The book replay's oracle (the previous implementation) lives in ``bench/book_replay_reference.py``
because the benchmark measures it too (``bench/`` never imports ``tests/``); it is re-exported here.
"""

from __future__ import annotations

from fractions import Fraction

from bench.book_replay_reference import replay_reference
from materialize.book_replay import Levels
from materialize.sampling import Phase, PhasePolicy

__all__ = ["naive_top", "phase_of", "replay_reference", "sample_reference"]


def naive_top(levels: Levels, top_n: int) -> list[tuple[int, int]]:
    """The N best (highest-price) levels of one side, best first."""
    return sorted(((p, s) for p, s in levels.items() if s > 0), reverse=True)[:top_n]


def phase_of(t_ns: int, open_ns: int, end_ns: int, policy: PhasePolicy | None = None) -> str:
    """The phase of an update at ``t_ns``, straight from the policy's definition with exact
    fractions (``materialize.sampling.phase_expr`` over ``phase_cuts`` is the production twin)."""
    policy = policy or PhasePolicy()
    since = t_ns - open_ns
    if since < 0:
        return Phase.PRE_OPEN
    life = end_ns - open_ns
    f = Fraction(since, life) if life > 0 else Fraction(0)
    frac_early = f < policy.early_fraction if life > 0 else since < 0
    frac_late = f >= 1 - policy.late_fraction if life > 0 else True
    abs_early = since < policy.first_ns
    abs_late = end_ns - t_ns <= policy.last_ns
    if policy.kind == "fractions":
        early, late = frac_early, frac_late
    elif policy.kind == "absolute":
        early, late = abs_early, abs_late
    else:
        early, late = frac_early or abs_early, frac_late or abs_late
    if early:
        return Phase.EARLY
    return Phase.LATE if late else Phase.MIDDLE


def sample_reference(
    times_ns: list[int],
    open_ns: int,
    end_ns: int,
    offset_ns: int,
    every_ns: int,
    policy: PhasePolicy | None = None,
) -> list[int]:
    """The sampling rule for one market, scalar: indices of the kept updates, in order."""
    kept: list[int] = []
    last_by_interval: dict[int, int] = {}
    for i, t in enumerate(times_ns):
        if phase_of(t, open_ns, end_ns, policy) == Phase.MIDDLE:
            last_by_interval[(t - open_ns - offset_ns) // every_ns] = i
        else:
            kept.append(i)
    kept.extend(last_by_interval.values())
    return sorted(kept)

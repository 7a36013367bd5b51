"""Book-replay inputs written as event lists, for the replay tests (the one place that turns
events into ``ReplayInput`` columns).

An event is ``(Act.SNAPSHOT, yes_levels, no_levels)`` or ``(act, is_yes, price, delta)``; a bare
``(act,)`` (skip, invalid, probe) has no level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from materialize.book_replay import Act, ReplayInput

Event = tuple[Any, ...]


def replay_input(events: Sequence[Event]) -> ReplayInput:
    """The replay's columns for ``events``, in order (a snapshot's level fields are zero)."""
    levels = [(False, 0, 0) if e[0] == Act.SNAPSHOT else (*e[1:], False, 0, 0)[:3] for e in events]
    return ReplayInput(
        act=[e[0] for e in events],
        is_yes=[bool(lv[0]) for lv in levels],
        price=[lv[1] for lv in levels],
        delta=[lv[2] for lv in levels],
        snapshots={i: (e[1], e[2]) for i, e in enumerate(events) if e[0] == Act.SNAPSHOT},
    )

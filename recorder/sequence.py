"""Per-sid sequence tracking for one WebSocket connection, pure and I/O-free.

``seq`` is per subscription (sid) and shared by every market of that sid (docs/protocol.md §5).
Data frames are checked for contiguity; ``ok``/``unsubscribed`` replies that carry a seq either
consume a value or echo the last one (disputed), so the single rule ``last = max(last, seq)``
covers both and never reports a gap. Nothing is ever dropped here: the verdict only tells the
caller what to record (gap, stale) and when to resync.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SeqStatus(Enum):
    """What a data frame's seq means for its sid."""

    FIRST = "first"
    """No anchor yet (new sid, or after ``forget``/``reset``): anchored on this seq."""
    OK = "ok"
    """Exactly last + 1."""
    GAP = "gap"
    """Skipped ahead: ``expected`` .. ``got - 1`` were missed. Re-anchored on ``got``."""
    STALE = "stale"
    """Old or duplicate (``got <= last``): still recorded; ``last`` is not moved back."""


@dataclass(frozen=True, slots=True)
class SeqVerdict:
    """The verdict on one data frame; ``OK`` and ``FIRST`` are shared instances (no allocation)."""

    status: SeqStatus
    expected: int | None = None  # GAP: the seq that should have come
    got: int | None = None  # GAP, STALE: the seq that came
    last: int | None = None  # STALE: the sid's last seq

    @property
    def is_gap(self) -> bool:
        return self.status is SeqStatus.GAP

    @property
    def is_stale(self) -> bool:
        return self.status is SeqStatus.STALE


FIRST = SeqVerdict(SeqStatus.FIRST)
OK = SeqVerdict(SeqStatus.OK)


class SeqTracker:
    """Last seq per sid on one connection. Frames without a seq (lifecycle when absent) are not
    passed here at all."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def on_data(self, sid: int, seq: int) -> SeqVerdict:
        """Check a data frame (snapshot, delta, trade, sequenced lifecycle) and advance."""
        last = self._last.get(sid)
        if last is None:
            self._last[sid] = seq
            return FIRST
        if seq == last + 1:
            self._last[sid] = seq
            return OK
        if seq > last:
            self._last[sid] = seq
            return SeqVerdict(SeqStatus.GAP, expected=last + 1, got=seq)
        return SeqVerdict(SeqStatus.STALE, got=seq, last=last)

    def on_reply(self, sid: int, seq: int) -> SeqVerdict:
        """A reply (``ok``/``unsubscribed``) carrying ``sid``+``seq``: ``last = max(last, seq)``.

        Whether a reply consumes a seq value (``last + 1``) or echoes the last one (``last``) is
        disputed, so neither is a gap; anything beyond ``last + 1`` is one under both readings
        (a data frame lost just before the reply, which would otherwise go unnoticed).
        A sid with no anchor stays unanchored: its first data frame is still ``FIRST``, so an
        early reply can never create a false gap.
        """
        last = self._last.get(sid)
        if last is None or seq <= last:
            return OK
        self._last[sid] = seq
        if seq > last + 1:
            return SeqVerdict(SeqStatus.GAP, expected=last + 1, got=seq)
        return OK

    def last(self, sid: int) -> int | None:
        """The sid's last seq, or None if it has no anchor."""
        return self._last.get(sid)

    def forget(self, sid: int) -> None:
        """Drop a sid (unsubscribed, or to re-anchor on its next snapshot)."""
        self._last.pop(sid, None)

    def reset(self) -> None:
        """Forget every sid (reconnect: new sids, new seqs)."""
        self._last.clear()

    def sids(self) -> list[int]:
        """Sids that have an anchor."""
        return list(self._last)

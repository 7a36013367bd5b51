"""Typed events a ``feed.Client`` yields, live tap or replay alike.

Why a fixed vocabulary: the paper-trading harness, notebooks and tests all consume the tap through
these classes, so they never parse Kalshi's wire format or the extra channel themselves. Every
price is an int in micro-dollars and every size an int in centi-contracts (``schemas.units``):
never a float, never whole cents.

``record_seq`` is the recorder session's total order (``schemas.log``): each event carries the
``record_seq`` of the log record it came from, so a consumer can tell exactly where in the session
it is and prove (with ``RecordMark``) that it saw everything up to a point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.lifecycle import LifecycleFields
from schemas.units import PRICE_SCALE

Level = tuple[int, int]
"""One book level: (price in micro-dollars, size in centi-contracts)."""


def best_price(bids: Sequence[Level], ask: bool = False) -> int | None:
    """The best price of one side's levels listed best first (as every book view here lists
    them), None for an empty side. ``ask``: the other side's best ask instead, since a bid at p
    on one side is an ask at $1 - p on the other (``schemas.units.PRICE_SCALE`` micro-dollars)."""
    if not bids:
        return None
    return PRICE_SCALE - bids[0][0] if ask else bids[0][0]


STATUS_CHANNEL = "recorder_status"
"""The tap's extra channel (``docs/tap-protocol.md``); a plain Kalshi client never asks for it."""


class StatusMessage(StrEnum):
    """Message types of the extra channel (``docs/tap-protocol.md``): what the tap's state and
    fan-out send and the client reads, named once."""

    HELLO = "tap_hello"
    MARKET = "tap_market"
    BOOK_STATE = "tap_book_state"
    MARK = "tap_mark"
    LAGGED = "tap_lagged"
    SESSION_END = "tap_session_end"


class Validity(StrEnum):
    """Whether a market's book on the tap is the true book: seq is tracked per sid and a gap is
    resynced (ARCHITECTURE.md, Invariants)."""

    VALID = "valid"
    """Anchored on a snapshot and every delta since applied in seq order."""
    RESYNCING = "resyncing"
    """A seq gap (or an impossible book) made it untrustworthy; a fresh snapshot is awaited."""
    UNANCHORED = "unanchored"
    """No snapshot seen yet (just joined, or the recorder has not opened its book)."""


@dataclass(frozen=True, slots=True)
class Hello:
    """First message of every connection: which session this is, live or replayed."""

    protocol: str
    """Version of the extra channel's protocol (``docs/tap-protocol.md``), e.g. ``"1"``."""
    session_id: int
    mode: str
    """``"live"`` or ``"replay"``."""
    settings: dict[str, Any]
    """The recorder's settings as recorded in its ``session_start`` record (never a secret)."""
    wire_format: str
    """``"current"`` (``*_dollars_fp``) or ``"legacy"`` (integer cents), as recorded."""
    record_seq: int
    """Last record_seq the tap had processed when this consumer connected (0 = none)."""


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """A market's book after a snapshot or a delta.

    ``yes``/``no`` are the top ``depth`` bid levels of each side, best (highest price) first.
    A NO bid at p is a YES ask at 1 - p: ``best_yes_ask`` is computed that way.
    """

    market_ticker: str
    record_seq: int | None
    """record_seq of the frame this update came from (None if the server did not say)."""
    is_snapshot: bool
    valid: bool
    """False while the tap says the book is not valid (resyncing or unanchored)."""
    yes: tuple[Level, ...]
    no: tuple[Level, ...]
    ts_ms: int | None = None
    """Exchange timestamp of the delta (ms), when the frame had one."""
    side: str | None = None
    """For a delta: the side, price (micro-dollars) and signed size change (centi-contracts)."""
    price: int | None = None
    delta: int | None = None

    @property
    def best_yes_bid(self) -> int | None:
        return best_price(self.yes)

    @property
    def best_no_bid(self) -> int | None:
        return best_price(self.no)

    @property
    def best_yes_ask(self) -> int | None:
        return best_price(self.no, ask=True)

    @property
    def best_no_ask(self) -> int | None:
        return best_price(self.yes, ask=True)


@dataclass(frozen=True, slots=True)
class LifecycleEvent(LifecycleFields):
    """A message of the lifecycle channel (``schemas.wire.LIFECYCLE_CHANNEL_MSG_TYPES``) as the
    recorder received it: the typed fields (``schemas.lifecycle.LifecycleFields``, keyword-only)
    + the raw msg. ``event_type`` is the frame type when the message has none
    (``event_fee_update``)."""

    market_ticker: str
    event_type: str
    record_seq: int | None = None
    """None when the notice came from no log record (the Gymnasium env's own notices)."""
    msg: dict[str, Any] = field(default_factory=dict)
    """The message's ``msg`` object verbatim."""


@dataclass(frozen=True, slots=True)
class ValidityChange:
    """The tap says a market's book changed validity (extra channel ``tap_book_state``)."""

    market_ticker: str
    state: Validity
    reason: str
    """``"snapshot"``, ``"gap"``, ``"resync"``, ``"joined"``, ``"left"``, ``"anomaly"``, ..."""
    record_seq: int | None


@dataclass(frozen=True, slots=True)
class Membership:
    """A market joined, left or was skipped by the recorder (extra channel ``tap_market``)."""

    market_ticker: str
    reason: str
    record_seq: int
    payload: dict[str, Any] = field(default_factory=dict)
    """The recorder's decision payload, verbatim."""


@dataclass(frozen=True, slots=True)
class MarketJoined(Membership):
    """The recorder joined a market (it opens its book)."""

    mid_lifecycle: bool = False


@dataclass(frozen=True, slots=True)
class MarketLeft(Membership):
    """The recorder left a market (determined, gone, shutdown)."""


@dataclass(frozen=True, slots=True)
class MarketSkipped(Membership):
    """The recorder saw a market but does not record its book (filtered, shard, already open)."""


@dataclass(frozen=True, slots=True)
class RecordMark:
    """The tap had processed every record up to ``record_seq`` when it sent this.

    Every event the consumer was due up to that point arrived before this mark (in order).
    """

    record_seq: int


@dataclass(frozen=True, slots=True)
class Lagged:
    """The consumer read too slowly: ``dropped`` queued messages were discarded. Fresh snapshots of
    every subscribed market follow, and books are invalid until each arrives."""

    dropped: int
    record_seq: int


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The recorded session ended (live: the recorder stopped; replay: end of the data)."""

    reason: str
    record_seq: int


FeedEvent = (
    Hello
    | BookUpdate
    | LifecycleEvent
    | ValidityChange
    | MarketJoined
    | MarketLeft
    | MarketSkipped
    | RecordMark
    | Lagged
    | SessionEnded
)
"""Everything ``feed.Client`` yields."""

__all__ = [
    "STATUS_CHANNEL",
    "BookUpdate",
    "FeedEvent",
    "Hello",
    "Lagged",
    "Level",
    "LifecycleEvent",
    "MarketJoined",
    "MarketLeft",
    "MarketSkipped",
    "Membership",
    "RecordMark",
    "SessionEnded",
    "StatusMessage",
    "Validity",
    "ValidityChange",
    "best_price",
]

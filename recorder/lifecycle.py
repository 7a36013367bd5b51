"""The lifecycle state machine: which markets join and leave the session, and why (pure).

The lifecycle rules (ARCHITECTURE.md, Invariants) and issue 4: ``created`` joins a wanted market,
``determined`` leaves it, everything else (``settled``, ``activated``, ``deactivated``,
``close_date_updated``, unknown types) is only recorded — the caller records *every* lifecycle frame
before asking this module anything, so "no action" never means "lost". Duplicates are harmless and
events for markets this session never joined are ignored here.

Three more inputs cover what the WebSocket feed cannot tell us (docs/protocol.md §8, §9: lifecycle
events can be missed, opens and closes are silent):

* ``adopt`` — ``--adopt-open-markets``: markets already open at start, joined mid-lifecycle;
* ``reconcile`` — after a reconnect, REST says what happened while we were deaf;
* ``rest_discovery`` — the rollback mode that polls REST instead of listening to the feed.

Actions are returned, never executed: the shell turns ``Join``/``Leave`` into subscription changes
and ``market_joined``/``market_left``/``market_skipped`` decision records (``record()`` gives the
typed decision declared in ``schemas.decisions``).
"""

from __future__ import annotations

import calendar
import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, cast

from recorder.selection import MarketFilter
from schemas.decisions import (
    DecisionPayload,
    JoinReason,
    LeaveReason,
    MarketJoined,
    MarketLeft,
    MarketSkipped,
    SkipReason,
)

# REST `status` vocabularies (docs/protocol.md §8): the current one and the older / filter words.
PRE_OPEN_STATUSES = frozenset({"initialized", "unopened"})
OPEN_STATUSES = frozenset({"active", "open"})
PAUSED_STATUSES = frozenset({"inactive", "paused"})
CLOSED_STATUSES = frozenset({"closed"})
DETERMINED_STATUSES = frozenset({"determined", "disputed", "amended", "finalized", "settled"})

TRADING_STATUSES = OPEN_STATUSES | PAUSED_STATUSES
"""Open for trading or only paused: what ``--adopt-open-markets`` and REST discovery treat as open
(a paused market keeps its book and comes back; leaving it would cut its life in two)."""
UNDETERMINED_STATUSES = PRE_OPEN_STATUSES | TRADING_STATUSES | CLOSED_STATUSES
"""Not yet determined: a ``created`` event would have joined such a market and kept it until
``determined`` (closed markets can reopen), so reconcile joins missed ones in any of these."""


class _Decision:
    """An action that is also a decision record: its fields are the decision struct's, with
    ``ticker`` written as ``market_ticker`` (so each payload field is declared once, in
    ``schemas.decisions``, and checked against it when the struct is built)."""

    __slots__ = ()
    DECISION: ClassVar[type[DecisionPayload]]

    def record(self) -> DecisionPayload:
        """The typed decision (``market_joined``, ``market_left`` or ``market_skipped``)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(cast(Any, self))}
        values["market_ticker"] = values.pop("ticker")
        return self.DECISION(**values)

    def payload(self) -> dict[str, Any]:
        """The decision's JSON payload."""
        return self.record().payload()


@dataclass(frozen=True, slots=True)
class Join(_Decision):
    """Open this market's order book; the session's participation in it starts now."""

    DECISION = MarketJoined

    ticker: str
    reason: JoinReason | str
    mid_lifecycle: bool = False
    late_by_ms: int | None = None
    open_ts: int | None = None
    close_ts: int | None = None


@dataclass(frozen=True, slots=True)
class Leave(_Decision):
    """Close this market's order book; the participation ends now."""

    DECISION = MarketLeft
    ticker: str
    reason: LeaveReason | str


@dataclass(frozen=True, slots=True)
class Skip(_Decision):
    """A market we saw born but do not record (its lifecycle events are still recorded).

    ``reason`` is in the contract's vocabulary (filtered|shard|already_open); ``detail`` keeps the
    finer cause (``"mve"`` is reported as ``filtered`` with ``detail="mve"``).
    """

    DECISION = MarketSkipped
    ticker: str
    reason: SkipReason | str
    detail: str | None = None


Action = Join | Leave | Skip


class LifecycleRules:
    """Tracks the joined markets of one session and turns inputs into ``Join``/``Leave``/``Skip``.

    ``created`` after this session already *left* the market is treated as a duplicate (no
    re-join): a market is created once, and a replayed ``created`` must not open a second
    participation for a market that is already determined. REST discovery is the exception: it
    has no events, only "open now", so a market it saw leave and come back (reopened) joins again.
    """

    def __init__(
        self,
        filter: MarketFilter,
        left_memory_s: float = 3600.0,
        left_forget_s: float = 14 * 86400.0,
    ) -> None:
        self.filter = filter
        self._joined: dict[str, Join] = {}
        # Markets left / skipped, each with the wall-clock ns after which it is forgotten: after
        # ``settled`` + ``left_memory_s`` (a settled market is final: no REST listing or replay
        # will call it undetermined again), or ``left_forget_s`` after leaving if it never
        # settles. Months-long runs keep memory bounded (issue 11).
        self._left: dict[str, int] = {}
        self._skipped: dict[str, int] = {}
        self._memory_ns = int(left_memory_s * 1e9)
        self._forget_ns = int(left_forget_s * 1e9)
        self._now_ns = 0

    @property
    def remembered(self) -> int:
        """Markets left or skipped that are still remembered (bounded by ``expire``)."""
        return len(self._left) + len(self._skipped)

    def expire(self, now_ns: int) -> int:
        """Forget left/skipped markets whose memory ran out; returns how many were forgotten."""
        gone = 0
        for memo in (self._left, self._skipped):
            for ticker in [t for t, at in memo.items() if at <= now_ns]:
                del memo[ticker]
                gone += 1
        return gone

    @property
    def joined(self) -> frozenset[str]:
        """Tickers of the markets currently joined."""
        return frozenset(self._joined)

    def join_of(self, ticker: str) -> Join | None:
        """The ``Join`` that opened ``ticker``'s current participation (None if not joined)."""
        return self._joined.get(ticker)

    def is_joined(self, ticker: str) -> bool:
        """True while ``ticker`` is part of the session."""
        return ticker in self._joined

    # -- the WebSocket feed -------------------------------------------------------------------

    def on_event(
        self, ticker: str, event_type: str, fields: Mapping[str, Any], now_ns: int
    ) -> list[Action]:
        """Apply one ``market_lifecycle_v2`` event (``fields`` = its ``msg``); return actions.

        ``now_ns`` is accepted so every input carries its time; the rules themselves do not
        depend on it today.
        """
        if now_ns > self._now_ns:
            self._now_ns = now_ns
        if event_type == "settled":
            # Final: remember it only a margin longer (a late duplicate "determined" or REST
            # listing in flight must still find it).
            for memo in (self._left, self._skipped):
                if ticker in memo:
                    memo[ticker] = min(memo[ticker], now_ns + self._memory_ns)
            return []
        if event_type == "created":
            if ticker in self._joined or ticker in self._left:
                return []
            meta = fields.get("additional_metadata")
            event_ticker = meta.get("event_ticker") if isinstance(meta, Mapping) else None
            return self._join_if_wanted(
                ticker,
                event_ticker if isinstance(event_ticker, str) else None,
                Join(
                    ticker,
                    JoinReason.CREATED,
                    mid_lifecycle=False,
                    open_ts=_int_or_none(fields.get("open_ts")),
                    close_ts=_int_or_none(fields.get("close_ts")),
                ),
            )
        if event_type == "determined":
            # A re-determination after a dispute arrives when we already left: nothing to do.
            if ticker not in self._joined:
                # Determined before its ``created`` reached us (a reordered feed): remember it,
                # so a late ``created`` never opens the book of a market that is already over.
                if ticker not in self._left:
                    self._left[ticker] = now_ns + self._forget_ns
                return []
            return self._leave(ticker, LeaveReason.DETERMINED)
        # settled, activated, deactivated, close_date_updated, price_level_structure_updated,
        # metadata_updated and types nobody has documented yet: recorded by the caller only.
        return []

    # -- REST-driven inputs -------------------------------------------------------------------

    def _open_unjoined(
        self, markets: Iterable[Mapping[str, Any]]
    ) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """The markets of a REST listing open (or paused) now and not joined yet."""
        for market in markets:
            ticker = _ticker(market)
            joinable = ticker is not None and ticker not in self._joined
            if joinable and _status(market) in TRADING_STATUSES:
                yield cast(str, ticker), market

    def adopt(self, markets: Iterable[Mapping[str, Any]]) -> list[Action]:
        """``--adopt-open-markets``: join wanted markets that are open (or paused) right now.

        They are marked mid-lifecycle: their first hours were not recorded. Pre-open and closed
        markets are left to the feed / not adopted (a closed market has no trading left).
        """
        actions: list[Action] = []
        for ticker, market in self._open_unjoined(markets):
            actions += self._join_if_wanted(
                ticker, _event_ticker(market), _rest_join(ticker, market, JoinReason.ADOPTED, True)
            )
        return actions

    def skip_open_at_start(self, markets: Iterable[Mapping[str, Any]]) -> list[Action]:
        """Without ``--adopt-open-markets``: each wanted market open (or paused) at start is
        skipped with reason ``already_open`` (the specification's default), so coverage reports
        can tell "skipped at start" from "never seen". ``markets`` is the same REST listing that
        ``adopt`` would join. Unwanted markets (filter, shard) are not listed: not our business.
        """
        actions: list[Action] = []
        for ticker, market in self._open_unjoined(markets):
            wanted, _why = self.filter.decide(ticker, _event_ticker(market))
            if wanted:
                actions.append(Skip(ticker, SkipReason.ALREADY_OPEN))
        return actions

    def reconcile(
        self,
        rest_markets: Iterable[Mapping[str, Any]],
        now_ns: int,
        anchor_ns: int,
    ) -> list[Action]:
        """Catch up on lifecycle events missed (while disconnected, or lost on a live feed).

        ``rest_markets``: what REST says about the joined markets and the markets created since
        ``anchor_ns`` (the session start less a clock-skew margin, in the exchange's clock, as is
        ``now_ns``). Reconciliation is anchored on the session, not on a disconnect: a dead
        connection is noticed late, clocks differ and REST times may be whole seconds (issue 11).

        * not joined, undetermined, created (``created_time``, else ``open_time``) at or after
          ``anchor_ns``: a missed ``created``: ``Join(reason="late")``, with how late, and
          mid-lifecycle when its trading already opened (or its open time is unknown). Markets
          without either time are not joined: they may be markets that were open before the
          session started, which are skipped by default.
        * joined, REST status determined/disputed/amended/finalized/settled: a ``determined`` we
          missed → ``Leave(reason="reconciled_determined")``. A joined market REST does not
          mention is *kept*: absence is not proof (a failed or partial listing must never make
          the recorder leave a market).
        """
        actions: list[Action] = []
        for market in rest_markets:
            ticker = _ticker(market)
            if ticker is None:
                continue
            status = _status(market)
            if ticker in self._joined:
                if status in DETERMINED_STATUSES:
                    actions += self._leave(ticker, LeaveReason.RECONCILED_DETERMINED)
                continue
            if ticker in self._left or status not in UNDETERMINED_STATUSES:
                continue
            born_ns = _ns(market.get("created_time"))
            if born_ns is None:
                born_ns = _ns(market.get("open_time"))
            if born_ns is None or born_ns < anchor_ns:
                continue
            open_ns = _ns(market.get("open_time"))
            # Trading already began without us: the start of its book life is missing.
            mid = open_ns <= now_ns if open_ns is not None else status not in PRE_OPEN_STATUSES
            late_by_ms = max(0, (now_ns - born_ns) // 1_000_000)
            actions += self._join_if_wanted(
                ticker,
                _event_ticker(market),
                _rest_join(ticker, market, JoinReason.LATE, mid, late_by_ms),
            )
        return actions

    def rest_discovery(self, rest_open_markets: Iterable[Mapping[str, Any]]) -> list[Action]:
        """Rollback discovery mode (``--discovery rest``): one poll of the open-markets list.

        New open (or paused) wanted markets join, mid-lifecycle since polling cannot see their
        birth; joined markets missing from the list, or listed with a non-trading status, leave.
        A market without a ``status`` key is taken as open (it came from a ``status=open`` query).
        """
        actions: list[Action] = []
        still_open: set[str] = set()
        for market in rest_open_markets:
            ticker = _ticker(market)
            if ticker is None:
                continue
            status = _status(market)
            if status is not None and status not in TRADING_STATUSES:
                continue
            still_open.add(ticker)
            if ticker in self._joined:
                continue
            actions += self._join_if_wanted(
                ticker,
                _event_ticker(market),
                _rest_join(ticker, market, JoinReason.REST_DISCOVERY, True),
                rejoin=True,
            )
        for ticker in [t for t in self._joined if t not in still_open]:
            actions += self._leave(ticker, LeaveReason.REST_GONE)
        return actions

    def shutdown(self) -> list[Action]:
        """Graceful stop: every joined market leaves with reason ``shutdown``."""
        return [a for t in list(self._joined) for a in self._leave(t, LeaveReason.SHUTDOWN)]

    # -- internals ----------------------------------------------------------------------------

    def _join_if_wanted(
        self, ticker: str, event_ticker: str | None, join: Join, rejoin: bool = False
    ) -> list[Action]:
        if ticker in self._left and not rejoin:
            return []
        wanted, why = self.filter.decide(ticker, event_ticker)
        if not wanted:
            if ticker in self._skipped:
                return []
            self._skipped[ticker] = self._now_ns + self._forget_ns
            if why == SkipReason.SHARD:
                return [Skip(ticker, SkipReason.SHARD)]
            return [Skip(ticker, SkipReason.FILTERED, None if why == SkipReason.FILTERED else why)]
        self._left.pop(ticker, None)
        self._joined[ticker] = join
        return [join]

    def _leave(self, ticker: str, reason: str) -> list[Action]:
        if self._joined.pop(ticker, None) is None:
            return []
        self._left[ticker] = self._now_ns + self._forget_ns
        return [Leave(ticker, reason)]

    def observe_time(self, now_ns: int) -> None:
        """The wall clock (ns) of REST-driven inputs, which carry no event time themselves."""
        if now_ns > self._now_ns:
            self._now_ns = now_ns


def _rest_join(
    ticker: str,
    market: Mapping[str, Any],
    reason: str,
    mid_lifecycle: bool,
    late_by_ms: int | None = None,
) -> Join:
    """A join decided from a REST market object (adoption, reconciliation, REST discovery)."""
    return Join(
        ticker,
        reason,
        mid_lifecycle=mid_lifecycle,
        late_by_ms=late_by_ms,
        open_ts=_seconds(market.get("open_time")),
        close_ts=_seconds(market.get("close_time")),
    )


def _ticker(market: Mapping[str, Any]) -> str | None:
    ticker = market.get("ticker", market.get("market_ticker"))
    return ticker if isinstance(ticker, str) and ticker else None


def _event_ticker(market: Mapping[str, Any]) -> str | None:
    event = market.get("event_ticker")
    return event if isinstance(event, str) and event else None


def _status(market: Mapping[str, Any]) -> str | None:
    status = market.get("status")
    return status.strip().lower() if isinstance(status, str) else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


def _ns(value: Any) -> int | None:
    """A REST time as ns since the epoch, exactly (no float).

    Accepts RFC3339 strings (``2026-05-13T01:51:41.778164Z``, up to ns precision; no offset means
    UTC) and, for robustness against field drift, integers: Unix seconds, or ms/us/ns judged by
    magnitude. ``None`` when absent or unreadable.
    """
    number = _int_or_none(value)
    if number is not None:
        magnitude = abs(number)
        if magnitude < 10**11:
            return number * 1_000_000_000
        if magnitude < 10**14:
            return number * 1_000_000
        if magnitude < 10**17:
            return number * 1_000
        return number
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    try:
        datetime(year, month, day, hour, minute, second)  # validates the calendar date
    except ValueError:
        return None
    whole_s = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = match.group(7) or ""
    ns = whole_s * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)
    if match.group(9):
        offset_s = int(match.group(10)) * 3600 + int(match.group(11)) * 60
        ns -= (offset_s if match.group(9) == "+" else -offset_s) * 1_000_000_000
    return ns


def _seconds(value: Any) -> int | None:
    """A REST time as Unix seconds, the unit of the WebSocket ``open_ts``/``close_ts``."""
    ns = _ns(value)
    return None if ns is None else ns // 1_000_000_000

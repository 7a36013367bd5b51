"""Subscription manager for ``orderbook_delta`` on one connection (sans-I/O).

It owns the answer to "which sid holds which markets" and plans the commands that move the
exchange from what it has to what the recorder wants. It never sends anything and never reads a
clock: the asyncio shell calls ``want``/``unwant`` as markets join and leave, calls ``plan()`` every
few ms (that is the debounce and the pacing), sends and records the returned ``Command``s, and feeds
every reply back (``on_subscribed``/``on_ok``/``on_unsubscribed``/``on_error``). Replies return
events; ``SidAssigned`` is emitted whenever a sid's market set changes, which is what the
``subscription`` decision record needs so sids can be rebuilt from the log alone (invariant 3).

Rules, and the incident or note behind each (protocol notes §3, §4.7, §5, §10; design "Lessons"):

* Batch: all pending changes go out in few commands — ``update_subscription add_markets`` into sids
  with room, ``subscribe`` with up to ``max_tickers_per_command`` markets for new sids. Bursts of
  thousands of one-market subscribes have killed connections.
* Cap markets per sid (``max_markets_per_sid``): a seq gap re-snapshots every market of its sid, so
  a small sid bounds the cost of a gap; error 26 means the exchange's cap is lower: lower ours.
* One command in flight per sid: replies then apply to a known state, and ``ok`` (which carries the
  sid's full market list) can be taken as the truth for that sid.
* Fallback: if the exchange refuses ``update_subscription`` (codes 5/12/13/15 or "unsupported"),
  switch to subscribe/unsubscribe only — one sid per batch; removing part of a sid's markets means
  unsubscribing the sid and subscribing the rest again (fresh snapshots).
* Errors 10/17/25 without an id are terminal for that sid ("resubscribe"; 25 = data lost): the
  sid is unsubscribed and its markets subscribed again.
* ``reset()`` on reconnect: sids die with the connection; every wanted market is pending again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ORDERBOOK_CHANNEL = "orderbook_delta"
LIFECYCLE_CHANNEL = "market_lifecycle_v2"

FALLBACK_CODES = frozenset({5, 12, 13, 15})
"""Errors to ``update_subscription`` meaning "this exchange does not do that": unknown command,
exactly one sid required, unsupported action, action required."""
RESUBSCRIBE_CODES = frozenset({10, 17, 25})
"""Asynchronous errors on a live sid after which the exchange says "the user must resubscribe"."""
CODE_UNKNOWN_SID = 7
CODE_MARKET_NOT_FOUND = 16
CODE_MARKET_LIMIT = 26

PURPOSE_JOIN = "join"
PURPOSE_LEAVE = "leave"
PURPOSE_RESYNC = "resync"
PURPOSE_RESUBSCRIBE = "resubscribe"
PURPOSE_LIFECYCLE = "lifecycle"

_BACKOFF_FIRST_NS = 100_000_000  # 100 ms: enough for a "too many requests" (27) to clear
_BACKOFF_MAX_NS = 10_000_000_000  # 10 s: a market should not wait longer than that to be retried


@dataclass(frozen=True)
class Command:
    """A command to send: ``message()`` is the JSON object; the rest explains it for the log."""

    cmd_id: int
    cmd: str
    params: dict[str, Any]
    purpose: str
    tickers: tuple[str, ...] = ()
    sid: int | None = None

    @property
    def action(self) -> str | None:
        """``update_subscription`` action (add_markets|delete_markets|get_snapshot), else None."""
        action = self.params.get("action")
        return action if isinstance(action, str) else None

    def message(self) -> dict[str, Any]:
        """The wire envelope ``{"id", "cmd", "params"}``."""
        return {"id": self.cmd_id, "cmd": self.cmd, "params": self.params}


@dataclass(frozen=True)
class SidAssigned:
    """``sid`` now holds exactly ``tickers`` (empty: sid gone). Record it as ``subscription``."""

    sid: int
    channel: str
    tickers: tuple[str, ...]


@dataclass(frozen=True)
class Fallback:
    """The exchange refused ``update_subscription``: from now on subscribe/unsubscribe only."""

    code: int | None
    message: str
    cmd_id: int | None


@dataclass(frozen=True)
class CapLowered:
    """Error 26: the exchange's per-subscription market cap is below ours; ours is now ``new``."""

    old: int
    new: int


@dataclass(frozen=True)
class MarketNotFound:
    """Error 16: the exchange does not know ``ticker``; it is no longer wanted here."""

    ticker: str
    cmd_id: int | None


@dataclass(frozen=True)
class NeedsResubscribe:
    """A live sid broke (10/17/25); it will be unsubscribed and its markets subscribed again.

    Code 25 means data was already lost: the shell records a ``loss`` as well as a ``resync``.
    """

    sid: int
    tickers: tuple[str, ...]
    code: int | None
    message: str


@dataclass(frozen=True)
class CommandFailed:
    """A command got an error; ``retrying`` says whether the manager will plan it again."""

    cmd_id: int | None
    cmd: str | None
    purpose: str | None
    code: int | None
    message: str
    tickers: tuple[str, ...]
    sid: int | None
    retrying: bool


@dataclass(frozen=True)
class GaveUp:
    """Retries exhausted: these markets are no longer wanted here (or, for a leave, left as is)."""

    tickers: tuple[str, ...]
    sid: int | None
    code: int | None
    message: str
    purpose: str


Event = (
    SidAssigned | Fallback | CapLowered | MarketNotFound | NeedsResubscribe | CommandFailed | GaveUp
)


@dataclass
class _Retry:
    """Failures and backoff of one ticker (or sid); ``delay_ns`` becomes ``at_ns`` in plan()."""

    failures: int = 0
    delay_ns: int | None = None
    at_ns: int | None = None


@dataclass
class _Lifecycle:
    state: str = "off"  # off | pending | inflight | live | resubscribe
    sid: int | None = None
    retry: _Retry = field(default_factory=_Retry)


class SubscriptionManager:
    """Desired markets → planned commands; replies → the exchange's actual sid → markets map."""

    def __init__(
        self,
        max_markets_per_sid: int = 200,
        max_tickers_per_command: int = 100,
        max_retries: int = 8,
    ) -> None:
        if max_markets_per_sid < 1 or max_tickers_per_command < 1:
            raise ValueError("max_markets_per_sid and max_tickers_per_command must be >= 1")
        self.cap = max_markets_per_sid
        self.max_tickers_per_command = max_tickers_per_command
        self.max_retries = max_retries
        self.fallback = False
        self._wanted: dict[str, None] = {}  # insertion-ordered set: first wanted, first planned
        self._sids: dict[int, dict[str, None]] = {}
        self._owner: dict[str, int] = {}
        self._inflight: dict[int, Command] = {}
        self._busy: dict[int, int] = {}  # sid -> cmd_id of its one in-flight command
        self._adding: dict[str, int] = {}  # ticker -> cmd_id of the subscribe/add carrying it
        self._resubscribe: set[int] = set()
        self._snapshots: dict[int, dict[str, None]] = {}
        self._retry: dict[str, _Retry] = {}
        self._sid_retry: dict[int, _Retry] = {}
        self._failed_subscribes: dict[int, Command] = {}
        self._broken: dict[int, tuple[int | None, str]] = {}  # errors for sids not yet known
        self._lifecycle = _Lifecycle()

    # -- desired state ------------------------------------------------------------------------

    def want(self, ticker: str) -> None:
        """The recorder wants this market's order book (idempotent)."""
        if ticker not in self._wanted:
            self._wanted[ticker] = None
            self._retry.pop(ticker, None)

    def unwant(self, ticker: str) -> None:
        """The recorder no longer wants this market's order book (idempotent)."""
        self._wanted.pop(ticker, None)
        self._retry.pop(ticker, None)

    # -- views --------------------------------------------------------------------------------

    @property
    def wanted(self) -> frozenset[str]:
        """Markets whose books should be open (minus those dropped after 16 or given up)."""
        return frozenset(self._wanted)

    @property
    def in_flight(self) -> int:
        """Commands sent and not yet answered (the shell may pace on this)."""
        return len(self._inflight)

    @property
    def lifecycle_sid(self) -> int | None:
        """The ``market_lifecycle_v2`` sid once subscribed (None before, and after reset)."""
        return self._lifecycle.sid

    @property
    def sids(self) -> dict[int, tuple[str, ...]]:
        """Every ``orderbook_delta`` sid and its markets, as the exchange confirmed them."""
        return {sid: tuple(tickers) for sid, tickers in self._sids.items()}

    def sid_of(self, ticker: str) -> int | None:
        """The sid whose snapshots and deltas carry ``ticker`` (None while not subscribed)."""
        return self._owner.get(ticker)

    def tickers_of(self, sid: int) -> tuple[str, ...]:
        """Markets of ``sid`` (empty for unknown sids): the set a seq gap on it invalidates."""
        return tuple(self._sids.get(sid, ()))

    def pending(self) -> tuple[str, ...]:
        """Wanted markets not yet on any sid nor on their way to one."""
        return tuple(t for t in self._wanted if t not in self._owner and t not in self._adding)

    def converged(self) -> bool:
        """True when nothing is in flight and the confirmed sids hold exactly the wanted markets."""
        held = [t for tickers in self._sids.values() for t in tickers]
        return (
            not self._inflight
            and len(held) == len(set(held))
            and set(held) == set(self._wanted)
            and not self._resubscribe
            and not self._snapshots
        )

    # -- planning -----------------------------------------------------------------------------

    def lifecycle_subscribe(self, next_id: Callable[[], int]) -> Command:
        """The ``market_lifecycle_v2`` subscribe (no tickers: the channel is global)."""
        self._lifecycle.state = "inflight"
        return self._register(
            Command(next_id(), "subscribe", {"channels": [LIFECYCLE_CHANNEL]}, PURPOSE_LIFECYCLE)
        )

    def plan(self, next_id: Callable[[], int], now_ns: int | None = None) -> list[Command]:
        """Commands that move the exchange towards the wanted state; registers them in flight.

        ``now_ns`` (monotonic) enables retry backoff after errors; without it retries go out at
        the next call.
        """
        self._resolve_backoff(now_ns)
        commands: list[Command] = []
        lifecycle = self._plan_lifecycle(next_id, now_ns)
        if lifecycle is not None:
            commands.append(lifecycle)
        for sid in list(self._sids):
            command = self._plan_sid(sid, next_id, now_ns)
            if command is not None:
                commands.append(command)
        commands += self._plan_adds(next_id, now_ns)
        return commands

    def request_snapshot(
        self,
        sid: int,
        tickers: Iterable[str],
        next_id: Callable[[], int],
        now_ns: int | None = None,
    ) -> list[Command]:
        """Resync ``tickers`` of ``sid`` (all of them if empty) with fresh snapshots.

        ``update_subscription get_snapshot``; in fallback mode unsubscribe + subscribe of the sid.
        Returns the command if the sid is free now; otherwise it goes out with a later ``plan()``.
        """
        held = self._sids.get(sid)
        if held is None:
            return []
        chosen = [t for t in tickers if t in held] or list(held)
        if self.fallback:
            self._resubscribe.add(sid)
        else:
            self._snapshots.setdefault(sid, {}).update(dict.fromkeys(chosen))
        command = self._plan_sid(sid, next_id, now_ns)
        return [] if command is None else [command]

    def resubscribe(self, sid: int) -> None:
        """Ask for ``sid`` to be unsubscribed and its markets subscribed again (fresh snapshots)."""
        if sid in self._sids:
            self._resubscribe.add(sid)

    def reset(self) -> None:
        """The connection was lost: every sid is gone, every wanted market is pending again.

        Fallback mode and a lowered cap are kept (same exchange). The lifecycle channel must be
        subscribed again with ``lifecycle_subscribe``.
        """
        self._sids.clear()
        self._owner.clear()
        self._inflight.clear()
        self._busy.clear()
        self._adding.clear()
        self._resubscribe.clear()
        self._snapshots.clear()
        self._retry.clear()
        self._sid_retry.clear()
        self._failed_subscribes.clear()
        self._broken.clear()
        self._lifecycle = _Lifecycle()

    # -- replies --------------------------------------------------------------------------------

    def on_subscribed(self, cmd_id: int | None, channel: str | None, sid: int) -> list[Event]:
        """A ``subscribed`` reply: the command's markets now live on ``sid``."""
        command = self._inflight.pop(cmd_id, None) if cmd_id is not None else None
        if command is None:
            # A subscribe we had given up on may still succeed: take the sid as the exchange has
            # it (duplicates of markets placed elsewhere since are removed by the next plan).
            late = self._failed_subscribes.pop(cmd_id, None) if cmd_id is not None else None
            if late is None or sid in self._sids:
                return []
            command = late
        if command.purpose == PURPOSE_LIFECYCLE:
            self._lifecycle.state = "live"
            self._lifecycle.sid = sid
            self._lifecycle.retry = _Retry()
            return [SidAssigned(sid, channel or LIFECYCLE_CHANNEL, ())]
        for ticker in command.tickers:
            if self._adding.get(ticker) == command.cmd_id:
                del self._adding[ticker]
        held = self._sids.setdefault(sid, {})
        held.update(dict.fromkeys(command.tickers))
        for ticker in command.tickers:
            self._owner.setdefault(ticker, sid)
            self._retry.pop(ticker, None)
        events: list[Event] = [SidAssigned(sid, channel or ORDERBOOK_CHANNEL, tuple(held))]
        if sid in self._broken:
            # Its terminal error overtook this reply: resubscribe it right away.
            code, message = self._broken.pop(sid)
            self._resubscribe.add(sid)
            events.append(NeedsResubscribe(sid, tuple(held), code, message))
        return events

    def on_ok(
        self, cmd_id: int | None, sid: int | None, market_tickers: Iterable[str] | None
    ) -> list[Event]:
        """An ``ok`` reply to ``update_subscription``; ``market_tickers`` (the sid's full list
        after the update, when the exchange sends it) is taken as the truth for that sid."""
        command = self._inflight.get(cmd_id) if cmd_id is not None else None
        if command is None:
            return []
        if command.cmd == "subscribe" and sid is not None:
            return self.on_subscribed(cmd_id, None, sid)
        if command.cmd == "unsubscribe":
            return self.on_unsubscribed(cmd_id, [] if sid is None else [sid])
        del self._inflight[command.cmd_id]
        assert command.sid is not None
        self._busy.pop(command.sid, None)
        for ticker in command.tickers:
            self._retry.pop(ticker, None)
            if self._adding.get(ticker) == command.cmd_id:
                del self._adding[ticker]
        before = self._sids.get(command.sid)
        if before is None:
            return []
        batch = set(command.tickers)
        if command.action == "add_markets":
            after = {**before, **dict.fromkeys(command.tickers)}
        elif command.action == "delete_markets":
            after = {t: None for t in before if t not in batch}
        else:  # get_snapshot changes nothing; its ack's list may be just the requested markets
            return []
        reported = None if market_tickers is None else list(market_tickers)
        if reported is not None and set(reported) != batch:
            # The full list after the update is the exchange's truth for this sid. (A list equal
            # to the batch is read as an echo of the request, as some servers send.)
            listed = set(reported)
            after = {t: None for t in before if t in listed}
            after.update(dict.fromkeys(reported))
        return self._set_sid(command.sid, after)

    def on_unsubscribed(self, cmd_id: int | None, sids: Iterable[int] = ()) -> list[Event]:
        """An ``unsubscribed`` reply: the command's sid and its markets are gone."""
        command = self._inflight.pop(cmd_id, None) if cmd_id is not None else None
        if command is None or command.sid is None:
            return []
        del sids  # the command names its sid; replies disagree on where they put it
        self._busy.pop(command.sid, None)
        return self._drop_sid(command.sid)

    def on_error(
        self,
        cmd_id: int | None,
        code: int | None,
        message: str | None = "",
        market_ticker: str | None = None,
        sid: int | None = None,
    ) -> list[Event]:
        """An ``error`` frame: classify it, repair the plan, and say what happened.

        ``sid`` matters only for errors without an id (10/17/25 on a live sid).
        """
        message = message or ""
        if cmd_id is None:
            return self._on_async_error(code, message, sid)
        command = self._inflight.pop(cmd_id, None)
        if command is None:
            return []
        if command.sid is not None:
            self._busy.pop(command.sid, None)
        for ticker in command.tickers:
            if self._adding.get(ticker) == command.cmd_id:
                del self._adding[ticker]

        if command.purpose == PURPOSE_LIFECYCLE:
            if command.cmd == "subscribe":
                # The lifecycle feed is the point of the recorder: never give up on it.
                self._lifecycle.state = "pending"
                retrying = self._bump(self._lifecycle.retry, limited=False)
            else:  # unsubscribing a broken lifecycle sid: it is gone either way
                self._lifecycle = _Lifecycle(state="pending")
                retrying = True
            return [self._failed(command, code, message, retrying)]

        if command.cmd == "unsubscribe":
            assert command.sid is not None
            if code == CODE_UNKNOWN_SID:
                return self._drop_sid(command.sid)
            return self._retry_sid(command, code, message)

        if command.cmd == "update_subscription":
            assert command.sid is not None
            if code == CODE_UNKNOWN_SID:
                return [self._failed(command, code, message, True), *self._drop_sid(command.sid)]
            if _refuses_update(code, message):
                return self._enter_fallback(command, code, message)
        if code == CODE_MARKET_LIMIT and command.action in (None, "add_markets"):
            return self._lower_cap(command, code, message)
        if code == CODE_MARKET_NOT_FOUND and market_ticker in command.tickers:
            assert market_ticker is not None
            return self._not_found(command, market_ticker, code, message)
        return self._retry_tickers(command, code, message)

    # -- planning internals -----------------------------------------------------------------------

    def _register(self, command: Command) -> Command:
        self._inflight[command.cmd_id] = command
        if command.sid is not None:
            self._busy[command.sid] = command.cmd_id
        if command.cmd == "subscribe" or command.action == "add_markets":
            for ticker in command.tickers:
                self._adding[ticker] = command.cmd_id
        return command

    def _plan_lifecycle(self, next_id: Callable[[], int], now_ns: int | None) -> Command | None:
        life = self._lifecycle
        if not _due(life.retry, now_ns):
            return None
        if life.state == "pending":
            return self.lifecycle_subscribe(next_id)
        if life.state == "resubscribe" and life.sid is not None:
            life.state = "inflight"
            return self._register(
                Command(
                    next_id(), "unsubscribe", {"sids": [life.sid]}, PURPOSE_LIFECYCLE, (), life.sid
                )
            )
        return None

    def _plan_sid(self, sid: int, next_id: Callable[[], int], now_ns: int | None) -> Command | None:
        """At most one command for ``sid``: resubscribe, then removals, then snapshots."""
        held = self._sids[sid]
        if sid in self._busy or not _due(self._sid_retry.get(sid), now_ns):
            return None
        if sid in self._resubscribe:
            return self._unsubscribe(sid, next_id, PURPOSE_RESUBSCRIBE)
        extras = [
            t
            for t in held
            if (t not in self._wanted or self._owner.get(t) != sid)
            and _due(self._retry.get(t), now_ns)
        ]
        if extras:
            if len(extras) == len(held) or self.fallback:
                # Fallback: the only way to drop part of a sid is to drop all of it; the markets
                # still wanted become pending and are subscribed again (fresh snapshots).
                return self._unsubscribe(sid, next_id, PURPOSE_LEAVE)
            batch = tuple(extras[: self.max_tickers_per_command])
            return self._register(
                Command(
                    next_id(),
                    "update_subscription",
                    {"sids": [sid], "market_tickers": list(batch), "action": "delete_markets"},
                    PURPOSE_LEAVE,
                    batch,
                    sid,
                )
            )
        wanted_snapshots = self._snapshots.pop(sid, None)
        if wanted_snapshots:
            chosen = [t for t in wanted_snapshots if t in held]
            if chosen:
                batch = tuple(chosen[: self.max_tickers_per_command])
                rest = chosen[self.max_tickers_per_command :]
                if rest:
                    self._snapshots[sid] = dict.fromkeys(rest)
                return self._register(
                    Command(
                        next_id(),
                        "update_subscription",
                        {"sids": [sid], "market_tickers": list(batch), "action": "get_snapshot"},
                        PURPOSE_RESYNC,
                        batch,
                        sid,
                    )
                )
        return None

    def _unsubscribe(self, sid: int, next_id: Callable[[], int], purpose: str) -> Command:
        return self._register(
            Command(next_id(), "unsubscribe", {"sids": [sid]}, purpose, tuple(self._sids[sid]), sid)
        )

    def _plan_adds(self, next_id: Callable[[], int], now_ns: int | None) -> list[Command]:
        todo = [
            t
            for t in self._wanted
            if t not in self._owner and t not in self._adding and _due(self._retry.get(t), now_ns)
        ]
        commands: list[Command] = []
        if not todo:
            return commands
        if not self.fallback:
            for sid, held in self._sids.items():
                if not todo:
                    break
                if sid in self._busy or sid in self._resubscribe:
                    continue
                room = min(self.cap - len(held), self.max_tickers_per_command)
                if room <= 0:
                    continue
                batch, todo = tuple(todo[:room]), todo[room:]
                commands.append(
                    self._register(
                        Command(
                            next_id(),
                            "update_subscription",
                            {"sids": [sid], "market_tickers": list(batch), "action": "add_markets"},
                            PURPOSE_JOIN,
                            batch,
                            sid,
                        )
                    )
                )
        size = min(self.cap, self.max_tickers_per_command)
        for start in range(0, len(todo), size):
            batch = tuple(todo[start : start + size])
            commands.append(
                self._register(
                    Command(
                        next_id(),
                        "subscribe",
                        {"channels": [ORDERBOOK_CHANNEL], "market_tickers": list(batch)},
                        PURPOSE_JOIN,
                        batch,
                    )
                )
            )
        return commands

    def _resolve_backoff(self, now_ns: int | None) -> None:
        if now_ns is None:
            return
        for retry in (*self._retry.values(), *self._sid_retry.values(), self._lifecycle.retry):
            if retry.delay_ns is not None:
                retry.at_ns = now_ns + retry.delay_ns
                retry.delay_ns = None

    # -- state internals ------------------------------------------------------------------------

    def _set_sid(self, sid: int, after: dict[str, None]) -> list[Event]:
        before = self._sids.get(sid, {})
        for ticker in before:
            if ticker not in after:
                self._release(ticker, sid)
        self._sids[sid] = after
        for ticker in after:
            self._owner.setdefault(ticker, sid)
        if set(after) == set(before):
            return []
        return [SidAssigned(sid, ORDERBOOK_CHANNEL, tuple(after))]

    def _drop_sid(self, sid: int) -> list[Event]:
        if self._lifecycle.sid == sid:
            self._lifecycle = _Lifecycle(state="pending")
            return [SidAssigned(sid, LIFECYCLE_CHANNEL, ())]
        held = self._sids.pop(sid, None)
        self._resubscribe.discard(sid)
        self._snapshots.pop(sid, None)
        self._sid_retry.pop(sid, None)
        if held is None:
            return []
        for ticker in held:
            self._release(ticker, sid)
        return [SidAssigned(sid, ORDERBOOK_CHANNEL, ())]

    def _release(self, ticker: str, sid: int) -> None:
        """``ticker`` left ``sid``; if another sid also holds it (an anomaly), that one owns it."""
        if self._owner.get(ticker) != sid:
            return
        del self._owner[ticker]
        for other, held in self._sids.items():
            if other != sid and ticker in held:
                self._owner[ticker] = other
                return

    def _on_async_error(self, code: int | None, message: str, sid: int | None) -> list[Event]:
        if code in RESUBSCRIBE_CODES and sid is not None:
            if sid == self._lifecycle.sid:
                self._lifecycle.state = "resubscribe"
                return [NeedsResubscribe(sid, (), code, message)]
            if sid in self._sids:
                self._resubscribe.add(sid)
                return [NeedsResubscribe(sid, tuple(self._sids[sid]), code, message)]
            if any(c.cmd == "subscribe" for c in self._inflight.values()):
                # Possibly the sid of a subscribe whose reply has not arrived yet.
                self._broken[sid] = (code, message)
                while len(self._broken) > 1000:
                    del self._broken[next(iter(self._broken))]
        return [CommandFailed(None, None, None, code, message, (), sid, False)]

    def _enter_fallback(self, command: Command, code: int | None, message: str) -> list[Event]:
        events: list[Event] = []
        if not self.fallback:
            self.fallback = True
            events.append(Fallback(code, message, command.cmd_id))
        events.append(self._failed(command, code, message, True))
        if command.action == "get_snapshot" and command.sid in self._sids:
            assert command.sid is not None
            self._resubscribe.add(command.sid)
        # A refused add leaves its markets pending (now planned as subscribes); a refused delete
        # leaves them on the sid, which the fallback plan unsubscribes as a whole.
        return events

    def _lower_cap(self, command: Command, code: int | None, message: str) -> list[Event]:
        held = len(self._sids.get(command.sid, ())) if command.sid is not None else 0
        tried = held + len(command.tickers)
        if tried <= 1:
            return self._retry_tickers(command, code, message)
        old = self.cap
        # The exchange holds `held` on this sid, so its cap is >= held and < tried: halving the
        # attempt converges in a few errors without wasting sids on a far too low guess.
        self.cap = min(old, tried - 1, max(1, held, tried // 2))
        return [
            self._failed(command, code, message, True),
            *([CapLowered(old, self.cap)] if self.cap != old else []),
        ]

    def _not_found(
        self, command: Command, ticker: str, code: int | None, message: str
    ) -> list[Event]:
        self.unwant(ticker)
        events: list[Event] = [
            self._failed(command, code, message, True),
            MarketNotFound(ticker, command.cmd_id),
        ]
        if command.sid is not None and command.action in ("delete_markets", "get_snapshot"):
            held = self._sids.get(command.sid)
            if held is not None and ticker in held:
                events += self._set_sid(command.sid, {t: None for t in held if t != ticker})
        if command.action == "get_snapshot" and command.sid in self._sids:
            assert command.sid is not None
            rest = [t for t in command.tickers if t != ticker]
            self._snapshots.setdefault(command.sid, {}).update(dict.fromkeys(rest))
        return events

    def _retry_tickers(self, command: Command, code: int | None, message: str) -> list[Event]:
        if command.cmd == "subscribe":
            self._failed_subscribes[command.cmd_id] = command
            while len(self._failed_subscribes) > 1000:
                del self._failed_subscribes[next(iter(self._failed_subscribes))]
        given_up: list[str] = []
        for ticker in command.tickers:
            retry = self._retry.setdefault(ticker, _Retry())
            if not self._bump(retry):
                given_up.append(ticker)
        if command.action == "get_snapshot" and command.sid in self._sids:
            assert command.sid is not None
            again = [t for t in command.tickers if t not in given_up]
            if again:
                self._snapshots.setdefault(command.sid, {}).update(dict.fromkeys(again))
        events: list[Event] = [self._failed(command, code, message, not given_up)]
        if given_up:
            if command.action in ("delete_markets", "get_snapshot"):
                # Next rung of the ladder: unsubscribe the whole sid and subscribe again.
                if command.sid in self._sids:
                    assert command.sid is not None
                    self._resubscribe.add(command.sid)
            else:
                for ticker in given_up:
                    self._wanted.pop(ticker, None)
            events.append(GaveUp(tuple(given_up), command.sid, code, message, command.purpose))
        return events

    def _retry_sid(self, command: Command, code: int | None, message: str) -> list[Event]:
        assert command.sid is not None
        retry = self._sid_retry.setdefault(command.sid, _Retry())
        if self._bump(retry):
            return [self._failed(command, code, message, True)]
        self._resubscribe.discard(command.sid)
        return [
            self._failed(command, code, message, False),
            GaveUp(command.tickers, command.sid, code, message, command.purpose),
        ]

    def _bump(self, retry: _Retry, limited: bool = True) -> bool:
        """Count a failure and schedule the retry; False once retries are exhausted."""
        retry.failures += 1
        if limited and retry.failures > self.max_retries:
            retry.at_ns = None
            retry.delay_ns = None
            retry.failures = 0
            return False
        shift = min(retry.failures - 1, 16)
        retry.delay_ns = min(_BACKOFF_MAX_NS, _BACKOFF_FIRST_NS << shift)
        retry.at_ns = None
        return True

    def _failed(
        self, command: Command, code: int | None, message: str, retrying: bool
    ) -> CommandFailed:
        return CommandFailed(
            command.cmd_id,
            command.cmd,
            command.purpose,
            code,
            message,
            command.tickers,
            command.sid,
            retrying,
        )


def _due(retry: _Retry | None, now_ns: int | None) -> bool:
    """May this ticker/sid be planned now? (Pending delays resolve at the next timed plan.)"""
    if retry is None or now_ns is None:
        return True
    if retry.delay_ns is not None:
        return False
    return retry.at_ns is None or now_ns >= retry.at_ns


def _refuses_update(code: int | None, message: str) -> bool:
    text = message.lower()
    return code in FALLBACK_CODES or "unsupported" in text or "unknown command" in text

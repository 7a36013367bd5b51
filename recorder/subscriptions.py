"""Subscription manager for ``orderbook_delta`` on one connection (sans-I/O).

It owns the answer to "which sid holds which markets" and plans the commands that move the
exchange from what it has to what the recorder wants. It never sends anything and never reads a
clock: the asyncio shell calls ``want``/``unwant`` as markets join and leave, calls ``plan()`` every
few ms (that is the debounce and the pacing), sends and records the returned ``Command``s, and feeds
every reply back (``on_subscribed``/``on_ok``/``on_unsubscribed``/``on_error``). Replies return
events; ``SidAssigned`` is emitted whenever a sid's market set changes, which is what the
``subscription`` decision record needs so sids can be rebuilt from the log alone
(every command and decision is a record: ARCHITECTURE.md, Invariants).

Rules, and the incident or protocol fact behind each (docs/protocol.md §3, §5, §6, §9):

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
* No command waits for ever (issue 11): each has a deadline (``command_timeout_s``, started when
  the shell reports it ``sent``); ``expire(now)`` frees the sid and re-establishes the truth
  (retry, fresh snapshot, or unsubscribe + subscribe). Replies are matched by ``id``, and by sid
  and type when ``id`` is missing; a ``get_snapshot`` is done when its snapshots arrived, ``ok``
  or not.
* A repeat ``subscribe`` may be merged into an existing sid (``subscribed`` with a known sid, or
  ``ok`` without a sid), get a new sid, or be refused with error 6: all three place the markets
  (for the last two the first snapshot or delta naming the market tells its sid).
* Error 16 for a market wanted less than ``new_market_grace_s`` ago is retried with backoff: the
  exchange may list a new market a moment after announcing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from recorder.config import Settings
from schemas.decisions import MergeHow, TimeoutThen
from schemas.wire import DELTA_MSG, LIFECYCLE_CHANNEL

ORDERBOOK_CHANNEL = DELTA_MSG  # the order-book channel is named after its frames

FALLBACK_CODES = frozenset({5, 12, 13, 15})
"""Errors to ``update_subscription`` meaning "this exchange does not do that": unknown command,
exactly one sid required, unsupported action, action required."""
RESUBSCRIBE_CODES = frozenset({10, 17, 25})
"""Asynchronous errors on a live sid after which the exchange says "the user must resubscribe"."""
CODE_UNKNOWN_SID = 7
CODE_MARKET_NOT_FOUND = 16
CODE_MARKET_LIMIT = 26
CODE_ALREADY_SUBSCRIBED = 6


class Purpose(StrEnum):
    """Why a command was sent: the ``purpose`` of ``command_timeout`` records, and the shell's
    sending priority (lifecycle first, then joins, resyncs, resubscribes)."""

    JOIN = "join"  # markets joined: ``subscribe`` or ``add_markets``
    LEAVE = "leave"  # markets left: ``delete_markets``, or ``unsubscribe`` of the whole sid
    RESYNC = "resync"  # fresh snapshots: ``get_snapshot``
    RESUBSCRIBE = "resubscribe"  # a broken sid: unsubscribed, its markets subscribed again
    LIFECYCLE = "lifecycle"  # the global lifecycle channels
    CLEANUP = "cleanup"  # a sid the exchange may hold but we do not (a lost reply): unsubscribe


class Cmd(StrEnum):
    """The commands this manager sends (the wire's ``cmd``)."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    UPDATE_SUBSCRIPTION = "update_subscription"


class UpdateAction(StrEnum):
    """The ``action`` of an ``update_subscription``."""

    ADD_MARKETS = "add_markets"
    DELETE_MARKETS = "delete_markets"
    GET_SNAPSHOT = "get_snapshot"


class LifeState(StrEnum):
    """Where one lifecycle channel's subscription stands."""

    OFF = "off"  # not wanted (before ``start_lifecycle``, after ``reset``)
    PENDING = "pending"  # wanted: the next ``plan()`` subscribes it
    INFLIGHT = "inflight"  # its subscribe (or unsubscribe) awaits an answer
    LIVE = "live"  # subscribed: its events arrive
    RESUBSCRIBE = "resubscribe"  # its sid broke (10/17/25): unsubscribe, then subscribe again


TRAILING_OK_HOLD_NS = 500_000_000
"""On an exchange whose replies carry no ``id``, a sid whose ``get_snapshot`` completed by its
snapshots waits this long before its next command: an ``ok`` for the snapshot may still follow
(docs/protocol.md §9, uncertain), and taken for the next command's answer it would shift every
match."""

_BACKOFF_FIRST_NS = 100_000_000  # 100 ms: enough for a "too many requests" (27) to clear
_BACKOFF_MAX_NS = 10_000_000_000  # 10 s: a market should not wait longer than that to be retried


@dataclass(frozen=True)
class Command:
    """A command to send: ``message()`` is the JSON object; the rest explains it for the log."""

    cmd_id: int
    cmd: Cmd
    params: dict[str, Any]
    purpose: Purpose
    tickers: tuple[str, ...] = ()
    sid: int | None = None

    @property
    def action(self) -> UpdateAction | None:
        """The ``update_subscription`` action, else None."""
        action = self.params.get("action")
        return None if action is None else UpdateAction(action)

    def message(self) -> dict[str, Any]:
        """The wire envelope ``{"id", "cmd", "params"}``."""
        return {"id": self.cmd_id, "cmd": self.cmd, "params": self.params}


def _subscribe(
    cmd_id: int, channel: str, purpose: Purpose, tickers: tuple[str, ...] = ()
) -> Command:
    params: dict[str, Any] = {"channels": [channel]}
    if tickers:
        params["market_tickers"] = list(tickers)
    return Command(cmd_id, Cmd.SUBSCRIBE, params, purpose, tickers)


def _unsubscribe(cmd_id: int, sid: int, purpose: Purpose, tickers: tuple[str, ...] = ()) -> Command:
    return Command(cmd_id, Cmd.UNSUBSCRIBE, {"sids": [sid]}, purpose, tickers, sid)


def _update(
    cmd_id: int, sid: int, action: UpdateAction, tickers: tuple[str, ...], purpose: Purpose
) -> Command:
    params = {"sids": [sid], "market_tickers": list(tickers), "action": action}
    return Command(cmd_id, Cmd.UPDATE_SUBSCRIPTION, params, purpose, tickers, sid)


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
    cmd: Cmd | None
    purpose: Purpose | None
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
    purpose: Purpose


@dataclass(frozen=True)
class TimedOut:
    """``command`` got no answer by its deadline; ``then`` says how the truth is re-established:
    ``retry`` (sent again), ``snapshot`` (missing snapshots asked again), ``resubscribe`` (its
    sid unsubscribed, its markets subscribed again), ``drop_sid`` (sid taken as gone)."""

    command: Command
    then: TimeoutThen
    waited_ns: int


@dataclass(frozen=True)
class Merged:
    """A ``subscribe`` was merged into an existing subscription (``ok`` without a new sid, a
    ``subscribed`` naming a sid we already hold, or error 6): ``sid`` is where its markets went,
    None while unknown (the first frame naming each market will tell)."""

    cmd_id: int
    sid: int | None
    tickers: tuple[str, ...]
    how: MergeHow


Event = (
    SidAssigned
    | Fallback
    | CapLowered
    | MarketNotFound
    | NeedsResubscribe
    | CommandFailed
    | GaveUp
    | TimedOut
    | Merged
)


@dataclass
class _Retry:
    """Failures and backoff of one ticker (or sid); ``delay_ns`` becomes ``at_ns`` in plan()."""

    failures: int = 0
    delay_ns: int | None = None
    at_ns: int | None = None


@dataclass
class _Lifecycle:
    state: LifeState = LifeState.OFF
    sid: int | None = None
    retry: _Retry = field(default_factory=_Retry)


def _channel_of(command: Command) -> str:
    channels = command.params.get("channels")
    if isinstance(channels, list) and channels and isinstance(channels[0], str):
        return channels[0]
    return ORDERBOOK_CHANNEL


class SubscriptionManager:
    """Desired markets → planned commands; replies → the exchange's actual sid → markets map."""

    def __init__(
        self,
        max_markets_per_sid: int = Settings.max_markets_per_sid,
        max_tickers_per_command: int = Settings.max_tickers_per_command,
        max_retries: int = 8,
        command_timeout_s: float = Settings.command_timeout_s,
        new_market_grace_s: float = Settings.new_market_grace_s,
    ) -> None:
        if max_markets_per_sid < 1 or max_tickers_per_command < 1:
            raise ValueError("max_markets_per_sid and max_tickers_per_command must be >= 1")
        self.cap = max_markets_per_sid
        self.max_tickers_per_command = max_tickers_per_command
        self.max_retries = max_retries
        self.command_timeout_ns = int(command_timeout_s * 1e9)
        self.new_market_grace_ns = int(new_market_grace_s * 1e9)
        self.fallback = False
        self.replies_have_ids: bool | None = None  # learned from the replies themselves
        self._wanted: dict[str, None] = {}  # insertion-ordered set: first wanted, first planned
        self._wanted_at: dict[str, int] = {}  # ticker -> when wanted (monotonic ns; error 16)
        self._sids: dict[int, dict[str, None]] = {}
        self._owner: dict[str, int] = {}
        self._inflight: dict[int, Command] = {}
        self._deadline: dict[int, int] = {}  # cmd_id -> monotonic ns by which it must be answered
        self._sent_at: dict[int, int] = {}
        self._busy: dict[int, int] = {}  # sid -> cmd_id of its one in-flight command
        self._adding: dict[str, int] = {}  # ticker -> cmd_id of the subscribe/add carrying it
        self._unplaced: dict[str, int | None] = {}  # merged into an unknown sid -> give-up time
        self._resubscribe: set[int] = set()
        self._snapshots: dict[int, dict[str, None]] = {}
        self._snap_left: dict[int, set[str]] = {}  # get_snapshot cmd_id -> snapshots still due
        self._snap_acked: set[int] = set()  # get_snapshot commands acked, snapshots still due
        self._trailing_ok: dict[int, int | None] = {}  # sid -> hold until (id-less exchanges)
        self._orphans: dict[int, None] = {}  # sids the exchange may still hold: unsubscribe them
        self._retired: dict[int, None] = {}  # sids already unsubscribed (or being): not orphans
        self._unknown_sids: dict[int, None] = {}  # id-less ``subscribed``: which subscribe?
        self._retry: dict[str, _Retry] = {}
        self._sid_retry: dict[int, _Retry] = {}
        self._failed_subscribes: dict[int, Command] = {}
        self._broken: dict[int, tuple[int | None, str]] = {}  # errors for sids not yet known
        self._lifecycles: dict[str, _Lifecycle] = {LIFECYCLE_CHANNEL: _Lifecycle()}

    # -- desired state ------------------------------------------------------------------------

    def want(self, ticker: str, now_ns: int | None = None) -> None:
        """The recorder wants this market's order book (idempotent). ``now_ns`` (monotonic)
        starts the error-16 grace period of a market just created."""
        if ticker not in self._wanted:
            self._wanted[ticker] = None
            self._retry.pop(ticker, None)
            if now_ns is not None:
                self._wanted_at[ticker] = now_ns

    def unwant(self, ticker: str) -> None:
        """The recorder no longer wants this market's order book (idempotent)."""
        self._wanted.pop(ticker, None)
        self._retry.pop(ticker, None)
        self._wanted_at.pop(ticker, None)
        self._unplaced.pop(ticker, None)

    def start_lifecycle(self, channels: Iterable[str]) -> None:
        """Subscribe these lifecycle channels (global, no tickers) with the next ``plan()``."""
        for channel in channels:
            life = self._lifecycles.setdefault(channel, _Lifecycle())
            if life.state is LifeState.OFF:
                life.state = LifeState.PENDING

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
        return self._lifecycles[LIFECYCLE_CHANNEL].sid

    def lifecycle_state(self, channel: str = LIFECYCLE_CHANNEL) -> LifeState:
        """Where the subscription of lifecycle ``channel`` stands."""
        life = self._lifecycles.get(channel)
        return LifeState.OFF if life is None else life.state

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

    def is_unplaced(self, ticker: str) -> bool:
        """Merged into a subscription whose sid is not known yet (see ``observe``)."""
        return ticker in self._unplaced

    def pending(self) -> tuple[str, ...]:
        """Wanted markets not yet on any sid nor on their way to one."""
        return tuple(
            t
            for t in self._wanted
            if t not in self._owner and t not in self._adding and t not in self._unplaced
        )

    @property
    def has_timers(self) -> bool:
        """Something ``expire`` must look at: deadlines, unplaced markets, trailing-ok holds."""
        return bool(self._deadline or self._unplaced or self._trailing_ok)

    def overdue(self, now_ns: int) -> list[Command]:
        """Commands in flight past their deadline (``expire`` has not run since)."""
        return [self._inflight[c] for c, at in self._deadline.items() if at < now_ns]

    def converged(self) -> bool:
        """True when nothing is in flight and the confirmed sids hold exactly the wanted markets."""
        held = [t for tickers in self._sids.values() for t in tickers]
        return (
            not self._inflight
            and len(held) == len(set(held))
            and set(held) == set(self._wanted)
            and not self._resubscribe
            and not self._snapshots
            and not self._unplaced
            and not self._orphans
            and all(
                life.state in (LifeState.OFF, LifeState.LIVE) for life in self._lifecycles.values()
            )
        )

    # -- planning -----------------------------------------------------------------------------

    def lifecycle_subscribe(
        self, next_id: Callable[[], int], channel: str = LIFECYCLE_CHANNEL
    ) -> Command:
        """The lifecycle subscribe of ``channel`` (no tickers: the channel is global)."""
        life = self._lifecycles.setdefault(channel, _Lifecycle())
        life.state = LifeState.INFLIGHT
        return self._register(_subscribe(next_id(), channel, Purpose.LIFECYCLE))

    def plan(self, next_id: Callable[[], int], now_ns: int | None = None) -> list[Command]:
        """Commands that move the exchange towards the wanted state; registers them in flight.

        ``now_ns`` (monotonic) enables retry backoff after errors; without it retries go out at
        the next call.
        """
        self._resolve_backoff(now_ns)
        commands: list[Command] = []
        for channel, life in self._lifecycles.items():
            command = self._plan_lifecycle(channel, life, next_id, now_ns)
            if command is not None:
                commands.append(command)
        for sid in list(self._orphans):
            if sid not in self._busy:
                del self._orphans[sid]
                self._retire(sid)
                commands.append(self._register(_unsubscribe(next_id(), sid, Purpose.CLEANUP)))
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

        Fallback mode and a lowered cap are kept (same exchange). Lifecycle channels are off
        until ``start_lifecycle`` (or ``lifecycle_subscribe``) again.
        """
        self._sids.clear()
        self._owner.clear()
        self._inflight.clear()
        self._deadline.clear()
        self._sent_at.clear()
        self._busy.clear()
        self._adding.clear()
        self._unplaced.clear()
        self._resubscribe.clear()
        self._snapshots.clear()
        self._snap_left.clear()
        self._snap_acked.clear()
        self._trailing_ok.clear()
        self._orphans.clear()
        self._retired.clear()
        self._unknown_sids.clear()
        self._retry.clear()
        self._sid_retry.clear()
        self._failed_subscribes.clear()
        self._broken.clear()
        self._lifecycles = {channel: _Lifecycle() for channel in self._lifecycles}

    # -- time -----------------------------------------------------------------------------------

    def sent(self, cmd_id: int, now_ns: int) -> None:
        """The shell put ``cmd_id`` on the wire at ``now_ns``: its deadline starts now (pacing
        may hold a planned command back, and that wait is not the exchange's fault)."""
        if cmd_id in self._inflight:
            self._sent_at[cmd_id] = now_ns
            self._deadline[cmd_id] = now_ns + self.command_timeout_ns

    def expire(self, now_ns: int) -> list[Event]:
        """Commands past their deadline: free their sid, say so, and re-establish the truth."""
        events: list[Event] = []
        for cmd_id in [c for c, at in self._deadline.items() if at <= now_ns]:
            command = self._inflight.get(cmd_id)
            if command is None:
                self._forget_command(cmd_id)
                continue
            waited = now_ns - self._sent_at.get(cmd_id, now_ns)
            acked = cmd_id in self._snap_acked
            self._forget_command(cmd_id)
            events.append(TimedOut(command, self._timed_out(command, acked), waited))
        for ticker in [t for t, at in self._unplaced.items() if at is not None and at <= now_ns]:
            # Merged somewhere, but no frame ever named its sid: subscribe it again.
            del self._unplaced[ticker]
            self._bump(self._retry.setdefault(ticker, _Retry()), limited=False)
        for sid in [s for s, at in self._trailing_ok.items() if at is not None and at <= now_ns]:
            del self._trailing_ok[sid]
        return events

    def _timed_out(self, command: Command, acked: bool = False) -> TimeoutThen:
        if command.purpose == Purpose.LIFECYCLE:
            life = self._lifecycles.setdefault(_channel_of(command), _Lifecycle())
            if command.cmd == Cmd.SUBSCRIBE:
                self._remember_failed(command)  # a late ``subscribed`` is still taken
                life.state = LifeState.PENDING
                self._bump(life.retry, limited=False)
                return TimeoutThen.RETRY
            if command.sid is not None:
                self._orphans[command.sid] = None
            life.state, life.sid = LifeState.PENDING, None
            return TimeoutThen.RESUBSCRIBE
        if command.purpose == Purpose.CLEANUP:
            if command.sid is not None:
                # Unknown whether it went: its next frame (if any) makes it a stray again.
                self._retired.pop(command.sid, None)
            return TimeoutThen.DROP_SID
        if command.cmd == Cmd.SUBSCRIBE:
            self._remember_failed(command)
            for ticker in command.tickers:
                # Never give up on a market for want of an answer: retry with backoff.
                self._bump(self._retry.setdefault(ticker, _Retry()), limited=False)
            return TimeoutThen.RETRY
        sid = command.sid
        if sid is None or sid not in self._sids:
            return TimeoutThen.DROP_SID
        if command.cmd == Cmd.UNSUBSCRIBE:
            self._drop_sid(sid)
            self._orphans[sid] = None
            return TimeoutThen.DROP_SID
        if command.action is UpdateAction.GET_SNAPSHOT and not acked:
            retry = self._sid_retry.setdefault(sid, _Retry())
            if self._bump(retry):
                self._snapshots.setdefault(sid, {}).update(dict.fromkeys(command.tickers))
                return TimeoutThen.SNAPSHOT
        # add/delete without an answer (or snapshots that never come): which markets the sid
        # holds is unknown; unsubscribing it and subscribing its wanted markets again is certain.
        self._resubscribe.add(sid)
        return TimeoutThen.RESUBSCRIBE

    def _forget_command(self, cmd_id: int) -> None:
        command = self._inflight.pop(cmd_id, None)
        self._deadline.pop(cmd_id, None)
        self._sent_at.pop(cmd_id, None)
        self._snap_left.pop(cmd_id, None)
        self._snap_acked.discard(cmd_id)
        if command is None:
            return
        if command.sid is not None and self._busy.get(command.sid) == cmd_id:
            del self._busy[command.sid]
        for ticker in command.tickers:
            if self._adding.get(ticker) == cmd_id:
                del self._adding[ticker]

    def _remember_failed(self, command: Command) -> None:
        self._failed_subscribes[command.cmd_id] = command
        while len(self._failed_subscribes) > 1000:
            del self._failed_subscribes[next(iter(self._failed_subscribes))]

    # -- frames that complete commands ------------------------------------------------------------

    def snapshot_arrived(self, sid: int | None, ticker: str, now_ns: int | None = None) -> None:
        """An ``orderbook_snapshot`` for ``ticker`` on ``sid``: a ``get_snapshot`` waiting for it
        is done once all its snapshots are in, whether or not an ``ok`` follows (docs/protocol.md
        §9)."""
        if sid is None:
            return
        cmd_id = self._busy.get(sid)
        if cmd_id is None:
            return
        left = self._snap_left.get(cmd_id)
        if left is None:
            return
        left.discard(ticker)
        if left:
            return
        command = self._inflight[cmd_id]
        self._forget_command(cmd_id)
        for t in command.tickers:
            self._retry.pop(t, None)
        self._sid_retry.pop(sid, None)
        if self.replies_have_ids is not True:
            self._trailing_ok[sid] = None if now_ns is None else now_ns + TRAILING_OK_HOLD_NS

    def stray(self, sid: int) -> None:
        """Data arrived on a sid we neither hold nor asked for: a subscription whose reply was
        lost (an id-less ``subscribed`` cannot be matched late). It costs bandwidth and holds
        markets twice: unsubscribe it (once)."""
        if sid in self._sids or sid in self._retired or sid in self._orphans:
            return
        if sid in self._unknown_sids:
            return
        if any(life.sid == sid for life in self._lifecycles.values()):
            return
        if any(c.cmd == Cmd.SUBSCRIBE for c in self._inflight.values()):
            return  # it may be the sid of a subscribe whose reply is still on its way
        self._orphans[sid] = None

    def _retire(self, sid: int) -> None:
        self._retired[sid] = None
        while len(self._retired) > 1000:
            del self._retired[next(iter(self._retired))]

    def observe(self, ticker: str, sid: int | None) -> list[Event]:
        """A snapshot or delta names ``ticker`` on ``sid``, a sid that does not own it here:
        identifies which subscribe an id-less ``subscribed`` answered (the one carrying this
        market), or places a market merged into a subscription whose sid the reply did not
        say. Cheap when there is nothing to identify."""
        if sid is None:
            return []
        if sid in self._unknown_sids:
            return self._identify(ticker, sid)
        held = self._sids.get(sid)
        if held is not None and ticker not in held and ticker not in self._unplaced:
            # The exchange holds it on this sid though no reply said so (a reply matched to the
            # wrong command, a lost one): take the frames' word; the next plan deletes it if
            # it is not wanted there.
            held[ticker] = None
            self._owner.setdefault(ticker, sid)
            return [SidAssigned(sid, ORDERBOOK_CHANNEL, tuple(held))]
        if not self._unplaced or ticker not in self._unplaced:
            return []
        if any(life.sid == sid for life in self._lifecycles.values()):
            return []
        del self._unplaced[ticker]
        if ticker not in self._wanted:
            return []
        held = self._sids.setdefault(sid, {})
        held[ticker] = None
        self._owner.setdefault(ticker, sid)
        self._retry.pop(ticker, None)
        return [SidAssigned(sid, ORDERBOOK_CHANNEL, tuple(held))]

    def _identify(self, ticker: str, sid: int) -> list[Event]:
        command = self._oldest(lambda c: c.cmd == Cmd.SUBSCRIBE and ticker in c.tickers)
        if command is not None:
            self._forget_command(command.cmd_id)
        else:
            command = next(
                (c for c in self._failed_subscribes.values() if ticker in c.tickers), None
            )
            if command is None:
                # No subscribe of ours carries this market any more (its market went to
                # another sid meanwhile): a stray sid, unsubscribed by ``stray``.
                del self._unknown_sids[sid]
                return []
            del self._failed_subscribes[command.cmd_id]
        del self._unknown_sids[sid]
        return self._placed(command, sid, None)

    # -- replies --------------------------------------------------------------------------------

    def _learn_ids(self, cmd_id: int | None) -> None:
        if cmd_id is not None:
            self.replies_have_ids = True
            self._trailing_ok.clear()
        elif self.replies_have_ids is None:
            self.replies_have_ids = False

    def _oldest(self, pred: Callable[[Command], bool]) -> Command | None:
        for command in self._inflight.values():  # insertion order = send order
            if pred(command):
                return command
        return None

    def on_subscribed(
        self, cmd_id: int | None, channel: str | None, sid: int, now_ns: int | None = None
    ) -> list[Event]:
        """A ``subscribed`` reply: the command's markets now live on ``sid``.

        Without an ``id`` it answers the oldest subscribe in flight for its channel."""
        self._learn_ids(cmd_id)
        if cmd_id is not None:
            command = self._inflight.get(cmd_id)
        else:
            command = self._oldest(
                lambda c: c.cmd == Cmd.SUBSCRIBE and (channel is None or _channel_of(c) == channel)
            )
            if command is not None and command.purpose != Purpose.LIFECYCLE:
                # Which of the order-book subscribes in flight is it? Lost commands and replies
                # make "the oldest" a guess; the first snapshot on the sid names its markets.
                self._unknown_sids[sid] = None
                while len(self._unknown_sids) > 1000:
                    del self._unknown_sids[next(iter(self._unknown_sids))]
                return []
        if command is not None:
            self._forget_command(command.cmd_id)
        else:
            # A subscribe we had given up on may still succeed: take the sid as the exchange has
            # it (duplicates of markets placed elsewhere since are removed by the next plan).
            late = self._failed_subscribes.pop(cmd_id, None) if cmd_id is not None else None
            if late is None:
                return []
            if late.purpose != Purpose.LIFECYCLE and sid in self._sids:
                return []
            command = late
        if command.purpose == Purpose.LIFECYCLE:
            life = self._lifecycles.setdefault(_channel_of(command), _Lifecycle())
            if life.state is LifeState.LIVE and life.sid is not None and life.sid != sid:
                self._orphans[sid] = None  # a second subscription of the same feed: drop it
                return []
            life.state = LifeState.LIVE
            life.sid = sid
            life.retry = _Retry()
            return [SidAssigned(sid, channel or _channel_of(command), ())]
        return self._placed(command, sid, channel)

    def _placed(self, command: Command, sid: int, channel: str | None) -> list[Event]:
        """The order-book subscribe ``command`` was answered with ``sid``."""
        for ticker in command.tickers:
            if self._adding.get(ticker) == command.cmd_id:
                del self._adding[ticker]
        merged = sid in self._sids
        held = self._sids.setdefault(sid, {})
        held.update(dict.fromkeys(command.tickers))
        for ticker in command.tickers:
            self._owner.setdefault(ticker, sid)
            self._retry.pop(ticker, None)
            self._unplaced.pop(ticker, None)
        events: list[Event] = []
        if merged:
            events.append(Merged(command.cmd_id, sid, command.tickers, MergeHow.EXISTING_SID))
        events.append(SidAssigned(sid, channel or ORDERBOOK_CHANNEL, tuple(held)))
        if sid in self._broken:
            # Its terminal error overtook this reply: resubscribe it right away.
            code, message = self._broken.pop(sid)
            self._resubscribe.add(sid)
            events.append(NeedsResubscribe(sid, tuple(held), code, message))
        return events

    def on_ok(
        self,
        cmd_id: int | None,
        sid: int | None,
        market_tickers: Iterable[str] | None,
        now_ns: int | None = None,
    ) -> list[Event]:
        """An ``ok`` reply to ``update_subscription``; ``market_tickers`` (the sid's full list
        after the update, when the exchange sends it) is taken as the truth for that sid.

        Without an ``id`` it answers the command in flight on its ``sid``, or (no sid either)
        the oldest command in flight that an ``ok`` can answer."""
        self._learn_ids(cmd_id)
        command: Command | None
        if cmd_id is not None:
            command = self._inflight.get(cmd_id)
        elif sid is not None:
            if sid in self._trailing_ok:
                del self._trailing_ok[sid]  # the late ok of a get_snapshot already done
                return []
            busy = self._busy.get(sid)
            command = self._inflight.get(busy) if busy is not None else None
            if command is None:
                command = self._oldest(lambda c: c.cmd == Cmd.SUBSCRIBE)
        else:
            if self._trailing_ok:
                del self._trailing_ok[next(iter(self._trailing_ok))]
                return []
            listed = None if market_tickers is None else set(market_tickers)
            command = self._oldest(
                lambda c: c.cmd in (Cmd.UPDATE_SUBSCRIPTION, Cmd.SUBSCRIBE) and _fits(c, listed)
            )
        if command is None:
            return []
        if command.cmd == Cmd.SUBSCRIBE:
            if sid is not None:
                return self.on_subscribed(command.cmd_id, None, sid, now_ns)
            return self._merged(command, market_tickers, MergeHow.OK_WITHOUT_SID, now_ns)
        if command.cmd == Cmd.UNSUBSCRIBE:
            return self.on_unsubscribed(command.cmd_id, [] if sid is None else [sid])
        if command.action is UpdateAction.GET_SNAPSHOT and self._snap_left.get(command.cmd_id):
            # Acknowledged, but done only when its snapshots are in: an exchange that does not
            # hold the market on that sid acks and sends none (the deadline then resubscribes).
            self._snap_acked.add(command.cmd_id)
            return []
        self._forget_command(command.cmd_id)
        if command.sid is None:
            return []
        for ticker in command.tickers:
            self._retry.pop(ticker, None)
        before = self._sids.get(command.sid)
        if before is None:
            return []
        batch = set(command.tickers)
        if command.action is UpdateAction.ADD_MARKETS:
            after = {**before, **dict.fromkeys(command.tickers)}
        elif command.action is UpdateAction.DELETE_MARKETS:
            after = {t: None for t in before if t not in batch}
        else:  # get_snapshot changes nothing; its ack's list may be just the requested markets
            self._sid_retry.pop(command.sid, None)
            return []
        reported = None if market_tickers is None else list(market_tickers)
        if reported is not None and set(reported) != batch:
            # The full list after the update is the exchange's truth for this sid. (A list equal
            # to the batch is read as an echo of the request, as some servers send.)
            listed = set(reported)
            after = {t: None for t in before if t in listed}
            after.update(dict.fromkeys(reported))
        return self._set_sid(command.sid, after)

    def _merged(
        self, command: Command, reported: Iterable[str] | None, how: MergeHow, now_ns: int | None
    ) -> list[Event]:
        """A subscribe answered without a new sid: merged into one we (may) already hold."""
        self._forget_command(command.cmd_id)
        if command.purpose == Purpose.LIFECYCLE:
            life = self._lifecycles.setdefault(_channel_of(command), _Lifecycle())
            life.state = LifeState.LIVE  # its frames are recognised by type; the sid stays unknown
            life.retry = _Retry()
            return [Merged(command.cmd_id, life.sid, (), how)]
        listed = set(reported) if reported is not None else None
        candidates = list(self._sids)
        placed = command.tickers
        if listed is not None:
            candidates = [s for s, held in self._sids.items() if held and set(held) <= listed]
            placed = tuple(t for t in command.tickers if t in listed)
            for ticker in command.tickers:
                if ticker not in listed:  # not in the list after the merge: not there
                    self._bump(self._retry.setdefault(ticker, _Retry()), limited=False)
        if len(candidates) == 1:
            sid = candidates[0]
            held = self._sids[sid]
            held.update(dict.fromkeys(placed))
            for ticker in placed:
                self._owner.setdefault(ticker, sid)
                self._retry.pop(ticker, None)
            return [
                Merged(command.cmd_id, sid, placed, how),
                SidAssigned(sid, ORDERBOOK_CHANNEL, tuple(held)),
            ]
        give_up_at = None if now_ns is None else now_ns + self.command_timeout_ns
        for ticker in command.tickers:
            if ticker in self._wanted and ticker not in self._owner:
                self._unplaced[ticker] = give_up_at
        return [Merged(command.cmd_id, None, command.tickers, how)]

    def on_unsubscribed(self, cmd_id: int | None, sids: Iterable[int] = ()) -> list[Event]:
        """An ``unsubscribed`` reply: the command's sid and its markets are gone.

        Without an ``id`` it answers the unsubscribe in flight on the sid it names."""
        self._learn_ids(cmd_id)
        sids = list(sids)
        command: Command | None = None
        if cmd_id is not None:
            command = self._inflight.get(cmd_id)
        else:
            for sid in sids:
                busy = self._busy.get(sid)
                candidate = self._inflight.get(busy) if busy is not None else None
                if candidate is not None and candidate.cmd == Cmd.UNSUBSCRIBE:
                    command = candidate
                    break
        if command is None or command.sid is None:
            return []
        self._forget_command(command.cmd_id)
        return self._drop_sid(command.sid)

    def on_error(
        self,
        cmd_id: int | None,
        code: int | None,
        message: str | None = "",
        market_ticker: str | None = None,
        sid: int | None = None,
        now_ns: int | None = None,
    ) -> list[Event]:
        """An ``error`` frame: classify it, repair the plan, and say what happened.

        ``sid`` matters for errors without an id: 10/17/25 on a live sid, or the answer to the
        command in flight on that sid.
        """
        message = message or ""
        self._learn_ids(cmd_id)
        if cmd_id is None:
            if code in RESUBSCRIBE_CODES:
                return self._on_async_error(code, message, sid)
            busy = self._busy.get(sid) if sid is not None else None
            command = self._inflight.get(busy) if busy is not None else None
            if command is None and market_ticker is not None:
                command = self._oldest(lambda c: market_ticker in c.tickers)
            if command is None and len(self._inflight) == 1:
                command = next(iter(self._inflight.values()))
            if command is None:
                return self._on_async_error(code, message, sid)
        else:
            command = self._inflight.get(cmd_id)
        if command is None:
            return []
        self._forget_command(command.cmd_id)

        if code == CODE_ALREADY_SUBSCRIBED and command.cmd == Cmd.SUBSCRIBE:
            # Older servers: "duplicate subscription attempt" — the markets are already there.
            return self._merged(command, None, MergeHow.ERROR_6, now_ns)

        if command.purpose == Purpose.LIFECYCLE:
            life = self._lifecycles.setdefault(_channel_of(command), _Lifecycle())
            if command.cmd == Cmd.SUBSCRIBE:
                # The lifecycle feed is the point of the recorder: never give up on it.
                life.state = LifeState.PENDING
                retrying = self._bump(life.retry, limited=False)
            else:  # unsubscribing a broken lifecycle sid: it is gone either way
                life.state, life.sid = LifeState.PENDING, None
                retrying = True
            return [self._failed(command, code, message, retrying)]

        if command.purpose == Purpose.CLEANUP:
            return [self._failed(command, code, message, False)]

        if command.cmd == Cmd.UNSUBSCRIBE and command.sid is not None:
            if code == CODE_UNKNOWN_SID:
                return self._drop_sid(command.sid)
            return self._retry_sid(command, command.sid, code, message)

        if command.cmd == Cmd.UPDATE_SUBSCRIPTION and command.sid is not None:
            if code == CODE_UNKNOWN_SID:
                return [self._failed(command, code, message, True), *self._drop_sid(command.sid)]
            if _refuses_update(code, message):
                return self._enter_fallback(command, code, message)
        if code == CODE_MARKET_LIMIT and command.action in (None, UpdateAction.ADD_MARKETS):
            return self._lower_cap(command, code, message)
        if code == CODE_MARKET_NOT_FOUND:
            if market_ticker is not None and market_ticker in command.tickers:
                if self._in_grace(market_ticker, now_ns):
                    return self._retry_tickers(command, code, message, unlimited=True)
                return self._not_found(command, market_ticker, code, message)
            if len(command.tickers) == 1 and self._in_grace(command.tickers[0], now_ns):
                return self._retry_tickers(command, code, message, unlimited=True)
        return self._retry_tickers(command, code, message)

    def _in_grace(self, ticker: str, now_ns: int | None) -> bool:
        """Wanted recently enough that "market not found" may only mean "not listed yet"."""
        at = self._wanted_at.get(ticker)
        return at is not None and now_ns is not None and now_ns - at < self.new_market_grace_ns

    # -- planning internals -----------------------------------------------------------------------

    def _register(self, command: Command) -> Command:
        self._inflight[command.cmd_id] = command
        if command.sid is not None:
            self._busy[command.sid] = command.cmd_id
        if command.cmd == Cmd.SUBSCRIBE or command.action is UpdateAction.ADD_MARKETS:
            for ticker in command.tickers:
                self._adding[ticker] = command.cmd_id
        if command.action is UpdateAction.GET_SNAPSHOT:
            self._snap_left[command.cmd_id] = set(command.tickers)
        return command

    def _plan_lifecycle(
        self, channel: str, life: _Lifecycle, next_id: Callable[[], int], now_ns: int | None
    ) -> Command | None:
        if not _due(life.retry, now_ns):
            return None
        if life.state is LifeState.PENDING:
            return self.lifecycle_subscribe(next_id, channel)
        if life.state is LifeState.RESUBSCRIBE and life.sid is not None:
            if life.sid in self._busy:
                return None
            life.state = LifeState.INFLIGHT
            return self._register(_unsubscribe(next_id(), life.sid, Purpose.LIFECYCLE))
        return None

    def _plan_sid(self, sid: int, next_id: Callable[[], int], now_ns: int | None) -> Command | None:
        """At most one command for ``sid``: resubscribe, then removals, then snapshots."""
        held = self._sids[sid]
        if sid in self._busy or not _due(self._sid_retry.get(sid), now_ns):
            return None
        if sid in self._trailing_ok:
            hold = self._trailing_ok[sid]
            if hold is None or now_ns is None or now_ns < hold:
                return None
            del self._trailing_ok[sid]
        if sid in self._resubscribe:
            return self._unsubscribe(sid, next_id, Purpose.RESUBSCRIBE)
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
                return self._unsubscribe(sid, next_id, Purpose.LEAVE)
            batch = tuple(extras[: self.max_tickers_per_command])
            return self._register(
                _update(next_id(), sid, UpdateAction.DELETE_MARKETS, batch, Purpose.LEAVE)
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
                    _update(next_id(), sid, UpdateAction.GET_SNAPSHOT, batch, Purpose.RESYNC)
                )
        return None

    def _unsubscribe(self, sid: int, next_id: Callable[[], int], purpose: Purpose) -> Command:
        return self._register(_unsubscribe(next_id(), sid, purpose, tuple(self._sids[sid])))

    def _plan_adds(self, next_id: Callable[[], int], now_ns: int | None) -> list[Command]:
        todo = [
            t
            for t in self._wanted
            if t not in self._owner
            and t not in self._adding
            and t not in self._unplaced
            and _due(self._retry.get(t), now_ns)
        ]
        commands: list[Command] = []
        if not todo:
            return commands
        if not self.fallback:
            for sid, held in self._sids.items():
                if not todo:
                    break
                if sid in self._busy or sid in self._resubscribe or sid in self._trailing_ok:
                    continue
                room = min(self.cap - len(held), self.max_tickers_per_command)
                if room <= 0:
                    continue
                batch, todo = tuple(todo[:room]), todo[room:]
                commands.append(
                    self._register(
                        _update(next_id(), sid, UpdateAction.ADD_MARKETS, batch, Purpose.JOIN)
                    )
                )
        size = min(self.cap, self.max_tickers_per_command)
        for start in range(0, len(todo), size):
            batch = tuple(todo[start : start + size])
            commands.append(
                self._register(_subscribe(next_id(), ORDERBOOK_CHANNEL, Purpose.JOIN, batch))
            )
        return commands

    def _resolve_backoff(self, now_ns: int | None) -> None:
        if now_ns is None:
            return
        lifecycle_retries = [life.retry for life in self._lifecycles.values()]
        for retry in (*self._retry.values(), *self._sid_retry.values(), *lifecycle_retries):
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
        self._retire(sid)
        for channel, life in self._lifecycles.items():
            if life.sid == sid:
                life.state, life.sid = LifeState.PENDING, None
                return [SidAssigned(sid, channel, ())]
        held = self._sids.pop(sid, None)
        self._resubscribe.discard(sid)
        self._snapshots.pop(sid, None)
        self._sid_retry.pop(sid, None)
        self._trailing_ok.pop(sid, None)
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
            for life in self._lifecycles.values():
                if life.sid == sid:
                    life.state = LifeState.RESUBSCRIBE
                    return [NeedsResubscribe(sid, (), code, message)]
            if sid in self._sids:
                self._resubscribe.add(sid)
                return [NeedsResubscribe(sid, tuple(self._sids[sid]), code, message)]
            if any(c.cmd == Cmd.SUBSCRIBE for c in self._inflight.values()):
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
        sid = command.sid
        if command.action is UpdateAction.GET_SNAPSHOT and sid is not None and sid in self._sids:
            self._resubscribe.add(sid)
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
        sid = command.sid
        if sid is not None and command.action in (
            UpdateAction.DELETE_MARKETS,
            UpdateAction.GET_SNAPSHOT,
        ):
            held = self._sids.get(sid)
            if held is not None and ticker in held:
                events += self._set_sid(sid, {t: None for t in held if t != ticker})
        if command.action is UpdateAction.GET_SNAPSHOT and sid is not None and sid in self._sids:
            rest = [t for t in command.tickers if t != ticker]
            self._snapshots.setdefault(sid, {}).update(dict.fromkeys(rest))
        return events

    def _retry_tickers(
        self, command: Command, code: int | None, message: str, unlimited: bool = False
    ) -> list[Event]:
        if command.cmd == Cmd.SUBSCRIBE:
            self._remember_failed(command)
        given_up: list[str] = []
        for ticker in command.tickers:
            retry = self._retry.setdefault(ticker, _Retry())
            if not self._bump(retry, limited=not unlimited):
                given_up.append(ticker)
        sid = command.sid
        if command.action is UpdateAction.GET_SNAPSHOT and sid is not None and sid in self._sids:
            again = [t for t in command.tickers if t not in given_up]
            if again:
                self._snapshots.setdefault(sid, {}).update(dict.fromkeys(again))
        events: list[Event] = [self._failed(command, code, message, not given_up)]
        if given_up:
            if command.action in (UpdateAction.DELETE_MARKETS, UpdateAction.GET_SNAPSHOT):
                # Next rung of the ladder: unsubscribe the whole sid and subscribe again.
                if sid is not None and sid in self._sids:
                    self._resubscribe.add(sid)
            else:
                for ticker in given_up:
                    self._wanted.pop(ticker, None)
            events.append(GaveUp(tuple(given_up), sid, code, message, command.purpose))
        return events

    def _retry_sid(self, command: Command, sid: int, code: int | None, message: str) -> list[Event]:
        retry = self._sid_retry.setdefault(sid, _Retry())
        if self._bump(retry):
            return [self._failed(command, code, message, True)]
        self._resubscribe.discard(sid)
        return [
            self._failed(command, code, message, False),
            GaveUp(command.tickers, sid, code, message, command.purpose),
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


def _fits(command: Command, listed: set[str] | None) -> bool:
    """Could an ``ok`` listing ``listed`` (a sid's markets after the command) answer it?"""
    if command.purpose == Purpose.LIFECYCLE:
        return listed is None  # a merged lifecycle subscribe lists no markets
    if listed is None or command.action is UpdateAction.GET_SNAPSHOT:
        return True
    if command.action is UpdateAction.DELETE_MARKETS:
        return not listed.intersection(command.tickers)
    return listed.issuperset(command.tickers)  # subscribe (merged) or add_markets


def _refuses_update(code: int | None, message: str) -> bool:
    text = message.lower()
    return code in FALLBACK_CODES or "unsupported" in text or "unknown command" in text

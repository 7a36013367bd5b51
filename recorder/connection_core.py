"""The sans-I/O core of one exchange connection: seqs, subscriptions, books, deadlines.

In the style of h11 and python-websockets' ``protocol.py`` (issue 11): no sockets, no asyncio, no
clock. The shell (``recorder.connection``) feeds it four kinds of input, each with the time it
happened (monotonic ns):

* ``opened(now)`` / ``closed(now, code, reason)`` — the socket came up or went down;
* ``frame(f, now)`` — a parsed inbound frame (already recorded verbatim by the shell);
* ``tick(now)`` — time passed (deadlines, retries, backoff, the silence watchdog, planning);

plus the app's ``want``/``unwant`` of markets. Every input returns *effects* for the shell to
carry out, in order: ``Send`` a command, ``Record`` a decision, hand a ``LifecycleEvent`` to the
app, ``LifecycleLive`` (the lifecycle feed is subscribed: reconcile now), ``Reconnect`` (the
connection is silent: drop it), ``Fatal`` (stop the run with exit 2).

What it guarantees, whatever the exchange sends (docs/protocol.md, and its uncertain points, §9):

* nothing raises on exchange input; replies without ``id`` are matched by sid and type;
* every command that expects an answer has a deadline (``SubscriptionManager.expire``);
* a stale or duplicate seq is never applied to a book, nor a frame from a sid that does not own
  the market; a forward gap re-snapshots every market of its sid;
* a value that cannot be stored exactly (too many decimals, overflow), a negative level, a bad
  snapshot: kept raw by the shell, one ``anomaly`` per episode, and a resync with backoff; a
  crossed book that persists for ``crossed_grace_s`` is resynced;
* keep-alive watches inbound silence (any frame, ping or pong, whatever its payload);
* a 4000-4999 close that repeats ``fatal_close_repeats`` times ends the run (exit 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

from recorder import protocol
from recorder import subscriptions as sm
from recorder.book import BookProblem, OrderBook
from recorder.config import Settings
from recorder.sequence import OK, SeqTracker, SeqVerdict
from recorder.subscriptions import Command, LifeState, SubscriptionManager
from schemas import decisions as dc
from schemas.decisions import ResyncMethod, TimeoutThen
from schemas.log import Decision
from schemas.wire import LIFECYCLE_CHANNEL, MVE_LIFECYCLE_CHANNEL

LIFECYCLE_TYPES = protocol.LIFECYCLE_TYPES
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Send:
    """Put this command on the wire (paced by the shell), then report ``sent(cmd_id, now)``."""

    command: Command


@dataclass(frozen=True, slots=True)
class Record:
    """Write this decision record to the session log."""

    decision: Decision
    payload: dict[str, Any]
    sid: int | None = None
    market_ticker: str | None = None


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """A lifecycle notice the app's rules act on (only ticker and event type are needed)."""

    ticker: str
    event_type: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LifecycleLive:
    """The lifecycle feed is subscribed on connection epoch ``epoch``: events from now on arrive
    on it, so a REST reconciliation run now misses nothing (after a reconnect)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close the socket and reconnect (the connection is silent)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Fatal:
    """Stop the run: retrying cannot help (exit 2, one clear line)."""

    message: str


Effect = Send | Record | LifecycleEvent | LifecycleLive | Reconnect | Fatal

_NOTHING: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class CoreSettings:
    """The knobs of the core. Their defaults are ``recorder.config.Settings``' (declared there
    once, each with its reason)."""

    max_markets_per_sid: int = Settings.max_markets_per_sid
    max_tickers_per_command: int = Settings.max_tickers_per_command
    command_timeout_s: float = Settings.command_timeout_s
    new_market_grace_s: float = Settings.new_market_grace_s
    silence_timeout_s: float = Settings.silence_timeout_s
    resync_backoff_initial_s: float = Settings.resync_backoff_initial_s
    resync_backoff_max_s: float = Settings.resync_backoff_max_s
    crossed_grace_s: float = Settings.crossed_grace_s
    fatal_close_repeats: int = Settings.fatal_close_repeats
    # A connection that lived this long was not refused: a 4000-4999 close starts a new count.
    stable_after_s: float = Settings.backoff_reset_after_s
    replan_every_s: float = 0.1  # plan at least this often: retries and backoffs come due
    lifecycle_channels: tuple[str, ...] = (LIFECYCLE_CHANNEL,)

    @classmethod
    def from_settings(cls, s: Settings) -> CoreSettings:
        """The core's knobs from the recorder's settings (``recorder.config`` explains each)."""
        mve = (MVE_LIFECYCLE_CHANNEL,) if s.include_mve else ()
        return cls(
            max_markets_per_sid=s.max_markets_per_sid,
            max_tickers_per_command=s.max_tickers_per_command,
            command_timeout_s=s.command_timeout_s,
            new_market_grace_s=s.new_market_grace_s,
            silence_timeout_s=s.silence_timeout_s,
            resync_backoff_initial_s=s.resync_backoff_initial_s,
            resync_backoff_max_s=s.resync_backoff_max_s,
            crossed_grace_s=s.crossed_grace_s,
            fatal_close_repeats=s.fatal_close_repeats,
            stable_after_s=s.backoff_reset_after_s,
            lifecycle_channels=(LIFECYCLE_CHANNEL, *mve),
        )


@dataclass
class _Backoff:
    count: int = 0
    last_ns: int = 0


class ConnectionCore:
    """Protocol state of one connection; see the module docstring for inputs and effects."""

    def __init__(
        self,
        index: int,
        settings: CoreSettings | None = None,
        *,
        carries_lifecycle: bool = False,
        url: str = "",
    ) -> None:
        self.cfg = settings or CoreSettings()
        self.index = index
        self.url = url
        self.carries_lifecycle = carries_lifecycle
        self.epoch = 0
        self.is_open = False
        self.seq = SeqTracker()
        self.subs = SubscriptionManager(
            max_markets_per_sid=self.cfg.max_markets_per_sid,
            max_tickers_per_command=self.cfg.max_tickers_per_command,
            command_timeout_s=self.cfg.command_timeout_s,
            new_market_grace_s=self.cfg.new_market_grace_s,
        )
        self._seq_last = self.seq._last  # the hot path reads them directly (same dicts)
        self._owner = self.subs._owner
        self.books: dict[str, OrderBook] = {}
        self.anchored: set[str] = set()
        self.resyncing: set[str] = set()
        self.gaps = 0
        """Forward seq gaps seen (status line and ``recorder_seq_gaps``)."""
        self.error_replies = 0
        """Error replies from the exchange (``recorder_error_replies``)."""
        self._flagged: set[str] = set()  # markets with an anomaly this episode (one record each)
        self._crossed_since: dict[str, int] = {}
        self._backoff: dict[str, _Backoff] = {}
        self._resync_due: dict[str, int] = {}  # ticker -> monotonic ns when its resync may go
        self._unanchored_since: dict[str, int] = {}  # on a sid, no trusted book since then
        self._last_audit_ns = 0
        self._next_id = 0
        self._dirty = True
        self._last_plan_ns: int | None = None
        self._last_inbound_ns = 0
        self._opened_ns = 0
        self._closing = False
        self._live_reported = False
        self._close_streak = 0
        self._silence_ns = int(self.cfg.silence_timeout_s * _NS)
        self._crossed_ns = int(self.cfg.crossed_grace_s * _NS)
        self._replan_ns = int(self.cfg.replan_every_s * _NS)

    # ----------------------------------------------------------------- app inputs
    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def want(self, ticker: str, now_ns: int | None = None) -> None:
        """Open this market's book (the app joined it)."""
        self.books.setdefault(ticker, OrderBook())
        self.subs.want(ticker, now_ns)
        self._dirty = True

    def unwant(self, ticker: str) -> None:
        """Close this market's book (the app left it); its per-market state goes with it."""
        self.subs.unwant(ticker)
        self._unanchored_since.pop(ticker, None)
        self.books.pop(ticker, None)
        self.anchored.discard(ticker)
        self.resyncing.discard(ticker)
        self._flagged.discard(ticker)
        self._crossed_since.pop(ticker, None)
        self._backoff.pop(ticker, None)
        self._resync_due.pop(ticker, None)
        self._dirty = True

    @property
    def reconnects(self) -> int:
        """Every epoch after the first is a reconnect."""
        return max(self.epoch - 1, 0)

    @property
    def dirty(self) -> bool:
        """Something changed that a ``tick`` should plan commands for."""
        return self._dirty

    def sent(self, cmd_id: int, now_ns: int) -> None:
        """The shell sent ``cmd_id`` now: its answer deadline starts."""
        self.subs.sent(cmd_id, now_ns)

    def inbound(self, now_ns: int) -> None:
        """Something arrived (a ping or a pong, whatever its payload): the connection lives."""
        self._last_inbound_ns = now_ns

    # ----------------------------------------------------------------- connection inputs
    def opened(self, now_ns: int) -> list[Effect]:
        """The socket is up: a new epoch; subscribe lifecycle (if ours) and every wanted book."""
        self.epoch += 1
        self.is_open = True
        self._closing = False
        self._live_reported = False
        self._last_inbound_ns = now_ns
        self._opened_ns = now_ns
        if self.carries_lifecycle:
            self.subs.start_lifecycle(self.cfg.lifecycle_channels)
        self._dirty = True
        out: list[Effect] = [
            self._record(dc.Connected(url=self.url)),
        ]
        out += self._plan(now_ns)
        return out

    def closed(
        self,
        now_ns: int,
        code: int | None = None,
        close_reason: str | None = None,
        reason: str = "",
    ) -> list[Effect]:
        """The socket is down. ``code``/``close_reason``: the close frame the exchange sent."""
        if not self.is_open:
            return []
        gone = dc.Disconnected(
            reason=reason or "closed", code=code, close_reason=close_reason or None
        )
        out: list[Effect] = [self._record(gone)]
        self.is_open = False
        self.seq.reset()
        self.subs.reset()
        self.anchored.clear()
        self.resyncing.clear()
        self._flagged.clear()
        self._crossed_since.clear()
        self._resync_due.clear()
        self._unanchored_since.clear()
        lived_ns = now_ns - self._opened_ns
        if code is not None and 4000 <= code <= 4999:
            stable = lived_ns >= self.cfg.stable_after_s * _NS
            self._close_streak = 1 if stable else self._close_streak + 1
            if self._close_streak >= self.cfg.fatal_close_repeats:
                detail = f"{code} {close_reason}".strip() if close_reason else str(code)
                out.append(
                    self._record(
                        dc.FatalClose(
                            code=code, close_reason=close_reason, repeats=self._close_streak
                        )
                    )
                )
                out.append(
                    Fatal(
                        f"the exchange closed connection {self.index} with code {detail} "
                        f"{self._close_streak} times in a row (4000-4999 = not retryable, usually "
                        "authentication): check KALSHI_API_KEY_ID, the private key, the "
                        "environment (prod/demo keys differ) and this machine's clock"
                    )
                )
        else:
            self._close_streak = 0
        return out

    # ----------------------------------------------------------------- time
    def tick(self, now_ns: int) -> list[Effect]:
        """Time passed: watchdog, deadlines, delayed resyncs, persistent crossed books, plan."""
        if not self.is_open:
            return []
        out: list[Effect] = []
        if not self._closing and now_ns - self._last_inbound_ns > self._silence_ns:
            self._closing = True
            silent_s = (now_ns - self._last_inbound_ns) / _NS
            return [Reconnect(f"inbound silence: nothing received for {silent_s:.1f}s")]
        if self.subs.has_timers:
            events = self.subs.expire(now_ns)
            if events:
                out += self._events(events)
        if self._resync_due:
            due = [t for t, at in self._resync_due.items() if at <= now_ns]
            for ticker in due:
                del self._resync_due[ticker]
                sid = self.subs.sid_of(ticker)
                if sid is not None and ticker in self.books:
                    out += self._request_snapshot(sid, [ticker], now_ns)
        if now_ns - self._last_audit_ns >= _NS:
            self._last_audit_ns = now_ns
            out += self._audit(now_ns)
        if self._crossed_since:
            for ticker, since in list(self._crossed_since.items()):
                if now_ns - since >= self._crossed_ns and ticker in self.anchored:
                    del self._crossed_since[ticker]
                    out += self._anomaly(
                        ticker, self.subs.sid_of(ticker), BookProblem.CROSSED_PERSISTS, ""
                    )
                    out += self._resync_with_backoff(ticker, now_ns)
        if (
            self._dirty
            or self._last_plan_ns is None
            or now_ns - self._last_plan_ns >= self._replan_ns
        ):
            out += self._plan(now_ns)
        return out

    def _audit(self, now_ns: int) -> list[Effect]:
        """Once a second: a wanted market on a sid with no trusted book for two command
        deadlines (its snapshot never came: a reply matched to the wrong command, an exchange
        that does not hold it after all) gets a snapshot asked for; if the exchange sends none,
        that request's deadline unsubscribes the sid and subscribes its markets again."""
        out: list[Effect] = []
        limit = 2 * self.subs.command_timeout_ns
        waiting = self._unanchored_since
        for ticker in self.books:
            if ticker in self.anchored or ticker in self._resync_due:
                waiting.pop(ticker, None)
                continue
            sid = self._owner.get(ticker)
            if sid is None:
                waiting.pop(ticker, None)
                continue
            since = waiting.setdefault(ticker, now_ns)
            if now_ns - since >= limit:
                waiting[ticker] = now_ns
                detail = f"no snapshot on sid {sid} for {(now_ns - since) // _NS}s"
                out += self._anomaly(ticker, sid, BookProblem.NO_SNAPSHOT, detail)
                out += self._request_snapshot(sid, [ticker], now_ns)
        return out

    def overdue(self, now_ns: int) -> list[Command]:
        """Commands in flight past their deadline (always empty right after a ``tick``)."""
        return self.subs.overdue(now_ns)

    # ----------------------------------------------------------------- frames
    def delta(self, d: protocol.DeltaFields, now_ns: int) -> Sequence[Effect] | None:
        """The hot path, for a delta ``protocol.decode_delta`` read: the next seq on the sid that
        owns an anchored market, applied to a book that stays sane. None: nothing was changed,
        give the shell's ``parse_frame`` of it to ``frame`` (the careful path)."""
        sid, seq, ticker, side, price, delta, _ = d
        last = self._seq_last.get(sid)
        if last is None or seq != last + 1 or self._owner.get(ticker) != sid:
            return None
        if ticker not in self.anchored:
            return None
        self._last_inbound_ns = now_ns
        self._seq_last[sid] = seq
        book = self.books[ticker]
        problem = book.apply_delta(side, price, delta)
        if problem is None and ticker not in self._crossed_since and not book.crossed():
            return _NOTHING
        return self._after_apply(ticker, sid, seq, book, problem, now_ns)

    def frame(self, f: protocol.Frame, now_ns: int) -> Sequence[Effect]:
        """One inbound frame (the shell has already recorded it verbatim)."""
        self._last_inbound_ns = now_ns
        t = f.msg_type
        if t == "orderbook_delta":
            # A complete delta (e.g. in the legacy format, which decode_delta leaves to the
            # careful parser) takes the same fast rule as ``delta``; anything else, or anything
            # that rule declines, the careful path.
            fields = (f.sid, f.seq, f.market_ticker, f.side, f.price, f.delta, f.ts_ms)
            if not f.malformed and None not in fields[:6]:
                effects = self.delta(fields, now_ns)  # type: ignore[arg-type]
                if effects is not None:
                    return effects
            return self._on_delta(f, now_ns)
        if t == "orderbook_snapshot":
            return self._on_snapshot(f, now_ns)
        if t in LIFECYCLE_TYPES:
            return self._on_lifecycle(f)
        if f.malformed:
            return _NOTHING  # kept verbatim and counted by the session log
        if t == "subscribed":
            info = protocol.subscribed_sid(f)
            if info is None:
                return _NOTHING
            return self._after_reply(self.subs.on_subscribed(f.cmd_id, info[0], info[1], now_ns))
        if t == "ok":
            gap: list[Effect] = []
            if f.sid is not None and f.seq is not None:
                v = self.seq.on_reply(f.sid, f.seq)
                if v.is_gap:
                    gap = self._seq_verdict(f.sid, v, now_ns)
            if protocol.list_subscriptions_reply(f) is not None:
                return gap  # we never ask; recorded only
            return gap + self._after_reply(
                self.subs.on_ok(f.cmd_id, f.sid, protocol.ok_market_tickers(f), now_ns)
            )
        if t == "unsubscribed":
            sids = protocol.unsubscribed_sids(f)
            if f.sid is not None and f.seq is not None:
                self.seq.on_reply(f.sid, f.seq)
            for sid in sids:
                self.seq.forget(sid)
            return self._after_reply(self.subs.on_unsubscribed(f.cmd_id, sids))
        if t == "error":
            code, message, ticker = protocol.error_info(f)
            self.error_replies += 1
            out: list[Effect] = []
            if f.cmd_id is None and f.sid is not None and code == 25:
                out.append(
                    self._record(dc.Loss(sid=f.sid, detail=f"error {code}: {message}"), f.sid)
                )
            events = self.subs.on_error(f.cmd_id, code, message, ticker, f.sid, now_ns)
            out += self._after_reply(events)
            return out
        return _NOTHING  # event_lifecycle, event_fee_update, ticker, unknown: recorded only

    def _after_reply(self, events: list[sm.Event]) -> list[Effect]:
        self._dirty = True
        out = self._events(events) if events else []
        live = self.carries_lifecycle and self.subs.lifecycle_state() is LifeState.LIVE
        if live and not self._live_reported:
            self._live_reported = True
            out.append(LifecycleLive(self.epoch))
        return out

    def _on_lifecycle(self, f: protocol.Frame) -> Sequence[Effect]:
        ticker, event_type = f.market_ticker, f.event_type
        if ticker is None or event_type is None:
            return _NOTHING  # nothing to act on; the frame is kept verbatim
        body = f.body if isinstance(f.body, dict) else {}
        msg = body.get("msg")
        fields = msg if isinstance(msg, dict) else {}
        event = LifecycleEvent(ticker, event_type, fields)
        if not f.malformed:
            return (event,)
        # A mistyped optional field: stored null by the parser; acted on all the same.
        flag = self._record(
            dc.LifecycleFlagged(
                market_ticker=ticker, event_type=event_type, problem=f.problem or ""
            ),
            market_ticker=ticker,
        )
        return (flag, event)

    # ----------------------------------------------------------------- books
    def _on_delta(self, f: protocol.Frame, now_ns: int) -> Sequence[Effect]:
        """The hot path: seq check, then apply to the book if it is anchored on the right sid."""
        sid, seq = f.sid, f.seq
        out: list[Effect] | None = None
        if sid is not None and seq is not None:
            v = self.seq.on_data(sid, seq)
            if v is not OK:
                out = self._seq_verdict(sid, v, now_ns)
                if v.is_stale:
                    return out  # recorded and flagged, never applied
        ticker = f.market_ticker
        if ticker is None:
            return out or _NOTHING
        if sid is not None and self.subs.sid_of(ticker) != sid:
            events = self.subs.observe(ticker, sid)
            if events:
                out = (out or []) + self._events(events)
            if self.subs.sid_of(ticker) != sid:
                # Another sid's copy of this market (a lost reply or unsubscribe): not applied.
                self.subs.stray(sid)
                return out or _NOTHING
        if ticker not in self.anchored:
            if ticker in self.books and ticker not in self.resyncing:
                # Its sid carries deltas but its snapshot never came (lost, or an exchange that
                # sends none after add_markets): ask for one rather than wait for ever.
                what = BookProblem.DELTA_BEFORE_SNAPSHOT
                out = (out or []) + self._bad_book(ticker, sid, what, f"seq {seq}", now_ns)
            return out or _NOTHING
        side, price, delta = f.side, f.price, f.delta
        if f.malformed or side is None or price is None or delta is None:
            # Cannot be applied exactly: kept raw by the shell; the book is no longer the truth.
            detail = f.problem or "missing side, price or size"
            out = (out or []) + self._bad_book(
                ticker, sid, BookProblem.INEXACT_VALUE, detail, now_ns
            )
            return out
        book = self.books[ticker]
        problem = book.apply_delta(side, price, delta)
        return self._after_apply(ticker, sid, seq, book, problem, now_ns, out)

    def _after_apply(
        self,
        ticker: str,
        sid: int | None,
        seq: int | None,
        book: OrderBook,
        problem: BookProblem | None,
        now_ns: int,
        out: list[Effect] | None = None,
    ) -> Sequence[Effect]:
        if problem is not None:
            out = (out or []) + self._bad_book(ticker, sid, problem, f"seq {seq}", now_ns)
        elif book.crossed():
            if ticker not in self._crossed_since:  # once per episode, not once per delta
                self._crossed_since[ticker] = now_ns
                out = (out or []) + self._anomaly(
                    ticker, sid, BookProblem.CROSSED_BOOK, f"seq {seq}"
                )
            elif now_ns - self._crossed_since[ticker] >= self._crossed_ns:
                del self._crossed_since[ticker]
                out = (out or []) + self._anomaly(
                    ticker, sid, BookProblem.CROSSED_PERSISTS, f"seq {seq}"
                )
                out += self._resync_with_backoff(ticker, now_ns)
        elif ticker in self._crossed_since:
            del self._crossed_since[ticker]
        return out or _NOTHING

    def _on_snapshot(self, f: protocol.Frame, now_ns: int) -> Sequence[Effect]:
        sid = f.sid
        out: list[Effect] = []
        if sid is not None and f.seq is not None:
            v = self.seq.on_data(sid, f.seq)
            if v is not OK:
                out += self._seq_verdict(sid, v, now_ns)
                if v.is_stale:
                    return out
        ticker = f.market_ticker
        if ticker is None:
            return out
        if sid is not None and self.subs.sid_of(ticker) != sid:
            out += self._events(self.subs.observe(ticker, sid))
            if self.subs.sid_of(ticker) != sid:
                # Not the sid this market's book follows: never anchor on it.
                self.subs.stray(sid)
                return out
        self.subs.snapshot_arrived(sid, ticker, now_ns)
        self._dirty = True
        book = self.books.get(ticker)
        if book is None:
            return out  # a market we no longer want; the frame is recorded anyway
        if f.malformed:
            return out + self._bad_book(
                ticker, sid, BookProblem.BAD_SNAPSHOT, f.problem or "", now_ns
            )
        try:
            yes, no = protocol.snapshot_levels(f.body)
        except ValueError as exc:
            return out + self._bad_book(ticker, sid, BookProblem.BAD_SNAPSHOT, str(exc), now_ns)
        book.apply_snapshot(yes, no)
        self.anchored.add(ticker)
        self.resyncing.discard(ticker)
        self._flagged.discard(ticker)
        self._crossed_since.pop(ticker, None)
        if book.crossed():
            self._crossed_since[ticker] = now_ns
            out += self._anomaly(ticker, sid, BookProblem.CROSSED_BOOK, "snapshot crossed")
        return out

    def _bad_book(
        self, ticker: str, sid: int | None, what: BookProblem, detail: str, now_ns: int
    ) -> list[Effect]:
        """The book of ``ticker`` cannot be trusted: one anomaly, unanchor, resync with backoff."""
        out: list[Effect] = []
        if ticker not in self._flagged:  # once per episode: until a snapshot anchors it again
            self._flagged.add(ticker)
            out += self._anomaly(ticker, sid, what, detail)
        self.anchored.discard(ticker)
        self.resyncing.add(ticker)
        self._crossed_since.pop(ticker, None)
        out += self._resync_with_backoff(ticker, now_ns)
        return out

    def _resync_with_backoff(self, ticker: str, now_ns: int) -> list[Effect]:
        """Re-snapshot one market, at most once per backoff step (a market whose values keep
        failing must not turn into a snapshot storm)."""
        self.anchored.discard(ticker)
        self.resyncing.add(ticker)
        if ticker in self._resync_due:
            return []
        b = self._backoff.setdefault(ticker, _Backoff())
        max_ns = int(self.cfg.resync_backoff_max_s * _NS)
        if b.count and now_ns - b.last_ns > 2 * max_ns:
            b.count = 0  # it behaved for a long while: start over
        delay = 0
        if b.count:
            delay = min(max_ns, int(self.cfg.resync_backoff_initial_s * _NS) << (b.count - 1))
        b.count = min(b.count + 1, 32)
        due = b.last_ns + delay if b.count > 1 else now_ns
        b.last_ns = max(now_ns, due)
        if due > now_ns:
            self._resync_due[ticker] = due
            return []
        sid = self.subs.sid_of(ticker)
        if sid is None:
            return []  # not on a sid yet: its subscribe brings a snapshot
        return self._request_snapshot(sid, [ticker], now_ns)

    def _seq_verdict(self, sid: int, v: SeqVerdict, now_ns: int) -> list[Effect]:
        """The rare path of a seq check: first frame, gap, or stale."""
        if v.is_gap:
            self.gaps += 1
            tickers = sorted(self.subs.tickers_of(sid))
            out: list[Effect] = [
                self._record(
                    dc.Gap(sid=sid, expected=v.expected, got=v.got, market_tickers=tickers), sid
                )
            ]
            # Markets already left (delete in flight) need no fresh book.
            chosen = [t for t in tickers if t in self.books]
            for t in chosen:
                self._resync_due.pop(t, None)
            out += self._request_snapshot(sid, chosen, now_ns)
            return out
        if v.is_stale:
            return [self._record(dc.StaleSeq(sid=sid, last=v.last, got=v.got), sid)]
        return []

    def _request_snapshot(self, sid: int, tickers: list[str], now_ns: int) -> list[Effect]:
        """Fresh snapshots of ``tickers`` of ``sid``: ``get_snapshot``, or in fallback mode (no
        ``update_subscription``) unsubscribe + subscribe of the sid."""
        if not tickers:
            return []
        fallback = self.subs.fallback
        method = ResyncMethod.RESUBSCRIBE if fallback else ResyncMethod.GET_SNAPSHOT
        out = self._unanchor(sid, tickers, method)
        cmds = self.subs.request_snapshot(sid, tickers, self.next_id, now_ns)
        out += [Send(c) for c in cmds]
        self._dirty = True
        return out

    def _unanchor(self, sid: int, tickers: list[str], method: ResyncMethod) -> list[Effect]:
        for t in tickers:
            self.anchored.discard(t)
            self.resyncing.add(t)
        return [self._record(dc.Resync(sid=sid, market_tickers=tickers, method=method), sid)]

    def _anomaly(
        self, ticker: str, sid: int | None, what: BookProblem, detail: str
    ) -> list[Effect]:
        return [
            self._record(
                dc.Anomaly(market_ticker=ticker, sid=sid, what=what, detail=detail), sid, ticker
            )
        ]

    # ----------------------------------------------------------------- plumbing
    def _plan(self, now_ns: int) -> list[Effect]:
        self._dirty = False
        self._last_plan_ns = now_ns
        return [Send(c) for c in self.subs.plan(self.next_id, now_ns)]

    def _record(
        self,
        d: dc.DecisionPayload,
        sid: int | None = None,
        market_ticker: str | None = None,
    ) -> Record:
        """``conn``/``epoch`` are the record's columns (the shell writes them), not payload."""
        return Record(d.KIND, d.payload(), sid, market_ticker)

    def _events(self, events: list[sm.Event]) -> list[Effect]:
        """The subscription manager's events as records (and unanchored books)."""
        out: list[Effect] = []
        for ev in events:
            match ev:
                case sm.SidAssigned():
                    if not ev.tickers:
                        self.seq.forget(ev.sid)
                    held = sorted(ev.tickers)
                    sub = dc.Subscription(sid=ev.sid, channel=ev.channel, market_tickers=held)
                    out.append(self._record(sub, ev.sid))
                case sm.NeedsResubscribe():
                    # The manager already planned unsubscribe + subscribe of that sid.
                    held = [t for t in ev.tickers if t in self.books]
                    out += self._unanchor(ev.sid, held, ResyncMethod.RESUBSCRIBE)
                case sm.TimedOut():
                    out += self._timed_out(ev)
                case sm.Merged():
                    merged = dc.SubscriptionMerged(
                        cmd_id=ev.cmd_id, sid=ev.sid, market_tickers=list(ev.tickers), how=ev.how
                    )
                    out.append(self._record(merged, ev.sid))
                case (
                    sm.Fallback()
                    | sm.CapLowered()
                    | sm.MarketNotFound()
                    | sm.CommandFailed()
                    | sm.GaveUp()
                ):
                    out.append(self._record(dc.Anomaly(what=type(ev).__name__, detail=repr(ev))))
                case _:
                    assert_never(ev)
        self._dirty = True
        return out

    def _timed_out(self, ev: sm.TimedOut) -> list[Effect]:
        """A command went unanswered: record it; if its sid is dropped or resubscribed, the
        books it carried are no longer anchored."""
        c = ev.command
        timeout = dc.CommandTimeout(
            cmd_id=c.cmd_id,
            cmd=c.cmd,
            purpose=c.purpose,
            sid=c.sid,
            market_tickers=list(c.tickers),
            waited_ms=ev.waited_ns // 1_000_000,
            then=ev.then,
            action=c.action,
        )
        out: list[Effect] = [self._record(timeout, c.sid)]
        if ev.then in (TimeoutThen.RESUBSCRIBE, TimeoutThen.DROP_SID) and c.sid is not None:
            held = [t for t in self.subs.tickers_of(c.sid) if t in self.books]
            gone = [t for t in c.tickers if t in self.books and t not in held]
            if held or gone:
                out += self._unanchor(c.sid, held + gone, ResyncMethod.RESUBSCRIBE)
        return out

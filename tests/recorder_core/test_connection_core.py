"""recorder.connection_core against the reference exchange, with simulated time (no I/O).

Fast unit tests of each promise of issue 11 on the recorder side, then a hypothesis state machine
over interleavings of frames, replies, lost replies, drops and clock ticks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from recorder.connection_core import (
    ConnectionCore,
    CoreSettings,
    Effect,
    Fatal,
    LifecycleEvent,
    LifecycleLive,
    Reconnect,
    Record,
    Send,
)
from recorder.protocol import parse_frame
from recorder.subscriptions import Command
from schemas.log import Decision
from tests.recorder_core.wire_exchange import PRICES, WireExchange

S = 1_000_000_000


class Driver:
    """Wires one core to one reference exchange; commands reach the exchange when sent, frames
    reach the core when the test delivers them."""

    def __init__(self, ex: WireExchange | None = None, **cfg: Any) -> None:
        self.ex = ex or WireExchange()
        cfg.setdefault("max_markets_per_sid", 3)
        self.core = ConnectionCore(0, CoreSettings(**cfg), carries_lifecycle=True, url="ws://x")
        self.now = 1_000 * S
        self.records: list[Record] = []
        self.events: list[LifecycleEvent] = []
        self.live: list[int] = []
        self.reconnects: list[str] = []
        self.fatal: list[str] = []
        self.sent: list[Command] = []
        self.lose_commands = 0  # the next N commands never reach the exchange

    def apply(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            if isinstance(e, Send):
                self.sent.append(e.command)
                self.core.sent(e.command.cmd_id, self.now)
                if self.lose_commands:
                    self.lose_commands -= 1
                else:
                    self.ex.handle(e.command)
            elif isinstance(e, Record):
                self.records.append(e)
            elif isinstance(e, LifecycleEvent):
                self.events.append(e)
            elif isinstance(e, LifecycleLive):
                self.live.append(e.epoch)
            elif isinstance(e, Reconnect):
                self.reconnects.append(e.reason)
            elif isinstance(e, Fatal):
                self.fatal.append(e.message)

    def open(self) -> None:
        self.apply(self.core.opened(self.now))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.ex.disconnect()
        self.apply(self.core.closed(self.now, code, reason, reason="test"))

    def frame(self, raw: bytes) -> None:
        self.apply(self.core.frame(parse_frame(raw), self.now))

    def deliver(self, n: int | None = None) -> None:
        count = 0
        while self.ex.outbox and (n is None or count < n):
            self.frame(self.ex.outbox.pop(0))
            count += 1
            if count > 10_000:
                raise AssertionError("livelock: frames answer commands that cause frames")

    def tick(self, seconds: float = 0.05) -> None:
        self.now += int(seconds * S)
        self.apply(self.core.tick(self.now))

    def settle(self, seconds: float = 60.0, step: float = 0.05) -> None:
        end = self.now + int(seconds * S)
        while self.now < end:
            self.deliver()
            self.tick(step)
        self.deliver()

    def want(self, *tickers: str) -> None:
        for t in tickers:
            self.core.want(t, self.now)

    def decisions(self, d: Decision) -> list[dict[str, Any]]:
        return [r.payload for r in self.records if r.decision is d]

    def book_is_true(self, ticker: str) -> bool:
        book = self.core.books[ticker]
        mine = {("yes", p): s for p, s in book.yes.items()} | {
            ("no", p): s for p, s in book.no.items()
        }
        return mine == self.ex.book(ticker)


def started(ex: WireExchange | None = None, **cfg: Any) -> Driver:
    d = Driver(ex, **cfg)
    d.open()
    d.settle(0.2)
    return d


def subscribed_everywhere(d: Driver, tickers: Iterable[str]) -> bool:
    return all(
        d.ex.holder(t) is not None and d.core.subs.sid_of(t) == d.ex.holder(t) for t in tickers
    )


# ---- the basics ------------------------------------------------------------------------------


def test_open_subscribes_lifecycle_and_wanted_books() -> None:
    d = started()
    assert d.live == [1]
    d.want("A", "B")
    d.settle(0.5)
    assert subscribed_everywhere(d, ["A", "B"])
    assert d.core.anchored == {"A", "B"}
    assert d.book_is_true("A") and d.book_is_true("B")
    assert len(d.decisions(Decision.CONNECTED)) == 1 and d.core.epoch == 1


def test_include_mve_subscribes_both_lifecycle_channels() -> None:
    d = started(lifecycle_channels=("market_lifecycle_v2", "multivariate_market_lifecycle"))
    channels = sorted(c.params["channels"][0] for c in d.sent if c.cmd == "subscribe")
    assert channels == ["market_lifecycle_v2", "multivariate_market_lifecycle"]
    assert set(d.ex.lifecycle.values()) == set(channels)


def test_lifecycle_notice_with_a_mistyped_optional_field_is_acted_on_and_flagged() -> None:
    d = started()
    d.ex.lifecycle_notice("A", "created", open_ts="soon", close_ts=12)
    d.deliver()
    assert [(e.ticker, e.event_type) for e in d.events] == [("A", "created")]
    [flag] = d.decisions(Decision.LIFECYCLE_FLAGGED)
    assert flag["market_ticker"] == "A" and "open_ts" in flag["problem"]
    # without ticker or event type there is nothing to act on: recorded only, no crash
    d.frame(b'{"type":"market_lifecycle_v2","sid":1,"msg":{"event_type":7}}')
    assert len(d.events) == 1


# ---- replies the notes do not promise ----------------------------------------------------------


@pytest.mark.parametrize("snapshot_ok", ["before", "after", "none"])
@pytest.mark.parametrize("ids", [True, False])
def test_get_snapshot_completes_with_or_without_ok_and_id(snapshot_ok: str, ids: bool) -> None:
    d = started(WireExchange(ids=ids, snapshot_ok=snapshot_ok))
    d.want("A", "B")
    d.settle(0.5)
    sid = d.core.subs.sid_of("A")
    assert sid is not None
    # a seq gap on the sid: both markets re-snapshotted
    d.ex.delta("A", "yes", PRICES[2], 50, lose=True)
    d.ex.delta("A", "yes", PRICES[2], 50)
    d.settle(1.0)
    assert d.decisions(Decision.GAP)
    assert d.core.anchored == {"A", "B"} and d.book_is_true("A")
    assert d.core.subs.in_flight == 0, "the get_snapshot is done once its snapshots arrived"
    # the sid is free: a later leave goes out at once, and is answered
    d.core.unwant("A")
    d.settle(1.0)
    deletes = [c for c in d.sent if c.action == "delete_markets"]
    assert deletes and deletes[-1].tickers == ("A",)
    assert d.ex.holder("A") is None and d.core.subs.converged()
    assert not d.decisions(Decision.COMMAND_TIMEOUT)


@pytest.mark.parametrize("mode", ["merge", "error6", "new_sid"])
def test_repeat_subscribe_merged_new_sid_or_error_6(mode: str) -> None:
    d = started(WireExchange(repeat_subscribe=mode), max_markets_per_sid=2)
    d.want("A", "B")
    d.settle(0.5)
    d.want("C", "D")  # no room on the first sid: a second subscribe
    d.settle(1.0)
    assert subscribed_everywhere(d, ["A", "B", "C", "D"]), d.ex.sids
    assert d.core.anchored == {"A", "B", "C", "D"}
    if mode == "merge":
        [m] = d.decisions(Decision.SUBSCRIPTION_MERGED)
        assert m["how"] == "ok_without_sid" and m["sid"] == d.ex.holder("C")


def test_error_6_for_a_market_the_exchange_still_holds_places_it_from_its_frames() -> None:
    d = started(WireExchange(repeat_subscribe="error6"))
    d.want("A")
    d.settle(0.5)
    sid = d.ex.holder("A")
    assert sid is not None
    d.core.subs.reset()  # the recorder forgot (say, a lost reply): it will subscribe A again
    d.core.subs.start_lifecycle(["market_lifecycle_v2"])
    d.settle(0.5)
    assert d.decisions(Decision.SUBSCRIPTION_MERGED)[-1]["how"] == "error_6"
    d.ex.delta("A", "yes", PRICES[2], 10)
    d.deliver()
    assert d.core.subs.sid_of("A") == sid


def test_a_lost_reply_times_out_frees_the_sid_and_re_establishes_the_truth() -> None:
    d = started(command_timeout_s=2.0)
    d.want("A", "B")
    d.settle(0.5)
    d.core.unwant("B")
    d.tick()  # the delete goes out ...
    d.ex.outbox.clear()  # ... and its ok is lost
    d.settle(1.0)
    assert not d.decisions(Decision.COMMAND_TIMEOUT) and d.core.subs.in_flight == 1
    d.settle(2.0)
    [t] = d.decisions(Decision.COMMAND_TIMEOUT)
    assert t["action"] == "delete_markets" and t["then"] == "resubscribe"
    assert t["waited_ms"] >= 2000
    d.settle(3.0)
    assert d.ex.holder("B") is None and subscribed_everywhere(d, ["A"])
    assert d.core.anchored == {"A"} and d.book_is_true("A")
    assert d.core.overdue(d.now) == []


def test_a_lost_subscribe_is_sent_again_and_a_late_answer_is_taken() -> None:
    d = started(command_timeout_s=1.0)
    d.lose_commands = 1
    d.want("A")
    d.settle(0.5)
    assert d.ex.holder("A") is None
    d.settle(3.0)
    [t] = d.decisions(Decision.COMMAND_TIMEOUT)
    assert t["cmd"] == "subscribe" and t["then"] == "retry"
    assert subscribed_everywhere(d, ["A"]) and d.core.anchored == {"A"}


def test_lost_lifecycle_subscribe_is_retried_for_ever() -> None:
    d = Driver(command_timeout_s=1.0)
    d.lose_commands = 3
    d.open()
    d.settle(20.0)
    assert len(d.decisions(Decision.COMMAND_TIMEOUT)) == 3
    assert d.live == [1] and len(d.ex.lifecycle) == 1


def test_async_error_resubscribes_the_sid() -> None:
    d = started()
    d.want("A")
    d.settle(0.5)
    sid = d.ex.holder("A")
    assert sid is not None
    assert d.core.error_replies == 0
    d.ex.kill_sid(sid, 25)
    d.settle(1.0)
    # the async 25, and the 7 answering our unsubscribe of the dead sid (recorder_error_replies)
    assert d.core.error_replies == 2
    assert d.decisions(Decision.LOSS)
    assert subscribed_everywhere(d, ["A"]) and d.ex.holder("A") != sid
    assert d.core.anchored == {"A"} and d.book_is_true("A")


def test_error_16_is_retried_during_the_grace_period_then_given_up() -> None:
    ex = WireExchange(unlisted={"NEW"})
    d = started(ex, new_market_grace_s=5.0)
    d.want("NEW")
    d.settle(1.0)
    assert d.ex.holder("NEW") is None and "NEW" in d.core.subs.wanted  # still trying
    ex.unlisted.clear()  # listed a moment after it was announced
    d.settle(3.0)
    assert subscribed_everywhere(d, ["NEW"])
    ex.unlisted.add("OLD")
    d.now += 10 * S
    d.want("OLD")
    d.core.subs._wanted_at["OLD"] -= 10 * S  # wanted long ago: 16 means what it says
    d.settle(1.0)
    assert "OLD" not in d.core.subs.wanted
    assert any("MarketNotFound" in a["what"] for a in d.decisions(Decision.ANOMALY))


# ---- book integrity --------------------------------------------------------------------------


def test_stale_and_duplicate_seqs_are_never_applied() -> None:
    d = started()
    d.want("A")
    d.settle(0.5)
    d.ex.delta("A", "yes", PRICES[2], 70)
    raw = d.ex.outbox[-1]
    d.deliver()
    assert d.book_is_true("A")
    d.frame(raw)  # the same frame again
    stale = orjson.loads(raw)
    stale["seq"] -= 1
    d.frame(orjson.dumps(stale))
    assert d.book_is_true("A"), "a duplicate or stale delta changed the book"
    assert len(d.decisions(Decision.STALE_SEQ)) == 2


def test_inexact_value_is_one_anomaly_and_a_resync_with_backoff() -> None:
    d = started(resync_backoff_initial_s=1.0)
    d.want("A")
    d.settle(0.5)
    bad = {"price_dollars": "0.123456789", "delta_fp": "1.00", "side": "yes"}
    d.ex.inject("A", bad)
    d.ex.inject("A", bad)  # sent before the exchange saw our get_snapshot
    d.deliver(2)
    assert [a["what"] for a in d.decisions(Decision.ANOMALY)] == ["inexact_value"]
    d.settle(0.3)
    assert d.core.anchored == {"A"} and d.book_is_true("A")

    def snapshots() -> int:
        return len([c for c in d.sent if c.action == "get_snapshot"])

    assert snapshots() == 1
    d.ex.inject("A", bad)  # again soon after: a new episode, but the resync waits (backoff)
    d.deliver()
    d.tick(0.1)
    assert snapshots() == 1 and "A" not in d.core.anchored
    assert len(d.decisions(Decision.ANOMALY)) == 2
    d.settle(1.5)
    assert snapshots() == 2
    assert d.core.anchored == {"A"} and d.book_is_true("A")


def after_one_delta(delta: dict[str, str], **cfg: Any) -> tuple[Driver, list[str]]:
    """Market A anchored, then ``delta`` delivered: the driver, and the anomalies recorded."""
    d = started(**cfg)
    d.want("A")
    d.settle(0.5)
    d.ex.inject("A", delta)
    d.deliver()
    return d, [a["what"] for a in d.decisions(Decision.ANOMALY)]


def test_negative_size_and_bad_snapshot_resync() -> None:
    d, anomalies = after_one_delta({"price_dollars": "0.0300", "delta_fp": "-5.00", "side": "no"})
    assert anomalies == ["negative_size"]
    d.settle(0.5)
    assert d.core.anchored == {"A"} and d.book_is_true("A")
    d.ex.inject("A", {"yes_dollars_fp": [["x", "1"]]}, kind="orderbook_snapshot")
    d.deliver(1)
    assert d.decisions(Decision.ANOMALY)[-1]["what"] == "bad_snapshot"
    assert "A" not in d.core.anchored
    d.settle(2.0)
    assert d.core.anchored == {"A"} and d.book_is_true("A")


def test_a_crossed_book_that_persists_is_resynced() -> None:
    crossing = {"price_dollars": "0.9900", "delta_fp": "1.00", "side": "yes"}
    d, anomalies = after_one_delta(crossing, crossed_grace_s=1.0)
    assert anomalies == ["crossed_book"]
    d.tick(0.5)
    assert not d.decisions(Decision.RESYNC)
    d.settle(1.0)
    assert [a["what"] for a in d.decisions(Decision.ANOMALY)][-1] == "crossed_persists"
    assert d.decisions(Decision.RESYNC) and d.book_is_true("A")


def test_deltas_from_a_sid_that_does_not_own_the_market_are_not_applied() -> None:
    d = started()
    d.want("A")
    d.settle(0.5)
    other = {
        "type": "orderbook_delta",
        "sid": 99,
        "seq": 1,
        "msg": {
            "market_ticker": "A",
            "market_id": "m-A",
            "price_dollars": "0.0300",
            "delta_fp": "5.00",
            "side": "yes",
        },
    }
    d.frame(orjson.dumps(other))
    assert d.book_is_true("A")


# ---- the connection ---------------------------------------------------------------------------


def test_inbound_silence_asks_for_a_reconnect_whatever_the_pongs_carry() -> None:
    d = started(silence_timeout_s=5.0)
    for _ in range(8):  # pings/pongs (any payload) keep it alive
        d.now += S
        d.core.inbound(d.now)
        d.apply(d.core.tick(d.now))
    assert not d.reconnects
    d.tick(5.5)
    assert d.reconnects and "silence" in d.reconnects[0]
    d.tick(1.0)
    assert len(d.reconnects) == 1


def test_close_codes_are_recorded_and_repeated_4xxx_is_fatal() -> None:
    d = started(fatal_close_repeats=3, stable_after_s=60.0)
    d.close(1006)
    assert d.decisions(Decision.DISCONNECTED)[-1]["code"] == 1006
    for i in range(3):
        d.open()
        d.tick(1.0)
        d.close(4001, "auth expired")
        assert bool(d.fatal) == (i == 2)
    last = d.decisions(Decision.DISCONNECTED)[-1]
    assert last["code"] == 4001 and last["close_reason"] == "auth expired"
    assert "4001" in d.fatal[0] and "\n" not in d.fatal[0]
    assert d.decisions(Decision.FATAL_CLOSE)[0]["repeats"] == 3


def test_a_4xxx_after_a_long_stable_connection_starts_the_count_again() -> None:
    d = started(fatal_close_repeats=2, stable_after_s=10.0)
    d.close(4000)
    d.open()
    d.tick(11.0)
    d.close(4000)
    assert not d.fatal
    d.open()
    d.close(4000)
    assert d.fatal


def test_reconnect_resubscribes_everything_and_reports_lifecycle_live_again() -> None:
    d = started()
    d.want("A", "B", "C", "D")
    d.settle(0.5)
    d.close(None)
    assert not d.core.anchored and d.core.subs.sids == {}
    assert d.core.reconnects == 0
    d.open()
    d.settle(1.0)
    assert d.live == [1, 2] and d.core.reconnects == 1
    assert subscribed_everywhere(d, "ABCD") and d.core.anchored == set("ABCD")


# ---- interleavings -----------------------------------------------------------------------------

TICKERS = ("A", "B", "C", "D", "E")


class CoreMachine(RuleBasedStateMachine):
    """Random interleavings of wants, book changes, lost frames and commands, drops, async errors
    and clock ticks, against every combination of the exchange's uncertain behaviours."""

    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()
        self.wanted: set[str] = set()
        self.tainted: dict[str, tuple[int, int]] = {}  # ticker -> (sid, seq) of a lost frame
        self.delivered: list[bytes] = []  # recent frames, to deliver again (duplicates)

    @initialize(
        ids=st.booleans(),
        snapshot_ok=st.sampled_from(["before", "after", "none"]),
        repeat=st.sampled_from(["new_sid", "merge", "error6"]),
    )
    def setup(self, ids: bool, snapshot_ok: str, repeat: str) -> None:
        ex = WireExchange(ids=ids, snapshot_ok=snapshot_ok, repeat_subscribe=repeat)
        self.d = Driver(
            ex,
            max_markets_per_sid=2,
            command_timeout_s=2.0,
            silence_timeout_s=10_000.0,
            crossed_grace_s=10_000.0,
        )
        self.d.open()

    # -- the app ---------------------------------------------------------------------------------
    @rule(t=st.sampled_from(TICKERS))
    def want(self, t: str) -> None:
        self.wanted.add(t)
        self.d.want(t)

    @rule(t=st.sampled_from(TICKERS))
    def unwant(self, t: str) -> None:
        self.wanted.discard(t)
        self.d.core.unwant(t)

    # -- the exchange ----------------------------------------------------------------------------
    @rule(
        t=st.sampled_from(TICKERS),
        side=st.sampled_from(["yes", "no"]),
        price=st.sampled_from(PRICES),
        change=st.integers(-300, 300).filter(bool),
        lose=st.booleans(),
    )
    def book_change(self, t: str, side: str, price: int, change: int, lose: bool) -> None:
        sids = self.d.ex.holders(t)
        if self.d.ex.delta(t, side, price, change, lose=lose) and lose:
            for sid in sids:
                self._taint(sid)

    @rule(n=st.integers(1, 6))
    def deliver(self, n: int) -> None:
        for _ in range(n):
            if not self.d.ex.outbox:
                return
            raw = self.d.ex.outbox.pop(0)
            self._untaint(raw)
            self.d.frame(raw)
            self.delivered = [*self.delivered[-19:], raw]

    @rule(data=st.data())
    def duplicate_a_frame(self, data: st.DataObject) -> None:
        """A frame arrives again (stale seq): recorded, never applied."""
        if self.delivered:
            self.d.frame(data.draw(st.sampled_from(self.delivered)))

    @rule()
    def lose_a_frame(self) -> None:
        """A frame never arrives: a reply (the command then waits for its deadline) or data
        (a seq gap). An asynchronous error is never lost: the exchange's only word that it
        dropped a sid, which nothing else could reveal."""
        if not self.d.ex.outbox:
            return
        obj = orjson.loads(self.d.ex.outbox[0])
        if obj.get("type") == "error" and "id" not in obj and obj.get("sid") is not None:
            return
        self.d.ex.outbox.pop(0)
        if isinstance(obj.get("sid"), int) and isinstance(obj.get("seq"), int):
            self._taint(obj["sid"], obj["seq"])

    @rule()
    def lose_a_command(self) -> None:
        self.d.lose_commands += 1

    @rule(data=st.data())
    def async_error(self, data: st.DataObject) -> None:
        if self.d.ex.sids:
            sid = data.draw(st.sampled_from(sorted(self.d.ex.sids)))
            self.d.ex.kill_sid(sid, data.draw(st.sampled_from([10, 17, 25])))

    @rule(code=st.sampled_from([1006, 1011]))
    def drop(self, code: int) -> None:
        self.d.close(code)
        self.tainted.clear()
        self.delivered.clear()
        self.d.open()

    @rule(seconds=st.floats(0.01, 3.0))
    def tick(self, seconds: float) -> None:
        self.d.tick(seconds)

    # -- bookkeeping of what the core cannot know yet ----------------------------------------------
    def _taint(self, sid: int, seq: int | None = None) -> None:
        seq = self.d.ex.seq.get(sid, 0) if seq is None else seq
        for t in self.d.ex.sids.get(sid, ()):
            self.tainted[t] = (sid, seq)

    def _untaint(self, raw: bytes) -> None:
        obj = orjson.loads(raw)
        if obj.get("type") != "orderbook_snapshot":
            return
        t = obj["msg"]["market_ticker"]
        lost = self.tainted.get(t)
        if lost is not None and (obj["sid"] != lost[0] or obj["seq"] > lost[1]):
            del self.tainted[t]

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def nothing_outstanding_past_its_deadline(self) -> None:
        assert self.d.core.overdue(self.d.now) == []

    @invariant()
    def anchored_books_are_true(self) -> None:
        """Whatever arrived twice, late or out of turn, a book the core trusts (and could know
        about) equals the exchange's. Checked when nothing is in transit."""
        if self.d.ex.outbox:
            return
        for t in self.d.core.anchored:
            if t in self.tainted or self.d.core.subs.sid_of(t) != self.d.ex.holder(t):
                continue
            assert self.d.book_is_true(t), t

    def teardown(self) -> None:
        """No more losses: every wanted market ends subscribed once, anchored, with a true book."""
        d = self.d
        d.lose_commands = 0
        for _ in range(3):
            d.settle(30.0, step=0.25)
            # Markets keep trading: a loss nothing followed yet shows up as a gap now, and a
            # sid the recorder does not know about shows up by its data.
            for t in TICKERS:
                d.ex.delta(t, "yes", PRICES[3], 1)
        d.settle(30.0, step=0.25)
        for t in self.wanted:
            assert t in d.core.subs.wanted, f"{t} was given up"
            subs = d.core.subs
            assert d.ex.holders(t) == [subs.sid_of(t)], (t, d.ex.sids, subs.sids, subs.pending())
            assert t in d.core.anchored and d.book_is_true(t), t
        for t in set(TICKERS) - self.wanted:
            assert d.ex.holder(t) is None, f"{t} still subscribed after it was left"
        assert d.core.overdue(d.now) == []


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None, derandomize=True
)

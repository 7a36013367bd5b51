"""SubscriptionManager against a small reference model of the exchange (pure logic, no sockets).

``FakeExchange`` applies each command the way docs/protocol.md describes it (§3: subscribe creates a
sid, update_subscription adds/deletes/snapshots on one sid, unsubscribe drops it; errors 7, 13, 16,
26) and queues the replies, which the tests deliver in any order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import event, given, settings
from hypothesis import strategies as st

from recorder.subscriptions import (
    CapLowered,
    Command,
    CommandFailed,
    Event,
    Fallback,
    GaveUp,
    MarketNotFound,
    NeedsResubscribe,
    SidAssigned,
    SubscriptionManager,
)

Reply = tuple[Any, ...]


@dataclass
class FakeExchange:
    limit: int = 256
    supports_update: bool = True
    refuse_code: int = 13
    unknown: frozenset[str] = frozenset()
    ack_lists: bool = True
    sids: dict[int, set[str]] = field(default_factory=dict)
    lifecycle: set[int] = field(default_factory=set)
    replies: list[Reply] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    snapshots: list[tuple[int, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    _next_sid: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def holder(self, ticker: str) -> int | None:
        return next((sid for sid, held in self.sids.items() if ticker in held), None)

    def handle(self, c: Command) -> None:
        p = c.params
        if self.fail_next:
            self.replies.append(("error", c.cmd_id, self.fail_next.pop(0), "Command timeout", None))
            return
        if c.cmd == "subscribe":
            if p["channels"] == ["market_lifecycle_v2"]:
                sid = next(self._next_sid)
                self.lifecycle.add(sid)
                self.replies.append(("subscribed", c.cmd_id, "market_lifecycle_v2", sid))
                return
            tickers = p["market_tickers"]
            if err := self._check_add(c, set(), tickers):
                self.replies.append(err)
                return
            sid = next(self._next_sid)
            self.sids[sid] = set(tickers)
            self.snapshots += [(sid, t) for t in tickers]
            self.replies.append(("subscribed", c.cmd_id, "orderbook_delta", sid))
        elif c.cmd == "unsubscribe":
            [sid] = p["sids"]
            if sid not in self.sids and sid not in self.lifecycle:
                self.replies.append(("error", c.cmd_id, 7, "Unknown subscription ID", None))
                return
            self.sids.pop(sid, None)
            self.lifecycle.discard(sid)
            self.replies.append(("unsubscribed", c.cmd_id, sid))
        elif c.cmd == "update_subscription":
            if not self.supports_update:
                self.replies.append(("error", c.cmd_id, self.refuse_code, "Unsupported", None))
                return
            if "sid" in p and "sids" in p:
                self.violations.append(f"both sid and sids: {p}")
            [sid] = p["sids"]
            if sid not in self.sids:
                self.replies.append(("error", c.cmd_id, 7, "Unknown subscription ID", None))
                return
            tickers, held = p["market_tickers"], self.sids[sid]
            if p["action"] == "add_markets":
                if err := self._check_add(c, held, tickers):
                    self.replies.append(err)
                    return
                held.update(tickers)
                self.snapshots += [(sid, t) for t in tickers]
            elif p["action"] == "delete_markets":
                held.difference_update(tickers)
            elif p["action"] == "get_snapshot":
                self.snapshots += [(sid, t) for t in tickers if t in held]
            ack = sorted(held) if self.ack_lists else None
            self.replies.append(("ok", c.cmd_id, sid, ack))
        else:
            self.violations.append(f"unknown command {c}")

    def _check_add(self, c: Command, held: set[str], tickers: list[str]) -> Reply | None:
        for t in tickers:
            if t in self.unknown:
                return ("error", c.cmd_id, 16, "Market not found", t)
        if len(held | set(tickers)) > self.limit:
            return ("error", c.cmd_id, 26, "Subscription market limit exceeded", None)
        for t in tickers:
            if self.holder(t) is not None:
                self.violations.append(f"{t} subscribed twice ({c})")
        return None

    def kill(self, sid: int, code: int) -> None:
        """A live sid breaks on the exchange side (10/17/25): it is gone, an error says so."""
        self.sids.pop(sid, None)
        self.replies.append(("async_error", code, sid))

    def reset(self) -> None:
        self.sids.clear()
        self.lifecycle.clear()
        self.replies.clear()


def deliver(m: SubscriptionManager, r: Reply) -> list[Event]:
    kind = r[0]
    if kind == "subscribed":
        return m.on_subscribed(r[1], r[2], r[3])
    if kind == "ok":
        return m.on_ok(r[1], r[2], r[3])
    if kind == "unsubscribed":
        return m.on_unsubscribed(r[1], [r[2]])
    if kind == "error":
        return m.on_error(r[1], r[2], r[3], r[4])
    if kind == "async_error":
        return m.on_error(None, r[1], "Subscription buffer overflow", None, sid=r[2])
    raise AssertionError(r)


class Harness:
    def __init__(self, m: SubscriptionManager, ex: FakeExchange) -> None:
        self.m, self.ex = m, ex
        self.ids = itertools.count(1)
        self.events: list[Event] = []
        self.sent: list[Command] = []

    def next_id(self) -> int:
        return next(self.ids)

    def send(self, commands: list[Command]) -> list[Command]:
        for c in commands:
            assert c.message()["id"] == c.cmd_id
            self.sent.append(c)
            self.ex.handle(c)
        return commands

    def plan(self) -> list[Command]:
        return self.send(self.m.plan(self.next_id))

    def deliver(self, index: int = 0) -> list[Event]:
        reply = self.ex.replies.pop(index)
        events = deliver(self.m, reply)
        if reply[0] == "ok":
            # The snapshots the exchange queued with this update arrive too: a get_snapshot is
            # done when they are in (an ok alone does not complete it).
            self._feed_snapshots()
        self.events += events
        return events

    def _feed_snapshots(self) -> None:
        fed = getattr(self, "_fed", 0)
        for sid, ticker in self.ex.snapshots[fed:]:
            self.m.snapshot_arrived(sid, ticker)
        self._fed = len(self.ex.snapshots)

    def deliver_all(self) -> None:
        while self.ex.replies:
            self.deliver()
        self._feed_snapshots()

    def settle(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            if not self.plan() and not self.ex.replies:
                return
            self.deliver_all()
        raise AssertionError("did not converge")

    def reset(self) -> None:
        """Reconnect: a new epoch, so the log's sids of the old connection no longer count."""
        self.ex.reset()
        self.m.reset()
        self.events.clear()

    def rebuilt_from_events(self) -> dict[int, set[str]]:
        """What the log's `subscription` decisions (of this epoch) say each sid holds."""
        state: dict[int, set[str]] = {}
        for e in self.events:
            if isinstance(e, SidAssigned) and e.channel == "orderbook_delta":
                if e.tickers:
                    state[e.sid] = set(e.tickers)
                else:
                    state.pop(e.sid, None)
        return state

    def check(self) -> None:
        m, ex = self.m, self.ex
        assert not ex.violations
        assert m.converged()
        assert {s: set(t) for s, t in m.sids.items()} == ex.sids
        assert self.rebuilt_from_events() == ex.sids
        held = [t for ts in ex.sids.values() for t in ts]
        assert len(held) == len(set(held))
        assert set(held) == set(m.wanted)
        assert all(len(ts) <= ex.limit for ts in ex.sids.values())
        for sid, ts in ex.sids.items():
            assert all(m.sid_of(t) == sid for t in ts)


def make(**kw: Any) -> Harness:
    mk = {k: kw.pop(k) for k in ("max_markets_per_sid", "max_tickers_per_command") if k in kw}
    return Harness(SubscriptionManager(**mk), FakeExchange(**kw))


def tickers(n: int, prefix: str = "KXT-1-M") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


# -- unit tests --------------------------------------------------------------------------------


def test_batches_new_markets_into_few_subscribes_and_fills_existing_sids() -> None:
    h = make()
    for t in tickers(250):
        h.m.want(t)
    h.m.want("KXT-1-M0")  # idempotent
    cmds = h.plan()
    assert [(c.cmd, len(c.tickers)) for c in cmds] == [("subscribe", 100)] * 2 + [("subscribe", 50)]
    assert cmds[0].params == {"channels": ["orderbook_delta"], "market_tickers": tickers(100)}
    assert h.m.in_flight == 3 and h.m.plan(h.next_id) == []
    h.deliver_all()
    for t in tickers(10, "KXU-1-M"):
        h.m.want(t)
    [add] = h.plan()
    assert add.cmd == "update_subscription" and add.action == "add_markets"
    assert add.params["sids"] == [add.sid] and add.sid == 1 and len(add.tickers) == 10
    h.settle()
    h.check()
    assert [len(t) for t in h.m.sids.values()] == [110, 100, 50]


def test_one_command_per_sid_in_flight() -> None:
    h = make(max_markets_per_sid=4)
    for t in tickers(2):
        h.m.want(t)
    h.plan()
    h.deliver_all()
    h.m.want("KXT-1-M2")
    h.plan()
    h.m.unwant("KXT-1-M0")
    assert h.plan() == []  # the delete waits for the add's reply
    h.deliver_all()
    [delete] = h.plan()
    assert delete.action == "delete_markets" and delete.tickers == ("KXT-1-M0",)
    h.settle()
    h.check()


def test_unsubscribe_when_a_sid_would_become_empty() -> None:
    h = make()
    h.m.want("A-1-X")
    h.settle()
    h.m.unwant("A-1-X")
    h.m.unwant("A-1-X")
    [c] = h.plan()
    assert c.cmd == "unsubscribe" and c.params == {"sids": [1]} and c.purpose == "leave"
    h.deliver_all()
    assert h.events[-1] == SidAssigned(1, "orderbook_delta", ())
    assert h.m.sid_of("A-1-X") is None and h.m.tickers_of(1) == ()
    h.check()


def test_fallback_when_update_subscription_is_refused() -> None:
    h = make(supports_update=False, max_tickers_per_command=3)
    for t in tickers(2):
        h.m.want(t)
    h.settle()
    h.m.want("KXT-1-M2")
    [add] = h.plan()
    h.deliver_all()
    assert any(isinstance(e, Fallback) and e.code == 13 for e in h.events)
    assert h.m.fallback
    [sub] = h.plan()
    assert sub.cmd == "subscribe" and sub.tickers == ("KXT-1-M2",)
    h.deliver_all()
    # Removing part of a sid: unsubscribe it, subscribe the rest again.
    h.m.unwant("KXT-1-M0")
    [unsub] = h.plan()
    assert unsub.cmd == "unsubscribe"
    h.deliver_all()
    [resub] = h.plan()
    assert resub.cmd == "subscribe" and resub.tickers == ("KXT-1-M1",)
    h.settle()
    h.check()
    assert not any(c.cmd == "update_subscription" for c in h.sent[h.sent.index(add) + 1 :])


def test_fallback_on_unsupported_message_without_known_code() -> None:
    h = make()
    h.m.want("A-1-X")
    h.settle()
    h.m.want("A-1-Y")
    [c] = h.plan()
    events = h.m.on_error(c.cmd_id, 99, "update_subscription unsupported here")
    assert any(isinstance(e, Fallback) for e in events)


def test_market_limit_lowers_the_cap_and_replans() -> None:
    h = make(limit=5, max_markets_per_sid=200, max_tickers_per_command=100)
    for t in tickers(12):
        h.m.want(t)
    h.settle()
    h.check()
    assert any(isinstance(e, CapLowered) for e in h.events)
    assert h.m.cap <= 5
    h.m.want("KXT-1-M99")
    h.settle()
    h.check()


def test_market_not_found_drops_that_market_only() -> None:
    h = make(unknown=frozenset({"BAD-1-X"}))
    for t in ["A-1-X", "BAD-1-X", "A-1-Y"]:
        h.m.want(t)
    h.settle()
    assert MarketNotFound("BAD-1-X", 1) in h.events
    assert h.m.wanted == {"A-1-X", "A-1-Y"}
    h.check()
    h.m.want("BAD-1-X")  # asked again: tried again
    assert h.plan()[0].tickers == ("BAD-1-X",)


def test_async_error_resubscribes_the_sid() -> None:
    h = make()
    for t in tickers(3):
        h.m.want(t)
    h.settle()
    h.ex.kill(1, 25)
    [e] = h.deliver()
    assert e == NeedsResubscribe(1, tuple(tickers(3)), 25, "Subscription buffer overflow")
    [unsub] = h.plan()
    assert unsub.cmd == "unsubscribe" and unsub.purpose == "resubscribe"
    h.deliver_all()  # error 7: the sid is already gone on the exchange
    [sub] = h.plan()
    assert sub.cmd == "subscribe" and set(sub.tickers) == set(tickers(3))
    h.settle()
    h.check()
    assert h.m.sid_of("KXT-1-M0") != 1


def test_async_error_without_a_known_sid_is_reported() -> None:
    m = SubscriptionManager()
    [e] = m.on_error(None, 17, "Internal error", sid=42)
    assert isinstance(e, CommandFailed) and not e.retrying


def test_unknown_reply_ids_are_ignored() -> None:
    m = SubscriptionManager()
    assert m.on_subscribed(77, "orderbook_delta", 3) == []
    assert m.on_ok(77, 3, ["X"]) == []
    assert m.on_unsubscribed(77, [3]) == []
    assert m.on_error(77, 8, "Unknown channel name") == []
    assert m.on_ok(None, None, None) == []


def test_request_snapshot_and_queueing_behind_a_busy_sid() -> None:
    h = make()
    for t in tickers(3):
        h.m.want(t)
    h.settle()
    [snap] = h.send(h.m.request_snapshot(1, ["KXT-1-M1", "NOT-ON-SID"], h.next_id))
    assert snap.action == "get_snapshot" and snap.tickers == ("KXT-1-M1",)
    assert snap.purpose == "resync"
    assert h.m.request_snapshot(1, [], h.next_id) == []  # busy: queued for plan()
    assert h.m.request_snapshot(99, [], h.next_id) == []  # unknown sid
    h.deliver_all()
    [snap_all] = h.plan()
    assert set(snap_all.tickers) == set(tickers(3))
    h.settle()
    h.check()
    assert h.ex.snapshots.count((1, "KXT-1-M1")) == 3


def test_request_snapshot_in_fallback_resubscribes() -> None:
    h = make(supports_update=False)
    h.m.want("A-1-X")
    h.settle()
    h.send(h.m.request_snapshot(1, ["A-1-X"], h.next_id))
    h.deliver_all()  # refused: fallback, the sid is resubscribed instead
    assert h.m.fallback
    h.settle()
    h.check()
    assert h.m.sid_of("A-1-X") != 1
    [c] = h.send(h.m.request_snapshot(h.m.sid_of("A-1-X") or 0, [], h.next_id))
    assert c.cmd == "unsubscribe" and c.purpose == "resubscribe"


def test_reset_resubscribes_everything_and_keeps_fallback() -> None:
    h = make(supports_update=False)
    h.send([h.m.lifecycle_subscribe(h.next_id)])
    for t in tickers(5):
        h.m.want(t)
    h.settle()
    h.m.want("X-1-Y")
    h.settle()
    assert h.m.fallback and h.m.lifecycle_sid is not None
    h.reset()
    assert h.m.sids == {} and h.m.in_flight == 0 and h.m.lifecycle_sid is None
    assert set(h.m.pending()) == set(h.m.wanted)
    [life] = h.send([h.m.lifecycle_subscribe(h.next_id)])
    assert life.params == {"channels": ["market_lifecycle_v2"]}
    assert all(c.cmd == "subscribe" for c in h.plan())
    h.settle()
    h.check()
    assert h.m.lifecycle_sid is not None and h.m.fallback


def test_retries_with_backoff_then_gives_up() -> None:
    m = SubscriptionManager(max_retries=2)
    ids = itertools.count(1)
    m.want("A-1-X")
    now = 0
    [c] = m.plan(ids.__next__, now)
    [e] = m.on_error(c.cmd_id, 18, "Command timeout")
    assert isinstance(e, CommandFailed) and e.retrying
    assert m.plan(ids.__next__, now) == []  # waits 100 ms
    assert m.plan(ids.__next__, now + 50_000_000) == []
    [c] = m.plan(ids.__next__, now + 100_000_000)
    m.on_error(c.cmd_id, 27, "Too many requests")
    assert m.plan(ids.__next__, now + 150_000_000) == []
    [c] = m.plan(ids.__next__, now + 400_000_000)  # 200 ms after the error was planned
    events = m.on_error(c.cmd_id, 18, "Command timeout")
    assert any(isinstance(e, GaveUp) and e.tickers == ("A-1-X",) for e in events)
    assert m.wanted == frozenset() and m.plan(ids.__next__) == []


def test_lifecycle_subscribe_retries_forever() -> None:
    m = SubscriptionManager(max_retries=1)
    ids = itertools.count(1)
    c = m.lifecycle_subscribe(ids.__next__)
    for _ in range(5):
        [e] = m.on_error(c.cmd_id, 17, "Internal error")
        assert isinstance(e, CommandFailed) and e.retrying
        [c] = m.plan(ids.__next__)
        assert c.params == {"channels": ["market_lifecycle_v2"]}
    assert m.on_subscribed(c.cmd_id, "market_lifecycle_v2", 9) == [
        SidAssigned(9, "market_lifecycle_v2", ())
    ]
    [e] = m.on_error(None, 10, "Channel error", sid=9)
    assert e == NeedsResubscribe(9, (), 10, "Channel error")
    [unsub] = m.plan(ids.__next__)
    assert unsub.cmd == "unsubscribe" and unsub.params == {"sids": [9]}
    m.on_unsubscribed(unsub.cmd_id, [9])
    [again] = m.plan(ids.__next__)
    assert again.params == {"channels": ["market_lifecycle_v2"]}


def test_ok_list_is_the_truth_for_the_sid() -> None:
    m = SubscriptionManager()
    ids = itertools.count(1)
    for t in ("A", "B"):
        m.want(t)
    [c] = m.plan(ids.__next__)
    m.on_subscribed(c.cmd_id, "orderbook_delta", 5)
    m.want("C")
    [add] = m.plan(ids.__next__)
    # The exchange reports B missing (it dropped it): we believe it and re-add B next time.
    assert m.on_ok(add.cmd_id, 5, ["A", "C"]) == [SidAssigned(5, "orderbook_delta", ("A", "C"))]
    [readd] = m.plan(ids.__next__)
    assert readd.tickers == ("B",) and readd.action == "add_markets"
    # An ack listing exactly the request is read as an echo, not as the full list.
    assert m.on_ok(readd.cmd_id, 5, ["B"]) == [SidAssigned(5, "orderbook_delta", ("A", "C", "B"))]


def test_late_subscribed_after_an_error_is_adopted_and_deduplicated() -> None:
    m = SubscriptionManager()
    ids = itertools.count(1)
    m.want("A")
    [c] = m.plan(ids.__next__)
    m.on_error(c.cmd_id, 18, "Command timeout")
    [c2] = m.plan(ids.__next__)
    m.on_subscribed(c2.cmd_id, "orderbook_delta", 2)
    # The first subscribe did happen after all: its sid duplicates A, so it is dropped.
    assert m.on_subscribed(c.cmd_id, "orderbook_delta", 1) == [
        SidAssigned(1, "orderbook_delta", ("A",))
    ]
    [unsub] = m.plan(ids.__next__)
    assert unsub.cmd == "unsubscribe" and unsub.sid == 1
    assert m.sid_of("A") == 2


# -- property: random operations against the reference model converge ------------------------

POOL = [f"KXP-1-M{i}" for i in range(10)] + ["BAD-1-X"]
many = st.lists(st.sampled_from(POOL), min_size=1, max_size=8)
op = st.one_of(
    st.tuples(st.just("want"), many),
    st.tuples(st.just("want"), many),
    st.tuples(st.just("unwant"), many),
    st.tuples(st.just("plan")),
    st.tuples(st.just("deliver"), st.integers(0, 20)),
    st.tuples(st.just("deliver_all")),
    st.tuples(st.just("snapshot"), st.integers(0, 5), st.lists(st.sampled_from(POOL))),
    st.tuples(st.just("kill"), st.integers(0, 5), st.sampled_from([10, 17, 25])),
    st.tuples(st.just("flaky"), st.sampled_from([18, 27, 1])),
    st.tuples(st.just("reset")),
)


@settings(max_examples=500, deadline=None)
@given(
    ops=st.lists(op, min_size=3, max_size=80),
    limit=st.integers(2, 6),
    cap=st.integers(2, 8),
    per_cmd=st.integers(1, 5),
    supports_update=st.booleans(),
    refuse_code=st.sampled_from([5, 12, 13, 15]),
    ack_lists=st.booleans(),
)
def test_any_sequence_converges_to_the_wanted_set(
    ops: list[tuple[Any, ...]],
    limit: int,
    cap: int,
    per_cmd: int,
    supports_update: bool,
    refuse_code: int,
    ack_lists: bool,
) -> None:
    h = make(
        limit=limit,
        max_markets_per_sid=cap,
        max_tickers_per_command=per_cmd,
        supports_update=supports_update,
        refuse_code=refuse_code,
        ack_lists=ack_lists,
        unknown=frozenset({"BAD-1-X"}),
    )
    desired: set[str] = set()
    h.send([h.m.lifecycle_subscribe(h.next_id)])
    flaky = 0
    for name, *args in ops:
        if name == "want":
            desired.update(args[0])
            for t in args[0]:
                h.m.want(t)
        elif name == "unwant":
            desired.difference_update(args[0])
            for t in args[0]:
                h.m.unwant(t)
        elif name == "plan":
            h.plan()
        elif name == "deliver":
            if h.ex.replies:
                h.deliver(args[0] % len(h.ex.replies))
        elif name == "deliver_all":
            h.deliver_all()
        elif name == "snapshot":
            sids = sorted(h.m.sids)
            if sids:
                h.send(h.m.request_snapshot(sids[args[0] % len(sids)], args[1], h.next_id))
        elif name == "kill":
            live = sorted(h.ex.sids)
            if live:
                h.ex.kill(live[args[0] % len(live)], args[1])
        elif name == "flaky" and flaky < 3:  # a few transient errors; retries outlast them
            flaky += 1
            h.ex.fail_next.append(args[0])
        elif name == "reset":
            h.reset()
            h.send([h.m.lifecycle_subscribe(h.next_id)])
    h.settle()
    h.check()
    event(f"fallback={h.m.fallback}")
    event(f"cap lowered={h.m.cap < cap}")
    event(f"sids at end={min(len(h.m.sids), 3)}")
    for kind in (NeedsResubscribe, MarketNotFound, CommandFailed):
        event(f"{kind.__name__} seen={any(isinstance(e, kind) for e in h.events)}")
    assert set(h.m.wanted) == desired - {"BAD-1-X"}
    assert not any(isinstance(e, GaveUp) for e in h.events)
    assert h.m.lifecycle_sid in h.ex.lifecycle
    assert all(len(ts) <= cap for ts in h.ex.sids.values())


def test_commands_reach_the_wire_in_the_exchange_vocabulary() -> None:
    """Commands carry enums (``Cmd``, ``UpdateAction``, ``Purpose``); on the wire and in the log
    they must be the exchange's plain strings, in the documented envelope."""
    m = SubscriptionManager(max_markets_per_sid=3, max_tickers_per_command=2)
    ids = itertools.count(1)
    for t in ("A", "B", "C"):
        m.want(t)
    first, second = m.plan(lambda: next(ids))
    m.on_subscribed(first.cmd_id, "orderbook_delta", 5)
    m.on_subscribed(second.cmd_id, "orderbook_delta", 6)
    m.want("D")
    (add,) = m.plan(lambda: next(ids))
    m.on_ok(add.cmd_id, 5, ["A", "B", "D"])
    (snap,) = m.request_snapshot(5, ["B"], lambda: next(ids))
    m.unwant("C")
    (unsub,) = m.plan(lambda: next(ids))
    wire = [orjson.loads(orjson.dumps(c.message())) for c in (first, add, snap, unsub)]
    assert wire == [
        {
            "id": 1,
            "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_tickers": ["A", "B"]},
        },
        {
            "id": 3,
            "cmd": "update_subscription",
            "params": {"sids": [5], "market_tickers": ["D"], "action": "add_markets"},
        },
        {
            "id": 4,
            "cmd": "update_subscription",
            "params": {"sids": [5], "market_tickers": ["B"], "action": "get_snapshot"},
        },
        {"id": 5, "cmd": "unsubscribe", "params": {"sids": [6]}},
    ]
    purposes = [orjson.dumps(c.purpose) for c in (first, add, snap, unsub)]
    assert purposes == [b'"join"', b'"join"', b'"resync"', b'"leave"']

"""The tap's sans-I/O parts without sockets: wire format, the row state machine, the fan-out and
its Kalshi commands, the client's continuity checks, and the handshake policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feed.auth import refusal
from feed.book import Book
from feed.client import Client, FeedError
from feed.events import BookUpdate, Lagged, Validity
from feed.fanout import MAX_COMMAND_BYTES, Fanout
from feed.replay import parse_time
from feed.state import TapState
from schemas.units import parse_price, parse_size
from schemas.wire import (
    CURRENT,
    DELTA_MSG,
    LEGACY,
    delta_ts_ms,
    format_price,
    format_size,
    snapshot_levels,
    snapshot_msg,
)
from schemas.wire import ERROR_MESSAGES as SIMULATOR_ERRORS
from tests.feed.rows import Log

# ----------------------------------------------------------------------------- wire


_PRICES = st.integers(min_value=1, max_value=999_999)
_LEVELS = st.dictionaries(_PRICES, st.integers(min_value=1, max_value=10**6), max_size=6)


@settings(max_examples=50)
@given(_LEVELS, _LEVELS)
def test_book_update_quotes_follow_the_levels(yes: dict[int, int], no: dict[int, int]) -> None:
    """Best bids are each side's highest price; a NO bid at p is a YES ask at $1 - p."""
    top = Book(yes, no, True)
    u = BookUpdate("M", 1, True, True, top.top("yes", 3), top.top("no", 3))
    assert u.best_yes_bid == (max(yes) if yes else None)
    assert u.best_no_bid == (max(no) if no else None)
    assert u.best_yes_ask == (1_000_000 - max(no) if no else None)
    assert u.best_no_ask == (1_000_000 - max(yes) if yes else None)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_price_strings_round_trip_exactly(micros: int) -> None:
    text = format_price(micros)
    assert parse_price(text) == micros
    assert len(text.split(".")[1]) in (4, 5, 6)


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_size_strings_round_trip_exactly(centi: int) -> None:
    assert parse_size(format_size(centi)) == centi


levels = st.dictionaries(
    st.integers(min_value=1, max_value=999_999),
    st.integers(min_value=1, max_value=10**9),
    max_size=8,
)


@given(levels, levels, st.sampled_from([CURRENT, LEGACY]), st.booleans())
def test_snapshots_round_trip_in_both_formats(
    yes: dict[int, int], no: dict[int, int], fmt: str, empty_as_list: bool
) -> None:
    msg = snapshot_msg("T-1", "id", yes, no, fmt, empty_as_list)
    assert snapshot_levels(orjson.dumps({"type": "orderbook_snapshot", "msg": msg})) == (yes, no)
    whole = all(p % 10_000 == 0 and s % 100 == 0 for p, s in [*yes.items(), *no.items()])
    if fmt == LEGACY and whole:
        assert "yes_dollars_fp" not in msg and "no_dollars_fp" not in msg
    else:
        assert "yes" not in msg and "no" not in msg  # exact units win over the legacy format


def test_legacy_snapshot_levels_and_bad_snapshots() -> None:
    legacy = {"msg": {"yes": [[45, 100]], "yes_dollars": [["0.4550", 100]], "no": None}}
    assert snapshot_levels(legacy) == ({455_000: 10_000}, {})  # the dollar strings win
    for bad in (
        b"{",
        {"msg": {"yes_dollars_fp": [["0.5", "-1.00"]]}},
        {"msg": {"yes": [[0.5, 1]]}},
    ):
        with pytest.raises(ValueError):
            snapshot_levels(bad)


# ----------------------------------------------------------------------------- rows


def test_validity_follows_snapshots_gaps_stale_negative_and_leaves() -> None:
    log = Log()
    s = TapState()
    log.joined("A")
    log.joined("B")
    log.snapshot("A", 1, 1, {500_000: 100}, {})
    log.snapshot("B", 1, 2, {}, {400_000: 100})
    for r in log.rows:
        s.on_row(r)
    assert s.markets["A"].state is Validity.VALID and s.markets["B"].state is Validity.VALID
    log.delta("A", 1, 3, "yes", 500_000, 50)
    log.delta("A", 1, 3, "yes", 500_000, 50)  # duplicate: skipped
    s.on_row(log.rows[-2])
    s.on_row(log.rows[-1])
    assert s.markets["A"].yes == {500_000: 150}
    log.delta("B", 1, 5, "no", 400_000, 10)  # seq 4 missed: every market of sid 1 resyncs
    s.on_row(log.rows[-1])
    assert s.markets["A"].state is Validity.RESYNCING and s.markets["B"].no == {400_000: 100}
    log.snapshot("A", 1, 6, {510_000: 1}, {})
    log.delta("A", 1, 7, "yes", 510_000, -5)  # negative: not the true book any more
    for r in log.rows[-2:]:
        s.on_row(r)
    assert (s.markets["A"].state, s.markets["A"].reason) == (Validity.RESYNCING, "negative_size")
    log.add("decision", "market_left", {"market_ticker": "B", "reason": "determined"})
    s.on_row(log.rows[-1])
    assert s.markets["B"].state is Validity.UNANCHORED and not s.markets["B"].followed


# ----------------------------------------------------------------------------- fan-out + client


def _drain(c: Any, client: Client) -> list[Any]:
    out = []
    for frame in c.take():
        ev = client.on_frame(frame)
        if ev is not None:
            out.append(ev)
    return out


ops = st.lists(
    st.tuples(
        st.sampled_from(["delta", "delta", "delta", "snapshot", "gap"]),
        st.sampled_from(["A", "B"]),
        st.sampled_from(["yes", "no"]),
        st.integers(min_value=1, max_value=5).map(lambda k: k * 10_000),
        st.integers(min_value=-300, max_value=300).filter(bool),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops, st.integers(min_value=16, max_value=40), st.integers(min_value=1, max_value=30))
def test_a_client_holds_the_taps_books_even_when_lagged(
    steps: list[tuple[str, str, str, int, int]], max_queue: int, read_every: int
) -> None:
    """Whatever the rows and however slowly the consumer reads: every valid book the client
    holds is the tap's book, seq stays continuous, and lag is announced."""
    fan = Fanout("live")
    c = fan.add(max_queue)
    client = Client("ws://unused")
    c.handle(
        orjson.dumps(
            {
                "id": 1,
                "cmd": "subscribe",
                "params": {
                    "channels": ["recorder_status", "orderbook_delta"],
                    "all_markets": True,
                },
            }
        )
    )
    log = Log()
    log.joined("A")
    log.joined("B")
    seq = 0
    for t in ("A", "B"):
        seq += 1
        log.snapshot(t, 1, seq, {30_000: 500}, {20_000: 500})
    for op, t, side, price, delta in steps:
        seq += 1
        if op == "snapshot":
            log.snapshot(t, 1, seq, {price: abs(delta)}, {})
        elif op == "gap":
            seq += 1
            log.delta(t, 1, seq, side, price, abs(delta))
        else:
            log.delta(t, 1, seq, side, price, delta)
    events: list[Any] = []
    for i, r in enumerate(log.rows):
        fan.on_row(r)
        if i % read_every == 0:
            events += _drain(c, client)
    events += _drain(c, client)
    if c.lagged_times:
        assert any(isinstance(e, Lagged) for e in events)
    for t, m in fan.state.markets.items():
        b = client.books.get(t)
        if m.state is Validity.VALID:
            assert b is not None and b.valid and (b.yes, b.no) == (m.yes, m.no)
        elif b is not None:
            assert not b.valid
    for e in events:
        if isinstance(e, BookUpdate):
            assert e.market_ticker in ("A", "B")


def _cmd(c: Any, client: Client, **body: Any) -> list[dict[str, Any]]:
    c.handle(orjson.dumps(body))
    frames = [orjson.loads(f) for f in c.take()]
    for f in frames:
        if f.get("type") != "error":
            client.on_frame(orjson.dumps(f))
    return frames


BAD_COMMANDS: list[tuple[bytes | dict[str, Any], int]] = [
    (b"not json", 1),
    (b"[1, 2]", 1),
    (b"x" * (MAX_COMMAND_BYTES + 1), 1),
    ({"id": 1, "cmd": "frobnicate"}, 5),
    ({"id": 2, "cmd": "subscribe"}, 2),
    ({"id": 3, "cmd": "subscribe", "params": {}}, 3),
    ({"id": 4, "cmd": "subscribe", "params": {"channels": ["nope"]}}, 8),
    ({"id": 5, "cmd": "subscribe", "params": {"channels": ["fill"]}}, 8),
    ({"id": 6, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}, 14),
    (
        {"id": 7, "cmd": "subscribe", "params": {"channels": [DELTA_MSG], "market_ticker": 5}},
        11,
    ),
    ({"id": 8, "cmd": "subscribe", "params": {"channels": [DELTA_MSG], "market_ticker": "NO"}}, 16),
    ({"id": 9, "cmd": "unsubscribe", "params": {"sids": []}}, 4),
    ({"id": 10, "cmd": "unsubscribe", "params": {"sids": [99]}}, 7),
    ({"id": 11, "cmd": "update_subscription", "params": {"sid": 1}}, 15),
    ({"id": 12, "cmd": "update_subscription", "params": {"sid": 1, "action": "x"}}, 13),
    ({"id": 13, "cmd": "update_subscription", "params": {"action": "get_snapshot"}}, 12),
]


@pytest.mark.parametrize(("command", "code"), BAD_COMMANDS)
def test_bad_commands_get_the_exchanges_error_code_and_text(
    command: bytes | dict[str, Any], code: int
) -> None:
    """Code and text as the simulator (our model of the exchange) says them; the command's id
    when it had one."""
    c = Fanout("live").add()
    c.handle(command if isinstance(command, bytes) else orjson.dumps(command))
    [frame] = [orjson.loads(f) for f in c.take()]
    assert frame["type"] == "error" and frame["msg"]["code"] == code
    assert frame["msg"]["msg"].partition(":")[0] == SIMULATOR_ERRORS[code]
    assert frame.get("id") == (command.get("id") if isinstance(command, dict) else None)


def test_kalshi_commands_replies_and_seq() -> None:
    fan = Fanout("live")
    log = Log()
    log.joined("A")
    log.joined("B")
    log.snapshot("A", 1, 1, {500_000: 100}, {})
    for r in log.rows:
        fan.on_row(r)
    c = fan.add()
    client = Client("ws://unused")
    got = _cmd(
        c, client, id=1, cmd="subscribe",
        params={
            "channels": ["orderbook_delta"], "market_ticker": "A", "send_initial_snapshot": True
        },
    )  # fmt: skip
    assert [f["type"] for f in got] == ["subscribed", "orderbook_snapshot"]
    assert got[1]["msg"]["yes_dollars_fp"] == [["0.5000", "1.00"]] and got[1]["seq"] == 1
    sid = got[0]["msg"]["sid"]
    # B is joined but has no book yet: added, no snapshot until the recorder anchors it
    got = _cmd(
        c, client, id=2, cmd="update_subscription",
        params={"sids": [sid], "market_tickers": ["B"], "action": "add_markets"},
    )  # fmt: skip
    assert got == [
        {"id": 2, "sid": sid, "seq": 2, "type": "ok", "msg": {"market_tickers": ["A", "B"]}}
    ]
    log.snapshot("B", 1, 2, {}, {300_000: 7})
    fan.on_row(log.rows[-1])
    got = [orjson.loads(f) for f in c.take()]
    for f in got:
        client.on_frame(orjson.dumps(f))
    assert client.books["B"].no == {300_000: 7} and client.books["B"].valid
    assert [(f["type"], f["seq"], f["msg"]["market_ticker"]) for f in got] == [
        ("orderbook_snapshot", 3, "B")
    ]
    got = _cmd(
        c, client, id=3, cmd="update_subscription",
        params={"sid": sid, "market_tickers": ["A"], "action": "get_snapshot"},
    )  # fmt: skip
    assert [(f["type"], f["seq"]) for f in got] == [("orderbook_snapshot", 4)]
    got = _cmd(c, client, id=4, cmd="list_subscriptions")
    assert got == [{"id": 4, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": sid}]}]
    got = _cmd(c, client, id=5, cmd="unsubscribe", params={"sids": [sid]})
    assert got == [{"id": 5, "sid": sid, "seq": 5, "type": "unsubscribed"}]
    log.delta("A", 1, 3, "yes", 500_000, 1)
    fan.on_row(log.rows[-1])
    assert c.take() == []
    got = _cmd(
        c, client, id=6, cmd="subscribe",
        params={"channels": ["orderbook_delta"], "market_tickers": ["A", "ZZZ"]},
    )  # fmt: skip
    assert got == [
        {
            "id": 6,
            "type": "error",
            "msg": {"code": 16, "msg": "Market not found", "market_ticker": "ZZZ"},
        }
    ]


def test_client_refuses_a_broken_stream() -> None:
    client = Client("ws://unused")
    client.on_frame(b'{"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}')
    snap = {"market_ticker": "A", "yes_dollars_fp": [["0.5000", "1.00"]]}
    client.on_frame(orjson.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": snap}))
    delta = {"market_ticker": "A", "price_dollars": "0.5000", "delta_fp": "1.00", "side": "yes"}
    with pytest.raises(FeedError, match="seq gap"):
        client.on_frame(orjson.dumps({"type": "orderbook_delta", "sid": 1, "seq": 3, "msg": delta}))
    with pytest.raises(FeedError, match="record_seq went back"):
        client.on_frame(b'{"type":"x","record_seq":9}')
        client.on_frame(b'{"type":"x","record_seq":8}')
    with pytest.raises(FeedError, match="tap error"):
        client.on_frame(b'{"type":"error","msg":{"code":16,"msg":"Market not found"}}')


# ----------------------------------------------------------------------------- handshake


def test_handshake_policy() -> None:
    good = {
        "KALSHI-ACCESS-KEY": "k",
        "KALSHI-ACCESS-TIMESTAMP": "1700000000000",
        "KALSHI-ACCESS-SIGNATURE": "c2lnbmF0dXJl",
    }
    assert refusal({}, "/", "127.0.0.1", None) is None
    assert refusal(good, "/", "::1", None) is None
    assert "missing" in str(refusal({"KALSHI-ACCESS-KEY": "k"}, "/", "127.0.0.1", None))
    assert "base64" in str(
        refusal({**good, "KALSHI-ACCESS-SIGNATURE": "!!"}, "/", "127.0.0.1", None)
    )
    assert "loopback" in str(refusal({}, "/", "10.0.0.5", None))
    assert "token" in str(refusal({}, "/", "10.0.0.5", "s3cret"))
    assert refusal({"Authorization": "Bearer s3cret"}, "/", "10.0.0.5", "s3cret") is None
    assert refusal({}, "/x?token=s3cret", "10.0.0.5", "s3cret") is None
    why = refusal({"Authorization": "Bearer wrong"}, "/", "10.0.0.5", "s3cret")
    assert why is not None and "s3cret" not in why and "wrong" not in why


def test_legacy_delta_time_feeds_the_client_clock() -> None:
    """A legacy delta carries its time as ``ts`` (RFC 3339 or int seconds), not ``ts_ms``: the
    client's book updates must still carry the exchange time (the paper clock runs on it)."""
    assert delta_ts_ms({"ts_ms": 1_700_000_000_123}) == 1_700_000_000_123
    assert delta_ts_ms({"ts": "2026-02-14T15:30:00Z"}) == 1_771_083_000_000
    assert delta_ts_ms({"ts": "2026-02-14T16:30:00.5+01:00"}) == 1_771_083_000_500
    assert delta_ts_ms({"ts": 1_771_083_000}) == 1_771_083_000_000
    assert delta_ts_ms({"ts": "yesterday"}) is None
    assert delta_ts_ms({}) is None


# ----------------------------------------------------------------------------- replay times


@given(st.integers(min_value=-(10**17), max_value=4 * 10**18))
def test_replay_times_in_iso_are_exact_to_the_microsecond(ns: int) -> None:
    us = ns // 1000
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    assert parse_time(dt.isoformat()) == us * 1000
    assert parse_time(dt.replace(tzinfo=None).isoformat()) == us * 1000  # no offset: UTC


def test_replay_times_as_unix_numbers_are_seconds_ms_or_ns_by_size() -> None:
    s = 1_795_967_975
    assert parse_time(str(s)) == s * 10**9
    assert parse_time(str(s * 1000 + 123)) == (s * 1000 + 123) * 10**6
    assert parse_time(str(s * 10**9 + 7)) == s * 10**9 + 7
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")

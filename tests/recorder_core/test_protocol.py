"""recorder.protocol: every example in docs/protocol.md, exactness against schemas.units, and
parse_frame never raising."""

from __future__ import annotations

import contextlib
import json
import string
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import protocol
from recorder.connection_core import ConnectionCore, CoreSettings, Send
from recorder.protocol import (
    Frame,
    decode_delta,
    error_info,
    list_subscriptions_cmd,
    list_subscriptions_reply,
    ok_market_tickers,
    parse_frame,
    price_micros,
    rfc3339_ms,
    size_centi,
    snapshot_levels,
    subscribe,
    subscribed_sid,
    unsubscribe,
    unsubscribed_sids,
    update_subscription,
)
from recorder.session import SessionLog
from schemas.lifecycle import LIFECYCLE_FIELDS
from schemas.log import LOG_SCHEMA
from schemas.units import price_to_decimal
from tests.support.frames import FIELD_KEYS as KEYS


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


# --- docs/protocol.md §4: orderbook_delta ---------------------------------------------------------

CURRENT_DELTA = (
    b'{"type": "orderbook_delta", "sid": 2, "seq": 3, "msg": {'
    b'"market_ticker": "FED-23DEC-T3.00", "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",'
    b'"price_dollars": "0.2200", "delta_fp": "-33.00", "side": "yes", "ts_ms": 1700000000123}}'
)
LEGACY_DELTA = (
    b'{"type": "orderbook_delta", "sid": 5, "seq": 42, "msg": {'
    b'"market_ticker": "KXBTCD-26FEB14-T100000", "market_id": "abc-123-uuid", "price": 46,'
    b'"price_dollars": "0.4600", "delta": -50, "delta_fp": "-50.00", "side": "yes",'
    b'"ts": "2026-02-14T15:30:00Z"}}'
)


def test_frame_has_every_typed_log_column() -> None:
    envelope = {"session_id", "record_seq", "recv_ns", "kind", "conn", "epoch", "raw"}
    fields = set(Frame.__dataclass_fields__) | set(LIFECYCLE_FIELDS)
    assert set(LOG_SCHEMA.names) - envelope <= fields


def test_lifecycle_fields_are_the_log_columns_after_event_type() -> None:
    """``SessionLog`` writes the lifecycle fields right after ``event_type``: same names, same
    order, nothing after them (a new lifecycle field is a new last log column)."""
    names = LOG_SCHEMA.names
    assert tuple(names[names.index("event_type") + 1 :]) == LIFECYCLE_FIELDS


@pytest.mark.parametrize("repeat", [1, 2])  # 2nd time hits the memoised fast path
def test_current_delta(repeat: int) -> None:
    for _ in range(repeat):
        f = parse_frame(CURRENT_DELTA)
    assert (f.msg_type, f.sid, f.seq, f.cmd_id) == ("orderbook_delta", 2, 3, None)
    assert f.market_ticker == "FED-23DEC-T3.00"
    assert (f.side, f.price, f.delta, f.ts_ms) == ("yes", 220_000, -3300, 1700000000123)
    assert not f.malformed and f.problem is None
    assert f.body["msg"]["market_id"].startswith("9b0f")


def test_legacy_delta_prefers_exact_fields_and_parses_rfc3339() -> None:
    f = parse_frame(LEGACY_DELTA)
    assert (f.side, f.price, f.delta) == ("yes", 460_000, -5000)
    assert f.ts_ms == 1771083000000  # 2026-02-14T15:30:00Z
    assert not f.malformed


def test_oldest_delta_int_cents_int_count_int_seconds() -> None:
    msg = {"market_ticker": "T", "price": 46, "delta": -50, "side": "no", "ts": 1707667200}
    f = parse_frame(raw({"type": "orderbook_delta", "sid": 5, "seq": 1, "msg": msg}))
    assert (f.side, f.price, f.delta, f.ts_ms) == ("no", 460_000, -5000, 1707667200000)
    assert not f.malformed


def test_delta_without_any_timestamp_is_fine() -> None:
    msg = {"market_ticker": "T", "price_dollars": "0.5", "delta_fp": "1", "side": "yes"}
    f = parse_frame(raw({"type": "orderbook_delta", "sid": 1, "seq": 1, "msg": msg}))
    assert (f.price, f.delta, f.ts_ms, f.malformed) == (500_000, 100, None, False)


@pytest.mark.parametrize(
    ("price", "delta", "want_price", "want_delta"),
    [
        ("0.0085", "10.00", 8_500, 1000),  # sub-penny
        ("0.54", "2.50", 540_000, 250),  # fractional contracts
        ("0.540", "2.5", 540_000, 250),  # same level, same size
        ("0.5400", "-0.01", 540_000, -1),
        ("0.123456", "1", 123_456, 100),  # 6 decimals: the documented maximum
    ],
)
def test_delta_exact_values(price: str, delta: str, want_price: int, want_delta: int) -> None:
    msg = {"market_ticker": "T", "price_dollars": price, "delta_fp": delta, "side": "yes"}
    for _ in range(2):
        f = parse_frame(
            raw({"type": "orderbook_delta", "sid": 1, "seq": 1, "msg": msg | {"ts_ms": 1}})
        )
        assert (f.price, f.delta) == (want_price, want_delta)


def test_inexact_value_nulls_column_but_is_not_malformed() -> None:
    msg = {"market_ticker": "T", "price_dollars": "0.1234567", "delta_fp": "1.005", "side": "yes"}
    f = parse_frame(raw({"type": "orderbook_delta", "sid": 1, "seq": 9, "msg": msg}))
    assert f.price is None and f.delta is None
    assert not f.malformed
    assert f.problem and "price_dollars" in f.problem and "delta_fp" in f.problem
    assert (f.side, f.seq, f.market_ticker) == ("yes", 9, "T")


@pytest.mark.parametrize(
    "msg",
    [
        {"market_ticker": "T", "price_dollars": 0.22, "delta_fp": "1", "side": "yes"},
        {"market_ticker": "T", "price_dollars": "abc", "delta_fp": "1", "side": "yes"},
        {"market_ticker": "T", "price_dollars": "0.2", "delta_fp": ["1"], "side": "yes"},
        {"market_ticker": "T", "price_dollars": "0.2", "side": "yes"},
        {"market_ticker": "T", "delta_fp": "1", "side": "yes"},
        {"market_ticker": "T", "price_dollars": "0.2", "delta_fp": "1", "side": 1},
        {"price_dollars": "0.2", "delta_fp": "1", "side": "yes"},
        {"market_ticker": "T", "price_dollars": "0.2", "delta_fp": "1", "side": "yes", "ts": []},
        {"market_ticker": "T", "price_dollars": "0.2", "delta_fp": "1", "side": "yes", "ts": "x"},
        {
            "market_ticker": "T",
            "price_dollars": "0.2",
            "delta_fp": "1",
            "side": "yes",
            "ts_ms": "1",
        },
    ],
)
def test_wrong_types_are_malformed_but_keep_what_parsed(msg: dict[str, Any]) -> None:
    f = parse_frame(raw({"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": msg}))
    assert f.malformed and f.problem
    assert (f.msg_type, f.sid, f.seq) == ("orderbook_delta", 1, 2)


def test_unknown_side_is_kept_verbatim() -> None:
    msg = {"market_ticker": "T", "price_dollars": "0.2", "delta_fp": "1", "side": "maybe"}
    f = parse_frame(raw({"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": msg}))
    assert f.side == "maybe" and not f.malformed


def test_int64_overflow_is_unrepresentable_not_malformed() -> None:
    big = 2**64 - 1  # orjson still reads this as int
    msg = {
        "market_ticker": "T",
        "price_dollars": "0.2",
        "delta_fp": "1",
        "side": "yes",
        "ts_ms": big,
    }
    f = parse_frame(raw({"type": "orderbook_delta", "sid": big, "seq": 1, "msg": msg}))
    assert f.sid is None and f.ts_ms is None and f.price == 200_000
    assert not f.malformed and f.problem
    f = parse_frame(
        raw(
            {
                "type": "orderbook_delta",
                "sid": 1,
                "seq": 1,
                "msg": msg | {"ts_ms": 1, "price_dollars": "99999999999999999999.00"},
            }
        )
    )
    assert f.price is None and not f.malformed and f.problem


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-02-14T15:30:00Z", 1771083000000),
        ("2026-02-14T15:30:00.123Z", 1771083000123),
        ("2026-02-14T15:30:00.123999999Z", 1771083000123),  # ns: floored to ms
        ("2026-02-14T16:30:00+01:00", 1771083000000),
        ("2026-02-14T15:30:00", 1771083000000),  # no offset: UTC
        ("1969-12-31T23:59:59.9995Z", -1),  # floor, not truncation toward zero
    ],
)
def test_rfc3339_ms(text: str, ms: int) -> None:
    assert rfc3339_ms(text) == ms


def test_legacy_int_ts_in_ms_is_not_multiplied() -> None:
    msg = {"market_ticker": "T", "price": 1, "delta": 1, "side": "yes", "ts": 1707667200123}
    f = parse_frame(raw({"type": "orderbook_delta", "sid": 1, "seq": 1, "msg": msg}))
    assert f.ts_ms == 1707667200123


# --- docs/protocol.md §4: orderbook_snapshot ----------------------------------------------------

CURRENT_SNAPSHOT = {
    "type": "orderbook_snapshot",
    "sid": 2,
    "seq": 2,
    "msg": {
        "market_ticker": "FED-23DEC-T3.00",
        "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
        "yes_dollars_fp": [["0.0800", "300.00"], ["0.2200", "333.00"]],
        "no_dollars_fp": [["0.5400", "20.00"], ["0.5600", "146.00"]],
    },
}
LEGACY_SNAPSHOT = {
    "type": "orderbook_snapshot",
    "sid": 5,
    "seq": 1,
    "msg": {
        "market_ticker": "KXBTCD-26FEB14-T100000",
        "market_id": "abc-123-uuid",
        "yes": [[45, 100], [46, 250]],
        "no": [[53, 120], [54, 300]],
        "yes_dollars": [["0.4500", 100], ["0.4600", 250]],
        "no_dollars": [["0.5300", 120], ["0.5400", 300]],
    },
}


def test_snapshot_frame_envelope() -> None:
    f = parse_frame(raw(CURRENT_SNAPSHOT))
    assert (f.msg_type, f.sid, f.seq, f.market_ticker, f.malformed) == (
        "orderbook_snapshot",
        2,
        2,
        "FED-23DEC-T3.00",
        False,
    )


@pytest.mark.parametrize("as_bytes", [True, False])
def test_snapshot_current(as_bytes: bool) -> None:
    arg: Any = raw(CURRENT_SNAPSHOT) if as_bytes else CURRENT_SNAPSHOT
    yes, no = snapshot_levels(arg)
    assert yes == {80_000: 30_000, 220_000: 33_300}
    assert no == {540_000: 2000, 560_000: 14_600}


def test_snapshot_legacy_all_three_representations() -> None:
    yes, no = snapshot_levels(LEGACY_SNAPSHOT)
    assert yes == {450_000: 10_000, 460_000: 25_000}
    assert no == {530_000: 12_000, 540_000: 30_000}
    # Only the legacy integers.
    msg = {k: v for k, v in LEGACY_SNAPSHOT["msg"].items() if k in ("yes", "no")}  # type: ignore[attr-defined]
    assert snapshot_levels(msg) == (yes, no)


def test_snapshot_prefers_fp_then_dollars_then_ints() -> None:
    msg = {
        "yes": [[45, 1]],
        "yes_dollars": [["0.4500", 2]],
        "yes_dollars_fp": [["0.4500", "3.50"]],
        "no": [[50, 1]],
    }
    assert snapshot_levels(msg) == ({450_000: 350}, {})
    del msg["yes_dollars_fp"]
    assert snapshot_levels(msg) == ({450_000: 200}, {})
    del msg["yes_dollars"]
    assert snapshot_levels(msg) == ({450_000: 100}, {500_000: 100})


def test_snapshot_older_example_with_three_decimals_and_int_counts() -> None:
    assert snapshot_levels({"msg": {"yes_dollars": [["0.540", 20]]}}) == ({540_000: 2000}, {})
    assert snapshot_levels({"msg": {"yes_dollars": [["0.540", "20.5"]]}}) == ({540_000: 2050}, {})


@pytest.mark.parametrize(
    "msg",
    [
        {"market_ticker": "T"},  # both keys absent
        {"market_ticker": "T", "yes_dollars_fp": [], "no_dollars_fp": []},
        {"market_ticker": "T", "yes_dollars_fp": []},
        {"market_ticker": "T", "yes": None, "no": None},  # REST legacy nulls
    ],
)
def test_snapshot_empty_sides(msg: dict[str, Any]) -> None:
    assert snapshot_levels({"type": "orderbook_snapshot", "msg": msg}) == ({}, {})


def test_snapshot_one_side_absent() -> None:
    msg = {"market_ticker": "T", "no_dollars_fp": [["0.0085", "1.00"]]}
    assert snapshot_levels(raw({"msg": msg})) == ({}, {8_500: 100})


def test_snapshot_rest_shapes() -> None:
    rest = {"orderbook_fp": {"yes_dollars": [["0.1500", "100.00"]], "no_dollars": []}}
    assert snapshot_levels(rest) == ({150_000: 10_000}, {})


def test_snapshot_drops_zero_levels() -> None:
    assert snapshot_levels({"yes_dollars_fp": [["0.1", "0.00"], ["0.2", "1"]]}) == (
        {200_000: 100},
        {},
    )


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[1, 2]",
        {"yes_dollars_fp": "0.5"},
        {"yes_dollars_fp": [["0.5"]]},
        {"yes_dollars_fp": [["0.5", "1", "2"]]},
        {"yes_dollars_fp": [[0.5, "1"]]},
        {"yes_dollars_fp": [[50, "1"]]},  # int where a dollar string belongs: ambiguous
        {"yes": [["0.50", 1]]},  # string where legacy cents belong
        {"yes_dollars_fp": [["0.5", 1.5]]},
        {"yes_dollars_fp": [["0.5", "-1.00"]]},
        {"yes_dollars_fp": [["0.5", "1"], ["0.50", "2"]]},  # duplicate level
        {"yes_dollars_fp": [["0.12345678", "1"]]},
        {"yes_dollars_fp": [["abc", "1"]]},
    ],
)
def test_snapshot_garbage_raises_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        snapshot_levels(bad)


# --- docs/protocol.md §4, §8: lifecycle -----------------------------------------------------------

LIFECYCLE_EXAMPLES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "created",
            "exchange_index": 0,
            "open_ts": 1735657200,
            "close_ts": 1735790340,
            "price_level_structure": "linear_cent",
            "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}],
            "additional_metadata": {
                "name": "45° to 46°",
                "event_ticker": "KXHIGHNY-25JAN01",
                "floor_strike": 45,
                "cap_strike": 46,
            },
        },
        {"event_type": "created", "open_ts": 1735657200, "close_ts": 1735790340},
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "deactivated",
            "is_deactivated": True,
        },
        {"event_type": "deactivated"},
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "close_date_updated",
            "close_ts": 1735780000,
        },
        {"event_type": "close_date_updated", "close_ts": 1735780000},
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "determined",
            "result": "yes",
            "determination_ts": 1735800000,
            "settlement_value": "1.0000",
        },
        {
            "event_type": "determined",
            "result": "yes",
            "determination_ts": 1735800000,
            "settlement_value": 1_000_000,
        },
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "determined",
            "result": "no",
            "settlement_value": 0,
        },  # legacy int cents
        {"event_type": "determined", "result": "no", "settlement_value": 0},
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "determined",
            "result": "scalar",
            "settlement_value": "0.4375",
        },
        {"result": "scalar", "settlement_value": 437_500},
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "settled",
            "settled_ts": 1735803600,
        },
        {"event_type": "settled", "settled_ts": 1735803600},
    ),
    (
        {
            "market_ticker": "KXHIGHNY-25JAN01-B45.5",
            "event_type": "metadata_updated",
            "floor_strike": 45,
            "yes_sub_title": "45° to 46°",
        },
        {"event_type": "metadata_updated"},
    ),
    (
        {
            "market_ticker": "X-1",
            "event_type": "fractional_trading_updated",
            "fractional_trading_enabled": True,
        },
        {"event_type": "fractional_trading_updated"},
    ),
    (
        {"market_ticker": "X-1", "event_type": "some_future_type", "result": None},
        {"event_type": "some_future_type", "result": None},
    ),
]


@pytest.mark.parametrize("msg_type", ["market_lifecycle_v2", "multivariate_market_lifecycle"])
@pytest.mark.parametrize("with_seq", [False, True])
@pytest.mark.parametrize(("msg", "want"), LIFECYCLE_EXAMPLES)
def test_lifecycle(
    msg_type: str, with_seq: bool, msg: dict[str, Any], want: dict[str, Any]
) -> None:
    obj: dict[str, Any] = {"type": msg_type, "sid": 1, "msg": msg}
    if with_seq:
        obj["seq"] = 7
        obj["sending_ts_ms"] = 1735800000123
    f = parse_frame(raw(obj))
    assert not f.malformed, f.problem
    assert f.problem is None
    assert f.msg_type == msg_type and f.sid == 1
    assert f.seq == (7 if with_seq else None)
    assert f.market_ticker == msg["market_ticker"]
    for key, value in want.items():
        assert getattr(f.lifecycle if key in LIFECYCLE_FIELDS else f, key) == value, key
    assert f.price is None and f.side is None


def test_lifecycle_inexact_settlement_value() -> None:
    msg = {"market_ticker": "X", "event_type": "determined", "settlement_value": "0.12345678"}
    f = parse_frame(raw({"type": "market_lifecycle_v2", "sid": 1, "msg": msg}))
    assert f.lifecycle.settlement_value is None and not f.malformed
    assert "settlement_value" in (f.problem or "")


@pytest.mark.parametrize(
    "msg",
    [
        {"market_ticker": "X", "event_type": "created", "open_ts": "1735657200"},
        {"market_ticker": "X", "event_type": "created", "close_ts": 1735657200.5},
        {"market_ticker": "X", "event_type": "determined", "settlement_value": 1.0},
        {"market_ticker": "X", "event_type": "determined", "settlement_value": "one"},
        {"market_ticker": "X", "event_type": 3},
        {"event_type": "created"},
        {"market_ticker": "X"},
    ],
)
def test_lifecycle_malformed(msg: dict[str, Any]) -> None:
    f = parse_frame(raw({"type": "market_lifecycle_v2", "sid": 1, "msg": msg}))
    assert f.malformed and f.problem


@pytest.mark.parametrize("title_key", ["subtitle", "sub_title"])
def test_event_lifecycle(title_key: str) -> None:
    msg = {
        "event_ticker": "KXQUICKSETTLE-26JAN25H2150",
        "exchange_index": 0,
        "title": "What will 1+1 equal on Jan 25 at 21:50?",
        title_key: "Jan 25 at 21:50",
        "collateral_return_type": "MECNET",
        "series_ticker": "KXQUICKSETTLE",
    }
    f = parse_frame(raw({"type": "event_lifecycle", "sid": 1, "msg": msg}))
    assert (f.msg_type, f.sid, f.market_ticker, f.event_type, f.malformed) == (
        "event_lifecycle",
        1,
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    "msg",
    [
        {
            "event_ticker": "KXHIGHNY-25JAN01",
            "fee_type_override": "quadratic",
            "fee_multiplier_override": "0.5",
        },
        {
            "event_ticker": "KXHIGHNY-25JAN01",
            "fee_type_override": None,
            "fee_multiplier_override": None,
        },
    ],
)
def test_event_fee_update(msg: dict[str, Any]) -> None:
    f = parse_frame(raw({"type": "event_fee_update", "sid": 1, "msg": msg}))
    assert (f.msg_type, f.market_ticker, f.malformed, f.problem) == (
        "event_fee_update",
        None,
        False,
        None,
    )


def test_ticker_trade_and_unknown_types_are_not_malformed() -> None:
    ticker = {
        "type": "ticker",
        "sid": 3,
        "msg": {
            "market_ticker": "KXRANK-26JAN-BIA",
            "price_dollars": "",
            "ts": 1732579880,
            "Clock": 6598272994,
        },
    }
    trade = {
        "type": "trade",
        "sid": 4,
        "seq": 42,
        "msg": {
            "trade_id": "f8",
            "market_ticker": "KXBTCD-26FEB14-T100000",
            "yes_price_dollars": "0.5500",
            "count_fp": "10.00",
            "taker_side": "yes",
            "ts": 1707667200,
        },
    }
    for obj in (
        ticker,
        trade,
        {"type": "brand_new", "sid": 9, "msg": [1, 2]},
        {"type": "brand_new", "whatever": {"x": 1}},
    ):
        f = parse_frame(raw(obj))
        assert not f.malformed and f.problem is None
        assert f.msg_type == obj["type"]
    assert parse_frame(raw(trade)).market_ticker == "KXBTCD-26FEB14-T100000"
    assert parse_frame(raw(trade)).seq == 42


# --- docs/protocol.md §3: replies -----------------------------------------------------------------


def test_subscribed() -> None:
    f = parse_frame(
        b'{"id": 1, "type": "subscribed", "msg": {"channel": "market_lifecycle_v2", "sid": 1}}'
    )
    assert f.cmd_id == 1 and not f.malformed
    assert subscribed_sid(f) == ("market_lifecycle_v2", 1)
    old = parse_frame(b'{"id": 2, "type": "subscribed", "sid": 4}')  # very old server: no msg
    assert subscribed_sid(old) == (None, 4)
    assert subscribed_sid(parse_frame(b'{"id": 2, "type": "subscribed"}')) is None
    assert subscribed_sid(parse_frame(CURRENT_DELTA)) is None


def test_unsubscribed_both_shapes() -> None:
    f = parse_frame(b'{"id": 4, "sid": 2, "seq": 57, "type": "unsubscribed"}')
    assert (f.sid, f.seq, f.cmd_id) == (2, 57, 4)
    assert unsubscribed_sids(f) == [2]
    assert unsubscribed_sids(
        parse_frame(b'{"id": 4, "type": "unsubscribed", "msg": {"sids": [1, 3]}}')
    ) == [1, 3]
    both = b'{"id": 4, "sid": 1, "seq": 3, "type": "unsubscribed", "msg": {"sids": [1, 3]}}'
    assert unsubscribed_sids(parse_frame(both)) == [1, 3]
    assert unsubscribed_sids(parse_frame(b'{"type": "unsubscribed", "msg": {"sids": "x"}}')) == []


def test_ok_market_tickers_in_msg_or_top_level() -> None:
    f = parse_frame(
        b'{"id": 5, "sid": 2, "seq": 58, "type": "ok", "msg": {"market_tickers": ["A-1", "B-2"]}}'
    )
    assert (f.sid, f.seq, f.cmd_id, f.malformed) == (2, 58, 5, False)
    assert ok_market_tickers(f) == ["A-1", "B-2"]
    top = parse_frame(b'{"id": 5, "sid": 2, "seq": 58, "type": "ok", "market_tickers": ["A-1"]}')
    assert ok_market_tickers(top) == ["A-1"]
    bare = parse_frame(b'{"id": 5, "sid": 2, "seq": 58, "type": "ok"}')  # skip_ticker_ack
    assert ok_market_tickers(bare) is None and not bare.malformed
    assert list_subscriptions_reply(bare) is None


def test_list_subscriptions_reply_and_command() -> None:
    f = parse_frame(
        b'{"id": 8, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": 2},'
        b' {"channel": "market_lifecycle_v2", "sid": 1}]}'
    )
    assert not f.malformed
    assert ok_market_tickers(f) is None
    want = [("orderbook_delta", 2), ("market_lifecycle_v2", 1)]
    assert list_subscriptions_reply(f) == want
    assert orjson.loads(list_subscriptions_cmd(8)) == {"id": 8, "cmd": "list_subscriptions"}


def test_error_info() -> None:
    f = parse_frame(
        b'{"id": 9, "type": "error", "msg": {"code": 8, "msg": "Unknown channel name"}}'
    )
    assert error_info(f) == (8, "Unknown channel name", None) and f.cmd_id == 9
    f = parse_frame(
        b'{"id": 10, "type": "error", "msg": {"code": 16, "msg": "Market not found",'
        b' "market_ticker": "INVALID-MARKET"}}'
    )
    assert error_info(f) == (16, "Market not found", "INVALID-MARKET")
    assert f.market_ticker == "INVALID-MARKET"
    f = parse_frame(
        b'{"type": "error", "sid": 2, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}'
    )
    assert error_info(f)[0] == 25 and f.sid == 2 and f.cmd_id is None
    assert error_info(parse_frame(CURRENT_DELTA)) == (None, None, None)


# --- docs/protocol.md §3: commands ----------------------------------------------------------------


def test_commands() -> None:
    assert orjson.loads(subscribe(1, ["market_lifecycle_v2"])) == {
        "id": 1,
        "cmd": "subscribe",
        "params": {"channels": ["market_lifecycle_v2"]},
    }
    assert orjson.loads(subscribe(3, ("orderbook_delta",), iter(["A-1", "B.5"]))) == {
        "id": 3,
        "cmd": "subscribe",
        "params": {"channels": ["orderbook_delta"], "market_tickers": ["A-1", "B.5"]},
    }
    assert orjson.loads(unsubscribe(4, [2, 3])) == {
        "id": 4,
        "cmd": "unsubscribe",
        "params": {"sids": [2, 3]},
    }
    assert orjson.loads(update_subscription(5, 2, ["K-1"], "add_markets")) == {
        "id": 5,
        "cmd": "update_subscription",
        "params": {"sids": [2], "market_tickers": ["K-1"], "action": "add_markets"},
    }
    for bad in (
        lambda: update_subscription(5, 2, ["K"], "nope"),
        lambda: subscribe(1, []),
        lambda: unsubscribe(1, []),
        lambda: subscribe(0, ["x"]),
    ):
        with pytest.raises(ValueError):
            bad()


# --- malformed envelopes and fuzzing -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"1",
        b"null",
        b'"s"',
        b'{"type": 1}',
        b"{}",
        b'{"type": "orderbook_delta", "sid": "2", "seq": 3, "msg": {}}',
        b'{"type": "orderbook_delta", "sid": 2, "seq": 3, "msg": []}',
        b'{"type": "market_lifecycle_v2", "sid": 2, "msg": null}',
        b'{"type": "error", "msg": "oops"}',
        b'{"type": "subscribed", "msg": 3}',
        b'{"type": "ok", "msg": 3}',
        b'{"type": "ok", "id": true}',
    ],
)
def test_malformed(data: bytes) -> None:
    f = parse_frame(data)
    assert f.malformed and f.problem


def test_never_raises_on_non_bytes() -> None:
    assert parse_frame(None).malformed  # type: ignore[arg-type]


def _check_frame(f: Frame) -> None:
    assert isinstance(f, Frame)
    assert f.malformed in (True, False)
    if f.malformed:
        assert f.problem
    for name in (
        "sid",
        "seq",
        "cmd_id",
        "price",
        "delta",
        "ts_ms",
    ):
        value = getattr(f, name)
        assert value is None or (type(value) is int and -(2**63) <= value < 2**63), name
    for name in ("msg_type", "market_ticker", "side", "event_type", "problem"):
        value = getattr(f, name)
        assert value is None or type(value) is str, name
    # The lifecycle fields by the log column each fills: int64 columns hold int64, strings str.
    for name in LIFECYCLE_FIELDS:
        value = getattr(f.lifecycle, name)
        if pa.types.is_int64(LOG_SCHEMA.field(name).type):
            assert value is None or (type(value) is int and -(2**63) <= value < 2**63), name
        else:
            assert value is None or type(value) is str, name


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check_frame(parse_frame(data))


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "0.54",
            "0.540",
            "-1.00",
            "1e-2",
            "0.1234567",
            "2026-02-14T15:30:00Z",
            "yes",
            "no",
            "",
            "NaN",
            "Infinity",
            " 1",
            "１",
        ]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)

VALID_FRAMES: list[dict[str, Any]] = [
    orjson.loads(CURRENT_DELTA),
    orjson.loads(LEGACY_DELTA),
    CURRENT_SNAPSHOT,
    LEGACY_SNAPSHOT,
    {"type": "market_lifecycle_v2", "sid": 1, "seq": 3, "msg": LIFECYCLE_EXAMPLES[0][0]},
    {"type": "market_lifecycle_v2", "sid": 1, "msg": LIFECYCLE_EXAMPLES[3][0]},
    {"id": 5, "sid": 2, "seq": 58, "type": "ok", "msg": {"market_tickers": ["A"]}},
    {"id": 8, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": 2}]},
    {"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}},
    {"id": 4, "sid": 2, "seq": 57, "type": "unsubscribed", "msg": {"sids": [2]}},
    {"id": 10, "type": "error", "msg": {"code": 16, "msg": "x", "market_ticker": "I"}},
]


@st.composite
def mutated_frame(draw: st.DrawFn) -> dict[str, Any]:
    frame = orjson.loads(orjson.dumps(draw(st.sampled_from(VALID_FRAMES))))
    for _ in range(draw(st.integers(1, 4))):
        target = frame
        if isinstance(frame.get("msg"), dict) and draw(st.booleans()):
            target = frame["msg"]
        key = draw(st.sampled_from(KEYS + list(target)))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_value)
    return frame


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frame())
def test_fuzz_mutated_valid_frames(obj: dict[str, Any]) -> None:
    data = raw(obj)
    f = parse_frame(data)
    _check_frame(f)
    assert f.body == obj
    for helper in (
        subscribed_sid,
        ok_market_tickers,
        list_subscriptions_reply,
        unsubscribed_sids,
        error_info,
    ):
        helper(f)  # never raises
    with contextlib.suppress(ValueError):
        snapshot_levels(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda b: CURRENT_DELTA[: len(CURRENT_DELTA) // 2] + b))
def test_fuzz_truncated_and_spliced(data: bytes) -> None:
    _check_frame(parse_frame(data))


# --- exactness of the fast conversion against schemas.units -----------------------------------


def _reference(text: str, places: int) -> int | None:
    """The exact value of decimal ``text`` in units of ``10**-places``, by ``fractions.Fraction``
    (independent of ``schemas.units`` and of the parser's ``Decimal`` digit-tuple path); None when
    it is not a decimal number, is not a whole number of units, or is outside int64."""
    if "/" in text or "_" in text:  # Fraction reads "1/2" and "1_0"; JSON decimals never do
        return None
    try:
        value = Fraction(text) * 10**places
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator != 1 or not -(2**63) <= value.numerator < 2**63:
        return None
    return value.numerator


def _same(fast: Any, places: int, text: str) -> None:
    """``fast`` gives the exact value of ``text`` in units of ``10**-places`` or raises
    ``ValueError``, as the ``Fraction`` reference says; huge exponents and > 28 digits (too slow
    for a huge-integer reference) are only checked to stay in int64."""
    try:
        value = Decimal(text)
        tame = value.is_finite() and abs(value.adjusted()) < 20 and len(value.as_tuple()[1]) <= 28
    except (InvalidOperation, ValueError):
        tame = True  # not a decimal number at all: the reference says so too
    if not tame:
        try:
            got = fast(text)
        except ValueError:
            return
        assert -(2**63) <= got < 2**63
        return
    want = _reference(text, places)
    if want is None:
        with pytest.raises(ValueError):
            fast(text)
        return
    assert fast(text) == want
    assert fast(text) == want  # memoised answer too


decimal_text = st.builds(
    lambda sign, whole, frac, dot: f"{sign}{whole}{dot}{frac}",
    st.sampled_from(["", "-", "+"]),
    st.text(string.digits, max_size=14),
    st.text(string.digits, max_size=12),
    st.sampled_from([".", "", "e", "E-", "..", "e+"]),
)
numeric_ish = st.one_of(
    decimal_text, st.text(string.digits + ".-+eE _ ", max_size=10), st.text(max_size=8)
)


@settings(max_examples=2000, deadline=None)
@given(numeric_ish)
def test_price_micros_equals_parse_price(text: str) -> None:
    _same(price_micros, 6, text)


@settings(max_examples=2000, deadline=None)
@given(numeric_ish)
def test_size_centi_equals_parse_size(text: str) -> None:
    _same(size_centi, 2, text)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1e-2", 10_000),
        (" 0.5 ", 500_000),
        ("0.54000000000", 540_000),
        ("+0.5", 500_000),
        ("-0", 0),
        ("0e999999", 0),
        ("9223372036854.775807", 2**63 - 1),
        ("-9223372036854.775808", -(2**63)),
    ],
)
def test_price_micros_unusual_but_exact(text: str, want: int) -> None:
    assert price_micros(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "1.00000000000000000000000000001",  # schemas.units rounds this to 1_000_000 (28 digits)
        "1e999999",  # schemas.units raises decimal.Overflow after a slow huge-int build
        "1e100000",
        "9223372036854.775808",
        "1e-7",
        "NaN",
        "Infinity",
    ],
)
def test_price_micros_refuses_what_cannot_be_exact(text: str) -> None:
    with pytest.raises(ValueError):
        price_micros(text)
    f = parse_frame(
        raw(
            {
                "type": "market_lifecycle_v2",
                "sid": 1,
                "msg": {"market_ticker": "X", "event_type": "determined", "settlement_value": text},
            }
        )
    )
    assert f.lifecycle.settlement_value is None and f.problem


@settings(max_examples=500, deadline=None)
@given(st.integers(-(10**12), 10**12), st.integers(0, 6))
def test_price_roundtrip_of_exact_values(micros: int, places: int) -> None:
    text = f"{price_to_decimal(micros):.{max(places, 6)}f}"
    assert price_micros(text) == micros


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_price_memo", {})
    monkeypatch.setattr(protocol, "_MEMO_MAX", 3)
    for i in range(10):
        assert price_micros(f"0.{i:04d}") == i * 100
        assert len(protocol._price_memo) <= 3
        # a full memo starts over rather than freezing: the newest string is always memoised
        assert protocol._price_memo["0." + f"{i:04d}"] == i * 100


# --- the typed delta decoder (the reader's hot path) agrees with parse_frame -------------------

delta_field_value = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from(["0.2200", "0.5", "-33.00", "1.0000001", "12.345", "1e-2", " 0.5", "yes"]),
    st.sampled_from(["no", "", "FED-23DEC-T3.00", "orderbook_delta", "ok"]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
)


@st.composite
def delta_like(draw: st.DrawFn) -> bytes:
    frame = orjson.loads(CURRENT_DELTA)
    for _ in range(draw(st.integers(0, 3))):
        inner = frame.get("msg")
        target = inner if isinstance(inner, dict) and draw(st.booleans()) else frame
        key = draw(st.sampled_from(KEYS + list(target)))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(delta_field_value)
    return json.dumps(frame).encode()  # json, not orjson: integers beyond 64 bits too


def _rows(data: bytes) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
    """The session-log row of ``data`` via ``parse_frame`` and via ``decode_delta`` (or None)."""
    via_frame: list[tuple[Any, ...]] = []
    via_delta: list[tuple[Any, ...]] = []
    SessionLog(7, via_frame).frame_in(1, 2, data, parse_frame(data), 99)
    d = decode_delta(data)
    if d is not None:
        SessionLog(7, via_delta).delta_in(1, 2, data, d, 99)
    return via_frame[0], (via_delta[0] if via_delta else None)


def test_decode_delta_takes_the_usual_delta() -> None:
    assert decode_delta(CURRENT_DELTA) == (
        2, 3, "FED-23DEC-T3.00", "yes", 220_000, -3300, 1700000000123
    )  # fmt: skip
    by_frame, by_delta = _rows(CURRENT_DELTA)
    assert by_delta == by_frame
    assert len(by_delta) == len(LOG_SCHEMA.names)


@pytest.mark.parametrize(
    "data",
    [
        LEGACY_DELTA,  # no price_dollars/ts_ms in the current form: parse_frame's job
        CURRENT_DELTA.replace(b'"sid": 2', b'"sid": 2.0'),
        CURRENT_DELTA.replace(b'"sid": 2', b'"sid": true'),
        CURRENT_DELTA.replace(b'"sid": 2', b'"sid": 9223372036854775808'),
        CURRENT_DELTA.replace(b'"sid": 2', b'"sid": 2, "id": 5'),
        CURRENT_DELTA.replace(b'"0.2200"', b'"0.22000001"'),  # inexact: a problem is noted
        CURRENT_DELTA.replace(b'"-33.00"', b"-33"),
        CURRENT_DELTA.replace(b"orderbook_delta", b"orderbook_snapshot"),
        CURRENT_DELTA.replace(b"FED", b"\\ud800"),
        CURRENT_DELTA[:-1],
        b"\xff",
    ],
)
def test_decode_delta_leaves_the_rest_to_parse_frame(data: bytes) -> None:
    assert decode_delta(data) is None


@settings(max_examples=1500, deadline=None)
@given(delta_like())
def test_decode_delta_agrees_with_parse_frame(data: bytes) -> None:
    by_frame, by_delta = _rows(data)
    if by_delta is not None:
        assert by_delta == by_frame


# --- the reader's delta fast path (decode_delta + ConnectionCore.delta) == the careful path ------


def _reader_step(core: ConnectionCore, data: bytes, fast: bool, now: int) -> list[Any]:
    """One frame as ``recorder.connection``'s reader handles it (``fast``) or through
    ``parse_frame`` + ``ConnectionCore.frame`` only; the effects, comparable."""
    effects: Any = None
    if fast:
        d = decode_delta(data)
        if d is not None:
            effects = core.delta(d, now)
    if effects is None:
        effects = core.frame(parse_frame(data), now)
    return [e.command.message() if isinstance(e, Send) else e for e in effects]


def _subscribed_core() -> tuple[ConnectionCore, list[Any]]:
    core = ConnectionCore(0, CoreSettings())
    core.want("A", 0)
    core.want("B", 0)
    sends = [e for e in core.opened(0) if isinstance(e, Send)]
    assert sends, "the core subscribes its wanted markets on open"
    cmd_id = sends[0].command.cmd_id
    core.sent(cmd_id, 0)
    msg = {"channel": "orderbook_delta", "sid": 1}
    out = list(core.frame(parse_frame(raw({"type": "subscribed", "id": cmd_id, "msg": msg})), 1))
    for ticker in ("A", "B"):
        snap = {
            "market_ticker": ticker,
            "yes_dollars_fp": [["0.4000", "10.00"]],
            "no_dollars_fp": [["0.5000", "5.00"]],
        }
        seq = 1 if ticker == "A" else 2
        obj = {"type": "orderbook_snapshot", "sid": 1, "seq": seq, "msg": snap}
        out += core.frame(parse_frame(raw(obj)), 2)
    return core, out


delta_step = st.tuples(
    st.sampled_from([1, 1, 1, 1, 0, 2, -1]),  # seq step: next (mostly), duplicate, gap, stale
    st.sampled_from([1, 1, 1, 2]),  # sid
    st.sampled_from(["A", "A", "B", "C"]),  # C: a market this core does not follow
    st.sampled_from(["yes", "no", "maybe"]),
    st.sampled_from(["0.4000", "0.5000", "0.6500", "0.0100", "0.12345678"]),
    st.sampled_from(["1.00", "-1.00", "-10.00", "-50.00", "2.5", "0.001"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(delta_step, max_size=40))
def test_reader_fast_path_has_the_careful_paths_effects(steps: list[Any]) -> None:
    careful, setup = _subscribed_core()
    fast, _ = _subscribed_core()
    assert fast.anchored == careful.anchored == {"A", "B"}, setup
    seq, now = 2, 10
    for step, sid, ticker, side, price, size in steps:
        seq += step
        msg = {
            "market_ticker": ticker,
            "price_dollars": price,
            "delta_fp": size,
            "side": side,
            "ts_ms": 1,
        }
        data = raw({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": msg})
        now += 1_000_000
        assert _reader_step(fast, data, True, now) == _reader_step(careful, data, False, now)
        assert fast.anchored == careful.anchored
        assert fast.seq.sids() == careful.seq.sids()
        assert all(fast.seq.last(s) == careful.seq.last(s) for s in careful.seq.sids())
        for t in ("A", "B"):
            assert fast.books[t].yes == careful.books[t].yes
            assert fast.books[t].no == careful.books[t].no

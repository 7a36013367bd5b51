"""Kalshi WebSocket protocol, sans-I/O: parse frames into typed columns, build commands.

Everything here is a pure function of bytes (or parsed JSON). The raw bytes are always kept by the
caller, so parsing is allowed to give up on a field (typed column ``None`` + ``problem``) but never
to raise. Prices are micro-dollars and sizes centi-contracts (``schemas.units``); the fast paths
below are exact and checked against ``schemas.units`` by property tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeGuard

import msgspec
import orjson

from schemas import wire
from schemas.lifecycle import NO_LIFECYCLE, LifecycleFields
from schemas.units import INT64_MAX, INT64_MIN, PRICE_SCALE, SIZE_SCALE, scaled_int
from schemas.wire import TS_SECONDS_MAX, rfc3339_ms

_loads = orjson.loads


# ---------------------------------------------------------------------------------------------
# Exact fixed-point conversion with a bounded memo.
#
# Why a memo: the set of distinct price strings on a feed is tiny (a tick grid) and delta strings
# repeat a lot, so a dict hit beats any parsing. Misses go through a strict ASCII fast path and
# anything unusual ("1e-2", " 0.5", "0.54000000") goes through an exact Decimal digit-tuple path
# (``schemas.units.scaled_int``, the one exact conversion).
# ---------------------------------------------------------------------------------------------


def _cents(value: int) -> int:
    """Legacy integer cents -> micro-dollars."""
    return value * (PRICE_SCALE // 100)


def _contracts(value: int) -> int:
    """Legacy integer contracts -> centi-contracts."""
    return value * SIZE_SCALE


_MEMO_MAX = 65_536
"""Entries per memo. Sizes are not a small grid (a busy feed has ~30,000 distinct ``delta_fp``
strings per 200,000 deltas), so a full memo is cleared and refilled rather than frozen: a frozen
one sent every new string through the slow path (a quarter of the parser's time in a profile)."""
_price_memo: dict[str, int] = {}
_size_memo: dict[str, int] = {}


def _fixed(text: str, places: int) -> int | None:
    """Strict ``[-]digits.digits`` with at most ``places`` decimals -> scaled int; else None."""
    neg = text[:1] == "-"
    body = text[1:] if neg else text
    whole, dot, frac = body.partition(".")
    if (
        not dot
        or not whole
        or not frac
        or len(frac) > places
        or len(whole) > 12
        or not body.isascii()
        or not whole.isdigit()
        or not frac.isdigit()
    ):
        return None
    value = int(whole) * 10**places + int(frac) * 10 ** (places - len(frac))
    return -value if neg else value


def _no_separators(text: str, what: str) -> str:
    """``Decimal`` reads ``"0_"`` and ``"1_000"`` (Python digit separators); a JSON decimal
    string never has them, so they are refused (found by the ``Fraction`` reference test)."""
    if "_" in text:
        raise ValueError(f"{what} {text!r} is not a decimal number")
    return text


def _memoised(text: str, memo: dict[str, int], places: int, what: str) -> int:
    value = memo.get(text)
    if value is None:
        value = _fixed(text, places)
        if value is None:
            value = scaled_int(_no_separators(text, what), places, what)
        if len(memo) >= _MEMO_MAX:
            memo.clear()  # start over: a memo that stops learning sends misses slow
        memo[text] = value
    return value


def price_micros(text: str) -> int:
    """Dollar string -> micro-dollars, exact (``schemas.units.parse_price`` semantics), within
    int64, memoised. Raises ``ValueError`` otherwise."""
    return _memoised(text, _price_memo, 6, "price")


def size_centi(text: str) -> int:
    """Contract-count string -> centi-contracts, exact (``schemas.units.parse_size``
    semantics), within int64, memoised. Raises ``ValueError`` otherwise."""
    return _memoised(text, _size_memo, 2, "size")


def _level_price(value: str | int) -> int:
    return price_micros(value) if type(value) is str else _cents(value)  # type: ignore[arg-type]


def _level_size(value: str | int) -> int:
    return size_centi(value) if type(value) is str else _contracts(value)  # type: ignore[arg-type]


def snapshot_levels(
    body_or_raw: bytes | str | dict[str, Any],
) -> tuple[dict[int, int], dict[int, int]]:
    """``schemas.wire.snapshot_levels`` (the one snapshot parser) with the recorder's memoised
    exact conversions: ``(yes, no)`` as ``{price micro-dollars: size centi-contracts}``."""
    return wire.snapshot_levels(body_or_raw, price=_level_price, size=_level_size)


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Frame:
    """One inbound frame: envelope, typed ``schemas.log`` columns and why it is malformed, if so.

    ``malformed`` means the frame is not the shape docs/protocol.md describes (not JSON, not an
    object, a field of the wrong JSON type, a required field missing, a number or timestamp string
    that is not one). A value of the right type that cannot be represented exactly in its column
    (more decimals than the unit, outside int64) only nulls that column and is named in ``problem``;
    it does not make the frame malformed. ``problem`` lists every issue, ``"; "``-separated.
    Snapshot level arrays are not checked here (that costs a full parse): ``snapshot_levels``
    does it when the book needs them (the caller records a bad snapshot as a book problem).

    Mutable, where the feed's events and ``lifecycle`` are frozen: the careful path fills it
    field by field, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field)
    costs ~7x a plain one on the fast path's positional construction (1.9 µs against 0.27 µs).
    """

    msg_type: str | None = None
    sid: int | None = None
    seq: int | None = None
    cmd_id: int | None = None
    market_ticker: str | None = None
    malformed: bool = False
    problem: str | None = None
    body: Any = None
    side: str | None = None
    price: int | None = None
    delta: int | None = None
    ts_ms: int | None = None
    event_type: str | None = None
    lifecycle: LifecycleFields = NO_LIFECYCLE
    """A lifecycle frame's typed fields, built once the whole message is read; the shared
    all-None instance for every other frame (no allocation on the delta path)."""


LIFECYCLE_TYPES = frozenset(wire.LIFECYCLE_MSG_TYPES)
"""Message types whose ``msg`` is a market lifecycle payload (typed lifecycle columns)."""

_DELTA = "orderbook_delta"


class _Issues:
    """Problems found while parsing one frame (slow path only)."""

    __slots__ = ("malformed", "notes")

    def __init__(self) -> None:
        self.malformed = False
        self.notes: list[str] = []

    def bad(self, note: str) -> None:
        self.malformed = True
        self.notes.append(note)

    def inexact(self, note: str) -> None:
        self.notes.append(note)

    def text(self) -> str | None:
        return "; ".join(self.notes) if self.notes else None


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number_text(text: str) -> bool:
    """Whether ``text`` is a finite decimal number at all (vs. merely too precise)."""
    if "_" in text:
        return False
    try:
        return Decimal(text).is_finite()
    except (InvalidOperation, ValueError):
        return False


def _int_in(obj: dict[str, Any], key: str, where: str, issues: _Issues) -> int | None:
    """Optional int64 field; null counts as absent."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int:
        issues.bad(f"{where}{key} is {_tname(value)}, expected int")
        return None
    if not INT64_MIN <= value <= INT64_MAX:
        issues.inexact(f"{where}{key} {value} is outside int64")
        return None
    return value


def _str_in(
    obj: dict[str, Any], key: str, where: str, issues: _Issues, required: bool = False
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            issues.bad(f"{where}{key} missing")
        return None
    if type(value) is not str:
        issues.bad(f"{where}{key} is {_tname(value)}, expected string")
        return None
    return value


def _checked(value: int, what: str, issues: _Issues) -> int | None:
    if not INT64_MIN <= value <= INT64_MAX:
        issues.inexact(f"{what} is outside int64")
        return None
    return value


def _exact_text(text: str, key: str, convert: Callable[[str], int], issues: _Issues) -> int | None:
    """A decimal string field -> its scaled int; too precise or outside int64 only nulls it
    (noted), a string that is no number at all makes the frame malformed."""
    try:
        return _checked(convert(text), f"msg.{key} {text!r}", issues)
    except ValueError as exc:
        if _is_number_text(text):
            issues.inexact(f"msg.{key}: {exc}")
        else:
            issues.bad(f"msg.{key} {text!r} is not a decimal number")
        return None


def _fixed_field(
    msg: dict[str, Any],
    exact_key: str,
    legacy_key: str,
    convert: Callable[[str], int],
    legacy_convert: Callable[[int], int],
    issues: _Issues,
    required: bool,
) -> int | None:
    """A fixed-point field: the exact string form, else the legacy integer form."""
    text = msg.get(exact_key)
    if text is not None:
        if type(text) is not str:
            issues.bad(f"msg.{exact_key} is {_tname(text)}, expected string")
            return None
        return _exact_text(text, exact_key, convert, issues)
    legacy = msg.get(legacy_key)
    if legacy is not None:
        if type(legacy) is not int:
            issues.bad(f"msg.{legacy_key} is {_tname(legacy)}, expected int")
            return None
        return _checked(legacy_convert(legacy), f"msg.{legacy_key} {legacy}", issues)
    if required:
        issues.bad(f"msg.{exact_key} missing")
    return None


def _delta_ts(msg: dict[str, Any], issues: _Issues) -> int | None:
    ts_ms = msg.get("ts_ms")
    if ts_ms is not None:
        return _int_in(msg, "ts_ms", "msg.", issues)
    ts = msg.get("ts")
    if ts is None:
        return None
    if type(ts) is int:
        return _checked(ts * 1000 if abs(ts) < TS_SECONDS_MAX else ts, f"msg.ts {ts}", issues)
    if type(ts) is str:
        try:
            return _checked(rfc3339_ms(ts), f"msg.ts {ts!r}", issues)
        except (ValueError, OverflowError) as exc:
            issues.bad(f"msg.ts: {exc}")
            return None
    issues.bad(f"msg.ts is {_tname(ts)}, expected int or RFC3339 string")
    return None


_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
"""msgspec keeps integers beyond 64 bits as Python ints; the log columns are int64, so the range
is checked while decoding (in C)."""


class _DeltaMsg(msgspec.Struct, gc=False):  # gc=False: strings and ints only, no cycles possible
    market_ticker: str
    price_dollars: str
    delta_fp: str
    side: str
    ts_ms: _Int64


class _Delta(msgspec.Struct, gc=False):
    type: Literal["orderbook_delta"]
    sid: _Int64
    seq: _Int64
    msg: _DeltaMsg
    id: None = None  # a reply carrying a delta is not the usual shape: the careful path


_decode_delta = msgspec.json.Decoder(_Delta).decode
_DecodeError = msgspec.DecodeError

DeltaFields = tuple[int, int, str, str, int, int, int]
"""``(sid, seq, market_ticker, side, price, delta, ts_ms)`` of a current-format delta."""


def decode_delta(raw: bytes) -> DeltaFields | None:
    """The typed columns of a current-format ``orderbook_delta``, or None for anything else.

    Why: most frames are deltas, and msgspec decodes them straight into typed structs (strict:
    no int from a float or bool, no str from a number), with no dict per object and no key
    lookups: less CPU than ``orjson.loads`` and walking dicts. None means "not the usual shape"
    (any other type, a missing or mistyped field, an ``id``, a value outside int64, a price or
    size that is not exact in its unit): the caller then uses ``parse_frame``, which explains
    what is wrong. Where this returns a tuple, it equals the columns ``parse_frame`` gives
    (property test ``test_decode_delta_agrees_with_parse_frame``).
    """
    try:
        d = _decode_delta(raw)
    except _DecodeError:
        return None
    m = d.msg
    price = _price_memo.get(m.price_dollars)  # the memos inline: this runs for every delta
    delta = _size_memo.get(m.delta_fp)
    if price is None or delta is None:  # a value not seen before: convert exactly and memoise
        try:
            price = price_micros(m.price_dollars)
            delta = size_centi(m.delta_fp)
        except ValueError:
            return None
    return d.sid, d.seq, m.market_ticker, m.side, price, delta, m.ts_ms


def parse_frame(raw: bytes) -> Frame:
    """Parse one inbound frame. Never raises; see ``Frame`` for what ``malformed`` means.

    The common current-format ``orderbook_delta`` takes a fast path (one ``orjson.loads``, direct
    gets, memoised exact conversion, positional construction); everything else, and any delta that
    is not exactly the usual shape, goes through the careful path.
    """
    try:
        body = _loads(raw)
    except Exception as exc:  # orjson.JSONDecodeError, or TypeError for a non-bytes argument
        return Frame(malformed=True, problem=f"not JSON: {exc}")
    # Fast path. Subscripts instead of .get() and no isinstance() chains: any missing key,
    # non-dict msg, unhashable, non-string or inexact value raises KeyError/TypeError/ValueError
    # (zero-cost try in 3.11) and the careful path takes over, explaining what is wrong. Memo keys
    # are strings, so a hit proves the type.
    try:
        if body["type"] == "orderbook_delta" and "id" not in body:
            msg = body["msg"]
            sid = body["sid"]
            seq = body["seq"]
            side = msg["side"]
            ticker = msg["market_ticker"]
            ts_ms = msg["ts_ms"]
            text = msg["price_dollars"]
            price = _price_memo.get(text)
            if price is None:
                price = price_micros(text)  # raises for a non-str or inexact value
            text = msg["delta_fp"]
            delta = _size_memo.get(text)
            if delta is None:
                delta = size_centi(text)
            # orjson yields ints in [-2**63, 2**64): only the upper int64 bound needs a check.
            if (
                type(sid) is int
                and type(seq) is int
                and type(ts_ms) is int
                and type(side) is str
                and type(ticker) is str
                and sid <= 9223372036854775807
                and seq <= 9223372036854775807
                and ts_ms <= 9223372036854775807
            ):
                return Frame(
                    "orderbook_delta", sid, seq, None, ticker, False, None, body, side, price,
                    delta, ts_ms,
                )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        pass
    return _parse_slow(body)


def _parse_slow(body: Any) -> Frame:
    """The careful path: every field checked, every issue noted."""
    if type(body) is not dict:
        return Frame(body=body, malformed=True, problem=f"top level is {_tname(body)}, not object")
    issues = _Issues()
    frame = Frame(body=body)
    msg_type = _str_in(body, "type", "", issues, required=True)
    frame.msg_type = msg_type
    frame.sid = _int_in(body, "sid", "", issues)
    frame.seq = _int_in(body, "seq", "", issues)
    frame.cmd_id = _int_in(body, "id", "", issues)
    msg = body.get("msg")
    if msg_type == _DELTA:
        if type(msg) is dict:
            _parse_delta(frame, msg, issues)
        else:
            issues.bad(f"msg is {_tname(msg)}, expected object")
    elif msg_type in LIFECYCLE_TYPES:
        if type(msg) is dict:
            _parse_lifecycle(frame, msg, issues)
        else:
            issues.bad(f"msg is {_tname(msg)}, expected object")
    elif msg_type == "orderbook_snapshot":
        if type(msg) is dict:
            frame.market_ticker = _str_in(msg, "market_ticker", "msg.", issues, required=True)
        else:
            issues.bad(f"msg is {_tname(msg)}, expected object")
    elif msg_type in (wire.EVENT_LIFECYCLE_MSG, wire.EVENT_FEE_UPDATE_MSG):
        if type(msg) is not dict:
            issues.bad(f"msg is {_tname(msg)}, expected object")
    elif msg_type == "error":
        if type(msg) is dict:
            frame.market_ticker = _str_in(msg, "market_ticker", "msg.", issues)
            _int_in(msg, "code", "msg.", issues)
            _str_in(msg, "msg", "msg.", issues)
        else:
            issues.bad(f"msg is {_tname(msg)}, expected object")
    elif msg_type == "subscribed":
        if msg is not None and type(msg) is not dict:
            issues.bad(f"msg is {_tname(msg)}, expected object")
        elif msg is not None:
            _str_in(msg, "channel", "msg.", issues)
            _int_in(msg, "sid", "msg.", issues)
    elif msg_type == "ok":
        if msg is not None and type(msg) not in (dict, list):
            issues.bad(f"msg is {_tname(msg)}, expected object or list")
    elif type(msg) is dict:
        # Unknown or untyped message types (ticker, trade, new ones): not malformed, but the
        # market they concern is still worth a column.
        ticker = msg.get("market_ticker")
        if type(ticker) is str:
            frame.market_ticker = ticker
    frame.malformed = issues.malformed
    frame.problem = issues.text()
    return frame


def _parse_delta(frame: Frame, msg: dict[str, Any], issues: _Issues) -> None:
    frame.market_ticker = _str_in(msg, "market_ticker", "msg.", issues, required=True)
    frame.side = _str_in(msg, "side", "msg.", issues, required=True)
    frame.price = _fixed_field(
        msg, "price_dollars", "price", price_micros, _cents, issues, required=True
    )
    frame.delta = _fixed_field(msg, "delta_fp", "delta", size_centi, _contracts, issues, True)
    frame.ts_ms = _delta_ts(msg, issues)


def _parse_lifecycle(frame: Frame, msg: dict[str, Any], issues: _Issues) -> None:
    frame.market_ticker = _str_in(msg, "market_ticker", "msg.", issues, required=True)
    frame.event_type = _str_in(msg, "event_type", "msg.", issues, required=True)
    frame.lifecycle = LifecycleFields(
        open_ts=_int_in(msg, "open_ts", "msg.", issues),
        close_ts=_int_in(msg, "close_ts", "msg.", issues),
        determination_ts=_int_in(msg, "determination_ts", "msg.", issues),
        settled_ts=_int_in(msg, "settled_ts", "msg.", issues),
        result=_str_in(msg, "result", "msg.", issues),
        settlement_value=_settlement_value(msg.get("settlement_value"), issues),
    )


def _settlement_value(value: Any, issues: _Issues) -> int | None:
    """Micro-dollars from a dollar string or legacy integer cents; None (and a note) otherwise."""
    if value is None:
        return None
    if type(value) is str:
        return _exact_text(value, "settlement_value", price_micros, issues)
    if type(value) is int:
        return _checked(_cents(value), f"msg.settlement_value {value}", issues)
    issues.bad(f"msg.settlement_value is {_tname(value)}, expected dollar string or int")
    return None


# ---------------------------------------------------------------------------------------------
# Replies to commands
# ---------------------------------------------------------------------------------------------


def _body_msg(frame: Frame) -> tuple[dict[str, Any], Any]:
    body = frame.body
    if type(body) is not dict:
        return {}, None
    return body, body.get("msg")


def _int64(value: Any) -> TypeGuard[int]:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def subscribed_sid(frame: Frame) -> tuple[str | None, int] | None:
    """``(channel, sid)`` of a ``subscribed`` reply, or None if it names no usable sid.

    Very old servers sent no ``msg``: then the top-level ``sid`` is used and the channel is None
    (the caller knows it from the command ``id``).
    """
    if frame.msg_type != "subscribed":
        return None
    body, msg = _body_msg(frame)
    if type(msg) is dict:
        sid = msg.get("sid")
        channel = msg.get("channel")
        if _int64(sid):
            return (channel if type(channel) is str else None), sid
    sid = body.get("sid")
    if _int64(sid):
        return None, sid
    return None


def _str_list(value: Any) -> list[str] | None:
    if type(value) is list and all(type(item) is str for item in value):
        return value
    return None


def ok_market_tickers(frame: Frame) -> list[str] | None:
    """Full market list of an ``ok`` (update_subscription ack): ``msg.market_tickers`` or the
    top-level ``market_tickers`` (older shape). None when absent (``skip_ticker_ack``), not a
    list of strings, or when this is the list_subscriptions reply (see ``list_subscriptions``)."""
    if frame.msg_type != "ok":
        return None
    body, msg = _body_msg(frame)
    if type(msg) is dict and "market_tickers" in msg:
        return _str_list(msg["market_tickers"])
    return _str_list(body.get("market_tickers"))


def list_subscriptions_reply(frame: Frame) -> list[tuple[str, int]] | None:
    """``[(channel, sid), ...]`` of a list_subscriptions ``ok`` (``msg`` is an array); entries
    without a string channel and int sid are skipped. None if this is not such a reply."""
    if frame.msg_type != "ok":
        return None
    _, msg = _body_msg(frame)
    if type(msg) is not list:
        return None
    out: list[tuple[str, int]] = []
    for item in msg:
        if type(item) is dict:
            channel = item.get("channel")
            sid = item.get("sid")
            if type(channel) is str and _int64(sid):
                out.append((channel, sid))
    return out


def unsubscribed_sids(frame: Frame) -> list[int]:
    """Sids an ``unsubscribed`` reply ends: top-level ``sid`` and/or ``msg.sids`` (both shapes
    are documented: docs/protocol.md §3), deduplicated, in order."""
    if frame.msg_type != "unsubscribed":
        return []
    body, msg = _body_msg(frame)
    out: list[int] = []
    sid = body.get("sid")
    if _int64(sid):
        out.append(sid)
    if type(msg) is dict:
        sids = msg.get("sids")
        if type(sids) is list:
            out.extend(s for s in sids if _int64(s) and s not in out)
    return out


def error_info(frame: Frame) -> tuple[int | None, str | None, str | None]:
    """``(code, message, market_ticker)`` of an ``error`` frame; each None if absent or odd."""
    _, msg = _body_msg(frame)
    if frame.msg_type != "error" or type(msg) is not dict:
        return None, None, None
    code = msg.get("code")
    text = msg.get("msg")
    ticker = msg.get("market_ticker")
    return (
        code if _int64(code) else None,
        text if type(text) is str else None,
        ticker if type(ticker) is str else None,
    )


# ---------------------------------------------------------------------------------------------
# Commands (client -> server)
# ---------------------------------------------------------------------------------------------

UPDATE_ACTIONS = frozenset({"add_markets", "delete_markets", "get_snapshot"})


def _command(cmd_id: int, cmd: str, params: dict[str, Any] | None) -> bytes:
    if type(cmd_id) is not int or cmd_id < 1:
        raise ValueError(f"command id must be a positive int, got {cmd_id!r}")
    obj: dict[str, Any] = {"id": cmd_id, "cmd": cmd}
    if params is not None:
        obj["params"] = params
    return orjson.dumps(obj)


def subscribe(
    cmd_id: int, channels: Iterable[str], market_tickers: Iterable[str] | None = None
) -> bytes:
    """``subscribe``; tickers always go as the ``market_tickers`` list (never the singular
    ``market_ticker``), as kalshi-sdk does. Lifecycle channels take no tickers."""
    params: dict[str, Any] = {"channels": list(channels)}
    if not params["channels"]:
        raise ValueError("subscribe needs at least one channel")
    if market_tickers is not None:
        params["market_tickers"] = list(market_tickers)
    return _command(cmd_id, "subscribe", params)


def unsubscribe(cmd_id: int, sids: Iterable[int]) -> bytes:
    """``unsubscribe`` the given sids."""
    sid_list = list(sids)
    if not sid_list:
        raise ValueError("unsubscribe needs at least one sid")
    return _command(cmd_id, "unsubscribe", {"sids": sid_list})


def update_subscription(cmd_id: int, sid: int, market_tickers: Iterable[str], action: str) -> bytes:
    """``update_subscription`` of one sid: ``add_markets`` | ``delete_markets`` | ``get_snapshot``.

    The sid goes as ``"sids": [sid]`` (the first documented example, docs/protocol.md §3; the
    server accepts ``sid`` or a one-element ``sids``, never both).
    """
    if action not in UPDATE_ACTIONS:
        raise ValueError(f"update_subscription action {action!r} not in {sorted(UPDATE_ACTIONS)}")
    params = {"sids": [sid], "market_tickers": list(market_tickers), "action": action}
    return _command(cmd_id, "update_subscription", params)


def list_subscriptions_cmd(cmd_id: int) -> bytes:
    """``list_subscriptions`` (no params)."""
    return _command(cmd_id, "list_subscriptions", None)

"""Kalshi order-book wire format, both generations, in exact units: parse snapshot levels, and
write prices, sizes and snapshots back in the format they were received in.

Why here and not in ``recorder``: the tap (``feed``) must rebuild books from recorded snapshot
frames and serve snapshots in the exchange's own format, and it must not import the recorder. One
exact implementation, built on ``schemas.units``, serves both sides.

Formats (docs/protocol.md §4):

* ``current``: ``yes_dollars_fp`` / ``no_dollars_fp`` = ``[["0.4500", "100.00"], ...]``;
* ``legacy``: ``yes`` / ``no`` = ``[[45, 100], ...]`` (int cents, int contracts), often with
  ``yes_dollars`` / ``no_dollars`` = ``[["0.4500", 100], ...]`` beside them.

A side key that is absent, null or ``[]`` is an empty side.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from schemas.units import INT64_MAX, INT64_MIN, PRICE_SCALE, SIZE_SCALE, parse_price, parse_size

CURRENT = "current"
LEGACY = "legacy"

LIFECYCLE_CHANNEL = "market_lifecycle_v2"
"""The channel (and frame ``type``) of market lifecycle notices."""
MVE_LIFECYCLE_CHANNEL = "multivariate_market_lifecycle"
"""The same notices for multivariate (``KXMVE...``) markets, a channel of its own."""
LIFECYCLE_MSG_TYPES: tuple[str, ...] = (LIFECYCLE_CHANNEL, MVE_LIFECYCLE_CHANNEL)
"""Frame types whose typed lifecycle columns are lifecycle events (recorder, loader, views,
training, probe: this one declaration)."""
SNAPSHOT_MSG = "orderbook_snapshot"
DELTA_MSG = "orderbook_delta"
ORDERBOOK_CHANNEL = DELTA_MSG
"""Kalshi's book channel, named after its delta message."""
EVENT_LIFECYCLE_MSG = "event_lifecycle"
"""Event-level notices on the lifecycle channel (recorded, never acted on)."""
EVENT_FEE_UPDATE_MSG = "event_fee_update"
LIFECYCLE_CHANNEL_MSG_TYPES = frozenset(
    {*LIFECYCLE_MSG_TYPES, EVENT_LIFECYCLE_MSG, EVENT_FEE_UPDATE_MSG}
)
"""Every message type the lifecycle channels carry."""
MVE_PREFIX = "KXMVE"
"""Tickers of multivariate (combo) markets start with this (docs/protocol.md §4)."""

KALSHI_CHANNELS = frozenset(
    {
        ORDERBOOK_CHANNEL,
        "ticker",
        "ticker_v2",
        "trade",
        "fill",
        "market_positions",
        LIFECYCLE_CHANNEL,
        MVE_LIFECYCLE_CHANNEL,
        "multivariate",
        "communications",
        "order_group_updates",
        "user_orders",
        "cfbenchmarks_value",
    }
)
"""The exchange's channel names (the asyncapi enum, docs/protocol.md §4); any other is error 8."""

ERROR_MESSAGES = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    6: "Already subscribed",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    16: "Market not found",
    17: "Internal error",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
}
"""The exchange's error codes and their texts (docs/protocol.md §3): the simulator sends them, the
tap answers with a subset."""

Levels = dict[int, int]
"""{price micro-dollars: size centi-contracts}, sizes > 0."""

# (yes key, no key, prices are dollar strings) in order of preference: most precise first.
_FORMATS: tuple[tuple[str, str, bool], ...] = (
    ("yes_dollars_fp", "no_dollars_fp", True),
    ("yes_dollars", "no_dollars", True),
    ("yes", "no", False),
)


Convert = Callable[[str | int], int]
"""A level's price or size -> exact int (a dollar or count string, or a legacy int)."""


def _side(levels: Any, key: str, dollars: bool, price: Convert, size: Convert) -> Levels:
    if levels is None:  # REST legacy sends null for an empty side
        return {}
    if not isinstance(levels, list):
        raise ValueError(f"snapshot {key!r} is {type(levels).__name__}, expected a list of levels")
    out: Levels = {}
    for i, level in enumerate(levels):
        if not isinstance(level, list) or len(level) != 2:
            raise ValueError(f"snapshot {key}[{i}] = {level!r} is not a [price, size] pair")
        p, s = level
        if dollars and type(p) is not str:
            raise ValueError(f"snapshot {key}[{i}] price {p!r} is not a dollar string")
        if not dollars and type(p) is not int:
            raise ValueError(f"snapshot {key}[{i}] price {p!r} is not integer cents")
        if type(s) not in (str, int):
            raise ValueError(f"snapshot {key}[{i}] size {s!r} is not a count")
        micros = price(p)
        centi = size(s)
        if not (INT64_MIN <= micros <= INT64_MAX and centi <= INT64_MAX):
            raise ValueError(f"snapshot {key}[{i}] = {level!r} is outside int64")
        if centi < 0:
            raise ValueError(f"snapshot {key}[{i}] has negative size {s!r}")
        if micros in out:
            raise ValueError(f"snapshot {key} lists price {p!r} twice (same level after scaling)")
        out[micros] = centi  # a zero is remembered for the duplicate check, dropped below
    return {p: s for p, s in out.items() if s}


def snapshot_format(msg: dict[str, Any]) -> str:
    """``current`` if the snapshot ``msg`` uses ``*_dollars_fp`` keys, ``legacy`` if it uses
    ``yes``/``no``/``*_dollars``; ``current`` when it has no side key at all (empty book)."""
    if "yes_dollars_fp" in msg or "no_dollars_fp" in msg:
        return CURRENT
    if any(k in msg for k in ("yes", "no", "yes_dollars", "no_dollars")):
        return LEGACY
    return CURRENT


def snapshot_levels(
    frame: bytes | bytearray | memoryview | str | dict[str, Any],
    *,
    price: Convert = parse_price,
    size: Convert = parse_size,
) -> tuple[Levels, Levels]:
    """Bid levels ``(yes, no)`` of a snapshot: raw frame bytes, a parsed frame, its ``msg``, or a
    REST order book (``orderbook_fp`` / ``orderbook``). The one snapshot parser (recorder, tap,
    training, analysts' tests); the recorder passes memoised converters with the same results.

    The most precise representation present wins (``*_dollars_fp``, then ``*_dollars``, then
    legacy integer cents), chosen per frame; a side key that is absent, null or ``[]`` is an
    empty side; zero-size levels are dropped. Raises ``ValueError`` (a one-line reason) on
    anything else: not JSON, levels that are not pairs, unparseable, inexact or beyond-int64
    numbers, negative or duplicate levels. Prices outside (0, 1) are kept as sent.
    """
    obj: Any = frame
    if isinstance(obj, bytes | bytearray | memoryview | str):
        try:
            obj = orjson.loads(obj)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"snapshot is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"snapshot is {type(obj).__name__}, expected a JSON object")
    for wrapper in ("msg", "orderbook_fp", "orderbook"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict):
            obj = inner
            break
    for yes_key, no_key, dollars in _FORMATS:
        if yes_key in obj or no_key in obj:
            try:
                return (
                    _side(obj.get(yes_key), yes_key, dollars, price, size),
                    _side(obj.get(no_key), no_key, dollars, price, size),
                )
            except ValueError as exc:
                if "snapshot" in str(exc):
                    raise
                raise ValueError(f"snapshot {yes_key}/{no_key}: {exc}") from exc
    return {}, {}


def format_price(micros: int) -> str:
    """Micro-dollars -> the exchange's dollar string: 4 decimals (``"0.4500"``), more only when
    the price needs them (``"0.004550"``)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), PRICE_SCALE)
    text = f"{frac:06d}"
    text = text[:4] if text.endswith("00") else text.rstrip("0")
    return f"{sign}{whole}.{text}"


def format_size(centi: int) -> str:
    """Centi-contracts -> the exchange's ``_fp`` count string with 2 decimals (``"10.67"``)."""
    sign = "-" if centi < 0 else ""
    whole, frac = divmod(abs(centi), SIZE_SCALE)
    return f"{sign}{whole}.{frac:02d}"


def _legacy_ok(levels: Levels) -> bool:
    cent = PRICE_SCALE // 100
    return all(p % cent == 0 and s % SIZE_SCALE == 0 for p, s in levels.items())


def empty_sides_listed(msg: dict[str, Any]) -> bool:
    """Whether this snapshot ``msg`` writes an empty side as ``[]`` (kalshi-sdk needs both keys)
    rather than leaving the key out (what the asyncapi says the exchange does)."""
    return any(msg.get(k) == [] for k in ("yes_dollars_fp", "no_dollars_fp", "yes", "no"))


def snapshot_msg(
    market_ticker: str,
    market_id: str | None,
    yes: Levels,
    no: Levels,
    fmt: str = CURRENT,
    empty_as_list: bool = False,
) -> dict[str, Any]:
    """An ``orderbook_snapshot`` ``msg`` object for this book, ascending prices, in ``fmt``.

    ``current``: ``*_dollars_fp`` keys, absent when a side is empty (as the exchange does) or
    ``[]`` with ``empty_as_list`` (as some servers do, and kalshi-sdk requires).
    ``legacy``: ``yes``/``no`` in int cents and ``yes_dollars``/``no_dollars``; a book that
    cannot be said exactly in whole cents and contracts is written in ``current`` keys instead
    (exact units win over format fidelity).
    """
    msg: dict[str, Any] = {"market_ticker": market_ticker}
    if market_id is not None:
        msg["market_id"] = market_id
    ys, ns = sorted(yes.items()), sorted(no.items())
    if fmt == LEGACY and _legacy_ok(yes) and _legacy_ok(no):
        cent = PRICE_SCALE // 100
        for key, levels in (("yes", ys), ("no", ns)):
            if levels or empty_as_list:
                msg[key] = [[p // cent, s // SIZE_SCALE] for p, s in levels]
                msg[f"{key}_dollars"] = [[format_price(p), s // SIZE_SCALE] for p, s in levels]
        return msg
    for key, levels in (("yes_dollars_fp", ys), ("no_dollars_fp", ns)):
        if levels or empty_as_list:
            msg[key] = [[format_price(p), format_size(s)] for p, s in levels]
    return msg


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:?\d\d)?",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TS_SECONDS_MAX = 10**11
"""An int legacy ``ts`` this large is not plausible Unix seconds (year 5138): it is taken as ms."""


def rfc3339_ms(text: str) -> int:
    """RFC 3339 timestamp -> Unix ms, floored (the legacy delta ``ts``); no offset means UTC.

    Raises ``ValueError`` for anything else (or ``OverflowError`` for absurd dates)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not an RFC3339 timestamp")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    tz = UTC
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    micros = int((frac or "0")[:6].ljust(6, "0"))
    dt = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz
    )
    span = dt - _EPOCH
    return (span.days * 86_400 + span.seconds) * 1000 + span.microseconds // 1000


def delta_ts_ms(msg: dict[str, Any]) -> int | None:
    """The exchange time of a delta in Unix ms, from whichever generation of field carries it:
    ``ts_ms`` (current), else ``ts`` as int seconds (or ms when implausibly large) or an RFC 3339
    string (legacy, docs/protocol.md §4). None when absent or unreadable: a time is a feature,
    never a reason to drop a frame."""
    ts_ms = msg.get("ts_ms")
    if type(ts_ms) is int:
        return ts_ms
    ts = msg.get("ts")
    if type(ts) is int:
        return ts * 1000 if abs(ts) < TS_SECONDS_MAX else ts
    if type(ts) is str:
        try:
            return rfc3339_ms(ts)
        except (ValueError, OverflowError):
            return None
    return None

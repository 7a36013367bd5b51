"""Kalshi WebSocket protocol, sans-I/O: parse frames into typed columns, build commands.

Everything here is a pure function of bytes (or parsed JSON). The raw bytes are always kept by the
caller, so parsing is allowed to give up on a field (typed column ``None`` + ``problem``) but never
to raise. Prices are micro-dollars and sizes centi-contracts (``schemas.units``); the fast paths
below are exact and checked against ``schemas.units`` by property tests.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.units import parse_price, parse_size

_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)

# ---------------------------------------------------------------------------------------------
# Exact fixed-point conversion with a bounded memo.
#
# Why a memo: the set of distinct price strings on a feed is tiny (a tick grid) and delta strings
# repeat a lot, so a dict hit beats any parsing. Misses go through a strict ASCII fast path and
# anything unusual ("1e-2", " 0.5", "0.54000000") falls back to schemas.units (Decimal), so the
# result always equals parse_price / parse_size or the same ValueError is raised.
# ---------------------------------------------------------------------------------------------

_MEMO_MAX = 65_536
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
        or not body.isascii()
        or not whole.isdigit()
        or not frac.isdigit()
    ):
        return None
    value = int(whole) * 10**places + int(frac) * 10 ** (places - len(frac))
    return -value if neg else value


def price_micros(text: str) -> int:
    """Dollar string -> micro-dollars, exactly as ``schemas.units.parse_price`` (memoised)."""
    value = _price_memo.get(text)
    if value is None:
        value = _fixed(text, 6)
        if value is None:
            value = parse_price(text)
        if len(_price_memo) < _MEMO_MAX:
            _price_memo[text] = value
    return value


def size_centi(text: str) -> int:
    """Contract-count string -> centi-contracts, exactly as ``schemas.units.parse_size``."""
    value = _size_memo.get(text)
    if value is None:
        value = _fixed(text, 2)
        if value is None:
            value = parse_size(text)
        if len(_size_memo) < _MEMO_MAX:
            _size_memo[text] = value
    return value


# ---------------------------------------------------------------------------------------------
# orderbook_snapshot levels
# ---------------------------------------------------------------------------------------------

# (yes key, no key, price must be a dollar string) in order of preference.
_SNAPSHOT_FORMATS: tuple[tuple[str, str, bool], ...] = (
    ("yes_dollars_fp", "no_dollars_fp", True),
    ("yes_dollars", "no_dollars", True),
    ("yes", "no", False),
)


def _side_levels(levels: Any, key: str, dollars: bool) -> dict[int, int]:
    if levels is None:  # REST legacy sends null for an empty side
        return {}
    if not isinstance(levels, list):
        raise ValueError(f"snapshot {key!r} is {type(levels).__name__}, expected a list of levels")
    out: dict[int, int] = {}
    for i, level in enumerate(levels):
        if not isinstance(level, list) or len(level) != 2:
            raise ValueError(f"snapshot {key}[{i}] = {level!r} is not a [price, size] pair")
        p, s = level
        if dollars:
            if type(p) is not str:
                raise ValueError(f"snapshot {key}[{i}] price {p!r} is not a dollar string")
            price = price_micros(p)
        else:
            if type(p) is not int:
                raise ValueError(f"snapshot {key}[{i}] price {p!r} is not integer cents")
            price = parse_price(p)
        if type(s) is str:
            size = size_centi(s)
        elif type(s) is int:
            size = parse_size(s)
        else:
            raise ValueError(f"snapshot {key}[{i}] size {s!r} is not a count")
        if size < 0:
            raise ValueError(f"snapshot {key}[{i}] has negative size {s!r}")
        if price in out:
            raise ValueError(f"snapshot {key} lists price {p!r} twice (same level after scaling)")
        if size:
            out[price] = size
        else:
            out[price] = 0  # remembered for the duplicate check, dropped below
    return {p: s for p, s in out.items() if s}


def snapshot_levels(
    body_or_raw: bytes | str | dict[str, Any],
) -> tuple[dict[int, int], dict[int, int]]:
    """Bid levels ``(yes, no)`` as ``{price micro-dollars: size centi-contracts}``.

    Accepts raw frame bytes/str, a parsed frame, its ``msg`` object, or a REST orderbook
    (``orderbook_fp`` / ``orderbook``). Of several representations the most precise wins:
    ``*_dollars_fp``, then ``*_dollars``, then legacy integer cents. The format is chosen per
    frame (the first one with either side key present) and a side key that is absent, null or
    ``[]`` is an empty side. Zero-size levels are dropped. Raises ``ValueError`` on anything else
    (non-JSON, levels that are not pairs, unparseable or inexact numbers, negative or duplicate
    levels); prices outside (0, 1) are kept as sent.
    """
    obj: Any = body_or_raw
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
    for yes_key, no_key, dollars in _SNAPSHOT_FORMATS:
        if yes_key in obj or no_key in obj:
            try:
                return (
                    _side_levels(obj.get(yes_key), yes_key, dollars),
                    _side_levels(obj.get(no_key), no_key, dollars),
                )
            except ValueError as exc:
                if "snapshot" in str(exc):
                    raise
                raise ValueError(f"snapshot {yes_key}/{no_key}: {exc}") from exc
    return {}, {}

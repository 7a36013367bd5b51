"""The public market-data REST endpoints a recorder uses for recovery (notes §7).

``handle()`` is pure (engine state in, status + JSON body out); ``serve_rest()`` is a minimal
HTTP/1.1 server on asyncio streams with keep-alive, because SDK clients pool connections and a
server that closes after every response makes them retry noisily.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from simulator.book import PRICE_RANGES, legacy_cents, legacy_dollars, price_str, size_str
from simulator.market import Engine, Market

log = logging.getLogger("simulator.rest")

BASE = "/trade-api/v2"

# GET /markets?status= vocabulary (notes §6) -> internal statuses; the REST status names
# themselves are accepted too, because older API versions used them directly.
STATUS_FILTER: dict[str, tuple[str, ...]] = {
    "unopened": ("initialized",),
    "open": ("active",),
    "paused": ("inactive",),
    "closed": ("closed", "determined", "disputed", "amended"),
    "settled": ("finalized",),
    "initialized": ("initialized",),
    "active": ("active",),
    "inactive": ("inactive",),
    "determined": ("determined",),
    "disputed": ("disputed",),
    "amended": ("amended",),
    "finalized": ("finalized",),
}


def rfc3339(ms: int) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    frac = ms % 1000
    return f"{base}.{frac:03d}Z" if frac else base + "Z"


def market_object(m: Market) -> dict[str, Any]:
    """A Market as GET /markets returns it, with the fields strict SDK models require."""
    book = m.book
    yb = book.best("yes")
    nb = book.best("no")
    yes_bid = yb or 0
    no_bid = nb or 0
    yes_ask = 10_000 - nb if nb else 10_000
    no_ask = 10_000 - yb if yb else 10_000
    settle_ms = m.settled_ms
    obj: dict[str, Any] = {
        "ticker": m.ticker,
        "event_ticker": m.event_ticker,
        "market_type": "binary",
        "title": m.title,
        "subtitle": m.yes_sub_title,
        "yes_sub_title": m.yes_sub_title,
        "no_sub_title": m.no_sub_title,
        "status": m.status,
        "created_time": rfc3339(m.created_ms),
        "updated_time": rfc3339(m.updated_ms),
        "open_time": rfc3339(m.open_ms),
        "close_time": rfc3339(m.close_ms),
        "expiration_time": rfc3339(m.expected_expiration_ms),
        "expected_expiration_time": rfc3339(m.expected_expiration_ms),
        "latest_expiration_time": rfc3339(m.expected_expiration_ms),
        "settlement_timer_seconds": m.settlement_timer_s,
        "can_close_early": m.can_close_early,
        "early_close_condition": "",
        "yes_bid_dollars": price_str(yes_bid),
        "yes_bid_size_fp": size_str(book.yes.get(yb, 0) if yb else 0),
        "yes_ask_dollars": price_str(yes_ask),
        "yes_ask_size_fp": size_str(book.no.get(nb, 0) if nb else 0),
        "no_bid_dollars": price_str(no_bid),
        "no_ask_dollars": price_str(no_ask),
        "last_price_dollars": price_str(m.last_price),
        "previous_price_dollars": "0.0000",
        "previous_yes_bid_dollars": "0.0000",
        "previous_yes_ask_dollars": "0.0000",
        "volume_fp": size_str(m.volume),
        "volume_24h_fp": size_str(m.volume),
        "open_interest_fp": size_str(m.volume // 2),
        "liquidity_dollars": "0.0000",
        "notional_value_dollars": "1.0000",
        "result": m.result,
        "expiration_value": "",
        "rules_primary": f"If the outcome is {m.yes_sub_title}, the market resolves to Yes.",
        "rules_secondary": "",
        "price_level_structure": m.price_level_structure,
        "price_ranges": PRICE_RANGES[m.price_level_structure],
        "response_price_units": "usd_cent",
        "fractional_trading_enabled": m.fractional,
        "settlement_bounds_type": "default",
        "strike_type": m.strike_type,
    }
    if m.floor_strike is not None:
        obj["floor_strike"] = m.floor_strike
    if m.cap_strike is not None:
        obj["cap_strike"] = m.cap_strike
    if m.settlement_value:
        obj["settlement_value_dollars"] = m.settlement_value
    if settle_ms is not None:
        obj["settlement_ts"] = rfc3339(settle_ms)
    return obj


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"code": code, "message": message, "details": ""}


def _cursor_encode(i: int) -> str:
    return base64.urlsafe_b64encode(f"m:{i}".encode()).decode().rstrip("=")


def _cursor_decode(c: str) -> int:
    raw = base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)).decode()
    if not raw.startswith("m:"):
        raise ValueError(c)
    return int(raw[2:])


def handle(
    engine: Engine, method: str, target: str, legacy: bool = False
) -> tuple[int, dict[str, Any]]:
    """Answer one request. Returns (HTTP status, JSON body)."""
    if method not in ("GET", "HEAD"):
        return _error(405, "method_not_allowed", f"{method} is not supported by the simulator")
    parts = urlsplit(target)
    path = unquote(parts.path)
    q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if not path.startswith(BASE + "/"):
        return _error(404, "not_found", f"no route for {path}; the REST base is {BASE}")
    rel = path[len(BASE) :].rstrip("/")
    if rel == "/markets":
        return _list_markets(engine, q)
    if rel == "/exchange/status":
        return 200, {"exchange_active": True, "trading_active": True}
    if rel.startswith("/markets/"):
        rest = rel[len("/markets/") :]
        if rest.endswith("/orderbook"):
            return _orderbook(engine, rest[: -len("/orderbook")], q, legacy)
        if "/" not in rest:
            m = engine.markets.get(rest)
            if m is None:
                return _error(404, "not_found", f"market {rest} not found")
            return 200, {"market": market_object(m)}
    return _error(404, "not_found", f"no route for {path}")


def _list_markets(engine: Engine, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        limit = int(q.get("limit") or 100)
    except ValueError:
        return _error(400, "bad_request", "limit must be an integer")
    if not 1 <= limit <= 1000:
        return _error(400, "bad_request", "limit must be between 1 and 1000")
    wanted: set[str] | None = None
    if q.get("status"):
        wanted = set()
        for s in q["status"].split(","):
            if s.strip() not in STATUS_FILTER:
                return _error(400, "bad_request", f"unknown status filter {s!r}")
            wanted.update(STATUS_FILTER[s.strip()])
    tickers = {t for t in q.get("tickers", "").split(",") if t}
    event = q.get("event_ticker") or None
    series = q.get("series_ticker") or None
    try:
        min_close = int(q["min_close_ts"]) * 1000 if q.get("min_close_ts") else None
        max_close = int(q["max_close_ts"]) * 1000 if q.get("max_close_ts") else None
        start = _cursor_decode(q["cursor"]) if q.get("cursor") else 0
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_request", "bad cursor or timestamp filter")
    all_markets = list(engine.markets.values())  # creation order: stable under appends
    out: list[dict[str, Any]] = []
    i = start
    while i < len(all_markets) and len(out) < limit:
        m = all_markets[i]
        i += 1
        if wanted is not None and m.status not in wanted:
            continue
        if tickers and m.ticker not in tickers:
            continue
        if event and m.event_ticker != event:
            continue
        if series and m.series_ticker != series:
            continue
        if min_close is not None and m.close_ms < min_close:
            continue
        if max_close is not None and m.close_ms > max_close:
            continue
        out.append(market_object(m))
    cursor = _cursor_encode(i) if i < len(all_markets) else ""
    return 200, {"markets": out, "cursor": cursor}


def _orderbook(
    engine: Engine, ticker: str, q: dict[str, str], legacy: bool
) -> tuple[int, dict[str, Any]]:
    m = engine.markets.get(ticker)
    if m is None:
        return _error(404, "not_found", f"market {ticker} not found")
    try:
        depth = int(q.get("depth") or 0)
    except ValueError:
        return _error(400, "bad_request", "depth must be an integer")
    if depth > 100:
        return _error(400, "bad_request", "depth must be at most 100")
    yes = m.book.levels("yes")
    no = m.book.levels("no")
    if depth > 0:  # keep the best (highest) levels, still ascending
        yes, no = yes[-depth:], no[-depth:]
    if legacy:
        return 200, {
            "orderbook": {
                "yes": legacy_cents(yes) or None,
                "no": legacy_cents(no) or None,
                "yes_dollars": legacy_dollars(yes) or None,
                "no_dollars": legacy_dollars(no) or None,
            }
        }
    return 200, {
        "orderbook_fp": {
            "yes_dollars": [[price_str(p), size_str(s)] for p, s in yes],
            "no_dollars": [[price_str(p), size_str(s)] for p, s in no],
        }
    }


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def serve_rest(
    host: str, port: int, responder: Callable[[str, str], tuple[int, dict[str, Any]]]
) -> asyncio.Server:
    """Start the HTTP/1.1 server; ``responder(method, target)`` gives (status, body)."""

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                status, body = responder(method, target)
                data = orjson.dumps(body)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                hdr = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
                )
                writer.write(hdr.encode() + (b"" if method == "HEAD" else data))
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:
            log.exception("REST connection failed")
        finally:
            writer.close()

    return await asyncio.start_server(conn, host, port)

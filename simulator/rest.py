"""The public market-data REST endpoints a recorder uses for recovery (docs/protocol.md §7).

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
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from schemas.wire import MVE_PREFIX
from simulator.book import PRICE_RANGES, legacy_cents, legacy_dollars, price_str, size_str
from simulator.market import Engine, Market
from simulator.wire import MARKETS_PARAMS, ProtocolOptions

log = logging.getLogger("simulator.rest")

BASE = "/trade-api/v2"

# GET /markets?status= vocabulary (docs/protocol.md §7) -> internal statuses; the REST status names
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


# Query parameters of the other routes (the SDK's names).
ORDERBOOK_PARAMS = frozenset({"depth"})
MARKET_PARAMS: frozenset[str] = frozenset()


def rfc3339(ms: int) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    frac = ms % 1000
    return f"{base}.{frac:03d}Z" if frac else base + "Z"


class Clock:
    """How this exchange writes times: its offset from the client's clock, its precision."""

    def __init__(self, offset_ms: int = 0, whole_seconds: bool = False) -> None:
        self.offset_ms = offset_ms
        self.whole_seconds = whole_seconds

    @classmethod
    def of(cls, opts: ProtocolOptions | None) -> Clock:
        if opts is None:
            return cls()
        return cls(round(opts.clock_offset_s * 1000), opts.rest_time_precision == "s")

    def ms(self, true_ms: int) -> int:
        """The exchange's reading of a true instant (ms), before formatting."""
        t = true_ms + self.offset_ms
        return t - t % 1000 if self.whole_seconds else t

    def text(self, true_ms: int) -> str:
        return rfc3339(self.ms(true_ms))


_TRUE_CLOCK = Clock()


def market_object(m: Market, clock: Clock = _TRUE_CLOCK) -> dict[str, Any]:
    """A Market as GET /markets returns it, with the fields strict SDK models require."""
    ts = clock.text
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
        "created_time": ts(m.created_ms),
        "updated_time": ts(m.updated_ms),
        "open_time": ts(m.open_ms),
        "close_time": ts(m.close_ms),
        "expiration_time": ts(m.expected_expiration_ms),
        "expected_expiration_time": ts(m.expected_expiration_ms),
        "latest_expiration_time": ts(m.expected_expiration_ms),
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
    if m.mve:
        obj["mve_collection_ticker"] = m.series_ticker
    if m.floor_strike is not None:
        obj["floor_strike"] = m.floor_strike
    if m.cap_strike is not None:
        obj["cap_strike"] = m.cap_strike
    if m.settlement_value:
        obj["settlement_value_dollars"] = m.settlement_value
    if settle_ms is not None:
        obj["settlement_ts"] = ts(settle_ms)
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
    engine: Engine,
    method: str,
    target: str,
    legacy: bool = False,
    opts: ProtocolOptions | None = None,
    effect: Callable[..., None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Answer one request. Returns (HTTP status, JSON body).

    ``opts`` carries the REST switches (clock offset, time precision, unsupported parameters);
    what they did is recorded with ``effect`` (:meth:`simulator.exchange.Exchange.effect`) for
    ground truth."""
    if method not in ("GET", "HEAD"):
        return _error(405, "method_not_allowed", f"{method} is not supported by the simulator")
    parts = urlsplit(target)
    path = unquote(parts.path)
    q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if not path.startswith(BASE + "/"):
        return _error(404, "not_found", f"no route for {path}; the REST base is {BASE}")
    rel = path[len(BASE) :].rstrip("/")
    if rel == "/exchange/status":
        return 200, {"exchange_active": True, "trading_active": True}
    clock = Clock.of(opts)
    ticker = rel.removeprefix("/markets/") if rel.startswith("/markets/") else None
    answer: Callable[[], tuple[int, dict[str, Any]]]
    if rel == "/markets":
        known, answer = MARKETS_PARAMS, lambda: _list_markets(engine, q, clock)
    elif ticker is not None and ticker.endswith("/orderbook"):
        ticker = ticker.removesuffix("/orderbook")
        known, answer = ORDERBOOK_PARAMS, lambda: _orderbook(engine, ticker, q, legacy)
    elif ticker is not None and "/" not in ticker:
        known, answer = MARKET_PARAMS, lambda: _market(engine, ticker, clock)
    else:
        return _error(404, "not_found", f"no route for {path}")
    # the route's parameters first: an unknown one is a 400 or a dropped filter (the switches)
    return _params(q, known, opts, effect, rel) or answer()


def _market(engine: Engine, ticker: str, clock: Clock) -> tuple[int, dict[str, Any]]:
    m = engine.markets.get(ticker)
    if m is None:
        return _error(404, "not_found", f"market {ticker} not found")
    return 200, {"market": market_object(m, clock)}


def _params(
    q: dict[str, str],
    known: frozenset[str],
    opts: ProtocolOptions | None,
    effect: Callable[..., None] | None,
    route: str,
) -> tuple[int, dict[str, Any]] | None:
    """Apply the unknown-parameter switches: drop parameters this exchange does not know
    (``ignore``: the filter silently does nothing) or answer 400 (``reject``)."""
    if opts is None:
        return None
    unsupported = set(opts.rest_unsupported_params)
    unknown = [k for k in q if k not in known or k in unsupported]
    if not unknown:
        return None
    if opts.rest_unknown_params == "reject":
        if effect is not None:
            effect("rest_rejected", route=route, params=unknown)
        return _error(400, "bad_request", f"unknown query parameter(s): {', '.join(unknown)}")
    for k in unknown:
        del q[k]
    if effect is not None:
        effect("rest_ignored", route=route, params=unknown)
    return None


def _ts_filter(q: dict[str, str], name: str) -> int | None:
    """A Unix-seconds filter as ms; ValueError if malformed."""
    v = q.get(name)
    return int(v) * 1000 if v else None


def _list_markets(
    engine: Engine, q: dict[str, str], clock: Clock = _TRUE_CLOCK
) -> tuple[int, dict[str, Any]]:
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
    mve_filter = q.get("mve_filter") or None
    if mve_filter not in (None, "only", "exclude"):
        return _error(400, "bad_request", "mve_filter must be 'only' or 'exclude'")
    try:
        # (name, bound, field): filters compare the exchange's own clock readings
        bounds = [
            (_ts_filter(q, f"{side}_{what}_ts"), side, what)
            for what in ("close", "created", "settled", "updated")
            for side in ("min", "max")
        ]
        start = _cursor_decode(q["cursor"]) if q.get("cursor") else 0
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_request", "bad cursor or timestamp filter")
    active = [(b, side, what) for b, side, what in bounds if b is not None]
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
        if mve_filter is not None and (mve_filter == "only") != m.ticker.startswith(MVE_PREFIX):
            continue
        if active and not all(_within(m, clock, b, side, what) for b, side, what in active):
            continue
        out.append(market_object(m, clock))
    cursor = _cursor_encode(i) if i < len(all_markets) else ""
    return 200, {"markets": out, "cursor": cursor}


def _within(m: Market, clock: Clock, bound: int, side: str, what: str) -> bool:
    true_ms = {
        "close": m.close_ms,
        "created": m.created_ms,
        "settled": m.settled_ms,
        "updated": m.updated_ms,
    }[what]
    if true_ms is None:  # never settled: outside any settled-time window
        return False
    t = clock.ms(true_ms)
    return t >= bound if side == "min" else t <= bound


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
    host: str,
    port: int,
    responder: Callable[[str, str], tuple[int, dict[str, Any]]],
    now: Callable[[], float] = time.time,
) -> asyncio.Server:
    """Start the HTTP/1.1 server; ``responder(method, target)`` gives (status, body); ``now()``
    is the exchange's clock (Unix seconds) for the ``Date`` header."""

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
                    f"Date: {formatdate(now(), usegmt=True)}\r\n"
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

"""The probe's fixed, read-only script, as a sans-I/O generator.

``script(plan)`` yields actions (a REST GET, a WebSocket command, a ping, a listen window) and is
sent back what each produced; it never touches a socket or a clock, so the whole conversation can
be driven by a test with hand-made answers. The shell (:mod:`probe.runner`) executes each action
with a deadline and pacing, and records every frame in a :class:`~probe.transcript.Transcript`.

What it may send is closed: :data:`ALLOWED_COMMANDS` (subscription commands only) and
:data:`ALLOWED_REST` (public market-data GETs). :func:`check_allowed` is applied by the shell to
every action before it goes out, so a bug here cannot place an order or reach ``/portfolio``.
The number of actions is fixed by the script's shape (:data:`MAX_ACTIONS` bounds it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from recorder.subscriptions import CODE_MARKET_NOT_FOUND
from schemas.units import parse_price
from schemas.wire import (
    DELTA_MSG,
    LIFECYCLE_CHANNEL,
    MVE_LIFECYCLE_CHANNEL,
    SNAPSHOT_MSG,
)

# Every WebSocket command the probe may send, and the update_subscription actions among them.
ALLOWED_COMMANDS = frozenset(
    {"subscribe", "unsubscribe", "update_subscription", "list_subscriptions"}
)
ALLOWED_ACTIONS = frozenset({"get_snapshot", "add_markets", "delete_markets"})
# Every REST path the probe may GET, relative to the REST base (public market data only).
ALLOWED_REST = (re.compile(r"^/markets$"), re.compile(r"^/markets/[A-Za-z0-9._-]+$"))
MAX_ACTIONS = 60  # the script below uses at most 50; the shell refuses to go beyond this

# Names the probe uses for things that must not exist on the exchange.
NO_SUCH_CHANNEL = "kalshi_probe_no_such_channel"
NO_SUCH_MARKET = "KALSHI-PROBE-NO-SUCH-MARKET"
ORDERBOOK_CHANNEL = DELTA_MSG  # the order-book channel is named after its delta frames
REPLY_TYPES = frozenset({"subscribed", "ok", "unsubscribed", "error"})
PING_DATA = b"kalshi-probe"
# A market created while we listen is added to the book subscription at once; while the exchange
# answers error 16 (not found) we retry (every Plan.young_retry_s) at most this many times.
YOUNG_RETRIES = 5

Frames = list[dict[str, Any]]


class NotAllowed(Exception):
    """An action outside the probe's read-only allow-list; never sent."""


@dataclass(frozen=True)
class RestGet:
    step: str
    path: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Command:
    """One WebSocket command; ``done(frames since it was sent)`` says the answer is complete.

    ``linger_s``: keep reading this long after ``done`` (a trailing reply may follow, e.g. an ``ok``
    after the snapshots of a ``get_snapshot``). A command whose answer never completes is cut by
    the shell's per-step deadline; the frames received until then are its answer.
    """

    step: str
    body: dict[str, Any]
    done: Callable[[Frames], bool] = field(compare=False)
    linger_s: float = 0.0


@dataclass(frozen=True)
class Ping:
    step: str
    data: bytes = PING_DATA


@dataclass(frozen=True)
class Listen:
    """Read passively until ``done(frames received since the listen began)`` or ``max_s``."""

    step: str
    done: Callable[[Frames], bool] = field(compare=False)
    max_s: float = 20.0


@dataclass(frozen=True)
class Wait:
    """Send nothing for ``seconds`` (between retries), still recording what arrives."""

    step: str
    seconds: float


@dataclass(frozen=True)
class Close:
    step: str = "close"


Action = RestGet | Command | Ping | Listen | Wait | Close


@dataclass
class RestResult:
    status: int | None  # None: no answer (timeout, connection refused)
    body: Any  # parsed JSON, or None


@dataclass
class Plan:
    """Inputs of one run: our clock at the start (for a filter far in the future) and windows."""

    now_s: int
    listen_s: float = 20.0  # passive window for lifecycle notices
    linger_s: float = 1.0  # how long to wait for a trailing reply that may not come
    young_retry_s: float = 1.0  # between add_markets retries of a market answered "not found"


def check_allowed(action: Action) -> None:
    """Raise :class:`NotAllowed` unless ``action`` is on the read-only allow-list."""
    if isinstance(action, RestGet):
        if not any(p.match(action.path) for p in ALLOWED_REST):
            raise NotAllowed(f"REST path {action.path!r} is not on the probe's allow-list")
        return
    if isinstance(action, Command):
        cmd = action.body.get("cmd")
        if cmd not in ALLOWED_COMMANDS:
            raise NotAllowed(f"command {cmd!r} is not on the probe's allow-list")
        params = action.body.get("params") or {}
        if cmd == "update_subscription" and params.get("action") not in ALLOWED_ACTIONS:
            raise NotAllowed(f"update_subscription action {params.get('action')!r} not allowed")
        return


# ---- selection of markets ------------------------------------------------------------------


def _empty_price(v: Any) -> bool:
    """A REST best-bid field that says "no bid": absent, or zero (cents or a dollar string)."""
    if v is None:
        return True
    if isinstance(v, float):  # not what the exchange sends; a JSON 0.0 still means no bid
        return v == 0.0
    if not isinstance(v, str | int):
        return False
    try:
        return parse_price(v) == 0
    except ValueError:
        return False


def _side_empty(m: dict[str, Any]) -> bool:
    yes = m.get("yes_bid_dollars", m.get("yes_bid"))
    no = m.get("no_bid_dollars", m.get("no_bid"))
    return _empty_price(yes) or _empty_price(no)


def pick_markets(markets: list[Any]) -> tuple[str | None, str | None]:
    """(A, E): A a market with both book sides if any, E one with an empty side if any.

    E makes the empty-side question answerable; A is the main subscription. Either may be the
    other's fallback, and both are None when the exchange listed no market.
    """
    ms = [m for m in markets if isinstance(m, dict) and isinstance(m.get("ticker"), str)]
    if not ms:
        return None, None
    full = [m["ticker"] for m in ms if not _side_empty(m)]
    empty = [m["ticker"] for m in ms if _side_empty(m)]
    a = full[0] if full else ms[0]["ticker"]
    e = next((t for t in empty if t != a), None)
    return a, e


# ---- predicates over frames ------------------------------------------------------------------


def is_reply_to(f: dict[str, Any], cmd_id: int) -> bool:
    """A reply to command ``cmd_id``: its id, or a reply-typed frame with no id at all."""
    if f.get("type") not in REPLY_TYPES:
        return False
    return f.get("id") == cmd_id or "id" not in f


def _snapshot_tickers(frames: Frames) -> set[str]:
    out = set()
    for f in frames:
        if f.get("type") == SNAPSHOT_MSG:
            msg = f.get("msg")
            if isinstance(msg, dict) and isinstance(msg.get("market_ticker"), str):
                out.add(msg["market_ticker"])
    return out


def replied(cmd_id: int) -> Callable[[Frames], bool]:
    return lambda frames: any(is_reply_to(f, cmd_id) for f in frames)


def replied_and_snapshots(cmd_id: int, tickers: list[str]) -> Callable[[Frames], bool]:
    """A reply and a snapshot of each ticker; an error reply ends it at once."""

    def done(frames: Frames) -> bool:
        replies = [f for f in frames if is_reply_to(f, cmd_id)]
        if any(f.get("type") == "error" for f in replies):
            return True
        return bool(replies) and set(tickers) <= _snapshot_tickers(frames)

    return done


def snapshots_or_error(cmd_id: int, tickers: list[str]) -> Callable[[Frames], bool]:
    """For get_snapshot: complete when the snapshots arrived (an ok is not promised)."""

    def done(frames: Frames) -> bool:
        if any(is_reply_to(f, cmd_id) and f.get("type") == "error" for f in frames):
            return True
        return set(tickers) <= _snapshot_tickers(frames)

    return done


def mve_seen(frames: Frames) -> bool:
    return any(f.get("type") == MVE_LIFECYCLE_CHANNEL for f in frames)


def created_tickers(frames: Frames) -> list[str]:
    """Markets announced as ``created`` on market_lifecycle_v2, in arrival order."""
    out = []
    for f in frames:
        msg = f.get("msg")
        if (
            f.get("type") == LIFECYCLE_CHANNEL
            and isinstance(msg, dict)
            and msg.get("event_type") == "created"
            and isinstance(msg.get("market_ticker"), str)
        ):
            out.append(msg["market_ticker"])
    return out


def error_code(frames: Frames, cmd_id: int) -> int | None:
    for f in frames:
        msg = f.get("msg")
        if is_reply_to(f, cmd_id) and f.get("type") == "error" and isinstance(msg, dict):
            code = msg.get("code")
            return code if isinstance(code, int) else -1
    return None


def _new_sids(frames: Frames, cmd_id: int) -> list[int]:
    return [
        f["msg"]["sid"]
        for f in frames
        if is_reply_to(f, cmd_id)
        and f.get("type") == "subscribed"
        and isinstance(f.get("msg"), dict)
        and isinstance(f["msg"].get("sid"), int)
    ]


# ---- the script ------------------------------------------------------------------------------


def script(plan: Plan) -> Generator[Action, Any, None]:
    """The fixed conversation. Each ``yield`` is sent back: RestResult, Frames, bytes|None."""
    ids = iter(range(1, MAX_ACTIONS + 1))

    def cmd(step: str, name: str, params: dict[str, Any] | None, done: Any, **kw: Any) -> Command:
        cid = next(ids)
        body: dict[str, Any] = {"id": cid, "cmd": name}
        if params is not None:
            body["params"] = params
        return Command(step, body, done(cid), **kw)

    # REST: the open markets (tickers to subscribe to, time precision, cursor)
    listing: RestResult = yield RestGet(
        "rest_markets", "/markets", (("status", "open"), ("limit", "20"))
    )
    markets: list[Any] = []
    if listing.status == 200 and isinstance(listing.body, dict):
        markets = listing.body.get("markets") or []
    if not markets:
        listing = yield RestGet("rest_markets_any", "/markets", (("limit", "20"),))
        if listing.status == 200 and isinstance(listing.body, dict):
            markets = listing.body.get("markets") or []
    a, e = pick_markets(markets)
    event = next(
        (m.get("event_ticker") for m in markets if isinstance(m, dict) and m.get("ticker") == a),
        None,
    )
    if isinstance(event, str) and event:
        # one event's markets fit on one page: its cursor is the end-of-pagination cursor
        yield RestGet("rest_last_page", "/markets", (("event_ticker", event), ("limit", "200")))
    if a is not None:
        yield RestGet("rest_filter_tickers", "/markets", (("tickers", a), ("limit", "20")))
    far = plan.now_s + 10 * 365 * 86_400  # nothing can have been created after this
    yield RestGet(
        "rest_filter_min_created_ts", "/markets", (("min_created_ts", str(far)), ("limit", "5"))
    )
    yield RestGet("rest_filter_mve_filter", "/markets", (("mve_filter", "only"), ("limit", "20")))
    yield RestGet(
        "rest_filter_status_multi", "/markets", (("status", "open,closed"), ("limit", "5"))
    )
    yield RestGet("rest_unknown_market", f"/markets/{NO_SUCH_MARKET}")

    # WebSocket (the shell connects before the first command)
    c = cmd("subscribe_lifecycle", "subscribe", {"channels": [LIFECYCLE_CHANNEL]}, replied)
    frames = yield c
    known_sids = set(_new_sids(frames, c.body["id"]))
    book_sid: int | None = None
    if a is not None:
        tickers = [a] + ([e] if e else [])
        c = cmd(
            "subscribe_book",
            "subscribe",
            {"channels": [ORDERBOOK_CHANNEL], "market_tickers": tickers},
            lambda i: replied_and_snapshots(i, tickers),
        )
        frames = yield c
        for _ in range(YOUNG_RETRIES):
            # markets listed a moment ago may still be "not found" on the WebSocket side
            if error_code(frames, c.body["id"]) != CODE_MARKET_NOT_FOUND:
                break
            yield Wait("subscribe_book_wait", plan.young_retry_s)
            c = cmd(
                "subscribe_book",
                "subscribe",
                c.body["params"],
                lambda i: replied_and_snapshots(i, tickers),
            )
            frames = yield c
        sids = _new_sids(frames, c.body["id"])
        known_sids.update(sids)
        book_sid = sids[0] if sids else None
    if a is not None and book_sid is not None:
        yield cmd(
            "get_snapshot",
            "update_subscription",
            {"sid": book_sid, "market_tickers": [a], "action": "get_snapshot"},
            lambda i: snapshots_or_error(i, [a]),
            linger_s=plan.linger_s,
        )
        moved = e or a  # delete then re-add one market: two sequenced replies, a new snapshot
        yield cmd(
            "delete_markets",
            "update_subscription",
            {"sid": book_sid, "market_tickers": [moved], "action": "delete_markets"},
            replied,
        )
        yield cmd(
            "add_markets",
            "update_subscription",
            {"sid": book_sid, "market_tickers": [moved], "action": "add_markets"},
            lambda i: replied_and_snapshots(i, [moved]),
        )
        c = cmd(
            "repeat_subscribe",
            "subscribe",
            {"channels": [ORDERBOOK_CHANNEL], "market_tickers": [a]},
            replied,
            linger_s=plan.linger_s,
        )
        frames = yield c
        extra = [s for s in _new_sids(frames, c.body["id"]) if s not in known_sids]
        known_sids.update(extra)
        for sid in extra:  # a new subscription: give it back (its unsubscribed carries a seq)
            yield cmd("unsubscribe_repeat", "unsubscribe", {"sids": [sid]}, replied)
    yield Ping("ping")
    c = cmd("error_unknown_channel", "subscribe", {"channels": [NO_SUCH_CHANNEL]}, replied)
    frames = yield c
    for sid in _new_sids(frames, c.body["id"]):  # accepted after all: give it back
        known_sids.add(sid)
        yield cmd("unsubscribe_unknown_channel", "unsubscribe", {"sids": [sid]}, replied)
    if a is not None and book_sid is not None:
        yield cmd(
            "error_bad_params",
            "update_subscription",
            {"sid": book_sid, "sids": [book_sid], "market_tickers": [a], "action": "get_snapshot"},
            replied,
        )
    unknown_sid = max(known_sids, default=0) + 1000
    yield cmd("error_unknown_sid", "unsubscribe", {"sids": [unknown_sid]}, replied)
    c = cmd(
        "error_unknown_market",
        "subscribe",
        {"channels": [ORDERBOOK_CHANNEL], "market_tickers": [NO_SUCH_MARKET]},
        replied,
    )
    frames = yield c
    for sid in _new_sids(frames, c.body["id"]):  # accepted after all: give it back
        known_sids.add(sid)
        yield cmd("unsubscribe_unknown_market", "unsubscribe", {"sids": [sid]}, replied)
    c = cmd("subscribe_mve", "subscribe", {"channels": [MVE_LIFECYCLE_CHANNEL]}, replied)
    frames = yield c
    mve_sids = _new_sids(frames, c.body["id"])
    yield cmd("list_subscriptions", "list_subscriptions", None, replied)
    # wait for a market to be created: its notice answers the lifecycle-seq question, and
    # subscribing to it at once shows whether a brand-new market is "not found" for a while
    frames = yield Listen("listen", lambda fs: bool(created_tickers(fs)), plan.listen_s)
    young = created_tickers(frames)  # announced while we listened: seconds old at most
    seen_mve = mve_seen(frames)
    if young and book_sid is not None:
        for attempt in range(YOUNG_RETRIES + 1):
            if attempt:
                yield Wait("young_market_wait", plan.young_retry_s)
            c = cmd(
                "young_market",
                "update_subscription",
                {"sid": book_sid, "market_tickers": [young[0]], "action": "add_markets"},
                lambda i: replied_and_snapshots(i, [young[0]]),
            )
            frames = yield c
            if error_code(frames, c.body["id"]) != CODE_MARKET_NOT_FOUND:
                break
    if mve_sids and not seen_mve:
        # the share of MVE creations is a question too: give them a short while
        yield Listen("listen_mve", mve_seen, plan.listen_s / 4)
    for sid in mve_sids:  # MVE creations are numerous: do not keep reading them
        yield cmd("unsubscribe_mve", "unsubscribe", {"sids": [sid]}, replied)
    if book_sid is not None:
        yield cmd("unsubscribe_book", "unsubscribe", {"sids": [book_sid]}, replied)
    yield Close()

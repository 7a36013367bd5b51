"""Message bodies as the exchange writes them, current and legacy (docs/protocol.md §4).

Bodies are built once per event and spliced into each subscriber's envelope, because sid and seq
differ per subscription while the payload does not; that keeps fan-out cheap at 100k msgs/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from simulator.book import fp_levels, legacy_cents, legacy_dollars, price_str, size_str
from simulator.market import Delta, Market, Notice

# Query parameters GET /markets understands (docs/protocol.md §7, plus the SDK's
# min/max_updated_ts).
MARKETS_PARAMS = frozenset(
    {
        "limit",
        "cursor",
        "event_ticker",
        "series_ticker",
        "status",
        "tickers",
        "min_close_ts",
        "max_close_ts",
        "min_created_ts",
        "max_created_ts",
        "min_settled_ts",
        "max_settled_ts",
        "min_updated_ts",
        "max_updated_ts",
        "mve_filter",
    }
)


@dataclass
class ProtocolOptions:
    """Switches for the uncertain points of the protocol (docs/protocol.md §9); defaults = the
    most likely behaviour of the current exchange. ``simulator.switches`` documents each; the
    sections below are docs/protocol.md's."""

    legacy: bool = False  # legacy integer format (cents + int counts, RFC3339 delta ts)
    empty_side: str = "omit"  # "omit": an empty book side's key is absent; "empty_list": []
    lifecycle_seq: bool = False  # lifecycle/event messages carry a per-sid seq
    reply_seq: str = "consume"  # ok/unsubscribed: "consume" a seq value, or "echo" the last one
    # repeat subscribe to a channel already on the connection: "new_sid" (a second subscription),
    # "error" (code 6, older servers) or "merge" (into the existing sid: an ``ok`` without sid)
    duplicate_subscribe: str = "new_sid"
    max_markets_per_sub: int = 256  # error 26 beyond this
    seq_start: int = 1  # first seq value of a sid
    # get_snapshot: its ``ok`` "before" the snapshots, "after" them, or "none" at all (§3)
    get_snapshot_ok: str = "before"
    # which replies echo the command id (§3): "always", "sid_replies" (subscribed/ok/
    # unsubscribed carry none; errors and list_subscriptions still do), "never"
    reply_id: str = "always"
    pong: str = "echo"  # answer to a client ping: "echo" its payload (RFC 6455) or "empty" (§6)
    new_market_not_found_s: float = 0.0  # error 16 for a market younger than this (subscribe/add)
    clock_offset_s: float = 0.0  # exchange clock - client clock: REST times, lifecycle *_ts
    rest_time_precision: str = "ms"  # REST created/updated/open/close times: "ms" or "s" (§7)
    # GET /markets parameters this exchange does not know; unknown ones are "ignore"d (the filter
    # silently does nothing) or "reject"ed with 400 (§7)
    rest_unsupported_params: tuple[str, ...] = ()
    rest_unknown_params: str = "ignore"

    def __post_init__(self) -> None:
        choices = {
            "empty_side": ("omit", "empty_list"),
            "reply_seq": ("consume", "echo"),
            "duplicate_subscribe": ("new_sid", "error", "merge"),
            "get_snapshot_ok": ("before", "after", "none"),
            "reply_id": ("always", "sid_replies", "never"),
            "pong": ("echo", "empty"),
            "rest_time_precision": ("ms", "s"),
            "rest_unknown_params": ("ignore", "reject"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if self.new_market_not_found_s < 0:
            raise ValueError("new_market_not_found_s must be >= 0")
        self.rest_unsupported_params = tuple(self.rest_unsupported_params)
        bad = [p for p in self.rest_unsupported_params if p not in MARKETS_PARAMS]
        if bad:
            raise ValueError(
                f"rest_unsupported_params {bad}: choose from {', '.join(sorted(MARKETS_PARAMS))}"
            )


def _rfc3339_seconds(ts_ms: int) -> str:
    """A legacy delta's ``ts``: RFC 3339 in whole seconds (``schemas.wire.rfc3339_ms`` reads it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000)) + "Z"


def delta_body(d: Delta, legacy: bool, offset_ms: int = 0) -> str:
    """A delta's ``msg``; its exchange timestamp read on a clock ``offset_ms`` off the truth."""
    m = d.market
    ts_ms = d.ts_ms + offset_ms
    if legacy:
        return (
            f'{{"market_ticker":"{m.ticker}","market_id":"{m.market_id}","price":{d.price // 100},'
            f'"price_dollars":"{price_str(d.price)}","delta":{d.delta // 100},'
            f'"delta_fp":"{size_str(d.delta)}","side":"{d.side}","ts":"{_rfc3339_seconds(ts_ms)}"}}'
        )
    return (
        f'{{"market_ticker":"{m.ticker}","market_id":"{m.market_id}",'
        f'"price_dollars":"{price_str(d.price)}","delta_fp":"{size_str(d.delta)}",'
        f'"side":"{d.side}","ts_ms":{ts_ms}}}'
    )


def snapshot_body(m: Market, opts: ProtocolOptions) -> str:
    yes = m.book.levels("yes")
    no = m.book.levels("no")
    msg: dict[str, object] = {"market_ticker": m.ticker, "market_id": m.market_id}
    keep_empty = opts.empty_side == "empty_list"
    if opts.legacy:
        if yes or keep_empty:
            msg["yes"] = legacy_cents(yes)
        if no or keep_empty:
            msg["no"] = legacy_cents(no)
        if yes or keep_empty:
            msg["yes_dollars"] = legacy_dollars(yes)
        if no or keep_empty:
            msg["no_dollars"] = legacy_dollars(no)
    else:
        if yes or keep_empty:
            msg["yes_dollars_fp"] = fp_levels(yes)
        if no or keep_empty:
            msg["no_dollars_fp"] = fp_levels(no)
    return orjson.dumps(msg).decode()


def notice_body(n: Notice, offset_s: int = 0) -> str:
    """The notice's ``msg``; with a clock offset its Unix-second ``*_ts`` fields are shifted, as
    an exchange whose clock differs from the client's would stamp them."""
    if not offset_s:
        return orjson.dumps(n.msg).decode()
    return orjson.dumps(_shift(n.msg, offset_s)).decode()


def _shift(obj: dict[str, object], offset_s: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out[k] = _shift(v, offset_s)
        elif k.endswith("_ts") and isinstance(v, int) and not isinstance(v, bool):
            out[k] = v + offset_s
        else:
            out[k] = v
    return out


def data_frame(kind: str, sid: int, seq: int | None, body: str) -> str:
    if seq is None:
        return f'{{"type":"{kind}","sid":{sid},"msg":{body}}}'
    return f'{{"type":"{kind}","sid":{sid},"seq":{seq},"msg":{body}}}'

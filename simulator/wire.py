"""Message bodies as the exchange writes them, current and legacy (notes §4.5, §4.8).

Bodies are built once per event and spliced into each subscriber's envelope, because sid and seq
differ per subscription while the payload does not; that keeps fan-out cheap at 100k msgs/s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from simulator.book import fp_levels, legacy_cents, legacy_dollars, price_str, size_str
from simulator.market import Delta, Market, Notice


@dataclass
class ProtocolOptions:
    """Switches for the points the protocol notes mark uncertain; defaults = current exchange."""

    legacy: bool = False  # legacy integer format (cents + int counts, RFC3339 delta ts)
    empty_side: str = "omit"  # "omit": an empty book side's key is absent; "empty_list": []
    lifecycle_seq: bool = False  # lifecycle/event messages carry a per-sid seq
    reply_seq: str = "consume"  # ok/unsubscribed: "consume" a seq value, or "echo" the last one
    duplicate_subscribe: str = "new_sid"  # "new_sid" (newer servers) or "error" (code 6, older)
    max_markets_per_sub: int = 256  # error 26 beyond this
    seq_start: int = 1  # first seq value of a sid

    def __post_init__(self) -> None:
        if self.empty_side not in ("omit", "empty_list"):
            raise ValueError("empty_side must be 'omit' or 'empty_list'")
        if self.reply_seq not in ("consume", "echo"):
            raise ValueError("reply_seq must be 'consume' or 'echo'")
        if self.duplicate_subscribe not in ("new_sid", "error"):
            raise ValueError("duplicate_subscribe must be 'new_sid' or 'error'")


def _rfc3339_ms(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000)) + "Z"


def delta_body(d: Delta, legacy: bool) -> str:
    m = d.market
    if legacy:
        return (
            f'{{"market_ticker":"{m.ticker}","market_id":"{m.market_id}","price":{d.price // 100},'
            f'"price_dollars":"{price_str(d.price)}","delta":{d.delta // 100},'
            f'"delta_fp":"{size_str(d.delta)}","side":"{d.side}","ts":"{_rfc3339_ms(d.ts_ms)}"}}'
        )
    return (
        f'{{"market_ticker":"{m.ticker}","market_id":"{m.market_id}",'
        f'"price_dollars":"{price_str(d.price)}","delta_fp":"{size_str(d.delta)}",'
        f'"side":"{d.side}","ts_ms":{d.ts_ms}}}'
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


def notice_body(n: Notice) -> str:
    return orjson.dumps(n.msg).decode()


def data_frame(kind: str, sid: int, seq: int | None, body: str) -> str:
    if seq is None:
        return f'{{"type":"{kind}","sid":{sid},"msg":{body}}}'
    return f'{{"type":"{kind}","sid":{sid},"seq":{seq},"msg":{body}}}'

"""Parse speed: bare ``orjson.loads`` vs ``recorder.protocol.parse_frame`` on a realistic mix.

The recorder's ingest target is >= 70% of a bare receive-and-parse client, so parse_frame itself
must cost little more than the JSON decode. Mix: mostly current-format deltas over a few markets,
plus snapshots, lifecycle events, trades and replies. Prints msgs/s of each and the ratio.

    .venv/bin/python -m bench.parse_speed [--frames 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from recorder.protocol import parse_frame


def make_frames(n: int, seed: int = 7) -> list[bytes]:
    """``n`` frames: ~95% current deltas (sub-penny and fractional sizes included)."""
    rng = random.Random(seed)
    tickers = [f"KXHIGHNY-26JAN{d:02d}-B{40 + d}.5" for d in range(1, 41)]
    seq: dict[int, int] = {}
    frames: list[bytes] = []
    for _ in range(n):
        r = rng.random()
        sid = rng.randint(2, 5)
        ticker = rng.choice(tickers)
        if r < 0.95:
            seq[sid] = seq.get(sid, 0) + 1
            cents = rng.randint(1, 99)
            price = (
                f"0.{cents:02d}00" if rng.random() < 0.9 else f"0.{cents:02d}{rng.randint(0, 9)}0"
            )
            size = rng.choice(["1.00", "10.00", "25.00", "2.50", "133.00", "0.01"])
            delta = size if rng.random() < 0.55 else "-" + size
            obj: dict[str, Any] = {
                "type": "orderbook_delta",
                "sid": sid,
                "seq": seq[sid],
                "msg": {
                    "market_ticker": ticker,
                    "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
                    "price_dollars": price,
                    "delta_fp": delta,
                    "side": rng.choice(["yes", "no"]),
                    "ts_ms": 1_770_000_000_000 + rng.randint(0, 10**9),
                },
            }
        elif r < 0.96:
            seq[sid] = seq.get(sid, 0) + 1
            levels = [[f"0.{c:02d}00", f"{rng.randint(1, 500)}.00"] for c in range(1, 30)]
            obj = {
                "type": "orderbook_snapshot",
                "sid": sid,
                "seq": seq[sid],
                "msg": {
                    "market_ticker": ticker,
                    "market_id": "x",
                    "yes_dollars_fp": levels,
                    "no_dollars_fp": levels[:10],
                },
            }
        elif r < 0.98:
            obj = {
                "type": "trade",
                "sid": 9,
                "seq": rng.randint(1, 10**6),
                "msg": {
                    "trade_id": "f851595a",
                    "market_ticker": ticker,
                    "yes_price_dollars": "0.5500",
                    "no_price_dollars": "0.4500",
                    "count_fp": "10.00",
                    "taker_side": "yes",
                    "ts": 1707667200,
                },
            }
        elif r < 0.995:
            obj = {
                "type": "market_lifecycle_v2",
                "sid": 1,
                "msg": {
                    "market_ticker": ticker,
                    "event_type": "determined",
                    "result": "yes",
                    "determination_ts": 1735800000,
                    "settlement_value": "1.0000",
                },
            }
        else:
            obj = {
                "id": 5,
                "sid": sid,
                "seq": seq.get(sid, 0),
                "type": "ok",
                "msg": {"market_tickers": tickers[:5]},
            }
        frames.append(orjson.dumps(obj))
    return frames


def rate(fn: Callable[[bytes], object], frames: list[bytes], repeat: int) -> float:
    """Best-of-``repeat`` messages per second."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for raw in frames:
            fn(raw)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frames = make_frames(args.frames)
    for raw in frames[:1000]:  # warm the memo, as a running recorder would have it
        parse_frame(raw)
    bare = rate(orjson.loads, frames, args.repeat)
    ours = rate(parse_frame, frames, args.repeat)
    print(f"frames             {len(frames):>12,}")
    print(f"orjson.loads       {bare:>12,.0f} msgs/s")
    print(f"parse_frame        {ours:>12,.0f} msgs/s")
    print(f"ratio              {ours / bare:>12.1%}")


if __name__ == "__main__":
    main()

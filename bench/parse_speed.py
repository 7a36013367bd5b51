"""Parse speed: bare ``orjson.loads`` vs ``recorder.protocol.parse_frame`` on a realistic mix,
and the reader's whole per-delta work, careful path vs the typed fast path.

The recorder's ingest target is >= 70% of a bare receive-and-parse client, so parse_frame itself
must cost little more than the JSON decode. Mix: mostly current-format deltas over a few markets,
plus snapshots, lifecycle events, trades and replies. Prints msgs/s of each and the ratio.

Then the reader's per-frame work on a stream of in-sequence deltas for anchored books (what a
drained backlog is), in CPU µs per frame (``time.process_time``, so a busy shared machine
inflates it less than wall time), best of ``--repeat``:

* ``careful``: ``parse_frame`` + ``SessionLog.frame_in`` + ``ConnectionCore.frame`` (the reader
  before issue 16);
* ``fast``: ``decode_delta`` + ``SessionLog.delta_in`` + ``ConnectionCore.delta`` into a list of
  row tuples (issue 16's first step);
* ``wire``: the reader now, from socket bytes: WebSocket frames in 64 KiB reads through
  ``recorder.framing.FrameSplitter`` and ``recorder.connection.frame_handler``, rows kept as
  columns (``recorder.log_columns``);
* ``writer rows``: ``recorder.segments.rows_to_batch`` of the row tuples in slices of 512 (the
  hand-off thread's share before, which holds the GIL too); ``writer columns``:
  ``LogColumns.take`` of the same rows in batches of 16 Ki (now).

Sizes are drawn from ~50,000 distinct strings, as on the simulator's feed.

    .venv/bin/python -m bench.parse_speed [--frames 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from recorder import protocol
from recorder.connection import frame_handler
from recorder.connection_core import ConnectionCore, CoreSettings, Send
from recorder.framing import FrameSplitter
from recorder.log_columns import LogColumns
from recorder.protocol import decode_delta, parse_frame
from recorder.segments import rows_to_batch
from recorder.session import SessionLog


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


def _anchored_core(tickers: list[str]) -> tuple[ConnectionCore, int]:
    """A core following ``tickers`` on sid 1, every book anchored; returns it and the last seq."""
    core = ConnectionCore(0, CoreSettings(max_markets_per_sid=len(tickers)))
    for t in tickers:
        core.want(t, 0)
    sends = [e.command for e in core.opened(0) if isinstance(e, Send)]
    for c in sends:
        core.sent(c.cmd_id, 0)
    msg = {"channel": "orderbook_delta", "sid": 1}
    core.frame(
        parse_frame(orjson.dumps({"type": "subscribed", "id": sends[0].cmd_id, "msg": msg})), 1
    )
    seq = 0
    for t in tickers:
        seq += 1
        snap = {"market_ticker": t, "yes_dollars_fp": [["0.4000", "100000.00"]],
                "no_dollars_fp": [["0.5000", "100000.00"]]}  # fmt: skip
        obj = {"type": "orderbook_snapshot", "sid": 1, "seq": seq, "msg": snap}
        core.frame(parse_frame(orjson.dumps(obj)), 2)
    if core.anchored != set(tickers):
        raise RuntimeError("bench setup: books did not anchor")
    return core, seq


def delta_stream(n: int, tickers: list[str], first_seq: int, seed: int = 7) -> list[bytes]:
    """In-sequence current-format deltas on sid 1 that never empty a level nor cross a book."""
    rng = random.Random(seed)
    frames = []
    for i in range(n):
        size = f"{rng.randint(1, 50_000) / 100:.2f}"
        msg = {
            "market_ticker": rng.choice(tickers),
            "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
            "price_dollars": f"0.{rng.randint(1, 40):02d}00",
            "delta_fp": size,
            "side": "yes",
            "ts_ms": 1_795_961_851_188 + i,
        }
        obj = {"type": "orderbook_delta", "sid": 1, "seq": first_seq + 1 + i, "msg": msg}
        frames.append(orjson.dumps(obj))
    return frames


def ws_frames(frames: list[bytes], read_bytes: int = 64 * 1024) -> list[bytes]:
    """``frames`` as a server's unmasked text frames, cut into socket-sized reads."""
    out = []
    for p in frames:
        n = len(p)
        head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
        out.append(head + p)
    stream = b"".join(out)
    return [stream[i : i + read_bytes] for i in range(0, len(stream), read_bytes)]


def wire_cost(n: int, repeat: int) -> tuple[float, float]:
    """CPU µs per frame of the reader from socket bytes, and of the writer's ``take``."""
    tickers = [f"KXHIGHNY-26JAN{d:02d}-B{40 + d}.5" for d in range(1, 41)]
    best = best_take = float("inf")
    for _ in range(repeat):
        protocol._price_memo.clear()
        protocol._size_memo.clear()
        core, seq = _anchored_core(tickers)
        reads = ws_frames(delta_stream(n, tickers, seq))
        cols = LogColumns(1)
        handle = frame_handler(core, SessionLog(1, cols), 0, lambda e: None, lambda: None)
        splitter = FrameSplitter()
        start = time.process_time()
        for chunk in reads:
            splitter.feed(chunk, handle, lambda frame: True)
        best = min(best, time.process_time() - start)
        if core.anchored != set(tickers) or len(cols) != n:
            raise RuntimeError("bench stream broke a book on the wire path")
        start = time.process_time()
        while cols.take(16 * 1024) is not None:
            pass
        best_take = min(best_take, time.process_time() - start)
    return best / n * 1e6, best_take / n * 1e6


def reader_cost(n: int, repeat: int) -> dict[str, float]:
    """CPU µs per frame of the reader's careful and fast paths and of the writer's conversion."""
    tickers = [f"KXHIGHNY-26JAN{d:02d}-B{40 + d}.5" for d in range(1, 41)]
    out: dict[str, float] = {}
    rows: list[tuple[Any, ...]] = []
    for name in ("careful", "fast"):
        best = float("inf")
        for _ in range(repeat):
            protocol._price_memo.clear()
            protocol._size_memo.clear()
            core, seq = _anchored_core(tickers)
            frames = delta_stream(n, tickers, seq)
            rows = []
            slog = SessionLog(1, rows)
            start = time.process_time()
            if name == "careful":
                for raw in frames:
                    f = parse_frame(raw)
                    slog.frame_in(0, 1, raw, f, 0)
                    core.frame(f, 0)
            else:
                for raw in frames:
                    d = decode_delta(raw)
                    if d is not None:
                        slog.delta_in(0, 1, raw, d, 0)
                        if core.delta(d, 0) is None:
                            core.frame(parse_frame(raw), 0)
                    else:
                        f = parse_frame(raw)
                        slog.frame_in(0, 1, raw, f, 0)
                        core.frame(f, 0)
            best = min(best, time.process_time() - start)
            if core.anchored != set(tickers):
                raise RuntimeError(f"bench stream broke a book on the {name} path")
        out[name] = best / n * 1e6
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for i in range(0, len(rows), 512):
            rows_to_batch(rows[i : i + 512])
        best = min(best, time.process_time() - start)
    out["writer"] = best / len(rows) * 1e6
    out["wire"], out["take"] = wire_cost(n, repeat)
    return out


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
    cost = reader_cost(args.frames, args.repeat)
    print(
        f"reader careful     {cost['careful']:>12.2f} CPU µs/frame (parse_frame, frame_in, frame)"
    )
    print(f"reader fast        {cost['fast']:>12.2f} CPU µs/frame (decode_delta, delta_in, delta)")
    print(f"reader wire        {cost['wire']:>12.2f} CPU µs/frame (FrameSplitter, frame_handler)")
    print(f"writer rows        {cost['writer']:>12.2f} CPU µs/row (rows_to_batch)")
    print(f"writer columns     {cost['take']:>12.2f} CPU µs/row (LogColumns.take)")


if __name__ == "__main__":
    main()

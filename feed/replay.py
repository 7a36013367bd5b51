"""``kalshi-replay``: a recorded session served in the tap's protocol (Kalshi's own + the extra
channel), from sealed segments and live files up to their last complete batch.

Each connection gets its own replay: the rows are read from the start of the session (books and
validity are rebuilt exactly as they were live, gaps and resyncs included), silently up to
``--from``, then published from the connection's first ``subscribe`` on, paced by the recorded
receive times divided by ``--speed`` (or as fast as the consumer reads, ``--speed max``). A replay
never drops a frame: it waits for its one consumer instead of lagging it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection

from feed.events import StatusMessage
from feed.fanout import Fanout
from feed.server import Listening, pump, start_server
from feed.source import SessionFiles, pick_session, read_rows
from feed.state import KIND, MSG_TYPE, RAW, RECORD_SEQ, RECV_NS, NullPublisher
from schemas.wire import TS_SECONDS_MAX

log = logging.getLogger("feed.replay")

BACKPRESSURE_FRAMES = 4096
"""Queued frames at which the replay waits for its consumer (instead of lagging it)."""
YIELD_EVERY = 512


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    data_dir: Path
    session: int | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    markets: frozenset[str] | None = None
    speed: float | None = None
    """None = as fast as possible."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> int:
    """``--from``/``--to``: ISO 8601 (UTC if no offset), or Unix s / ms / ns -> ns since epoch."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        v = int(t)
        if abs(v) < TS_SECONDS_MAX:
            return v * 1_000_000_000
        if abs(v) < TS_SECONDS_MAX * 1000:
            return v * 1_000_000
        return v
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time {text!r} is neither ISO 8601 (2026-11-29T12:00:00Z) nor Unix s/ms/ns"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000  # exact: no float seconds


def parse_speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        raise ValueError(
            f"--speed {text!r}: give a positive factor (1 = real time) or max"
        ) from None
    if not v > 0:
        raise ValueError(f"--speed {text!r}: give a positive factor (1 = real time) or max")
    return v


class Replayer:
    """Serves replays of one session: a fresh ``Fanout`` and row reader per connection."""

    def __init__(self, cfg: ReplayConfig) -> None:
        self.cfg = cfg
        self.files: SessionFiles = pick_session(cfg.data_dir, cfg.session)
        self.finished = 0
        self.frames_sent = 0
        self.settings: dict[str, Any] = {}
        for row in read_rows(self.files):  # the hello names the session's settings up front
            if row[KIND] == "decision" and row[MSG_TYPE] == "session_start":
                self.settings = orjson.loads(row[RAW])
            if row[RECORD_SEQ] >= 8:
                break

    def rows(self) -> Iterator[tuple[Any, ...]]:
        end = self.cfg.end_ns
        for row in read_rows(self.files):
            if end is not None and row[RECV_NS] > end:
                return
            yield row

    async def handler(self, ws: ServerConnection) -> None:
        cfg = self.cfg
        fan = Fanout("replay", set(cfg.markets) if cfg.markets is not None else None)
        fan.state.session_id = self.files.session_id
        fan.state.settings = dict(self.settings)
        c = fan.add(max_queue=1 << 40)  # never lagged: the replay waits instead
        started = asyncio.Event()
        rows = self.rows()
        pending: tuple[Any, ...] | None = None
        # Rebuild the state silently up to --from (books, validity, joins as they were then).
        if cfg.start_ns is not None:
            fan.state.pub = NullPublisher()
            for row in rows:
                if row[RECV_NS] >= cfg.start_ns:
                    pending = row
                    break
                fan.state.on_row(row)
            fan.state.pub = fan

        def on_command() -> None:
            if c.started:
                started.set()

        async def play() -> None:
            await started.wait()
            t0 = time.monotonic()
            first_ns: int | None = None
            stream = rows if pending is None else _chain(pending, rows)
            for n, row in enumerate(stream, 1):
                if cfg.speed is not None:
                    if first_ns is None:
                        first_ns = row[RECV_NS]
                    due = t0 + (row[RECV_NS] - first_ns) / 1e9 / cfg.speed
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                fan.on_row(row)
                if len(c.queue) >= BACKPRESSURE_FRAMES or n % YIELD_EVERY == 0:
                    while len(c.queue) >= BACKPRESSURE_FRAMES:
                        await asyncio.sleep(0.001)
                    await asyncio.sleep(0)
            fan.mark()
            if fan.state.ended is None:
                end = {"reason": "end_of_data"}
                fan.status(StatusMessage.SESSION_END, end, fan.state.record_seq)
            self.finished += 1

        player = asyncio.create_task(play())
        try:
            await pump(ws, c, on_command)
        finally:
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
            self.frames_sent += c.sent


def _chain(first: tuple[Any, ...], rest: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    yield first
    yield from rest


async def start_replay(
    cfg: ReplayConfig, address: str = "127.0.0.1:0", token: str | None = None
) -> tuple[Replayer, Listening]:
    """Start serving replays of ``cfg``'s session (tests, notebooks, the paper harness)."""
    r = Replayer(cfg)
    listening = await start_server(address, r.handler, token)
    return r, listening


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kalshi-replay",
        description="Serve a recorded session in Kalshi's WebSocket protocol (plus the tap's "
        "recorder_status channel), from its segments.",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="the recorder's --data-dir")
    p.add_argument("--session", type=int, help="session id (default: the latest)")
    p.add_argument("--from", dest="start", help="start at this time (ISO 8601 or Unix s/ms/ns)")
    p.add_argument("--to", dest="end", help="stop after this time")
    p.add_argument("--markets", nargs="+", help="serve only these market tickers")
    p.add_argument("--speed", default="1", help="N times real time, or max (default 1)")
    p.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT (default 127.0.0.1:8765)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    logging.basicConfig(
        level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        cfg = ReplayConfig(
            data_dir=a.data_dir,
            session=a.session,
            start_ns=parse_time(a.start) if a.start else None,
            end_ns=parse_time(a.end) if a.end else None,
            markets=frozenset(a.markets) if a.markets else None,
            speed=parse_speed(a.speed),
        )
        token = os.environ.get("TAP_TOKEN") or None

        async def run() -> None:
            r, listening = await start_replay(cfg, a.listen, token)
            print(
                f"replaying session {r.files.session_id} on {listening.url} "
                f"(speed {a.speed}); Ctrl-C stops",
                flush=True,
            )
            await listening.server.serve_forever()

        asyncio.run(run())
    except ValueError as exc:
        print(f"kalshi-replay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"kalshi-replay: cannot listen on {a.listen}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

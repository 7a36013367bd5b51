"""Drivers: the thin asyncio shell around :class:`paper.engine.PaperSession`.

Live and replay are one code path: a ``feed.Client`` reads the live tap (``--tap URL``) or a
replay that this process serves itself from recorded segments on loopback (``--replay DATA``, as
fast as the client reads), and every event goes through the same sans-I/O session. The only
network peer is the tap or replay: nothing here can reach the exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from feed.client import Client
from feed.events import Hello
from feed.replay import ReplayConfig, start_replay
from paper.actor import Actor
from paper.broker import Broker
from paper.engine import PaperSession
from paper.log import PaperLog, recover

FLUSH_EVERY_S = 0.1
"""Hand the paper log to the OS at least this often (the recorder's flush interval)."""

DEPTH = 64
"""Book levels per side the client passes on each update: deep enough that the broker's own
book sees every level an order could reach, shallow enough to keep each update cheap."""


@dataclass
class RunResult:
    session: PaperSession
    log_file: Path | None


def session_data_dir(hello: Hello | None) -> Path | None:
    """The recorder's data directory as its hello announces it (``config.data_dir`` of the
    session-start record), if it is a recorder data directory this machine can see."""
    if hello is None:
        return None
    config = hello.settings.get("config")
    value = config.get("data_dir") if isinstance(config, dict) else None
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    if path.is_absolute() and path.is_dir():
        return path
    # a relative path is the recorder's cwd's: only trust it if it holds recorder data here
    if (path / "segments").is_dir() or (path / "live").is_dir():
        return path
    return None


async def run_feed(
    url: str,
    actor: Actor,
    *,
    log_dir: Path | str | None = None,
    broker: Broker | None = None,
    markets: list[str] | None = None,
    token: str | None = None,
    idle_timeout_s: float = 3600.0,
    stop: asyncio.Event | None = None,
) -> RunResult:
    """Trade ``actor`` on paper against the tap or replay at ``url`` until its session ends (or
    ``stop`` is set). The paper log goes under ``log_dir``; ``"auto"``: next to the session log,
    in the data directory the tap's hello names (no log if this machine cannot see it; opened at
    the first paper-log row); None: no log."""
    session = PaperSession(actor, broker or Broker())
    log: PaperLog | None = None

    def open_log(where: Path) -> PaperLog:
        recover(where)
        return PaperLog(where)

    if log_dir is not None and log_dir != "auto":
        log = open_log(Path(log_dir))
    flushed = time.monotonic()
    hello: Hello | None = None
    try:
        async with Client(url, markets=markets, depth=DEPTH, token=token) as feed:
            while not session.ended and not (stop is not None and stop.is_set()):
                ev = await feed.next_event(idle_timeout_s)
                if ev is None:
                    break
                rows = session.handle(ev)
                if isinstance(ev, Hello):
                    hello = ev
                if log is None and rows and log_dir == "auto":
                    # opened at the first row, not at the hello: a recorder that just started
                    # may not have created its data directory yet
                    where = session_data_dir(hello)
                    if where is not None:
                        log = open_log(where)
                if log is not None:
                    log.session_id = session.session_id
                    if rows:
                        log.append(rows)
                    if time.monotonic() - flushed >= FLUSH_EVERY_S:
                        log.flush()
                        flushed = time.monotonic()
    finally:
        sealed = log.close() if log is not None else None
    return RunResult(session, sealed)


async def run_replay(
    data_dir: Path,
    actor: Actor,
    *,
    session_id: int | None = None,
    markets: list[str] | None = None,
    log_dir: Path | str | None = None,
    broker: Broker | None = None,
) -> RunResult:
    """Replay a recorded session (``kalshi-replay`` in-process, loopback, ``--speed max``) into
    :func:`run_feed`."""
    cfg = ReplayConfig(
        Path(data_dir),
        session=session_id,
        markets=frozenset(markets) if markets else None,
        speed=None,
    )
    _replayer, listening = await start_replay(cfg, "127.0.0.1:0")
    try:
        return await run_feed(listening.url, actor, log_dir=log_dir, broker=broker, markets=markets)
    finally:
        listening.server.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await listening.server.wait_closed()

"""The live tap and the replay over real sockets, against the simulator's ground truth.

One recorder run (the real recorder, with the tap attached as ``--tap`` will attach it, against
the simulator with seq-gap faults) serves, at the same time:

* consumer A, a ``feed.Client`` following every market from record 1;
* consumer B, which stops reading until it has fallen far behind, then reads on;
* a battery of bad input and 1,000 connections that come and go.

Afterwards the recorded session is replayed from its segments. The tests check: A's books equal
the true books at every update the tap calls valid; B got ``lagged`` and recovered to true books;
bad input got Kalshi's errors; the recording holds every frame the simulator sent; and the replay
gives the same events as the live tap, message for message.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from feed import (
    BookUpdate,
    Client,
    FeedEvent,
    Hello,
    Lagged,
    LifecycleEvent,
    MarketJoined,
    RecordMark,
    SessionEnded,
)
from feed.replay import ReplayConfig, start_replay
from feed.source import pick_session, read_rows
from feed.state import (
    CONN,
    EPOCH,
    KIND,
    MALFORMED,
    MSG_TYPE,
    RAW,
    RECORD_SEQ,
    RECV_NS,
    TICKER,
    TS_MS,
)
from schemas.units import parse_price, parse_size
from schemas.wire import DELTA_MSG, LIFECYCLE_CHANNEL_MSG_TYPES
from simulator.faults import FaultConfig
from simulator.groundtruth import truth_books
from simulator.server import SimConfig, start_in_thread
from simulator.wire import ProtocolOptions
from tests.feed.tap_run import recorder_with_tap
from tests.recorder.harness import ROOT, ground_truth_frames, received_by_epoch
from tests.support.interop import installed, interop_venv, newer_python
from tests.support.kalshi_sdk import run_kalshi_sdk
from tests.support.sim import lively

DEPTH = 10_000  # whole books
LAG_BEHIND = 6_000  # frames B lets A get ahead by before it reads again


@dataclass
class LiveRun:
    data: Path
    truth: Path
    events_a: list[FeedEvent]
    b_events: list[FeedEvent]
    b_books_after: dict[str, Any]
    bad: dict[str, Any]
    churn_ok: int
    rec_stdout: str
    rec_stderr: str
    sdk: dict[str, Any] | str | None
    """kalshi-sdk's run against the live tap: its output, the reason it could not run, or None."""
    keys: dict[str, str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)


async def _consumer_a(url: str, out: list[FeedEvent], progress: list[int]) -> None:
    async with Client(url, depth=DEPTH, timeout_s=60) as c:
        async for ev in c:
            out.append(ev)
            progress[0] += 1
            if isinstance(ev, SessionEnded):
                return


async def _consumer_b(url: str, progress: list[int], out: list[FeedEvent]) -> dict[str, Any]:
    """Subscribe, stall until A is LAG_BEHIND frames further, then read to the end."""
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    c = Client(url, depth=DEPTH)
    async with connect(url + "?max_queue=64", sock=sock, max_queue=4) as ws:
        c.ws = ws
        await c.send(
            "subscribe",
            {"channels": ["recorder_status", "orderbook_delta"], "all_markets": True},
        )
        # wait until some market is joined, then stop reading
        while not any(isinstance(e, MarketJoined) for e in out):
            ev = await c.next_event(60)
            if ev is not None:
                out.append(ev)
        start = progress[0]
        deadline = asyncio.get_running_loop().time() + 60
        while progress[0] - start < LAG_BEHIND:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("consumer A did not move on within 60 s")
            await asyncio.sleep(0.05)
        while True:
            ev = await c.next_event(60)
            if ev is None:
                break
            out.append(ev)
            if isinstance(ev, SessionEnded):
                break
    return {t: (dict(b.yes), dict(b.no), b.valid) for t, b in c.books.items()}


async def _bad_input(url: str) -> dict[str, Any]:
    """Each bad command and the reply it got."""
    got: dict[str, Any] = {}
    cases = {
        "not_json": "{nope",
        "unknown_cmd": {"id": 1, "cmd": "frobnicate"},
        "no_params": {"id": 2, "cmd": "subscribe"},
        "no_channels": {"id": 3, "cmd": "subscribe", "params": {}},
        "unknown_channel": {"id": 4, "cmd": "subscribe", "params": {"channels": ["nope"]}},
        "unserved_channel": {"id": 5, "cmd": "subscribe", "params": {"channels": ["fill"]}},
        "no_ticker": {"id": 6, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}},
        "unknown_market": {
            "id": 7,
            "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_tickers": ["NOPE-1"]},
        },
        "unknown_sid": {"id": 8, "cmd": "unsubscribe", "params": {"sids": [99]}},
        "two_sids": {
            "id": 9,
            "cmd": "update_subscription",
            "params": {"sids": [1, 2], "action": "get_snapshot", "market_tickers": ["X"]},
        },
        "no_action": {"id": 10, "cmd": "update_subscription", "params": {"sid": 1}},
        "bad_action": {"id": 11, "cmd": "update_subscription", "params": {"sid": 1, "action": "x"}},
    }
    async with connect(url) as ws:
        for name, cmd in cases.items():
            await ws.send(cmd if isinstance(cmd, str) else json.dumps(cmd))
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            got[name] = reply
    # malformed signature headers are refused at the handshake
    try:
        async with connect(url, additional_headers={"KALSHI-ACCESS-KEY": "k"}):
            got["bad_headers"] = "accepted"
    except InvalidStatus as exc:
        got["bad_headers"] = exc.response.status_code
    return got


async def _churn(url: str, n: int = 1000, parallel: int = 25) -> int:
    """n connections that subscribe to the lifecycle channel and leave; how many got their
    ``subscribed``."""
    ok = 0
    sem = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        nonlocal ok
        async with sem:
            try:
                async with connect(url, open_timeout=30) as ws:
                    cmd = {
                        "id": 1,
                        "cmd": "subscribe",
                        "params": {"channels": ["market_lifecycle_v2"]},
                    }
                    await ws.send(json.dumps(cmd))
                    reply = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                    if reply.get("type") == "subscribed":
                        ok += 1
            except (ConnectionClosed, OSError, TimeoutError):
                pass

    await asyncio.gather(*(one(i) for i in range(n)))
    return ok


def sdk_python() -> str | None:
    """Python >= 3.12 with kalshi-sdk, as the simulator's interop test builds it (its cached
    venv); None when there is none here."""
    py = newer_python()
    if py is None:
        return None
    venv = interop_venv(py)
    return str(venv / "bin" / "python") if installed(venv) else None


async def run_sdk(url: str, keys: dict[str, str]) -> dict[str, Any] | str:
    py = sdk_python()
    if py is None:
        return "no Python >= 3.12 venv with kalshi-sdk (run tests/simulator/test_interop.py first)"
    return await run_kalshi_sdk(py, url, keys)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    base = tmp_path_factory.mktemp("feed-live")
    gen = lively(delta_rate=2000.0, regimes=False, create_rate=4.0)
    sim = start_in_thread(
        SimConfig(
            keys_dir=base / "keys",
            ground_truth=base / "truth",
            faults=FaultConfig(gap_rate=0.005),
            generator=gen,
            protocol=ProtocolOptions(empty_side="empty_list"),  # what kalshi-sdk needs
        )
    )
    keys = {"key_id": sim.key_id, "private_key_path": str(sim.private_key_path)}
    data = base / "data"
    events_a: list[FeedEvent] = []
    b_events: list[FeedEvent] = []
    progress = [0]
    # the recorder's own --tap; --tap-wait holds the recording until consumer A has subscribed;
    # A's queue is never full on a busy machine (B lowers its own bound with ?max_queue=64)
    args = ("--duration", "180", "--tap-wait", "60", "--tap-max-queue", "10000000")
    try:
        with recorder_with_tap(sim, data, *args) as (proc, url):

            async def run() -> tuple[Any, ...]:
                a = asyncio.create_task(_consumer_a(url, events_a, progress))
                while not any(isinstance(e, Hello) for e in events_a):  # A is subscribed first
                    await asyncio.sleep(0.01)
                    if a.done():
                        a.result()
                b = asyncio.create_task(_consumer_b(url, progress, b_events))
                sdk = asyncio.create_task(run_sdk(url, keys))
                bad = await _bad_input(url)
                churn = await _churn(url)
                sdk_out = await sdk

                def b_recovered() -> bool:
                    lag = next((i for i, e in enumerate(b_events) if isinstance(e, Lagged)), None)
                    return lag is not None and len(b_events) - lag > 500

                deadline = asyncio.get_running_loop().time() + 120
                while not (b_recovered() and progress[0] > 10_000):
                    if asyncio.get_running_loop().time() > deadline:
                        raise AssertionError("consumer B did not lag and recover within 120 s")
                    if b.done():
                        b.result()
                    await asyncio.sleep(0.05)
                proc.send_signal(signal.SIGINT)  # a graceful stop: session_end reaches A and B
                await a
                return await b, bad, churn, sdk_out

            b_books, bad, churn, sdk = asyncio.run(asyncio.wait_for(run(), 240))
            out, err = proc.communicate(timeout=60)
    finally:
        sim.stop()
    assert proc.returncode == 0, err[-3000:]
    run_ = LiveRun(
        data, base / "truth", events_a, b_events, b_books, bad, churn, out, err, sdk, keys
    )
    run_.rows = list(read_rows(pick_session(data, None)))
    yield run_


def _truth_index(rows: list[tuple[Any, ...]], truth: Path) -> dict[int, dict[str, Any]]:
    """record_seq of each recorded delta -> the simulator's true book right after that change
    (the i-th delta of (ticker, ts_ms) in the log is the i-th true change at that ms)."""
    by_ms = truth_books(truth)
    out: dict[int, dict[str, Any]] = {}
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for r in rows:
        if (
            r[KIND] == "in"
            and r[MSG_TYPE] == DELTA_MSG
            and not r[MALFORMED]
            and r[TS_MS] is not None
        ):
            key = (r[TICKER], r[TS_MS])
            i = seen[key]
            seen[key] += 1
            if i < len(by_ms.get(key, [])):
                out[r[RECORD_SEQ]] = by_ms[key][i]
    return out


def _levels(side: list[list[str]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(((parse_price(p), parse_size(s)) for p, s in side), reverse=True))


def _check_against_truth(events: list[FeedEvent], truth: dict[int, dict[str, Any]]) -> int:
    checked = 0
    for ev in events:
        if isinstance(ev, BookUpdate) and ev.valid and not ev.is_snapshot:
            assert ev.record_seq is not None
            true = truth[ev.record_seq]
            assert (ev.yes, ev.no) == (_levels(true["yes"]), _levels(true["no"])), (
                ev.market_ticker,
                ev.record_seq,
            )
            checked += 1
    return checked


def test_live_books_equal_the_true_books_whenever_the_tap_says_valid(live_run: LiveRun) -> None:
    truth = _truth_index(live_run.rows, live_run.truth)
    checked = _check_against_truth(live_run.events_a, truth)
    assert checked > 1000
    # the faults made the tap say "not valid" at times, and books came back
    states = [e for e in live_run.events_a if type(e).__name__ == "ValidityChange"]
    assert any(getattr(e, "reason", "") == "gap" for e in states)
    assert not any(isinstance(e, Lagged) for e in live_run.events_a)
    hello = live_run.events_a[0]
    assert isinstance(hello, Hello) and hello.mode == "live"
    assert hello.session_id == live_run.rows[0][0]


def test_every_recorded_delta_reached_the_live_consumer_in_order(live_run: LiveRun) -> None:
    """A followed every market from record 1: it got every delta the tap's book applied."""
    assert not any(isinstance(e, Lagged) for e in live_run.events_a), "A was lagged: frames lost"
    got = [
        e.record_seq
        for e in live_run.events_a
        if isinstance(e, BookUpdate) and not e.is_snapshot and e.record_seq is not None
    ]
    assert got == sorted(got) and len(got) == len(set(got))
    recorded_deltas = {
        r[RECORD_SEQ] for r in live_run.rows if r[MSG_TYPE] == DELTA_MSG and r[KIND] == "in"
    }
    assert set(got) <= recorded_deltas
    lifecycle = [e.record_seq for e in live_run.events_a if isinstance(e, LifecycleEvent)]
    recorded_lifecycle = [
        r[RECORD_SEQ]
        for r in live_run.rows
        if r[KIND] == "in" and r[MSG_TYPE] in LIFECYCLE_CHANNEL_MSG_TYPES and not r[MALFORMED]
    ]
    assert lifecycle == recorded_lifecycle


def test_a_consumer_that_stops_reading_is_lagged_and_recovers(live_run: LiveRun) -> None:
    lagged = [e for e in live_run.b_events if isinstance(e, Lagged)]
    assert lagged and lagged[0].dropped > 0
    first = live_run.b_events.index(lagged[0])
    truth = _truth_index(live_run.rows, live_run.truth)
    after = live_run.b_events[first:]
    # fresh snapshots follow the lag, and books are true again afterwards
    assert any(isinstance(e, BookUpdate) and e.is_snapshot for e in after)
    assert _check_against_truth(after, truth) > 100


def test_the_recording_holds_every_frame_despite_the_consumers(live_run: LiveRun) -> None:
    sent = ground_truth_frames(live_run.truth)
    rows = [
        {"kind": r[KIND], "conn": r[CONN], "epoch": r[EPOCH], "raw": r[RAW]} for r in live_run.rows
    ]
    got = received_by_epoch(rows)
    assert len(got) == len(sent)
    total = 0
    for (_, frames), (_, truth) in zip(sorted(got.items()), sorted(sent.items()), strict=True):
        assert frames == truth[: len(frames)]
        total += len(frames)
    assert total > 5000
    assert "tap stopped following the session" not in live_run.rec_stderr


def test_bad_input_gets_kalshi_errors(live_run: LiveRun) -> None:
    codes = {
        name: (r.get("msg") or {}).get("code") if isinstance(r, dict) else r
        for name, r in live_run.bad.items()
    }
    assert codes == {
        "not_json": 1,
        "unknown_cmd": 5,
        "no_params": 2,
        "no_channels": 3,
        "unknown_channel": 8,
        "unserved_channel": 8,
        "no_ticker": 14,
        "unknown_market": 16,
        "unknown_sid": 7,
        "two_sids": 12,
        "no_action": 15,
        "bad_action": 13,
        "bad_headers": 401,
    }
    assert live_run.bad["unknown_market"]["msg"]["market_ticker"] == "NOPE-1"
    assert live_run.bad["unknown_cmd"]["id"] == 1
    assert live_run.churn_ok == 1000


def _comparable(events: list[FeedEvent]) -> list[FeedEvent]:
    return [e for e in events if not isinstance(e, Hello | RecordMark | SessionEnded)]


def _replayed(cfg: ReplayConfig) -> list[FeedEvent]:
    """Every event a ``feed.Client`` gets from a replay with ``cfg``, up to the session end."""

    async def replay() -> list[FeedEvent]:
        _, listening = await start_replay(cfg)
        out: list[FeedEvent] = []
        try:
            async with Client(listening.url, depth=DEPTH) as c:
                async for ev in c:
                    out.append(ev)
                    if isinstance(ev, SessionEnded):
                        break
        finally:
            listening.server.close()
        return out

    return asyncio.run(asyncio.wait_for(replay(), 120))


def test_replay_gives_the_same_events_message_for_message(live_run: LiveRun) -> None:
    events = _replayed(ReplayConfig(live_run.data, speed=None))
    hello = events[0]
    assert isinstance(hello, Hello) and hello.mode == "replay"
    live = _comparable(live_run.events_a)
    replayed = _comparable(events)
    assert len(live) > 1000
    assert replayed == live


def test_replay_from_a_time_and_of_some_markets(live_run: LiveRun) -> None:
    joined = [e for e in live_run.events_a if isinstance(e, MarketJoined)]
    some = {joined[1].market_ticker, joined[2].market_ticker}
    mid_ns = next(r[RECV_NS] for r in live_run.rows if r[RECORD_SEQ] == joined[2].record_seq)

    events = _replayed(ReplayConfig(live_run.data, start_ns=mid_ns, markets=frozenset(some)))
    books = [e for e in events if isinstance(e, BookUpdate)]
    assert books and {e.market_ticker for e in books} <= some
    live_after = [
        e
        for e in live_run.events_a
        if isinstance(e, BookUpdate)
        and e.market_ticker in some
        and not e.is_snapshot
        and e.record_seq is not None
        and e.record_seq >= joined[2].record_seq
    ]
    got = [e for e in books if not e.is_snapshot]
    assert got == live_after


def test_kalshi_replay_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "feed.replay", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    r = run("--data-dir", str(tmp_path))
    assert r.returncode == 2 and "no recorded session" in r.stderr
    assert r.stderr.count("\n") == 1
    r = run("--data-dir", str(tmp_path), "--speed", "fast")
    assert r.returncode == 2 and "--speed" in r.stderr


def _assert_sdk_ok(out: dict[str, Any] | str | None) -> None:
    if isinstance(out, str) or out is None:
        pytest.skip(str(out))
    kinds = out["kinds"]
    assert kinds.get("OrderbookSnapshotMessage", 0) >= 1, kinds
    assert kinds.get("OrderbookDeltaMessage", 0) >= 1, kinds
    assert "lifecycle:MarketLifecycleMessage" in kinds, kinds
    assert out["errors"] == []


@pytest.mark.slow
def test_kalshi_sdk_reads_the_live_tap(live_run: LiveRun) -> None:
    _assert_sdk_ok(live_run.sdk)


@pytest.mark.slow
def test_kalshi_sdk_reads_a_replay(live_run: LiveRun) -> None:
    if sdk_python() is None:
        pytest.skip("no Python >= 3.12 venv with kalshi-sdk here")

    async def go() -> dict[str, Any] | str:
        _, listening = await start_replay(ReplayConfig(live_run.data, speed=1.0))
        try:
            return await run_sdk(listening.url, live_run.keys)
        finally:
            listening.server.close()

    _assert_sdk_ok(asyncio.run(go()))


def test_kalshi_replay_cli_serves_the_session(live_run: LiveRun) -> None:
    args = ["--data-dir", str(live_run.data), "--speed", "max", "--listen", "127.0.0.1:0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "feed.replay", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]

        async def consume() -> list[FeedEvent]:
            out: list[FeedEvent] = []
            async with Client(url, depth=DEPTH) as c:
                async for ev in c:
                    out.append(ev)
                    if isinstance(ev, SessionEnded):
                        break
            return out

        events = asyncio.run(asyncio.wait_for(consume(), 120))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    hello = events[0]
    assert isinstance(hello, Hello) and hello.session_id == live_run.rows[0][0]
    assert _comparable(events) == _comparable(live_run.events_a)

"""A live paper run through the recorder's tap against the simulator, and a replay run of the same
recorded session (in-process and through ``kalshi-paper``), give the same fills for a
deterministic policy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from paper.actor import Decision, Observation
from paper.drivers import RunResult, run_feed, run_replay
from paper.log import read
from paper.policies import SpreadCapture, TakeOnce
from simulator.server import SimConfig, start_in_thread
from tests.feed.tap_run import recorder_with_tap
from tests.recorder.harness import ROOT
from tests.support.sim import lively


class TakeThenQuote:
    """Deterministic: take once per market, then quote inside the spread (maker fills too)."""

    def __init__(self) -> None:
        self.take = TakeOnce(size=100)
        self.quote = SpreadCapture(size=100, min_spread=20_000)

    def on_event(self, obs: Observation) -> Decision | None:
        return self.take.on_event(obs) or self.quote.on_event(obs)


@dataclass
class Runs:
    data: Path
    live: RunResult
    replay: RunResult


Fill = tuple[int, str, int | None, bool | None, int | None, int | None, str | None, int | None]


def _fills(result: RunResult) -> list[Fill]:
    assert result.log_file is not None
    t = pq.read_table(result.log_file).to_pylist()
    return [
        (
            r["record_seq"],
            r["market_ticker"],
            r["order_id"],
            r["yes_buy"],
            r["yes_price"],
            r["size"],
            r["liquidity"],
            r["cash_change"],
        )
        for r in t
        if r["kind"] in ("fill", "settle")
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("paper-live")
    sim = start_in_thread(
        SimConfig(
            keys_dir=base / "keys",
            generator=lively(lifetime="3:5", create_rate=2.0, delta_rate=300.0),
        )
    )
    data = base / "data"
    args = (
        "--duration",
        "10",
        "--tap-wait",  # hold the recording until we are subscribed
        "60",
        "--tap-max-queue",  # never lagged: the comparison needs every event
        "1000000",
    )
    try:
        with recorder_with_tap(sim, data, *args) as (proc, url):
            feed = run_feed(url, TakeThenQuote(), log_dir="auto", idle_timeout_s=60)
            live = asyncio.run(asyncio.wait_for(feed, 120))
            _, err = proc.communicate(timeout=60)
    finally:
        sim.stop()
    assert proc.returncode == 0, err[-3000:]
    replay = asyncio.run(
        asyncio.wait_for(run_replay(data, TakeThenQuote(), log_dir=base / "replay"), 120)
    )
    yield Runs(data, live, replay)


def test_live_and_replay_give_the_same_fills(runs: Runs) -> None:
    # the live paper log went next to the session log, in the data directory the hello named
    assert runs.live.log_file is not None and runs.live.log_file.is_relative_to(runs.data)
    live, replay = _fills(runs.live), _fills(runs.replay)
    assert any(f[6] == "taker" for f in live), "the policy never traded: nothing was compared"
    assert any(f[6] is None for f in live), "no settlement was compared"
    if runs.live.session.ended:  # the live run saw the session's end: everything is equal
        assert live == replay
    else:  # the tap closed with the recorder first: all the live run saw must match
        upto = max(f[0] for f in live)
        assert live == [f for f in replay if f[0] <= upto]


def test_kalshi_paper_cli_replays_a_session(runs: Runs, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "paper",
            "--policy",
            "paper.policies:TakeOnce",
            "--replay",
            str(runs.data),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    table = read(tmp_path)
    kinds = table.column("kind").to_pylist()
    assert kinds.count("fill") >= 1 and summary["log"] is not None
    bad = subprocess.run(
        [sys.executable, "-m", "paper", "--policy", "nope", "--replay", str(runs.data)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "module:Class" in bad.stderr

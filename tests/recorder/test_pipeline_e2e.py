"""Simulator -> recorder -> materialize (PostgreSQL and embedded DuckDB) -> training sets,
checked against the simulator's ground truth."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from schemas.units import parse_price, parse_size
from simulator.faults import FaultConfig
from simulator.groundtruth import truth_books
from tests.recorder.harness import (
    decisions,
    live_decisions,
    read_log,
    start_recorder,
    stop_gracefully,
)
from tests.support.sim import SimFactory
from tests.support.wait import wait_for

TOP_N = 5


def _materialize(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "materialize", "--data-dir", str(data), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _counts(fetch: Any) -> dict[str, Any]:
    return {
        "deltas": fetch("SELECT count(*) FROM rl_orderbook_deltas"),
        "snapshots": fetch("SELECT count(*) FROM rl_orderbook_snapshots"),
        "events": fetch("SELECT count(*) FROM rl_market_lifecycle_events"),
        "joined": fetch("SELECT count(*) FROM rl_market_participation"),
        "left": fetch("SELECT count(*) FROM rl_market_participation WHERE left_at IS NOT NULL"),
        "sessions": fetch("SELECT count(*) FROM rl_orderbook_sessions WHERE ended_at IS NOT NULL"),
        "gaps": fetch("SELECT count(*) FROM rl_sequence_gaps WHERE kind = 'gap'"),
        "mode": fetch("SELECT bool_and(lifecycle_mode) FROM rl_orderbook_sessions"),
    }


def _top(levels: list[list[str]]) -> list[tuple[int, int]]:
    parsed = sorted(((parse_price(p), parse_size(s)) for p, s in levels), reverse=True)
    return parsed[:TOP_N]


@pytest.mark.postgres
def test_recorded_data_loads_exactly_once_and_training_rows_match_truth(
    make_sim: SimFactory, tmp_path: Path, pg_dsn: str
) -> None:
    sim = make_sim(faults=FaultConfig(gap_rate=0.01))
    data = tmp_path / "data"
    proc = start_recorder(sim, data)
    try:  # recorded until it holds what the checks need, however slow the machine is
        wait_for(
            lambda: (
                len(live_decisions(data, "gap")) >= 1
                and len(live_decisions(data, "market_left")) >= 3
            ),
            "a recorded gap and three whole market lives",
        )
    finally:
        _, err = stop_gracefully(proc, timeout=60)
    sim.stop()
    assert proc.returncode == 0, err
    rows = read_log(data)
    want = {
        "deltas": sum(
            1 for r in rows if r["msg_type"] == "orderbook_delta" and r["price"] is not None
        ),
        "snapshots": sum(1 for r in rows if r["msg_type"] == "orderbook_snapshot"),
        "events": sum(1 for r in rows if r["msg_type"] == "market_lifecycle_v2"),
        "joined": len(decisions(rows, "market_joined")),
        "left": len(decisions(rows, "market_left")),
        "sessions": 1,
        "gaps": len(decisions(rows, "gap")),
        "mode": True,
    }
    assert want["gaps"] > 0

    # PostgreSQL, twice: the second run changes nothing
    for _ in range(2):
        m = _materialize(data, "--pg", pg_dsn, "--no-training")
        assert m.returncode == 0, m.stderr
        with psycopg.connect(pg_dsn) as con:
            got = _counts(lambda q: con.execute(q).fetchone()[0])  # type: ignore[index]
        assert got == want
    # participation rows equal the recorder's decisions
    with psycopg.connect(pg_dsn) as con:
        parts = con.execute(
            "SELECT market_ticker, join_reason, mid_lifecycle FROM rl_market_participation"
        ).fetchall()
    assert sorted(parts) == sorted(
        (d["market_ticker"], d["reason"], d["mid_lifecycle"])
        for d in decisions(rows, "market_joined")
    )

    # embedded default, with training sets
    m = _materialize(data)
    assert m.returncode == 0, m.stderr
    duck = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    assert _counts(lambda q: duck.execute(q).fetchone()[0]) == want  # type: ignore[index]
    duck.close()

    # every training row's book equals the simulator's true book after the same change
    train = (
        duckdb.connect()
        .execute(f"SELECT * FROM read_parquet('{data}/training/*/*.parquet') ORDER BY record_seq")
        .fetchall()
    )
    cols = [
        d[0]
        for d in duckdb.connect()
        .execute(f"DESCRIBE SELECT * FROM read_parquet('{data}/training/*/*.parquet')")
        .fetchall()
    ]
    assert train, "some market's whole life was captured"
    truth = truth_books(tmp_path / "truth")
    # the i-th delta frame of (ticker, ts_ms) in the log is the i-th true change at that ms
    by_seq: dict[int, tuple[str, int, int]] = {}
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for r in rows:
        if r["msg_type"] == "orderbook_delta" and r["ts_ms"] is not None:
            key = (r["market_ticker"], r["ts_ms"])
            by_seq[r["record_seq"]] = (*key, seen[key])
            seen[key] += 1
    checked = 0
    for values in train:
        row = dict(zip(cols, values, strict=True))
        if row["record_seq"] not in by_seq:
            continue  # a row from a snapshot: no exchange change to compare with
        ticker, ms, i = by_seq[row["record_seq"]]
        true = truth[(ticker, ms)][i]
        for side in ("yes", "no"):
            mine = [
                (row[f"{side}_bid_price_{k}"], row[f"{side}_bid_size_{k}"])
                for k in range(1, TOP_N + 1)
                if row[f"{side}_bid_price_{k}"] is not None
            ]
            assert mine == _top(true[side]), (ticker, row["record_seq"], side)
        checked += 1
    assert checked > 10  # how many depends on load; every one of them must match

"""Scale-out: two recorder processes, ``--shard 0/2`` and ``--shard 1/2``, one simulator.

Every market created while both were subscribed must be joined by exactly one of them (the one its
ticker hashes to), each session records its shard, and materialize loads both shards from the
shared data directory. No timing thresholds: the test waits for states (both recorders have seen
lifecycle traffic; enough new markets exist), never for a duration.
"""

from __future__ import annotations

from pathlib import Path

from materialize.loader import NoProgress, load
from materialize.targets import DuckDBTarget
from recorder.selection import shard_of
from schemas.tables import PARTICIPATION, SESSIONS
from tests.recorder.harness import (
    decisions,
    metric,
    read_log,
    start_recorder,
    stdout_json,
    stop_gracefully,
)
from tests.support.sim import SimFactory
from tests.support.wait import wait_for

NEW_MARKETS = 12


def test_two_shards_record_every_market_exactly_once(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim()
    data = tmp_path / "data"  # one data directory shared by both processes (per-session locks)
    # --metrics-port 0: each binds any free port and prints it (no bind-then-close race)
    procs = [
        start_recorder(sim, data, "--shard", f"{i}/2", "--metrics-port", "0", "--duration", "600")
        for i in range(2)
    ]
    try:
        urls = [stdout_json(p, "metrics_url") for p in procs]
        # both are subscribed to market_lifecycle_v2 once each has received a lifecycle event
        wait_for(
            lambda: all(metric(u, "recorder_lifecycle_events_total") > 0 for u in urls),
            "both subscribed",
        )
        before = set(sim.tickers())
        wait_for(lambda: len(set(sim.tickers()) - before) >= NEW_MARKETS, "new markets")
        during = set(sim.tickers()) - before  # created while both were connected
    finally:
        outputs = [stop_gracefully(p, timeout=60) for p in procs]
    sim.stop()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err

    rows = read_log(data)
    sessions = sorted({r["session_id"] for r in rows})
    assert len(sessions) == 2
    shard_of_session: dict[int, int] = {}
    joined_by: dict[str, list[int]] = {}
    created_seen: dict[int, set[str]] = {}
    for sid in sessions:
        mine = [r for r in rows if r["session_id"] == sid]
        (start,) = decisions(mine, "session_start")
        i, n = (int(x) for x in start["shard"].split("/"))
        assert n == 2
        shard_of_session[sid] = i
        for d in decisions(mine, "market_joined"):
            joined_by.setdefault(d["market_ticker"], []).append(i)
        created_seen[sid] = {
            r["market_ticker"]
            for r in mine
            if r["msg_type"] == "market_lifecycle_v2" and r["event_type"] == "created"
        }
        skipped = {d["market_ticker"] for d in decisions(mine, "market_skipped")}
        assert all(shard_of(t, 2) != i for t in skipped & during)
    assert sorted(shard_of_session.values()) == [0, 1]  # each session records its own shard

    assert during
    for ticker in during:
        for sid in sessions:  # both recorded the lifecycle event: it is not sharded
            assert ticker in created_seen[sid], (ticker, sid)
        assert joined_by.get(ticker) == [shard_of(ticker, 2)], ticker  # exactly one, the right one

    # materialize loads both shards' segments; participation has one row per market
    target = DuckDBTarget(data / "warehouse.duckdb")
    target.ensure_schema()
    try:
        summary = load(data, target, progress=NoProgress())
        assert not summary.skipped
        shards = target.con.execute(f"SELECT shard FROM {SESSIONS} ORDER BY shard").fetchall()
        per_market = dict(
            target.con.execute(
                f"SELECT market_ticker, count(DISTINCT session_id) FROM {PARTICIPATION} "
                "GROUP BY market_ticker"
            ).fetchall()
        )
    finally:
        target.close()
    assert [s for (s,) in shards] == ["0/2", "1/2"]
    assert all(per_market[t] == 1 for t in during)

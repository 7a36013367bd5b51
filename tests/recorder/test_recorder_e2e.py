"""The recorder CLI against the simulator over real sockets, checked against ground truth."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from schemas.tables import DOCUMENTED_EVENT_TYPES
from simulator.faults import FaultConfig
from simulator.server import SimulatorThread
from simulator.wire import ProtocolOptions
from tests.recorder.harness import (
    decisions,
    ground_truth_frames,
    live_decisions,
    read_log,
    received_by_epoch,
    run_recorder,
    start_recorder,
    stop_gracefully,
)
from tests.support.sim import SimFactory, lively
from tests.support.wait import wait_for


def _assert_prefix_of_truth(rows: list[dict], truth_dir: Path) -> int:
    """Every epoch's recorded frames are exactly what the simulator sent on that connection, in
    order, except what was still in flight when the recorder stopped reading (a tail)."""
    truth = ground_truth_frames(truth_dir)
    got = received_by_epoch(rows)
    assert len(got) == len(truth), (sorted(got), sorted(truth))
    total = 0
    for (_epoch, frames), (_cid, sent) in zip(
        sorted(got.items()), sorted(truth.items()), strict=True
    ):
        assert frames == sent[: len(frames)]
        total += len(frames)
    return total


def _record(sim: SimulatorThread, tmp_path: Path, seconds: str) -> tuple[list[dict], int]:
    """Run the recorder CLI against ``sim`` for ``seconds`` into ``tmp_path/data``, stop the
    simulator, and return the log's rows and how many frames matched the ground truth."""
    data = tmp_path / "data"
    proc = run_recorder(sim, data, "--duration", seconds)
    sim.stop()
    assert proc.returncode == 0, proc.stderr
    rows = read_log(data)
    return rows, _assert_prefix_of_truth(rows, tmp_path / "truth")


def test_whole_lives_are_captured_in_one_session(make_sim: SimFactory, tmp_path: Path) -> None:
    rows, matched = _record(make_sim(), tmp_path, "6")
    assert len({r["session_id"] for r in rows}) == 1
    seqs = [r["record_seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1))
    assert matched > 100

    joined = {d["market_ticker"]: d for d in decisions(rows, "market_joined")}
    left = {d["market_ticker"]: d for d in decisions(rows, "market_left")}
    created = [
        r["market_ticker"]
        for r in rows
        if r["msg_type"] == "market_lifecycle_v2" and r["event_type"] == "created"
    ]
    determined = [
        r["market_ticker"]
        for r in rows
        if r["msg_type"] == "market_lifecycle_v2" and r["event_type"] == "determined"
    ]
    assert created and determined
    assert set(created) == set(joined)
    assert all(joined[t]["reason"] == "created" and not joined[t]["mid_lifecycle"] for t in created)
    # markets born before the recorder connected are never joined: their events are only recorded
    determined = [t for t in determined if t in joined]
    assert determined
    for t in determined:
        assert left[t]["reason"] == "determined"
    # every joined market got a book: a snapshot frame arrived for it
    snap = {r["market_ticker"] for r in rows if r["msg_type"] == "orderbook_snapshot"}
    assert set(determined) <= snap
    # participation order: joined before its first snapshot, left after its determined event
    pos = {(r["msg_type"], r["market_ticker"]): i for i, r in enumerate(rows) if r["kind"] != "out"}
    for t in determined:
        first_snap = next(
            i
            for i, r in enumerate(rows)
            if r["msg_type"] == "orderbook_snapshot" and r["market_ticker"] == t
        )
        assert pos[("market_joined", t)] < first_snap
    assert decisions(rows, "session_end")[0]["reason"] == "duration"
    assert not list((tmp_path / "data" / "live").rglob("*.arrows"))


def test_gaps_are_recorded_and_resynced_without_dropping_frames(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    faults = FaultConfig(gap_rate=0.02, duplicate_rate=0.01, malformed_rate=0.01)
    rows, _ = _record(make_sim(faults=faults), tmp_path, "6")
    gaps = decisions(rows, "gap")
    assert gaps, "the simulator skipped seqs; the recorder must notice"
    assert all(g["got"] > g["expected"] for g in gaps)
    resyncs = decisions(rows, "resync")
    assert resyncs
    # each resynced market gets a fresh snapshot afterwards (unless it left first)
    for i, r in enumerate(rows):
        if r["msg_type"] != "resync":
            continue
        for t in orjson.loads(r["raw"])["market_tickers"]:
            later = [
                x
                for x in rows[i:]
                if x["market_ticker"] == t
                and x["msg_type"] in ("orderbook_snapshot", "market_left")
            ]
            assert later, f"{t} neither re-snapshotted nor left after the resync"
    malformed = [r for r in rows if r["malformed"]]
    assert malformed, "malformed frames must be kept verbatim"
    assert decisions(rows, "stale_seq"), "duplicates are flagged"


def test_reconnect_resubscribes_and_reconciles(make_sim: SimFactory, tmp_path: Path) -> None:
    """The drop comes after the recorder's first ``connected`` record, however long it took to
    start; a market created while handshakes are refused can only be joined late, by REST."""
    sim = make_sim(faults=FaultConfig(reject_after_drop_s=3.0))
    data = tmp_path / "data"
    proc = start_recorder(sim, data)
    try:
        wait_for(lambda: live_decisions(data, "connected"), "the first connected record")
        sim.drop_connections()
        away = sim.create_market()  # handshakes are refused for the next 3 s
        wait_for(
            lambda: any(
                d["market_ticker"] == away and d["reason"] == "late"
                for d in live_decisions(data, "market_joined")
            ),
            f"{away} (created while away) joined late",
        )
    finally:
        _, err = stop_gracefully(proc, timeout=60)
    sim.stop()
    assert proc.returncode == 0, err
    rows = read_log(data)
    _assert_prefix_of_truth(rows, tmp_path / "truth")
    epochs = [d["epoch"] for d in decisions(rows, "connected")]
    assert epochs[:2] == [1, 2]
    assert decisions(rows, "disconnected")
    assert decisions(rows, "reconciled")
    # markets born while we were away: their "created" was missed, REST reconciliation joins
    # them late, saying how late
    late = [d for d in decisions(rows, "market_joined") if d["reason"] == "late"]
    assert away in {d["market_ticker"] for d in late}
    assert late and all(d["late_by_ms"] > 0 for d in late)
    # joined after its open time = mid-lifecycle (its first moments of trading are missing);
    # open_ts is whole seconds and the decision is stamped just after the rule ran: compare only
    # where the answer cannot depend on that rounding
    joined_rows = [x for x in rows if x["msg_type"] == "market_joined" and b'"late"' in x["raw"]]
    for d, r in zip(late, joined_rows, strict=True):
        if (d["open_ts"] + 2) * 10**9 <= r["recv_ns"]:
            assert d["mid_lifecycle"], d
        elif d["open_ts"] * 10**9 > r["recv_ns"]:
            assert not d["mid_lifecycle"], d
    # after the reconnect every market still joined got a fresh snapshot on epoch 2
    reconnect_at = next(
        i for i, r in enumerate(rows) if r["msg_type"] == "connected" and r["epoch"] == 2
    )
    joined_then = set()
    for r in rows[:reconnect_at]:
        if r["msg_type"] == "market_joined":
            joined_then.add(r["market_ticker"])
        elif r["msg_type"] == "market_left":
            joined_then.discard(r["market_ticker"])
    after = rows[reconnect_at:]
    snapped = {r["market_ticker"] for r in after if r["msg_type"] == "orderbook_snapshot"}
    left_after = {r["market_ticker"] for r in after if r["msg_type"] == "market_left"}
    assert joined_then <= snapped | left_after
    assert len({r["session_id"] for r in rows}) == 1


def test_undocumented_and_duplicate_events_are_recorded_only(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    rows, _ = _record(make_sim(generator=lively(undocumented_event_prob=1.0)), tmp_path, "4")
    types = Counter(r["event_type"] for r in rows if r["msg_type"] == "market_lifecycle_v2")
    documented = set(DOCUMENTED_EVENT_TYPES)
    assert set(types) - documented, types
    # a replayed "created" (duplicate) changes nothing: joins == distinct created tickers
    joined = decisions(rows, "market_joined")
    assert len(joined) == len({j["market_ticker"] for j in joined})


@pytest.mark.parametrize(
    "options",
    [
        {"reply_seq": "echo"},
        {"reply_seq": "consume", "lifecycle_seq": True},
        {"empty_side": "empty_list", "duplicate_subscribe": "error"},
        {"seq_start": 7, "max_markets_per_sub": 3},
    ],
    ids=["echo-replies", "lifecycle-seq", "empty-lists", "seq-start-7-small-cap"],
)
def test_every_protocol_variant_records_without_false_gaps(
    make_sim: SimFactory, tmp_path: Path, options: dict[str, object]
) -> None:
    """The uncertain points of docs/protocol.md (§9), each either way: no false gap, nothing
    malformed, every created market joined and given a book."""
    sim = make_sim(protocol=ProtocolOptions(**options))  # type: ignore[arg-type]
    rows, _ = _record(sim, tmp_path, "5")
    assert not decisions(rows, "gap"), "a false gap: replies' seqs were misread"
    assert not any(r["malformed"] for r in rows)
    joins = [r for r in rows if r["msg_type"] == "market_joined"]
    snapped = {r["market_ticker"] for r in rows if r["msg_type"] == "orderbook_snapshot"}
    assert joins
    # a market joined in the last second may still await its snapshot when the run ends
    end_ns = next(r["recv_ns"] for r in rows if r["msg_type"] == "session_end")
    settled_in = {r["market_ticker"] for r in joins if r["recv_ns"] < end_ns - 10**9}
    assert settled_in and settled_in <= snapped

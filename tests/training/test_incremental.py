"""The nightly training build and quality report read only what can still change.

The proof does not time anything: a finished session's files are overwritten with garbage of the
same size and mtime. A build that still opened them would report them as unreadable (or fail);
one that trusts its index gives the same answer as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from materialize.quality import build_quality_report
from materialize.training import TrainingPolicy, build
from schemas.log import Decision
from tests.support.segments import SessionLog
from tests.training.markets import T0, Life, simple_market, started_log, training_log


def _session(session_id: int, ticker: str, *, end: bool = True) -> SessionLog:
    base = T0 + 10_000 * session_id
    log = started_log(session_id, t0_s=base)
    simple_market(log, Life(ticker, created=base, open=base + 100, close=base + 400), step_s=20)
    if end:
        log.session_end()
    return log


def _garble_keeping_stat(paths: list[Path]) -> None:
    for path in paths:
        st = path.stat()
        path.write_bytes(b"\x00" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_finished_sessions_are_not_read_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _session(1, "KX-ONE").write(data, parts=2)
    running = _session(2, "KX-TWO", end=False)
    running.write(data, parts=1)
    policy = TrainingPolicy()
    build(data, tmp_path / "train", policy)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["finished_sessions"] == [1]  # session 2 is still running
    q1 = build_quality_report(data, tmp_path / "q.json")

    _garble_keeping_stat(first)
    third = _session(3, "KX-THREE").write(data, parts=1, date="2027-01-16")
    s = build(data, tmp_path / "train", policy)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert s.skipped_segments == [] and s.included == 1  # only KX-THREE is new
    assert set(manifest["included"]) == {"1/KX-ONE", "2/KX-TWO", "3/KX-THREE"}
    assert manifest["finished_sessions"] == [1, 3]

    q2 = build_quality_report(data, tmp_path / "q.json")
    assert q2.reused_sessions == 2 and q2.skipped_segments == []
    assert [x.session_id for x in q2.sessions] == [1, 2, 3]
    assert q2.sessions[:2] == q1.sessions and q2.markets[:2] == q1.markets

    # a changed file (another size) of a session is read again, and reported if bad
    third[0].write_bytes(b"not parquet")
    q3 = build_quality_report(data, tmp_path / "q.json")
    assert q3.reused_sessions == 2
    assert len(q3.skipped_segments) == 1 and str(third[0]) in q3.skipped_segments[0]


def test_markets_skipped_at_start_are_reported(tmp_path: Path) -> None:
    log = training_log(9)
    log.session_start()
    for ticker, reason in (("KX-OPEN-1", "already_open"), ("KX-OPEN-2", "already_open")):
        log.decision(Decision.MARKET_SKIPPED, {"market_ticker": ticker, "reason": reason})
    log.decision(Decision.MARKET_SKIPPED, {"market_ticker": "KX-OTHER", "reason": "filtered"})
    log.session_end()
    log.write(tmp_path / "data")
    report = build_quality_report(tmp_path / "data", tmp_path / "q.json")
    (s,) = report.sessions
    assert s.skipped_at_start == ["KX-OPEN-1", "KX-OPEN-2"] and s.markets_skipped == 3
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["sessions"][0]["skipped_at_start"] == ["KX-OPEN-1", "KX-OPEN-2"]

"""Data-quality report numbers on a hand-built session."""

from __future__ import annotations

import json
from pathlib import Path

from materialize.quality import build_quality_report, coverage, render
from tests.support.segments import NS
from tests.training.markets import Life, create, determine, started_log


def test_quality_report_numbers(tmp_path: Path) -> None:
    log = started_log(7)
    full = Life("KX-FULL")
    create(log, full)  # joined at creation, before open: the whole life is covered
    late = Life("KX-LATE")
    log.at(late.open + 500)  # joined half-way through its life
    log.join(late.ticker, reason="adopted", mid_lifecycle=True)
    log.lifecycle(late.ticker, "created", open_ts=late.open, close_ts=late.close)
    log.book_snapshot(full.ticker, {400_000: 1}, {})
    log.book_snapshot(late.ticker, {400_000: 1}, {})
    for _ in range(5):
        log.book_delta(full.ticker, "yes", 400_000, 1)
    log.book_delta(full.ticker, "yes", 400_000, 1, skip=1)
    log.gap(2, 8, 9, [full.ticker, late.ticker])
    log.resync(2, [full.ticker, late.ticker])
    log.malformed_frame()
    log.reconnect()
    log.book_snapshot(full.ticker, {400_000: 1}, {})
    determine(log, full)
    log.at(late.close + 0.5)
    log.lifecycle(late.ticker, "determined", result="no", determination_ts=late.close)
    log.session_end()
    log.write(tmp_path / "data", parts=3)
    out = tmp_path / "quality.json"
    report = build_quality_report(tmp_path / "data", out)

    (s,) = report.sessions
    assert (s.session_id, s.records, s.record_seq_holes) == (7, len(log.records), 0)
    assert (s.connects, s.reconnects, s.disconnects) == (2, 1, 1)
    assert (s.gaps, s.resyncs, s.malformed, s.markets_joined, s.ended) == (1, 1, 1, 2, True)
    assert s.decisions == sum(r["kind"] == "decision" for r in log.records)
    by = {m.market_ticker: m for m in report.markets}
    assert by["KX-FULL"].coverage == 1.0 and by["KX-FULL"].left_ns is not None
    assert by["KX-LATE"].coverage == 0.5 and by["KX-LATE"].mid_lifecycle
    assert (by["KX-FULL"].snapshots, by["KX-FULL"].deltas, by["KX-FULL"].gaps) == (2, 6, 1)
    assert by["KX-LATE"].resyncs == 1
    saved = json.loads(out.read_text())
    assert saved["sessions"][0]["gaps"] == 1 and len(saved["markets"]) == 2
    text = render(report)
    assert "KX-LATE" in text and "50.0%" in text and "100.0%" in text
    short = render(report, max_markets=1)  # the worse market only, and how many more there are
    assert "KX-LATE" in short and "KX-FULL" not in short and "and 1 more market(s)" in short


def test_coverage_edges() -> None:
    assert coverage(0, 10 * NS, 2 * NS, 6 * NS) == 1.0
    assert coverage(4 * NS, 10 * NS, 2 * NS, 6 * NS) == 0.5
    assert coverage(8 * NS, 10 * NS, 2 * NS, 6 * NS) == 0.0

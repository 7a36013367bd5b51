"""The one segment builder of the tests: synthetic session logs sealed as real segments.

The builder itself (:class:`SessionLog`, :func:`write_segments`, bulk deltas) is
``bench/synthetic_log.py``, shared with the benchmarks (``bench/`` never imports ``tests/``);
this module adds the test scenarios that know what the tables must hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.synthetic_log import (
    NS,
    T0_NS,
    ExpectedParticipation,
    SessionLog,
    bulk_delta_table,
    contracts,
    dollars,
    segment_path,
    write_bulk_deltas,
    write_segments,
    write_table,
)

__all__ = [
    "NS",
    "SESSION_A",
    "SESSION_B",
    "T0_NS",
    "ExpectedParticipation",
    "Scenario",
    "SessionLog",
    "build_scenario",
    "bulk_delta_table",
    "contracts",
    "dollars",
    "segment_path",
    "write_bulk_deltas",
    "write_segments",
    "write_table",
]


# ------------------------------------------------------------------------------------------------
# A realistic scenario: two sessions, several segments, every record kind the loader maps.
# ------------------------------------------------------------------------------------------------

SESSION_A = 1_767_225_600_123_0001
SESSION_B = 1_767_312_000_456_0002


@dataclass
class Scenario:
    logs: list[SessionLog]
    paths: list[Path]

    def total(self, key: str) -> int:
        return sum(log.expected[key] for log in self.logs)

    @property
    def participation(self) -> list[ExpectedParticipation]:
        return [p for log in self.logs for p in log.participation]


def build_scenario(data_dir: Path) -> Scenario:
    """Session A: 3 segments, M2's leave and the session end only in the last one.

    Session B: a later run that recovered A's leftovers, adopted a market mid-lifecycle and is
    still running (no end, market still open).
    """
    a = SessionLog(SESSION_A)
    a.session_start()
    a.connected()
    a.command(1, "subscribe", {"channels": ["market_lifecycle_v2"]})
    a.lifecycle("KXA-M1", "created", open_ts=1_767_225_600, close_ts=1_767_230_000)
    a.join("KXA-M1")
    a.command(2, "subscribe", {"channels": ["orderbook_delta"], "market_tickers": ["KXA-M1"]})
    a.snapshot(
        "KXA-M1",
        2,
        1,
        yes=[["0.4500", "100.00"], ["0.0085", "2.50"], ["0.0800", "300.00"]],
        no=[["0.5000", "10.67"]],
    )
    for i in range(40):
        a.delta(
            "KXA-M1", 2, 2 + i, "yes" if i % 2 else "no", "0.0085", "2.50" if i % 3 else "-1.25"
        )
    a.lifecycle("KXA-M2", "created", open_ts=1_767_225_700, close_ts=1_767_240_000)
    a.join("KXA-M2", late_by_ms=1500, reason="late")
    a.command(3, "update_subscription", {"sids": [2], "market_tickers": ["KXA-M2"]})
    a.ok(3, 2, 42)
    a.snapshot("KXA-M2", 2, 43, yes=None, no=[["0.9915", "1.00"]])  # yes side key absent
    a.delta("KXA-M2", 2, 44, "yes", "0.0100", "5.00")
    cut1 = len(a.records)
    a.gap(2, 45, 47, ["KXA-M1", "KXA-M2"])
    a.delta("KXA-M1", 2, 47, "yes", "0.4500", "-100.00")
    a.stale(2, 47, 46)
    a.snapshot("KXA-M1", 2, 48, yes=[["0.0800", "300.00"]], no=[])
    a.malformed_frame(b'{"type":"orderbook_delta","sid":2,"seq":49,"msg":{"price_dollars":', None)
    a.lifecycle("KXA-M1", "close_date_updated", close_ts=1_767_229_000)
    a.lifecycle("KXA-M1", "brand_new_event_type", detail="exchange added this")
    a.lifecycle(
        "KXA-M1",
        "determined",
        result="yes",
        determination_ts=1_767_229_500,
        settlement_value="1.0000",
    )
    a.leave("KXA-M1")
    cut2 = len(a.records)
    a.lifecycle("KXA-M1", "settled", settled_ts=1_767_233_100)
    a.lifecycle(
        "KXA-M2",
        "determined",
        result="no",
        determination_ts=1_767_239_000,
        settlement_value="0.0085",
    )
    a.leave("KXA-M2")
    a.loss("exchange error 25")
    a.session_end("signal")

    b = SessionLog(SESSION_B, start_ns=T0_NS + 86_400_000_000_000)
    b.recovered([SESSION_A], ["live/session_id=1/part-x.arrows"])
    b.session_start(lifecycle_mode=True, shard="1/2")
    b.lifecycle(
        "KXB-M3",
        "created",
        open_ts=1_767_312_000,
        close_ts=1_767_400_000,
        msg_type="market_lifecycle_v2",
    )
    b.join("KXB-M3", "adopted", mid_lifecycle=True)
    b.snapshot("KXB-M3", 5, 1, yes=[["0.2000", "1.00"]], no=[["0.7000", "0.01"]])
    b.delta("KXB-M3", 5, 2, "no", "0.7000", "0.99")
    b.lifecycle("KXMVE-M4", "created", msg_type="multivariate_market_lifecycle", open_ts=1)

    paths = write_segments(data_dir, a, [cut1, cut2]) + write_segments(data_dir, b)
    return Scenario([a, b], paths)

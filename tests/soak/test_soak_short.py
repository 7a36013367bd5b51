"""A short fault-injection soak (``bench.soak``): every simulator fault on, ``kill -9`` of the
recorder at random moments with restarts, materialize, then the log, the warehouse and the
training set verified against the simulator's ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import SoakConfig, materialize, run_soak
from bench.verify import render, verify


@pytest.mark.slow
def test_short_soak_loses_nothing_outside_kill_windows(tmp_path: Path) -> None:
    run = run_soak(SoakConfig(seconds=40, seed=11, kill_every=12), tmp_path)
    assert run.kills, "at least one kill -9"
    assert materialize(run) == 0, run.materialize_out
    assert [p.how for p in run.procs][-1] == "stop", [(p.how, p.stderr_tail) for p in run.procs]
    report = verify(run)
    table = render(run, report)
    print(table)
    # every fault kind really happened (subscribe errors are drawn per subscribe command, of
    # which a short run has only a dozen or so: not asserted, shown in the table)
    for kind in ("gaps", "duplicates", "malformed", "stalls", "bursts", "lifecycle_delayed"):
        assert run.faults[kind] > 0, (kind, table)
    assert run.faults["drops"] + run.faults["rejected_handshakes"] > 0, table
    assert report.failures == [], table
    assert report.lost_outside_kill_windows == 0, table
    assert report.book_mismatches == 0, table
    # how many whole lives fit between kills depends on the machine's load (47 to 600+ seen):
    # the check must have run, its size is shown in the table
    assert report.books_checked > 0, table
    assert report.rows_in_gap_spans == 0, table
    assert report.sessions == len(run.procs), table
    assert report.sessions_recovered == len(run.kills), table
    assert report.sessions_crash_closed == len(run.kills), table
    assert report.gap_decisions == report.gaps_in_table, table

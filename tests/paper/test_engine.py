"""The paper session (sans-I/O) and the crash-safe paper log."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feed.events import BookUpdate, FeedEvent
from paper.actor import Actor, Decision, Observation
from paper.engine import PaperSession, PolicyError, Row
from paper.log import LIVE, PaperLog, read, recover
from paper.policies import DoNothing, SpreadCapture, TakeOnce
from tests.paper.feedgen import M, session


def run(actor: Actor, events: list[FeedEvent]) -> tuple[PaperSession, list[Row]]:
    s = PaperSession(actor)
    rows: list[Row] = []
    for ev in events:
        rows += s.handle(ev)
    return s, rows


def test_do_nothing_never_trades() -> None:
    s, rows = run(DoNothing(), session())
    assert rows == [] and s.broker.cash == s.broker.starting_cash


def test_take_once_buys_at_the_ask_and_is_settled_by_the_result() -> None:
    events = session(n_markets=2)
    s, rows = run(TakeOnce(size=100), events)
    fills = [r.report for r in rows if r.report.kind == "fill"]
    settles = [r.report for r in rows if r.report.kind == "settle"]
    assert len(fills) == 2 and all(f.liquidity == "taker" for f in fills)
    assert [x.size for x in settles] == [100, 100]
    # market 0 settles yes (+$1 per contract), market 1 no ($0): cash is exact
    spent = sum(f.charge.cash_change if f.charge else 0 for f in fills)
    assert s.broker.cash == s.broker.starting_cash + spent + M
    assert s.broker.equity() == s.broker.cash  # flat after settlement


def test_spread_capture_is_deterministic_and_never_trades_an_invalid_book() -> None:
    events = session(n_markets=2, steps=400)
    _, rows_a = run(SpreadCapture(), events)
    _, rows_b = run(SpreadCapture(), events)
    assert [r.report for r in rows_a] == [r.report for r in rows_b]
    assert any(r.report.kind == "order" for r in rows_a)
    # the same stream with one market's book invalid throughout (never anchored): the feed marks
    # every update of it invalid; no order is ever accepted there
    t0 = "KXT-26JAN01-M0"
    bad = [
        dataclasses.replace(e, valid=False)
        if isinstance(e, BookUpdate) and e.market_ticker == t0
        else e
        for e in events
    ]
    s = PaperSession(SpreadCapture())
    accepted = []
    for ev in bad:
        for r in s.handle(ev):
            if r.report.market_ticker == t0 and r.report.kind in ("order", "fill"):
                accepted.append(r)
    assert s.events == len(bad) and any(r.report.kind == "order" for r in rows_a)
    assert accepted == []


def test_paper_log_round_trips_and_survives_a_kill(tmp_path: Path) -> None:
    s = PaperSession(TakeOnce())
    log = PaperLog(tmp_path, run_id=7, flush_every=10)
    n = 0
    for ev in session(n_markets=2, steps=400):
        rows = s.handle(ev)
        log.session_id = s.session_id
        log.append(rows)
        n += len(rows)
    log.flush()
    # a copy of the live file as a kill -9 would leave it, plus a torn half batch
    crashed = tmp_path / "crashed"
    (crashed / LIVE).mkdir(parents=True)
    copy = crashed / LIVE / "run_id=7.arrows"
    shutil.copy(log.live_file, copy)
    with open(copy, "ab") as f:
        f.write(b"\xff\xff\xff\xff\x10\x00")
    sealed = log.close()
    assert sealed is not None and not log.live_file.exists()
    table = read(tmp_path)
    assert table.num_rows == n > 0
    assert table.column("seq").to_pylist() == list(range(1, n + 1))
    assert set(table.column("kind").to_pylist()) >= {"order", "fill", "settle", "mark"}
    assert table.column("session_id")[0].as_py() == 42
    kept = recover(crashed)
    assert len(kept) == 1 and not copy.exists()
    rec = pq.read_table(kept[0])
    assert 0 < rec.num_rows <= n and rec.column("seq").to_pylist() == list(
        range(1, rec.num_rows + 1)
    )
    assert not list((tmp_path / "paper" / "segments").rglob("*.tmp"))


class _Raises:
    def on_event(self, obs: Observation) -> Decision | None:
        if obs.event == "book":
            raise KeyError("boom")
        return None


class _ReturnsAList:
    def on_event(self, obs: Observation) -> Decision | None:
        return [] if obs.event == "book" else None  # type: ignore[return-value]


def test_a_failing_policy_is_named_with_where_it_failed() -> None:
    with pytest.raises(PolicyError, match=r"_Raises raised KeyError on KXT-26JAN01-M0 \(book"):
        run(_Raises(), session(n_markets=1))
    with pytest.raises(PolicyError, match=r"must return paper\.actor\.Decision"):
        run(_ReturnsAList(), session(n_markets=1))

"""Training-set build on hand-built sessions: phases, sampling, validity, exclusions, increments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from materialize.sampling import (
    Phase,
    SamplingPolicy,
    grid_offset_ns,
)
from materialize.training import build_training_sets, row_schema
from tests.support.oracles import phase_of, sample_reference
from tests.support.segments import NS, SessionLog
from tests.training.markets import (
    T0,
    Life,
    build_sets,
    create,
    determine,
    gapped_delta,
    opened,
    simple_market,
    started_log,
    steady_book,
)


def _build(
    tmp: Path, log: SessionLog | None = None, out: str = "train", **policy: Any
) -> tuple[Any, pl.DataFrame, dict[str, Any]]:
    """:func:`build_sets` with markets of no valid book state dropped (``min_updates=1``)."""
    return build_sets(tmp, log, out, **{"min_updates": 1, **policy})


def test_phase_boundaries_fall_exactly_at_20_and_80_percent(tmp_path: Path) -> None:
    life = Life("KX-PHASE")
    log = started_log()
    steady_book(log, life, deltas=0)
    life_ns = life.end_ns - life.open_ns
    marks = {}
    for name, t_ns in {
        "early_last": life.open_ns + life_ns // 5 - 1,
        "middle_first": life.open_ns + life_ns // 5,
        "middle_last": life.open_ns + 4 * life_ns // 5 - 1,
        "late_first": life.open_ns + 4 * life_ns // 5,
    }.items():
        log.now_ns = t_ns
        marks[name] = log.book_delta(life.ticker, "yes", 410_000, 100)
    determine(log, life)
    _, rows, _ = _build(tmp_path, log, middle_every_s=0.5)
    phase = dict(zip(rows["record_seq"], rows["phase"], strict=True))
    assert phase[marks["early_last"]] == Phase.EARLY
    assert phase[marks["middle_first"]] == Phase.MIDDLE
    assert phase[marks["middle_last"]] == Phase.MIDDLE
    assert phase[marks["late_first"]] == Phase.LATE
    lf = dict(zip(rows["record_seq"], rows["life_fraction"], strict=True))
    # the float column is for reading; the phase itself is decided in exact integers
    assert (
        abs(lf[marks["middle_first"]] - 0.2) < 1e-12 and abs(lf[marks["late_first"]] - 0.8) < 1e-12
    )


def test_middle_phase_follows_the_seeded_rule(tmp_path: Path) -> None:
    life = Life("KX-MID")
    log = started_log()
    simple_market(log, life, step_s=0.25)
    log.session_end()
    _, rows, manifest = _build(tmp_path, log, seed=7, middle_every_s=1.0)
    # every valid update of the market, in order: the snapshot and every delta
    updates = [
        (r["record_seq"], r["recv_ns"])
        for r in log.records
        if r["market_ticker"] == life.ticker
        and r["msg_type"] in ("orderbook_snapshot", "orderbook_delta")
    ]
    policy = SamplingPolicy(seed=7, middle_every_s=1.0)
    offset = grid_offset_ns(policy, 1, life.ticker)
    kept = sample_reference(
        [t for _, t in updates], life.open_ns, life.end_ns, offset, policy.every_ns
    )
    assert rows["record_seq"].to_list() == [updates[i][0] for i in kept]
    middle = rows.filter(pl.col("phase") == Phase.MIDDLE)
    assert 590 <= middle.height <= 601  # one per second of the 600 s middle
    early = rows.filter(pl.col("phase") == Phase.EARLY)
    assert early.height == 4 * 200  # every update kept
    assert manifest["policy"]["seed"] == 7 and manifest["seed"] == 7
    assert manifest["policy"]["rule"] == "last_state_per_interval_seeded_grid"
    assert all(
        phase_of(t, life.open_ns, life.end_ns) == p
        for t, p in zip(rows["t_ns"], rows["phase"], strict=True)
        if p != "pre_open"
    )


def test_same_seed_same_rows_other_seed_differs(tmp_path: Path) -> None:
    log = started_log()
    simple_market(log, Life("KX-SEED"), step_s=0.25)
    log.write(tmp_path / "data")
    _, a, _ = _build(tmp_path, out="a", seed=1)
    _, b, _ = _build(tmp_path, out="b", seed=1)
    assert a.equals(b)
    others = [_build(tmp_path, out=f"s{s}", seed=s)[1] for s in (2, 3, 4)]
    assert any(o["record_seq"].to_list() != a["record_seq"].to_list() for o in others)


def test_rows_have_the_declared_layout(tmp_path: Path) -> None:
    """The files hold exactly ``row_schema(top_n)`` (which the views show before any build)."""
    log = started_log()
    simple_market(log, Life("KX-LAYOUT"), step_s=0.5)
    for top_n in (5, 2):
        _, rows, _ = _build(tmp_path, log, out=f"n{top_n}", top_n=top_n)
        assert rows.height > 0
        declared = pl.DataFrame(row_schema(top_n).empty_table()).schema
        assert rows.schema == declared, top_n


def test_gap_without_snapshot_excludes_the_market(tmp_path: Path) -> None:
    life = Life("KX-GAP")
    log = started_log()
    steady_book(log, life, deltas=20)
    gapped_delta(log, [life.ticker], skip=2)
    log.resync(2, [life.ticker])
    log.at(life.open + 500)
    log.book_delta(life.ticker, "no", 500_000, 100)
    determine(log, life)
    summary, rows, manifest = _build(tmp_path, log)
    assert summary.included == 0 and rows.height == 0
    assert manifest["excluded"]["1/KX-GAP"]["reason"] == "unrecovered_gap"


def test_a_gap_whose_market_list_is_not_a_list_invalidates_its_whole_sid(tmp_path: Path) -> None:
    """A ``gap`` payload naming its markets as a bare string (not the struct's list) must not be
    read as one market per character: the sid it names is invalid as a whole."""
    life = Life("KX-GAP")
    log = started_log()
    steady_book(log, life, deltas=20)
    log.book_delta(life.ticker, "yes", 400_000, 100, skip=2)
    log.gap(2, log.seqs[2] - 2, log.seqs[2], life.ticker)  # type: ignore[arg-type]
    log.at(life.open + 500)
    log.book_delta(life.ticker, "no", 500_000, 100)
    determine(log, life)
    summary, _rows, manifest = _build(tmp_path, log)
    assert summary.included == 0
    assert manifest["excluded"]["1/KX-GAP"]["reason"] == "unrecovered_gap"


def test_gap_then_snapshot_drops_only_the_invalid_span(tmp_path: Path) -> None:
    life = Life("KX-HEAL")
    other = Life("KX-OTHER")  # same sid: the gap invalidates it too, its own snapshot heals it
    log = started_log()
    create(log, life)
    create(log, other)
    log.at(life.open + 1)
    log.book_snapshot(life.ticker, {400_000: 100}, {500_000: 100})
    log.book_snapshot(other.ticker, {300_000: 100}, {600_000: 100})
    for k in range(10):
        log.at(life.open + 10 + k)
        log.book_delta(life.ticker, "yes", 400_000, 100)
    log.at(life.open + 30)
    gapped = gapped_delta(log, [life.ticker, other.ticker], skip=3)
    inside = [log.book_delta(life.ticker, "no", 500_000, 50) for _ in range(3)]
    inside.append(log.book_delta(other.ticker, "no", 600_000, 50))
    log.at(life.open + 40)
    healed = log.book_snapshot(life.ticker, {400_000: 7}, {500_000: 9})
    after = log.book_delta(life.ticker, "yes", 400_000, 1)
    log.book_delta(other.ticker, "no", 600_000, 50)  # still invalid: no snapshot for other yet
    log.at(life.open + 50)
    log.book_snapshot(other.ticker, {300_000: 1}, {600_000: 1})
    determine(log, life)
    determine(log, other)
    summary, rows, manifest = _build(tmp_path, log)
    assert summary.included == 2
    seqs = set(rows.filter(pl.col("market_ticker") == life.ticker)["record_seq"].to_list())
    assert gapped not in seqs and not seqs & set(inside)
    assert {healed, after} <= seqs
    row = rows.filter(pl.col("record_seq") == after).row(0, named=True)
    assert (row["yes_bid_price_1"], row["yes_bid_size_1"], row["no_bid_size_1"]) == (400_000, 8, 9)
    other_rows = rows.filter(pl.col("market_ticker") == other.ticker)
    assert other_rows.filter(pl.col("record_seq").is_between(gapped, healed + 2)).height == 0
    assert manifest["included"]["1/KX-HEAL"]["dropped_events"] == 1 + 3


def test_mid_lifecycle_market_is_excluded_with_reason(tmp_path: Path) -> None:
    log = started_log()
    simple_market(log, Life("KX-OK"))
    adopted = Life("KX-ADOPTED")
    create(log, adopted, reason="adopted", mid=True)
    log.book_snapshot(adopted.ticker, {400_000: 100}, {})
    determine(log, adopted)
    undetermined = Life("KX-OPEN")
    create(log, undetermined)
    summary, _, manifest = _build(tmp_path, log)
    assert manifest["excluded"]["1/KX-ADOPTED"]["reason"] == "mid_lifecycle"
    assert manifest["pending"]["1/KX-OPEN"]["reason"] == "never_determined"
    assert "1/KX-OK" in manifest["included"]
    assert (summary.included, summary.excluded, summary.pending) == (1, 1, 1)


def test_exact_subpenny_and_fractional_values_survive(tmp_path: Path) -> None:
    life = Life("KX-EXACT")
    log = started_log()
    opened(log, life, {8_500: 250}, {415_000: 1})  # $0.0085 x 2.50, NO bid $0.4150
    log.at(life.open + 2)
    r = log.book_delta(life.ticker, "yes", 8_600, 1)  # $0.0086 x 0.01
    determine(log, life, result="no", value=0)
    _, rows, _ = _build(tmp_path, log)
    row = rows.filter(pl.col("record_seq") == r).row(0, named=True)
    assert row["yes_bid_price_1"] == 8_600 and row["yes_bid_size_1"] == 1
    assert row["yes_bid_price_2"] == 8_500 and row["yes_bid_size_2"] == 250
    assert row["yes_bid_price_3"] is None and row["yes_bid_size_3"] is None
    assert row["best_yes_ask"] == 585_000 and row["best_yes_bid"] == 8_600
    assert row["mid_x2"] == 593_600 and row["spread"] == 576_400
    assert row["yes_depth"] == 251 and row["no_depth"] == 1
    assert row["label_result"] == "no" and row["label_settlement_value"] == 0
    assert rows.schema["yes_bid_price_1"] == pl.Int64


def test_time_to_close_uses_only_the_close_known_then(tmp_path: Path) -> None:
    life = Life("KX-CLOSE")
    log = started_log()
    opened(log, life, {400_000: 100}, {500_000: 100})
    log.at(life.open + 100)
    before = log.book_delta(life.ticker, "yes", 400_000, 1)
    log.at(life.open + 150)
    log.lifecycle(life.ticker, "close_date_updated", close_ts=life.close - 300)
    log.at(life.open + 200)
    after = log.book_delta(life.ticker, "yes", 400_000, 1)
    determine(log, life)
    _, rows, _ = _build(tmp_path, log)
    ttc = dict(zip(rows["record_seq"], rows["time_to_close_s"], strict=True))
    assert ttc[before] == life.close - (life.open + 100)
    assert ttc[after] == life.close - 300 - (life.open + 200)


def test_stale_duplicate_delta_is_dropped(tmp_path: Path) -> None:
    life = Life("KX-STALE")
    log = started_log()
    opened(log, life, {400_000: 100}, {})
    first = log.book_delta(life.ticker, "yes", 400_000, 5)
    dup = log.book_delta(life.ticker, "yes", 400_000, 5, seq=log.seqs[2])
    log.stale(2, log.seqs[2], log.seqs[2])  # the recorder's verdict on it
    last = log.book_delta(life.ticker, "yes", 400_000, 1)
    determine(log, life)
    _, rows, _ = _build(tmp_path, log)
    sizes = dict(zip(rows["record_seq"], rows["yes_bid_size_1"], strict=True))
    assert dup not in sizes and sizes[first] == 105 and sizes[last] == 106


def test_incremental_build_does_not_rebuild_old_markets(tmp_path: Path) -> None:
    log = started_log()
    a = Life("KX-A", close=T0 + 500)
    simple_market(log, a)
    cut = len(log.records)
    b = Life("KX-B", created=T0 + 400, open=T0 + 450, close=T0 + 900)
    simple_market(log, b)
    log.session_end()
    data = tmp_path / "data"
    log.write(data, hi=cut)
    s1 = build_training_sets(data, tmp_path / "train")
    assert (s1.included, s1.pending) == (1, 0)  # B not even joined yet in the first segment
    first = tmp_path / "train" / "build=1" / "part-0.parquet"
    stamp = first.stat().st_mtime_ns
    log.write(data, lo=cut)
    s2 = build_training_sets(data, tmp_path / "train")
    assert (s2.included, s2.build_id, s2.total_included) == (1, 2, 2)
    assert first.stat().st_mtime_ns == stamp
    second = pl.read_parquet(tmp_path / "train" / "build=2" / "part-0.parquet")
    assert second["market_ticker"].unique().to_list() == ["KX-B"]
    s3 = build_training_sets(data, tmp_path / "train")
    assert (s3.included, s3.rows, s3.deltas_replayed) == (0, 0, 0)
    glob = str(tmp_path / "train" / "*" / "*.parquet")
    rel = duckdb.sql(
        f"SELECT market_ticker, count(*) FROM read_parquet('{glob}') GROUP BY 1 ORDER BY 1"
    )
    assert rel is not None
    counts = rel.fetchall()
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert counts == [(k, manifest["included"][f"1/{k}"]["rows"]) for k in ("KX-A", "KX-B")]
    assert pl.scan_parquet(glob).select(pl.len()).collect().item() == sum(c for _, c in counts)


def test_policy_change_starts_over(tmp_path: Path) -> None:
    log = started_log()
    simple_market(log, Life("KX-P"))
    log.write(tmp_path / "data")
    build_training_sets(tmp_path / "data", tmp_path / "train", seed=1)
    s = build_training_sets(tmp_path / "data", tmp_path / "train", seed=2)
    assert s.included == 1 and s.build_id == 1
    assert [p.name for p in (tmp_path / "train").glob("build=*")] == ["build=1"]


def test_too_few_updates_and_no_book(tmp_path: Path) -> None:
    log = started_log()
    thin = Life("KX-THIN")
    create(log, thin)
    log.book_snapshot(thin.ticker, {400_000: 1}, {})
    determine(log, thin)
    bare = Life("KX-BARE")
    create(log, bare)
    determine(log, bare)
    _, _, manifest = _build(tmp_path, log, min_updates=5)
    assert manifest["excluded"]["1/KX-THIN"]["reason"] == "too_few_updates"
    assert manifest["excluded"]["1/KX-BARE"]["reason"] == "no_book"
    assert NS  # units helper in use


def test_seq_numbers_alone_decide_nothing(tmp_path: Path) -> None:
    """The recorder's sequence rule is the only one: a seq jump it did not call a gap (no
    ``gap`` decision) leaves the book valid here; the gap decision is what invalidates it."""
    built = {}
    for with_decision in (False, True):
        life = Life("KX-SEQ")
        log = started_log()
        opened(log, life, {400_000: 100}, {})
        jumped = log.book_delta(life.ticker, "yes", 400_000, 5, skip=4)
        if with_decision:
            log.gap(2, log.seqs[2] - 4, log.seqs[2], [life.ticker])
        log.book_delta(life.ticker, "yes", 400_000, 1)
        determine(log, life)
        _, rows, manifest = _build(tmp_path / str(with_decision), log)
        kept = set(rows["record_seq"].to_list()) if rows.height else set()
        built[with_decision] = (jumped in kept, manifest)
    assert built[False][0] and "1/KX-SEQ" in built[False][1]["included"]
    assert not built[True][0]
    assert built[True][1]["excluded"]["1/KX-SEQ"]["reason"] == "unrecovered_gap"

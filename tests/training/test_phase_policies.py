"""Issue 12 on the training side: phase policies exact at their boundaries and recorded in the
manifest, labels that follow the last determination, never-traded markets kept and flagged."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from materialize.__main__ import main
from materialize.sampling import (
    NS_PER_HOUR,
    Phase,
    PhasePolicy,
    phase_cuts,
)
from tests.support.oracles import phase_of
from tests.support.segments import NS
from tests.training.markets import (
    T0,
    Life,
    build_sets,
    create,
    determine,
    opened,
    simple_market,
    started_log,
    training_log,
)

HOUR = 3600


def _phase_via_cuts(t: int, open_ns: int, end_ns: int, policy: PhasePolicy) -> str:
    early_until, late_from = phase_cuts(open_ns, end_ns, policy)
    if t < open_ns:
        return Phase.PRE_OPEN
    if t < early_until:
        return Phase.EARLY
    return Phase.MIDDLE if t < late_from else Phase.LATE


policies = st.builds(
    PhasePolicy,
    kind=st.sampled_from(["fractions", "absolute", "union"]),
    early_fraction=st.fractions(0, 1, max_denominator=1000),
    late_fraction=st.fractions(0, 1, max_denominator=1000),
    first_hours=st.fractions(0, 48, max_denominator=3600),
    last_hours=st.fractions(0, 48, max_denominator=3600),
)


@given(
    policy=policies,
    open_ns=st.integers(1_700_000_000 * NS, 1_900_000_000 * NS),
    life=st.integers(1, 400 * 86_400 * NS),  # up to a 400-day life: no int64 overflow anywhere
    at=st.integers(-(10**12), 401 * 86_400 * NS),
)
def test_vectorised_cuts_agree_with_the_definition(
    policy: PhasePolicy, open_ns: int, life: int, at: int
) -> None:
    end_ns = open_ns + life
    for t in (open_ns + at, *phase_cuts(open_ns, end_ns, policy)):
        for tt in (t - 1, t, t + 1):
            assert _phase_via_cuts(tt, open_ns, end_ns, policy) == phase_of(
                tt, open_ns, end_ns, policy
            )


def test_boundaries_of_each_policy() -> None:
    o = 1_800_000_000 * NS
    end = o + 10 * NS_PER_HOUR  # a ten-hour life
    frac = PhasePolicy()
    assert (frac.early_fraction, frac.late_fraction) == (Fraction(1, 5), Fraction(1, 5))
    assert phase_of(o - 1, o, end, frac) == Phase.PRE_OPEN
    assert phase_of(o + 2 * NS_PER_HOUR - 1, o, end, frac) == Phase.EARLY
    assert phase_of(o + 2 * NS_PER_HOUR, o, end, frac) == Phase.MIDDLE
    assert phase_of(o + 8 * NS_PER_HOUR - 1, o, end, frac) == Phase.MIDDLE
    assert phase_of(o + 8 * NS_PER_HOUR, o, end, frac) == Phase.LATE
    ab = PhasePolicy(kind="absolute", first_hours=Fraction(1), last_hours=Fraction(6))
    assert phase_of(o + NS_PER_HOUR - 1, o, end, ab) == Phase.EARLY
    assert phase_of(o + NS_PER_HOUR, o, end, ab) == Phase.MIDDLE
    assert phase_of(end - 6 * NS_PER_HOUR - 1, o, end, ab) == Phase.MIDDLE
    assert phase_of(end - 6 * NS_PER_HOUR, o, end, ab) == Phase.LATE
    un = PhasePolicy(kind="union", first_hours=Fraction(1), last_hours=Fraction(6))
    # early: the wider of [0, 2 h) and [0, 1 h); late: the wider of [8 h, ..) and [4 h, ..)
    assert phase_cuts(o, end, un) == (o + 2 * NS_PER_HOUR, o + 4 * NS_PER_HOUR)
    # decimals are taken as written: 0.1 is exactly one tenth of the life
    tenth = PhasePolicy(early_fraction=Fraction("0.1"), late_fraction=Fraction("0.1"))
    assert phase_cuts(o, o + 10, tenth) == (o + 1, o + 9)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="early_fraction"):
        PhasePolicy(early_fraction=Fraction(3, 2))
    with pytest.raises(ValueError, match="phase policy"):
        PhasePolicy(kind="weekly")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["absolute", "union"])
def test_absolute_windows_are_exact_in_a_build(tmp_path: Path, kind: str) -> None:
    life = Life("KX-ABS", created=T0, open=T0 + 100, close=T0 + 100 + 10 * HOUR)
    log = started_log()
    opened(log, life, {400_000: 100}, {500_000: 100})
    marks = {}
    for name, t_ns in {
        "early_last": life.open_ns + NS_PER_HOUR - 1,
        "middle_first": life.open_ns + max(NS_PER_HOUR, 2 * NS_PER_HOUR * (kind == "union")),
        "late_first": life.end_ns - 6 * NS_PER_HOUR,
        "middle_last": life.end_ns - 6 * NS_PER_HOUR - 1,
    }.items():
        log.now_ns = t_ns
        marks[name] = log.book_delta(life.ticker, "yes", 410_000, 100)
    determine(log, life)
    phases = PhasePolicy(kind=kind, first_hours=Fraction(1), last_hours=Fraction(6))  # type: ignore[arg-type]
    _, rows, manifest = build_sets(tmp_path, log, phases=phases, middle_every_s=0.001)
    phase = dict(zip(rows["record_seq"], rows["phase"], strict=True))
    assert phase[marks["early_last"]] == Phase.EARLY
    assert phase[marks["middle_first"]] == Phase.MIDDLE
    assert phase[marks["middle_last"]] == Phase.MIDDLE
    assert phase[marks["late_first"]] == Phase.LATE
    assert manifest["policy"]["phase_policy"] == kind
    assert (manifest["policy"]["first_hours"], manifest["policy"]["last_hours"]) == ("1", "6")


def test_default_policy_is_fractions_20_20_in_the_manifest(tmp_path: Path) -> None:
    log = started_log()
    simple_market(log, Life("KX-DEF"), step_s=5.0)
    *_, manifest = build_sets(tmp_path, log)
    pol = manifest["policy"]
    assert (pol["phase_policy"], pol["early_fraction"], pol["late_fraction"]) == (
        "fractions",
        "1/5",
        "1/5",
    )
    assert pol["min_updates"] == 0


def test_label_follows_the_last_determination(tmp_path: Path) -> None:
    life = Life("KX-DISPUTE")
    log = started_log()
    simple_market(log, life, step_s=20.0, result="no")  # determined "no", value 1_000_000
    log.at(life.close + 3600)  # disputed, amended: determined again
    log.lifecycle(
        life.ticker, "determined", result="yes", determination_ts=life.close + 3600,
        settlement_value=1_000_000,
    )  # fmt: skip
    log.lifecycle(life.ticker, "settled", settled_ts=life.close + 7200)
    log.session_end()
    _, rows, manifest = build_sets(tmp_path, log)
    assert set(rows["label_result"]) == {"yes"}
    assert set(rows["label_settlement_value"]) == {1_000_000}
    # the rows still stop at the first determination (the market was left there)
    first_det = next(r["record_seq"] for r in log.records if r["event_type"] == "determined")
    assert rows["record_seq"].max() < first_det
    assert manifest["included"][f"1/{life.ticker}"]["end_ns"] == life.end_ns


def test_never_traded_market_is_kept_and_flagged_unless_a_minimum_is_asked(
    tmp_path: Path,
) -> None:
    quiet = Life("KX-QUIET")
    log = started_log()
    create(log, quiet)
    log.at(quiet.created + 1)
    log.book_snapshot(quiet.ticker, {}, {})  # an empty book, and no trade ever
    determine(log, quiet, result="no", value=0)
    busy = Life("KX-BUSY", created=T0 + 5, open=T0 + 105, close=T0 + 1105)
    simple_market(log, busy, step_s=50.0, sid=3)
    log.session_end()
    _, rows, manifest = build_sets(tmp_path, log)
    quiet_entry = manifest["included"][f"1/{quiet.ticker}"]
    assert quiet_entry["flags"] == ["never_traded"] and quiet_entry["rows"] == 1
    assert manifest["included"][f"1/{busy.ticker}"]["flags"] == []
    assert rows.filter(pl.col("market_ticker") == quiet.ticker).height == 1

    # the CLI: an explicit minimum drops it, with the reason
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), "--min-updates", "2", "--phase-policy", "union"])
    assert code == 0
    cli = json.loads((data / "training" / "manifest.json").read_text())
    assert cli["excluded"][f"1/{quiet.ticker}"]["reason"] == "too_few_updates"
    assert f"1/{busy.ticker}" in cli["included"]
    assert cli["policy"]["phase_policy"] == "union" and cli["policy"]["min_updates"] == 2


def test_cli_refuses_a_bad_phase_policy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", "x", "--early-fraction", "1.5"])
    assert exc.value.code == 64
    assert "early_fraction" in capsys.readouterr().err


def test_a_later_determination_amends_labels_already_built(tmp_path: Path) -> None:
    """The dispute comes after the nightly build included the market (the usual order)."""
    life = Life("KX-LATE-DISPUTE")
    log = started_log()
    simple_market(log, life, step_s=20.0, result="no")
    log.session_end()
    _, rows, manifest = build_sets(tmp_path, log)
    assert set(rows["label_result"]) == {"no"}
    assert manifest["finished_sessions"] == [1]

    later = training_log(2, t0_s=life.close + 7200)
    later.session_start()
    later.at(life.close + 7200)
    later.lifecycle(
        life.ticker, "determined", result="yes", determination_ts=life.close + 7000,
        settlement_value=1_000_000,
    )  # fmt: skip
    later.session_end()
    later.write(tmp_path / "data", date="2027-01-16")
    s, rows, manifest = build_sets(tmp_path)
    assert s.labels_amended == 1 and s.included == 0
    assert set(rows["label_result"]) == {"yes"} and set(rows["label_settlement_value"]) == {
        1_000_000
    }
    (amended,) = manifest["label_amendments"]
    assert amended["market"] == f"1/{life.ticker}" and amended["to"]["result"] == "yes"
    assert manifest["included"][f"1/{life.ticker}"]["label"]["result"] == "yes"
    again, _, _ = build_sets(tmp_path)
    assert again.labels_amended == 0  # done once

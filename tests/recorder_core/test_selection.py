"""MarketFilter: patterns on market/event/series, exclude wins, MVE opt-in, stable exact shards."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.selection import MarketFilter, event_of, parse_shard, series_of, shard_of

T = "KXHIGHNY-25JAN01-B45.5"


def test_names_derived_from_ticker() -> None:
    assert series_of(T) == "KXHIGHNY"
    assert event_of(T) == "KXHIGHNY-25JAN01"
    assert event_of("NODASH") == "NODASH"


def test_empty_include_wants_everything() -> None:
    assert MarketFilter([], []).decide(T) == (True, None)


@pytest.mark.parametrize(
    "pattern", ["KXHIGHNY", "KXHIGHNY-25JAN01", T, "KXHIGH*", "kxhighny", "*-B45.5", "KX?IGHNY"]
)
def test_include_matches_market_event_or_series(pattern: str) -> None:
    assert MarketFilter([pattern], []).decide(T) == (True, None)


def test_include_miss_is_filtered() -> None:
    assert MarketFilter(["KXBTCD"], []).decide(T) == (False, "filtered")
    # A pattern must match a whole name, not a substring.
    assert MarketFilter(["HIGHNY"], []).decide(T) == (False, "filtered")


def test_exclude_wins_over_include() -> None:
    f = MarketFilter(["KXHIGH*"], ["*-25JAN01"])
    assert f.decide(T) == (False, "filtered")
    assert f.decide("KXHIGHNY-25JAN02-B45.5") == (True, None)


def test_event_ticker_from_metadata_beats_string_split() -> None:
    # Some series have dashes inside the event code: the caller's event ticker is the truth.
    f = MarketFilter(["KXRANK-26JAN-X"], [])
    assert f.decide("KXRANK-26JAN-X-BIA") == (True, None)  # split happens to agree
    assert f.decide("KXRANK-26JAN-X-BIA", event_ticker="KXRANK-26JAN") == (False, "filtered")
    g = MarketFilter(["KXODD-26JAN"], [])
    assert g.decide("KXODD-26JAN-A-B") == (False, "filtered")
    assert g.decide("KXODD-26JAN-A-B", event_ticker="KXODD-26JAN") == (True, None)


def test_mve_is_opt_in() -> None:
    mve = "KXMVESPORTSMULTIGAMEEXTENDED-26JAN-ABC"
    assert MarketFilter([], []).decide(mve) == (False, "mve")
    assert MarketFilter(["KXMVE*"], []).decide(mve) == (False, "mve")
    assert MarketFilter([], [], include_mve=True).decide(mve) == (True, None)


def test_shard_reason_and_describe() -> None:
    f = MarketFilter([], [], shard=(0, 2))
    other = (1 - shard_of(T, 2), 2)
    assert MarketFilter([], [], shard=other).decide(T) == (False, "shard")
    assert f.describe()["shard"] == "0/2"
    # Filter reasons come before the shard reason: "filtered" tells the operator more.
    assert MarketFilter(["NOPE"], [], shard=other).decide(T) == (False, "filtered")


@pytest.mark.parametrize("bad", [(0, 0), (2, 2), (-1, 3)])
def test_invalid_shard_is_rejected(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="0 <= i < n"):
        MarketFilter([], [], shard=bad)


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4)
    with pytest.raises(ValueError, match="form i/n"):
        parse_shard("2of4")
    with pytest.raises(ValueError, match="invalid"):
        parse_shard("4/4")


def test_shard_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; shard_of must not be.
    code = "from recorder.selection import shard_of; print(shard_of('KXHIGHNY-25JAN01-B45.5', 7))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert outs == {str(shard_of(T, 7))}
    # Pinned value: changing the hash would silently move markets between running recorders.
    assert shard_of(T, 1_000_003) == 817447
    assert shard_of("A", 16) == 6
    assert shard_of("", 5) in range(5)


tickers = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.", min_size=1, max_size=30)


@given(st.sets(tickers, max_size=60), st.integers(min_value=1, max_value=9))
def test_shards_partition_any_set_of_tickers(names: set[str], n: int) -> None:
    owners: dict[str, list[int]] = {t: [] for t in names}
    for i in range(n):
        f = MarketFilter([], [], shard=(i, n), include_mve=True)
        for t in names:
            if f.decide(t)[0]:
                owners[t].append(i)
    assert all(len(v) == 1 for v in owners.values())
    assert all(v == [shard_of(t, n)] for t, v in owners.items())

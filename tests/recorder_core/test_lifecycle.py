"""Lifecycle rules: created joins, determined leaves, the rest is record-only; REST catch-up."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from recorder.lifecycle import Action, Join, Leave, LifecycleRules, Skip, _ns
from recorder.selection import MarketFilter

A = "KXHIGHNY-25JAN01-B45.5"
B = "KXHIGHNY-25JAN01-B47.5"
NOW = 1_800_000_000 * 10**9
CREATED = {
    "market_ticker": A,
    "event_type": "created",
    "open_ts": 1735657200,
    "close_ts": 1735790340,
    "additional_metadata": {"event_ticker": "KXHIGHNY-25JAN01"},
}
OTHER_TYPES = [
    "settled",
    "activated",
    "deactivated",
    "close_date_updated",
    "price_level_structure_updated",
    "metadata_updated",
    "fractional_trading_updated",
    "something_new_2027",
]


def rules(**kw: Any) -> LifecycleRules:
    return LifecycleRules(MarketFilter(kw.pop("include", []), kw.pop("exclude", []), **kw))


def test_created_joins_with_times_and_determined_leaves() -> None:
    r = rules()
    assert r.on_event(A, "created", CREATED, NOW) == [
        Join(A, "created", mid_lifecycle=False, open_ts=1735657200, close_ts=1735790340)
    ]
    assert r.is_joined(A) and set(r.joined) == {A}
    assert r.joined == frozenset({A}) and r.join_of(A) is not None
    assert r.join_of(B) is None
    assert r.on_event(A, "determined", {"result": "yes"}, NOW) == [Leave(A, "determined")]
    assert not r.joined


def test_duplicates_are_harmless() -> None:
    r = rules()
    r.on_event(A, "created", CREATED, NOW)
    assert r.on_event(A, "created", CREATED, NOW) == []
    r.on_event(A, "determined", {}, NOW)
    assert r.on_event(A, "determined", {}, NOW) == []
    # A replayed `created` after the market left does not open a second participation.
    assert r.on_event(A, "created", CREATED, NOW) == []


def test_other_event_types_only_record() -> None:
    r = rules()
    r.on_event(A, "created", CREATED, NOW)
    for event_type in OTHER_TYPES:
        assert r.on_event(A, event_type, {}, NOW) == []
    assert r.is_joined(A)
    r.on_event(A, "determined", {}, NOW)
    assert r.on_event(A, "settled", {"settled_ts": 1}, NOW) == []


def test_events_for_never_joined_markets_are_ignored() -> None:
    r = rules()
    for event_type in [*OTHER_TYPES, "determined"]:
        assert r.on_event(B, event_type, {}, NOW) == []
    assert not r.joined


def test_filter_skip_once_with_contract_reasons() -> None:
    r = rules(include=["KXBTC*"])
    assert r.on_event(A, "created", CREATED, NOW) == [Skip(A, "filtered")]
    assert r.on_event(A, "created", CREATED, NOW) == []
    assert r.on_event(A, "determined", {}, NOW) == []
    mve = "KXMVE-TEST-EVENT-M1"
    [skip] = rules().on_event(mve, "created", {}, NOW)
    assert skip == Skip(mve, "filtered", "mve")
    assert skip.payload() == {"market_ticker": mve, "reason": "filtered", "detail": "mve"}


def test_event_ticker_from_additional_metadata_drives_the_filter() -> None:
    r = rules(include=["KXODD-26JAN"])
    t = "KXODD-26JAN-A-B"
    fields = {"additional_metadata": {"event_ticker": "KXODD-26JAN"}}
    assert r.on_event(t, "created", fields, NOW)[0] == Join(t, "created")


def test_created_without_times_or_metadata() -> None:
    assert rules().on_event(A, "created", {"open_ts": "x"}, NOW) == [Join(A, "created")]


def test_payloads_match_the_contract_keys() -> None:
    join = Join(A, "late", mid_lifecycle=False, late_by_ms=1500, open_ts=1, close_ts=None)
    assert join.payload() == {
        "market_ticker": A,
        "reason": "late",
        "mid_lifecycle": False,
        "late_by_ms": 1500,
        "open_ts": 1,
    }
    assert Leave(A, "rest_gone").payload() == {"market_ticker": A, "reason": "rest_gone"}


def market(ticker: str, status: str, **kw: Any) -> dict[str, Any]:
    return {"ticker": ticker, "event_ticker": ticker.rsplit("-", 1)[0], "status": status, **kw}


def test_adopt_joins_wanted_open_markets_mid_lifecycle() -> None:
    r = rules(exclude=["*-B47.5"])
    actions = r.adopt(
        [
            market(
                A, "active", open_time="2026-05-13T02:30:00Z", close_time="2026-05-20T03:59:00Z"
            ),
            market(B, "open"),  # excluded
            market("KXX-1-C", "inactive"),  # paused still counts as open
            market("KXX-1-D", "initialized"),  # not open yet: the feed will announce it
            market("KXX-1-E", "closed"),
            market("KXX-1-F", "finalized"),
            {"status": "active"},  # no ticker: ignored
        ]
    )
    assert actions == [
        Join(A, "adopted", mid_lifecycle=True, open_ts=1778639400, close_ts=1779249540),
        Skip(B, "filtered"),
        Join("KXX-1-C", "adopted", mid_lifecycle=True),
    ]
    assert r.adopt([market(A, "active")]) == []


def test_markets_open_at_start_are_skipped_as_already_open() -> None:
    """Without --adopt-open-markets: the same listing, recorded as skips, never joined."""
    r = rules(exclude=["*-B47.5"])
    listing = [
        market(A, "active"),
        market(B, "open"),  # excluded: not ours to report
        market("KXX-1-C", "inactive"),  # paused still counts as open
        market("KXX-1-D", "initialized"),  # not open yet: the feed will announce it
        market("KXX-1-E", "closed"),
        {"status": "active"},  # no ticker: ignored
    ]
    assert r.skip_open_at_start(listing) == [
        Skip(A, "already_open"),
        Skip("KXX-1-C", "already_open"),
    ]
    assert not r.joined
    assert Skip(A, "already_open").payload() == {"market_ticker": A, "reason": "already_open"}


def test_reconcile_joins_late_and_leaves_determined() -> None:
    r = rules()
    for t in ("KXX-1-JOINED", "KXX-1-DET", "KXX-1-GONE", "KXX-1-AMEND"):
        r.on_event(t, "created", {}, NOW)
    lost = NOW - 60 * 10**9
    actions = r.reconcile(
        [
            market("KXX-1-JOINED", "active"),
            market("KXX-1-DET", "determined"),
            market("KXX-1-AMEND", "amended"),
            # created 10 s after we lost the connection, i.e. 50 s before now
            market("KXX-1-NEW", "initialized", created_time=_iso(NOW - 50 * 10**9)),
            market("KXX-1-NEWCLOSED", "closed", created_time=_iso(lost)),
            market("KXX-1-OLD", "active", created_time=_iso(lost - 1)),  # open before: skipped
            market("KXX-1-NOTIME", "active"),
            market("KXX-1-MISSED", "finalized", created_time=_iso(lost + 1)),
            market("KXX-1-OPENTIME", "active", open_time=_iso(NOW - 2 * 10**9)),
        ],
        NOW,
        lost,
    )
    assert actions == [
        Leave("KXX-1-DET", "reconciled_determined"),
        Leave("KXX-1-AMEND", "reconciled_determined"),
        Join("KXX-1-NEW", "late", late_by_ms=50_000),
        Join("KXX-1-NEWCLOSED", "late", mid_lifecycle=True, late_by_ms=60_000),
        Join(
            "KXX-1-OPENTIME", "late", mid_lifecycle=True, late_by_ms=2_000, open_ts=NOW // 10**9 - 2
        ),
    ]
    # KXX-1-GONE is absent from the answer: absence is not proof of determination (a partial or
    # failed listing must never make the recorder leave a market), so it stays joined.
    assert set(r.joined) == {
        "KXX-1-JOINED",
        "KXX-1-GONE",
        "KXX-1-NEW",
        "KXX-1-NEWCLOSED",
        "KXX-1-OPENTIME",
    }
    # Reconciling again with the same answer changes nothing.
    assert r.reconcile([market(t, "active") for t in r.joined], NOW, lost) == []


def test_reconcile_respects_filter_and_left_markets() -> None:
    r = rules(include=["KXA*"])
    r.on_event("KXA-1-X", "created", {}, NOW)
    r.on_event("KXA-1-X", "determined", {}, NOW)
    lost = NOW - 10**9
    actions = r.reconcile(
        [
            market("KXA-1-X", "amended", created_time=_iso(lost)),
            market("KXB-1-Y", "active", created_time=_iso(lost)),
        ],
        NOW,
        lost,
    )
    assert actions == [Skip("KXB-1-Y", "filtered")]


def test_rest_discovery_joins_new_and_leaves_gone_and_rejoins_reopened() -> None:
    r = rules()
    assert r.rest_discovery([{"ticker": A}, market(B, "active")]) == [
        Join(A, "rest_discovery", mid_lifecycle=True),
        Join(B, "rest_discovery", mid_lifecycle=True),
    ]
    assert r.rest_discovery([{"ticker": A}, market(B, "active")]) == []
    assert r.rest_discovery([market(B, "closed")]) == [
        Leave(A, "rest_gone"),
        Leave(B, "rest_gone"),
    ]
    assert r.rest_discovery([market(A, "paused")]) == [Join(A, "rest_discovery", True)]


def test_shutdown_leaves_everything() -> None:
    r = rules()
    r.on_event(A, "created", {}, NOW)
    r.on_event(B, "created", {}, NOW)
    assert r.shutdown() == [Leave(A, "shutdown"), Leave(B, "shutdown")]
    assert r.shutdown() == []


def test_rest_time_parsing_is_exact() -> None:
    assert _ns("2026-05-13T01:51:41.778164Z") == 1778637101_778164000
    assert _ns("2026-05-13T01:51:41.123456789Z") == 1778637101_123456789
    assert _ns("2026-05-13T03:51:41+02:00") == 1778637101 * 10**9
    assert _ns("2026-05-13T01:51:41") == 1778637101 * 10**9
    assert _ns(1778637101) == 1778637101 * 10**9  # WebSocket-style seconds
    assert _ns(1778637101_778) == 1778637101_778 * 10**6  # milliseconds
    assert _ns("2026-02-30T00:00:00Z") is None
    assert _ns("yesterday") is None and _ns(None) is None and _ns(1.5) is None


def _iso(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


# -- property: any event sequence keeps the rules consistent -------------------------------

TICKERS = ["KXA-1-X", "KXA-1-Y", "KXB-1-Z", "KXMVE-1-Q"]
EVENTS = ["created", "determined", "settled", "activated", "deactivated", "unknown_type"]


@given(st.lists(st.tuples(st.sampled_from(TICKERS), st.sampled_from(EVENTS)), max_size=40))
def test_event_sequences_keep_joins_and_leaves_alternating(seq: list[tuple[str, str]]) -> None:
    r = rules(exclude=["KXB*"])
    joined: set[str] = set()
    history: dict[str, list[Action]] = {t: [] for t in TICKERS}
    for ticker, event_type in seq:
        for action in r.on_event(ticker, event_type, {}, NOW):
            assert action.ticker == ticker
            history[ticker].append(action)
            if isinstance(action, Join):
                assert event_type == "created" and ticker not in joined
                joined.add(ticker)
            elif isinstance(action, Leave):
                assert event_type == "determined" and ticker in joined
                joined.remove(ticker)
        assert set(r.joined) == joined
    for ticker, actions in history.items():
        # Each market joins at most once (or is skipped at most once) per session.
        assert len(actions) <= 2
        if ticker.startswith(("KXB", "KXMVE")):
            assert all(isinstance(a, Skip) for a in actions)


def test_determined_before_created_never_joins() -> None:
    """A reordered feed: the late ``created`` of an already-determined market is recorded only."""
    r = rules()
    assert r.on_event("KXX-1-T1", "determined", {"result": "yes"}, NOW) == []
    assert r.on_event("KXX-1-T1", "created", {}, NOW) == []
    assert "KXX-1-T1" not in r.joined


def test_memory_of_left_markets_is_bounded() -> None:
    """Months-long runs: a left (or skipped) market is forgotten after its ``settled`` plus a
    margin, or after a long time if it never settles; until then a replayed ``created`` cannot
    open it again."""
    r = LifecycleRules(MarketFilter(exclude=["KXSKIP*"]), left_memory_s=60.0, left_forget_s=3600.0)
    s = 10**9
    for i in range(100):
        r.on_event(f"KXX-1-M{i}", "created", {}, NOW)
        r.on_event(f"KXX-1-M{i}", "determined", {}, NOW + s)
    r.on_event("KXSKIP-1-A", "created", {}, NOW)
    assert r.remembered == 101 and not r.joined
    assert r.on_event("KXX-1-M0", "created", {}, NOW + 2 * s) == []  # a replay: no re-join
    for i in range(50):
        r.on_event(f"KXX-1-M{i}", "settled", {}, NOW + 10 * s)
    assert r.expire(NOW + 69 * s) == 0
    assert r.expire(NOW + 71 * s) == 50 and r.remembered == 51
    assert r.expire(NOW + 3602 * s) == 51 and r.remembered == 0

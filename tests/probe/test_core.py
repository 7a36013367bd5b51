"""The probe's sans-I/O core without sockets: the script, the allow-list, the answers, the
report, and the profile mapping, fed hand-made frames (unit and hypothesis property tests)."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe import answers as A
from probe.report import (
    REPORT_FORMAT,
    ReportError,
    build_report,
    check_no_secrets,
    load_report,
    render_table,
)
from probe.script import (
    MAX_ACTIONS,
    Close,
    Command,
    Listen,
    NotAllowed,
    Plan,
    RestGet,
    RestResult,
    Wait,
    check_allowed,
    pick_markets,
    script,
)
from probe.transcript import Transcript
from simulator.profile import merge, switches_from_report
from simulator.switches import config_from_switches, defaults

# ---- the script, driven by hand ----------------------------------------------------------------

tickers = st.from_regex(r"KX[A-Z]{1,6}-[0-9A-Z]{2,6}-[A-Z][0-9.]{1,5}", fullmatch=True)
prices = st.sampled_from(["0.0000", "0.4500", "0.0100", None, "0"])


@st.composite
def listings(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(tickers, max_size=6, unique=True))
    return [
        {
            "ticker": t,
            "event_ticker": t.rsplit("-", 1)[0],
            "yes_bid_dollars": draw(prices),
            "no_bid_dollars": draw(prices),
        }
        for t in names
    ]


def drive(
    markets: list[dict[str, Any]], answer: Callable[[Command], list[dict[str, Any]]]
) -> list[Any]:
    """Run the script to its end with canned answers; returns every action it yielded."""
    gen = script(Plan(now_s=1_767_225_600, listen_s=1.0, linger_s=0.1, young_retry_s=0.1))
    actions: list[Any] = []
    result: Any = None
    action = gen.send(None)
    while True:
        actions.append(action)
        assert len(actions) <= MAX_ACTIONS
        if isinstance(action, RestGet):
            result = RestResult(200, {"markets": markets, "cursor": ""})
        elif isinstance(action, Command):
            result = answer(action)
        elif isinstance(action, Listen):
            result = [
                {
                    "type": "market_lifecycle_v2",
                    "sid": 1,
                    "msg": {"market_ticker": "KXNEW-1", "event_type": "created"},
                }
            ]
        else:
            result = None
        try:
            action = gen.send(result)
        except StopIteration:
            return actions


def polite(sids: list[int]) -> Callable[[Command], list[dict[str, Any]]]:
    def answer(c: Command) -> list[dict[str, Any]]:
        cid, cmd, params = c.body["id"], c.body["cmd"], c.body.get("params") or {}
        if cmd == "subscribe":
            sids.append(len(sids) + 1)
            out: list[dict[str, Any]] = [
                {
                    "id": cid,
                    "type": "subscribed",
                    "msg": {"channel": params["channels"][0], "sid": sids[-1]},
                }
            ]
            for t in params.get("market_tickers", []):
                out.append(
                    {
                        "type": "orderbook_snapshot",
                        "sid": sids[-1],
                        "seq": 1,
                        "msg": {"market_ticker": t},
                    }
                )
            return out
        if cmd == "unsubscribe":
            return [{"id": cid, "type": "unsubscribed", "sid": params["sids"][0], "seq": 9}]
        out = [{"id": cid, "type": "ok", "sid": params.get("sid"), "seq": 5}]
        for t in params.get("market_tickers", []):
            out.append(
                {
                    "type": "orderbook_snapshot",
                    "sid": params.get("sid"),
                    "seq": 6,
                    "msg": {"market_ticker": t},
                }
            )
        return out

    return answer


def hostile(codes: list[int]) -> Callable[[Command], list[dict[str, Any]]]:
    it = iter(codes * 100)

    def answer(c: Command) -> list[dict[str, Any]]:
        code = next(it)
        if code == 0:
            return []  # silence: the shell's deadline ends the step
        return [{"type": "error", "msg": {"code": code, "msg": "no"}}]  # no id at all

    return answer


@settings(max_examples=30, deadline=None)
@given(listings(), st.lists(st.sampled_from([0, 6, 7, 16, 17]), min_size=1, max_size=5))
def test_every_action_is_read_only_and_bounded(
    markets: list[dict[str, Any]], codes: list[int]
) -> None:
    for answer in (polite([]), hostile(codes)):
        actions = drive(markets, answer)
        for a in actions:
            check_allowed(a)  # raises NotAllowed otherwise
            if isinstance(a, RestGet):
                assert "portfolio" not in a.path
            if isinstance(a, Command):
                assert "order" not in a.body["cmd"]
        assert isinstance(actions[-1], Close)
        assert sum(isinstance(a, Wait) for a in actions) <= 10


@settings(max_examples=30, deadline=None)
@given(listings())
def test_unsubscribes_every_subscription_it_made(markets: list[dict[str, Any]]) -> None:
    """What the probe subscribes to (besides the lifecycle feed) it gives back before closing."""
    sids: list[int] = []
    actions = drive(markets, polite(sids))
    given_back = {
        s
        for a in actions
        if isinstance(a, Command) and a.body["cmd"] == "unsubscribe"
        for s in a.body["params"]["sids"]
    }
    # sid 1 is the lifecycle feed (closing the connection ends it); the unknown-sid probe is extra
    assert set(sids) - {1} <= given_back


def test_no_market_listed_skips_the_book_questions() -> None:
    actions = drive([], polite([]))
    steps = {a.step for a in actions if isinstance(a, Command)}
    assert "subscribe_book" not in steps and "get_snapshot" not in steps
    assert {"subscribe_lifecycle", "error_unknown_channel", "subscribe_mve"} <= steps


def test_pick_markets_prefers_a_full_book_and_an_empty_side() -> None:
    ms = [
        {"ticker": "A", "yes_bid_dollars": "0.0000", "no_bid_dollars": "0.4000"},
        {"ticker": "B", "yes_bid_dollars": "0.5000", "no_bid_dollars": "0.4000"},
    ]
    assert pick_markets(ms) == ("B", "A")
    assert pick_markets([]) == (None, None)
    assert pick_markets([{"ticker": "C", "yes_bid": 0, "no_bid": 0}]) == ("C", None)


@pytest.mark.parametrize(
    "action",
    [
        RestGet("x", "/portfolio/orders"),
        RestGet("x", "/portfolio/balance"),
        RestGet("x", "/markets/../portfolio"),
        Command("x", {"id": 1, "cmd": "create_order"}, lambda f: True),
        Command(
            "x",
            {"id": 1, "cmd": "update_subscription", "params": {"action": "buy"}},
            lambda f: True,
        ),
    ],
)
def test_allow_list_refuses_anything_else(action: Any) -> None:
    with pytest.raises(NotAllowed):
        check_allowed(action)


# ---- answers from hand-made transcripts ----------------------------------------------------------


class T:
    """A tiny transcript builder: out/in ws frames as dicts, one ms apart."""

    def __init__(self) -> None:
        self.t = Transcript()
        self.now = 1_000

    def out(self, step: str, obj: dict[str, Any]) -> T:
        self.now += 1
        self.t.add(self.now, step, "out", "ws", text=orjson.dumps(obj).decode())
        return self

    def inn(self, obj: dict[str, Any], step: str = "x") -> T:
        self.now += 1
        self.t.add(self.now, step, "in", "ws", text=orjson.dumps(obj).decode())
        return self


@given(st.integers(1, 50), st.sampled_from(["consume", "echo"]), st.integers(1, 9))
def test_reply_seq_is_read_against_the_last_seq_of_the_sid(n: int, mode: str, sid: int) -> None:
    b = T().inn({"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": sid}})
    for seq in range(1, n + 1):
        b.inn({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": {}})
    b.out("delete_markets", {"id": 2, "cmd": "update_subscription"})
    b.inn({"id": 2, "type": "ok", "sid": sid, "seq": n + 1 if mode == "consume" else n})
    assert A.reply_seq(b.t).value == mode


def test_a_command_never_sent_is_not_asked_and_every_answer_is_keyed_by_its_question() -> None:
    empty = A.analyze(Transcript())
    assert list(empty) == [q.__name__ for q in A.QUESTIONS]
    assert all(a.key == k and a.question.endswith("?") for k, a in empty.items())
    not_asked = {
        k: a.summary for k, a in empty.items() if a.value == "unknown" and "asked" in a.summary
    }
    assert not_asked == {
        "get_snapshot_ok": "not asked (no market to subscribe to)",
        "repeat_subscribe": "not asked (no market to subscribe to)",
        "mve_channel": "not asked",
        "mve_share": "the MVE channel was not asked",
    }
    sent = T().out("subscribe_mve", {"id": 1, "cmd": "subscribe"}).t
    assert A.mve_channel(sent).value == "no_reply"
    assert A.mve_share(sent).summary == "no market was created while we listened"


@pytest.mark.parametrize(
    ("order", "want"),
    [(["ok", "snap"], "before"), (["snap", "ok"], "after"), (["snap"], "none"), ([], "unknown")],
)
def test_get_snapshot_ok(order: list[str], want: str) -> None:
    b = T().out("get_snapshot", {"id": 3, "cmd": "update_subscription", "params": {"sid": 2}})
    for what in order:
        if what == "ok":
            b.inn({"id": 3, "type": "ok", "sid": 2, "seq": 4})
        else:
            b.inn({"type": "orderbook_snapshot", "sid": 2, "seq": 5, "msg": {"market_ticker": "A"}})
    assert A.get_snapshot_ok(b.t).value == want


@pytest.mark.parametrize(
    ("msg", "want"),
    [
        ({"market_ticker": "A", "no_dollars_fp": [["0.4", "1.00"]]}, "omit"),
        (
            {"market_ticker": "A", "yes_dollars_fp": [], "no_dollars_fp": [["0.4", "1.00"]]},
            "empty_list",
        ),
        (
            {"market_ticker": "A", "yes": [], "no": [[40, 1]], "yes_dollars": [], "no_dollars": []},
            "empty_list",
        ),
        ({"market_ticker": "A", "no": [[40, 1]], "no_dollars": [["0.40", 1]]}, "omit"),
        (
            {
                "market_ticker": "A",
                "yes_dollars_fp": [["0.1", "1"]],
                "no_dollars_fp": [["0.4", "1"]],
            },
            "unknown",
        ),
    ],
)
def test_empty_side(msg: dict[str, Any], want: str) -> None:
    b = T().inn({"type": "orderbook_snapshot", "sid": 2, "seq": 1, "msg": msg})
    assert A.empty_side(b.t).value == want


@pytest.mark.parametrize(
    ("replies", "want"),
    [
        (
            [
                {"id": 1, "type": "subscribed", "msg": {"sid": 1}},
                {"id": 2, "type": "error", "msg": {"code": 8}},
            ],
            "always",
        ),
        (
            [
                {"type": "subscribed", "msg": {"sid": 1}},
                {"id": 2, "type": "error", "msg": {"code": 8}},
            ],
            "sid_replies",
        ),
        (
            [{"type": "subscribed", "msg": {"sid": 1}}, {"type": "error", "msg": {"code": 8}}],
            "never",
        ),
        (
            [
                {"type": "error", "sid": 3, "msg": {"code": 17}},
                {"id": 1, "type": "ok", "sid": 2, "seq": 3},
            ],
            "always",
        ),
    ],
)
def test_reply_id(replies: list[dict[str, Any]], want: str) -> None:
    b = T()
    for r in replies:
        b.inn(r)
    assert A.reply_id(b.t).value == want


def test_pong() -> None:
    for got, want in ((b"kalshi-probe", "echo"), (b"", "empty"), (None, "none")):
        t = Transcript()
        t.add(1, "ping", "out", "ping", data="kalshi-probe", data_hex=b"kalshi-probe".hex())
        if got is not None:
            t.add(2, "ping", "in", "pong", data=got.decode(), data_hex=got.hex())
        assert A.pong(t).value == want


@settings(max_examples=200)
@given(
    offset=st.integers(-(10**7), 10**7),
    sent=st.integers(1_700_000_000_000, 1_800_000_000_000),
    to_server=st.integers(0, 3_000),
    back=st.integers(0, 3_000),
    since_update=st.integers(0, 10**6),
)
def test_clock_offset_bounds_contain_the_truth(
    offset: int, sent: int, to_server: int, back: int, since_update: int
) -> None:
    """Date header (whole seconds) and a past time stamp: whatever the latencies, low <= truth
    <= high (offset = exchange clock - ours)."""
    server_ms = sent + to_server + offset  # the exchange's clock when it answered
    date = email.utils.formatdate(server_ms // 1000, usegmt=True)
    updated = server_ms - since_update
    iso = datetime.fromtimestamp(updated / 1000, UTC).isoformat(timespec="milliseconds")
    t = Transcript()
    t.add(sent, "r", "out", "rest", method="GET", path="/markets", query="")
    body = orjson.dumps(
        {"markets": [{"ticker": "A", "updated_time": iso.replace("+00:00", "Z")}]}
    ).decode()
    t.add(
        sent + to_server + back,
        "r",
        "in",
        "rest",
        path="/markets",
        status=200,
        body=body,
        date=date,
        sent_ms=sent,
    )
    v = A.clock_offset_ms(t).value
    assert v["low"] <= offset <= v["high"]
    assert v["low"] <= v["estimate"] <= v["high"]


def test_rest_filters_honored_ignored_rejected() -> None:
    t = Transcript()

    def pair(step: str, query: str, status: int, markets: list[str]) -> None:
        t.add(1, step, "out", "rest", method="GET", path="/markets", query=query)
        body = orjson.dumps({"markets": [{"ticker": m} for m in markets], "cursor": ""}).decode()
        t.add(
            2, step, "in", "rest", path="/markets", status=status, body=body, date=None, sent_ms=1
        )

    pair("rest_filter_tickers", "tickers=A&limit=20", 200, ["A"])
    pair("rest_filter_min_created_ts", "min_created_ts=9&limit=5", 200, ["A", "B"])
    pair("rest_filter_mve_filter", "mve_filter=only&limit=20", 400, [])
    pair("rest_filter_status_multi", "status=open,closed&limit=5", 200, ["A"])
    assert A.rest_filters(t).value == {
        "tickers": "honored",
        "min_created_ts": "ignored",
        "mve_filter": "rejected",
        "status_multi": "accepted",
    }


# ---- report and profile ------------------------------------------------------------------------


def _report(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "answers": {
            k: {"question": k, "value": v, "summary": "", "evidence": []} for k, v in values.items()
        },
    }


def test_profile_maps_measured_answers_and_leaves_unknown_ones_alone() -> None:
    got = switches_from_report(
        _report(
            {
                "get_snapshot_ok": "after",
                "reply_id": "unknown",
                "repeat_subscribe": "no_reply",
                "reply_seq": "echo",
                "lifecycle_seq": "yes",
                "empty_side": "unknown",
                "pong": "none",
                "rest_filters": {
                    "tickers": "honored",
                    "min_created_ts": "rejected",
                    "mve_filter": "ignored",
                },
                "rest_time_precision": {"created_time": 6, "open_time": 0},
                "clock_offset_ms": {"estimate": -2_600, "low": -3_000, "high": -2_200},
                "young_market": {"not_found_after_s": 0.42, "accepted_after_s": 1.51},
                "mve_channel": "error",
                "wire_format": "current",
                "seq_start": 2,
            }
        )
    )
    assert got == {
        "get_snapshot_ok": "after",
        "duplicate_subscribe": "merge",
        "reply_seq": "echo",
        "lifecycle_seq": True,
        "rest_unsupported_params": ("min_created_ts", "mve_filter"),
        "rest_unknown_params": "reject",
        "rest_time_precision": "ms",
        "clock_offset_s": -3.0,
        "new_market_not_found_s": 1.6,
        "mve_fraction": 0.0,
        "legacy": False,
        "seq_start": 2,
    }
    config_from_switches(got)  # a valid simulator configuration


def test_profile_of_nothing_measured_is_empty_and_bad_reports_are_refused(tmp_path: Path) -> None:
    assert switches_from_report(_report({"get_snapshot_ok": "unknown", "pong": "other"})) == {}
    with pytest.raises(ValueError, match="no answers"):
        switches_from_report({"format": REPORT_FORMAT})
    bad = tmp_path / "r.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ReportError, match="not a kalshi-probe report"):
        load_report(bad)
    with pytest.raises(ReportError, match="run kalshi-probe first"):
        load_report(tmp_path / "missing.json")


def test_explicit_flags_win_over_the_profile() -> None:
    flags = defaults() | {"pong": "empty"}
    out = merge(flags, {"pong": "echo", "reply_seq": "echo"})
    assert out["pong"] == "empty" and out["reply_seq"] == "echo"


def test_report_refuses_credentials_and_renders_every_question() -> None:
    b = T().inn({"type": "subscribed", "msg": {"channel": "market_lifecycle_v2", "sid": 1}})
    rep = build_report(
        b.t,
        environment="demo",
        ws_url="w",
        rest_url="r",
        started_ms=0,
        finished_ms=1,
        limits={},
        run={},
    )
    table = render_table(rep)
    for a in rep["answers"].values():
        assert a["question"][:40] in table
    with pytest.raises(ReportError):
        check_no_secrets(b"... -----BEGIN RSA PRIVATE KEY----- ...")
    with pytest.raises(ReportError):
        check_no_secrets(b'{"KALSHI-ACCESS-SIGNATURE": "x"}')
    with pytest.raises(ReportError):
        check_no_secrets(b"key 1234-abcd", secrets=("1234-abcd",))

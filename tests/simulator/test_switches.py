"""Each uncertain-point switch plays its variant over a real socket, and ground truth says so."""

from __future__ import annotations

import contextlib
import io
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from simulator.__main__ import build_parser, config_from_args
from simulator.faults import FaultConfig
from simulator.groundtruth import truth_effects, truth_markets
from simulator.market import Dist, GenConfig
from simulator.rest import rfc3339
from simulator.server import SimulatorThread, start_in_thread
from simulator.switches import (
    SWITCHES,
    Kind,
    config_from_switches,
    defaults,
    switch_values,
)
from tests.simulator.helpers import Client, auth_headers, http_get, quiet_config

OB = "orderbook_delta"
LC = "market_lifecycle_v2"
MVE = "multivariate_market_lifecycle"
T0 = 1_767_225_600.0  # quiet_config's virtual start, 2026-01-01T00:00:00Z


@pytest.fixture
def start(keys_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Start quiet simulators with the given switches; all stopped after the test."""
    with contextlib.ExitStack() as started:

        def make(autostart: bool = False, **switches: Any) -> SimulatorThread:
            gt = tmp_path / "gt"
            base = quiet_config(keys_dir=keys_dir, autostart=autostart, ground_truth=gt)
            return started.enter_context(start_in_thread(config_from_switches(switches, base)))

        yield make


def _effects(sim: SimulatorThread, name: str) -> list[dict[str, Any]]:
    return [e for e in sim.effect_log() if e["effect"] == name]


def _next_is_list_reply(c: Client) -> dict[str, Any]:
    """Ask list_subscriptions and return the next frame: proof nothing else was queued before."""
    cid = c.send("list_subscriptions")
    m = c.recv()
    assert m.get("type") == "ok" and isinstance(m.get("msg"), list), m
    assert m.get("id") in (cid, None)
    return m


def _wait(pred: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---- commands and replies ------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after", "none"])
def test_get_snapshot_ok_placement(start: Any, when: str) -> None:
    sim = start(get_snapshot_ok=when)
    a = sim.create_market("KXS-A")
    sim.push_delta(a, "yes", 40, 3)
    with Client(sim) as c:
        sid = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
        c.recv()  # initial snapshot
        cid = c.send(
            "update_subscription",
            {"sid": sid, "market_tickers": [a], "action": "get_snapshot"},
        )
        if when == "none":
            got = [c.recv()]
            _next_is_list_reply(c)  # no ok in between, none after
            assert [e["cmd_id"] for e in _effects(sim, "get_snapshot_without_ok")] == [cid]
        else:
            got = c.recv_n(2)
            types = [m["type"] for m in got]
            want = (
                ["ok", "orderbook_snapshot"] if when == "before" else ["orderbook_snapshot", "ok"]
            )
            assert types == want
            ok = got[types.index("ok")]
            assert ok["id"] == cid and ok["sid"] == sid
            assert not _effects(sim, "get_snapshot_without_ok")
        snap = next(m for m in got if m["type"] == "orderbook_snapshot")
        assert snap["msg"]["yes_dollars_fp"] == [["0.4000", "3.00"]]  # the true book


def test_reply_id_sid_replies(start: Any) -> None:
    sim = start(reply_id="sid_replies")
    a, b = sim.create_market("KXI-A"), sim.create_market("KXI-B")
    with Client(sim) as c:
        c.send("subscribe", {"channels": [OB], "market_tickers": [a]})
        sub = c.recv()
        assert sub["type"] == "subscribed" and "id" not in sub
        sid = sub["msg"]["sid"]
        c.recv()
        c.send("update_subscription", {"sid": sid, "market_tickers": [b], "action": "add_markets"})
        ok = c.recv()
        assert ok["type"] == "ok" and "id" not in ok and ok["sid"] == sid
        c.recv()
        bad = c.send("update_subscription", {"sid": 999, "market_tickers": [b], "action": "x"})
        err = c.recv()
        assert err["type"] == "error" and err["id"] == bad  # errors keep their id
        lst = c.send("list_subscriptions")
        assert c.recv()["id"] == lst
        c.send("unsubscribe", {"sids": [sid]})
        uns = c.recv()
        assert uns["type"] == "unsubscribed" and "id" not in uns and uns["sid"] == sid
    assert [e["type"] for e in _effects(sim, "reply_without_id")] == [
        "subscribed",
        "ok",
        "unsubscribed",
    ]


def test_reply_id_never(start: Any) -> None:
    sim = start(reply_id="never")
    with Client(sim) as c:
        c.send("subscribe", {"channels": ["no_such_channel"]})
        err = c.recv()
        assert err["type"] == "error" and err["msg"]["code"] == 8 and "id" not in err
        c.send("list_subscriptions")
        assert "id" not in c.recv()


def test_duplicate_subscribe_merge(start: Any) -> None:
    sim = start(duplicate_subscribe="merge")
    a, b = sim.create_market("KXM-A"), sim.create_market("KXM-B")
    with Client(sim) as c:
        sid = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
        first = c.recv()
        assert first["type"] == "orderbook_snapshot"
        cid = c.send("subscribe", {"channels": [OB], "market_tickers": [a, b]})
        ok = c.recv()
        assert ok == {"id": cid, "type": "ok", "msg": {"market_tickers": [a, b]}}  # no sid
        snap = c.recv()  # only the new market is snapshotted, on the existing sid
        assert snap["type"] == "orderbook_snapshot" and snap["msg"]["market_ticker"] == b
        assert snap["sid"] == sid and snap["seq"] == first["seq"] + 1
        sim.push_delta(b, "no", 30, 1)
        d = c.recv()
        assert d["sid"] == sid and d["seq"] == snap["seq"] + 1
        c.subscribe([LC])
        again = c.subscribe([LC])
        assert again["type"] == "ok" and "sid" not in again
        listed = _next_is_list_reply(c)["msg"]
        assert sorted(x["channel"] for x in listed) == [LC, OB]
    merged = _effects(sim, "merged_subscribe")
    assert [(e["channel"], e["added"]) for e in merged] == [(OB, [b]), (LC, [])]


def test_young_market_is_not_found_on_subscribe_and_add(start: Any) -> None:
    sim = start(new_market_not_found_s=2.0)
    old = sim.create_market("KXY-OLD")
    sim.advance_seconds(2.5)
    young = sim.create_market("KXY-NEW")
    with Client(sim) as c:
        sid = c.subscribe([OB], market_tickers=[old])["msg"]["sid"]
        c.recv()
        r = c.subscribe([OB], market_tickers=[young])
        assert r["type"] == "error" and r["msg"]["code"] == 16
        assert r["msg"]["market_ticker"] == young
        cid = c.send(
            "update_subscription", {"sid": sid, "market_tickers": [young], "action": "add_markets"}
        )
        r = c.recv()
        assert r["id"] == cid and r["msg"]["code"] == 16
        sim.advance_seconds(2.0)
        c.send(
            "update_subscription", {"sid": sid, "market_tickers": [young], "action": "add_markets"}
        )
        assert c.recv()["type"] == "ok"
        assert c.recv()["msg"]["market_ticker"] == young
    assert [(e["ticker"], e["cmd"]) for e in _effects(sim, "not_found_new")] == [
        (young, "subscribe"),
        (young, "add_markets"),
    ]


# ---- lifecycle ----------------------------------------------------------------------------


def test_lifecycle_drop_keeps_rest_truthful(start: Any, tmp_path: Path) -> None:
    sim = start(lifecycle_drop_rate=1.0)
    with Client(sim) as c:
        c.subscribe([LC])
        t = sim.create_market("KXL-DROPPED")
        sim.determine(t)
        _next_is_list_reply(c)  # neither the event, the created nor the determined arrived
    status, body = http_get(f"{sim.rest_url}/markets/{t}")
    assert status == 200 and body["market"]["status"] == "determined"
    dropped = _effects(sim, "lifecycle_dropped")
    assert [(e["ticker"], e["event_type"]) for e in dropped if e["kind"] == LC] == [
        (t, "created"),
        (t, "determined"),
    ]
    assert sim.faults.lifecycle_dropped == 3  # + the event_lifecycle
    sim.stop()
    effects = truth_effects(tmp_path / "gt")
    assert [e["effect"] for e in effects].count("lifecycle_dropped") == 3


def test_mve_markets_only_on_their_channel(start: Any, tmp_path: Path) -> None:
    sim = start()
    with Client(sim) as lc, Client(sim) as mv:
        lc.subscribe([LC])
        mv.subscribe([MVE])
        t = sim.create_market(mve=True)
        assert t.startswith("KXMVE")
        msgs = mv.recv_n(2)
        assert [m["type"] for m in msgs] == ["event_lifecycle", MVE]
        assert msgs[1]["msg"]["market_ticker"] == t and msgs[1]["msg"]["event_type"] == "created"
        plain = sim.create_market("KXPLAIN-1")
        got = lc.recv_n(2)  # the plain market's event + created, never the MVE one
        assert [m["msg"].get("market_ticker") for m in got] == [None, plain]
        _next_is_list_reply(mv)  # and the plain one never reached the MVE channel
    only = http_get(f"{sim.rest_url}/markets?mve_filter=only")[1]["markets"]
    excl = http_get(f"{sim.rest_url}/markets?mve_filter=exclude")[1]["markets"]
    assert [m["ticker"] for m in only] == [t] and [m["ticker"] for m in excl] == [plain]
    sim.stop()
    facts = {f["ticker"]: f["mve"] for f in truth_markets(tmp_path / "gt")}
    assert facts == {t: True, plain: False}


def test_generator_mve_fraction(keys_dir: Path) -> None:
    base = quiet_config(keys_dir=keys_dir)
    base.generator.create_rate = 20.0
    with start_in_thread(config_from_switches({"mve_fraction": 1.0}, base)) as sim:
        sim.advance_seconds(0.5)
        tickers = sim.tickers()
        assert tickers and all(t.startswith("KXMVE") for t in tickers)
        assert all(sim.market(t).mve for t in tickers)


# ---- REST -----------------------------------------------------------------------------------


def test_rest_clock_offset_and_whole_seconds(start: Any) -> None:
    sim = start(clock_offset_s=-3.0, rest_time_precision="s")
    sim.advance_seconds(1.25)
    with Client(sim) as c:
        c.subscribe([LC])
        t = sim.create_market("KXC-1", open_in_s=0.5)
        created = c.until(lambda m: m["msg"].get("event_type") == "created")[-1]["msg"]
    m = sim.market(t)
    assert m.created_ms == int(T0 * 1000) + 1250
    body = http_get(f"{sim.rest_url}/markets/{t}")[1]["market"]
    # exchange clock = true - 3 s, whole seconds, truncated
    assert body["created_time"] == rfc3339(int(T0 * 1000) + 1000 - 3000)
    assert body["open_time"] == rfc3339(int(T0 * 1000) + 1000 - 3000)
    assert created["open_ts"] == m.open_ms // 1000 - 3
    assert created["close_ts"] == m.close_ms // 1000 - 3
    # the created_ts filters read the exchange's clock too
    ex_created = int(T0) + 1 - 3

    def listed(**q: Any) -> list[str]:
        url = f"{sim.rest_url}/markets?{urllib.parse.urlencode(q)}"
        status, b = http_get(url)
        assert status == 200, b
        return [x["ticker"] for x in b["markets"]]

    assert listed(min_created_ts=ex_created) == [t]
    assert listed(min_created_ts=ex_created + 1) == []
    assert listed(max_created_ts=ex_created - 1) == []
    # one exchange clock: book deltas and the REST Date header read it too
    with Client(sim) as c:
        c.subscribe([OB], market_tickers=[t])
        c.recv()
        sim.push_delta(t, "yes", 40, 1)
        assert c.recv()["msg"]["ts_ms"] == sim.call(lambda: sim.sim.engine.now_ms) - 3000
    with urllib.request.urlopen(f"{sim.rest_url}/markets/{t}", timeout=10) as r:
        date = parsedate_to_datetime(r.headers["Date"]).timestamp()
    assert date == sim.call(lambda: sim.sim.engine.now_ms) // 1000 - 3


def test_rest_filters(start: Any) -> None:
    sim = start()
    a = sim.create_market("KXF-A")
    sim.advance_seconds(2)
    b = sim.create_market("KXF-B")
    sim.determine(b)
    mv = sim.create_market(mve=True)

    def listed(**q: Any) -> list[str]:
        status, body = http_get(f"{sim.rest_url}/markets?{urllib.parse.urlencode(q)}")
        assert status == 200, body
        return [x["ticker"] for x in body["markets"]]

    assert listed(min_created_ts=int(T0) + 1) == [b, mv]
    assert listed(max_created_ts=int(T0) + 1) == [a]
    assert listed(tickers=f"{a},{mv}") == [a, mv]
    assert listed(mve_filter="exclude", status="closed") == [b]
    assert listed(mve_filter="only") == [mv]
    assert listed(status="open", mve_filter="exclude") == [a]
    assert http_get(f"{sim.rest_url}/markets?mve_filter=maybe")[0] == 400


def test_rest_unknown_params_rejected(start: Any) -> None:
    sim = start(
        rest_unknown_params="reject", rest_unsupported_params="min_created_ts,tickers,mve_filter"
    )
    a = sim.create_market("KXU-A")
    status, body = http_get(f"{sim.rest_url}/markets?min_created_ts=0&limit=5")
    assert status == 400 and "min_created_ts" in body["message"]
    status, body = http_get(f"{sim.rest_url}/markets?whatever=1")
    assert status == 400 and "whatever" in body["message"]
    status, body = http_get(f"{sim.rest_url}/markets?status=open&limit=5")
    assert status == 200 and [m["ticker"] for m in body["markets"]] == [a]
    assert [e["params"] for e in _effects(sim, "rest_rejected")] == [
        ["min_created_ts"],
        ["whatever"],
    ]


def test_rest_unsupported_params_silently_ignored(start: Any) -> None:
    sim = start(rest_unsupported_params="tickers")
    a, b = sim.create_market("KXG-A"), sim.create_market("KXG-B")
    status, body = http_get(f"{sim.rest_url}/markets?tickers={a}")
    assert status == 200 and [m["ticker"] for m in body["markets"]] == [a, b]
    assert [e["params"] for e in _effects(sim, "rest_ignored")] == [["tickers"]]


# ---- connection level ---------------------------------------------------------------------


class _PongRecorder(ClientConnection):
    """A client connection that remembers every pong payload it receives."""

    pongs: list[bytes]

    def acknowledge_pings(self, data: bytes) -> None:
        self.__dict__.setdefault("pongs", []).append(bytes(data))
        super().acknowledge_pings(data)


@pytest.mark.parametrize("mode", ["echo", "empty"])
def test_pong_payload(start: Any, mode: str) -> None:
    from websockets.sync.client import connect

    sim = start(pong=mode)
    hdrs = auth_headers(sim.private_key_path, sim.key_id)
    with connect(sim.ws_url, additional_headers=hdrs, create_connection=_PongRecorder) as ws:
        ws.ping(b"are-you-there")
        _wait(lambda: ws.__dict__.get("pongs"), "a pong")
        assert ws.__dict__["pongs"] == [b"are-you-there" if mode == "echo" else b""]
    assert sim.faults.empty_pongs == (1 if mode == "empty" else 0)


def test_async_error_ends_the_sid(start: Any) -> None:
    sim = start()
    a = sim.create_market("KXE-A")
    with Client(sim) as c:
        c.subscribe([LC])
        sid = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
        c.recv()
        assert sim.async_error(25, OB) == 1
        err = c.recv()
        assert err == {"type": "error", "sid": sid, "msg": {"code": 25, "msg": err["msg"]["msg"]}}
        sim.push_delta(a, "yes", 20, 1)  # nothing more on the dead sid
        assert [x["channel"] for x in _next_is_list_reply(c)["msg"]] == [LC]
    (e,) = _effects(sim, "async_error")
    assert (e["sid"], e["code"], e["tickers"]) == (sid, 25, [a])


def test_async_error_rate(start: Any) -> None:
    sim = start(async_error_rate=1000.0, async_error_codes="17")
    with Client(sim) as c:
        sid = c.subscribe([LC])["msg"]["sid"]
        sim.advance(1)  # 10 ms at 1000/s: certain
        assert c.recv() == {
            "type": "error",
            "sid": sid,
            "msg": {"code": 17, "msg": "Internal error"},
        }
    assert sim.faults.async_errors == 1


def test_close_code_now_and_by_rate(start: Any) -> None:
    sim = start()
    with Client(sim) as c:
        sim.close_connections(4001, "auth expired")
        with pytest.raises(ConnectionClosed) as info:
            c.recv()
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "auth expired")
    sim2 = start(autostart=True, close_rate=1000.0, close_code=4005)
    with Client(sim2) as c, pytest.raises(ConnectionClosed) as info:
        c.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4005
    assert [e["code"] for e in _effects(sim2, "close")][:1] == [4005]


# ---- the switch table ---------------------------------------------------------------------


def test_every_switch_has_a_flag_with_its_section_in_help() -> None:
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = out.getvalue()
    for sw in SWITCHES:
        assert sw.flag in text, sw.name
    flat = " ".join(text.split())
    for sw in SWITCHES:
        assert sw.section.split(",")[0] in flat


def test_cli_flags_reach_the_config(tmp_path: Path) -> None:
    ns = build_parser().parse_args(
        [
            "serve", "--keys-dir", str(tmp_path), "--get-snapshot-ok", "none",
            "--duplicate-subscribe", "merge", "--clock-offset-s", "-2.5", "--close-at", "1,3",
            "--async-error-codes", "10,25", "--rest-unsupported-params", "tickers,mve_filter",
            "--mve-fraction", "0.3", "--legacy", "--pong", "empty",
        ]
    )  # fmt: skip
    cfg = config_from_args(ns)
    v = switch_values(cfg)
    assert v["get_snapshot_ok"] == "none" and v["duplicate_subscribe"] == "merge"
    assert v["clock_offset_s"] == -2.5 and v["close_at"] == (1.0, 3.0)
    assert v["async_error_codes"] == (10, 25)
    assert v["rest_unsupported_params"] == ("tickers", "mve_filter")
    assert v["mve_fraction"] == 0.3 and v["legacy"] and v["pong"] == "empty"
    assert cfg.generator.legacy and cfg.protocol.legacy
    assert switch_values(config_from_args(build_parser().parse_args(
        ["serve", "--keys-dir", str(tmp_path)]))) == defaults()  # fmt: skip


def test_knob_flags_take_the_dataclass_defaults_and_reach_the_config(tmp_path: Path) -> None:
    """The generator and fault flags are built from GenConfig and FaultConfig: no flag given is
    their defaults exactly; each kind of flag (number, duration, comma list, renamed) lands in its
    field; a bad value is a one-line argparse error."""
    parse = build_parser().parse_args
    base = ["serve", "--keys-dir", str(tmp_path)]
    cfg = config_from_args(parse(base))
    assert cfg.generator == GenConfig() and cfg.faults == FaultConfig()
    cfg = config_from_args(
        parse(
            [
                *base, "--initial-markets", "3", "--lifetime", "3:4", "--no-regimes",
                "--drop-at", "1,2.5", "--malformed-kinds", "not_json", "--reject-first", "2",
                "--lifecycle-delay-max", "1.5", "--reject-status", "429", "--gap-rate", "0.1",
            ]
        )
    )  # fmt: skip
    g, f = cfg.generator, cfg.faults
    assert (g.initial_markets, g.lifetime, g.regimes) == (3, Dist("3:4"), False)
    assert (f.drop_at, f.malformed_kinds, f.reject_first_n) == ((1.0, 2.5), ("not_json",), 2)
    assert (f.lifecycle_delay_max_s, f.reject_status, f.gap_rate) == (1.5, 429, 0.1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse(["serve", "--help"])
    assert {
        "--create-rate", "--initial-markets", "--lifetime", "--open-delay", "--determine-delay",
        "--settle-delay", "--delta-rate", "--max-live-markets", "--undocumented-event-prob",
        "--gap-rate", "--duplicate-rate", "--malformed-rate", "--malformed-kinds",
        "--subscribe-error-rate", "--subscribe-error-code", "--lifecycle-delay-rate",
        "--lifecycle-delay-max", "--drop-rate", "--drop-at", "--drop-mode", "--reject-after-drop",
        "--reject-first", "--reject-status", "--stall-every", "--stall-for", "--burst-every",
        "--burst-size",
    } <= set(out.getvalue().split())  # fmt: skip
    for bad in (["--lifetime", "soon"], ["--drop-at", "1,x"]):
        with pytest.raises(SystemExit) as e:
            parse([*base, *bad])
        assert e.value.code == 2


def test_profile_sets_switches_and_explicit_flags_win(tmp_path: Path) -> None:
    reports = sorted((Path(__file__).resolve().parents[2] / "probe" / "reports").glob("*.json"))
    if not reports:
        pytest.skip("no probe report committed")
    from simulator.profile import load_profile

    for report in reports:
        prof = load_profile(report)
        args = ["serve", "--keys-dir", str(tmp_path), "--profile", str(report)]
        v = switch_values(config_from_args(build_parser().parse_args(args)))
        assert {k: v[k] for k in prof} == prof
        flip = "empty" if prof.get("pong", "echo") == "echo" else "echo"
        v = switch_values(config_from_args(build_parser().parse_args([*args, "--pong", flip])))
        if flip == "empty":  # a flag set away from its default wins over the profile
            assert v["pong"] == "empty"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"no_such": 1}, "unknown switch 'no_such'"),
        ({"pong": "loud"}, "echo|empty"),
        ({"async_error_codes": "11"}, "async_error_codes"),
        ({"rest_unsupported_params": "nope"}, "rest_unsupported_params"),
        ({"lifecycle_drop_rate": "lots"}, "lifecycle_drop_rate"),
        ({"close_code": 1006}, "close_code"),
    ],
)
def test_bad_switch_values_say_what_is_allowed(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        config_from_switches(values)


def _value(sw: Any) -> st.SearchStrategy[Any]:
    if sw.kind in (Kind.CHOICE, Kind.BOOL):
        return st.sampled_from(sw.allowed)
    if sw.name == "close_code":
        return st.integers(4000, 4999)
    if sw.kind is Kind.INT:
        return st.integers(1, 500)
    if sw.kind is Kind.FLOAT:
        lo = -60.0 if sw.name == "clock_offset_s" else 0.0
        return st.floats(lo, 60.0, allow_nan=False)
    if sw.kind is Kind.FLOATS:
        return st.lists(st.floats(0, 100, allow_nan=False), max_size=3).map(tuple)
    return st.lists(st.sampled_from(sw.allowed), min_size=1, max_size=3, unique=True).map(tuple)


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries({}, optional={sw.name: _value(sw) for sw in SWITCHES}))
def test_config_from_switches_round_trips(values: dict[str, Any]) -> None:
    got = switch_values(config_from_switches(values))
    assert got == {**defaults(), **values}


def test_switch_defaults_are_the_quiet_exchange() -> None:
    """Fault-like switches are off by default, so a plain run is the most likely real one."""
    d = defaults()
    for name in ("lifecycle_drop_rate", "async_error_rate", "close_rate", "mve_fraction"):
        assert d[name] == 0.0
    assert d["close_at"] == () and d["rest_unsupported_params"] == ()

"""Commands, replies, sids and seqs, channels and wire formats, against a real socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulator.server import SimulatorThread, start_in_thread
from simulator.wire import ProtocolOptions
from tests.simulator.helpers import Client, quiet_config

OB = "orderbook_delta"
LC = "market_lifecycle_v2"


@pytest.fixture
def two_markets(sim: SimulatorThread) -> tuple[str, str]:
    a = sim.create_market("KXA-26JAN01-B45.5")
    b = sim.create_market("KXB-26JAN01-T3.00")
    sim.push_delta(a, "yes", 40, 10)
    sim.push_delta(a, "no", 55, "2.50")
    return a, b


def _start(keys_dir: Path, **protocol: Any) -> SimulatorThread:
    return start_in_thread(quiet_config(keys_dir=keys_dir, protocol=ProtocolOptions(**protocol)))


def test_subscribe_snapshot_then_contiguous_seq(
    sim: SimulatorThread, two_markets: tuple[str, str]
) -> None:
    a, b = two_markets
    with Client(sim) as c:
        reply = c.subscribe([OB], market_tickers=[a, b])
        assert reply["type"] == "subscribed" and reply["msg"]["channel"] == OB
        sid = reply["msg"]["sid"]
        assert isinstance(sid, int) and sid >= 1
        snaps = c.recv_n(2)
        assert [s["type"] for s in snaps] == ["orderbook_snapshot"] * 2
        assert snaps[0]["msg"] == {
            "market_ticker": a,
            "market_id": sim.market(a).market_id,
            "yes_dollars_fp": [["0.4000", "10.00"]],
            "no_dollars_fp": [["0.5500", "2.50"]],
        }
        assert "yes_dollars_fp" not in snaps[1]["msg"] and "no_dollars_fp" not in snaps[1]["msg"]
        sim.push_delta(b, "yes", "0.3300", 5)
        sim.push_delta(a, "yes", 40, -10)
        sim.push_delta(b, "no", 60, 1)
        deltas = c.recv_n(3)
        seqs = [m["seq"] for m in snaps + deltas]
        assert seqs == list(range(seqs[0], seqs[0] + 5))  # one counter per sid, all markets
        assert {m["sid"] for m in snaps + deltas} == {sid}
        d = deltas[1]
        assert d["type"] == "orderbook_delta"
        assert d["msg"]["market_ticker"] == a and d["msg"]["side"] == "yes"
        assert d["msg"]["price_dollars"] == "0.4000" and d["msg"]["delta_fp"] == "-10.00"
        assert isinstance(d["msg"]["ts_ms"], int) and d["msg"]["market_id"]
        assert deltas[0]["msg"]["price_dollars"] == "0.3300"


def test_market_ticker_singular_and_send_initial_snapshot(
    sim: SimulatorThread, two_markets: tuple[str, str]
) -> None:
    a, _ = two_markets
    with Client(sim) as c:
        reply = c.subscribe([OB], market_ticker=a, send_initial_snapshot=True)
        assert reply["type"] == "subscribed"
        assert c.recv()["type"] == "orderbook_snapshot"


def test_one_subscribed_per_channel(sim: SimulatorThread, two_markets: tuple[str, str]) -> None:
    a, _ = two_markets
    with Client(sim) as c:
        cid = c.send("subscribe", {"channels": [LC, OB], "market_tickers": [a]})
        msgs = c.recv_n(3)
        subscribed = [m for m in msgs if m["type"] == "subscribed"]
        assert [m["id"] for m in subscribed] == [cid, cid]
        assert {m["msg"]["channel"] for m in subscribed} == {LC, OB}
        assert len({m["msg"]["sid"] for m in subscribed}) == 2
        # subscribed comes before that sid's snapshot
        assert msgs[-1]["type"] == "orderbook_snapshot"


def test_add_delete_get_snapshot(sim: SimulatorThread, two_markets: tuple[str, str]) -> None:
    a, b = two_markets
    with Client(sim) as c:
        sid = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
        snap = c.recv()
        cid = c.send(
            "update_subscription", {"sids": [sid], "market_tickers": [b], "action": "add_markets"}
        )
        ok = c.recv()
        assert ok == {
            "id": cid,
            "sid": sid,
            "seq": snap["seq"] + 1,
            "type": "ok",
            "msg": {"market_tickers": [a, b]},
        }
        snap_b = c.recv()
        assert snap_b["type"] == "orderbook_snapshot" and snap_b["msg"]["market_ticker"] == b
        assert snap_b["seq"] == ok["seq"] + 1 and snap_b["sid"] == sid

        cid = c.send(
            "update_subscription", {"sid": sid, "market_tickers": [a], "action": "delete_markets"}
        )
        ok = c.recv()
        assert (
            ok["type"] == "ok"
            and ok["msg"] == {"market_tickers": [b]}
            and ok["seq"] == snap_b["seq"] + 1
        )
        sim.push_delta(a, "yes", 41, 1)  # no longer subscribed: not delivered
        sim.push_delta(b, "yes", 20, 3)
        d = c.recv()
        assert d["msg"]["market_ticker"] == b and d["seq"] == ok["seq"] + 1

        cid = c.send(
            "update_subscription", {"sid": sid, "market_tickers": [b], "action": "get_snapshot"}
        )
        ok = c.recv()
        assert ok["type"] == "ok" and ok["id"] == cid and ok["seq"] == d["seq"] + 1
        snap = c.recv()
        assert snap["type"] == "orderbook_snapshot" and snap["seq"] == ok["seq"] + 1
        assert snap["msg"]["yes_dollars_fp"] == [["0.2000", "3.00"]]
        cid = c.send("list_subscriptions")
        assert c.recv() == {"id": cid, "type": "ok", "msg": [{"channel": OB, "sid": sid}]}


def test_unsubscribe(sim: SimulatorThread, two_markets: tuple[str, str]) -> None:
    a, _ = two_markets
    with Client(sim) as c:
        lc = c.subscribe([LC])["msg"]["sid"]
        ob = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
        snap = c.recv()
        cid = c.send("unsubscribe", {"sids": [ob]})
        assert c.recv() == {"id": cid, "sid": ob, "seq": snap["seq"] + 1, "type": "unsubscribed"}
        sim.push_delta(a, "yes", 30, 1)
        sim.deactivate(a)
        m = c.recv()  # the delta is not delivered; the lifecycle event is
        assert m["type"] == LC and m["sid"] == lc
        cid = c.send("list_subscriptions")
        assert c.recv()["msg"] == [{"channel": LC, "sid": lc}]


def test_reply_seq_echo_switch(keys_dir: Path) -> None:
    with _start(keys_dir, reply_seq="echo") as sim:
        a = sim.create_market("KXE-1")
        with Client(sim) as c:
            sid = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
            snap = c.recv()
            c.send(
                "update_subscription",
                {"sid": sid, "market_tickers": [a], "action": "delete_markets"},
            )
            assert c.recv()["seq"] == snap["seq"]
            sim.create_market("KXE-2")
            c.send(
                "update_subscription",
                {"sid": sid, "market_tickers": ["KXE-2"], "action": "add_markets"},
            )
            assert c.recv()["seq"] == snap["seq"]
            assert c.recv()["seq"] == snap["seq"] + 1


def _err(c: Client, cmd: str, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    cid = c.send(cmd, params, **extra)
    reply = c.recv()
    assert reply["type"] == "error" and reply["id"] == cid, reply
    return reply["msg"]


@pytest.mark.parametrize(
    ("cmd", "params", "code"),
    [
        ("subscribe", None, 2),
        ("subscribe", {}, 3),
        ("subscribe", {"channels": []}, 3),
        ("subscribe", {"channels": ["nope"]}, 8),
        ("subscribe", {"channels": [OB]}, 14),
        ("subscribe", {"channels": [OB], "market_tickers": "KXA"}, 11),
        ("unsubscribe", None, 2),
        ("unsubscribe", {}, 4),
        ("unsubscribe", {"sids": [99]}, 7),
        ("update_subscription", None, 2),
        ("update_subscription", {"action": "add_markets", "market_tickers": ["X"]}, 12),
        ("update_subscription", {"sid": 1, "sids": [1], "action": "add_markets"}, 12),
        ("update_subscription", {"sids": [1, 2], "action": "add_markets"}, 12),
        ("update_subscription", {"sid": 99, "action": "add_markets"}, 7),
        ("frobnicate", {}, 5),
    ],
)
def test_error_codes(
    sim: SimulatorThread, cmd: str, params: dict[str, Any] | None, code: int
) -> None:
    with Client(sim) as c:
        msg = _err(c, cmd, params)
        assert msg["code"] == code and isinstance(msg["msg"], str) and msg["msg"]


def test_error_codes_needing_a_subscription(
    sim: SimulatorThread, two_markets: tuple[str, str]
) -> None:
    a, _ = two_markets
    with Client(sim) as c:
        sid = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
        c.recv()
        lc = c.subscribe([LC])["msg"]["sid"]
        assert _err(c, "update_subscription", {"sid": sid, "market_tickers": [a]})["code"] == 15
        assert (
            _err(c, "update_subscription", {"sid": sid, "market_tickers": [a], "action": "x"})[
                "code"
            ]
            == 13
        )
        assert (
            _err(
                c,
                "update_subscription",
                {"sid": lc, "market_tickers": [a], "action": "add_markets"},
            )["code"]
            == 13
        )
        assert _err(c, "update_subscription", {"sid": sid, "action": "add_markets"})["code"] == 14
        msg = _err(
            c,
            "update_subscription",
            {"sid": sid, "market_tickers": ["NOPE-1"], "action": "add_markets"},
        )
        assert msg == {"code": 16, "msg": "Market not found", "market_ticker": "NOPE-1"}
        msg = _err(c, "subscribe", {"channels": [OB], "market_tickers": [a, "NOPE-2"]})
        assert msg["code"] == 16 and msg["market_ticker"] == "NOPE-2"


def test_not_json_is_error_1(sim: SimulatorThread) -> None:
    with Client(sim) as c:
        c.send_raw("{not json")
        reply = c.recv()
        assert reply == {"type": "error", "msg": {"code": 1, "msg": "Unable to process message"}}


def test_market_limit_error_26(keys_dir: Path) -> None:
    with _start(keys_dir, max_markets_per_sub=2) as sim:
        ts = [sim.create_market(f"KXL-{i}") for i in range(3)]
        with Client(sim) as c:
            assert _err(c, "subscribe", {"channels": [OB], "market_tickers": ts})["code"] == 26
            sid = c.subscribe([OB], market_tickers=ts[:2])["msg"]["sid"]
            c.recv_n(2)
            msg = _err(
                c,
                "update_subscription",
                {"sid": sid, "market_tickers": ts[2:], "action": "add_markets"},
            )
            assert msg["code"] == 26


def test_duplicate_subscribe_switch(keys_dir: Path) -> None:
    for mode in ("error", "new_sid"):
        with _start(keys_dir, duplicate_subscribe=mode) as sim:
            a = sim.create_market("KXD-1")
            with Client(sim) as c:
                first = c.subscribe([LC])["msg"]["sid"]
                ob = c.subscribe([OB], market_tickers=[a])["msg"]["sid"]
                c.recv()
                if mode == "error":
                    assert _err(c, "subscribe", {"channels": [LC]})["code"] == 6
                    msg = _err(c, "subscribe", {"channels": [OB], "market_tickers": [a]})
                    assert msg["code"] == 6
                else:
                    again = c.subscribe([LC])
                    assert again["type"] == "subscribed" and again["msg"]["sid"] not in (first, ob)


def test_auth_required_error_9(keys_dir: Path) -> None:
    with start_in_thread(quiet_config(keys_dir=keys_dir, allow_unauthenticated=True)) as sim:
        a = sim.create_market("KXU-1")
        with Client(sim, headers={}) as c:
            assert c.subscribe([LC])["type"] == "subscribed"
            assert _err(c, "subscribe", {"channels": [OB], "market_tickers": [a]})["code"] == 9


def test_lifecycle_events_and_fields(sim: SimulatorThread) -> None:
    with Client(sim) as c:
        sid = c.subscribe([LC])["msg"]["sid"]
        t = sim.create_market(
            "KXLC-26JAN01-B45.5", event_ticker="KXLC-26JAN01", price_level_structure="deci_cent"
        )
        ev, created = c.recv_n(2)
        assert ev["type"] == "event_lifecycle" and ev["sid"] == sid and "seq" not in ev
        assert set(ev["msg"]) >= {
            "event_ticker",
            "exchange_index",
            "title",
            "subtitle",
            "collateral_return_type",
            "series_ticker",
        }
        assert created["type"] == LC and "seq" not in created
        cm = created["msg"]
        assert cm["market_ticker"] == t and cm["event_type"] == "created"
        assert isinstance(cm["open_ts"], int) and isinstance(cm["close_ts"], int)
        assert (
            cm["price_level_structure"] == "deci_cent" and cm["price_ranges"][0]["step"] == "0.0010"
        )
        assert cm["additional_metadata"]["event_ticker"] == "KXLC-26JAN01"
        sim.deactivate(t)
        sim.activate(t)
        sim.update_close(t, 1_900_000_000)
        sim.metadata_update(t)
        sim.determine(t, "no")
        sim.settle(t)
        sim.event_fee_update("KXLC-26JAN01", None, None)
        sim.undocumented_event(t)
        msgs = c.recv_n(8)
        assert [m["msg"].get("event_type") for m in msgs] == [
            "deactivated", "activated", "close_date_updated", "metadata_updated",
            "determined", "settled", None, "fractional_trading_updated",
        ]  # fmt: skip
        assert (
            msgs[0]["msg"]["is_deactivated"] is True and msgs[1]["msg"]["is_deactivated"] is False
        )
        assert msgs[2]["msg"]["close_ts"] == 1_900_000_000
        det = msgs[4]["msg"]
        assert (
            det["result"] == "no"
            and det["settlement_value"] == "0.0000"
            and isinstance(det["determination_ts"], int)
        )
        assert isinstance(msgs[5]["msg"]["settled_ts"], int)
        fee = msgs[6]
        assert fee["type"] == "event_fee_update"
        assert fee["msg"] == {
            "event_ticker": "KXLC-26JAN01",
            "fee_type_override": None,
            "fee_multiplier_override": None,
        }


def test_lifecycle_seq_switch(keys_dir: Path) -> None:
    with _start(keys_dir, lifecycle_seq=True) as sim, Client(sim) as c:
        c.subscribe([LC])
        sim.create_market("KXS-1")
        a, b = c.recv_n(2)
        assert b["seq"] == a["seq"] + 1


def test_empty_side_switch_and_subpenny_fractional(keys_dir: Path) -> None:
    with _start(keys_dir, empty_side="empty_list") as sim:
        t = sim.create_market("KXF-1", price_level_structure="tapered_deci_cent", fractional=True)
        sim.push_delta(t, "yes", "0.0450", "2.5")
        with Client(sim) as c:
            c.subscribe([OB], market_tickers=[t])
            snap = c.recv()["msg"]
            assert snap["yes_dollars_fp"] == [["0.0450", "2.50"]] and snap["no_dollars_fp"] == []


def test_legacy_format(keys_dir: Path) -> None:
    with start_in_thread(quiet_config(keys_dir=keys_dir, legacy=True)) as sim:
        t = sim.create_market("KXOLD-1")
        sim.push_delta(t, "yes", 45, 100)
        with Client(sim) as c:
            c.subscribe([LC])
            c.subscribe([OB], market_tickers=[t])
            snap = c.recv()["msg"]
            assert snap["yes"] == [[45, 100]] and snap["yes_dollars"] == [["0.4500", 100]]
            assert "no" not in snap and "yes_dollars_fp" not in snap
            sim.push_delta(t, "yes", 45, -50)
            d = c.recv()["msg"]
            assert d["price"] == 45 and d["delta"] == -50 and d["price_dollars"] == "0.4500"
            assert isinstance(d["ts"], str) and d["ts"].endswith("Z") and "ts_ms" not in d
            sim.create_market("KXOLD-2")
            created = c.until(lambda m: m["type"] == LC)[-1]["msg"]
            assert "price_level_structure" not in created and "exchange_index" not in created


def test_server_sends_heartbeat_pings(keys_dir: Path) -> None:
    """Ping frames with payload b"heartbeat", observed with a raw frame reader."""
    import base64
    import os
    import socket
    from urllib.parse import urlsplit

    from tests.simulator.helpers import auth_headers

    with start_in_thread(quiet_config(keys_dir=keys_dir, ping_interval=0.1)) as sim:
        u = urlsplit(sim.ws_url)
        assert u.hostname and u.port
        s = socket.create_connection((u.hostname, u.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = auth_headers(sim.private_key_path, sim.key_id)
        req = (
            f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
            + "\r\n"
        )
        s.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        assert buf.startswith(b"HTTP/1.1 101")
        rest = buf.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 2 + len(b"heartbeat"):
            rest += s.recv(4096)
        assert rest[0] == 0x89 and rest[1] == len(b"heartbeat")  # FIN + ping, unmasked
        assert rest[2:11] == b"heartbeat"
        s.close()

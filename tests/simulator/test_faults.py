"""Each fault knob does what it says, and is counted."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from simulator.faults import FaultConfig
from simulator.market import Dist, GenConfig
from simulator.server import SimulatorThread, start_in_thread
from tests.simulator.helpers import Client, quiet_config

OB = "orderbook_delta"
LC = "market_lifecycle_v2"


def _start(keys_dir: Path, **faults: Any) -> SimulatorThread:
    return start_in_thread(quiet_config(keys_dir=keys_dir, faults=FaultConfig(**faults)))


def _live(keys_dir: Path, **faults: Any) -> SimulatorThread:
    """A running clock with generated trading, for the time-driven knobs."""
    gen = GenConfig(
        create_rate=0,
        initial_markets=5,
        delta_rate=1_000,
        regimes=False,
        never_trade_fraction=0.0,
        lifetime=Dist("60"),
    )
    cfg = quiet_config(keys_dir=keys_dir, faults=FaultConfig(**faults), autostart=True)
    cfg.generator = gen
    return start_in_thread(cfg)


def _book_stream(sim: SimulatorThread, n_deltas: int) -> tuple[Client, str]:
    t = sim.create_market("KXF-1")
    c = Client(sim)
    c.subscribe([OB], market_tickers=[t])
    for i in range(n_deltas):
        sim.push_delta(t, "yes", 10 + i, 1)
    return c, t


def test_gap(keys_dir: Path) -> None:
    with _start(keys_dir, gap_rate=1.0) as sim:
        c, _ = _book_stream(sim, 3)
        with c:
            seqs = [m["seq"] for m in c.recv_n(4)]
            assert [b - a for a, b in itertools.pairwise(seqs)] == [2, 2, 2]
            assert sim.faults.gaps == 4


def test_duplicate(keys_dir: Path) -> None:
    with _start(keys_dir, duplicate_rate=1.0) as sim:
        c, _ = _book_stream(sim, 2)
        with c:
            frames = [c.recv_text() for _ in range(6)]
            assert frames[0] == frames[1] and frames[2] == frames[3] and frames[4] == frames[5]
            assert frames[0] != frames[2]
            assert sim.faults.duplicates == 3


@pytest.mark.parametrize("kind", ["not_json", "truncated", "unknown_type", "missing_fields"])
def test_malformed(keys_dir: Path, kind: str) -> None:
    with _start(keys_dir, malformed_rate=1.0, malformed_kinds=(kind,)) as sim:
        c, _ = _book_stream(sim, 1)
        with c:
            good, bad = c.recv_text(), c.recv_text()
            json.loads(good)
            if kind in ("not_json", "truncated"):
                with pytest.raises(json.JSONDecodeError):
                    json.loads(bad)
                if kind == "truncated":
                    assert good.startswith(bad) and len(bad) < len(good)
            else:
                obj = json.loads(bad)
                if kind == "unknown_type":
                    assert obj["type"] not in ("orderbook_snapshot", "orderbook_delta")
                else:
                    assert obj["type"] == "orderbook_snapshot" and "seq" not in obj
                    assert "market_ticker" not in obj["msg"]
            # the real stream goes on, seq intact
            assert json.loads(c.recv_text())["seq"] == json.loads(good)["seq"] + 1
            assert sim.faults.malformed == 2 and sim.faults.malformed_by_kind == {kind: 2}


def test_subscribe_error(keys_dir: Path) -> None:
    with (
        _start(keys_dir, subscribe_error_rate=1.0, subscribe_error_code=17) as sim,
        Client(sim) as c,
    ):
        reply = c.subscribe([LC])
        assert reply["type"] == "error" and reply["msg"]["code"] == 17
        assert sim.faults.subscribe_errors == 1


def test_lifecycle_delay_and_reorder(keys_dir: Path) -> None:
    with (
        _start(keys_dir, lifecycle_delay_rate=1.0, lifecycle_delay_max_s=1.0) as sim,
        Client(sim) as c,
    ):
        c.subscribe([LC])
        tickers = [sim.create_market(f"KXD-{i}") for i in range(6)]
        assert sim.faults.lifecycle_delayed == 12  # event_lifecycle + created, each
        c.send("list_subscriptions")  # nothing was released yet: the ack comes first
        assert c.recv()["type"] == "ok"
        sim.advance_seconds(1.1)
        got = c.recv_n(12)
        created = [m["msg"]["market_ticker"] for m in got if m["type"] == LC]
        assert sorted(created) == tickers
        emitted = []
        for t in tickers:
            emitted += [("event_lifecycle", t.replace("KXD-", "KXTEST-")), (LC, t)]
        order = [
            (m["type"], m["msg"].get("market_ticker", m["msg"].get("event_ticker"))) for m in got
        ]
        # count arrivals that come after something emitted later
        idx = {m: i for i, m in enumerate(emitted) if m[0] == LC}
        pos = [idx[o] for o in order if o[0] == LC]
        late = sum(1 for i, p in enumerate(pos) if p < max(pos[: i + 1]))
        assert late >= 1 and sim.faults.lifecycle_reordered >= late


def test_drop_connections_now(keys_dir: Path) -> None:
    for mode in ("abort", "close"):
        with _start(keys_dir, drop_mode=mode) as sim, Client(sim) as c:
            c.subscribe([LC])
            assert sim.drop_connections() == 1
            with pytest.raises(ConnectionClosed):
                c.recv()
            assert sim.faults.drops == 1


def test_drop_at_given_time(keys_dir: Path) -> None:
    with _live(keys_dir, drop_at=(0.3,)) as sim, Client(sim) as c:
        c.subscribe([LC])
        with pytest.raises(ConnectionClosed):
            while True:
                c.recv()
        assert sim.faults.drops == 1


def test_drop_at_random(keys_dir: Path) -> None:
    with _live(keys_dir, drop_rate=20.0) as sim, Client(sim) as c:
        # at 20 drops/s the drop may even come before the subscribe reply
        with pytest.raises(ConnectionClosed):
            c.subscribe([LC])
            while True:
                c.recv()
        assert sim.faults.drops >= 1


def test_reject_first_handshakes(keys_dir: Path) -> None:
    for status in (503, 429):
        with _start(keys_dir, reject_first_n=2, reject_status=status) as sim:
            for _ in range(2):
                with pytest.raises(InvalidStatus) as ei:
                    Client(sim)
                assert ei.value.response.status_code == status
                assert json.loads(ei.value.response.body)["code"]
                if status == 429:
                    assert ei.value.response.headers["Retry-After"] == "1"
            with Client(sim) as c:
                assert c.subscribe([LC])["type"] == "subscribed"
            assert sim.faults.rejected_handshakes == 2


def test_reject_after_drop(keys_dir: Path) -> None:
    with _start(keys_dir, reject_after_drop_s=60) as sim:
        c = Client(sim)
        sim.drop_connections()
        c.close()
        with pytest.raises(InvalidStatus) as ei:
            Client(sim)
        assert ei.value.response.status_code == 503
        assert sim.faults.rejected_handshakes == 1


def test_stall_then_burst_loses_nothing(keys_dir: Path) -> None:
    with _live(keys_dir, stall_every_s=0.1, stall_for_s=0.2) as sim, Client(sim) as c:
        tickers = sim.tickers()
        c.subscribe([OB], market_tickers=tickers)
        msgs = c.recv_n(300)
        seqs = [m["seq"] for m in msgs]
        assert seqs == list(range(seqs[0], seqs[0] + 300))
        assert sim.faults.stalls >= 1


def test_bursts(keys_dir: Path) -> None:
    with _live(keys_dir, burst_every_s=0.1, burst_size=50) as sim, Client(sim) as c:
        c.subscribe([OB], market_tickers=sim.tickers())
        c.recv_n(200)
        assert sim.faults.bursts >= 1
        assert sim.call(lambda: sim.sim.engine.bursts_injected) >= 1

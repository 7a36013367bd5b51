"""The simulator's WebSocket shell (``simulator.websocket``): what the library's asyncio server
used to do for us, done on our own transport, checked with independent clients."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from simulator.market import Dist, GenConfig
from simulator.server import SimulatorThread, start_in_thread
from simulator.websocket import ws_text_frame
from tests.simulator.helpers import WAIT, Client, auth_headers, quiet_config
from tests.support.wait import wait_for

OB = "orderbook_delta"
LC = "market_lifecycle_v2"


def test_a_fragmented_command_is_reassembled(sim: SimulatorThread) -> None:
    with Client(sim) as c:
        text = json.dumps({"id": 7, "cmd": "subscribe", "params": {"channels": [LC]}})
        c.ws.send([text[:10], text[10:25], text[25:]])  # an iterable: one fragment each
        reply = c.recv()
        assert reply["id"] == 7 and reply["type"] == "subscribed", reply


def test_invalid_utf8_closes_with_1007(sim: SimulatorThread) -> None:
    with Client(sim) as c:
        c.ws.send(b"\xff\xfe", text=True)  # a text frame that is not UTF-8
        with pytest.raises(ConnectionClosedError) as ei:
            c.recv()
        assert ei.value.rcvd is not None and ei.value.rcvd.code == 1007


def test_backpressure_holds_the_writer_and_loses_nothing(keys_dir: Path) -> None:
    """A client that stops reading fills the socket buffers; the simulator's writer then waits
    (its transport says it cannot take more) instead of buffering without bound, and everything
    arrives once the client reads again, the sid's seq unbroken."""
    cfg = quiet_config(keys_dir=keys_dir)
    cfg.generator = GenConfig(
        create_rate=0,
        initial_markets=50,
        delta_rate=100_000,  # 1,000 deltas per step of the (test-driven) clock
        regimes=False,
        never_trade_fraction=0.0,
        lifetime=Dist("600"),
    )
    with start_in_thread(cfg) as sim:
        url = urlsplit(sim.ws_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up soon
        sock.connect((url.hostname, url.port))
        headers = auth_headers(sim.private_key_path, sim.key_id)
        with connect(sim.ws_url, sock=sock, additional_headers=headers, max_queue=None) as ws:
            cmd = {"channels": [OB], "market_tickers": sim.tickers()}
            ws.send(json.dumps({"id": 1, "cmd": "subscribe", "params": cmd}))

            def trade_until_held() -> bool:
                sim.advance(5)
                return sim.paused_writers() == 1

            wait_for(trade_until_held, "the writer to wait for the client")
            ws.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}))  # answered after all
            seqs: list[int] = []
            received = 0
            while True:
                m = json.loads(ws.recv(timeout=WAIT))
                received += 1
                if m.get("id") == 2:
                    break
                if m["type"] in ("orderbook_snapshot", "orderbook_delta"):
                    seqs.append(m["seq"])
        assert sim.stats.frames_sent == received
        assert len(seqs) > 1_000 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_ws_text_frame_header_lengths() -> None:
    """The three RFC 6455 length encodings, decoded independently of the encoder."""
    for n in (0, 125, 126, 65_535, 65_536):
        frame = ws_text_frame("x" * n)
        assert frame[0] == 0x81  # FIN + text, and no mask bit below
        code = frame[1]
        if n < 126:
            assert code == n and len(frame) == 2 + n
        elif n < 65_536:
            assert code == 126 and int.from_bytes(frame[2:4], "big") == n
        else:
            assert code == 127 and int.from_bytes(frame[2:10], "big") == n
        assert frame.endswith(b"x" * n)


def test_connections_open_is_the_set_of_open_connections(sim: SimulatorThread) -> None:
    """``connections_open`` counts handshakes done and not yet closed, whichever side closes;
    ``stats.connections_total`` only grows."""
    assert sim.connections_open == 0
    with Client(sim), Client(sim) as second:
        wait_for(lambda: sim.connections_open == 2, "both handshakes done on the server")
        assert sim.stats.connections_total == 2
        sim.drop_connections()  # the server ends both
        with pytest.raises(ConnectionClosedError):
            second.recv()
        wait_for(lambda: sim.connections_open == 0, "both drops seen by the server")
    with Client(sim):
        wait_for(lambda: sim.connections_open == 1, "the third handshake done on the server")
        assert sim.stats.connections_total == 3
    wait_for(lambda: sim.connections_open == 0, "the client's close seen by the server")

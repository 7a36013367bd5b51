"""How many messages per second one simulator process sends, with 10,000 live markets.

Three measurements, each isolating one layer:

1. ``engine``: the generator alone (random walk + true books), deltas generated per CPU second.
2. ``core``: generator + sans-I/O fan-out + frame encoding into a session outbox, no sockets.
3. ``wire``: the full simulator on a real socket, read by a counting client in another process
   (so the client does not share the simulator's core). For each offered delta rate we report
   frames the client received per second and how far the simulator's virtual clock fell behind
   (lag), which is where one process saturates.

Run: ``.venv/bin/python bench/simulator_throughput.py [--markets N] [--rates 20000,50000,100000]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import time
from pathlib import Path

from schemas.wire import DELTA_MSG
from simulator.exchange import Exchange
from simulator.faults import FaultConfig, FaultCounters
from simulator.market import Dist, Engine, GenConfig
from simulator.server import SimConfig, Simulator
from simulator.websocket import ws_text_frame
from simulator.wire import ProtocolOptions


def gen_config(markets: int, rate: float) -> GenConfig:
    return GenConfig(
        create_rate=0,
        initial_markets=markets,
        lifetime=Dist("6h"),
        open_delay=Dist("0"),
        delta_rate=rate,
        regimes=False,
        never_trade_fraction=0.0,
        max_live_markets=markets + 1,
    )


def subscribe_commands(tickers: list[str], per_command: int = 256) -> list[str]:
    """``orderbook_delta`` subscribe commands for every ticker, ``per_command`` at a time."""
    return [
        json.dumps(
            {
                "id": i + 1,
                "cmd": "subscribe",
                "params": {"channels": [DELTA_MSG], "market_tickers": tickers[i : i + per_command]},
            }
        )
        for i in range(0, len(tickers), per_command)
    ]


def bench_engine(markets: int, seconds: float) -> dict[str, float]:
    e = Engine(gen_config(markets, 100_000), seed=1, epoch_ms=0)
    e.start()
    e.take()
    n0 = e.deltas_emitted
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        e.step()
        e.take()
    dt = time.process_time() - t0
    return {"deltas_per_cpu_s": (e.deltas_emitted - n0) / dt}


def bench_core(markets: int, seconds: float) -> dict[str, float]:
    e = Engine(gen_config(markets, 100_000), seed=1, epoch_ms=0)
    ex = Exchange(e, ProtocolOptions(), FaultConfig(), FaultCounters(), seed=1)
    s = ex.open_session()
    e.start()
    e.take()
    for cmd in subscribe_commands(list(e.markets)):
        s.receive(cmd)
    s.take()
    frames = 0
    t0 = time.process_time()
    while time.process_time() - t0 < seconds:
        e.step()
        ex.pump()
        out = s.take()
        frames += len(out)
        b"".join([ws_text_frame(f) for f in out])
    dt = time.process_time() - t0
    return {"frames_per_cpu_s": frames / dt}


def _client(
    ws_url: str,
    key_id: str,
    key_path: str,
    tickers: list[str],
    seconds: float,
    q: mp.Queue,
) -> None:
    """Counting client on a raw socket: it only parses frame headers, so it is not the
    bottleneck (a websockets client tops out near the rates we want to measure)."""
    import base64
    import os
    import socket
    import struct
    from urllib.parse import urlsplit

    from recorder.auth import signer_from

    u = urlsplit(ws_url)
    if not (u.hostname and u.port):
        raise ValueError(f"simulator URL {ws_url!r} has no host and port")
    auth = signer_from(key_id, key_path).headers("GET", u.path)
    lines = [
        f"GET {u.path} HTTP/1.1",
        f"Host: {u.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in auth.items()),
    ]
    req = "\r\n".join(lines) + "\r\n\r\n"
    sock = socket.create_connection((u.hostname, u.port))
    sock.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the simulator closed the connection during the handshake")
        buf += chunk
    if not buf.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"the simulator refused the handshake: {buf[:200]!r}")
    data = bytearray(buf.split(b"\r\n\r\n", 1)[1])

    def send_text(text: str) -> None:
        p = text.encode()
        mask = os.urandom(4)
        n = len(p)
        hdr = (
            struct.pack("!BB", 0x81, 0x80 | 126) + struct.pack("!H", n)
            if n >= 126
            else struct.pack("!BB", 0x81, 0x80 | n)
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(p))
        sock.sendall(hdr + mask + masked)

    for cmd in subscribe_commands(tickers):
        send_text(cmd)
    frames = 0
    counting = False
    t_warm = time.monotonic() + 2.0
    t0 = t_end = 0.0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
        pos = 0
        n = len(data)
        while n - pos >= 2:
            ln = data[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            if n - pos < hl + ln:
                break
            pos += hl + ln
            frames += 1
        del data[:pos]
        now = time.monotonic()
        if not counting and now >= t_warm:
            counting, frames, t0, t_end = True, 0, now, now + seconds
        elif counting and now >= t_end:
            break
    q.put(frames / (time.monotonic() - t0))
    sock.close()


async def bench_wire(markets: int, rate: float, seconds: float, keys_dir: Path) -> dict[str, float]:
    cfg = SimConfig(keys_dir=keys_dir, generator=gen_config(markets, rate))
    async with Simulator(cfg) as sim:
        tickers = sim.tickers()
        q: mp.Queue = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(
            target=_client,
            args=(sim.ws_url, sim.key_id, str(sim.private_key_path), tickers, seconds, q),
        )
        p.start()
        cpu0 = time.process_time()
        t0 = time.monotonic()
        max_lag = 0
        while p.is_alive():
            await asyncio.sleep(0.2)
            max_lag = max(max_lag, sim.stats.lag_ms)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - t0)
        got = q.get(timeout=5) if not q.empty() else 0.0
        return {
            "offered_deltas_per_s": rate,
            "client_frames_per_s": round(got),
            "sim_cpu_share": round(cpu, 2),
            "final_lag_ms": sim.stats.lag_ms,
            "max_lag_ms": max_lag,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markets", type=int, default=10_000)
    ap.add_argument("--rates", default="20000,50000,100000")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--keys-dir", type=Path, default=Path("/tmp/kalshi-sim-bench-keys"))
    ns = ap.parse_args()
    random.seed(0)
    print(
        json.dumps({"bench": "engine", "markets": ns.markets, **bench_engine(ns.markets, 3)}),
        flush=True,
    )
    print(
        json.dumps({"bench": "core", "markets": ns.markets, **bench_core(ns.markets, 3)}),
        flush=True,
    )
    for r in (float(x) for x in ns.rates.split(",")):
        res = asyncio.run(bench_wire(ns.markets, r, ns.seconds, ns.keys_dir))
        print(json.dumps({"bench": "wire", "markets": ns.markets, **res}), flush=True)


if __name__ == "__main__":
    main()

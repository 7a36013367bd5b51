"""Sustained ingest, end to end: the real recorder process vs a bare receive-and-parse client.

Run: ``.venv/bin/python -m bench.recorder_ingest [--seconds 12] [--markets 500]``

Every measurement starts a fresh simulator in its *own process* (``python -m simulator serve``) with
the same settings and seed, then one client process against it, one after the other (2 cores: one
for the simulator, one for the client under test):

* ``bare``: a ``websockets`` client that signs in, subscribes ``market_lifecycle_v2`` and
  ``orderbook_delta`` for every open market (REST ``GET /markets?status=open``; markets created
  later are subscribed on their ``created`` notice), and only receives + ``orjson.loads`` each
  frame;
* ``recorder``: ``python -m recorder --adopt-open-markets`` for the same time; its rate is counted
  afterwards from the ``in`` rows of its sealed segments (``recv_ns`` = when the reader took the
  frame), so it is what was *recorded*, not what was received.

Two phases, each printed side by side with the ratio recorder/bare:

1. ``steady``: the simulator pushes as fast as its one core can (``--delta-rate`` far above what it
   reaches; its virtual clock lags). The simulator is then the bottleneck for both clients and the
   ratio is ~1 by construction: it shows the recorder keeps up with one simulator core, no more.
2. ``backlog``: the simulator's stall fault holds each connection's output for ``--stall-for``
   seconds, then sends everything at once; the client must drain a queue of ~``stall-for x rate``
   frames while new ones keep coming. The drain rate (frames/s while the backlog lasts) is the
   client's own ceiling, so this ratio is the one that measures the recorder against the target
   (recorder >= 70 % of bare).

The helpers here (load knobs, simulator process, bare client, log queries) are shared by the
other ``bench/recorder_*.py`` benches.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BIN_NS = 100_000_000  # 100 ms rate bins


# --------------------------------------------------------------------------- processes


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    ws_url: str
    rest_url: str
    key_id: str
    key_path: str
    started: float  # time.monotonic() when the ready line arrived

    def stop(self) -> None:
        stop_process(self.proc)


def start_sim(keys_dir: Path, args: list[str], log_path: Path | None = None) -> Sim:
    """``python -m simulator serve`` in its own process; returns once it printed its ready line."""
    err = open(log_path, "wb") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "simulator",
            "serve",
            "--keys-dir",
            str(keys_dir),
            "--log-level",
            "WARNING",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError(f"simulator did not start (exit {proc.returncode}); args {args}")
    info = json.loads(line)
    return Sim(
        proc, info["ws_url"], info["rest_url"], info["key_id"], info["private_key_path"],
        time.monotonic(),
    )  # fmt: skip


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


PROFILE_ENV = "BENCH_PROFILE"
"""If set, the recorder runs under ``py-spy record -f raw --threads -o $BENCH_PROFILE`` (issue 16's
profile; ``pip install '.[bench]'``). Sampling costs a little CPU: compare profiles, not rates."""


def recorder_cmd(sim: Sim, data_dir: Path, seconds: float, extra: list[str]) -> list[str]:
    out = os.environ.get(PROFILE_ENV)
    spy = [str(Path(PY).parent / "py-spy"), "record", "-r", "250", "--threads", "-f", "raw",
           "-o", out, "--"] if out else []  # fmt: skip
    return [
        *spy, PY, "-m", "recorder",
        "--ws-url", sim.ws_url, "--rest-url", sim.rest_url,
        "--key-id", sim.key_id, "--private-key", sim.key_path,
        "--data-dir", str(data_dir), "--duration", str(seconds),
        "--status-interval", "5",
        *extra,
    ]  # fmt: skip


def run_recorder(
    sim: Sim, data_dir: Path, seconds: float, extra: list[str], log_path: Path
) -> dict[str, float]:
    """Run the recorder to completion; returns wall time of the run and of the shutdown tail."""
    t0 = time.monotonic()
    cpu0 = children_cpu()
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(
            recorder_cmd(sim, data_dir, seconds, extra),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            rc = proc.wait(seconds + 120)
        finally:
            stop_process(proc)
    wall = time.monotonic() - t0
    if rc != 0:
        raise RuntimeError(f"recorder exited {rc}; see {log_path}")
    return {"wall_s": wall, "cpu_s": children_cpu() - cpu0}


def children_cpu() -> float:
    """User + system CPU seconds of all waited-for child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- log queries


def segments_glob(data_dir: Path) -> str:
    return str(data_dir / "segments" / "date=*" / "session_id=*" / "*.parquet")


def query(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` with ``log`` bound to the sealed segments of ``data_dir``."""
    con = duckdb.connect()
    glob = segments_glob(data_dir).replace("'", "''")
    con.execute(
        f"CREATE VIEW log AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)"
    )
    return con.execute(sql).fetchall()


def in_bins(data_dir: Path) -> dict[int, int]:
    """Recorded ``in`` rows per 100 ms bin of ``recv_ns``."""
    rows = query(
        data_dir, f"SELECT recv_ns // {BIN_NS}, count(*) FROM log WHERE kind = 'in' GROUP BY 1"
    )
    return {int(b): int(n) for b, n in rows}


def sealed_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("segments/date=*/session_id=*/*.parquet"))


# --------------------------------------------------------------------------- rates


def steady_rate(bins: dict[int, int], warmup_s: float) -> tuple[float, int]:
    """Mean frames/s from ``warmup_s`` after the first bin to the last full bin."""
    if not bins:
        return 0.0, 0
    lo, hi = min(bins), max(bins)
    start = lo + round(warmup_s * 1e9 / BIN_NS)
    n = sum(c for b, c in bins.items() if start <= b < hi)
    secs = max(hi - start, 1) * BIN_NS / 1e9
    return n / secs, n


def peak_rate(bins: dict[int, int], window_s: float = 1.0) -> float:
    """Highest frames/s over any ``window_s`` sliding window."""
    if not bins:
        return 0.0
    w = max(1, round(window_s * 1e9 / BIN_NS))
    lo, hi = min(bins), max(bins)
    series = [bins.get(b, 0) for b in range(lo, hi + 1)]
    best = cur = sum(series[:w])
    for i in range(w, len(series)):
        cur += series[i] - series[i - w]
        best = max(best, cur)
    return best / (w * BIN_NS / 1e9)


def drain_rate(bins: dict[int, int], base_rate: float) -> dict[str, float]:
    """Rate while a stall's backlog drains.

    The stall is the longest run of empty bins. The backlog is drained at the first bin where the
    frames received since the stall began reach 97 % of what ``base_rate`` (the pre-stall rate)
    implies for that time; the drain rate is the frames received from the end of the silence to
    that bin, per second. Not drained before the run ended: the rest of the run is used
    (``drained`` 0), which still measures the client's ceiling.
    """
    if not bins:
        return {"drain_rate": 0.0, "drain_s": 0.0, "drain_frames": 0, "drained": 0}
    lo, hi = min(bins), max(bins)
    series = [bins.get(b, 0) for b in range(lo, hi)]  # the last bin is partial
    best_len, best_end, run = 0, 0, 0
    for i, c in enumerate(series):
        run = run + 1 if c == 0 else 0
        if run > best_len:
            best_len, best_end = run, i + 1
    stall_start, start = best_end - best_len, best_end
    per_bin = base_rate * BIN_NS / 1e9
    end, drained, cum = len(series), 0, 0
    for i in range(start, len(series)):
        cum += series[i]
        if cum >= 0.97 * per_bin * (i + 1 - stall_start):
            end, drained = i + 1, 1
            break
    n = sum(series[start:end])
    secs = max(end - start, 1) * BIN_NS / 1e9
    return {
        "drain_rate": n / secs,
        "drain_s": secs,
        "drain_frames": n,
        "drained": drained,
        "stall_s": best_len * BIN_NS / 1e9,
    }


# --------------------------------------------------------------------------- bare client


def sign_headers(key_path: str, key_id: str, method: str, path: str) -> dict[str, str]:
    """docs/protocol.md §2: RSA-PSS-SHA256 over timestamp_ms + METHOD + path (no query string)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    ts = str(int(time.time() * 1000))
    msg = (ts + method.upper() + path.split("?", 1)[0]).encode()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    sig = base64.b64encode(key.sign(msg, pss, hashes.SHA256())).decode("ascii")
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": ts,
        "KALSHI-ACCESS-SIGNATURE": sig,
    }


def open_markets(rest_url: str, key_path: str, key_id: str) -> list[str]:
    out: list[str] = []
    cursor = ""
    while True:
        q = {"status": "open", "limit": "1000"}
        if cursor:
            q["cursor"] = cursor
        url = rest_url.rstrip("/") + "/markets?" + urllib.parse.urlencode(q)
        hdrs = sign_headers(key_path, key_id, "GET", urllib.parse.urlsplit(url).path)
        with urllib.request.urlopen(urllib.request.Request(url, headers=hdrs), timeout=30) as r:
            page = orjson.loads(r.read())
        out += [m["ticker"] for m in page.get("markets", [])]
        cursor = page.get("cursor") or ""
        if not cursor:
            return out


async def bare_client(
    ws_url: str, rest_url: str, key_id: str, key_path: str, seconds: float, per_sub: int = 200
) -> dict[str, Any]:
    """Receive + orjson.loads only, for ``seconds``; frames per 100 ms bin of time.time_ns()."""
    import websockets

    tickers = await asyncio.to_thread(open_markets, rest_url, key_path, key_id)
    hdrs = sign_headers(key_path, key_id, "GET", "/trade-api/ws/v2")
    bins: Counter[int] = Counter()
    next_id = 1
    frames = 0
    async with websockets.connect(
        ws_url, additional_headers=hdrs, max_size=None, max_queue=None, compression=None
    ) as ws:
        cmd = {"id": next_id, "cmd": "subscribe", "params": {"channels": ["market_lifecycle_v2"]}}
        await ws.send(orjson.dumps(cmd).decode())
        for i in range(0, len(tickers), per_sub):
            next_id += 1
            params = {"channels": ["orderbook_delta"], "market_tickers": tickers[i : i + per_sub]}
            await ws.send(orjson.dumps({"id": next_id, "cmd": "subscribe", "params": params}))
        end_ns = time.time_ns() + int(seconds * 1e9)
        stopper = asyncio.get_running_loop().call_later(seconds + 1, ws.transport.abort)
        while True:
            try:
                raw = await ws.recv(decode=False)
            except websockets.ConnectionClosed:
                break
            now = time.time_ns()
            if now >= end_ns:
                break
            msg = orjson.loads(raw)
            frames += 1
            bins[now // BIN_NS] += 1
            if msg.get("type") == "market_lifecycle_v2":
                body = msg.get("msg") or {}
                if body.get("event_type") == "created":
                    next_id += 1
                    params = {
                        "channels": ["orderbook_delta"],
                        "market_tickers": [body["market_ticker"]],
                    }
                    await ws.send(
                        orjson.dumps({"id": next_id, "cmd": "subscribe", "params": params})
                    )
        stopper.cancel()
    return {"frames": frames, "initial_markets": len(tickers), "bins": dict(bins)}


def run_bare(sim: Sim, seconds: float) -> dict[str, Any]:
    """The bare client in its own process (same footing as the recorder process)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tf:
        out = Path(tf.name)
    cmd = [
        PY, "-m", "bench.recorder_ingest", "--_bare", str(out),
        "--_conn", json.dumps([sim.ws_url, sim.rest_url, sim.key_id, sim.key_path]),
        "--seconds", str(seconds),
    ]  # fmt: skip
    cpu0 = children_cpu()
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=seconds + 120)
    wall = time.monotonic() - t0
    res = orjson.loads(out.read_bytes())
    res["cpu_s"], res["wall_s"] = children_cpu() - cpu0, wall
    out.unlink()
    res["bins"] = {int(k): v for k, v in res["bins"].items()}
    return dict(res)


# --------------------------------------------------------------------------- the bench


def sim_args(ns: argparse.Namespace, stall: bool) -> list[str]:
    args = [
        "--seed", "7",
        "--initial-markets", str(ns.markets),
        "--create-rate", str(ns.create_rate),
        "--lifetime", "2h",
        "--open-delay", "0",
        "--no-regimes",
        "--max-live-markets", str(ns.markets * 4),
    ]  # fmt: skip
    if stall:
        args += [
            "--delta-rate",
            str(ns.backlog_rate),
            "--stall-every",
            str(ns.stall_at),
            "--stall-for",
            str(ns.stall_for),
        ]
    else:
        args += ["--delta-rate", str(ns.delta_rate)]
    return args


def measure(ns: argparse.Namespace, work: Path, phase: str) -> dict[str, Any]:
    stall = phase == "backlog"
    seconds = ns.seconds if not stall else ns.stall_at + ns.stall_for + ns.drain_s
    out: dict[str, Any] = {"phase": phase}
    for who in ("bare", "recorder"):
        sim = start_sim(work / "keys", sim_args(ns, stall), work / f"sim-{phase}-{who}.log")
        try:
            if who == "bare":
                res = run_bare(sim, seconds)
                bins = res["bins"]
            else:
                data = work / f"data-{phase}"
                extra = ["--adopt-open-markets", *ns.recorder_arg]
                res = run_recorder(sim, data, seconds, extra, work / f"rec-{phase}.log")
                bins = in_bins(data)
                res["frames"] = sum(bins.values())
                res["shutdown_tail_s"] = round(res["wall_s"] - seconds, 2)
        finally:
            sim.stop()
        rate, _ = steady_rate(bins, ns.warmup)
        row: dict[str, Any] = {"frames": res["frames"], "steady_msgs_s": round(rate)}
        row["peak_1s_msgs_s"] = round(peak_rate(bins))
        if stall:
            lo = min(bins)
            pre = {b: c for b, c in bins.items() if b < lo + round(ns.stall_at * 1e9 / BIN_NS) - 10}
            base, _ = steady_rate(pre, ns.warmup)
            d = drain_rate(bins, base)
            row["pre_stall_msgs_s"] = round(base)
            row.update({k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()})
            row["drain_rate"] = round(d["drain_rate"])
        row["process_cpu_s"] = round(res["cpu_s"], 1)
        row["process_wall_s"] = round(res["wall_s"], 1)
        if "shutdown_tail_s" in res:
            row["shutdown_tail_s"] = res["shutdown_tail_s"]
        out[who] = row
    b, r = out["bare"], out["recorder"]
    out["ratio_steady"] = round(r["steady_msgs_s"] / max(b["steady_msgs_s"], 1), 3)
    out["ratio_peak_1s"] = round(r["peak_1s_msgs_s"] / max(b["peak_1s_msgs_s"], 1), 3)
    if stall:
        out["ratio_drain"] = round(r["drain_rate"] / max(b["drain_rate"], 1), 3)
    return out


def add_load_knobs(
    ap: argparse.ArgumentParser, *, markets: int, create_rate: float, delta_rate: float
) -> None:
    """The simulator load the ``bench/recorder_*.py`` benches offer, with this bench's defaults:
    ``--markets`` open at the start (the recorder adopts them), ``--create-rate`` new markets/s,
    ``--delta-rate`` book changes/s over all trading markets."""
    ap.add_argument("--markets", type=int, default=markets, help="open markets at the start")
    ap.add_argument("--create-rate", type=float, default=create_rate, help="new markets/s")
    ap.add_argument("--delta-rate", type=float, default=delta_rate, help="steady offered deltas/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="steady phase, per client")
    # --delta-rate is the steady phase's; the backlog phase offers --backlog-rate
    add_load_knobs(ap, markets=500, create_rate=2.0, delta_rate=60_000)
    ap.add_argument("--backlog-rate", type=float, default=20_000, help="backlog: offered deltas/s")
    ap.add_argument("--stall-at", type=float, default=12.0, help="backlog: stall starts (sim s)")
    ap.add_argument("--stall-for", type=float, default=8.0, help="backlog: stall length, s")
    ap.add_argument("--drain-s", type=float, default=3.5, help="backlog: run on after the stall")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds ignored at the start")
    ap.add_argument("--phases", default="steady,backlog")
    ap.add_argument("--recorder-arg", action="append", default=[], help="extra recorder flag")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--_bare", help=argparse.SUPPRESS)
    ap.add_argument("--_conn", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns._bare:
        ws_url, rest_url, key_id, key_path = json.loads(ns._conn)
        res = asyncio.run(bare_client(ws_url, rest_url, key_id, key_path, ns.seconds))
        Path(ns._bare).write_bytes(orjson.dumps(res, option=orjson.OPT_NON_STR_KEYS))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    head = {"bench": "recorder_ingest", "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    print(json.dumps(head), flush=True)
    try:
        for phase in ns.phases.split(","):
            res = measure(ns, work, phase)
            res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(res), flush=True)
    finally:
        if not ns.keep:
            with contextlib.suppress(OSError):
                subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()

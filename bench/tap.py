"""The tap's cost and speed: recorder ingest with 0, 1 and 10 tap consumers, frame-in ->
consumer-out latency, and replay speed against materialize's book replay.

Run: ``.venv/bin/python -m bench.tap [--consumers 0,1,10] [--markets 200]``

For each consumer count, a fresh simulator process (``bench.recorder_ingest``'s backlog phase:
the stall fault holds the feed, then releases it all at once) feeds the real recorder with the tap
attached (``feed.tap.start_tap``, as ``--tap`` wires it), and the consumers run in one separate
process, each following every market (``all_markets``) plus ``recorder_status``. The recorder's
drain rate (frames/s recorded while the backlog lasts, from its sealed segments) is its ingest
ceiling; the ratio to the run with no consumer is what the tap costs. Latency is each frame's
recorder receive time (``recv_ns`` in the log) to the first consumer's receive time, over every
frame it got. On 2 shared cores, the consumers' process competes with the recorder and the
simulator for CPU: the 10-consumer figure includes that (``--consumer-nice 10`` lets the consumers
yield). ``cpu_us_per_frame`` (the recorder process's CPU per recorded frame) is the tap's own cost
whatever the contention.

Replay: the one-consumer run's session is replayed at ``--speed max`` to one consumer (frames/s
delivered), and the same session's snapshots and deltas go through
``materialize.book_replay.replay`` (events/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.recorder_ingest import (
    PY,
    ROOT,
    drain_rate,
    in_bins,
    query,
    recorder_cmd,
    start_sim,
    steady_rate,
)
from feed.events import STATUS_CHANNEL
from schemas.wire import DELTA_MSG, LIFECYCLE_CHANNEL

SUBSCRIBE_ALL = orjson.dumps(
    {
        "id": 1,
        "cmd": "subscribe",
        "params": {"channels": [STATUS_CHANNEL, LIFECYCLE_CHANNEL, DELTA_MSG], "all_markets": True},
    }
)
"""What every consumer of this bench asks the tap (or the replay) for: every channel, every
market."""

# --------------------------------------------------------------------------- child processes


async def _recorder_with_tap(argv: list[str], wait_for: int) -> int:
    from feed.tap import start_tap
    from recorder.app import Recorder
    from recorder.auth import signer_from
    from recorder.config import settings_from
    from recorder.segments import recover

    settings, _ = settings_from(argv)
    rec = Recorder(
        settings, signer_from(settings.key_id, settings.private_key), recover(settings.data_dir)
    )
    tap = await start_tap("127.0.0.1:0", rec.log, {"config": settings.redacted()})
    print(json.dumps({"url": tap.url}), flush=True)
    deadline = time.monotonic() + 60
    while sum(c.started for c in tap.fanout.consumers) < wait_for:
        if time.monotonic() > deadline:
            return 3
        await asyncio.sleep(0.01)
    await rec.run()
    lagged = sum(c.lagged_times for c in tap.fanout.consumers)
    await tap.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    frames = rec.log.frames_in
    print(
        json.dumps(
            {
                "lagged": lagged,
                "tap_failed": tap.failed,
                "cpu_s": round(cpu, 2),
                "cpu_us_per_frame": round(cpu / max(frames, 1) * 1e6, 1),
            }
        ),
        flush=True,
    )
    return 0


async def _consumers(url: str, n: int, out: Path) -> None:
    """n consumers; the first one notes (record_seq, receive ns) of every frame that has one."""
    from websockets.asyncio.client import connect

    seen: list[tuple[int, int]] = []
    counts = [0] * n
    lagged = [0] * n

    async def one(i: int) -> None:
        async with connect(url, max_size=None, max_queue=None, compression=None) as ws:
            await ws.send(SUBSCRIBE_ALL.decode())
            with contextlib.suppress(Exception):
                async for raw in ws:
                    now = time.time_ns()
                    counts[i] += 1
                    body = orjson.loads(raw)
                    t = body.get("type")
                    if i == 0 and t in (DELTA_MSG, LIFECYCLE_CHANNEL):
                        seen.append((body["record_seq"], now))
                    elif t == "tap_lagged":
                        lagged[i] += 1
                    elif t == "tap_session_end":
                        break

    await asyncio.gather(*(one(i) for i in range(n)))
    out.write_bytes(orjson.dumps({"seen": seen, "counts": counts, "lagged": lagged}))


# --------------------------------------------------------------------------- measurements


def _sim_args(ns: argparse.Namespace) -> list[str]:
    return [
        "--seed", "7",
        "--initial-markets", str(ns.markets),
        "--create-rate", "2",
        "--lifetime", "2h",
        "--open-delay", "0",
        "--no-regimes",
        "--max-live-markets", str(ns.markets * 4),
        "--delta-rate", str(ns.backlog_rate),
        "--stall-every", str(ns.stall_at),
        "--stall-for", str(ns.stall_for),
    ]  # fmt: skip


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def measure(ns: argparse.Namespace, work: Path, n: int) -> dict[str, Any]:
    seconds = ns.stall_at + ns.stall_for + ns.drain_s
    sim = start_sim(work / "keys", _sim_args(ns), work / f"sim-{n}.log")
    data = work / f"data-{n}"
    cons: subprocess.Popen[bytes] | None = None
    out_file = work / f"consumers-{n}.json"
    try:
        argv = recorder_cmd(sim, data, seconds, ["--adopt-open-markets"])[3:]
        rec = subprocess.Popen(
            [PY, "-m", "bench.tap", "--_recorder", json.dumps(argv), "--_wait", str(n)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(work / f"rec-{n}.log", "wb"),  # noqa: SIM115
        )
        assert rec.stdout is not None
        url = json.loads(rec.stdout.readline())["url"]
        if n:
            cons = subprocess.Popen(
                [
                    PY,
                    "-m",
                    "bench.tap",
                    "--_consumers",
                    str(n),
                    "--_url",
                    url,
                    "--_out",
                    str(out_file),
                ],
                cwd=ROOT,
            )
        tail = rec.stdout.readline()
        rec.wait(seconds + 120)
        if cons is not None:
            cons.wait(120)
    finally:
        sim.stop()
        for p in (cons,):
            if p is not None and p.poll() is None:
                p.kill()
    if rec.returncode != 0:
        raise RuntimeError(f"recorder with tap exited {rec.returncode}; see {work}/rec-{n}.log")
    bins = in_bins(data)
    lo = min(bins)
    pre = {b: c for b, c in bins.items() if b < lo + round(ns.stall_at * 1e9 / 100_000_000) - 10}
    base, _ = steady_rate(pre, 2.0)
    d = drain_rate(bins, base)
    row: dict[str, Any] = {
        "consumers": n,
        "frames_recorded": sum(bins.values()),
        "pre_stall_msgs_s": round(base),
        "drain_rate": round(d["drain_rate"]),
        "drained": d["drained"],
        "recorder_tail": json.loads(tail) if tail else None,
    }
    if n:
        res = orjson.loads(out_file.read_bytes())
        row["consumer_frames"] = res["counts"]
        row["consumer_lagged"] = res["lagged"]
        recv = dict(query(data, "SELECT record_seq, recv_ns FROM log WHERE kind = 'in'"))
        lat = [(now - recv[rs]) / 1e6 for rs, now in res["seen"] if rs in recv]
        row["latency_ms_p50"] = round(_pct(lat, 50), 2)
        row["latency_ms_p99"] = round(_pct(lat, 99), 2)
        row["latency_frames"] = len(lat)
        # steady phase only (from 2 s in to the stall): no backlog being drained
        t0 = min(recv.values())
        lo_ns, hi_ns = t0 + 2_000_000_000, t0 + int((ns.stall_at - 0.5) * 1e9)
        steady = [
            (now - recv[rs]) / 1e6
            for rs, now in res["seen"]
            if rs in recv and lo_ns <= recv[rs] < hi_ns
        ]
        row["steady_latency_ms_p50"] = round(_pct(steady, 50), 2)
        row["steady_latency_ms_p99"] = round(_pct(steady, 99), 2)
        row["steady_latency_frames"] = len(steady)
    row["data"] = str(data)
    return row


def replay_speed(data: Path) -> dict[str, Any]:
    """Our replay at --speed max to one consumer vs materialize's book replay, same session."""
    from feed.replay import ReplayConfig, start_replay
    from feed.source import pick_session, read_rows

    async def run() -> tuple[int, float]:
        from websockets.asyncio.client import connect

        _, listening = await start_replay(ReplayConfig(data, speed=None))
        n = 0
        t0 = time.perf_counter()
        async with connect(listening.url, max_size=None, max_queue=None) as ws:
            await ws.send(SUBSCRIBE_ALL.decode())
            async for raw in ws:
                n += 1
                if "tap_session_end" in raw[:40]:
                    break
        secs = time.perf_counter() - t0
        listening.server.close()
        return n, secs

    n, secs = asyncio.run(run())
    rows = list(read_rows(pick_session(data, None)))
    feed_rows_s = len(rows) / secs

    from feed.state import DELTA, KIND, MALFORMED, MSG_TYPE, PRICE, RAW, SIDE, TICKER
    from materialize.book_replay import Act, ReplayInput, replay
    from schemas.wire import SNAPSHOT_MSG, snapshot_levels

    per: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        if r[KIND] == "in" and r[MSG_TYPE] in (DELTA_MSG, SNAPSHOT_MSG) and not r[MALFORMED]:
            per.setdefault(r[TICKER], []).append(r)
    act: list[int] = []
    is_yes: list[bool] = []
    price: list[int] = []
    delta: list[int] = []
    snaps: dict[int, Any] = {}
    for _, events in sorted(per.items()):
        for r in events:
            if r[MSG_TYPE] == SNAPSHOT_MSG:
                snaps[len(act)] = snapshot_levels(r[RAW])
                act.append(Act.SNAPSHOT)
                is_yes.append(True)
                price.append(0)
                delta.append(0)
            elif r[PRICE] is not None and r[DELTA] is not None:
                act.append(Act.DELTA)
                is_yes.append(r[SIDE] == "yes")
                price.append(r[PRICE])
                delta.append(r[DELTA])
    inp = ReplayInput(act, is_yes, price, delta, snaps)
    core = {}
    for k in (0, 1, 10):  # the tap's observer alone, in-process: what the recorder pays per row
        from feed.fanout import Fanout

        fan = Fanout("live")
        cs = [fan.add(1 << 30) for _ in range(k)]
        for c in cs:
            c.handle(SUBSCRIBE_ALL)
        t0 = time.perf_counter()
        for i, r in enumerate(rows):
            fan.on_row(r)
            if i % 256 == 0:
                for c in cs:
                    c.take()
        core[f"tap_core_us_per_row_{k}_consumers"] = round(
            (time.perf_counter() - t0) / len(rows) * 1e6, 2
        )
    t0 = time.perf_counter()
    replay(inp)
    book_secs = time.perf_counter() - t0
    return {
        "replay_frames_sent": n,
        "replay_s": round(secs, 2),
        "replay_msgs_s": round(n / secs),
        "replay_log_rows_s": round(feed_rows_s),
        "book_replay_events": len(act),
        "book_replay_events_s": round(len(act) / book_secs),
        **core,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--consumers", default="0,1,10")
    ap.add_argument("--markets", type=int, default=200)
    ap.add_argument("--backlog-rate", type=float, default=20_000)
    ap.add_argument("--stall-at", type=float, default=8.0)
    ap.add_argument("--stall-for", type=float, default=5.0)
    ap.add_argument("--drain-s", type=float, default=4.0)
    ap.add_argument(
        "--consumer-nice",
        type=int,
        default=0,
        help="nice level of the consumers' process (10: consumers yield the CPU to the recorder)",
    )
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--_recorder", help=argparse.SUPPRESS)
    ap.add_argument("--_wait", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_consumers", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_url", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns._recorder:
        sys.exit(asyncio.run(_recorder_with_tap(json.loads(ns._recorder), ns._wait)))
    if ns._consumers:
        asyncio.run(_consumers(ns._url, ns._consumers, Path(ns._out)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-tap-"))
    print(json.dumps({"bench": "tap", "cpus": os.cpu_count(), "loadavg": os.getloadavg()}))
    results = []
    try:
        for n in (int(x) for x in ns.consumers.split(",")):
            r = measure(ns, work, n)
            results.append(r)
            print(json.dumps(r), flush=True)
        base = next((r for r in results if r["consumers"] == 0), None)
        if base:
            for r in results:
                ratio = r["drain_rate"] / max(base["drain_rate"], 1)
                print(json.dumps({"consumers": r["consumers"], "ingest_ratio": round(ratio, 3)}))
        one = next((r for r in results if r["consumers"] == 1), results[-1])
        print(json.dumps(replay_speed(Path(one["data"]))), flush=True)
    finally:
        if not ns.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()

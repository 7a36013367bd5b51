"""10,000 concurrent markets in one recorder process: resident memory once all are joined.

Run: ``.venv/bin/python -m bench.recorder_scale [--markets 10000] [--seconds 45]``

A simulator process starts with ``--markets`` open markets (long lifetimes, a low total delta rate
so the load is the number of markets, not messages), the recorder joins them all with
``--adopt-open-markets`` and runs ``--seconds``. RSS of the recorder process (psutil) is sampled
every 0.5 s. Afterwards the log says how many markets were joined, how many got a book snapshot
(i.e. were really subscribed), and how long from the start it took until the last snapshot.
Also printed: the RSS of the same recorder with no market (``--include NO-SUCH-MARKET``), so
the per-market cost is visible. Target: RSS < 1 GiB at 10,000 markets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.recorder_ingest import ROOT, query, recorder_cmd, sealed_bytes, start_sim, stop_process

MiB = 2**20


def run(ns: argparse.Namespace, work: Path, markets: int, extra: list[str]) -> dict[str, Any]:
    sim_args = [
        "--seed", "3",
        "--initial-markets", str(markets),
        "--create-rate", "0",
        "--lifetime", "3h",
        "--open-delay", "0",
        "--no-regimes",
        "--delta-rate", str(ns.delta_rate),
        "--max-live-markets", str(markets + 10),
        "--max-markets-per-sub", "256",
    ]  # fmt: skip
    data = work / f"data-{markets}-{len(extra)}"
    sim = start_sim(work / "keys", sim_args, work / "sim.log")
    samples: list[tuple[float, int]] = []
    try:
        t0 = time.monotonic()
        with open(work / "rec.log", "wb") as err:
            proc = subprocess.Popen(
                recorder_cmd(sim, data, ns.seconds, ["--adopt-open-markets", *extra]),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            ps = psutil.Process(proc.pid)
            try:
                while proc.poll() is None:
                    try:
                        samples.append((time.monotonic() - t0, ps.memory_info().rss))
                    except psutil.NoSuchProcess:
                        break
                    time.sleep(0.5)
                rc = proc.wait(120)
            finally:
                stop_process(proc)
        if rc != 0:
            raise RuntimeError(f"recorder exited {rc}; see {work / 'rec.log'}")
    finally:
        sim.stop()
    ((start_ns,),) = query(data, "SELECT min(recv_ns) FROM log")
    ((joined,),) = query(
        data, "SELECT count(DISTINCT market_ticker) FROM log WHERE msg_type = 'market_joined'"
    )
    ((snapped, last_snap_ns, frames),) = query(
        data,
        "SELECT count(DISTINCT market_ticker) FILTER (WHERE msg_type = 'orderbook_snapshot'), "
        "max(recv_ns) FILTER (WHERE msg_type = 'orderbook_snapshot'), "
        "count(*) FILTER (WHERE kind = 'in') FROM log",
    )
    # RSS once every market has its snapshot (the steady state the target is about)
    all_in_s = (last_snap_ns - start_ns) / 1e9 if last_snap_ns else None
    steady = [r for t, r in samples if all_in_s is not None and t > all_in_s + 3.0]
    rss_max = max((r for _, r in samples), default=0)
    return {
        "markets_offered": markets,
        "markets_joined": joined,
        "markets_with_snapshot": snapped,
        "all_snapshots_after_s": round(all_in_s, 1) if all_in_s is not None else None,
        "rss_after_all_joined_mib": round(max(steady) / MiB, 1) if steady else None,
        "rss_max_mib": round(rss_max / MiB, 1),
        "rss_final_mib": round(samples[-1][1] / MiB, 1) if samples else None,
        "frames_in": frames,
        "msgs_s": round(frames / ns.seconds),
        "sealed_bytes": sealed_bytes(data),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markets", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30.0, help="recorder run length")
    ap.add_argument("--delta-rate", type=float, default=2_000, help="deltas/s over all markets")
    ap.add_argument("--no-baseline", action="store_true", help="skip the zero-market run")
    ap.add_argument("--keep", action="store_true")
    ns = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(json.dumps({"bench": "recorder_scale", "work": str(work)}), flush=True)
    try:
        res = run(ns, work, ns.markets, [])
        if not ns.no_baseline:
            base = run(ns, work, ns.markets, ["--include", "NO-SUCH-MARKET"])
            res["rss_no_markets_mib"] = base["rss_max_mib"]
            if res["rss_after_all_joined_mib"] and res["markets_with_snapshot"]:
                per = (res["rss_after_all_joined_mib"] - base["rss_max_mib"]) * MiB
                res["rss_per_market_kib"] = round(per / res["markets_with_snapshot"] / 1024, 1)
        res["rss_vs_1gib"] = round((res["rss_max_mib"] or 0) / 1024, 3)
        res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(res), flush=True)
    finally:
        if not ns.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

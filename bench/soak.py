"""Fault-injection soak: the real recorder against the simulator with every fault switched on and
``kill -9`` at random moments, then materialize, all verified against the simulator's ground truth.

Run: ``.venv/bin/python -m bench.soak --seconds 600 [--seed 7] [--kill-every 20] [--keep DIR]``

What happens:

1. A simulator runs on a thread of this process with ground truth on (every frame it sends, per
   connection, and every true book) and these faults: dropped connections (random and at fixed
   times, TCP reset), handshake refusals (the first one and for a while after each drop), seq gaps,
   duplicate frames, malformed frames, subscribe errors, delayed (reordered) lifecycle notices,
   output stalls (then everything at once) and bursts of book changes; and the uncertain points
   of the protocol (``docs/protocol.md`` §9) at their harder variant: lifecycle notices lost on a
   live connection, asynchronous errors 10/17/25 ending a sid, a 4000-4999 close, error 16 for a
   market in its first second, get_snapshot without ``ok``, replies without ``id``, repeat
   subscribes merged into the existing sid, empty pongs, REST times in whole seconds from a
   clock 2 s behind.
2. The recorder CLI runs as a subprocess. Every ``--kill-every`` seconds on average (uniform
   0.5x..1.5x, counted from the moment the new run has flushed its first data) it gets
   ``SIGKILL`` and is started again at once: a new session that must seal and name the previous
   one's leftovers. At the end the last run is stopped with SIGINT (a graceful stop).
3. ``python -m materialize`` (embedded DuckDB default, with training sets) loads the log.
4. ``verify`` checks, against ground truth:

   a. frames: per session and connection epoch, the recorded ``in`` frames are exactly a prefix of
      the frames the simulator sent on that connection (nothing missing in the middle, nothing
      reordered, nothing twice). What was sent but not recorded is the epoch's tail; it is a
      *kill-window loss* on the epoch a ``kill -9`` ended, *in flight at a drop* when the
      connection was cut (a TCP reset discards what the kernel still held), *in flight at stop*
      after a graceful stop, and a *loss outside kill windows* otherwise (expected 0). Every
      simulator connection must be matched by a recorded epoch (or be explained by a kill);
      ``record_seq`` runs 1..n in every session without a hole;
   b. lifecycle: every ``created`` notice the recorder received made it join the market and every
      ``determined`` notice of a joined market made it leave (``reason == "determined"``) in the
      same session; excused only at the tail of a killed session. A market whose ``created`` the
      exchange lost (ground truth ``effects.jsonl``) and that stayed undetermined for one
      reconciliation period (plus slack) inside one session's life is joined late in it;
   c. books: every training row built from a delta equals the simulator's true book after that
      change (top-N per side, exact fixed point); every ``gap`` decision is a row of
      ``rl_sequence_gaps``; no training row lies inside a gap span (from the frame that revealed
      the gap to the market's next snapshot); the warehouse counts equal the log's;
   d. every file in ``segments/`` reads; every session has a ``session_end`` or a later session's
      ``recovered`` record names it.

It prints a table (faults injected by kind and what the log shows of each, frames, losses, books
checked, mismatches) and exits 1 if any invariant failed. ``run_soak``, ``materialize``,
``verify`` and ``render`` are plain functions so ``tests/soak`` runs a short version.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.verify import ProcRun, Report, SoakRun, render, verify
from simulator.faults import FaultConfig
from simulator.market import GenConfig
from simulator.server import SimConfig, start_in_thread
from simulator.wire import ProtocolOptions

__all__ = ["Report", "SoakConfig", "materialize", "render", "run_soak", "verify"]

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ configuration


def soak_faults(seconds: float) -> FaultConfig:
    """Every fault the simulator has, at rates that hit each one many times in a minute (drops
    are TCP resets and closes carry code 4000: ``FaultConfig``'s defaults)."""
    return FaultConfig(
        gap_rate=0.004,
        duplicate_rate=0.004,
        malformed_rate=0.003,
        subscribe_error_rate=0.25,
        lifecycle_delay_rate=0.05,
        lifecycle_delay_max_s=0.5,
        drop_rate=1 / 15,
        drop_at=(seconds * 0.3, seconds * 0.7),
        reject_after_drop_s=0.6,
        reject_first_n=1,
        stall_every_s=7.0,
        stall_for_s=0.6,
        burst_every_s=5.0,
        burst_size=150,
        lifecycle_drop_rate=0.03,
        async_error_rate=0.03,
        close_at=(seconds * 0.5,),
    )


def soak_protocol() -> ProtocolOptions:
    """The uncertain points of the protocol (``docs/protocol.md`` §9), each at the variant that
    is harder for a client (the variant matrix plays each alone; the soak plays them together
    with faults)."""
    return ProtocolOptions(
        get_snapshot_ok="none",
        reply_id="sid_replies",
        duplicate_subscribe="merge",
        pong="empty",
        new_market_not_found_s=1.0,
        clock_offset_s=-2.0,
        rest_time_precision="s",
    )


def soak_generator() -> GenConfig:
    """Markets that live a few seconds, so many whole lives fit in a short soak; a few already
    open at the start, and busy books."""
    return GenConfig.short_lives(initial_markets=4, lifetime="2:5", delta_rate=500.0)


@dataclass
class SoakConfig:
    seconds: float = 60.0
    seed: int = 7
    kill_every: float = 15.0  # mean seconds between kills; 0 = never kill
    faults: FaultConfig | None = None  # None: soak_faults(seconds)
    generator: GenConfig | None = None  # None: soak_generator()
    protocol: ProtocolOptions | None = None  # None: soak_protocol()
    # The recorder's REST reconciliation period, short so a lost notice is recovered within a
    # run between kills (set through KALSHI_RECORDER_RECONCILE_INTERVAL_S).
    reconcile_s: float = 1.5
    recorder_args: tuple[str, ...] = ()
    # Reconnect backoff cap for the soak (the default 30 s would idle most of a short run after a
    # few drops in a row): set through the recorder's own KALSHI_RECORDER_* environment.
    backoff_max_s: float = 4.0


# ------------------------------------------------------------------------------------ running


def _recorder_cmd(sim: Any, data: Path, extra: Iterable[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "recorder",
        *sim.client_args(),
        "--data-dir",
        str(data),
        "--status-interval",
        "1",
        *extra,
    ]


def _live_sessions(data: Path) -> dict[int, int]:
    """session id -> bytes in its live parts."""
    out: dict[int, int] = {}
    live = data / "live"
    if not live.is_dir():
        return out
    for d in live.glob("session_id=*"):
        try:
            sid = int(d.name.split("=", 1)[1])
            out[sid] = sum(p.stat().st_size for p in d.glob("part-*.arrows"))
        except (ValueError, OSError):
            continue  # sealed and removed under us
    return out


def run_soak(cfg: SoakConfig, work: Path, log: Any = None) -> SoakRun:
    """Run simulator + recorder (with kills) for ``cfg.seconds``; ground truth lands in
    ``work/truth``, the log in ``work/data``. Returns what happened (procs, fault counters)."""
    say = log or (lambda _msg: None)
    work.mkdir(parents=True, exist_ok=True)
    data, truth = work / "data", work / "truth"
    rng = random.Random(cfg.seed)
    faults = cfg.faults or soak_faults(cfg.seconds)
    sim = start_in_thread(
        SimConfig(
            seed=cfg.seed,
            keys_dir=work / "keys",
            ground_truth=truth,
            faults=faults,
            generator=cfg.generator or soak_generator(),
            protocol=cfg.protocol or soak_protocol(),
        )
    )
    run = SoakRun(
        work=work, data=data, truth=truth, seconds=cfg.seconds, reconcile_s=cfg.reconcile_s
    )
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "KALSHI_RECORDER_BACKOFF_MAX_S": str(cfg.backoff_max_s),
        "KALSHI_RECORDER_RECONCILE_INTERVAL_S": str(cfg.reconcile_s),
    }
    t0 = time.monotonic()
    deadline = t0 + cfg.seconds
    n = 0
    try:
        while True:
            known = set(_live_sessions(data))
            n += 1
            out = open(work / f"recorder-{n}.out", "wb")  # noqa: SIM115 - closed below
            err = open(work / f"recorder-{n}.err", "wb")  # noqa: SIM115
            pr = ProcRun(started_ns=time.time_ns())
            proc = subprocess.Popen(
                _recorder_cmd(sim, data, cfg.recorder_args),
                stdout=out,
                stderr=err,
                cwd=ROOT,
                env=env,
            )
            run.procs.append(pr)
            # a kill is meaningful once the run has flushed data (its session and the
            # `recovered` record naming the previous one are then on disk)
            while proc.poll() is None and time.monotonic() < deadline:
                new = {s: b for s, b in _live_sessions(data).items() if s not in known}
                if any(b > 4096 for b in new.values()):
                    pr.session_id = max(new)
                    break
                time.sleep(0.02)
            kill_at = None
            if cfg.kill_every > 0:
                kill_at = time.monotonic() + rng.uniform(0.5, 1.5) * cfg.kill_every
            if kill_at is None or kill_at > deadline - 2.0:
                kill_at = None
            until = kill_at if kill_at is not None else deadline
            while proc.poll() is None and time.monotonic() < until:
                time.sleep(0.02)
            if proc.poll() is not None:
                pr.how = "exit"  # the recorder stopped by itself: reported as a failure
            elif kill_at is not None:
                pr.ended_ns = time.time_ns()
                os.kill(proc.pid, signal.SIGKILL)
                pr.how = "kill"
                say(f"  kill -9 recorder #{n} (session {pr.session_id})")
            else:
                pr.ended_ns = time.time_ns()
                proc.send_signal(signal.SIGINT)
                pr.how = "stop"
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                pr.how = "hung"
            if not pr.ended_ns:
                pr.ended_ns = time.time_ns()
            pr.returncode = proc.returncode
            out.close()
            err.close()
            pr.stderr_tail = (work / f"recorder-{n}.err").read_text(errors="replace")[-2000:]
            if pr.how != "kill" or time.monotonic() >= deadline:
                break
    finally:
        sim.stop()
    run.faults = sim.faults.as_dict()
    return run


def materialize(run: SoakRun) -> int:
    """``python -m materialize --data-dir DATA`` (DuckDB default, training sets, quality)."""
    proc = subprocess.run(
        [sys.executable, "-m", "materialize", "--data-dir", str(run.data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    run.materialize_rc = proc.returncode
    run.materialize_out = proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="recording time (default 60)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--kill-every", type=float, default=15.0, help="mean seconds between kill -9 (0 = none)"
    )
    p.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: tmp)")
    args = p.parse_args(argv)
    cfg = SoakConfig(seconds=args.seconds, seed=args.seed, kill_every=args.kill_every)
    tmp = None
    work = args.keep
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="kalshi-soak-")
        work = Path(tmp.name)
    try:
        t = time.monotonic()
        print(
            f"soak in {work}: {cfg.seconds:.0f} s, seed {cfg.seed}, kill every ~{cfg.kill_every} s"
        )
        run = run_soak(cfg, work, log=print)
        print(f"recording done ({time.monotonic() - t:.0f} s); materializing ...")
        materialize(run)
        report = verify(run)
        print(render(run, report))
        print(f"total {time.monotonic() - t:.0f} s")
        return 0 if report.ok else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())

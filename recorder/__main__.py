"""``python -m recorder`` / ``kalshi-recorder``: run one recording session.

Exit codes: 0 graceful stop (signal or --duration); 1 the run could not go on (disk full, writer
failure, crash of a connection task); 2 a configuration problem a person must fix (key file, key
rejected by the exchange, unwritable data directory, simulator failed to start).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

import orjson

from recorder.app import FatalError, Recorder, RunSummary
from recorder.auth import KeyError_, signer_from
from recorder.config import Settings, settings_from
from recorder.segments import recover
from recorder.writer import WriterError, check_writable


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(
            {
                "ts": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        ).decode()


def setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def start_simulator(s: Settings) -> subprocess.Popen[bytes]:
    """Start ``python -m simulator serve`` on loopback; point the settings at it."""
    keys = s.data_dir / "simulator-keys"
    # Without arguments: markets born every ~0.5 s that live seconds, so a short demo run
    # captures whole lives (created -> determined -> settled).
    extra = s.simulate_args or ["--create-rate", "2", "--lifetime", "3:10", "--delta-rate", "300"]
    cmd = [sys.executable, "-m", "simulator", "serve", "--keys-dir", str(keys), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives a pipe
        raise FatalError("the built-in simulator gave no output pipe", 2)
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise FatalError(f"the built-in simulator did not start (exit {proc.returncode})", 2)
    info: dict[str, Any] = json.loads(line)
    s.ws_url = info["ws_url"]
    s.rest_url = info["rest_url"]
    s.key_id = info["key_id"]
    s.private_key = info["private_key_path"]
    return proc


def run(argv: list[str] | None = None) -> int:
    settings, ns = settings_from(argv)
    setup_logging(settings.log_format)
    log = logging.getLogger("recorder")
    if ns.print_config:
        print(json.dumps(settings.redacted(), indent=2, default=str))
        return 0
    sim: subprocess.Popen[bytes] | None = None
    try:
        try:
            check_writable(settings.data_dir)
        except WriterError as exc:
            raise FatalError(str(exc), 2) from None
        if settings.simulate:
            sim = start_simulator(settings)
            log.info("built-in simulator at %s", settings.ws_url)
        try:
            signer = signer_from(settings.key_id, settings.private_key)
        except KeyError_ as exc:
            raise FatalError(str(exc), 2) from None
        report = recover(settings.data_dir, end_marker=True)
        if report.files:
            log.warning("sealed %d leftover live file(s) of a crashed run", len(report.files))
        summary = asyncio.run(_run(settings, signer, report))
    except FatalError as exc:
        print(f"kalshi-recorder: error: {exc}", file=sys.stderr)
        return exc.code
    finally:
        if sim is not None:
            sim.terminate()
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
    print(summary.render())
    if summary.end_reason in ("auth_rejected", "writer_error", "error"):
        return 2 if summary.end_reason == "auth_rejected" else 1
    return 0


async def _run(settings: Settings, signer: Any, report: Any) -> RunSummary:
    rec = Recorder(settings, signer, report)
    summary = await rec.run()
    if rec.fatal is not None:
        print(f"kalshi-recorder: error: {rec.fatal}", file=sys.stderr)
    return summary


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # The event loop shares the GIL with the writer threads; a shorter switch interval (default
    # 5 ms) bounds how long a writer thread can keep the reader and the command planner waiting.
    sys.setswitchinterval(0.0005)
    # Rows wait ~100 ms in memory before the writer takes them: at tens of thousands of frames per
    # second the default gen-0 threshold (700) runs the collector constantly over objects that are
    # about to be handed off. Objects alive after start-up are frozen out of collection.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    t = time.monotonic()
    code = run()
    logging.getLogger("recorder").debug("exit %d after %.1fs", code, time.monotonic() - t)
    sys.exit(code)


if __name__ == "__main__":
    main()

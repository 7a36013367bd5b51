"""The real recorder with its ``--tap``, for the tests that consume the tap (feed and paper)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from simulator.server import SimulatorThread
from tests.recorder.harness import ROOT, recorder_cmd

STARTUP_TIMEOUT_S = 60.0
"""Deadline for the recorder's first line (the tap URL), on a busy machine."""


def _first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with ThreadPoolExecutor(1) as pool:
        line = pool.submit(proc.stdout.readline)
        try:
            return line.result(timeout=STARTUP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()  # ends the readline too
            raise AssertionError(
                f"the recorder printed no tap URL within {STARTUP_TIMEOUT_S:.0f} s"
            ) from None


@contextmanager
def recorder_with_tap(
    sim: SimulatorThread, data: Path, *extra: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``kalshi-recorder --tap 127.0.0.1:0 EXTRA...`` against ``sim``: yields the process and the
    tap URL it printed. A recorder still running when the block ends is killed."""
    proc = subprocess.Popen(
        recorder_cmd(sim, data, "--tap", "127.0.0.1:0", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = _first_line(proc)
        if not first:
            raise AssertionError(proc.stderr.read() if proc.stderr else "no output")
        yield proc, json.loads(first)["tap_url"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

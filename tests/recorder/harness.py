"""Run the real recorder CLI against the real simulator and read back what it wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.server import SimulatorThread

ROOT = Path(__file__).resolve().parents[2]


def recorder_cmd(
    sim: SimulatorThread, data_dir: Path, *extra: str, private_key: str | None = None
) -> list[str]:
    """The recorder CLI pointed at ``sim`` (its own key unless ``private_key`` is given)."""
    return [
        sys.executable,
        "-m",
        "recorder",
        "--ws-url",
        sim.ws_url,
        "--rest-url",
        sim.rest_url,
        "--key-id",
        sim.key_id,
        "--private-key",
        private_key if private_key is not None else str(sim.private_key_path),
        "--data-dir",
        str(data_dir),
        "--status-interval",
        "1",
        *extra,
    ]


def run_recorder(
    sim: SimulatorThread, data_dir: Path, *extra: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        recorder_cmd(sim, data_dir, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def start_recorder(sim: SimulatorThread, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        recorder_cmd(sim, data_dir, *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def stop_gracefully(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return out, err


def wait_for(pred: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_log(data_dir: Path) -> list[dict[str, Any]]:
    """Every sealed record, ordered by (session_id, record_seq)."""
    files = sorted((data_dir / "segments").glob("date=*/session_id=*/*.parquet"))
    if not files:
        return []
    table = pa.concat_tables(pq.read_table(f) for f in files)
    rows = table.to_pylist()
    rows.sort(key=lambda r: (r["session_id"], r["record_seq"]))
    return rows


def decisions(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(r["raw"]) for r in rows if r["kind"] == "decision" and r["msg_type"] == name
    ]


def ground_truth_frames(gt_dir: Path) -> dict[int, list[bytes]]:
    """conn id -> frames the simulator sent on it, in order."""
    out: dict[int, list[bytes]] = {}
    for f in sorted(gt_dir.glob("conn-*.jsonl")):
        cid = int(f.stem.split("-")[1])
        out[cid] = [orjson.loads(line)["frame"].encode() for line in f.read_bytes().splitlines()]
    return out


def received_by_epoch(rows: list[dict[str, Any]], conn: int = 0) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for r in rows:
        if r["kind"] == "in" and r["conn"] == conn:
            out.setdefault(r["epoch"], []).append(r["raw"])
    return out

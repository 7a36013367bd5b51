"""Run the real recorder CLI against the real simulator and read back what it wrote."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog import iter_live_batches
from schemas.decisions import read_decision
from simulator.groundtruth import truth_frames
from simulator.server import SimulatorThread

ROOT = Path(__file__).resolve().parents[2]


def recorder_cmd(
    sim: SimulatorThread, data_dir: Path, *extra: str, private_key: str | None = None
) -> list[str]:
    """The recorder CLI pointed at ``sim`` (its own key unless ``private_key`` is given)."""
    args = sim.client_args()
    if private_key is not None:
        args[args.index("--private-key") + 1] = private_key
    return [
        sys.executable,
        "-m",
        "recorder",
        *args,
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


def live_decisions(data_dir: Path, name: str) -> list[dict[str, Any]]:
    """Decisions named ``name`` flushed so far to ``live/`` (what a running recorder has done)."""
    out: list[dict[str, Any]] = []
    for path in sorted((data_dir / "live").rglob("*.arrows")):
        try:
            for batch, _ in iter_live_batches(path):
                kinds = batch.column("kind").to_pylist()
                types = batch.column("msg_type").to_pylist()
                raws = batch.column("raw").to_pylist()
                out += [
                    orjson.loads(raw)
                    for kind, t, raw in zip(kinds, types, raws, strict=True)
                    if kind == "decision" and t == name
                ]
        except OSError:  # sealed (renamed away) while we read: it is in segments/ now
            continue
    return out


def metric(url: str, name: str) -> float:
    """One sample of a recorder's ``/metrics`` at ``url`` (0 while it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def stdout_json(proc: subprocess.Popen[str], key: str, timeout: float = 60) -> Any:
    """The value of ``key`` in the first JSON line the process prints that has it (the tap and
    metrics URLs); a line reader thread keeps the wait under a deadline."""
    found: queue.Queue[Any] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None, "start the process with stdout=PIPE"

    def read() -> None:
        for line in stdout:
            if line.startswith("{"):
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and key in obj:
                    found.put(obj[key])
                    break
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        value = found.get(timeout=timeout)
    except queue.Empty:
        msg = f"timed out after {timeout:g} s waiting for {key!r} on stdout"
        raise AssertionError(msg) from None
    assert value is not None, f"the process ended without printing {key!r}"
    return value


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
    """Payloads of the decisions named ``name``, each checked against its struct in
    ``schemas.decisions`` (no field the struct does not declare), with the record's ``conn`` and
    ``epoch`` columns added when set."""
    out = []
    for r in rows:
        if r["kind"] != "decision" or r["msg_type"] != name:
            continue
        struct = read_decision(name, r["raw"])
        assert not struct.extra, f"{name} wrote undeclared fields {sorted(struct.extra)}"
        payload = orjson.loads(r["raw"])
        out.append({**payload, **{k: r[k] for k in ("conn", "epoch") if r[k] is not None}})
    return out


def ground_truth_frames(gt_dir: Path) -> dict[int, list[bytes]]:
    """conn id -> frames the simulator sent on it, in order (from its ground truth)."""
    return {cid: [f for _, f in sent] for cid, sent in truth_frames(gt_dir).items()}


def received_by_epoch(rows: list[dict[str, Any]], conn: int = 0) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for r in rows:
        if r["kind"] == "in" and r["conn"] == conn:
            out.setdefault(r["epoch"], []).append(r["raw"])
    return out

"""Recorded session rows from a data directory, in record order: what ``kalshi-replay`` serves.

Reads sealed Parquet segments (``segments/date=*/session_id=N/*.parquet``) and in-progress live
Arrow IPC streams (``live/session_id=N/part-*.arrows``) up to their last complete batch, so a
session can be replayed while it is still being recorded. Rows come out as tuples in
``schemas.log.LOG_COLUMNS`` order: exactly what ``SessionLog`` handed the writer (and the live
tap). A record_seq seen twice (a live part sealed while we read) is given once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from schemas.log import LIVE_DIR, LOG_COLUMNS, SEGMENTS_DIR

_SESSION_DIR = re.compile(r"session_id=(-?\d+)$")


@dataclass(frozen=True, slots=True)
class SessionFiles:
    session_id: int
    sealed: list[Path]
    live: list[Path]


def sessions(data_dir: Path) -> dict[int, SessionFiles]:
    """Every session with data under ``data_dir``."""
    found: dict[int, tuple[list[Path], list[Path]]] = {}
    for d in sorted((data_dir / SEGMENTS_DIR).glob("date=*/session_id=*")):
        m = _SESSION_DIR.search(d.name)
        if m:
            found.setdefault(int(m.group(1)), ([], []))[0].extend(sorted(d.glob("*.parquet")))
    for d in sorted((data_dir / LIVE_DIR).glob("session_id=*")):
        m = _SESSION_DIR.search(d.name)
        if m:
            found.setdefault(int(m.group(1)), ([], []))[1].extend(sorted(d.glob("part-*.arrows")))
    return {sid: SessionFiles(sid, s, lv) for sid, (s, lv) in found.items() if s or lv}


def pick_session(data_dir: Path, session: int | None) -> SessionFiles:
    """The asked session, or the latest one; ``ValueError`` with what to do otherwise."""
    found = sessions(data_dir)
    if not found:
        raise ValueError(
            f"no recorded session under {data_dir} (expected {SEGMENTS_DIR}/ or {LIVE_DIR}/): "
            "pass the recorder's --data-dir"
        )
    if session is None:
        return found[max(found)]
    if session not in found:
        have = ", ".join(str(s) for s in sorted(found)[-5:])
        raise ValueError(f"session {session} is not under {data_dir}; latest sessions: {have}")
    return found[session]


def _batch_rows(batch: pa.RecordBatch | pa.Table) -> Iterator[tuple[Any, ...]]:
    cols = [batch.column(name).to_pylist() for name in LOG_COLUMNS]
    return zip(*cols, strict=True)


def _first_seq(path: Path) -> int:
    try:
        if path.suffix == ".parquet":
            stats = pq.ParquetFile(path).metadata.row_group(0).column(1).statistics
            return int(stats.min) if stats is not None and stats.has_min_max else 0
        with pa.OSFile(str(path)) as src:
            reader = ipc.open_stream(src)
            for batch in reader:
                return int(batch.column("record_seq")[0].as_py())
    except (OSError, pa.ArrowInvalid, IndexError):
        return 0
    return 0


def _live_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Complete batches of a live stream; a torn tail (the writer is mid-batch, or was killed)
    ends the stream quietly."""
    try:
        with pa.OSFile(str(path)) as src:
            reader = ipc.open_stream(src)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                yield batch
    except (pa.ArrowInvalid, OSError, EOFError):
        return


def read_rows(files: SessionFiles) -> Iterator[tuple[Any, ...]]:
    """Rows of one session in record_seq order, each record once."""
    paths = sorted([*files.sealed, *files.live], key=_first_seq)
    last = 0
    for path in paths:
        if path.suffix == ".parquet":
            try:
                pf = pq.ParquetFile(path)
            except (OSError, pa.ArrowInvalid):
                continue  # sealed and removed meanwhile, or unreadable: the other copy serves
            batches: Iterator[Any] = pf.iter_batches(batch_size=8192, columns=list(LOG_COLUMNS))
        else:
            batches = _live_batches(path)
        for batch in batches:
            for row in _batch_rows(batch):
                if row[1] > last:
                    last = row[1]
                    yield row

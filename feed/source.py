"""Recorded session rows from a data directory, in record order: what ``kalshi-replay`` serves.

Reads sealed Parquet segments (``segments/date=*/session_id=N/*.parquet``) and in-progress live
Arrow IPC streams (``live/session_id=N/part-*.arrows``) up to their last complete batch, so a
session can be replayed while it is still being recorded. Rows come out as tuples in
``schemas.log.LOG_COLUMNS`` order: exactly what ``SessionLog`` handed the writer (and the live
tap). A record_seq seen twice (a live part sealed while we read) is given once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.catalog import SessionFiles, first_record_seq, iter_live_batches, sessions
from schemas.log import LIVE_DIR, LOG_COLUMNS, SEGMENTS_DIR

__all__ = ["SessionFiles", "pick_session", "read_rows", "sessions"]


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


def _live_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Complete batches of a live stream; a torn tail (the writer is mid-batch, or was killed),
    or a part sealed and removed meanwhile, ends the stream quietly."""
    try:
        for batch, _ in iter_live_batches(path):
            yield batch
    except (OSError, ValueError):
        return


def read_rows(files: SessionFiles) -> Iterator[tuple[Any, ...]]:
    """Rows of one session in record_seq order, each record once."""
    paths = sorted([*files.sealed, *files.live], key=lambda p: first_record_seq(p) or 0)
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

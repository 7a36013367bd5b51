"""Live files (``live/session_id=N/part-*.arrows``) written the way the recorder writes them, and
left the way a crash leaves them, for the tests of the live reader and of recovery."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recorder.segments import LiveFile, rows_to_batch


def write_live(
    path: Path,
    batches: Sequence[Sequence[tuple[Any, ...]]],
    *,
    compression: str | None = None,
    close: bool = False,
) -> list[int]:
    """Write one batch per item of ``batches`` (rows in ``LOG_SCHEMA`` order) to a live file at
    ``path``; without ``close`` the stream gets no end-of-stream marker, as after ``kill -9``.

    Returns the file size after the schema and after each batch (``len(batches) + 1`` offsets),
    so a test can cut the file anywhere and know which batches are whole."""
    live = LiveFile(path, compression=compression)
    ends = [live.bytes]
    for rows in batches:
        live.write(rows_to_batch(rows))
        ends.append(live.bytes)
    if close:
        live.close()
    else:
        live.abandon()
    return ends

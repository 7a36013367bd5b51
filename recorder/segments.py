"""The session log on disk: live Arrow IPC streams, sealed Parquet segments, crash recovery.

Layout under a data directory (crash safety: ARCHITECTURE.md, Invariants)::

    live/session_id=<id>/.lock                      held (flock) by the writing process
    live/session_id=<id>/part-<NNNNN>.arrows        in progress: Arrow IPC *stream*
    segments/date=YYYY-MM-DD/session_id=<id>/part-<NNNNN>-<first_record_seq>.parquet

Why an IPC stream for live data: it is a sequence of self-delimited record batches, so after a
``kill -9`` (or a power loss) every batch before the torn tail is still readable, while a Parquet
file written directly is useless without its footer (a lesson from the field).

Why sealing is safe to repeat: the segment name is a pure function of the live file's content
(its part number, session and first ``record_seq``; the date of its first record), the Parquet file
is written under a hidden temporary name, fsynced, renamed atomically and the directory fsynced
*before* the live file is deleted. A crash at any step leaves either the live file (sealed again
next time, overwriting the same temporary name) or the complete segment (and possibly the live file,
which is then recognised by the target name and just deleted). No file matching ``*.parquet`` in
``segments/`` is ever partial.

This module does no threading; ``recorder.writer`` drives it from its disk thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from schemas.catalog import (
    DEFAULT_PARQUET,
    LIVE_PART_RE,
    SESSION_DIR_RE,
    ParquetOptions,
    fsync_dir,
    iter_live_batches,
    live_part_path,
    parse_live_path,
    segment_path,
)
from schemas.decisions import EndReason, Recovered, SessionEnd
from schemas.log import (
    LIVE_DIR,
    LOG_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    Decision,
    Kind,
)

SEAL_PARQUET = replace(DEFAULT_PARQUET, compression_level=3)
"""How the recorder seals: zstd level 3, not the archive's 9. Sealing runs beside the reader on a
2-core machine, and level 9 cost ~4 µs of CPU per row against ~0.75 µs at level 3 for 23 vs 28
bytes per delta (target <= 45; issue 16, BENCHMARKS.md). ``kalshi-retention``'s compaction
writes the days it compacts with ``DEFAULT_PARQUET`` (level 9): the archive's bytes, off the hot
path."""

log = logging.getLogger(__name__)

__all__ = [
    "LiveContents",
    "LiveFile",
    "SealResult",
    "SessionLock",
    "read_live",
    "recover",
    "rows_to_batch",
    "seal",
]

LOCK_NAME = ".lock"

LIVE_SCHEMA = LOG_SCHEMA
"""Live streams carry ``LOG_SCHEMA`` unchanged: its metadata already holds the schema version."""
assert LIVE_SCHEMA.metadata is not None and LIVE_SCHEMA.metadata[SCHEMA_VERSION_KEY] == (
    SCHEMA_VERSION.encode()
)

# --------------------------------------------------------------------------------------- paths


def _tmp_name(target: Path) -> Path:
    # hidden and not ending in .parquet: never matched by SEGMENT_GLOB, never loaded
    return target.with_name(f".{target.name}.tmp")


# ------------------------------------------------------------------------------------ batches


_FIELDS = tuple(LOG_SCHEMA)


def rows_to_batch(rows: Sequence[tuple[Any, ...]]) -> pa.RecordBatch:
    """Rows in ``LOG_COLUMNS`` order -> one ``RecordBatch`` of ``LOG_SCHEMA``.

    Transposing with ``zip(*rows)`` and one ``pa.array`` per column is the fastest pure-Python
    route (no per-row dicts); types come from the schema so nothing is inferred.
    """
    columns = zip(*rows, strict=True) if rows else [() for _ in _FIELDS]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, _FIELDS, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=LOG_SCHEMA)


# ------------------------------------------------------------------------------- live streams


class LiveFile:
    """One in-progress part: an Arrow IPC stream on a file we can fsync.

    ``write`` hands a batch to the OS (a ``write(2)``: it survives ``kill -9``); ``sync`` makes it
    survive a power loss. The caller decides how often to call which.
    """

    def __init__(
        self, path: Path, *, compression: str | None = None, check_space: int | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # exclusive create first: a live part is never reopened or truncated by a later writer
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        self._sink = pa.OSFile(str(self.path), "w")
        fsync_dir(self.path.parent)
        options = ipc.IpcWriteOptions(compression=compression)
        self._writer = ipc.new_stream(self._sink, LIVE_SCHEMA, options=options)
        self.rows = 0
        self.first_recv_ns: int | None = None

    @property
    def bytes(self) -> int:
        """Bytes handed to the OS so far (schema + batches)."""
        return int(self._sink.tell())

    def write(self, batch: pa.RecordBatch) -> int:
        """Append one batch; returns the bytes it added."""
        before = self._sink.tell()
        self._writer.write_batch(batch)
        if self.first_recv_ns is None and batch.num_rows:
            self.first_recv_ns = int(batch.column(2)[0].as_py())
        self.rows += batch.num_rows
        return int(self._sink.tell() - before)

    def sync(self) -> None:
        """fsync the data written so far."""
        os.fsync(self._sink.fileno())

    def close(self) -> None:
        """Write the end-of-stream marker, fsync and close (the file is then ready to seal)."""
        try:
            self._writer.close()
            self.sync()
        finally:
            self._sink.close()

    def abandon(self) -> None:
        """Close the descriptor without writing more (after an I/O error): the file stays in
        ``live/`` and the next start seals whatever complete batches it holds."""
        with contextlib.suppress(Exception):
            self._sink.close()


@dataclass
class LiveContents:
    """What could be read back from a live stream."""

    batches: list[pa.RecordBatch]
    rows: int
    good_bytes: int  # offset just past the last complete batch
    size: int  # file size; size - good_bytes is the torn tail

    @property
    def torn_bytes(self) -> int:
        """Bytes after the last complete batch (a torn tail; 0 for a cleanly closed stream)."""
        return max(0, self.size - self.good_bytes)


def read_live(path: Path) -> LiveContents:
    """All complete batches of a live stream (see ``iter_live_batches``)."""
    batches: list[pa.RecordBatch] = []
    good = 0
    for batch, end in iter_live_batches(path):
        batches.append(batch)
        good = end
    size = path.stat().st_size
    return LiveContents(batches, sum(b.num_rows for b in batches), good, size)


# -------------------------------------------------------------------------------------- seal


@dataclass(frozen=True)
class SealResult:
    """One sealed live part."""

    path: Path
    rows: int
    created: bool  # False: the segment already existed (an earlier seal crashed before cleanup)
    torn_bytes: int = 0


def _first_row(path: Path) -> tuple[int, int] | None:
    """``(record_seq, recv_ns)`` of the first non-empty batch, or None if there is none."""
    for batch, _ in iter_live_batches(path):
        if batch.num_rows:
            return int(batch.column(1)[0].as_py()), int(batch.column(2)[0].as_py())
    return None


def seal(
    live_path: Path,
    data_dir: Path,
    *,
    options: ParquetOptions = SEAL_PARQUET,
    byte_budget: int | None = None,
) -> SealResult | None:
    """Seal one closed live part into its Parquet segment and delete the live file.

    Returns None (and deletes the file) when it holds no complete batch. ``byte_budget``: if the
    segment would exceed it, raise ``OSError(ENOSPC)`` before renaming (the disk-limit guard).
    The live stream is read twice (first row, then streamed into row groups) so memory stays at
    one row group however big the part is.
    """
    live_path = Path(live_path)
    session_id, part = parse_live_path(live_path)
    first = _first_row(live_path)
    if first is None:
        live_path.unlink()
        fsync_dir(live_path.parent)
        return None
    target = segment_path(data_dir, session_id, part, first[0], first[1])
    tmp = _tmp_name(target)
    target.parent.mkdir(parents=True, exist_ok=True)

    rows = 0
    end = 0
    if target.exists() and _segment_ok(target):
        created = False
        rows = pq.ParquetFile(target).metadata.num_rows
    else:
        created = True
        buffered: list[pa.RecordBatch] = []
        buffered_rows = 0
        group = options.row_group_rows
        with pq.ParquetWriter(tmp, LOG_SCHEMA, **options.writer_kwargs()) as pw:
            for batch, batch_end in iter_live_batches(live_path):
                end = batch_end
                buffered.append(batch)
                buffered_rows += batch.num_rows
                while buffered_rows >= group:  # exactly-sized row groups, whatever the batches
                    table = pa.Table.from_batches(buffered)
                    pw.write_table(table.slice(0, group), row_group_size=group)
                    rest = table.slice(group)
                    rows += group
                    buffered, buffered_rows = rest.to_batches(), rest.num_rows
            if buffered_rows:
                pw.write_table(pa.Table.from_batches(buffered), row_group_size=buffered_rows)
                rows += buffered_rows
        if byte_budget is not None and tmp.stat().st_size > byte_budget:
            tmp.unlink()
            raise OSError(errno.ENOSPC, "disk limit reached (--disk-limit)", str(target))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    torn = max(0, live_path.stat().st_size - end) if created else 0
    live_path.unlink()
    fsync_dir(live_path.parent)
    return SealResult(target, rows, created, torn)


def _segment_ok(path: Path) -> bool:
    """A segment found at the target name is kept if its footer reads (renames are atomic, so it
    is complete unless someone else wrote it); otherwise it is rewritten from the live file."""
    try:
        pq.ParquetFile(path).metadata  # noqa: B018 - reading the footer is the check
    except (OSError, pa.ArrowException):
        log.warning("segment %s exists but is unreadable; rewriting it from the live file", path)
        return False
    return True


# ------------------------------------------------------------------------------------ locking


class SessionLock:
    """An exclusive ``flock`` on ``live/session_id=<id>/.lock`` while a process writes there.

    ``recover`` skips sessions whose lock is held, so a recorder (e.g. another shard on the same
    data directory) never has its live file sealed under it; the kernel drops the lock when the
    holder dies, even by ``kill -9``, which is exactly when its leftovers become recoverable.
    """

    def __init__(self, session_dir: Path) -> None:
        self.path = Path(session_dir) / LOCK_NAME
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; False if another open file holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self, *, remove_dir: bool = False) -> None:
        """Unlock; with ``remove_dir`` also delete the lock file and the (now empty) session dir."""
        if self._fd is None:
            return
        if remove_dir:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):  # not empty: something is left to recover
                self.path.parent.rmdir()
        os.close(self._fd)
        self._fd = None


# ------------------------------------------------------------------------------------ recover


def _live_parts(session_dir: Path) -> list[Path]:
    parts = [p for p in session_dir.iterdir() if LIVE_PART_RE.match(p.name)]
    return sorted(parts, key=lambda p: int(LIVE_PART_RE.match(p.name).group(1)))  # type: ignore[union-attr]


CRASH_END_DETAIL = (
    "written by the next start when it sealed this session's leftovers: the recorder was killed; "
    "what it had not flushed to the OS is lost"
)


def _last_row(path: Path) -> tuple[int, str | None]:
    """``(record_seq, msg_type)`` of a sealed segment's last row."""
    pf = pq.ParquetFile(path)
    group = pf.read_row_group(pf.num_row_groups - 1, columns=["record_seq", "msg_type"])
    return int(group.column(0)[-1].as_py()), group.column(1)[-1].as_py()


def _seal_crash_end(data_dir: Path, session_id: int, part: int, record_seq: int) -> SealResult:
    """A one-row part holding the crashed session's ``session_end`` (reason ``crash``), sealed
    like any part: the end marker is on disk atomically, whatever happens to the next session."""
    row = (
        session_id, record_seq, time.time_ns(), Kind.DECISION.value, None, None,
        Decision.SESSION_END.value, None, None, None, None, False,
        orjson.dumps(SessionEnd(reason=EndReason.CRASH, detail=CRASH_END_DETAIL).payload()),
        *(None,) * 11,
    )  # fmt: skip
    live = LiveFile(live_part_path(data_dir, session_id, part))
    live.write(rows_to_batch([row]))
    live.close()
    result = seal(live.path, data_dir)
    assert result is not None
    return result


def recover(
    data_dir: Path, *, options: ParquetOptions = SEAL_PARQUET, end_marker: bool = False
) -> Recovered:
    """Seal every live part left by earlier (crashed) runs; run it before recording starts.
    Returns what it sealed, as the payload of the ``recovered`` decision the recorder writes.

    Idempotent: a second call finds nothing. Sessions whose lock is held by a running process are
    skipped. A part that cannot be read for a reason other than a torn tail is left in place and
    listed in ``skipped`` (never deleted: it may be the only copy of that data).

    ``end_marker`` (the recorder sets it): a recovered session whose last row is not a
    ``session_end`` gets one more sealed part with ``session_end {reason: "crash"}`` and the next
    record_seq, so no session is ever left without an end, even if this process dies before its
    own ``recovered`` record reaches the disk. Its rows are not counted in ``rows``.
    """
    files: list[str] = []
    sessions: list[int] = []
    skipped: list[str] = []
    rows = torn_bytes = 0
    live_root = Path(data_dir) / LIVE_DIR
    if not live_root.is_dir():
        return Recovered(files=files, rows=rows, sessions=sessions)
    for session_dir in sorted(live_root.iterdir()):
        m = SESSION_DIR_RE.match(session_dir.name)
        if not (m and session_dir.is_dir()):
            continue
        lock = SessionLock(session_dir)
        if not lock.try_acquire():
            log.info("recover: %s is in use by a running recorder; not touching it", session_dir)
            continue
        try:
            sealed_any = False
            last: tuple[int, Path] | None = None  # (part number, segment) of the last sealed part
            unreadable = False
            for part in _live_parts(session_dir):
                try:
                    result = seal(part, data_dir, options=options)
                except (OSError, ValueError, pa.ArrowException) as exc:
                    log.error("recover: cannot seal %s: %s (left in place)", part, exc)
                    skipped.append(f"{part}: {exc}")
                    unreadable = True
                    continue
                if result is None:
                    continue
                sealed_any = True
                files.append(str(result.path))
                rows += result.rows
                torn_bytes += result.torn_bytes
                last = (parse_live_path(part)[1], result.path)
            if sealed_any:
                sessions.append(int(m.group(1)))
            if end_marker and last is not None and not unreadable:
                seq, msg_type = _last_row(last[1])
                if msg_type != Decision.SESSION_END.value:
                    end = _seal_crash_end(data_dir, int(m.group(1)), last[0] + 1, seq + 1)
                    files.append(str(end.path))
        finally:
            lock.release(remove_dir=True)
    return Recovered(
        files=files, rows=rows, sessions=sessions, torn_bytes=torn_bytes, skipped=skipped
    )

"""The disk side of the session log: a background writer the event loop hands rows to.

The reader never waits for the disk, and a ``kill -9`` loses at most one flush interval (crash
safety, ARCHITECTURE.md, Invariants). ``SegmentWriter`` meets both with three threads and one
bounded queue::

    event loop --append_delta / append--> pending rows as columns (recorder.log_columns)
        --hand-off thread, every flush_interval--> bounded queue of RecordBatches
        (max_queue_batches) --disk thread--> live/ IPC stream (write(2) per batch = flushed to
        the OS; fsync every fsync_interval) --roll--> seal thread --> sealed Parquet

How "bounded queue" is honoured without ever dropping or blocking:

* appending a row is a few ``array``/``list`` appends (no lock, no syscall; see
  ``recorder.log_columns`` for why that is thread-safe);
* every ``flush_interval`` the hand-off thread takes pending rows as RecordBatches onto the queue,
  but only while the queue has room. When the disk thread falls behind (slow fsync, a long seal) and
  the queue is full, the rows simply *stay pending in memory*: nothing is dropped and appending
  never blocks. The state is loud: ``backlog`` turns True, ``stats.backlog_events`` counts the
  ticks it happened, ``stats.queue_depth``/``pending_rows`` show its size, and a ``logging.warning``
  is emitted at most every ``BACKLOG_WARN_EVERY_S`` seconds — the asyncio shell polls these and
  records a ``Decision.WRITER_BACKLOG``. Memory, not data, is what a long backlog costs.
* the seal thread turns each closed live part into Parquet while the disk thread goes on with the
  next part, so a long seal never stalls the live stream.

Errors (ENOSPC, EROFS, EACCES, any ``OSError``) in the threads stop the writer: it refuses further
rows, leaves every sealed segment untouched and the current live part in ``live/`` (sealed by
``recover`` at the next start), sets ``error`` to a ``WriterError`` whose message says what to do,
and sets the ``failed`` event so the shell can stop cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from recorder.log_columns import LogColumns
from recorder.segments import SEAL_PARQUET, LiveFile, SessionLock, seal
from schemas.catalog import (
    ParquetOptions,
    live_part_path,
    live_session_dir,
    utc_date,
)
from schemas.log import LIVE_DIR, SEGMENTS_DIR

log = logging.getLogger(__name__)

BACKLOG_WARN_EVERY_S = 5.0
"""A backlog lasts as long as the disk is slow; one warning per few seconds is loud, not spam."""

MAX_BATCH_ROWS = 16 * 1024
"""Cap on rows per RecordBatch, so a drained backlog becomes several moderate batches: each is
built in ~3 ms holding the GIL at most ~1 ms at a time (lifecycle -> command latency), and a torn
tail after a crash costs at most one such batch."""

_STOP = object()


class WriterError(Exception):
    """The writer cannot continue; ``str()`` is one line a person can act on."""

    def __init__(self, message: str, *, path: str | None = None, errno_: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno_


_INTACT = (
    "sealed segments are intact; the unsealed part stays in live/ and is sealed at the next start"
)


def describe_os_error(exc: OSError, what: str = "writing") -> WriterError:
    """Turn an ``OSError`` into a ``WriterError`` that says what failed, where, and what to do."""
    path = exc.filename or "?"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        msg = f"disk full {what} {path}: free space or point --data-dir elsewhere; {_INTACT}"
    elif code == errno.EROFS:
        msg = (
            f"read-only filesystem {what} {path}: remount it read-write or point --data-dir "
            f"elsewhere; {_INTACT}"
        )
    elif code in (errno.EACCES, errno.EPERM):
        msg = (
            f"permission denied {what} {path}: make the data directory writable by uid "
            f"{os.getuid()} (chown/chmod) or point --data-dir elsewhere; {_INTACT}"
        )
    elif code in (errno.ENOTDIR, errno.EEXIST):
        msg = f"{path} is not a directory: remove or rename it, or point --data-dir elsewhere"
    else:
        msg = f"I/O error {what} {path}: {exc.strerror or exc}; check the disk (dmesg); {_INTACT}"
    return WriterError(msg, path=str(path), errno_=code)


def check_writable(data_dir: Path) -> None:
    """Create ``live/`` and ``segments/`` under ``data_dir`` and prove we can write, fsync and
    delete there; raise ``WriterError`` with an actionable message otherwise.

    Run at startup so a misconfigured ``--data-dir`` fails before any connection is opened.
    """
    data_dir = Path(data_dir)
    for sub in (LIVE_DIR, SEGMENTS_DIR):
        d = data_dir / sub
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".probe-{os.getpid()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(d)
            err = describe_os_error(exc, "preparing data directory at")
            raise WriterError(
                str(err).replace(f"; {_INTACT}", ""), path=err.path, errno_=err.errno
            ) from exc


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of the writer's counters (for the status line and Prometheus)."""

    rows_written: int  # rows handed to the OS in live files
    bytes_written: int  # live bytes + sealed segment bytes written
    bytes_live: int
    bytes_sealed: int
    batches: int
    segments_sealed: int
    queue_depth: int
    queue_capacity: int
    pending_rows: int  # appended but not yet in a batch (grows during a backlog)
    backlog_events: int  # hand-off ticks that found the queue full
    last_fsync_ns: int  # wall clock of the last fsync of the live file, 0 = never
    last_flushed_seq: int  # record_seq of the last row handed to the OS, 0 = none


@dataclass(frozen=True, slots=True)
class WriterOptions:
    """How the writer flushes, syncs, rolls and compresses (the recorder's defaults;
    ``recorder.app`` takes the first five from its settings)."""

    flush_interval: float = 0.1
    """Seconds between hand-offs of pending rows to the OS: what a ``kill -9`` can lose."""
    fsync_interval: float = 1.0
    """Seconds between fsyncs of the live part: what a power cut can lose."""
    roll_seconds: float = 3600
    """A live part is sealed after this long (and when the UTC date changes, so ``date=``
    partitions hold that day's records) ..."""
    roll_bytes: int = 256 * 2**20
    """... or after this many bytes of live stream."""
    disk_limit_bytes: int | None = None
    """The bytes this writer has on disk beyond this count as a full disk (tests, and a cap on
    shared machines)."""
    live_compression: str | None = "lz4"
    """``"lz4"``, ``"zstd"`` or None for live batches: lz4 is nearly free and cuts live bytes
    several-fold (bench/disk_bytes.py)."""
    max_queue_batches: int = 64
    """Batches the hand-off thread may queue ahead of the disk thread (then rows stay pending)."""
    parquet: ParquetOptions = SEAL_PARQUET
    """How parts are sealed (zstd 3: a seal must keep up with the feed)."""


class SegmentWriter:
    """Writes log rows to ``live/`` and seals them into Parquet segments, off the event loop.

    Rows are tuples in ``LOG_COLUMNS`` order with strictly increasing ``record_seq`` (the caller
    assigns it); how often parts flush, sync and roll is ``options`` (:class:`WriterOptions`).
    """

    def __init__(
        self, data_dir: Path, session_id: int, options: WriterOptions = WriterOptions()
    ) -> None:
        self.data_dir = Path(data_dir)
        self.session_id = session_id
        self.options = options

        self._pending = LogColumns(session_id)
        self._pending.refusal = WriterError("log writer is not running (not started)")
        self.append_delta = self._pending.append_delta
        """Queue one ``orderbook_delta`` row without building it (the hot path, straight into
        ``recorder.log_columns``); same promises as ``append``."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=options.max_queue_batches)
        self._capacity = options.max_queue_batches
        self._stop_evt = threading.Event()
        self.failed = threading.Event()
        """Set when the writer stopped on an error (``error`` says why)."""
        self.error: WriterError | None = None
        self._threads: list[threading.Thread] = []
        self._lock = SessionLock(live_session_dir(self.data_dir, session_id))

        self._live: LiveFile | None = None
        self._live_date: str | None = None
        self._live_opened = 0.0
        self._part = 0
        self._sealed: list[Path] = []
        self._last_fsync = 0.0
        self._dirty = False
        self._last_warn = 0.0
        self._backlogged = False
        self._seal_request: threading.Event | None = None
        self._disk_done = threading.Event()
        # closed live parts waiting to be sealed (path, bytes, optional "done" event); unbounded
        # but tiny: one entry per rolled part
        self._seal_queue: queue.Queue[Any] = queue.Queue()
        self._seal_abort = threading.Event()

        self._rows_written = 0
        self._bytes_live = 0
        self._bytes_sealed = 0
        self._batches = 0
        self._backlog_events = 0
        self._last_fsync_ns = 0
        self._last_flushed_seq = 0
        self._unsealed_bytes = 0  # closed live parts not yet sealed (for the disk limit)
        self._current_live_bytes = 0  # size of the open part (read by the seal thread)
        self.live_bytes_peak = 0
        """Largest live part seen (bytes): what ``roll_bytes`` is compared against."""

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        """Check the directory, take the session lock and start both threads."""
        check_writable(self.data_dir)
        if not self._lock.try_acquire():
            raise WriterError(
                f"session {self.session_id} is already being written under {self.data_dir}"
            )
        self._pending.refusal = None
        for name, target in (
            ("handoff", self._handoff_loop),
            ("disk", self._disk_loop),
            ("seal", self._seal_loop),
        ):
            t = threading.Thread(target=target, name=f"log-writer-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def append(self, row: tuple[Any, ...]) -> None:
        """Queue one row (``LOG_COLUMNS`` order). O(1), never blocks, never touches the disk.

        Raises ``WriterError`` once the writer has failed or been stopped: silently accepting rows
        that can no longer be written would be silent loss.
        """
        self._pending.append_row(row)

    @property
    def backlog(self) -> bool:
        """True while the hand-off queue is full and rows are waiting in memory."""
        return self._backlogged

    @property
    def stats(self) -> WriterStats:
        """Current counters (cheap; safe to call from any thread)."""
        return WriterStats(
            rows_written=self._rows_written,
            bytes_written=self._bytes_live + self._bytes_sealed,
            bytes_live=self._bytes_live,
            bytes_sealed=self._bytes_sealed,
            batches=self._batches,
            segments_sealed=len(self._sealed),
            queue_depth=self._queue.qsize(),
            queue_capacity=self._capacity,
            pending_rows=len(self._pending),
            backlog_events=self._backlog_events,
            last_fsync_ns=self._last_fsync_ns,
            last_flushed_seq=self._last_flushed_seq,
        )

    @property
    def sealed(self) -> list[Path]:
        """Segments sealed so far by this writer, in order."""
        return list(self._sealed)

    def seal_now(self, timeout: float = 30.0) -> None:
        """Ask the disk thread to seal the current part after what is queued (e.g. before a
        planned maintenance); returns once done or after ``timeout``."""
        done = threading.Event()
        self._seal_request = done
        done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> list[Path]:
        """Drain every pending row, seal the live part and return all segments sealed by this
        writer. If the writer had failed, returns what was sealed before the failure (``error``
        says what happened). Raises ``WriterError`` if draining takes longer than ``timeout``."""
        self._refuse(WriterError("log writer is not running (stopped)"))
        self._stop_evt.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            raise WriterError(
                f"log writer did not drain within {timeout:.0f}s ({len(self._pending)} rows "
                f"pending); what reached live/ is sealed at the next start"
            )
        self._lock.release(remove_dir=True)  # keeps the dir if a live part is left to recover
        return self.sealed

    # ------------------------------------------------------------------ hand-off thread

    def _handoff_loop(self) -> None:
        try:
            while not self.failed.is_set():
                stopping = self._stop_evt.wait(self.options.flush_interval)
                self._handoff(final=stopping)
                if stopping:
                    self._put_blocking(_STOP)
                    return
        except Exception as exc:  # a bad row is a bug; never let it die silently
            self._fail(exc)
            self._put_blocking(_STOP)  # the disk thread still seals what it already has

    def _handoff(self, *, final: bool) -> None:
        pending = self._pending
        while len(pending) and not self.failed.is_set():
            if self._queue.full() and not final:
                self._note_backlog()
                return
            batch = pending.take(MAX_BATCH_ROWS)
            if batch is None:
                break
            time.sleep(0)  # let the reader have the GIL between batches
            if final:
                self._put_blocking(batch)
            else:
                self._queue.put_nowait(batch)  # only this thread puts: room was checked
        if self._backlogged and not len(pending):  # everything handed over: caught up
            self._backlogged = False
            log.info("log writer caught up (queue depth %d)", self._queue.qsize())

    def _put_blocking(self, item: Any) -> None:
        while not self._disk_done.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _note_backlog(self) -> None:
        self._backlog_events += 1
        self._backlogged = True
        now = time.monotonic()
        if now - self._last_warn >= BACKLOG_WARN_EVERY_S:
            self._last_warn = now
            log.warning(
                "log writer behind: queue full (%d/%d batches), %d rows waiting in memory; "
                "nothing is dropped, but the disk at %s is slower than the feed",
                self._queue.qsize(),
                self._capacity,
                len(self._pending),
                self.data_dir,
            )

    # ------------------------------------------------------------------ disk thread

    def _disk_loop(self) -> None:
        idle = max(0.01, min(self.options.fsync_interval, self.options.flush_interval * 5))
        try:
            while not self._seal_abort.is_set():
                try:
                    item = self._queue.get(timeout=idle)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    self._write(item)
                now = time.monotonic()
                if self._dirty and now - self._last_fsync >= self.options.fsync_interval:
                    self._fsync()
                if self._live is not None and now - self._live_opened >= self.options.roll_seconds:
                    self._roll()
                req = self._seal_request
                if req is not None and self._queue.empty():
                    self._seal_request = None
                    self._roll(done=req)
            if not self._seal_abort.is_set():
                self._roll()
        except Exception as exc:
            self._fail(exc)
        finally:
            if self._live is not None:
                self._live.abandon()  # stays in live/ for recover()
                self._live = None
                # let recover() (this process or the next) seal what reached live/
                with contextlib.suppress(OSError):
                    self._lock.release()
            self._seal_queue.put(_STOP)
            self._disk_done.set()

    def _write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        recv_ns = batch.column(2)
        date = utc_date(int(recv_ns[0].as_py()))
        if self._live is not None and (
            date != self._live_date or self._live.bytes >= self.options.roll_bytes
        ):
            self._roll()
        if self._live is None:
            self._open_part(date)
        live = self._live
        assert live is not None
        if self.options.disk_limit_bytes is not None:
            on_disk = self._bytes_sealed + self._unsealed_bytes + live.bytes + batch.nbytes
            if on_disk > self.options.disk_limit_bytes:
                raise OSError(
                    errno.ENOSPC, "disk limit reached (--disk-limit-bytes)", str(live.path)
                )
        added = live.write(batch)
        self._bytes_live += added
        self._rows_written += batch.num_rows
        self._batches += 1
        self._dirty = True
        self._last_flushed_seq = int(batch.column(1)[-1].as_py())
        self._current_live_bytes = live.bytes
        self.live_bytes_peak = max(self.live_bytes_peak, self._current_live_bytes)

    def _open_part(self, date: str) -> None:
        self._part += 1
        path = live_part_path(self.data_dir, self.session_id, self._part)
        self._live = LiveFile(path, compression=self.options.live_compression)
        self._live_date = date
        self._live_opened = time.monotonic()
        self._bytes_live += self._live.bytes  # the schema message

    def _fsync(self) -> None:
        if self._live is not None:
            self._live.sync()
        self._dirty = False
        self._last_fsync = time.monotonic()
        self._last_fsync_ns = time.time_ns()

    def _roll(self, done: threading.Event | None = None) -> None:
        """Close the current part (end-of-stream marker + fsync) and hand it to the seal thread.

        Sealing a full part (millions of rows through zstd) takes seconds; doing it here would
        stall the live stream and fill the queue every roll, so the disk thread moves straight on
        to the next part while the seal thread works on the closed, immutable one.
        """
        live = self._live
        if live is None:
            if done is not None:
                self._seal_queue.put((None, 0, done))
            return
        self._live = None
        live_bytes = live.bytes
        live.close()
        self._current_live_bytes = 0
        self._last_fsync_ns = time.time_ns()
        self._dirty = False
        self._unsealed_bytes += live_bytes
        self._seal_queue.put((live.path, live_bytes, done))

    # ------------------------------------------------------------------ seal thread

    def _seal_loop(self) -> None:
        while True:
            item = self._seal_queue.get()
            if item is _STOP:
                return
            path, live_bytes, done = item
            try:
                if path is not None and not self._seal_abort.is_set():
                    self._seal_one(path, live_bytes)
            except Exception as exc:
                self._fail(exc)
                self._seal_abort.set()  # the disk thread stops; live files stay for recover()
            finally:
                if done is not None:
                    done.set()

    def _seal_one(self, path: Path, live_bytes: int) -> None:
        budget = limit = self.options.disk_limit_bytes
        if limit is not None:
            # the live file still exists while its segment is written, as on a real disk
            current = self._current_live_bytes
            budget = limit - self._bytes_sealed - self._unsealed_bytes - current + live_bytes
        result = seal(path, self.data_dir, options=self.options.parquet, byte_budget=budget)
        self._unsealed_bytes -= live_bytes
        if result is not None:
            self._sealed.append(result.path)
            self._bytes_sealed += result.path.stat().st_size
            log.info("sealed %s (%d rows)", result.path, result.rows)

    def _refuse(self, err: WriterError) -> None:
        """From now on appending raises (the first reason, or the failure, wins)."""
        self._pending.refusal = self.error or err

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            err = describe_os_error(exc)
        else:
            err = WriterError(
                f"log writer crashed ({type(exc).__name__}: {exc}); this is a bug, please report "
                f"it; {_INTACT}"
            )
        lost = len(self._pending) + sum(
            item.num_rows for item in list(self._queue.queue) if isinstance(item, pa.RecordBatch)
        )
        if lost:
            err = WriterError(
                f"{err} ({lost} rows still in memory were not written)",
                path=err.path,
                errno_=err.errno,
            )
        if self.error is None:
            self.error = err
            log.error("%s", err)
        self._refuse(err)
        self.failed.set()
        self._stop_evt.set()

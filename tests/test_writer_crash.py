"""SegmentWriter with real threads, files and processes: roundtrip, rolling, kill -9, disk errors.

No mocks and no timing thresholds: waits are for a condition with a generous deadline, and
assertions are about content (contiguous ``record_seq``), never about speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from recorder.segments import recover
from recorder.writer import SegmentWriter, WriterError, WriterOptions, check_writable
from schemas.catalog import read_segment, sealed_segments
from schemas.log import LIVE_DIR, SCHEMA_VERSION_KEY
from tests.support.rows import SESSION, make_rows, sealed_rows
from tests.support.wait import wait_for


def append_rows(w: SegmentWriter, first: int, n: int) -> None:
    """Append ``n`` rows (record_seq ``first``...) of ``make_rows``' mix."""
    for r in make_rows(first, n):
        w.append(r)


REPO = Path(__file__).resolve().parents[1]


def record_seqs(data_dir: Path, session: int = SESSION) -> list[int]:
    out: list[int] = []
    for p in sealed_segments(data_dir):
        t = read_segment(p)
        pairs = zip(t["session_id"].to_pylist(), t["record_seq"].to_pylist(), strict=True)
        out += [seq for sid, seq in pairs if sid == session]
    return out


def test_writer_roundtrip(tmp_path: Path) -> None:
    rows = make_rows(1, 5000)
    w = SegmentWriter(tmp_path, SESSION, WriterOptions(flush_interval=0.01))
    w.start()
    for r in rows[:2000]:
        w.append(r)
    wait_for(lambda: w.stats.rows_written == 2000, "first flush")
    for r in rows[2000:]:
        w.append(r)
    sealed = w.stop(timeout=60)
    assert len(sealed) == 1 and sealed == list(sealed_segments(tmp_path))
    assert sealed_rows(tmp_path) == rows
    assert read_segment(sealed[0]).schema.metadata[SCHEMA_VERSION_KEY] == b"1"
    st = w.stats
    assert st.rows_written == 5000 and st.segments_sealed == 1 and st.pending_rows == 0
    assert st.last_flushed_seq == 5000 and st.bytes_sealed == sealed[0].stat().st_size
    assert not (tmp_path / LIVE_DIR / f"session_id={SESSION}").exists()
    with pytest.raises(WriterError):
        w.append(rows[0])


def test_roll_by_size_gives_contiguous_segments(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, SESSION, WriterOptions(flush_interval=0.005, roll_bytes=20_000))
    w.start()
    n = 0
    for _ in range(30):
        append_rows(w, n + 1, 100)
        n += 100
        wait_for(lambda n=n: w.stats.rows_written == n, f"{n} rows flushed")  # type: ignore[misc]
    sealed = w.stop(timeout=60)
    assert len(sealed) >= 5
    assert record_seqs(tmp_path) == list(range(1, n + 1))
    for p in sealed:  # each name carries the first record_seq it holds
        first = read_segment(p)["record_seq"][0].as_py()
        assert p.name.endswith(f"-{first}.parquet")


def test_roll_by_time_and_seal_now(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, SESSION, WriterOptions(flush_interval=0.005))
    w.start()
    append_rows(w, 1, 10)
    wait_for(lambda: w.stats.rows_written == 10, "flush")
    w.seal_now()
    assert w.stats.segments_sealed == 1
    append_rows(w, 11, 10)
    w.options = replace(w.options, roll_seconds=0.0)  # every idle tick is now past the roll time
    wait_for(lambda: w.stats.segments_sealed == 2, "time roll")
    assert w.stop() == list(sealed_segments(tmp_path))
    assert record_seqs(tmp_path) == list(range(1, 21))


class _HeldDisk(SegmentWriter):
    """A writer whose disk thread waits at ``release`` before each batch: the test, not the
    machine's speed, decides that the disk is behind, so a backlog is certain to happen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def _write(self, batch: Any) -> None:
        self.release.wait(120)
        super()._write(batch)


def test_tiny_queue_never_drops(tmp_path: Path) -> None:
    """With a one-batch queue and the disk held back, rows pile up in memory (a loud backlog),
    and once the disk moves again every one of them ends up on disk, in order."""
    w = _HeldDisk(
        tmp_path,
        SESSION,
        WriterOptions(flush_interval=0.001, max_queue_batches=1, live_compression="zstd"),
    )
    w.start()
    total = 0
    for _ in range(5):
        append_rows(w, total + 1, 400)
        total += 400
        time.sleep(0.005)
    wait_for(lambda: w.backlog and w.stats.backlog_events > 0, "a backlog while the disk is held")
    assert w.stats.pending_rows > 0  # rows wait in memory, none dropped
    for _ in range(45):
        append_rows(w, total + 1, 400)
        total += 400
    w.release.set()
    w.stop(timeout=120)
    assert record_seqs(tmp_path) == list(range(1, total + 1))
    assert not w.backlog and w.stats.pending_rows == 0 and w.stats.backlog_events > 0


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from recorder.writer import SegmentWriter, WriterOptions
    from tests.support.rows import make_rows

    data_dir, session = Path(sys.argv[1]), int(sys.argv[2])
    w = SegmentWriter(data_dir, session, WriterOptions(flush_interval=0.1, roll_bytes=200_000))
    w.start()
    seq, reported = 0, 0
    while True:
        for row in make_rows(seq + 1, 50, session=session):
            w.append(row)
        seq += 50
        time.sleep(0.002)
        flushed = w.stats.last_flushed_seq
        if flushed != reported:
            reported = flushed
            print(flushed, w.stats.segments_sealed, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("reports_before_kill", [3, 25])
def test_kill_9_loses_at_most_the_unflushed_tail(tmp_path: Path, reports_before_kill: int) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), str(SESSION)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    last_flushed = 0
    try:
        for _ in range(reports_before_kill):
            line = proc.stdout.readline()
            assert line, "child died before reporting"
            last_flushed = int(line.split()[0])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    sealed_before = list(sealed_segments(data))

    report = recover(data)
    seqs = record_seqs(data)
    assert seqs == list(range(1, len(seqs) + 1)), "sealed data is not a contiguous prefix"
    assert len(seqs) >= last_flushed
    assert report.sessions == [SESSION] and report.rows == len(seqs) - sum(
        read_segment(p).num_rows for p in sealed_before
    )
    assert not any((data / LIVE_DIR).iterdir())
    assert recover(data).files == []  # idempotent after a real crash too


def test_disk_limit_is_a_clean_disk_full(tmp_path: Path) -> None:
    w = SegmentWriter(
        tmp_path,
        SESSION,
        WriterOptions(flush_interval=0.005, roll_bytes=30_000, disk_limit_bytes=150_000),
    )
    w.start()
    seq = 0
    while not w.failed.is_set():
        try:
            append_rows(w, seq + 1, 100)
        except WriterError:
            break
        seq += 100
        wait_for(lambda: w.failed.is_set() or w.stats.pending_rows == 0, "hand-off")
        assert seq < 1_000_000, "the disk limit never triggered"
    wait_for(w.failed.is_set, "failure")
    err = w.error
    assert err is not None
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith("disk full writing ")
    assert str(tmp_path) in msg and "--data-dir" in msg and "sealed segments are intact" in msg
    with pytest.raises(WriterError, match="disk full"):
        w.append(make_rows(seq + 1, 1)[0])
    sealed = w.stop(timeout=30)
    assert sealed, "some segments should have been sealed before the limit"
    before = record_seqs(tmp_path)
    assert before == list(range(1, len(before) + 1))
    # once space is back, the next start recovers the unsealed part: still one contiguous prefix
    recover(tmp_path)
    after = record_seqs(tmp_path)
    assert after[: len(before)] == before and after == list(range(1, len(after) + 1))
    assert len(after) >= w.stats.rows_written


def test_check_writable_creates_dirs(tmp_path: Path) -> None:
    check_writable(tmp_path / "fresh")
    assert (tmp_path / "fresh" / "live").is_dir() and (tmp_path / "fresh" / "segments").is_dir()
    assert list((tmp_path / "fresh" / "live").iterdir()) == []


def test_check_writable_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(WriterError) as exc:
        check_writable(blocker / "data")
    msg = str(exc.value)
    assert "not a directory" in msg and "--data-dir" in msg and "\n" not in msg
    w = SegmentWriter(blocker / "data", SESSION)
    with pytest.raises(WriterError, match="not a directory"):
        w.start()


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root ignores directory permissions (chmod 0500 does not stop it)"
)
def test_check_writable_permission_denied(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(WriterError, match="permission denied") as exc:
            check_writable(locked / "data")
        assert "chown/chmod" in str(exc.value)
    finally:
        locked.chmod(0o700)


def test_a_row_that_does_not_fit_the_schema_fails_loudly(tmp_path: Path) -> None:
    """A bug upstream (a str where an int belongs) stops the writer with a clear error; what was
    already handed over is still sealed, nothing is silently skipped."""
    w = SegmentWriter(tmp_path, SESSION, WriterOptions(flush_interval=0.005))
    w.start()
    append_rows(w, 1, 50)
    wait_for(lambda: w.stats.rows_written == 50, "flush")
    bad = list(make_rows(51, 1)[0])
    bad[1] = "fifty-one"
    w.append(tuple(bad))
    wait_for(w.failed.is_set, "failure")
    assert w.error is not None and "this is a bug" in str(w.error)
    w.stop(timeout=30)
    assert record_seqs(tmp_path) == list(range(1, 51))

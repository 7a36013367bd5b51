"""On-disk format: live IPC streams, sealing, torn tails and idempotent recovery (real files)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.segments import SessionLock, read_live, recover, seal
from schemas.catalog import (
    ParquetOptions,
    live_part_path,
    live_session_dir,
    read_segment,
    sealed_segments,
)
from schemas.log import LOG_COLUMNS, LOG_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY
from tests.support.live import write_live as support_write_live
from tests.support.rows import SESSION, T0, make_rows, sealed_rows


def write_live(
    data_dir: Path,
    batches: list[list[tuple[Any, ...]]],
    *,
    part: int = 1,
    session: int = SESSION,
    compression: str | None = None,
    close: bool = False,
) -> tuple[Path, list[int]]:
    """Write a live part; returns its path and the byte offset after each batch."""
    path = live_part_path(data_dir, session, part)
    ends = support_write_live(path, batches, compression=compression, close=close)
    return path, ends[1:]


def test_roundtrip_identical_content_order_and_version(tmp_path: Path) -> None:
    rows = make_rows(1, 1000)
    path, _ = write_live(tmp_path, [rows[:10], rows[10:600], rows[600:]], close=True)
    result = seal(path, tmp_path)
    assert result is not None and result.created and result.rows == 1000
    assert not path.exists()
    assert result.path == (
        tmp_path / "segments/date=2026-03-01" / f"session_id={SESSION}" / "part-00001-1.parquet"
    )
    assert sealed_rows(tmp_path) == rows
    pf = pq.ParquetFile(result.path)
    footer = pf.metadata.metadata
    assert footer is not None and footer[SCHEMA_VERSION_KEY] == SCHEMA_VERSION.encode()
    assert pf.schema_arrow.equals(LOG_SCHEMA, check_metadata=False)
    # the live stream carried the version too
    assert read_segment(result.path).schema.metadata[SCHEMA_VERSION_KEY] == b"1"


def test_live_stream_schema_carries_version(tmp_path: Path) -> None:
    import pyarrow.ipc as ipc

    path, _ = write_live(tmp_path, [make_rows(1, 3)])
    with ipc.open_stream(path.read_bytes()) as reader:
        assert reader.schema.metadata[SCHEMA_VERSION_KEY] == SCHEMA_VERSION.encode()


def test_row_groups_have_the_configured_size(tmp_path: Path) -> None:
    rows = make_rows(1, 2500)
    path, _ = write_live(tmp_path, [rows[i : i + 333] for i in range(0, 2500, 333)])
    result = seal(path, tmp_path, options=ParquetOptions(row_group_rows=1000))
    assert result is not None
    md = pq.ParquetFile(result.path).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [1000, 1000, 500]
    assert sealed_rows(tmp_path) == rows


@pytest.mark.parametrize("compression", [None, "lz4"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_torn_tail_recovers_exactly_the_complete_batches(
    tmp_path: Path, compression: str | None, data: st.DataObject
) -> None:
    sizes = [1, 7, 50, 3, 120, 9]
    rows = make_rows(1, sum(sizes))
    batches, i = [], 0
    for n in sizes:
        batches.append(rows[i : i + n])
        i += n
    src_dir = tmp_path / "src"
    shutil.rmtree(src_dir, ignore_errors=True)
    path, ends = write_live(src_dir, batches, compression=compression)
    blob = path.read_bytes()
    cut = data.draw(st.integers(0, len(blob)), label="cut")

    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    target = live_part_path(work, SESSION, 1)
    target.parent.mkdir(parents=True)
    target.write_bytes(blob[:cut])

    report = recover(work)
    complete = sum(1 for e in ends if e <= cut)
    expected = [r for b in batches[:complete] for r in b]
    assert sealed_rows(work) == expected
    assert report.rows == len(expected)
    assert not target.exists()
    assert not live_session_dir(work, SESSION).exists()
    assert report.files == ([] if not expected else [str(p) for p in sealed_segments(work)])


def test_empty_live_files_are_removed_without_segment(tmp_path: Path) -> None:
    p1, _ = write_live(tmp_path, [], part=1)  # schema only
    p2 = live_part_path(tmp_path, SESSION, 2)
    p2.write_bytes(b"")  # created, nothing written
    report = recover(tmp_path)
    assert report.files == [] and report.rows == 0 and report.sessions == []
    assert not p1.exists() and not p2.exists()
    assert list(sealed_segments(tmp_path)) == []


def test_recover_is_idempotent(tmp_path: Path) -> None:
    rows_a = make_rows(1, 100)
    rows_b = make_rows(101, 50)
    write_live(tmp_path, [rows_a], part=1)
    write_live(tmp_path, [rows_b], part=2)
    other = SESSION + 1
    write_live(tmp_path, [make_rows(1, 5, session=other)], session=other)
    first = recover(tmp_path)
    assert first.rows == 155 and sorted(first.sessions) == [SESSION, other]
    assert len(first.files) == 3
    segs = sorted(sealed_segments(tmp_path))
    second = recover(tmp_path)
    assert second.files == [] and second.rows == 0
    assert sorted(sealed_segments(tmp_path)) == segs
    mine = [r for r in sealed_rows(tmp_path) if r[0] == SESSION]
    assert mine == rows_a + rows_b


def test_crash_between_rename_and_delete_makes_no_duplicate(tmp_path: Path) -> None:
    rows = make_rows(1, 200)
    path, _ = write_live(tmp_path, [rows[:100], rows[100:]])
    saved = path.read_bytes()
    first = seal(path, tmp_path)
    assert first is not None
    mtime = first.path.stat().st_mtime_ns
    path.write_bytes(saved)  # the state after "rename done, unlink not yet"
    report = recover(tmp_path)
    assert not path.exists()
    assert list(sealed_segments(tmp_path)) == [first.path]
    assert first.path.stat().st_mtime_ns == mtime  # kept, not rewritten
    assert report.files == [str(first.path)]
    assert sealed_rows(tmp_path) == rows


def test_crash_while_writing_temp_file(tmp_path: Path) -> None:
    rows = make_rows(1, 30)
    write_live(tmp_path, [rows])
    seg_dir = tmp_path / "segments/date=2026-03-01" / f"session_id={SESSION}"
    seg_dir.mkdir(parents=True)
    (seg_dir / ".part-00001-1.parquet.tmp").write_bytes(b"PAR1 half a file")
    recover(tmp_path)
    assert sorted(p.name for p in seg_dir.iterdir()) == ["part-00001-1.parquet"]
    assert sealed_rows(tmp_path) == rows


def test_unreadable_segment_at_target_is_rewritten(tmp_path: Path) -> None:
    rows = make_rows(1, 30)
    path, _ = write_live(tmp_path, [rows])
    seg = tmp_path / "segments/date=2026-03-01" / f"session_id={SESSION}" / "part-00001-1.parquet"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"garbage, not written by us")
    recover(tmp_path)
    assert sealed_rows(tmp_path) == rows and not path.exists()


def test_recover_skips_sessions_locked_by_a_running_writer(tmp_path: Path) -> None:
    path, _ = write_live(tmp_path, [make_rows(1, 10)])
    lock = SessionLock(live_session_dir(tmp_path, SESSION))
    assert lock.try_acquire()
    try:
        assert recover(tmp_path).files == []
        assert path.exists()
    finally:
        lock.release()
    assert recover(tmp_path).rows == 10


def test_date_partition_is_the_first_records_utc_date(tmp_path: Path) -> None:
    late = T0 - 2_000  # 2026-02-28 23:59:59.999998
    rows = make_rows(1, 5, t0=late)
    path, _ = write_live(tmp_path, [rows])
    result = seal(path, tmp_path)
    assert result is not None
    assert result.path.parent.parent.name == "date=2026-02-28"


def test_sealed_segments_order_by_part_and_ignores_temp_files(tmp_path: Path) -> None:
    for part in (2, 10, 1):
        start = part * 100
        path, _ = write_live(tmp_path, [make_rows(start, 3)], part=part)
        seal(path, tmp_path)
    seg_dir = sealed_segments(tmp_path)[0].parent
    (seg_dir / ".part-00011-2000.parquet.tmp").write_bytes(b"x")
    names = [p.name for p in sealed_segments(tmp_path)]
    assert names == ["part-00001-100.parquet", "part-00002-200.parquet", "part-00010-1000.parquet"]


def test_read_live_reports_torn_bytes(tmp_path: Path) -> None:
    path, ends = write_live(tmp_path, [make_rows(1, 10), make_rows(11, 10)])
    with open(path, "ab") as fh:
        fh.write(b"\xff\xff\xff\xff\x10\x00")  # the start of a batch that never finished
    contents = read_live(path)
    assert contents.rows == 20 and contents.good_bytes == ends[-1] and contents.torn_bytes == 6


def test_end_marker_closes_a_crashed_session_atomically(tmp_path: Path) -> None:
    import orjson

    rows_a, rows_b = make_rows(1, 100), make_rows(101, 50)
    write_live(tmp_path, [rows_a], part=1)
    path, _ = write_live(tmp_path, [rows_b], part=2)
    with open(path, "ab") as fh:  # a torn tail after the last complete batch
        fh.write(b"\x00" * 37)
    report = recover(tmp_path, end_marker=True)
    assert report.rows == 150 and report.sessions == [SESSION]
    assert len(report.files) == 3  # two parts and the marker
    mine = [r for r in sealed_rows(tmp_path) if r[0] == SESSION]
    assert mine[:150] == rows_a + rows_b
    end = dict(zip(LOG_COLUMNS, mine[150], strict=True))
    assert end["record_seq"] == 151 and end["kind"] == "decision"
    assert end["msg_type"] == "session_end"
    assert orjson.loads(end["raw"])["reason"] == "crash"
    assert recover(tmp_path, end_marker=True).files == []  # idempotent


def test_no_end_marker_when_the_session_already_ended(tmp_path: Path) -> None:
    rows = make_rows(1, 10)
    last = list(rows[-1])
    last[LOG_COLUMNS.index("kind")] = "decision"
    last[LOG_COLUMNS.index("msg_type")] = "session_end"
    rows[-1] = tuple(last)
    write_live(tmp_path, [rows])
    report = recover(tmp_path, end_marker=True)
    assert len(report.files) == 1
    assert [r[0:2] for r in sealed_rows(tmp_path)] == [(SESSION, i) for i in range(1, 11)]

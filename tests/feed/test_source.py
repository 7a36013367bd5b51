"""Replay input: sealed segments and live files up to their last complete batch, once each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from feed.source import pick_session, read_rows
from schemas.log import LOG_COLUMNS, LOG_SCHEMA

SESSION = 42


def _rows(first: int, n: int) -> list[tuple[Any, ...]]:
    out = []
    for rs in range(first, first + n):
        row: list[Any] = [None] * len(LOG_COLUMNS)
        row[:4] = [SESSION, rs, rs * 10, "decision"]
        row[LOG_COLUMNS.index("malformed")] = False
        row[LOG_COLUMNS.index("raw")] = b"{}"
        out.append(tuple(row))
    return out


def _batch(rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    cols = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(cols, LOG_SCHEMA, strict=True)],
        schema=LOG_SCHEMA,
    )


def test_sealed_then_live_with_a_torn_tail(tmp_path: Path) -> None:
    seg = tmp_path / "segments" / "date=2026-11-29" / f"session_id={SESSION}"
    seg.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([_batch(_rows(1, 5))]), seg / "part-a.parquet")
    live = tmp_path / "live" / f"session_id={SESSION}"
    live.mkdir(parents=True)
    path = live / "part-00002.arrows"
    with pa.OSFile(str(path), "wb") as sink, ipc.new_stream(sink, LOG_SCHEMA) as w:
        w.write_batch(_batch(_rows(4, 4)))  # overlaps the sealed part: records 4, 5 again
        w.write_batch(_batch(_rows(8, 3)))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 40])  # the writer was killed mid-batch
    files = pick_session(tmp_path, None)
    assert files.session_id == SESSION
    assert [r[1] for r in read_rows(files)] == [1, 2, 3, 4, 5, 6, 7]
    path.write_bytes(whole)
    assert [r[1] for r in read_rows(files)] == list(range(1, 11))


def test_unknown_session_and_empty_dir_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--data-dir"):
        pick_session(tmp_path, None)
    (tmp_path / "live" / f"session_id={SESSION}").mkdir(parents=True)
    (tmp_path / "live" / f"session_id={SESSION}" / "part-00001.arrows").write_bytes(b"")
    with pytest.raises(ValueError, match=f"latest sessions: {SESSION}"):
        pick_session(tmp_path, 7)

"""The segment catalog: where the session log lives on disk, and how its files are named, listed,
ordered, version-checked and read.

One module for every reader (materialize's loader, training, quality, views, retention and object
store, ``feed.source`` for ``kalshi-replay``) and for the recorder, which writes by the same names
and Parquet options. Layout under a data directory::

    live/session_id=<id>/part-<NNNNN>.arrows                     in progress: Arrow IPC stream
    segments/date=YYYY-MM-DD/session_id=<id>/part-<NNNNN>-<first_record_seq>.parquet   sealed

Sealed segments are immutable, zstd Parquet with ``LOG_SCHEMA`` and the schema version in the
footer; hidden names (a leading ``.``) are a writer's temporaries and never listed. A live stream
is readable up to its last complete batch (:func:`iter_live_batches`). Readers of sealed data
never open ``live/``; only the replay (which may follow a session still being recorded) and the
recorder's crash recovery do.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from schemas.log import (
    LIVE_DIR,
    LOG_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    SEGMENT_GLOB,
    SEGMENTS_DIR,
)

LIVE_SUFFIX = ".arrows"
LIVE_PART_RE = re.compile(r"^part-(\d{5,})\.arrows$")
"""A live part's file name; group 1 is its part number."""
SESSION_DIR_RE = re.compile(r"^session_id=(-?\d+)$")
"""A session's directory name (live or sealed); group 1 is the session id."""
_PART_NO = re.compile(r"^part-(\d+)")

KNOWN_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
"""Log schema versions this code reads; anything else is reported, never guessed at."""

_INT_COLUMNS = ("record_seq", "recv_ns", "seq", "ts_ms")
"""Columns that grow (almost) monotonically in record order: DELTA_BINARY_PACKED stores them in a
few bits per row, where dictionary/plain + zstd cannot see the arithmetic progression."""

_DICT_COLUMNS = ("kind", "msg_type", "side", "market_ticker", "event_type", "result")
"""Low-cardinality strings: a dictionary page plus 1-8 bit indices per row."""


@dataclass(frozen=True)
class ParquetOptions:
    """How segments are encoded (the recorder's seal and retention's compaction alike). Defaults
    are the winner of ``bench/disk_bytes.py``.

    ``row_group_rows``: 256 Ki rows keeps a row group at a few MB compressed (DuckDB parallelises
    per row group; the seal streams one row group at a time so memory stays bounded), while pages
    of ``data_page_bytes`` give zstd enough context to find the repeated JSON keys and tickers.
    """

    compression_level: int = 9
    row_group_rows: int = 256 * 1024
    data_page_bytes: int = 4 * 2**20
    delta_ints: bool = True
    raw_encoding: str | None = None  # None = PLAIN; or DELTA_LENGTH_BYTE_ARRAY / DELTA_BYTE_ARRAY

    def writer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pyarrow.parquet.ParquetWriter``."""
        encodings: dict[str, str] = {}
        if self.delta_ints:
            encodings.update(dict.fromkeys(_INT_COLUMNS, "DELTA_BINARY_PACKED"))
        if self.raw_encoding:
            encodings["raw"] = self.raw_encoding
        dict_cols = [c for c in LOG_SCHEMA.names if c in _DICT_COLUMNS]
        plain = [c for c in LOG_SCHEMA.names if c not in encodings and c not in dict_cols]
        kwargs: dict[str, Any] = {
            "compression": "zstd",
            "compression_level": self.compression_level,
            "use_dictionary": dict_cols,
            "data_page_size": self.data_page_bytes,
            # min/max of the raw JSON bytes are useless for pruning and cost bytes per page
            "write_statistics": [c for c in LOG_SCHEMA.names if c != "raw"],
            "store_schema": True,
        }
        if encodings:
            kwargs["column_encoding"] = {**encodings, **dict.fromkeys(plain, "PLAIN")}
        return kwargs


DEFAULT_PARQUET = ParquetOptions()


# --------------------------------------------------------------------------------------- paths


def live_session_dir(data_dir: Path, session_id: int) -> Path:
    """``DATA/live/session_id=<id>``."""
    return Path(data_dir) / LIVE_DIR / f"session_id={session_id}"


def live_part_path(data_dir: Path, session_id: int, part: int) -> Path:
    """``DATA/live/session_id=<id>/part-<NNNNN>.arrows``."""
    return live_session_dir(data_dir, session_id) / f"part-{part:05d}{LIVE_SUFFIX}"


def utc_date(recv_ns: int) -> str:
    """UTC calendar date (``YYYY-MM-DD``) of a ns timestamp: the segment's ``date`` partition."""
    return dt.datetime.fromtimestamp(recv_ns // 1_000_000_000, tz=dt.UTC).strftime("%Y-%m-%d")


def segment_path(
    data_dir: Path, session_id: int, part: int, first_record_seq: int, first_recv_ns: int
) -> Path:
    """The deterministic sealed name of a live part (what makes re-sealing idempotent)."""
    return (
        Path(data_dir)
        / SEGMENTS_DIR
        / f"date={utc_date(first_recv_ns)}"
        / f"session_id={session_id}"
        / f"part-{part:05d}-{first_record_seq}.parquet"
    )


def parse_live_path(path: Path) -> tuple[int, int]:
    """``(session_id, part)`` from a live file path; ``ValueError`` if it is not one."""
    m_part = LIVE_PART_RE.match(path.name)
    m_sess = SESSION_DIR_RE.match(path.parent.name)
    if not (m_part and m_sess):
        raise ValueError(f"{path} is not a live part file (live/session_id=N/part-NNNNN.arrows)")
    return int(m_sess.group(1)), int(m_part.group(1))


def session_of_path(path: Path) -> int | None:
    """The ``session_id`` of a segment's (or live part's) hive directory, None if it has none."""
    m = SESSION_DIR_RE.match(path.parent.name)
    return int(m.group(1)) if m else None


def fsync_dir(path: Path) -> None:
    """Make a rename/create/unlink in ``path`` durable (the file's own fsync does not cover it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def data_dir_problem(data_dir: Path) -> str | None:
    """Why ``data_dir`` is not a recorder's data directory, or None if it is one.

    A recorder creates ``live/`` at its first start and ``segments/`` at its first seal, so a
    directory with neither never saw one (a typo, an unmounted disk).
    """
    if not data_dir.exists():
        return f"data directory {data_dir} does not exist; check the path (nothing was created)"
    if not data_dir.is_dir():
        return f"{data_dir} is not a directory; expected the recorder's data directory"
    if not ((data_dir / SEGMENTS_DIR).is_dir() or (data_dir / LIVE_DIR).is_dir()):
        return (
            f"{data_dir} has never been written by a recorder (no {SEGMENTS_DIR}/ or {LIVE_DIR}/);"
            " check the path (nothing was created)"
        )
    return None


# ------------------------------------------------------------------------------------- listing


def _sealed_order(path: Path) -> tuple[str, int, int, str]:
    """(date, session, part, name): the order the recorder sealed them in."""
    m = _PART_NO.match(path.name)
    return path.parent.parent.name, session_of_path(path) or 0, int(m[1]) if m else 0, path.name


def sealed_segments(data_dir: Path) -> list[Path]:
    """Every sealed segment under ``data_dir/segments`` in (date, session, part) order; hidden
    temporaries are never listed, ``live/`` is never looked at."""
    paths = [p for p in Path(data_dir).glob(SEGMENT_GLOB) if not p.name.startswith(".")]
    return sorted(paths, key=_sealed_order)


def version_problem(version: bytes | str | None) -> str | None:
    """Why a file with this schema version (footer metadata) cannot be read, or None."""
    if version is None:
        return f"no schema version in the file metadata ({SCHEMA_VERSION_KEY.decode()})"
    text = version.decode(errors="replace") if isinstance(version, bytes) else version
    if text not in KNOWN_SCHEMA_VERSIONS:
        known = ", ".join(sorted(KNOWN_SCHEMA_VERSIONS))
        return f"unknown schema version {text!r} (this build knows {known}); upgrade to read it"
    return None


def readable_segments(
    data_dir: Path, skip_sessions: frozenset[int] = frozenset()
) -> tuple[list[Path], list[str]]:
    """Sealed segments whose footer reads and whose schema version is known, and the others as
    ``"<path>: <reason>"`` lines. Files of ``skip_sessions`` are not opened at all (so a nightly
    job that skips finished sessions costs what is new, not all history)."""
    good: list[Path] = []
    skipped: list[str] = []
    for path in sealed_segments(data_dir):
        if skip_sessions and session_of_path(path) in skip_sessions:
            continue
        try:
            meta = pq.read_schema(path).metadata or {}
        except Exception as exc:  # pyarrow raises several types for damaged files
            skipped.append(f"{path}: unreadable ({exc})")
            continue
        problem = version_problem(meta.get(SCHEMA_VERSION_KEY))
        if problem is not None:
            skipped.append(f"{path}: {problem}")
            continue
        good.append(path)
    return good, skipped


@dataclass(frozen=True, slots=True)
class SessionFiles:
    """One session's files: sealed segments and live parts (a session may be in progress)."""

    session_id: int
    sealed: list[Path]
    live: list[Path]


def sessions(data_dir: Path) -> dict[int, SessionFiles]:
    """Every session with data under ``data_dir``, sealed and live."""
    found: dict[int, tuple[list[Path], list[Path]]] = {}
    for path in sealed_segments(data_dir):
        sid = session_of_path(path)
        if sid is not None:
            found.setdefault(sid, ([], []))[0].append(path)
    for path in sorted((Path(data_dir) / LIVE_DIR).glob(f"session_id=*/part-*{LIVE_SUFFIX}")):
        sid = session_of_path(path)
        if sid is not None:
            found.setdefault(sid, ([], []))[1].append(path)
    return {sid: SessionFiles(sid, s, lv) for sid, (s, lv) in sorted(found.items())}


# ------------------------------------------------------------------------------------- reading


def iter_live_batches(
    path: Path, schema: pa.Schema = LOG_SCHEMA
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Yield ``(batch, end_offset)`` for every complete batch of a live stream.

    A torn tail (a batch or the schema cut short by a crash) ends the iteration instead of
    raising: everything before it is intact by construction of the IPC stream format. Arrow
    reports a short read as ``ArrowInvalid`` (metadata) or an ``OSError`` without errno (body).
    Other errors (EIO with an errno, a wrong schema) propagate: deleting a live file we could not
    really read would lose data. So does a batch with a null in a column the schema declares
    non-null (``record_seq``, ``recv_ns``, ...): the writer never leaves one, so only a damaged
    file has it, and the segment could not even be named from such a first row.
    """
    required = [i for i, f in enumerate(schema) if not f.nullable]
    with pa.OSFile(str(path), "r") as src:
        try:
            reader = ipc.open_stream(src)
        except pa.ArrowInvalid:
            return  # not even a complete schema message: nothing was ever readable
        except OSError as exc:
            if exc.errno is not None:
                raise
            return
        if not reader.schema.equals(schema, check_metadata=False):
            raise ValueError(f"{path}: live stream schema differs from the expected one")
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid:
                return  # torn tail: metadata cut short
            except OSError as exc:
                if exc.errno is not None:
                    raise  # a real I/O error from the OS (EIO, ...), not a short file
                return  # torn tail: Arrow's short read of a message body (errno None)
            if nulls := [schema.names[i] for i in required if batch.column(i).null_count]:
                raise ValueError(f"{path}: damaged: nulls in non-null column(s) {nulls}")
            yield batch, int(src.tell())


def first_record_seq(path: Path) -> int | None:
    """The first ``record_seq`` of a sealed segment (footer statistics) or live part (first
    batch); None when it cannot be told (an empty or unreadable file)."""
    try:
        if path.suffix == ".parquet":
            meta = pq.ParquetFile(path).metadata
            col = meta.schema.names.index("record_seq")
            lows = [
                int(st.min)
                for rg in range(meta.num_row_groups)
                if (st := meta.row_group(rg).column(col).statistics) is not None and st.has_min_max
            ]
            return min(lows) if lows else None
        for batch, _ in iter_live_batches(path):
            if batch.num_rows:
                return int(batch.column("record_seq")[0].as_py())
    except (OSError, ValueError, pa.ArrowException):
        return None
    return None


def read_segment(path: Path) -> pa.Table:
    """Read one sealed segment (all columns, in record order)."""
    return pq.read_table(path)


def read_sealed(paths: Iterable[Path]) -> pa.Table:
    """Concatenate segments (e.g. ``sealed_segments(data_dir)``) into one table."""
    tables = [read_segment(p) for p in paths]
    if not tables:
        return LOG_SCHEMA.empty_table()
    return pa.concat_tables(tables)


# ------------------------------------------------------------------------------- training sets

TRAINING_DIR = "training"
"""``DATA/training``: the training sets materialize builds (``build=<n>/`` + the manifest)."""
TRAINING_MANIFEST = "manifest.json"


def read_training_manifest(training_dir: Path) -> dict[str, Any] | None:
    """``<training_dir>/manifest.json`` as a dict, or None when no training set was built there
    (or it cannot be read: a build writes it atomically, so that means none)."""
    try:
        data = orjson.loads((Path(training_dir) / TRAINING_MANIFEST).read_bytes())
    except (OSError, ValueError):  # orjson.JSONDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None


def training_manifest(data_dir: Path | str) -> dict[str, Any] | None:
    """``DATA/training/manifest.json`` as a dict, or None when no training set was built."""
    return read_training_manifest(Path(data_dir) / TRAINING_DIR)


def training_files(training_dir: Path, manifest: dict[str, Any] | None) -> list[Path]:
    """The data files of the builds the manifest lists (a crash can leave an unlisted build
    directory behind until the next build removes it; its rows are not part of the dataset)."""
    files: list[Path] = []
    for build in (manifest or {}).get("builds", []):
        d = build.get("dir") if isinstance(build, dict) else None
        if isinstance(d, str) and d:
            files.extend(sorted((Path(training_dir) / d).glob("*.parquet")))
    return files

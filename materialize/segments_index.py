"""Find the sealed segments of a data directory and key them by content.

Why a content hash and not the path: a segment is immutable once sealed, so its SHA-256 names it
for ever — a segment copied to another machine, renamed, or sealed twice by a recovering recorder
is still loaded exactly once. Only ``segments/`` is ever listed: ``live/`` holds files that are
still being written (materialize never reads ``live/``: ARCHITECTURE.md, Invariants) and is never
opened here.

Ordering: segments are loaded by ``(session_id, first record_seq)`` so that a later segment of a
session can update rows created by an earlier one (a market's ``left_at``, a session's
``ended_at``). Both numbers come from the Parquet footer, which is cheap to read; a file whose
footer cannot be read keeps the ``session_id`` of its hive path and is reported when loaded.

Why a cheap index too: hashing every sealed file every night makes the nightly job cost grow with
all history. :func:`plan` compares each file's ``(path, size, mtime)`` with the manifest and hashes
(and reads the footer of) only files that are new or whose size or mtime changed. A file whose
content changed under a path already loaded is an error to report, never a new
segment: loading it would load that path's records twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from schemas.catalog import sealed_segments, session_of_path
from schemas.log import SCHEMA_VERSION_KEY
from schemas.units import INT64_MAX

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileStat:
    """A sealed segment as listed: path, size and mtime only (no read, no hash)."""

    path: Path
    relpath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class KnownFile:
    """What the manifest remembers of a loaded file; size/mtime are None for old manifest rows."""

    sha256: str
    size: int | None
    mtime_ns: int | None


@dataclass
class Plan:
    """What a run must do with the listed files (see :func:`plan`)."""

    new: list[FileStat]
    """To hash and load (unless the hash shows it is a loaded file under a new name)."""
    unchanged: int
    """Known path, same size and mtime: already loaded, not opened."""
    rehash: list[FileStat]
    """Known path with another size or mtime (or none recorded): hashed to decide."""


@dataclass(frozen=True)
class SegmentRef:
    """A sealed segment on disk, before it is read in full."""

    path: Path
    relpath: str
    """Path relative to the data directory, with ``/`` separators (stored in the manifest)."""
    sha256: str
    size: int
    session_id: int | None
    first_record_seq: int | None
    num_rows: int | None
    schema_version: str | None
    footer_error: str | None
    """Why the footer could not be read (the segment will be reported, not loaded)."""
    mtime_ns: int | None = None

    @property
    def order_key(self) -> tuple[int, int, int, str]:
        """Load order: session, then first record; unreadable files last within their session."""
        sid = self.session_id if self.session_id is not None else INT64_MAX
        first = self.first_record_seq if self.first_record_seq is not None else INT64_MAX
        return (sid, 0 if self.footer_error is None else 1, first, self.relpath)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, streamed so large segments need no memory."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _footer(path: Path) -> tuple[int | None, int | None, int, str | None]:
    """``(session_id, first record_seq, rows, schema version)`` from the Parquet footer."""
    meta = pq.read_metadata(path)
    kv = meta.metadata or {}
    version = kv.get(SCHEMA_VERSION_KEY)
    names = meta.schema.names
    session_id: int | None = None
    first: int | None = None
    if "session_id" in names and "record_seq" in names:
        sid_col = names.index("session_id")
        seq_col = names.index("record_seq")
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            sid_stats = group.column(sid_col).statistics
            seq_stats = group.column(seq_col).statistics
            if sid_stats is not None and sid_stats.has_min_max and session_id is None:
                session_id = int(sid_stats.min)
            if seq_stats is not None and seq_stats.has_min_max:
                lo = int(seq_stats.min)
                first = lo if first is None else min(first, lo)
    return session_id, first, meta.num_rows, version.decode() if version is not None else None


def list_segments(data_dir: Path) -> list[FileStat]:
    """Every sealed segment file under ``data_dir/segments`` with its size and mtime (a
    directory listing and a ``stat`` each: no file is opened)."""
    out: list[FileStat] = []
    for path in sealed_segments(data_dir):
        try:
            st = path.stat()
        except OSError:
            continue  # removed between listing and stat (retention): nothing to load
        if not path.is_file():
            continue
        relpath = path.relative_to(data_dir).as_posix()
        out.append(FileStat(path, relpath, st.st_size, st.st_mtime_ns))
    return out


def plan(stats: list[FileStat], known: dict[str, KnownFile]) -> Plan:
    """Split listed files into unchanged (skip unopened), new, and to-rehash (pure)."""
    new: list[FileStat] = []
    rehash: list[FileStat] = []
    unchanged = 0
    for st in stats:
        k = known.get(st.relpath)
        if k is None:
            new.append(st)
        elif k.size == st.size and k.mtime_ns == st.mtime_ns:
            unchanged += 1
        else:
            rehash.append(st)
    return Plan(new=new, unchanged=unchanged, rehash=rehash)


def describe(st: FileStat, digest: str | None = None) -> SegmentRef:
    """Hash (unless ``digest`` is given) and read the footer of one listed file."""
    digest = digest if digest is not None else sha256_file(st.path)
    session_id = session_of_path(st.path)
    first: int | None = None
    rows: int | None = None
    version: str | None = None
    error: str | None = None
    try:
        footer_sid, first, rows, version = _footer(st.path)
        if footer_sid is not None:
            session_id = footer_sid
    except Exception as exc:  # any footer failure means "unreadable", reported later
        error = f"{type(exc).__name__}: {exc}"
    return SegmentRef(
        path=st.path,
        relpath=st.relpath,
        sha256=digest,
        size=st.size,
        session_id=session_id,
        first_record_seq=first,
        num_rows=rows,
        schema_version=version,
        footer_error=error,
        mtime_ns=st.mtime_ns,
    )


def find_segments(data_dir: Path) -> list[SegmentRef]:
    """All sealed segments under ``data_dir/segments``, hashed, in load order (no index)."""
    refs = [describe(st) for st in list_segments(data_dir)]
    refs.sort(key=lambda r: r.order_key)
    return refs

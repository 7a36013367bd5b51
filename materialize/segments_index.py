"""Find the sealed segments of a data directory and key them by content.

Why a content hash and not the path: a segment is immutable once sealed, so its SHA-256 names it
for ever — a segment copied to another machine, renamed, or sealed twice by a recovering recorder
is still loaded exactly once. Only ``segments/`` is ever listed: ``live/`` holds files that are
still being written (design invariant 8) and is never opened here.

Ordering: segments are loaded by ``(session_id, first record_seq)`` so that a later segment of a
session can update rows created by an earlier one (a market's ``left_at``, a session's
``ended_at``). Both numbers come from the Parquet footer, which is cheap to read; a file whose
footer cannot be read keeps the ``session_id`` of its hive path and is reported when loaded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from schemas.log import SCHEMA_VERSION_KEY, SEGMENT_GLOB

_HASH_CHUNK = 1 << 20
_SESSION_DIR = re.compile(r"^session_id=(-?\d+)$")


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

    @property
    def order_key(self) -> tuple[int, int, int, str]:
        """Load order: session, then first record; unreadable files last within their session."""
        sid = self.session_id if self.session_id is not None else 2**63 - 1
        first = self.first_record_seq if self.first_record_seq is not None else 2**63 - 1
        return (sid, 0 if self.footer_error is None else 1, first, self.relpath)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, streamed so large segments need no memory."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _session_from_path(path: Path) -> int | None:
    m = _SESSION_DIR.match(path.parent.name)
    return int(m.group(1)) if m else None


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


def find_segments(data_dir: Path) -> list[SegmentRef]:
    """All sealed segments under ``data_dir/segments``, hashed, in load order."""
    refs: list[SegmentRef] = []
    for path in sorted(data_dir.glob(SEGMENT_GLOB)):
        if not path.is_file() or path.name.startswith("."):
            continue  # hidden names are temp files of a writer, never sealed segments
        relpath = path.relative_to(data_dir).as_posix()
        size = path.stat().st_size
        digest = sha256_file(path)
        session_id = _session_from_path(path)
        first: int | None = None
        rows: int | None = None
        version: str | None = None
        error: str | None = None
        try:
            footer_sid, first, rows, version = _footer(path)
            if footer_sid is not None:
                session_id = footer_sid
        except Exception as exc:  # any footer failure means "unreadable", reported later
            error = f"{type(exc).__name__}: {exc}"
        refs.append(
            SegmentRef(
                path=path,
                relpath=relpath,
                sha256=digest,
                size=size,
                session_id=session_id,
                first_record_seq=first,
                num_rows=rows,
                schema_version=version,
                footer_error=error,
            )
        )
    refs.sort(key=lambda r: r.order_key)
    return refs

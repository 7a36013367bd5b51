"""Sealed segments in an S3-compatible bucket: ship them there, list and read them back.

``ship(data_dir, url)`` uploads every sealed segment (``segments/date=*/session_id=*/*.parquet``,
never ``live/`` or a hidden temporary file) to ``url`` keeping the relative path, so the bucket
holds the same hive layout as the disk::

    s3://bucket/prefix/segments/date=YYYY-MM-DD/session_id=N/part-....parquet

It is idempotent: a key that already holds an object of the same size is not uploaded again
(sealed files are immutable and their names are a function of their content, so same name and
same size is the same file); anything else is (re)uploaded. An S3 PUT is atomic: readers never see
a partial object.

Reading: :func:`list_sealed` lists the sealed segments under a URL (leaving out originals that a
compacted file of ``materialize.retention`` already contains, in case both were shipped),
:func:`dataset` opens them as one ``pyarrow.dataset`` with ``LOG_SCHEMA``, and
:func:`register_duckdb` makes that a DuckDB view (DuckDB's ``httpfs`` is not needed: Arrow does the
I/O and DuckDB scans the Arrow dataset). :func:`remote_segments` hashes them the way
``materialize.segments_index`` does, and :func:`fetch` mirrors them into a local data directory,
which is how today's ``materialize`` loads a bucket: ``fetch`` then ``kalshi-materialize``.

URLs: ``s3://bucket/prefix`` with the standard AWS credential chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, instance roles), or Arrow's query options for other
S3-compatible servers: ``s3://bucket/prefix?endpoint_override=minio.internal:9000&scheme=http``.
Also ``file:///path`` (a mounted disk or NFS archive). Keys in a URL (``s3://KEY:SECRET@bucket``)
work but are never printed: messages show :func:`redact_url`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from materialize.cli import EXIT_FAILED, fail
from materialize.retention import COMPACTED_FROM_KEY
from schemas.catalog import fsync_dir, sealed_segments
from schemas.log import LOG_SCHEMA, SEGMENTS_DIR

_CHUNK = 1 << 20
_SEGMENT_KEY = re.compile(r"(?:^|/)segments/date=[^/]+/session_id=-?\d+/[^./][^/]*\.parquet$")


def redact_url(url: str) -> str:
    """``url`` without credentials (``s3://KEY:SECRET@bucket`` -> ``s3://***@bucket``)."""
    url = re.sub(r"(?<=://)[^/@]*@", "***@", url)
    return re.sub(r"(?i)((?:secret_key|access_key|session_token)=)[^&]*", r"\1***", url)


def open_url(url: str, *, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, root path)`` for a bucket URL (or a given filesystem and a plain path)."""
    if filesystem is not None:
        return filesystem, url.rstrip("/")
    try:
        fs, root = pafs.FileSystem.from_uri(url)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot open {redact_url(url)}: {exc}") from None
    return fs, root.rstrip("/")


# ------------------------------------------------------------------------------------ ship


def local_sealed(data_dir: Path) -> list[Path]:
    """Sealed segments on disk (never hidden temporaries), in layout order (the catalog's)."""
    return sealed_segments(data_dir)


@dataclass
class ShipReport:
    """What :func:`ship` did."""

    uploaded: list[str] = field(default_factory=list)  # relative paths
    already_there: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


def ship(
    data_dir: Path | str,
    url: str,
    *,
    filesystem: pafs.FileSystem | None = None,
    dates: Iterable[str] | None = None,
) -> ShipReport:
    """Upload the sealed segments of ``data_dir`` (optionally only some ``dates``) to ``url``.

    Only sealed segments are shipped (``segments/``'s ``*.parquet``: complete, renamed files).
    Each object is uploaded to a key with the same relative path, then its size is checked.
    """
    data_dir = Path(data_dir)
    fs, root = open_url(url, filesystem=filesystem)
    wanted = set(dates) if dates is not None else None
    report = ShipReport()
    local = local_sealed(data_dir)
    if wanted is not None:
        local = [p for p in local if p.parent.parent.name.removeprefix("date=") in wanted]
    keys = [f"{root}/{p.relative_to(data_dir).as_posix()}" for p in local]
    infos = fs.get_file_info(keys) if keys else []
    for path, key, info in zip(local, keys, infos, strict=True):
        rel = path.relative_to(data_dir).as_posix()
        size = path.stat().st_size
        if info.type == pafs.FileType.File and info.size == size:
            report.already_there.append(rel)
            continue
        fs.create_dir(key.rsplit("/", 1)[0], recursive=True)
        with path.open("rb") as src, fs.open_output_stream(key) as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
        got = fs.get_file_info(key)
        if got.size != size:
            raise OSError(f"upload of {rel} to {redact_url(url)}: {got.size} bytes, not {size}")
        report.uploaded.append(rel)
        report.bytes_uploaded += size
    return report


# ------------------------------------------------------------------------------------ read


def _superseded(fs: pafs.FileSystem, paths: Sequence[str]) -> set[str]:
    """Originals that a compacted file in the same directory already contains."""
    present = set(paths)
    out: set[str] = set()
    for path in paths:
        if "-to-" not in path.rsplit("/", 1)[-1]:
            continue
        with contextlib.suppress(OSError, ValueError):
            with fs.open_input_file(path) as fh:
                kv = pq.read_metadata(fh).metadata or {}
            for src in json.loads(kv.get(COMPACTED_FROM_KEY, b"[]")):
                sibling = f"{path.rsplit('/', 1)[0]}/{src['name']}"
                if sibling in present:
                    out.add(sibling)
    return out


def _sort_key(path: str) -> tuple[str, int, str]:
    parts = path.split("/")
    return parts[-3], int(parts[-2].split("=", 1)[1]), parts[-1]


def list_sealed(
    url: str,
    *,
    filesystem: pafs.FileSystem | None = None,
    dates: Iterable[str] | None = None,
) -> tuple[pafs.FileSystem, list[str]]:
    """``(filesystem, paths)`` of the sealed segments under ``url`` in (date, session) order."""
    fs, root = open_url(url, filesystem=filesystem)
    base = f"{root}/{SEGMENTS_DIR}"
    wanted = set(dates) if dates is not None else None
    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        return fs, []
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    paths = [
        f.path
        for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File and _SEGMENT_KEY.search(f.path)
    ]
    if wanted is not None:
        paths = [p for p in paths if p.split("/")[-3].removeprefix("date=") in wanted]
    dropped = _superseded(fs, paths)
    return fs, sorted((p for p in paths if p not in dropped), key=_sort_key)


def dataset(
    url: str,
    *,
    filesystem: pafs.FileSystem | None = None,
    dates: Iterable[str] | None = None,
) -> ds.Dataset:
    """The sealed segments under ``url`` as one Arrow dataset with ``LOG_SCHEMA`` (lazy)."""
    fs, paths = list_sealed(url, filesystem=filesystem, dates=dates)
    return ds.dataset(paths, schema=LOG_SCHEMA, format="parquet", filesystem=fs)


def register_duckdb(
    con: Any,
    url: str,
    name: str = "log",
    *,
    filesystem: pafs.FileSystem | None = None,
    dates: Iterable[str] | None = None,
) -> ds.Dataset:
    """Make the bucket's segments the DuckDB view ``name`` (scanned through Arrow, lazily)."""
    data = dataset(url, filesystem=filesystem, dates=dates)
    con.register(name, data)
    return data


@dataclass(frozen=True)
class RemoteSegment:
    """A sealed segment in a bucket, keyed by content like ``segments_index.SegmentRef``."""

    path: str  # filesystem path (bucket/key)
    relpath: str  # relative to the URL root: segments/date=.../part-....parquet
    sha256: str
    size: int


def remote_segments(
    url: str, *, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, list[RemoteSegment]]:
    """Sealed segments under ``url`` with their SHA-256 (streamed; for the loaded-check)."""
    fs, paths = list_sealed(url, filesystem=filesystem)
    _, root = open_url(url, filesystem=filesystem)
    out = []
    for path in paths:
        h = hashlib.sha256()
        size = 0
        with fs.open_input_stream(path) as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        out.append(RemoteSegment(path, path[len(root) + 1 :], h.hexdigest(), size))
    return fs, out


def fetch(
    url: str, data_dir: Path | str, *, filesystem: pafs.FileSystem | None = None
) -> list[str]:
    """Mirror the bucket's sealed segments into ``data_dir`` (same relative paths).

    Files already present with the same size are skipped; each download goes to a hidden
    temporary name, is fsynced and renamed, so ``materialize`` never sees a partial segment.
    Returns the relative paths downloaded.
    """
    data_dir = Path(data_dir)
    fs, paths = list_sealed(url, filesystem=filesystem)
    _, root = open_url(url, filesystem=filesystem)
    got: list[str] = []
    for path in paths:
        rel = path[len(root) + 1 :]
        dest = data_dir / rel
        info = fs.get_file_info(path)
        if dest.is_file() and dest.stat().st_size == info.size:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.fetch.tmp")
        with fs.open_input_stream(path) as src, tmp.open("wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)
        fsync_dir(dest.parent)
        got.append(rel)
    return got


# ------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m materialize.objectstore ship DATA_DIR URL`` / ``fetch URL DATA_DIR``."""
    p = argparse.ArgumentParser(prog="python -m materialize.objectstore")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ship", help="upload sealed segments (idempotent)")
    s.add_argument("data_dir", type=Path)
    s.add_argument("url")
    s.add_argument("--date", action="append", help="only this UTC day (repeatable)")
    f = sub.add_parser("fetch", help="mirror a bucket's sealed segments into a data dir")
    f.add_argument("url")
    f.add_argument("data_dir", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "ship":  # a typo must not "ship 0 segments" for ever
        from materialize.cli import refuse_data_dir

        if (refused := refuse_data_dir("objectstore", args.data_dir)) is not None:
            return refused
    try:
        if args.cmd == "ship":
            r = ship(args.data_dir, args.url, dates=args.date)
            print(
                f"shipped {len(r.uploaded)} segment(s), {r.bytes_uploaded} bytes, to "
                f"{redact_url(args.url)}; {len(r.already_there)} already there"
            )
        else:
            got = fetch(args.url, args.data_dir)
            print(f"fetched {len(got)} segment(s) from {redact_url(args.url)}")
    except (OSError, ValueError) as exc:
        return fail("objectstore", redact_url(str(exc)), EXIT_FAILED)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""materialize.objectstore against a real S3-compatible server: moto's server mode on loopback.

No mock objects: pyarrow's S3 client speaks HTTP to a moto server the test starts on 127.0.0.1.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.fs as pafs
import pytest

from materialize.loader import NoProgress, load, table_counts
from materialize.objectstore import (
    dataset,
    fetch,
    list_sealed,
    local_sealed,
    redact_url,
    register_duckdb,
    remote_segments,
    ship,
)
from materialize.retention import compact
from materialize.segments_index import find_segments
from materialize.targets import DuckDBTarget
from schemas.catalog import live_part_path, read_sealed
from schemas.tables import ALL_TABLES, LOADED_SEGMENTS
from tests.support.segments import SESSION_A, build_scenario

moto_server = pytest.importorskip(
    "moto.server", reason="moto[server] is not installed (pip install 'moto[server]')"
)

BUCKET = "kalshi-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    fs = pafs.S3FileSystem(
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        endpoint_override=endpoint,
        scheme="http",
        allow_bucket_creation=True,
    )
    fs.create_dir(BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def url(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    prefix = request.node.name.replace("[", "_").replace("]", "_")
    return (
        f"s3://testing:testing@{BUCKET}/{prefix}"
        f"?scheme=http&endpoint_override={s3_endpoint}&region=us-east-1"
    )


def relpaths(data_dir: Path) -> list[str]:
    return [p.relative_to(data_dir).as_posix() for p in local_sealed(data_dir)]


def test_ship_uploads_only_sealed_and_is_idempotent(tmp_path: Path, url: str) -> None:
    build_scenario(tmp_path)
    live = live_part_path(tmp_path, SESSION_A, 4)
    live.parent.mkdir(parents=True)
    live.write_bytes(b"in progress")
    hidden = local_sealed(tmp_path)[0].parent / ".part-9.parquet"  # hidden: never shipped
    hidden.write_bytes(b"half")

    first = ship(tmp_path, url)
    assert sorted(first.uploaded) == sorted(relpaths(tmp_path))
    assert first.bytes_uploaded == sum(p.stat().st_size for p in local_sealed(tmp_path))
    second = ship(tmp_path, url)
    assert second.uploaded == [] and sorted(second.already_there) == sorted(first.uploaded)

    fs, paths = list_sealed(url)
    root = paths[0].split("/segments/")[0]
    assert [p[len(root) + 1 :] for p in paths] == relpaths(tmp_path)  # hive layout kept
    everything = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    assert not any("live" in f.path or f.base_name.startswith(".") for f in everything)

    # content-keyed like materialize's index
    _, remote = remote_segments(url)
    # (materialize's own glob would also list the hidden file; the bucket never gets it)
    local = {r.relpath: r.sha256 for r in find_segments(tmp_path) if r.path != hidden}
    assert {r.relpath: r.sha256 for r in remote} == local


def test_dataset_and_duckdb_view_read_the_bucket(tmp_path: Path, url: str) -> None:
    build_scenario(tmp_path)
    ship(tmp_path, url)
    expected = read_sealed(local_sealed(tmp_path))
    got = dataset(url).to_table()
    key = [("session_id", "ascending"), ("record_seq", "ascending")]
    assert got.sort_by(key).equals(expected.sort_by(key))

    con = duckdb.connect()
    register_duckdb(con, url, "log")
    rows = con.execute(
        "SELECT session_id, count(*), max(record_seq) FROM log GROUP BY 1 ORDER BY 1"
    ).fetchall()
    local = duckdb.connect()
    local.register("log", expected)
    assert (
        rows
        == local.execute(
            "SELECT session_id, count(*), max(record_seq) FROM log GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    one_day = dataset(url, dates=["2026-01-02"]).to_table()
    assert 0 < one_day.num_rows < expected.num_rows


def test_materialize_loads_what_was_fetched_from_the_bucket(tmp_path: Path, url: str) -> None:
    src, dst = tmp_path / "vm", tmp_path / "analyst"
    build_scenario(src)
    ship(src, url)
    assert sorted(fetch(url, dst)) == sorted(relpaths(src))
    assert fetch(url, dst) == []  # idempotent

    def counts(data_dir: Path) -> dict[str, int]:
        t = DuckDBTarget(data_dir / "warehouse.duckdb")
        t.ensure_schema()
        try:
            summary = load(data_dir, t, progress=NoProgress())
            assert not summary.skipped
            return table_counts(t, ALL_TABLES)
        finally:
            t.close()

    assert counts(dst) == counts(src)


def test_materialize_cli_reads_a_bucket(tmp_path: Path, url: str) -> None:
    from materialize.__main__ import main

    src, dst = tmp_path / "vm", tmp_path / "analyst"
    build_scenario(src)
    ship(src, url)
    assert main(["--data-dir", str(dst), "--from-url", url, "--no-training"]) == 0
    t = DuckDBTarget(dst / "warehouse.duckdb")
    try:
        loaded = t.con.execute("SELECT count(*) FROM rl_loaded_segments").fetchone()
    finally:
        t.close()
    assert loaded == (len(relpaths(src)),)


def test_analyst_views_read_the_bucket(tmp_path: Path, url: str) -> None:
    from materialize.views import connect, connect_url

    build_scenario(tmp_path)
    ship(tmp_path, url)
    local, remote = connect(tmp_path), connect_url(url)
    for view in ALL_TABLES:
        if view == LOADED_SEGMENTS:
            continue  # a warehouse table, not a view over the log
        q = f"SELECT * FROM {view} ORDER BY ALL"
        assert remote.execute(q).fetchall() == local.execute(q).fetchall(), view
    assert remote.execute("SELECT count(*) FROM rl_orderbook_deltas").fetchone() != (0,)


def test_compacted_file_supersedes_shipped_originals(tmp_path: Path, url: str) -> None:
    build_scenario(tmp_path)
    ship(tmp_path, url)  # the three small originals of session A go up first
    t = DuckDBTarget(tmp_path / "warehouse.duckdb")
    t.ensure_schema()
    try:
        load(tmp_path, t, progress=NoProgress())
        (new, _), *_ = compact(tmp_path, t, before="2026-02-01").compacted
    finally:
        t.close()
    report = ship(tmp_path, url)
    assert report.uploaded == [new]
    _, paths = list_sealed(url)
    assert [p.split("/segments/")[1] for p in paths] == [
        r.removeprefix("segments/") for r in relpaths(tmp_path)
    ]
    assert dataset(url).count_rows() == read_sealed(local_sealed(tmp_path)).num_rows


def test_file_urls_and_redaction(tmp_path: Path) -> None:
    build_scenario(tmp_path / "vm")
    archive = tmp_path / "archive"
    archive.mkdir()
    ship(tmp_path / "vm", archive.as_uri())
    assert (
        dataset(archive.as_uri()).count_rows()
        == read_sealed(local_sealed(tmp_path / "vm")).num_rows
    )
    shutil.rmtree(tmp_path / "vm")
    secret = "s3://AKIAXXXX:sup3rs3cret@bucket/p?secret_key=sup3rs3cret&region=x"
    assert "sup3rs3cret" not in redact_url(secret)

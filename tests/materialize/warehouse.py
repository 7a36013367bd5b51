"""The warehouses the materialize tests load into, for their ``make_target`` fixtures: the
DuckDB file in the data directory, or the test's real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from materialize.targets import DuckDBTarget, PostgresTarget

Target = PostgresTarget | DuckDBTarget
MakeTarget = Callable[[Path], Target]

DUCKDB = "duckdb"
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
POSTGRES_ROWS = pytest.param("postgres-rows", marks=pytest.mark.postgres)
"""PostgreSQL loaded with psycopg's row-by-row COPY instead of the Arrow encoder."""


def targets(request: pytest.FixtureRequest) -> Iterator[MakeTarget]:
    """A factory of targets of the kind ``request.param`` (re-openable, as a second nightly run
    would open it again); every target it opened is closed after the test. Used as
    ``make_target = pytest.fixture(params=[...], name="make_target")(targets)``."""
    kind: str = request.param
    dsn = request.getfixturevalue("pg_dsn") if kind.startswith("postgres") else None
    opened: list[Target] = []

    def factory(data_dir: Path) -> Target:
        t: Target
        if dsn is None:
            t = DuckDBTarget(data_dir / "warehouse.duckdb")
        else:
            t = PostgresTarget(dsn, copy_mode="rows" if kind.endswith("rows") else "arrow")
        opened.append(t)
        return t

    yield factory
    for t in opened:
        t.close()

"""Shared fixtures: a real PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import fresh_database, postgres_server


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    try:
        with postgres_server() as dsn:
            yield dsn
    except Exception as exc:  # pragma: no cover - only on broken machines
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"no PostgreSQL available: {exc}")


@pytest.fixture
def pg_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database on the session's real PostgreSQL server."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn

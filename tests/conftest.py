"""Shared fixtures: a real PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.pg import fresh_database, postgres_server
from tests.support.sim import make_sim, sim_keys

__all__ = ["make_sim", "sim_keys"]  # fixtures for every folder: no test imports a conftest

# Property tests check behaviour, never speed: on a loaded 2-core CI machine hypothesis' default
# 200 ms deadline per example and its "too slow" health check fail tests that are correct.
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")


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

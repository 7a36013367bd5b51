"""The analyst tests' demo data: recorded from the simulator once per test session, shared by the
view, notebook and Spark tests (pytest finds this fixture; no test imports it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from materialize.demo import make_demo_data

DEMO_SECONDS = 8.0


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with two recorded sessions, materialized (``DATA/warehouse.duckdb``)."""
    root = tmp_path_factory.getbasetemp() / "analysts-demo"
    done = root / ".done"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        make_demo_data(root, seconds=DEMO_SECONDS, sessions=2, quiet=True)
        done.touch()
    return root

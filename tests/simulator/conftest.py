"""Fixtures: a quiet simulator on a background thread, torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.server import SimulatorThread, start_in_thread
from tests.simulator.helpers import quiet_config


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key pair for the session: RSA key generation is the slow part of a start."""
    return tmp_path_factory.mktemp("sim-keys")


@pytest.fixture
def sim(keys_dir: Path) -> Iterator[SimulatorThread]:
    with start_in_thread(quiet_config(keys_dir=keys_dir)) as handle:
        yield handle

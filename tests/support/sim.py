"""The simulator as tests use it: lively markets, and the ``make_sim`` / ``sim_keys`` fixtures
(registered once, by ``tests/conftest.py``, for every test folder).

Lives here, not in a folder's conftest, so that no test module imports another folder's conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.faults import FaultConfig
from simulator.market import GenConfig
from simulator.server import SimConfig, SimulatorThread, start_in_thread


@pytest.fixture(scope="session")
def sim_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key pair for the session: RSA key generation is the slow part of a start."""
    return tmp_path_factory.mktemp("rec-sim-keys")


def lively(**gen: Any) -> GenConfig:
    """Markets live a few seconds, so whole lives fit in a short test (the simulator's
    :meth:`GenConfig.short_lives`; ``gen`` overrides its fields)."""
    return GenConfig.short_lives(**gen)


SimFactory = Callable[..., SimulatorThread]


@pytest.fixture
def make_sim(sim_keys: Path, tmp_path: Path) -> Iterator[SimFactory]:
    """Start simulators (lively markets, ground truth in ``tmp_path/truth``); all stopped after
    the test."""
    started: list[SimulatorThread] = []

    def make(faults: FaultConfig | None = None, **kw: Any) -> SimulatorThread:
        kw.setdefault("generator", lively())
        cfg = SimConfig(
            keys_dir=sim_keys,
            ground_truth=tmp_path / "truth",
            faults=faults or FaultConfig(),
            **kw,
        )
        h = start_in_thread(cfg)
        started.append(h)
        return h

    yield make
    for h in started:
        h.stop()

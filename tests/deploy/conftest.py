"""The recorder tests' simulator fixtures, for the scale-out test."""

from tests.recorder.conftest import make_sim, sim_keys

__all__ = ["make_sim", "sim_keys"]

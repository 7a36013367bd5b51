"""Kept only so that modules outside this folder that still import ``lively``/``SimFactory``
from here keep working; the definitions (and the fixtures) live in ``tests/support/sim.py``."""

from tests.support.sim import SimFactory, lively

__all__ = ["SimFactory", "lively"]

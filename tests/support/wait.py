"""The one way tests wait: for a condition, with a deadline that only catches hangs.

A test never sleeps and then checks once: the machine may be loaded, so it waits for the state it
needs. The deadline is not a performance check; it turns a hang into a failure that names what
never happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.02  # short enough to add little to a test, long enough not to steal a core


def wait_for(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Return as soon as ``cond()`` is truthy; raise AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)

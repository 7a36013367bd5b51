"""Moved to ``tests/support/segments.py`` (the one segment builder); this name stays for the tests
that still import it from here."""

from tests.support.segments import *  # noqa: F403
from tests.support.segments import __all__ as __all__

"""The recorder's stream for an actor: a live tap and a replay in Kalshi's own WebSocket protocol,
plus the ``recorder_status`` channel (``docs/tap-protocol.md``), and a client for both.

``feed`` imports ``schemas`` only: the recorder publishes into it (``feed.tap.start_tap``) and the
paper-trading harness consumes it (``feed.Client``).
"""

from feed import events
from feed.book import Book
from feed.client import Client, FeedError
from feed.events import *  # noqa: F403  (the typed events: their list is ``feed.events.__all__``)

__all__ = ["Book", "Client", "FeedError", *events.__all__]

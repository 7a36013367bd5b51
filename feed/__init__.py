"""The recorder's stream for an actor: a live tap and a replay in Kalshi's own WebSocket protocol,
plus the ``recorder_status`` channel (``docs/tap-protocol.md``), and a client for both.

``feed`` imports ``schemas`` only: the recorder publishes into it (``feed.tap.start_tap``) and the
paper-trading harness consumes it (``feed.Client``).
"""

from feed.client import Book, Client, FeedError
from feed.events import (
    BookUpdate,
    FeedEvent,
    Hello,
    Lagged,
    LifecycleEvent,
    MarketJoined,
    MarketLeft,
    MarketSkipped,
    RecordMark,
    SessionEnded,
    Validity,
    ValidityChange,
)

__all__ = [
    "Book",
    "BookUpdate",
    "Client",
    "FeedError",
    "FeedEvent",
    "Hello",
    "Lagged",
    "LifecycleEvent",
    "MarketJoined",
    "MarketLeft",
    "MarketSkipped",
    "RecordMark",
    "SessionEnded",
    "Validity",
    "ValidityChange",
]

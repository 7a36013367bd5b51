"""The session log: one Arrow schema for every record the recorder writes.

A record is one of three kinds (``Kind``):

* ``in``       – a frame received from the exchange, ``raw`` = its exact bytes (parsed or not);
* ``out``      – a command the recorder sent, ``raw`` = the exact bytes sent;
* ``decision`` – something the recorder decided or observed about itself (``Decision``),
  ``raw`` = a JSON object with the details (one struct per decision in ``schemas.decisions``).

``(session_id, record_seq)`` is the total order and the primary key: ``record_seq`` starts at 1 and
increases by one per record within a session, across reconnects and segment files, so a hole in it
is proof of loss. Typed columns sit *beside* ``raw`` (never instead of it) and are null when a field
is absent or cannot be represented exactly (see ``schemas.units``).

Every Parquet file and Arrow IPC stream written with this schema carries ``SCHEMA_VERSION`` under
``SCHEMA_VERSION_KEY`` in its metadata; materialize refuses versions it does not know.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = b"kalshi_recorder.schema_version"


class Kind(StrEnum):
    """What a log record is."""

    IN = "in"
    OUT = "out"
    DECISION = "decision"


class Decision(StrEnum):
    """Names of ``decision`` records (``msg_type``). The JSON payload of each is declared once,
    as a typed struct, in ``schemas.decisions`` (``STRUCTS[Decision.X]``).

    Sessions, participation, gaps and coverage are rebuilt from these alone.
    """

    SESSION_START = "session_start"
    SESSION_END = "session_end"
    RECOVERED = "recovered"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CONNECT_FAILED = "connect_failed"
    MARKET_JOINED = "market_joined"
    MARKET_LEFT = "market_left"
    LIFECYCLE_FLAGGED = "lifecycle_flagged"
    MARKET_SKIPPED = "market_skipped"
    SUBSCRIPTION = "subscription"
    GAP = "gap"
    STALE_SEQ = "stale_seq"
    RESYNC = "resync"
    ANOMALY = "anomaly"
    LOSS = "loss"
    RECONCILED = "reconciled"
    RECONCILE_FAILED = "reconcile_failed"
    COMMAND_TIMEOUT = "command_timeout"
    SUBSCRIPTION_MERGED = "subscription_merged"
    FATAL_CLOSE = "fatal_close"
    WRITER_BACKLOG = "writer_backlog"


LOG_SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.int64(), nullable=False),
        pa.field("record_seq", pa.int64(), nullable=False),
        pa.field("recv_ns", pa.int64(), nullable=False),  # wall clock, ns since epoch (UTC)
        pa.field("kind", pa.string(), nullable=False),  # Kind
        pa.field("conn", pa.int16()),  # connection index (0..n-1); null for session-level records
        pa.field("epoch", pa.int32()),  # per-connection epoch, +1 on every (re)connect
        pa.field("msg_type", pa.string()),  # frame "type", command "cmd", or Decision name
        pa.field("sid", pa.int64()),
        pa.field("seq", pa.int64()),
        pa.field("cmd_id", pa.int64()),  # "id" of a command or of the reply to it
        pa.field("market_ticker", pa.string()),
        pa.field("malformed", pa.bool_(), nullable=False),  # frame did not parse as expected
        pa.field("raw", pa.binary(), nullable=False),  # verbatim bytes (never transformed)
        # typed columns for orderbook_delta
        pa.field("side", pa.string()),  # "yes" | "no"
        pa.field("price", pa.int64()),  # micro-dollars (schemas.units)
        pa.field("delta", pa.int64()),  # centi-contracts, signed change
        pa.field("ts_ms", pa.int64()),  # exchange timestamp, ms (ts_ms, or parsed legacy ts)
        # typed columns for lifecycle messages
        pa.field("event_type", pa.string()),
        pa.field("open_ts", pa.int64()),  # Unix seconds
        pa.field("close_ts", pa.int64()),
        pa.field("determination_ts", pa.int64()),
        pa.field("settled_ts", pa.int64()),
        pa.field("result", pa.string()),
        pa.field("settlement_value", pa.int64()),  # micro-dollars
    ],
    metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
)
"""The session-log schema. Column order is part of the contract; add columns only at the end and
bump ``SCHEMA_VERSION``."""

LOG_COLUMNS: tuple[str, ...] = tuple(LOG_SCHEMA.names)

SEGMENT_GLOB = "segments/date=*/session_id=*/*.parquet"
"""Sealed segments under a data directory (hive partitions ``date``, ``session_id``)."""
LIVE_DIR = "live"
SEGMENTS_DIR = "segments"

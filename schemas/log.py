"""The session log: one Arrow schema for every record the recorder writes.

A record is one of three kinds (``Kind``):

* ``in``       – a frame received from the exchange, ``raw`` = its exact bytes (parsed or not);
* ``out``      – a command the recorder sent, ``raw`` = the exact bytes sent;
* ``decision`` – something the recorder decided or observed about itself (``Decision``),
  ``raw`` = a JSON object with the details (documented per decision below).

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
    """Names of ``decision`` records (``msg_type``) and the keys of their JSON ``raw`` payload.

    Sessions, participation, gaps and coverage are rebuilt from these alone (design invariant 3).
    """

    SESSION_START = "session_start"
    """{environment, lifecycle_mode: bool, version, host, shard: "i/n", ws_url, config: {...}}"""
    SESSION_END = "session_end"
    """{reason: "signal"|"duration"|"error"|"crash"|..., detail?}; "crash" is written by the next
    start when it seals a killed session's leftovers (``recorder.segments.recover``)."""
    RECOVERED = "recovered"
    """Crash leftovers sealed at start: {files: [...], rows, sessions: [...]}"""
    CONNECTED = "connected"
    """{conn, epoch, url}"""
    DISCONNECTED = "disconnected"
    """{conn, epoch, reason, code?: int, close_reason?: str}; ``code``/``close_reason`` are the
    WebSocket close frame the exchange sent (absent when the connection just died or we closed
    it, e.g. ``reason: "inbound silence ..."``). Older logs have only {conn, epoch, reason}."""
    CONNECT_FAILED = "connect_failed"
    """{conn, attempt, reason, retry_in_s}"""
    MARKET_JOINED = "market_joined"
    """{market_ticker, reason: "created"|"adopted"|"late"|"rest_discovery", mid_lifecycle: bool,
    late_by_ms?: int, open_ts?: int, close_ts?: int}"""
    MARKET_LEFT = "market_left"
    """{market_ticker, reason: "determined"|"reconciled_determined"|"rest_gone"|"shutdown"}"""
    LIFECYCLE_FLAGGED = "lifecycle_flagged"
    """A lifecycle frame with a field of an unexpected type (stored null, frame ``malformed``)
    was still acted on, since only ``market_ticker`` + ``event_type`` are needed:
    {market_ticker, event_type, problem}"""
    MARKET_SKIPPED = "market_skipped"
    """{market_ticker, reason: "filtered"|"shard"|"already_open"}"""
    SUBSCRIPTION = "subscription"
    """A sid now holds these markets: {conn, epoch, sid, channel, market_tickers: [...]}"""
    GAP = "gap"
    """Forward seq gap on a sid: {conn, epoch, sid, expected, got, market_tickers: [...]}"""
    STALE_SEQ = "stale_seq"
    """Old or duplicate seq (frame still recorded): {conn, epoch, sid, last, got}"""
    RESYNC = "resync"
    """Re-snapshot requested: {conn, epoch, sid, market_tickers,
    method: "get_snapshot"|"resubscribe"}"""
    ANOMALY = "anomaly"
    """Impossible book state: {market_ticker, sid, what: "negative_size"|"delta_before_snapshot"|
    "crossed_book"|"crossed_persists"|"inexact_value"|"bad_snapshot"|..., detail}; one record
    per episode (until a snapshot anchors the market again), each followed by a resync (with
    backoff) except a first ``crossed_book``. Subscription trouble is {what: "CommandFailed"|
    "GaveUp"|"Fallback"|"CapLowered"|"MarketNotFound", detail} (no market_ticker)."""
    LOSS = "loss"
    """The exchange says data was lost (error 25) or the writer had to drop: {sid?, detail}"""
    RECONCILED = "reconciled"
    """REST reconciliation: {joined: [...], left: [...], trigger?: "reconnect"|"periodic",
    anchor_ms?: int, markets?: int, requests?: int, fallbacks?: [...]}; ``anchor_ms`` is the
    creation time (exchange clock, ms) from which missed markets are looked for: the session
    start less the clock-skew margin. Older logs have only {joined, left}."""
    RECONCILE_FAILED = "reconcile_failed"
    """A REST reconciliation pass failed; nothing was left because of it, it is retried:
    {trigger, error, retry_in_s}"""
    COMMAND_TIMEOUT = "command_timeout"
    """A command got no answer by its deadline: {conn, epoch, cmd_id, cmd, action?, purpose,
    sid?, market_tickers, waited_ms, then: "retry"|"snapshot"|"resubscribe"|"drop_sid"}; ``then``
    is how the truth is re-established (sent again, snapshots asked again, sid unsubscribed and
    its markets subscribed again, sid taken as gone)."""
    SUBSCRIPTION_MERGED = "subscription_merged"
    """A subscribe was merged into an existing subscription (notes §4.7): {conn, epoch, cmd_id,
    sid: int|null (null until a frame names it), market_tickers, how: "ok_without_sid"|
    "existing_sid"|"error_6"}"""
    FATAL_CLOSE = "fatal_close"
    """The exchange closed the connection with a 4000-4999 code several times in a row (auth):
    the run stops with exit 2. {conn, code, close_reason, repeats}"""
    WRITER_BACKLOG = "writer_backlog"
    """The disk writer fell behind: {queue_depth, capacity}"""


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

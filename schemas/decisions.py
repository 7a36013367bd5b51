"""The payload of every ``decision`` record, one typed struct per ``Decision``: the one place its
fields are declared and documented.

The recorder writes a decision as ``Struct(...).payload()`` (a JSON-able dict); a reader turns a
record back into the struct with :func:`read_decision`. Unknown fields (a newer writer, or the
``conn``/``epoch`` keys that logs before 2026-11 repeated in every payload) survive in ``extra``;
unknown vocabulary values stay plain strings. ``conn`` and ``epoch`` are the record's *columns*,
never payload fields.

Optional fields (those whose default is ``None``) are left out of the payload while ``None``;
fields without a default are always written, ``None`` included (e.g. ``previous_session`` of a
first session).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, dataclass_transform

import orjson

from schemas.log import Decision


class JoinReason(StrEnum):
    CREATED = "created"  # a market_lifecycle_v2 ``created`` notice
    ADOPTED = "adopted"  # open at start, --adopt-open-markets
    LATE = "late"  # found by REST reconciliation: its ``created`` was missed
    REST_DISCOVERY = "rest_discovery"  # --discovery rest (no lifecycle channel)


class LeaveReason(StrEnum):
    DETERMINED = "determined"
    RECONCILED_DETERMINED = "reconciled_determined"  # REST says determined; notice missed
    REST_GONE = "rest_gone"  # --discovery rest: no longer open
    SHUTDOWN = "shutdown"  # the session ends


class SkipReason(StrEnum):
    FILTERED = "filtered"  # --include/--exclude/--include-mve (``detail`` says which)
    SHARD = "shard"  # another shard's market
    ALREADY_OPEN = "already_open"  # open at start, not adopted


class EndReason(StrEnum):
    SIGNAL = "signal"  # SIGINT/SIGTERM: a graceful stop
    DURATION = "duration"  # --duration ran out
    STOPPED = "stopped"  # stopped from code (tests, embedding)
    ERROR = "error"
    WRITER_ERROR = "writer_error"  # disk full, unwritable: sealed data kept, exit 1
    AUTH_REJECTED = "auth_rejected"  # repeated 4000-4999 closes: exit 2
    CRASH = "crash"  # written by the next start, sealed with the killed session's leftovers


class ResyncMethod(StrEnum):
    GET_SNAPSHOT = "get_snapshot"
    RESUBSCRIBE = "resubscribe"


class TimeoutThen(StrEnum):
    """How the truth is re-established after a command timed out."""

    RETRY = "retry"  # sent again
    SNAPSHOT = "snapshot"  # snapshots asked again
    RESUBSCRIBE = "resubscribe"  # sid unsubscribed, its markets subscribed again
    DROP_SID = "drop_sid"  # sid taken as gone


class MergeHow(StrEnum):
    OK_WITHOUT_SID = "ok_without_sid"
    EXISTING_SID = "existing_sid"
    ERROR_6 = "error_6"


class ReconcileTrigger(StrEnum):
    RECONNECT = "reconnect"  # a lifecycle subscription is live again
    PERIODIC = "periodic"  # every reconcile interval, on a live connection too


STRUCTS: dict[Decision, type[DecisionPayload]] = {}
"""Every decision kind's struct, filled as they are declared below (a test checks that no
``Decision`` lacks one)."""


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
@dataclass(frozen=True, kw_only=True)
class DecisionPayload:
    """Base of every decision struct; ``extra`` holds fields this version does not know.

    A struct is declared as ``class Name(DecisionPayload, kind=Decision.NAME)`` with its fields:
    it becomes a frozen keyword-only dataclass, ``Name.KIND`` is its decision, and it is listed
    in :data:`STRUCTS`."""

    KIND: ClassVar[Decision]
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __init_subclass__(cls, *, kind: Decision, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.KIND = kind
        dataclass(frozen=True, kw_only=True)(cls)
        STRUCTS[kind] = cls

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue  # an optional field (default None) is written only when known
            out[f.name] = value
        return out


class SessionStart(DecisionPayload, kind=Decision.SESSION_START):
    environment: str  # "lifecycle_discovery" | "rest_discovery" (the specification's words)
    exchange_env: str  # "prod" | "demo" | "custom" (any other URL)
    previous_session: dict[str, Any] | None  # {session_id, ended, end_reason} of this shard
    lifecycle_mode: bool
    version: str
    host: str
    shard: str  # "i/n"
    ws_url: str
    config: dict[str, Any]  # the effective settings, redacted (the key path, never the key)


class SessionEnd(DecisionPayload, kind=Decision.SESSION_END):
    reason: EndReason | str
    detail: str | None = None


class Recovered(DecisionPayload, kind=Decision.RECOVERED):
    """Crash leftovers sealed at start."""

    files: list[str]
    rows: int  # rows recovered (the crash ``session_end`` markers not counted)
    sessions: list[int]
    torn_bytes: int = 0  # bytes after the last complete batch, dropped
    skipped: list[str] = field(default_factory=list)  # parts that could not be read at all


class Connected(DecisionPayload, kind=Decision.CONNECTED):
    url: str


class Disconnected(DecisionPayload, kind=Decision.DISCONNECTED):
    """``code``/``close_reason``: the close frame the exchange sent (absent when the connection
    just died or we closed it, e.g. ``reason: "inbound silence ..."``)."""

    reason: str
    code: int | None = None
    close_reason: str | None = None


class ConnectFailed(DecisionPayload, kind=Decision.CONNECT_FAILED):
    attempt: int
    reason: str
    retry_in_s: float


class MarketJoined(DecisionPayload, kind=Decision.MARKET_JOINED):
    market_ticker: str
    reason: JoinReason | str
    mid_lifecycle: bool  # joined after trading began: its first moments are missing
    late_by_ms: int | None = None
    open_ts: int | None = None
    close_ts: int | None = None


class MarketLeft(DecisionPayload, kind=Decision.MARKET_LEFT):
    market_ticker: str
    reason: LeaveReason | str


class LifecycleFlagged(DecisionPayload, kind=Decision.LIFECYCLE_FLAGGED):
    """A lifecycle frame with a field of an unexpected type (stored null, frame ``malformed``)
    was still acted on, since only ``market_ticker`` + ``event_type`` are needed."""

    market_ticker: str
    event_type: str
    problem: str


class MarketSkipped(DecisionPayload, kind=Decision.MARKET_SKIPPED):
    market_ticker: str
    reason: SkipReason | str
    detail: str | None = None  # the finer cause, e.g. "mve" for a filtered market


class Subscription(DecisionPayload, kind=Decision.SUBSCRIPTION):
    """A sid now holds these markets."""

    sid: int
    channel: str
    market_tickers: list[str]


class Gap(DecisionPayload, kind=Decision.GAP):
    """Forward seq gap on a sid."""

    sid: int
    expected: int | None
    got: int | None
    market_tickers: list[str]


class StaleSeq(DecisionPayload, kind=Decision.STALE_SEQ):
    """Old or duplicate seq (the frame is still recorded)."""

    sid: int
    last: int | None
    got: int | None


class Resync(DecisionPayload, kind=Decision.RESYNC):
    sid: int
    market_tickers: list[str]
    method: ResyncMethod | str


class Anomaly(DecisionPayload, kind=Decision.ANOMALY):
    """An impossible book state ({market_ticker, sid, what: "negative_size"|
    "delta_before_snapshot"|"crossed_book"|"crossed_persists"|"inexact_value"|"bad_snapshot"|...}),
    one per episode, each followed by a resync (with backoff) except a first ``crossed_book``;
    or subscription trouble (what: "CommandFailed"|"GaveUp"|"Fallback"|"CapLowered"|
    "MarketNotFound", no market_ticker)."""

    what: str
    detail: str
    market_ticker: str | None = None
    sid: int | None = None


class Loss(DecisionPayload, kind=Decision.LOSS):
    """The exchange says data was lost (error 25) or the writer had to drop."""

    detail: str
    sid: int | None = None


class Reconciled(DecisionPayload, kind=Decision.RECONCILED):
    """A REST reconciliation pass. ``anchor_ms``: the creation time (exchange clock) from which
    missed markets are looked for, the session start less the clock-skew margin. Older logs
    have only {joined, left}."""

    joined: list[str]
    left: list[str]
    trigger: ReconcileTrigger | str | None = None
    anchor_ms: int | None = None
    markets: int | None = None
    requests: int | None = None
    fallbacks: list[str] | None = None


class ReconcileFailed(DecisionPayload, kind=Decision.RECONCILE_FAILED):
    """A pass failed; nothing was left because of it, it is retried."""

    trigger: ReconcileTrigger | str
    error: str
    retry_in_s: float


class CommandTimeout(DecisionPayload, kind=Decision.COMMAND_TIMEOUT):
    """A command got no answer by its deadline."""

    cmd_id: int
    cmd: str
    purpose: str
    sid: int | None
    market_tickers: list[str]
    waited_ms: int
    then: TimeoutThen | str
    action: str | None = None


class SubscriptionMerged(DecisionPayload, kind=Decision.SUBSCRIPTION_MERGED):
    """A subscribe was merged into an existing subscription (docs/protocol.md)."""

    cmd_id: int
    sid: int | None  # None until a frame names it
    market_tickers: list[str]
    how: MergeHow | str


class FatalClose(DecisionPayload, kind=Decision.FATAL_CLOSE):
    """4000-4999 closes several times in a row (auth): the run stops with exit 2."""

    code: int
    close_reason: str | None
    repeats: int


class WriterBacklog(DecisionPayload, kind=Decision.WRITER_BACKLOG):
    """The disk writer fell behind: batches waiting and rows still held in memory."""

    queue_depth: int
    pending_rows: int


def _vocab(cls: type[DecisionPayload], name: str) -> type[StrEnum] | None:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    text = str(hints.get(name, ""))
    for enum in (
        JoinReason,
        LeaveReason,
        SkipReason,
        EndReason,
        ResyncMethod,
        TimeoutThen,
        MergeHow,
        ReconcileTrigger,
    ):
        if text.startswith(enum.__name__):
            return enum
    return None


def from_payload(kind: Decision | str, payload: dict[str, Any]) -> DecisionPayload:
    """The struct of a decision payload; unknown keys go to ``extra``, a known vocabulary value
    becomes its enum. Raises ValueError naming the kind and the missing field."""
    cls = STRUCTS[Decision(kind)]
    known = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
    kw: dict[str, Any] = {}
    for name in known & payload.keys():
        value = payload[name]
        enum = _vocab(cls, name)
        if enum is not None and isinstance(value, str) and value in enum._value2member_map_:
            value = enum(value)
        kw[name] = value
    extra = {k: v for k, v in payload.items() if k not in known}
    try:
        return cls(extra=extra, **kw)
    except TypeError as exc:
        raise ValueError(f"{Decision(kind).value} decision payload: {exc}") from None


def read_decision(msg_type: str, raw: bytes) -> DecisionPayload:
    """A ``decision`` record (its ``msg_type`` and ``raw`` columns) as its struct."""
    payload = orjson.loads(raw)
    if not isinstance(payload, dict):
        raise ValueError(f"{msg_type} decision payload is not a JSON object")
    return from_payload(msg_type, payload)


def decision_or_none(msg_type: str, raw: bytes) -> DecisionPayload | None:
    """A decision record as its struct, or None when its payload is not a JSON object or lacks a
    field its struct requires: for readers that take what a record holds and must not stop at
    one bad record (training sets, the data-quality report). The record's columns
    (``market_ticker``, ``sid``, ``conn``, ``epoch``) still say what it is about."""
    try:
        return read_decision(msg_type, raw)
    except ValueError:  # orjson.JSONDecodeError is one too
        return None


def ticker_of(decision: DecisionPayload | None, column: str | None) -> str | None:
    """The market a decision is about: its payload's ``market_ticker``, else the record's
    ``market_ticker`` column (a payload that did not read still has its column)."""
    said = getattr(decision, "market_ticker", None)
    ticker = said if isinstance(said, str) and said else column
    return ticker if isinstance(ticker, str) else None

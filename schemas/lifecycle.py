"""The typed fields of a market lifecycle message, declared once.

A ``market_lifecycle_v2`` (or ``multivariate_market_lifecycle``) notice carries, besides
``market_ticker`` and ``event_type``, the schedule and outcome fields below. The recorder's parser
reads them into one of these per lifecycle frame (``recorder.protocol.Frame.lifecycle``), the
actor's ``feed.events.LifecycleEvent`` is built on them, and they are the session log's lifecycle
columns (``schemas.log``: same names, same order, same units; a test pins the two lists).

Frozen: a notice, once parsed, is a fact; the feed hands the same event to the broker and to the
actor, and neither may change it under the other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleFields:
    """Schedule and outcome of a market as one lifecycle notice states them (None: not stated,
    or not representable exactly in its unit; the raw frame keeps the original).

    Keyword-only, so a class built on it keeps its own positional fields first."""

    open_ts: int | None = None
    """Unix seconds."""
    close_ts: int | None = None
    """Unix seconds, as scheduled at this notice (``close_date_updated`` moves it)."""
    determination_ts: int | None = None
    settled_ts: int | None = None
    result: str | None = None
    """``"yes"``, ``"no"``, ... as the exchange words it."""
    settlement_value: int | None = None
    """Micro-dollars (``schemas.units``)."""


LIFECYCLE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LifecycleFields))
"""The field names, in the log's column order."""

NO_LIFECYCLE = LifecycleFields()
"""What a frame that is not a lifecycle notice holds: one shared instance, no allocation."""

__all__ = ["LIFECYCLE_FIELDS", "NO_LIFECYCLE", "LifecycleFields"]

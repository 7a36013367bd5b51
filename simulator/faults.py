"""Fault-injection knobs and the counters that prove each fault happened.

Every knob defaults to off. Rates are probabilities (per frame, per command or per second as
noted), so a test can turn one fault up to 1.0 and see it every time. Decisions come from seeded
random generators, so a faulty run is as reproducible as a clean one (apart from timing-driven
knobs such as stalls and drops at wall-clock times).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MALFORMED_KINDS = ("not_json", "truncated", "unknown_type", "missing_fields")


@dataclass
class FaultConfig:
    # protocol level (per data frame on a sid)
    gap_rate: float = 0.0  # skip one seq value before a data frame
    duplicate_rate: float = 0.0  # send a data frame twice (same seq)
    malformed_rate: float = 0.0  # insert a malformed frame after a data frame
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    # per subscribe command
    subscribe_error_rate: float = 0.0
    subscribe_error_code: int = 17  # "Internal error": what a live server answers when it fails
    # lifecycle notices (applied once, before fan-out, so all connections see the same disorder)
    lifecycle_delay_rate: float = 0.0
    lifecycle_delay_max_s: float = 2.0
    # connection level
    drop_rate: float = 0.0  # per open connection per second
    drop_at: tuple[float, ...] = ()  # seconds after start: drop every open connection
    drop_mode: str = "abort"  # "abort" (TCP reset, no close frame) or "close" (close code 1011)
    reject_after_drop_s: float = 0.0  # refuse handshakes this long after any drop
    reject_first_n: int = 0  # refuse the first N handshakes
    reject_status: int = 503  # 503 or 429 (429 carries Retry-After)
    stall_every_s: float = 0.0  # every so often, hold a connection's output ...
    stall_for_s: float = 0.0  # ... this long, then send it all at once (a burst)
    burst_every_s: float = 0.0  # every so often, one market gets burst_size changes in one step
    burst_size: int = 200
    # lifecycle notices lost on live connections (once, before fan-out); REST stays truthful
    lifecycle_drop_rate: float = 0.0
    # asynchronous terminal errors on a live sid (docs/protocol.md §3): per sid per second; the
    # sid ends
    async_error_rate: float = 0.0
    async_error_codes: tuple[int, ...] = (10, 17, 25)
    # close frames with an application code (docs/protocol.md §6: 4000-4999, 4001 = auth)
    close_code: int = 4000
    close_at: tuple[float, ...] = ()  # seconds after start: close every open connection
    close_rate: float = 0.0  # per open connection per second

    def __post_init__(self) -> None:
        bad = [k for k in self.malformed_kinds if k not in MALFORMED_KINDS]
        if bad:
            raise ValueError(f"unknown malformed kind(s) {bad}; choose from {MALFORMED_KINDS}")
        if self.drop_mode not in ("abort", "close"):
            raise ValueError("drop_mode must be 'abort' or 'close'")
        if self.reject_status not in (429, 503):
            raise ValueError("reject_status must be 429 or 503")
        bad_codes = [c for c in self.async_error_codes if c not in (10, 17, 25)]
        if bad_codes or not self.async_error_codes:
            raise ValueError("async_error_codes: choose from 10, 17, 25 (docs/protocol.md §3)")
        if not (1000 <= self.close_code <= 4999) or self.close_code in (1004, 1005, 1006, 1015):
            raise ValueError("close_code must be a sendable close code, e.g. 4000-4999 or 1011")
        self.async_error_codes = tuple(self.async_error_codes)
        self.close_at = tuple(self.close_at)
        self.drop_at = tuple(self.drop_at)


@dataclass
class FaultCounters:
    """How often each fault was injected (totals over all connections)."""

    gaps: int = 0
    duplicates: int = 0
    malformed: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)
    subscribe_errors: int = 0
    lifecycle_delayed: int = 0
    lifecycle_reordered: int = 0
    drops: int = 0
    rejected_handshakes: int = 0
    stalls: int = 0
    bursts: int = 0
    lifecycle_dropped: int = 0
    async_errors: int = 0
    closes: int = 0
    not_found_new: int = 0  # error 16 for a market still in its first seconds
    merged_subscribes: int = 0
    rest_rejected: int = 0  # 400 for a query parameter this exchange does not know
    empty_pongs: int = 0  # client pings answered with an empty pong

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

"""The wire's vocabulary for fuzzing the frame parser: the frame types and the field names the
parsers read (``recorder.protocol``, ``schemas.wire``), so a fuzzer puts wrong, missing or extreme
values exactly where the code looks. One list for every fuzz suite (``tests/security/test_fuzz.py``
and the parser's own properties in ``tests/recorder_core/test_protocol.py``)."""

from __future__ import annotations

from schemas.wire import DELTA_MSG, LIFECYCLE_MSG_TYPES, SNAPSHOT_MSG

FRAME_TYPES: tuple[str, ...] = (
    DELTA_MSG,
    SNAPSHOT_MSG,
    *LIFECYCLE_MSG_TYPES,
    "event_lifecycle",  # a channel the recorder does not subscribe to
    "subscribed",
    "ok",
    "unsubscribed",
    "error",
    "ticker",
    "who_knows",  # a type nobody has documented
)

FIELDS: dict[str, tuple[str, ...]] = {
    "envelope": ("type", "sid", "seq", "id", "msg"),
    "delta": ("market_ticker", "side", "price_dollars", "delta_fp", "ts", "ts_ms"),
    "legacy delta": ("price", "delta"),
    # every snapshot format, most precise first (schemas.wire._FORMATS)
    "snapshot": ("yes_dollars_fp", "no_dollars_fp", "yes_dollars", "no_dollars", "yes", "no"),
    "lifecycle": (
        "event_type",
        "open_ts",
        "close_ts",
        "determination_ts",
        "settled_ts",
        "result",
        "settlement_value",
    ),
    "replies": ("market_tickers", "sids", "code"),
}
"""Field names by where the parsers read them."""

FIELD_KEYS: list[str] = [k for keys in FIELDS.values() for k in keys]
"""Every field name above, in one list (for ``st.sampled_from``)."""

"""The decision structs (``schemas.decisions``): one per ``Decision``, a payload reads back as the
struct that wrote it, and what a reader does not know survives. No I/O."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import mapping
from schemas.decisions import (
    STRUCTS,
    DecisionPayload,
    Gap,
    JoinReason,
    MarketJoined,
    SessionStart,
    WriterBacklog,
    from_payload,
    read_decision,
)
from schemas.log import Decision


def test_every_decision_kind_has_exactly_one_struct() -> None:
    assert set(STRUCTS) == set(Decision)
    assert all(cls.KIND is kind for kind, cls in STRUCTS.items())


def test_optional_fields_are_written_only_when_known_required_ones_always() -> None:
    joined = MarketJoined(market_ticker="A", reason=JoinReason.CREATED, mid_lifecycle=False)
    assert joined.payload() == {"market_ticker": "A", "reason": "created", "mid_lifecycle": False}
    start = SessionStart(
        environment="lifecycle_discovery",
        exchange_env="demo",
        previous_session=None,
        lifecycle_mode=True,
        version="1",
        host="h",
        shard="0/1",
        ws_url="ws://x",
        config={},
    )
    assert start.payload()["previous_session"] is None  # a first session says so


def test_writer_backlog_declares_what_the_recorder_writes() -> None:
    assert [f.name for f in dataclasses.fields(WriterBacklog) if f.name != "extra"] == [
        "queue_depth",
        "pending_rows",
    ]


def test_old_payloads_keep_conn_and_epoch_as_unknown_fields() -> None:
    old = {"conn": 0, "epoch": 3, "sid": 2, "expected": 5, "got": 7, "market_tickers": ["A"]}
    gap = read_decision("gap", orjson.dumps(old))
    assert isinstance(gap, Gap) and (gap.sid, gap.expected, gap.got) == (2, 5, 7)
    assert gap.extra == {"conn": 0, "epoch": 3}
    assert gap.payload() == old  # nothing a reader does not know is lost on a rewrite


def test_a_missing_field_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="gap decision payload"):
        from_payload("gap", {"sid": 1})


def test_unknown_vocabulary_values_stay_strings_known_ones_become_enums() -> None:
    j = from_payload(
        "market_joined", {"market_ticker": "A", "reason": "late", "mid_lifecycle": True}
    )
    assert isinstance(j, MarketJoined) and j.reason is JoinReason.LATE
    new = from_payload(
        "market_joined", {"market_ticker": "A", "reason": "teleported", "mid_lifecycle": True}
    )
    assert isinstance(new, MarketJoined) and new.reason == "teleported"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@given(
    kind=st.sampled_from(sorted(Decision)),
    values=st.dictionaries(st.text(min_size=1, max_size=12), _json, max_size=12),
)
def test_any_payload_with_the_required_fields_round_trips(
    kind: Decision, values: dict[str, Any]
) -> None:
    cls = STRUCTS[kind]
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    payload = {**values, **{name: values.get(name, 0) for name in required}}
    payload.pop("extra", None)
    struct: DecisionPayload = read_decision(kind.value, orjson.dumps(payload))
    assert type(struct) is cls
    again = struct.payload()
    optional = {f.name for f in dataclasses.fields(cls) if f.default is None}
    for key, value in payload.items():  # every key survives with its value ...
        if value is None and key in optional:
            assert key not in again  # ... but an optional one given as null is left out
        else:
            assert again[key] == value, key


def test_every_payload_key_the_mapping_sql_reads_is_a_decision_field() -> None:
    """The loader and the views read decision payloads in SQL (``schemas.mapping``), a second
    language: each key that SQL reads must be a field of a decision struct, so renaming a field
    fails here instead of silently loading NULLs. ``conn``/``epoch`` are columns now; the SQL
    still reads them from the payloads of logs written before that."""
    texts = [mapping.LAST_RECORD_SQL, mapping.DECISION_FAULTS_SQL]
    for table in (mapping.RECORD_SQL, mapping.DECISION_SQL, mapping.CARRY_SQL, mapping.LOG_SQL):
        texts += table.values()
    keys = set(re.findall(r"\(p, '\$\.([A-Za-z_]\w*)", "\n".join(texts)))
    fields = {f.name for cls in STRUCTS.values() for f in dataclasses.fields(cls)}
    assert len(keys) > 15  # the pattern finds the SQL's reads at all
    assert keys - fields == {"conn", "epoch"}

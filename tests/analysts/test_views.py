"""``materialize.views``: the DuckDB views over a data directory.

Demo data is recorded from the simulator once per test session (``conftest.demo``), then the views
are checked against the segments' contents, the tables' DDL, and what materialize loaded into
``DATA/warehouse.duckdb``; plus an empty directory, live-following, and exact snapshot parsing.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from materialize.loader import transform
from materialize.views import (
    TRAINING_MARKETS,
    TRAINING_ROWS,
    VIEWS,
    connect,
    training_markets_table,
)
from schemas import tables
from schemas.log import LOG_SCHEMA, SEGMENT_GLOB, Decision, Kind
from schemas.mapping import GAP_DECISIONS, _fixed
from schemas.units import fixed_point
from schemas.wire import LIFECYCLE_MSG_TYPES, snapshot_levels

TABLE_VIEWS = tuple(t for t in tables.ALL_TABLES if t != tables.LOADED_SEGMENTS)


def _segments(data_dir: Path) -> pa.Table:
    files = sorted(data_dir.glob(SEGMENT_GLOB))
    assert files, f"no sealed segments under {data_dir}"
    return pa.concat_tables(pq.read_table(f).select(LOG_SCHEMA.names) for f in files)


def _count(table: pa.Table, mask: Any) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _n(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_demo_data_is_lively(demo: Path) -> None:
    con = connect(demo)
    assert _n(con, f"SELECT count(DISTINCT session_id) FROM {tables.SESSIONS}") == 2
    assert _n(con, f"SELECT count(*) FROM {tables.DELTAS}") > 100
    assert _n(con, f"SELECT count(*) FROM {TRAINING_ROWS}") > 0
    assert _n(con, f"SELECT count(*) FROM {TRAINING_MARKETS} WHERE status = 'excluded'") > 0
    assert len(list(demo.glob(SEGMENT_GLOB))) > 2  # several segments per session


def test_row_counts_equal_segment_contents(demo: Path) -> None:
    log = _segments(demo)
    con = connect(demo)
    is_in = pc.equal(log["kind"], Kind.IN.value)
    is_dec = pc.equal(log["kind"], Kind.DECISION.value)
    ok = pc.invert(log["malformed"])
    mt = log["msg_type"]
    expected = {
        "session_log": log.num_rows,
        tables.DELTAS: _count(log, pc.and_(pc.and_(is_in, ok), pc.equal(mt, "orderbook_delta"))),
        tables.SNAPSHOTS: _count(
            log, pc.and_(pc.and_(is_in, ok), pc.equal(mt, "orderbook_snapshot"))
        ),
        tables.LIFECYCLE_EVENTS: _count(
            log, pc.and_(is_in, pc.is_in(mt, pa.array(LIFECYCLE_MSG_TYPES)))
        ),
        tables.PARTICIPATION: _count(
            log, pc.and_(is_dec, pc.equal(mt, Decision.MARKET_JOINED.value))
        ),
        tables.GAPS: _count(
            log, pc.and_(is_dec, pc.is_in(mt, pa.array([str(d) for d in GAP_DECISIONS])))
        ),
        tables.SESSIONS: _count(log, pc.and_(is_dec, pc.equal(mt, Decision.SESSION_START.value))),
    }
    for name, n in expected.items():
        assert _n(con, f"SELECT count(*) FROM {name}") == n, name
    assert (
        expected[tables.DELTAS] > 0 and expected[tables.SNAPSHOTS] > 0 and expected[tables.GAPS] > 0
    )


def _describe(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {name}").fetchall()]


def _scratch_tables() -> duckdb.DuckDBPyConnection:
    scratch = duckdb.connect()
    for stmt in tables.ddl("duckdb"):
        scratch.execute(stmt)
    return scratch


@pytest.mark.parametrize("which", ["demo", "empty"])
def test_columns_equal_table_ddl(which: str, demo: Path, tmp_path: Path) -> None:
    con = connect(demo if which == "demo" else tmp_path)
    scratch = _scratch_tables()
    for name in TABLE_VIEWS:
        assert _describe(con, name) == _describe(scratch, name), name
    assert ("settlement_price", "DECIMAL(18,6)") in _describe(con, tables.LIFECYCLE_EVENTS)
    assert ("price", "BIGINT") in _describe(con, tables.DELTAS)


def test_views_equal_warehouse(demo: Path) -> None:
    con = connect(demo)
    con.execute(f"ATTACH '{demo / 'warehouse.duckdb'}' AS wh (READ_ONLY)")
    for name in TABLE_VIEWS:
        # temp.main.<name> is the view (temp objects shadow the attached tables' names).
        for a, b in ((f"temp.main.{name}", f"wh.{name}"), (f"wh.{name}", f"temp.main.{name}")):
            diff = _n(con, f"SELECT count(*) FROM (FROM {a} EXCEPT ALL FROM {b})")
            assert diff == 0, f"{name}: {diff} rows of {a} are not in {b}"
        assert _n(con, f"SELECT count(*) FROM wh.{name}") == _n(
            con, f"SELECT count(*) FROM temp.main.{name}"
        )
    assert _n(con, f"SELECT count(*) FROM wh.{tables.DELTAS}") > 0
    assert _n(con, f"SELECT count(*) FROM wh.{tables.PARTICIPATION}") > 0
    assert _n(con, f"SELECT count(*) FROM wh.{tables.LIFECYCLE_EVENTS}") > 0


def test_training_views_follow_the_manifest(demo: Path) -> None:
    con = connect(demo)
    manifest = orjson.loads((demo / "training" / "manifest.json").read_bytes())
    rows = sum(b["rows"] for b in manifest["builds"])
    assert _n(con, f"SELECT count(*) FROM {TRAINING_ROWS}") == rows
    assert _n(con, f"SELECT count(*) FROM {TRAINING_MARKETS}") == (
        len(manifest["included"]) + len(manifest["excluded"]) + len(manifest["pending"])
    )
    got = con.execute(
        f"SELECT session_id || '/' || market_ticker, reason FROM {TRAINING_MARKETS} "
        "WHERE status = 'excluded'"
    ).fetchall()
    assert dict(got) == {k: v["reason"] for k, v in manifest["excluded"].items()}


def test_training_markets_keep_only_values_of_the_column_type() -> None:
    """A hand-edited or older manifest never breaks the view: a value of the wrong type (a bool
    where an int goes, a number where text goes) is null; the key supplies a missing market."""
    manifest = {
        "included": {
            "7/KX-A": {"session_id": 7, "rows": 12, "updates": True, "mid_lifecycle": False},
        },
        "excluded": {"8/KX-B": {"reason": 3, "detail": "no snapshot", "final": 1}},
        "pending": {"x/KX-C": "not an entry"},
    }
    rows = training_markets_table(manifest).to_pylist()
    picked = [
        (r["session_id"], r["market_ticker"], r["status"], r["rows"], r["updates"]) for r in rows
    ]
    assert picked == [
        (7, "KX-A", "included", 12, None),
        (8, "KX-B", "excluded", None, None),
        (None, "KX-C", "pending", None, None),
    ]
    assert rows[0]["mid_lifecycle"] is False and rows[1]["final"] is None
    assert (rows[1]["reason"], rows[1]["detail"]) == (None, "no snapshot")


def test_empty_data_dir_gives_empty_views(tmp_path: Path) -> None:
    con = connect(tmp_path)
    for name in VIEWS:
        assert _n(con, f"SELECT count(*) FROM {name}") == 0, name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        connect(tmp_path / "missing")


def test_views_follow_sealed_segments_and_ignore_live(demo: Path, tmp_path: Path) -> None:
    con = connect(tmp_path)  # empty at connect time
    first = sorted(demo.glob(SEGMENT_GLOB))[0]
    rel = first.relative_to(demo)
    (tmp_path / "live" / rel.parent).mkdir(parents=True)
    shutil.copy(first, tmp_path / "live" / rel)  # in-progress data is never read
    tmp = tmp_path / rel.parent / f".{first.name}.tmp"  # a segment being sealed
    tmp.parent.mkdir(parents=True)
    shutil.copy(first, tmp)
    assert _n(con, "SELECT count(*) FROM session_log") == 0
    shutil.copy(first, tmp_path / rel)  # sealed after connect: visible on the next query
    assert _n(con, "SELECT count(*) FROM session_log") == pq.read_metadata(first).num_rows
    assert _n(con, f"SELECT count(*) FROM {tables.SESSIONS}") == 1


# ------------------------------------------------------------------------------------------------
# Exact snapshot levels on hand-made frames
# ------------------------------------------------------------------------------------------------

SNAPSHOT_BODIES: list[Any] = [
    {"msg": {"yes_dollars_fp": [["0.5400", "10.00"], ["0.0850", "1.5"]], "no_dollars_fp": []}},
    {"msg": {"yes_dollars_fp": [["0.54", "1"]], "no_dollars_fp": [["0.3", "2.25"]]}},
    {"msg": {"yes_dollars": [["0.123456", "3"]], "no_dollars": None}},
    {"msg": {"yes": [[54, 10], [1, 3]], "no": [[40, 7]]}},  # legacy cents
    {"msg": {"yes_dollars_fp": [["0.5", "0"], ["0.6", "2"]]}},  # zero size dropped
    {"msg": {"yes_dollars_fp": [["5e-1", " 1.50 "], ["+.25", "2."]]}},  # Decimal() forms
    {"msg": {"yes_dollars_fp": [["0.54", "1"]], "yes": [[1, 1]]}},  # most precise format wins
    {"msg": {}},  # no side at all: empty book
    {"orderbook_fp": {"yes_dollars_fp": [["0.1", "1"]]}},
    {"msg": {"yes_dollars_fp": [["0.54", "1"], ["0.540", "2"]]}},  # same level twice: rejected
    {"msg": {"yes_dollars_fp": [["0.1234567", "1"]]}},  # sub-micro price: rejected
    {"msg": {"yes_dollars_fp": [["0.5", "1.005"]]}},  # sub-centi size: rejected
    {"msg": {"yes_dollars_fp": [["0.5", "-1"]]}},  # negative size: rejected
    {"msg": {"yes_dollars_fp": [[0.5, "1"]]}},  # float price: rejected
    {"msg": {"yes": [["54", 1]]}},  # cents as a string: rejected
    {"msg": {"yes_dollars_fp": [["0.5", "1", "x"]]}},  # not a pair: rejected
    {"msg": {"yes_dollars_fp": "nope"}},  # not a list: rejected
    {"msg": {"yes_dollars_fp": [["1e30", "1"]]}},  # outside int64: rejected
    {"msg": {"yes": [[True, 1]]}},  # boolean price: rejected
    "not an object",
]


def _frame_rows(bodies: list[Any], raws: list[bytes] | None = None) -> pa.Table:
    rows = []
    raws = raws or [
        orjson.dumps({"type": "orderbook_snapshot", "sid": 1, **b})
        if isinstance(b, dict)
        else orjson.dumps(b)
        for b in bodies
    ]
    for i, raw in enumerate(raws):
        row: dict[str, Any] = {name: None for name in LOG_SCHEMA.names}
        row.update(
            session_id=7,
            record_seq=i + 1,
            recv_ns=1_800_000_000_000_000_000 + i,
            kind=Kind.IN.value,
            msg_type="orderbook_snapshot",
            market_ticker="T-1",
            malformed=False,
            raw=raw,
        )
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=LOG_SCHEMA)


def _write_segment(data_dir: Path, table: pa.Table) -> None:
    path = data_dir / "segments" / "date=2027-01-15" / "session_id=7" / "part-00001-1.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _expected_levels(raw: bytes) -> tuple[list[int], ...] | None:
    try:
        yes, no = snapshot_levels(raw)
    except ValueError:
        return None
    return (
        sorted(yes),
        [yes[p] for p in sorted(yes)],
        sorted(no),
        [no[p] for p in sorted(no)],
    )


def test_snapshot_levels_are_exact_and_match_the_recorder(tmp_path: Path) -> None:
    table = _frame_rows(SNAPSHOT_BODIES)
    _write_segment(tmp_path, table)
    con = connect(tmp_path)
    got = {
        r[0]: tuple(r[1:])
        for r in con.execute(
            f"SELECT record_seq, yes_prices, yes_sizes, no_prices, no_sizes FROM {tables.SNAPSHOTS}"
        ).fetchall()
    }
    want = {}
    for seq, raw in enumerate(table["raw"].to_pylist(), start=1):
        levels = _expected_levels(raw)
        if levels is not None:
            want[seq] = levels
    assert got == want
    assert 1 in got and got[1][0] == [85_000, 540_000] and got[1][1] == [150, 1000]
    assert got[4][0] == [10_000, 540_000]  # legacy cents -> micro-dollars
    assert len(want) == 9 and len(SNAPSHOT_BODIES) - len(want) == 11
    # and the same rows as the loader's transform
    loaded = transform(table).tables[tables.SNAPSHOTS]
    assert {
        r["record_seq"]: (r["yes_prices"], r["yes_sizes"], r["no_prices"], r["no_sizes"])
        for r in loaded.to_pylist()
    } == got


_DECIMAL_TEXT = st.builds(
    lambda sign, whole, frac, exp, pad: f"{pad}{sign}{whole}{frac}{exp}{pad}",
    st.sampled_from(["", "-", "+"]),
    st.sampled_from(["", "0", "1", "12", "000", "99999999999999", "9223372036854"]),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,9}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"[eE][+-]?[0-9]{1,3}", fullmatch=True)),
    st.sampled_from(["", " "]),
)


_FIXED_CON = duckdb.connect()


def _py_fixed(text: str, places: int) -> int | None:
    try:
        return fixed_point(text, places, "value")
    except ValueError:
        return None


@settings(max_examples=300, deadline=None)
@given(text=_DECIMAL_TEXT, places=st.sampled_from([6, 2]))
def test_fixed_point_sql_matches_units(text: str, places: int) -> None:
    con = _FIXED_CON
    got = con.execute(f"SELECT {_fixed('$t', places)}", {"t": text}).fetchone()
    assert got is not None
    assert got[0] == _py_fixed(text, places), (text, places)


@pytest.mark.parametrize(
    "text",
    [
        "0.5400",
        "1",
        "-0",
        "0.000001",
        "0.0000001",
        "1e-6",
        "1E+2",
        ".5",
        "5.",
        ".",
        "",
        "abc",
        "9223372036854.775807",
        "9223372036854.775808",
        "-9223372036854.775808",
        "1_0",
        "١",
    ],
)
def test_fixed_point_edge_cases(text: str) -> None:
    got = _FIXED_CON.execute(f"SELECT {_fixed('$t', 6)}", {"t": text}).fetchone()
    assert got is not None
    expected = _py_fixed(text, 6)
    if text == "١":  # Decimal() accepts other scripts' digits; no exchange sends them
        assert got[0] is None and expected is not None
    else:  # digit separators ("1_0") are refused by both since schemas.units refuses them
        assert got[0] == expected, text
    if expected is not None and text != "١":
        assert Decimal(text.strip()) * 1_000_000 == expected

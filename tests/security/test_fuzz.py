"""Fuzzing the two places hostile or damaged bytes enter: the frame parser (anything the network
sends) and the live-log reader (whatever a crash or a bad disk leaves in ``live/``).

* ``parse_frame`` never raises, and whatever it returns, the frame's bytes go through the session
  log, the live Arrow stream, the seal and the Parquet segment *unchanged* (raw first, nothing
  dropped), with its ``malformed`` flag;
* ``read_live`` / ``recover`` on a truncated live file return exactly the batches before the cut,
  on junk appended after complete batches keep every complete batch, and on arbitrary bytes do
  not crash (they return nothing or raise the one documented ``ValueError`` for a foreign schema).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.protocol import parse_frame
from recorder.segments import read_live, recover, rows_to_batch, seal
from recorder.session import SessionLog
from recorder.writer import SegmentWriter, WriterOptions
from schemas.log import LOG_SCHEMA
from tests.support.frames import FIELD_KEYS, FRAME_TYPES
from tests.support.live import write_live

SESSION = 1 << 40
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------- frame strategies

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _protocol_shaped(draw: st.DrawFn) -> bytes:
    """JSON that looks like the protocol with wrong or extreme values in every field."""
    msg = draw(st.dictionaries(st.sampled_from(FIELD_KEYS), _json, max_size=8))
    body: dict[str, Any] = {"type": draw(st.sampled_from(FRAME_TYPES)), "msg": msg}
    for k in ("sid", "seq", "id"):
        if draw(st.booleans()):
            body[k] = draw(_json)
    text = json.dumps(body)
    if draw(st.booleans()):  # cut it anywhere
        text = text[: draw(st.integers(0, len(text)))]
    raw = text.encode()
    if draw(st.booleans()):  # invalid UTF-8 / NUL bytes spliced in
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    return raw


frames = st.binary(max_size=300) | _protocol_shaped()


def _rows(raws: list[bytes]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    log = SessionLog(SESSION, rows)  # a list is a RowSink: it has append
    for i, raw in enumerate(raws):
        log.frame_in(0, 1, raw, parse_frame(raw), 1_700_000_000_000_000_000 + i)
    return rows


# ----------------------------------------------------------------------- parser -> segment


@FAST
@given(st.lists(frames, min_size=1, max_size=12))
def test_any_bytes_parse_and_round_trip_verbatim_through_live_and_seal(raws: list[bytes]) -> None:
    rows = _rows(raws)
    batch = rows_to_batch(rows)  # typed columns always fit the schema
    assert batch.schema.equals(LOG_SCHEMA, check_metadata=False)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        live = data / "live" / f"session_id={SESSION}" / "part-00001.arrows"
        write_live(live, [rows], compression="lz4", close=True)
        assert read_live(live).rows == len(raws)
        sealed = seal(live, data)
        assert sealed is not None and sealed.rows == len(raws)
        back = pq.read_table(sealed.path)
    assert back.column("raw").to_pylist() == raws
    assert back.column("record_seq").to_pylist() == list(range(1, len(raws) + 1))
    assert back.column("malformed").to_pylist() == [r[11] for r in rows]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=40))
def test_any_bytes_round_trip_through_the_segment_writer(raws: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        w = SegmentWriter(Path(tmp), SESSION, WriterOptions(flush_interval=0.01))
        w.start()
        for row in _rows(raws):
            w.append(row)
        paths = w.stop(timeout=30)
        assert w.error is None
        back = pa.concat_tables(pq.read_table(p) for p in paths)
    assert back.column("raw").to_pylist() == raws


# ---------------------------------------------------------------------------- live reader


def _live_file(path: Path, batches: list[list[bytes]], compression: str | None) -> list[int]:
    """A live stream of these frames, one batch per list, ``record_seq`` running on across
    batches, not closed (as a crash leaves it); returns the file size after the schema and after
    each batch."""
    rows = _rows([raw for raws in batches for raw in raws])
    cuts = list(itertools.accumulate((len(raws) for raws in batches), initial=0))
    return write_live(
        path, [rows[a:b] for a, b in itertools.pairwise(cuts)], compression=compression
    )


batches_st = st.lists(st.lists(frames, min_size=1, max_size=5), min_size=1, max_size=5)


@FAST
@given(batches_st, st.data(), st.sampled_from([None, "lz4", "zstd"]))
def test_truncated_live_file_reads_and_recovers_exactly_the_complete_batches(
    batches: list[list[bytes]], data: st.DataObject, compression: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        live = d / "live" / f"session_id={SESSION}" / "part-00001.arrows"
        ends = _live_file(live, batches, compression)
        cut = data.draw(st.integers(0, ends[-1]), label="cut")
        with open(live, "r+b") as f:
            f.truncate(cut)
        whole = sum(1 for e in ends[1:] if e <= cut)  # batches entirely before the cut
        want = [r for b in batches[:whole] for r in b]
        got = read_live(live)
        assert [r for b in got.batches for r in b.column("raw").to_pylist()] == want
        report = recover(d)
        assert report.rows == len(want)
        assert report.skipped == []
        sealed = sorted((d / "segments").rglob("*.parquet"))
        back = [r for p in sealed for r in pq.read_table(p).column("raw").to_pylist()]
        assert back == want
        assert not list((d / "live").rglob("*.arrows"))


@FAST
@given(batches_st, st.binary(min_size=1, max_size=200), st.sampled_from([None, "lz4"]))
def test_junk_after_complete_batches_keeps_every_batch(
    batches: list[list[bytes]], junk: bytes, compression: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        live = Path(tmp) / "live" / f"session_id={SESSION}" / "part-00001.arrows"
        _live_file(live, batches, compression)
        with open(live, "ab") as f:
            f.write(junk)
        got = read_live(live)
        raws = [r for b in got.batches for r in b.column("raw").to_pylist()]
        want = [r for b in batches for r in b]
        # junk can only add a batch if it happens to be a valid IPC message (it never is in
        # practice); what was written before it is always there, in order
        assert raws[: len(want)] == want


@FAST
@given(st.binary(max_size=2000), st.booleans())
def test_arbitrary_bytes_as_a_live_file_never_crash_the_reader(blob: bytes, schema: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        live = d / "live" / f"session_id={SESSION}" / "part-00001.arrows"
        if schema:  # a real schema message, then garbage
            _live_file(live, [], None)
            with open(live, "ab") as f:
                f.write(blob)
        else:
            live.parent.mkdir(parents=True)
            live.write_bytes(blob)
        try:
            read_live(live)
        except ValueError as exc:  # the documented refusal of a foreign schema
            assert "schema" in str(exc)
        report = recover(d)  # never raises: unreadable parts are skipped and left in place
        for p in report.skipped:
            assert str(live) in p


@FAST
@given(batches_st, st.data())
def test_corrupted_live_file_never_crashes_recover(
    batches: list[list[bytes]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        live = d / "live" / f"session_id={SESSION}" / "part-00001.arrows"
        ends = _live_file(live, batches, None)
        blob = bytearray(live.read_bytes())
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(0, ends[-1] - 1), label="at")
            blob[at] = data.draw(st.integers(0, 255), label="byte")
        live.write_bytes(bytes(blob))
        report = recover(d)  # a part is sealed, skipped (left in place) or had nothing readable
        sealed = sorted((d / "segments").rglob("*.parquet"))
        assert report.rows == sum(pq.read_metadata(p).num_rows for p in sealed)
        if report.skipped:
            assert live.exists(), "a part that could not be read is never deleted"


def test_a_live_file_whose_first_row_lost_its_seq_is_left_in_place(tmp_path: Path) -> None:
    """A flipped validity bit can null the first row's record_seq (hypothesis found it): the
    segment cannot be named, so recover skips the part and keeps it, and does not crash."""
    live = tmp_path / "live" / f"session_id={SESSION}" / "part-00001.arrows"
    rows = _rows([b"{}", b"{}"])
    first = list(rows[0])
    first[LOG_SCHEMA.get_field_index("record_seq")] = None
    write_live(live, [[tuple(first), *rows[1:]]], compression=None)
    report = recover(tmp_path)
    assert report.rows == 0 and not list((tmp_path / "segments").rglob("*.parquet"))
    assert len(report.skipped) == 1 and "record_seq" in report.skipped[0]
    assert live.exists()

"""Session-log rows for the on-disk tests: a mix of record kinds (deltas, a decision, a malformed
frame, nulls and odd bytes) and the rows the sealed segments hold, for comparing the two."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.catalog import read_segment, sealed_segments
from schemas.log import LOG_COLUMNS

SESSION = 1_760_000_000_000_042
T0 = 1_772_323_200 * 10**9  # 2026-03-01 00:00:00 UTC


def make_rows(start: int, n: int, session: int = SESSION, t0: int = T0) -> list[tuple[Any, ...]]:
    """A mix of record kinds: deltas, a decision, a malformed frame, nulls and odd bytes."""
    rows: list[tuple[Any, ...]] = []
    for i in range(start, start + n):
        m = i % 5
        if m == 3:
            rows.append(
                (session, i, t0 + i * 1000, "decision", None, None, "gap", 2, None, None)
                + (None, False, b'{"expected":3,"got":5}')
                + (None,) * 11
            )
        elif m == 4:
            rows.append(
                (session, i, t0 + i * 1000, "in", 1, 2, None, None, None, None, None, True)
                + (b"\x00\xff not json \xe2\x82\xac",)
                + (None,) * 11
            )
        else:
            raw = (
                b'{"type":"orderbook_delta","sid":2,"seq":%d,"msg":{"market_ticker":"KXT-%d",'
                b'"price_dollars":"0.2250","delta_fp":"-3.50","side":"yes","ts_ms":%d}}'
                % (i, i % 7, i)
            )
            rows.append(
                (session, i, t0 + i * 1000, "in", 0, 1, "orderbook_delta", 2, i, None)
                + (f"KXT-{i % 7}", False, raw, "yes", 225_000, -350, i)
                + (None,) * 6
                + (9_990_000 if i == 1 else None,)
            )
    return rows


def sealed_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for p in sealed_segments(data_dir):
        t = read_segment(p)
        cols = [t.column(c).to_pylist() for c in LOG_COLUMNS]
        out.extend(zip(*cols, strict=True))
    return out

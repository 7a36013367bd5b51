"""Bytes on disk per ``orderbook_delta`` row (raw JSON kept) and writer throughput.

Run: ``.venv/bin/python -m bench.disk_bytes [--rows 500000] [--markets 200]``

Generates current-format delta frames (docs/protocol.md §4: dollar-string prices, ``_fp`` sizes,
``ts_ms``) for a Zipf-skewed set of markets, writes them through the same Parquet code path as a
sealed segment with several encoder settings, and prints bytes/delta side by side (each variant is
also read back with DuckDB to prove analysts can open it). Then it measures rows/s the
``SegmentWriter`` sustains end to end (append -> live IPC -> sealed Parquet). Target: <= 45 B/delta.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.segments import rows_to_batch
from recorder.writer import SegmentWriter, WriterOptions
from schemas.catalog import DEFAULT_PARQUET, ParquetOptions
from schemas.log import LOG_SCHEMA

SESSION = 1_760_000_000_000_123


def delta_rows(n: int, markets: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """``n`` realistic delta rows in ``LOG_COLUMNS`` order, in arrival (record) order."""
    rng = random.Random(seed)
    tickers = []
    for i in range(markets):
        series = rng.choice(["KXHIGHNY", "KXBTCD", "KXINXU", "KXNBAGAME", "KXFEDDECISION"])
        tickers.append(f"{series}-26MAR{1 + i % 28:02d}-B{40 + i * 0.5:.1f}")
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(markets)]
    mids = [rng.randint(3, 97) for _ in range(markets)]
    weights = [1 / (i + 1) ** 0.8 for i in range(markets)]  # a few busy markets, a long tail
    sids = [2 + i // 50 for i in range(markets)]  # ≤ 50 markets per subscription
    seqs: dict[int, int] = {}
    ts_ms = 1_772_000_000_000
    rows: list[tuple[Any, ...]] = []
    chosen = rng.choices(range(markets), weights=weights, k=n)
    for record_seq, m in enumerate(chosen, start=1):
        ts_ms += rng.choice((0, 0, 0, 1, 1, 2, 5, 13))
        sid = sids[m]
        seq = seqs.get(sid, 1) + 1
        seqs[sid] = seq
        side = rng.choice(("yes", "no"))
        cents = min(99, max(1, mids[m] + rng.randint(-6, 6)))
        sub = rng.random() < 0.05  # some sub-penny markets
        price_micro = cents * 10_000 + (rng.choice((0, 2500, 5000, 7500)) if sub else 0)
        price_s = f"{price_micro / 1e6:.4f}"
        size = rng.choice((1, 2, 5, 10, 25, 33, 50, 100, 250, 1000)) * 100
        if rng.random() < 0.1:
            size += rng.randint(1, 99)  # fractional contracts
        delta = size if rng.random() < 0.55 else -size
        delta_s = f"{delta / 100:.2f}"
        frame = {
            "type": "orderbook_delta",
            "sid": sid,
            "seq": seq,
            "msg": {
                "market_ticker": tickers[m],
                "market_id": ids[m],
                "price_dollars": price_s,
                "delta_fp": delta_s,
                "side": side,
                "ts_ms": ts_ms,
            },
        }
        recv_ns = ts_ms * 1_000_000 + rng.randint(3_000_000, 40_000_000)
        rows.append(
            (SESSION, record_seq, recv_ns, "in", 0, 1, "orderbook_delta", sid, seq, None)
            + (tickers[m], False, orjson.dumps(frame), side, price_micro, delta, ts_ms)
            + (None,) * 7
        )
    return rows


def write_variant(table: pa.Table, path: Path, opts: ParquetOptions | None) -> None:
    """``opts=None``: pyarrow's defaults (snappy, dictionary everywhere) as the baseline."""
    if opts is None:
        pq.write_table(table, path)
        return
    with pq.ParquetWriter(path, LOG_SCHEMA, **opts.writer_kwargs()) as pw:
        pw.write_table(table, row_group_size=opts.row_group_rows)


def bytes_report(rows: list[tuple[Any, ...]], tmp: Path) -> None:
    table = pa.Table.from_batches([rows_to_batch(rows)])
    n = table.num_rows
    raw_json = sum(len(r[12]) for r in rows)
    print(f"{n} delta rows, {len(set(r[10] for r in rows))} markets, raw JSON {raw_json / n:.1f} B")
    d = DEFAULT_PARQUET
    variants: list[tuple[str, ParquetOptions | None]] = [
        ("pyarrow default (snappy)", None),
        ("zstd-3, plain ints", replace(d, compression_level=3, delta_ints=False)),
        ("zstd-3 + delta ints", replace(d, compression_level=3)),
        ("zstd-9 + delta ints", replace(d, compression_level=9)),
        ("zstd-15 + delta ints", replace(d, compression_level=15)),
        ("zstd-6 + delta ints", replace(d, compression_level=6)),
        ("zstd-12 + delta ints", replace(d, compression_level=12)),
        ("zstd-9, 1 MiB pages", replace(d, data_page_bytes=2**20)),
        ("zstd-9, 16 MiB pages", replace(d, data_page_bytes=16 * 2**20)),
        ("zstd-9, 64Ki-row groups", replace(d, row_group_rows=64 * 1024)),
        ("zstd-9, 1Mi-row groups", replace(d, row_group_rows=1024 * 1024)),
        ("zstd-9, raw DELTA_LENGTH", replace(d, raw_encoding="DELTA_LENGTH_BYTE_ARRAY")),
        ("zstd-9, raw DELTA_BYTE_ARRAY", replace(d, raw_encoding="DELTA_BYTE_ARRAY")),
        ("DEFAULT_PARQUET", d),
    ]
    print(f"{'variant':34} {'B/delta':>8} {'raw col':>8} {'write s':>8}  duckdb")
    for name, opts in variants:
        path = tmp / "variant.parquet"
        t0 = time.perf_counter()
        write_variant(table, path, opts)
        secs = time.perf_counter() - t0
        md = pq.ParquetFile(path).metadata
        raw_idx = LOG_SCHEMA.get_field_index("raw")
        raw_bytes = sum(
            md.row_group(i).column(raw_idx).total_compressed_size for i in range(md.num_row_groups)
        )
        sql = f"select count(*), sum(seq) from read_parquet('{path}')"
        got = duckdb.connect().execute(sql).fetchone()
        ok = got == (n, sum(r[8] for r in rows))
        size = path.stat().st_size
        print(f"{name:34} {size / n:8.1f} {raw_bytes / n:8.1f} {secs:8.2f}  {'ok' if ok else got}")
    print("\nper column, DEFAULT_PARQUET (B/row):")
    path = tmp / "variant.parquet"
    md = pq.ParquetFile(path).metadata
    for c in range(md.num_columns):
        groups = range(md.num_row_groups)
        total = sum(md.row_group(i).column(c).total_compressed_size for i in groups)
        if total / n >= 0.05:
            print(f"  {md.schema.column(c).name:16} {total / n:6.2f}")


def writer_throughput(rows: list[tuple[Any, ...]], tmp: Path) -> None:
    """rows/s: conversion alone, and the SegmentWriter end to end including the final seal."""
    t0 = time.perf_counter()
    for i in range(0, len(rows), 10_000):
        rows_to_batch(rows[i : i + 10_000])
    conv = len(rows) / (time.perf_counter() - t0)
    print(f"\nrows_to_batch alone: {conv:,.0f} rows/s")
    for compression in (None, "lz4", "zstd"):
        data = tmp / f"w-{compression}"
        w = SegmentWriter(data, SESSION, WriterOptions(live_compression=compression))
        w.start()
        t0 = time.perf_counter()
        append = w.append
        for r in rows:
            append(r)
        t_append = time.perf_counter() - t0
        sealed = w.stop(timeout=600)
        live = w.live_bytes_peak
        total = time.perf_counter() - t0
        seg = sum(p.stat().st_size for p in sealed)
        print(
            f"SegmentWriter live={compression!s:5}: append {len(rows) / t_append:>11,.0f} rows/s, "
            f"end to end (incl. seal) {len(rows) / total:>9,.0f} rows/s; "
            f"live {w.stats.bytes_live / len(rows):.0f} B/row, sealed {seg / len(rows):.1f} B/row"
            f" (peak live file {live / 2**20:.1f} MiB)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--markets", type=int, default=200)
    ap.add_argument("--skip-writer", action="store_true")
    args = ap.parse_args()
    rows = delta_rows(args.rows, args.markets)
    with tempfile.TemporaryDirectory() as d:
        bytes_report(rows, Path(d))
        if not args.skip_writer:
            writer_throughput(rows, Path(d))


if __name__ == "__main__":
    main()

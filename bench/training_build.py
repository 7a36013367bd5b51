"""Benchmark: training-set build over ~2M deltas in a few hundred markets (target >= 1M deltas/s
of book reconstruction, design "Targets").

Generates one synthetic session as sealed segments (real ``LOG_SCHEMA``, hive layout, zstd) in a
temporary directory, then times ``build_training_sets`` twice in the same process, side by side:
"before" with the previous replay (``bench/book_replay_reference.py``: a dict + sorted list per
delta) and "after" with the vectorised ``book_replay.replay``, and checks that both builds wrote
identical training rows. Prints deltas/s of reconstruction (the replay), deltas/s of the whole
build (reading, validity, sampling, writing included) and rows/s of output.

    .venv/bin/python -m bench.training_build [--deltas 2000000] [--markets 300] [--keep DIR]
        [--only after|before]

``--keep DIR`` generates into DIR and keeps it; a later run with the same DIR reuses the data.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bench.book_replay_reference import replay_reference
from materialize import book_replay, training
from materialize.training import TrainingSummary
from schemas.log import LOG_SCHEMA

NS = 1_000_000_000
T0 = 1_800_000_000
LIFE_S = 3600
MARKETS_PER_SID = 50


def _dollars(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _contracts(centi: int) -> str:
    sign = "-" if centi < 0 else ""
    centi = abs(centi)
    return f"{sign}{centi // 100}.{centi % 100:02d}"


def generate(data_dir: Path, n_deltas: int, n_markets: int, seed: int = 1) -> int:
    """Write the session; returns the number of records."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {name: [] for name in LOG_SCHEMA.names}
    seqs: dict[int, int] = {}
    state = {"t": T0 * NS}

    def add(**kw: Any) -> None:
        for name in LOG_SCHEMA.names:
            cols[name].append(kw.get(name))
        cols["session_id"][-1] = 1
        cols["record_seq"][-1] = len(cols["record_seq"])
        cols["recv_ns"][-1] = state["t"]
        cols["malformed"][-1] = False
        state["t"] += 1

    def decision(name: str, body: dict[str, Any], **kw: Any) -> None:
        add(kind="decision", msg_type=name, raw=orjson.dumps(body), **kw)

    tickers = [f"KXBENCH-27JAN01-T{i:04d}" for i in range(n_markets)]
    mids = [rng.randrange(100, 900) * 1000 for _ in tickers]
    books: list[tuple[dict[int, int], dict[int, int]]] = []
    decision("session_start", {"lifecycle_mode": True})
    decision("connected", {"conn": 0, "epoch": 1}, conn=0, epoch=1)
    for i, t in enumerate(tickers):
        close = T0 + LIFE_S + i
        msg = {"market_ticker": t, "event_type": "created", "open_ts": T0 + 60, "close_ts": close}
        add(
            kind="in", msg_type="market_lifecycle_v2", conn=0, epoch=1, sid=1, market_ticker=t,
            raw=orjson.dumps({"type": "market_lifecycle_v2", "sid": 1, "msg": msg}),
            event_type="created", open_ts=T0 + 60, close_ts=close,
        )  # fmt: skip
        decision(
            "market_joined", {"market_ticker": t, "reason": "created", "mid_lifecycle": False},
            market_ticker=t,
        )  # fmt: skip
    for i, t in enumerate(tickers):
        sid = 2 + i // MARKETS_PER_SID
        seqs[sid] = seqs.get(sid, 0) + 1
        m = mids[i]
        yes = {m - 1000 * k: 100 * rng.randrange(1, 50) for k in range(1, 11)}
        no = {1_000_000 - m - 1000 * k: 100 * rng.randrange(1, 50) for k in range(1, 11)}
        books.append((yes, no))
        body = {
            "type": "orderbook_snapshot", "sid": sid, "seq": seqs[sid],
            "msg": {
                "market_ticker": t, "market_id": f"id-{i}",
                "yes_dollars_fp": [[_dollars(p), _contracts(s)] for p, s in sorted(yes.items())],
                "no_dollars_fp": [[_dollars(p), _contracts(s)] for p, s in sorted(no.items())],
            },
        }  # fmt: skip
        add(
            kind="in", msg_type="orderbook_snapshot", conn=0, epoch=1, sid=sid, seq=seqs[sid],
            market_ticker=t, raw=orjson.dumps(body),
        )  # fmt: skip
    step = (LIFE_S - 10) * NS // n_deltas
    state["t"] = (T0 + 5) * NS
    for _ in range(n_deltas):
        i = rng.randrange(n_markets)
        t = tickers[i]
        sid = 2 + i // MARKETS_PER_SID
        seqs[sid] += 1
        yes_side = rng.random() < 0.5
        book = books[i][0] if yes_side else books[i][1]
        base = mids[i] if yes_side else 1_000_000 - mids[i]
        price = base - 1000 * rng.randrange(1, 15)
        old = book.get(price, 0)
        d = -rng.randrange(1, old // 100 + 1) * 100 if old and rng.random() < 0.45 else 100
        if old + d:
            book[price] = old + d
        else:
            del book[price]
        side = "yes" if yes_side else "no"
        ts_ms = state["t"] // 1_000_000
        raw = (
            f'{{"type":"orderbook_delta","sid":{sid},"seq":{seqs[sid]},"msg":{{"market_ticker":'
            f'"{t}","price_dollars":"{_dollars(price)}","delta_fp":"{_contracts(d)}",'
            f'"side":"{side}","ts_ms":{ts_ms}}}}}'
        ).encode()
        add(
            kind="in", msg_type="orderbook_delta", conn=0, epoch=1, sid=sid, seq=seqs[sid],
            market_ticker=t, side=side, price=price, delta=d, ts_ms=ts_ms, raw=raw,
        )  # fmt: skip
        state["t"] += step
    for i, t in enumerate(tickers):
        state["t"] = (T0 + LIFE_S + i) * NS + NS // 2
        msg = {
            "market_ticker": t, "event_type": "determined", "result": "yes",
            "determination_ts": T0 + LIFE_S + i, "settlement_value": "1.000000",
        }  # fmt: skip
        add(
            kind="in", msg_type="market_lifecycle_v2", conn=0, epoch=1, sid=1, market_ticker=t,
            raw=orjson.dumps({"type": "market_lifecycle_v2", "sid": 1, "msg": msg}),
            event_type="determined", determination_ts=T0 + LIFE_S + i, result="yes",
            settlement_value=1_000_000,
        )  # fmt: skip
        decision("market_left", {"market_ticker": t, "reason": "determined"}, market_ticker=t)
    decision("session_end", {"reason": "duration"})
    table = pa.Table.from_pydict(cols, schema=LOG_SCHEMA)
    out = data_dir / "segments" / "date=2027-01-01" / "session_id=1"
    out.mkdir(parents=True, exist_ok=True)
    per_file = 500_000  # a day is tens of files, not thousands
    for k, lo in enumerate(range(0, table.num_rows, per_file)):
        pq.write_table(table.slice(lo, per_file), out / f"part-{k:05d}.parquet", compression="zstd")
    return table.num_rows


def _build(root: Path, label: str, middle_every_s: float) -> TrainingSummary:
    """One timed build into ``root/training-<label>`` with that label's replay."""
    out = root / f"training-{label}"
    shutil.rmtree(out, ignore_errors=True)
    training.replay = replay_reference if label == "before" else book_replay.replay
    try:
        return training.build_training_sets(root / "data", out, middle_every_s=middle_every_s)
    finally:
        training.replay = book_replay.replay


def _rows(root: Path, label: str) -> pl.DataFrame:
    return pl.read_parquet(root / f"training-{label}" / "build=1" / "part-0.parquet")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deltas", type=int, default=2_000_000)
    ap.add_argument("--markets", type=int, default=300)
    ap.add_argument("--middle-every-s", type=float, default=1.0)
    ap.add_argument("--keep", type=Path, help="generate into this directory and keep it (reused)")
    ap.add_argument("--only", choices=["before", "after"], help="run one side only")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        stamp = root / "data" / "generated.json"
        want = {"deltas": args.deltas, "markets": args.markets}
        if stamp.exists() and orjson.loads(stamp.read_bytes()) == want:
            print(f"reusing {root / 'data'} ({args.deltas:,} deltas, {args.markets} markets)")
        else:
            shutil.rmtree(root / "data", ignore_errors=True)
            t = time.perf_counter()
            records = generate(root / "data", args.deltas, args.markets)
            stamp.write_bytes(orjson.dumps(want))
            print(f"generated {records:,} records ({args.deltas:,} deltas, {args.markets} "
                  f"markets) in {time.perf_counter() - t:.1f} s")  # fmt: skip
        labels = [args.only] if args.only else ["before", "after"]
        runs = {label: _build(root, label, args.middle_every_s) for label in labels}
        s = next(iter(runs.values()))
        print(f"included {s.included}, excluded {s.excluded}, rows {s.rows:,}")
        print(f"{'':31}" + "".join(f"{label:>12}" for label in runs))
        lines = [
            ("reconstruction  M deltas/s", lambda r: f"{r.deltas_per_s / 1e6:.2f}"),
            ("reconstruction  s", lambda r: f"{r.replay_seconds:.2f}"),
            ("whole build     s", lambda r: f"{r.seconds:.2f}"),
            ("whole build     M deltas/s", lambda r: f"{r.deltas_replayed / r.seconds / 1e6:.2f}"),
            ("whole build     k rows/s", lambda r: f"{r.rows / r.seconds / 1e3:.0f}"),
        ]
        for name, fmt in lines:
            print(f"{name:31}" + "".join(f"{fmt(r):>12}" for r in runs.values()))
        print("target: reconstruction >= 1.0 M deltas/s")
        if len(runs) == 2:
            same = _rows(root, "before").equals(_rows(root, "after"))
            print(f"training rows identical before/after: {same}")
            if not same:
                raise SystemExit(1)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

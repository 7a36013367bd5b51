"""The paper log: every paper order, reject, fill, cancel, settlement and mark-to-mid, crash-safe.

Layout, next to the session log under the same data directory::

    DATA/paper/live/run_id=R.arrows                                   in progress
    DATA/paper/segments/session_id=S/run_id=R/part-0.parquet          sealed (zstd, immutable)

Same crash safety as the recorder's log, with the shared torn-tail reader and directory fsync of
``schemas.catalog``: rows go to an Arrow IPC *stream* in ``live/`` (readable up to its last
complete batch after a ``kill -9``), flushed every ``flush_every`` rows or on
:meth:`PaperLog.flush`, fsynced at most every ``fsync_every_s``; :meth:`PaperLog.close` seals it
into Parquet by temp file + fsync + atomic rename + directory fsync, then removes the live file.
:func:`recover` seals what a killed run left behind. ``segments/`` never holds a partial file.

One row per event, ``kind`` saying what it is (``order``, ``reject``, ``fill``, ``cancel``,
``settle``, ``mark``); prices micro-dollars, sizes centi-contracts, money micro-dollars except
``rounding_fee_fine`` (1e-8 dollars) and ``equity_usd`` (exact decimal dollars).
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from schemas.catalog import fsync_dir, iter_live_batches
from schemas.units import PRICE_SCALE

if TYPE_CHECKING:  # the log depends on no engine at run time (materialize imports paper.load)
    from paper.engine import Row

PAPER_LOG_VERSION = "1"
PAPER_LOG_VERSION_KEY = b"kalshi_paper.log_version"

PAPER_LOG_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # 1, 2, ... within a run: a hole is a loss
        pa.field("session_id", pa.int64()),  # the recorder session the feed came from
        pa.field("record_seq", pa.int64()),  # the session-log record that triggered it
        pa.field("t_ns", pa.int64(), nullable=False),  # exchange time (ns)
        pa.field("kind", pa.string(), nullable=False),
        pa.field("market_ticker", pa.string()),
        pa.field("order_id", pa.int64()),
        pa.field("client_id", pa.string()),
        pa.field("action", pa.string()),  # buy | sell, as the actor wrote it
        pa.field("side", pa.string()),  # yes | no, as the actor wrote it
        pa.field("order_price", pa.int64()),  # micro-dollars of that side's contract
        pa.field("order_size", pa.int64()),  # centi-contracts
        pa.field("tif", pa.string()),
        pa.field("yes_buy", pa.bool_()),  # YES view of a fill: bought (true) or sold YES
        pa.field("yes_price", pa.int64()),  # fill / settlement / mark price, YES micro-dollars
        pa.field("size", pa.int64()),  # fill size; cancelled remainder; settled position
        pa.field("liquidity", pa.string()),  # taker | maker
        pa.field("trade_fee", pa.int64()),  # micro-dollars
        pa.field("rounding_fee_fine", pa.int64()),  # 1e-8 dollars
        pa.field("rebate", pa.int64()),  # micro-dollars
        pa.field("cash_change", pa.int64()),  # micro-dollars
        pa.field("cash_after", pa.int64(), nullable=False),
        pa.field("position_after", pa.int64(), nullable=False),  # signed YES centi-contracts
        pa.field("equity_usd", pa.decimal128(24, 9), nullable=False),  # marked to mid
        pa.field("reason", pa.string()),
    ],
    metadata={PAPER_LOG_VERSION_KEY: PAPER_LOG_VERSION.encode()},
)

LIVE = Path("paper/live")
SEGMENTS = Path("paper/segments")
_Q = Decimal("0.000000001")


def _usd(micro: Fraction) -> Decimal:
    return (Decimal(micro.numerator) / Decimal(micro.denominator) / PRICE_SCALE).quantize(_Q)


def to_record(run_id: int, seq: int, session_id: int | None, row: Row) -> dict[str, Any]:
    r = row.report
    o = r.order
    c = r.charge
    return {
        "run_id": run_id,
        "seq": seq,
        "session_id": session_id,
        "record_seq": row.record_seq,
        "t_ns": r.t_ns,
        "kind": r.kind,
        "market_ticker": r.market_ticker or None,
        "order_id": r.order_id,
        "client_id": None if o is None else o.client_id,
        "action": None if o is None else str(o.action),
        "side": None if o is None else str(o.side),
        "order_price": None if o is None else o.price,
        "order_size": None if o is None else o.size,
        "tif": None if o is None else str(o.tif),
        "yes_buy": r.yes_buy,
        "yes_price": r.yes_price,
        "size": r.size,
        "liquidity": None if r.liquidity is None else str(r.liquidity),
        "trade_fee": None if c is None else c.trade_fee,
        "rounding_fee_fine": None if c is None else c.rounding_fee_fine,
        "rebate": None if c is None else c.rebate,
        "cash_change": None if c is None else c.cash_change,
        "cash_after": r.cash_after,
        "position_after": r.position_after,
        "equity_usd": _usd(row.equity),
        "reason": r.reason,
    }


def seal(live_file: Path, data_dir: Path) -> Path | None:
    """Seal a live stream into ``segments/`` (temp + fsync + rename); remove the live file.
    Returns the sealed path (None if the stream held no complete batch)."""
    # stops at the first incomplete batch after a crash
    batches = [b for b, _ in iter_live_batches(live_file, PAPER_LOG_SCHEMA)]
    if not batches or not sum(b.num_rows for b in batches):
        live_file.unlink(missing_ok=True)
        return None
    table = pa.Table.from_batches(batches, PAPER_LOG_SCHEMA)
    session = table.column("session_id")[0].as_py()
    run_id = table.column("run_id")[0].as_py()
    out_dir = data_dir / SEGMENTS / f"session_id={session or 0}" / f"run_id={run_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "part-0.parquet"
    tmp = out_dir / "part-0.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(out_dir)
    live_file.unlink(missing_ok=True)
    fsync_dir(live_file.parent)
    return final


def recover(data_dir: Path) -> list[Path]:
    """Seal every live paper log a killed run left behind."""
    live = data_dir / LIVE
    if not live.is_dir():
        return []
    out = []
    for f in sorted(live.glob("run_id=*.arrows")):
        sealed = seal(f, data_dir)
        if sealed is not None:
            out.append(sealed)
    return out


class PaperLog:
    """Append paper-log rows for one run; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        run_id: int | None = None,
        *,
        flush_every: int = 256,
        fsync_every_s: float = 1.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.run_id = run_id if run_id is not None else time.time_ns() // 1_000_000
        self.flush_every = flush_every
        self.fsync_every_s = fsync_every_s
        self.session_id: int | None = None
        self.seq = 0
        self.rows: list[dict[str, Any]] = []
        live = self.data_dir / LIVE
        live.mkdir(parents=True, exist_ok=True)
        self.live_file = live / f"run_id={self.run_id}.arrows"
        self._sink = open(self.live_file, "wb")  # noqa: SIM115 - closed by close()
        self._writer = ipc.new_stream(self._sink, PAPER_LOG_SCHEMA)
        self._synced = time.monotonic()
        self.sealed: Path | None = None

    def append(self, rows: list[Row]) -> None:
        for row in rows:
            self.seq += 1
            self.rows.append(to_record(self.run_id, self.seq, self.session_id, row))
        if len(self.rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self.rows, PAPER_LOG_SCHEMA))
            self.rows = []
            self._sink.flush()
        if time.monotonic() - self._synced >= self.fsync_every_s:
            os.fsync(self._sink.fileno())
            self._synced = time.monotonic()

    def close(self) -> Path | None:
        """Flush, seal into ``segments/`` and return the sealed file (None if empty)."""
        self.flush()
        self._writer.close()
        self._sink.flush()
        os.fsync(self._sink.fileno())
        self._sink.close()
        self.sealed = seal(self.live_file, self.data_dir)
        return self.sealed


def sealed_files(data_dir: Path) -> list[Path]:
    """The sealed paper logs under ``data_dir``, in (session, run) order."""
    return sorted((Path(data_dir) / SEGMENTS).glob("session_id=*/run_id=*/*.parquet"))


def read(data_dir: Path) -> pa.Table:
    """Every sealed paper-log row under ``data_dir`` (empty table with the schema if none)."""
    files = sealed_files(data_dir)
    if not files:
        return PAPER_LOG_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(f, schema=PAPER_LOG_SCHEMA) for f in files)

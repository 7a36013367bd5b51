"""Ready-made market lives on a ``SessionLog`` for the training tests, their clock, and a build
of the training sets read back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from materialize.training import TrainingPolicy, TrainingSummary, build
from tests.support.segments import NS, SessionLog

T0 = 1_800_000_000


def training_log(session_id: int = 1, t0_s: int = T0) -> SessionLog:
    """A session log on the training tests' clock: from ``t0_s`` seconds, 1 us per record."""
    return SessionLog(session_id, start_ns=t0_s * NS, step_ns=1_000)


def started_log(session_id: int = 1, t0_s: int = T0) -> SessionLog:
    """:func:`training_log` with the session started and connected, ready for markets."""
    log = training_log(session_id, t0_s)
    log.session_start()
    log.connected()
    return log


@dataclass(frozen=True)
class Life:
    """A market's schedule in seconds: created at ``created``, open ``open``, close ``close``."""

    ticker: str
    created: int = T0
    open: int = T0 + 100
    close: int = T0 + 1100

    @property
    def open_ns(self) -> int:
        return self.open * NS

    @property
    def end_ns(self) -> int:
        return self.close * NS


def create(log: SessionLog, life: Life, *, reason: str = "created", mid: bool = False) -> None:
    log.at(life.created)
    log.lifecycle(life.ticker, "created", open_ts=life.open, close_ts=life.close)
    log.join(life.ticker, reason=reason, mid_lifecycle=mid)


def opened(log: SessionLog, life: Life, yes: dict[int, int], no: dict[int, int]) -> int:
    """Created, then a snapshot of ``yes``/``no`` levels a second after open; returns its
    record_seq."""
    create(log, life)
    log.at(life.open + 1)
    return log.book_snapshot(life.ticker, yes, no)


def determine(log: SessionLog, life: Life, result: str = "yes", value: int = 1_000_000) -> int:
    log.at(life.close + 0.5)
    r = log.lifecycle(
        life.ticker,
        "determined",
        result=result,
        determination_ts=life.close,
        settlement_value=value,
    )
    log.leave(life.ticker)
    return r


def steady_book(log: SessionLog, life: Life, deltas: int) -> list[int]:
    """Created, a snapshot (yes 0.40 x 100, no 0.50 x 100) a second after open, then ``deltas``
    yes deltas of +100 at 0.40, one a second from open + 10 s; returns their record_seqs."""
    opened(log, life, {400_000: 100}, {500_000: 100})
    seqs = []
    for k in range(deltas):
        log.at(life.open + 10 + k)
        seqs.append(log.book_delta(life.ticker, "yes", 400_000, 100))
    return seqs


def gapped_delta(log: SessionLog, tickers: list[str], skip: int) -> int:
    """A yes delta on ``tickers[0]`` that skips ``skip`` seqs of sid 2, and the ``gap`` decision
    the recorder writes for it (naming ``tickers``); returns the delta's record_seq."""
    gapped = log.book_delta(tickers[0], "yes", 400_000, 100, skip=skip)
    log.gap(2, log.seqs[2] - skip, log.seqs[2], tickers)
    return gapped


def simple_market(
    log: SessionLog, life: Life, *, step_s: float = 1.0, sid: int = 2, result: str = "yes"
) -> None:
    """Created, a snapshot, then one yes delta every ``step_s`` seconds until close, determined."""
    create(log, life)
    log.at(life.created + 1)
    log.book_snapshot(life.ticker, {400_000: 1000, 410_000: 500}, {550_000: 800}, sid=sid)
    t = life.created + 2.0
    k = 0
    while t < life.close:
        log.at(t)
        log.book_delta(
            life.ticker,
            "yes",
            420_000 + (k % 3) * 1000,
            100 if (k // 3) % 2 == 0 else -100,
            sid=sid,
        )
        k += 1
        t += step_s
    determine(log, life, result=result)


def read_sets(out: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The rows of every build under the training directory ``out``, and its manifest."""
    files = sorted(out.glob("build=*/*.parquet"))
    rows = pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()
    return rows, json.loads((out / "manifest.json").read_text())


def build_sets(
    tmp: Path, log: SessionLog | None = None, out: str = "train", **policy: Any
) -> tuple[TrainingSummary, pl.DataFrame, dict[str, Any]]:
    """Write ``log`` (if given) as two segments under ``tmp/data``, build the training sets into
    ``tmp/out`` with ``TrainingPolicy.of(**policy)``: what the build did, its rows, its manifest."""
    if log is not None:
        log.write(tmp / "data", parts=2)
    summary = build(tmp / "data", tmp / out, TrainingPolicy.of(**policy))
    return summary, *read_sets(tmp / out)

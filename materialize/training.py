"""RL training sets from sealed session-log segments: one row per kept book state of each market
captured from ``created`` to ``determined``.

Read straight from ``DATA/segments/**.parquet`` (never ``live/``, never a database) with polars.

**Which markets qualify** (per ``(session_id, market_ticker)``: a market's life must be captured
by one recorder run, otherwise the book between runs is unknown):

* joined with ``reason == "created"`` and not ``mid_lifecycle`` -> else excluded ``mid_lifecycle``
  (adopted / late / REST-discovered markets miss the start of their life);
* a ``determined`` lifecycle event recorded after the join -> else ``never_determined`` (final
  once the session ended or the market was left; otherwise pending and re-examined next build);
* at least one snapshot -> else ``no_book``;
* the book valid at determination -> else ``unrecovered_gap`` (a gap/loss hit the market and no
  snapshot repaired it before determination);
* at least ``min_updates`` valid book states -> else ``too_few_updates``; the default minimum is
  0: a market created but never traded is still valuable (it "indicates no market interest", the
  specification says), so it is kept with the few rows it has and flagged ``never_traded`` in the
  manifest; it is dropped only when a minimum is asked for (``--min-updates``);
* ``end > open`` -> else ``degenerate_life``.

**Book validity** (rows only from valid states): a market's book is valid from one of its snapshots
until the next invalidation, as the recorder decided it (its sequence rule is not derived again
here): a ``gap`` decision (for the markets it lists, or the whole sid, from the frame that revealed
the gap), a ``loss`` (its sid, or the whole session when it has none), a delta on another sid than
the anchor's (after a reconnect, before the new snapshot), a delta before any snapshot, a delta
without exact typed columns, an unparseable snapshot, or a negative level size. Frames the recorder
called ``stale_seq`` (old or duplicate seq) are dropped, as the protocol says. A crossed book is a
real (if odd) observed state and is kept.

**Rows.** Every valid book update (snapshot or applied delta) between the join and the
``determined`` frame is a candidate; ``materialize.sampling`` picks the kept ones (phases by the
build's phase policy: fractions of life, absolute hours, or their union; pre_open/early/late keep
all, middle one state per seeded interval). Columns:
``session_id, market_ticker, record_seq, t_ns`` (receive time), ``ts_ms`` (exchange time, null for
snapshots), top-N levels per side as int64 fixed point (price micro-dollars, size centi-contracts,
null when the side has fewer levels), ``best_yes_bid``, ``best_yes_ask`` (= 1_000_000 - best no
bid), ``mid_x2`` (= bid + ask in micro-dollars, i.e. twice the mid: exact integer, the mid itself is
``mid_x2 / 2`` micro-dollars and may end in .5), ``spread`` (ask - bid; negative if crossed),
``yes_depth``/``no_depth`` (total resting size of the side), ``time_since_open_s``,
``time_to_close_s`` (to the scheduled close as known at that record: a later
``close_date_updated`` never leaks backwards), ``sched_life_fraction`` (from open and that known
close: a safe feature), then ``life_fraction`` and ``phase`` and the labels.

**Future knowledge.** ``label_result`` and ``label_settlement_value`` are the labels. They follow
the market's *last* determination in the data read (a dispute can determine a market again,
amended), else the ``settled`` event's value; rows stop at the first ``determined`` (the market
is left there).
``life_fraction`` and ``phase`` use the realised determination time, which is future knowledge at
row time: they are sampling metadata, *label-like*, and must not be fed to a model as features; use
``time_since_open_s``, ``time_to_close_s`` and ``sched_life_fraction`` instead. Every other column
is known at ``t_ns``.

**Output.** ``out_dir/build=<n>/part-0.parquet`` (one file per build, zstd; read all with
``duckdb "SELECT * FROM 'out_dir/*/*.parquet'"`` or ``pl.scan_parquet('out_dir/*/*.parquet')``) and
``out_dir/manifest.json``: policy, seed, builds, every included market with its row counts and
every excluded market with its reason. **Incremental**: markets already built (or finally
excluded) are never rebuilt; only markets determined since are, and the files of sessions that
ended with every market final (``finished_sessions`` in the manifest) are not read again, so a
nightly build costs what is new, not all history. A later determination of a market already
built (a dispute) rewrites the label columns of its rows in place (``label_amendments``).
A build with a different policy (seed, interval, top-N, minimum, phases) starts over, so one
dataset never mixes policies. The data file is renamed into place before the manifest, and files
not named in the manifest are removed at the start of a build, so a crash between the two is
harmless.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from materialize.book_replay import (
    Act,
    Levels,
    ReplayInput,
    replay,
)
from materialize.sampling import (
    PhasePolicy,
    SamplingPolicy,
    grid_offset_ns,
    interval_expr,
    keep_expr,
    phase_cuts,
    phase_expr,
)
from schemas.catalog import (
    TRAINING_MANIFEST,
    read_training_manifest,
    readable_segments,
    session_of_path,
)
from schemas.decisions import (
    Gap,
    Loss,
    MarketJoined,
    StaleSeq,
    decision_or_none,
    ticker_of,
)
from schemas.log import SCHEMA_VERSION, Decision, Kind
from schemas.units import PRICE_SCALE
from schemas.wire import DELTA_MSG, LIFECYCLE_MSG_TYPES, SNAPSHOT_MSG, snapshot_levels

TRAINING_SCHEMA_VERSION = "1"

MIN_UPDATES = 0
"""Default minimum of valid book states for a market to be included: none. A market created but
never traded still tells "no market interest" (the specification keeps it); it is flagged
``never_traded`` and dropped only when a minimum is asked for explicitly."""
F_NEVER_TRADED = "never_traded"
"""Manifest flag: the market's book never changed after its first snapshot (no delta)."""

TOP_N = 5
"""Default number of book levels per side in a training row."""

NS = 1_000_000_000


class Exclusion(StrEnum):
    """Why a market is left out of the training set (the manifest's ``reason``)."""

    MID_LIFECYCLE = "mid_lifecycle"
    NEVER_DETERMINED = "never_determined"
    NO_BOOK = "no_book"
    UNRECOVERED_GAP = "unrecovered_gap"
    TOO_FEW = "too_few_updates"
    DEGENERATE = "degenerate_life"


@dataclass(frozen=True, slots=True)
class TrainingPolicy:
    """Everything that decides the rows; recorded in the manifest. Which book states are kept is
    the :class:`SamplingPolicy` (seed, middle interval, phases: validated there); what a row holds
    and which markets qualify is decided here (validated here)."""

    sampling: SamplingPolicy = field(default_factory=SamplingPolicy)
    top_n: int = TOP_N
    min_updates: int = MIN_UPDATES

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")
        if self.min_updates < 0:
            raise ValueError(f"min_updates must be >= 0, got {self.min_updates}")

    @classmethod
    def of(
        cls,
        *,
        seed: int = 0,
        middle_every_s: float = 1.0,
        phases: PhasePolicy | None = None,
        top_n: int = TOP_N,
        min_updates: int = MIN_UPDATES,
    ) -> TrainingPolicy:
        """A policy from the flat knobs of the CLI and :func:`build_training_sets`."""
        sampling = SamplingPolicy(seed, middle_every_s, phases or PhasePolicy())
        return cls(sampling, top_n, min_updates)

    @property
    def seed(self) -> int:
        return self.sampling.seed

    def describe(self) -> dict[str, Any]:
        return {
            **self.sampling.describe(),
            "top_n": self.top_n,
            "min_updates": self.min_updates,
            "life": "open=created.open_ts (else created recv); end=determination_ts "
            "(else last known close_ts, else determined recv)",
            "labels": "last determination (else the settled event's value)",
        }


@dataclass(slots=True)
class TrainingSummary:
    """What one build did (the CLI prints it)."""

    included: int = 0
    excluded: int = 0
    pending: int = 0
    rows: int = 0
    deltas_replayed: int = 0
    seconds: float = 0.0
    replay_seconds: float = 0.0
    build_id: int | None = None
    out_dir: str = ""
    total_included: int = 0
    skipped_segments: list[str] = field(default_factory=list)
    labels_amended: int = 0

    @property
    def deltas_per_s(self) -> float:
        return self.deltas_replayed / self.replay_seconds if self.replay_seconds else 0.0


@dataclass(slots=True)
class _Market:
    session_id: int
    ticker: str
    join_r: int
    reason: str
    mid_lifecycle: bool
    open_ns: int | None = None
    open_source: str = ""
    det_r: int | None = None
    end_ns: int | None = None
    end_source: str = ""
    result: str | None = None
    settlement_value: int | None = None
    label_from: list[int] | None = None
    exclusion: str | None = None
    final: bool = True
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.session_id}/{self.ticker}"


# ------------------------------------------------------------------------------------ reading
def _markets(ctl: pl.DataFrame) -> list[_Market]:
    """Joined markets with their life and labels, from decisions and lifecycle frames."""
    markets: dict[tuple[int, str], _Market] = {}
    ended: set[int] = set()
    left: set[tuple[int, str]] = set()
    for row in ctl.filter(pl.col("kind") == Kind.DECISION).iter_rows(named=True):
        name = row["msg_type"]
        sid_ = row["session_id"]
        if name == Decision.SESSION_END:
            ended.add(sid_)
        elif name == Decision.MARKET_JOINED:
            joined = decision_or_none(name, row["raw"])
            ticker = ticker_of(joined, row["market_ticker"])
            if ticker is not None and (sid_, ticker) not in markets:
                markets[(sid_, ticker)] = _Market(
                    sid_,
                    ticker,
                    row["record_seq"],
                    str(joined.reason) if isinstance(joined, MarketJoined) else "",
                    isinstance(joined, MarketJoined) and bool(joined.mid_lifecycle),
                )
        elif name == Decision.MARKET_LEFT:
            ticker = ticker_of(decision_or_none(name, row["raw"]), row["market_ticker"])
            if ticker is not None:
                left.add((sid_, ticker))
    life = ctl.filter(
        pl.col("msg_type").is_in(LIFECYCLE_MSG_TYPES) & pl.col("market_ticker").is_not_null()
    )
    by_market: dict[tuple[int, str], list[dict[str, Any]]] = {}
    # Determinations and settlements of each ticker in every session, in (session, record)
    # order: a dispute can determine a market again, even in a later session.
    finals: dict[str, list[dict[str, Any]]] = {}
    for row in life.iter_rows(named=True):
        by_market.setdefault((row["session_id"], row["market_ticker"]), []).append(row)
        if row["event_type"] in ("determined", "settled"):
            finals.setdefault(row["market_ticker"], []).append(row)
    for key, m in markets.items():
        events = by_market.get(key, [])
        created = next((e for e in events if e["event_type"] == "created"), None)
        if created is not None:
            if created["open_ts"] is not None:
                m.open_ns, m.open_source = created["open_ts"] * NS, "open_ts"
            else:
                m.open_ns, m.open_source = created["recv_ns"], "created_recv"
        det = next(
            (e for e in events if e["event_type"] == "determined" and e["record_seq"] > m.join_r),
            None,
        )
        if m.reason != "created" or m.mid_lifecycle:
            m.exclusion = Exclusion.MID_LIFECYCLE
            m.detail = f"joined reason={m.reason!r} mid_lifecycle={m.mid_lifecycle}"
            continue
        if det is None:
            m.exclusion = Exclusion.NEVER_DETERMINED
            m.final = m.session_id in ended or key in left
            continue
        m.det_r = det["record_seq"]
        m.result, m.settlement_value, m.label_from = _labels(finals.get(m.ticker, []), det)
        closes = [
            e["close_ts"]
            for e in events
            if e["close_ts"] is not None and e["record_seq"] < det["record_seq"]
        ]
        if det["determination_ts"] is not None:
            m.end_ns, m.end_source = det["determination_ts"] * NS, "determination_ts"
        elif closes:
            m.end_ns, m.end_source = closes[-1] * NS, "close_ts"
        else:
            m.end_ns, m.end_source = det["recv_ns"], "determined_recv"
        if m.open_ns is None:
            m.open_ns, m.open_source = None, "missing"
            m.exclusion = Exclusion.DEGENERATE
            m.detail = "no created lifecycle event recorded"
        elif m.end_ns <= m.open_ns:
            m.exclusion = Exclusion.DEGENERATE
            m.detail = f"end {m.end_ns} <= open {m.open_ns}"
    return list(markets.values())


def _labels(
    finals: list[dict[str, Any]], first: dict[str, Any]
) -> tuple[str | None, int | None, list[int]]:
    """(result, settlement value, [session_id, record_seq] of that determination) of the last
    determination at or after ``first`` (same or later session); the value falls back to the last
    one any settled event carried."""
    after = [
        e
        for e in finals
        if (e["session_id"], e["record_seq"]) >= (first["session_id"], first["record_seq"])
    ]
    dets = [e for e in after if e["event_type"] == "determined"]
    last = dets[-1] if dets else first
    value = next(
        (e["settlement_value"] for e in reversed(dets) if e["settlement_value"] is not None), None
    )
    if value is None:
        value = next(
            (e["settlement_value"] for e in reversed(after) if e["settlement_value"] is not None),
            None,
        )
    return last["result"], value, [last["session_id"], last["record_seq"]]


def _amend_labels(
    out_dir: Path, manifest: dict[str, Any], ctl: pl.DataFrame, build_id: int
) -> list[dict[str, Any]]:
    """Labels of markets built earlier follow a later determination (a dispute, amended).

    The rows already written keep their features; only the two label columns of the affected
    markets are rewritten, in the one build file that holds them (atomic replace), then the
    manifest records the amendment. Re-running after a crash between the two redoes it."""
    dets = ctl.filter(
        pl.col("msg_type").is_in(LIFECYCLE_MSG_TYPES)
        & (pl.col("event_type") == "determined")
        & pl.col("market_ticker").is_not_null()
    )
    if not dets.height or not manifest["included"]:
        return []
    last = {
        r["market_ticker"]: r for r in dets.sort("session_id", "record_seq").iter_rows(named=True)
    }
    amendments: list[dict[str, Any]] = []
    by_build: dict[int, dict[tuple[int, str], dict[str, Any]]] = {}
    for key, entry in manifest["included"].items():
        label = entry.get("label")
        d = last.get(entry["market_ticker"])
        if label is None or d is None or [d["session_id"], d["record_seq"]] <= label["from"]:
            continue
        value = d["settlement_value"] if d["settlement_value"] is not None else label["value"]
        new = {"result": d["result"], "value": value, "from": [d["session_id"], d["record_seq"]]}
        if (new["result"], new["value"]) != (label["result"], label["value"]):
            amendments.append({"market": key, "from": label, "to": new, "build_id": build_id})
            by_build.setdefault(entry.get("build_id", 0), {})[
                (entry["session_id"], entry["market_ticker"])
            ] = new
        entry["label"] = new
    for bid, changes in by_build.items():
        bdir = next((b["dir"] for b in manifest["builds"] if b["build_id"] == bid), None)
        if not bdir:
            continue
        path = out_dir / bdir / "part-0.parquet"
        rows = pl.read_parquet(path)
        fix = pl.DataFrame(
            {
                "session_id": [k[0] for k in changes],
                "market_ticker": [k[1] for k in changes],
                "_result": [v["result"] for v in changes.values()],
                "_value": [v["value"] for v in changes.values()],
            },
            schema={
                "session_id": pl.Int64,
                "market_ticker": pl.String,
                "_result": pl.String,
                "_value": pl.Int64,
            },
        )
        hit = pl.col("_hit")
        rows = (
            rows.join(
                fix.with_columns(pl.lit(True).alias("_hit")),
                on=["session_id", "market_ticker"],
                how="left",
            )
            .with_columns(
                pl.when(hit)
                .then(pl.col("_result"))
                .otherwise(pl.col("label_result"))
                .alias("label_result"),
                pl.when(hit)
                .then(pl.col("_value"))
                .otherwise(pl.col("label_settlement_value"))
                .alias("label_settlement_value"),
            )
            .drop("_result", "_value", "_hit")
        )
        tmp = path.with_name(path.name + ".tmp")
        rows.write_parquet(tmp, compression="zstd")
        os.replace(tmp, path)
    return amendments


# ------------------------------------------------------------------------------ book events
_KEY = ["conn", "epoch", "sid"]


def _opt_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


_SID_KEY = {"conn": pl.Int16, "epoch": pl.Int32, "sid": pl.Int64}


def _invalidations(
    scan: pl.LazyFrame, ctl: pl.DataFrame, session_id: int, hi: int
) -> tuple[pl.DataFrame, pl.DataFrame, list[int], pl.DataFrame]:
    """(stale frames, sid-level invalidations, session-level invalidation records,
    market-level invalidations) for one session, up to record ``hi``.

    From the recorder's own decisions, never re-derived from seq numbers (the recorder's sequence
    rule is the only one): a ``gap`` invalidates the markets it lists, or its whole sid, from the
    frame whose seq revealed it (``got``: that frame is already invalid); a ``stale_seq`` frame
    (``got``) is skipped; a ``loss`` invalidates its sid, or the whole session."""
    dec = ctl.filter(
        (pl.col("session_id") == session_id)
        & (pl.col("kind") == Kind.DECISION)
        & pl.col("msg_type").is_in([Decision.GAP, Decision.STALE_SEQ, Decision.LOSS])
        & (pl.col("record_seq") <= hi)
    )
    sess_inv: list[int] = []
    sid_rows: list[tuple[int | None, int | None, int, int]] = []
    mkt_rows: list[tuple[str, int]] = []
    located: list[tuple[int | None, int | None, int, int, int, str, list[str]]] = []
    for row in dec.iter_rows(named=True):
        name, r = row["msg_type"], row["record_seq"]
        d = decision_or_none(name, row["raw"])
        said_sid, got, tickers = None, None, []
        match d:
            case Gap():
                said_sid, got = d.sid, d.got
                said = d.market_tickers
                tickers = [t for t in said if isinstance(t, str)] if isinstance(said, list) else []
            case StaleSeq():
                said_sid, got = d.sid, d.got
            case Loss():
                said_sid = d.sid
        sid = row["sid"] if row["sid"] is not None else _opt_int(said_sid)
        got = _opt_int(got)
        # conn/epoch are columns; logs written before that had them in the payload only
        extra = d.extra if d is not None else {}
        conn = row["conn"] if row["conn"] is not None else _opt_int(extra.get("conn"))
        epoch = row["epoch"] if row["epoch"] is not None else _opt_int(extra.get("epoch"))
        if name != Decision.LOSS and sid is not None and got is not None:
            located.append((conn, epoch, sid, got, r, name, tickers))
        elif tickers:
            mkt_rows += [(t, r) for t in tickers]
        elif sid is not None:
            sid_rows.append((conn, epoch, sid, r))
        elif name != Decision.STALE_SEQ:
            sess_inv.append(r)
    stale: list[int] = []
    if located:
        # The frame each decision is about: the latest of its sid with that seq before it.
        want = pl.DataFrame(
            [x[:5] for x in located],
            schema={**_SID_KEY, "seq": pl.Int64, "dec_r": pl.Int64},
            orient="row",
        ).with_row_index("i")
        frames = (
            scan.filter(
                (pl.col("session_id") == session_id)
                & (pl.col("kind") == Kind.IN)
                & (pl.col("record_seq") <= hi)
                & pl.col("sid").is_in(want["sid"].unique().implode())
                & pl.col("seq").is_in(want["seq"].unique().implode())
            )
            .select(pl.col("record_seq").alias("frame_r"), *_SID_KEY, "seq")
            .collect()
            .sort("frame_r")
        )
        found = want.sort("dec_r").join_asof(
            frames,
            left_on="dec_r",
            right_on="frame_r",
            by=[*_SID_KEY, "seq"],
            strategy="backward",
            check_sortedness=False,
        )
        frame_of = dict(zip(found["i"].to_list(), found["frame_r"].to_list(), strict=True))
        for i, (conn, epoch, sid, _got, r, name, tickers) in enumerate(located):
            at = frame_of.get(i)
            if name == Decision.STALE_SEQ:
                stale += [at] if at is not None else []
            elif tickers:
                mkt_rows += [(t, r if at is None else at) for t in tickers]
            else:
                sid_rows.append((conn, epoch, sid, r if at is None else at))
    inv = pl.DataFrame(sid_rows, schema={**_SID_KEY, "inv_r": pl.Int64}, orient="row").sort("inv_r")
    mkt = pl.DataFrame(
        mkt_rows, schema={"market_ticker": pl.String, "minv_r": pl.Int64}, orient="row"
    ).sort("minv_r")
    return (
        pl.DataFrame({"record_seq": stale}, schema={"record_seq": pl.Int64}),
        inv,
        sorted(sess_inv),
        mkt,
    )


def _session_events(
    scan: pl.LazyFrame, ctl: pl.DataFrame, session_id: int, markets: list[_Market]
) -> tuple[pl.DataFrame, dict[int, tuple[Levels, Levels]]]:
    """Book events (plus one probe per market at determination) of one session's markets, with
    the replay action of each, grouped by market and in record order."""
    lo = min(m.join_r for m in markets)
    hi = max(m.det_r or 0 for m in markets)
    bounds = pl.DataFrame(
        {
            "market_ticker": [m.ticker for m in markets],
            "join_r": [m.join_r for m in markets],
            "det_r": [m.det_r for m in markets],
        },
        schema={"market_ticker": pl.String, "join_r": pl.Int64, "det_r": pl.Int64},
    )
    tickers = [m.ticker for m in markets]
    base = scan.filter(
        (pl.col("session_id") == session_id)
        & (pl.col("kind") == Kind.IN)
        & pl.col("msg_type").is_in([SNAPSHOT_MSG, DELTA_MSG])
        & pl.col("record_seq").is_between(lo, hi)
        & pl.col("market_ticker").is_in(tickers)
    )
    book = (
        base.select(
            "record_seq",
            "recv_ns",
            *_KEY,
            "market_ticker",
            "msg_type",
            "side",
            "price",
            "delta",
            "ts_ms",
        )
        .collect()
        .join(bounds, on="market_ticker")
        .filter(pl.col("record_seq").is_between(pl.col("join_r"), pl.col("det_r")))
    )
    snaps_raw = (
        base.filter(pl.col("msg_type") == SNAPSHOT_MSG).select("record_seq", "raw").collect()
    )
    stale, inv, sess_inv, mkt_inv = _invalidations(scan, ctl, session_id, hi)
    parsed: dict[int, tuple[Levels, Levels] | None] = {}
    for r, raw in snaps_raw.iter_rows():
        try:
            parsed[r] = snapshot_levels(raw)
        except ValueError:
            parsed[r] = None
    bad_snaps = [r for r, v in parsed.items() if v is None]
    probes = bounds.select(
        "market_ticker",
        pl.col("det_r").alias("record_seq"),
        pl.col("det_r").alias("recv_ns"),
        pl.lit("probe").alias("msg_type"),
    )
    ev = pl.concat([book.drop("join_r", "det_r"), probes], how="diagonal_relaxed")
    ev = ev.with_columns(
        pl.col("record_seq").is_in(stale["record_seq"].implode()).alias("stale"),
        (
            (pl.col("msg_type") == SNAPSHOT_MSG)
            & ~pl.col("record_seq").is_in(pl.Series(bad_snaps, dtype=pl.Int64).implode())
        ).alias("is_snap"),
    )
    anchor = pl.col("is_snap") & ~pl.col("stale")
    ev = ev.sort("market_ticker", "record_seq").with_columns(
        pl.when(anchor).then(pl.col(c)).forward_fill().over("market_ticker").alias(f"a_{c}")
        for c in ["record_seq", *_KEY]
    )
    ev = ev.sort("record_seq")
    ev = ev.join_asof(
        inv.rename({"conn": "a_conn", "epoch": "a_epoch", "sid": "a_sid"}),
        left_on="record_seq",
        right_on="inv_r",
        by=["a_conn", "a_epoch", "a_sid"],
        strategy="backward",
        check_sortedness=False,
    ).join_asof(
        mkt_inv,
        left_on="record_seq",
        right_on="minv_r",
        by="market_ticker",
        strategy="backward",
        check_sortedness=False,
    )
    ev = ev.join_asof(
        pl.DataFrame({"sinv_r": sess_inv}, schema={"sinv_r": pl.Int64}),
        left_on="record_seq",
        right_on="sinv_r",
        strategy="backward",
        check_sortedness=False,
    )
    a_r = pl.col("a_record_seq")
    invalidated = (
        a_r.is_null()
        | (pl.col("inv_r") > a_r).fill_null(False)
        | (pl.col("minv_r") > a_r).fill_null(False)
        | (pl.col("sinv_r") > a_r).fill_null(False)
    )
    mt = pl.col("msg_type")
    act = (
        pl.when(mt == "probe")
        .then(pl.when(invalidated).then(Act.INVALID).otherwise(Act.PROBE))
        .when(pl.col("stale"))
        .then(Act.SKIP)
        .when(pl.col("is_snap"))
        .then(Act.SNAPSHOT)
        .when(mt == SNAPSHOT_MSG)  # unparseable snapshot
        .then(Act.INVALID)
        .when(
            invalidated
            | pl.col("side").is_null()
            | pl.col("price").is_null()
            | pl.col("delta").is_null()
            | (pl.col("conn") != pl.col("a_conn")).fill_null(True)
            | (pl.col("epoch") != pl.col("a_epoch")).fill_null(True)
            | (pl.col("sid") != pl.col("a_sid")).fill_null(True)
        )
        .then(Act.INVALID)
        .otherwise(Act.DELTA)
        .cast(pl.Int8)
        .alias("act")
    )
    ev = ev.sort("market_ticker", "record_seq").with_columns(act)
    snaps: dict[int, tuple[Levels, Levels]] = {}
    acts = ev["act"]
    rseq = ev["record_seq"]
    for i in (acts == Act.SNAPSHOT).arg_true().to_list():
        levels = parsed[rseq[i]]
        assert levels is not None
        snaps[i] = levels
    return ev, snaps


# ----------------------------------------------------------------------------------- rows
_ROW_HEAD = (
    ("session_id", pa.int64()),
    ("market_ticker", pa.string()),
    ("record_seq", pa.int64()),
    ("t_ns", pa.int64()),
    ("ts_ms", pa.int64()),
)
_ROW_TAIL = (
    ("best_yes_bid", pa.int64()),
    ("best_yes_ask", pa.int64()),
    ("mid_x2", pa.int64()),
    ("spread", pa.int64()),
    ("yes_depth", pa.int64()),
    ("no_depth", pa.int64()),
    ("time_since_open_s", pa.float64()),
    ("time_to_close_s", pa.float64()),
    ("sched_life_fraction", pa.float64()),
    ("life_fraction", pa.float64()),
    ("phase", pa.string()),
    ("label_result", pa.string()),
    ("label_settlement_value", pa.int64()),
)


def _level_columns(top_n: int) -> list[str]:
    return [
        f"{side}_bid_{kind}_{j}"
        for side in ("yes", "no")
        for kind in ("price", "size")
        for j in range(1, top_n + 1)
    ]


def row_schema(top_n: int = TOP_N) -> pa.Schema:
    """The columns of a training row, in file order (the module doc says what each holds)."""
    levels = [(name, pa.int64()) for name in _level_columns(top_n)]
    return pa.schema([*_ROW_HEAD, *levels, *_ROW_TAIL])


def _rows(
    ev: pl.DataFrame,
    book: pl.DataFrame,
    markets: list[_Market],
    closes: pl.DataFrame,
    policy: TrainingPolicy,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows, per-market stats: valid updates and validity at determination)."""
    sampling = policy.sampling
    full = pl.concat(
        [ev.select("market_ticker", "record_seq", "recv_ns", "ts_ms", "act", "msg_type"), book],
        how="horizontal",
    )
    stats = full.group_by("market_ticker").agg(
        (pl.col("ok") & pl.col("act").is_in([Act.SNAPSHOT, Act.DELTA])).sum().alias("updates"),
        (pl.col("ok") & (pl.col("act") == Act.DELTA)).sum().alias("deltas"),
        (pl.col("act") == Act.SNAPSHOT).sum().alias("snapshots"),
        (pl.col("ok") & (pl.col("act") == Act.PROBE)).any().alias("valid_at_end"),
        ((pl.col("msg_type") != "probe") & ~pl.col("ok")).sum().alias("dropped_events"),
    )
    cuts = [
        phase_cuts(m.open_ns, m.end_ns, sampling.phases)
        if m.open_ns is not None and m.end_ns is not None
        else (None, None)
        for m in markets
    ]
    info = pl.DataFrame(
        {
            "market_ticker": [m.ticker for m in markets],
            "session_id": [m.session_id for m in markets],
            "open_ns": [m.open_ns for m in markets],
            "end_ns": [m.end_ns for m in markets],
            "early_until": [c[0] for c in cuts],
            "late_from": [c[1] for c in cuts],
            "offset_ns": [grid_offset_ns(sampling, m.session_id, m.ticker) for m in markets],
            "label_result": [m.result for m in markets],
            "label_settlement_value": [m.settlement_value for m in markets],
        },
        schema={
            "market_ticker": pl.String,
            "session_id": pl.Int64,
            "open_ns": pl.Int64,
            "end_ns": pl.Int64,
            "early_until": pl.Int64,
            "late_from": pl.Int64,
            "offset_ns": pl.Int64,
            "label_result": pl.String,
            "label_settlement_value": pl.Int64,
        },
    )
    rows = (
        full.filter(pl.col("ok") & pl.col("act").is_in([Act.SNAPSHOT, Act.DELTA]))
        .drop("ok", "act", "msg_type")
        .join(info, on="market_ticker")
        .with_columns(
            phase_expr(
                pl.col("recv_ns"), pl.col("open_ns"), pl.col("early_until"), pl.col("late_from")
            ).alias("phase"),
            interval_expr(
                pl.col("recv_ns"), pl.col("open_ns"), pl.col("offset_ns"), sampling.every_ns
            ).alias("_interval"),
        )
    )
    rows = rows.filter(
        keep_expr(market="market_ticker", phase="phase", interval="_interval", order="record_seq")
    )
    rows = rows.sort("record_seq").join_asof(
        closes, on="record_seq", by="market_ticker", strategy="backward", check_sortedness=False
    )
    bid = pl.col("yes_bid_price_1")
    ask = PRICE_SCALE - pl.col("no_bid_price_1")
    t = pl.col("recv_ns")
    life = pl.col("end_ns") - pl.col("open_ns")
    sched = pl.col("close_ns") - pl.col("open_ns")
    levels = _level_columns(policy.top_n)
    out = rows.select(
        pl.col("session_id"),
        pl.col("market_ticker"),
        pl.col("record_seq"),
        t.alias("t_ns"),
        pl.col("ts_ms"),
        *levels,
        bid.alias("best_yes_bid"),
        ask.alias("best_yes_ask"),
        (bid + ask).alias("mid_x2"),
        (ask - bid).alias("spread"),
        pl.col("yes_depth"),
        pl.col("no_depth"),
        _seconds(t - pl.col("open_ns")).alias("time_since_open_s"),
        _seconds(pl.col("close_ns") - t).alias("time_to_close_s"),
        pl.when(sched > 0)
        .then((t - pl.col("open_ns")) / sched)
        .otherwise(None)
        .alias("sched_life_fraction"),
        ((t - pl.col("open_ns")) / life).alias("life_fraction"),
        pl.col("phase"),
        pl.col("label_result"),
        pl.col("label_settlement_value"),
    ).sort("session_id", "market_ticker", "record_seq")
    return out, stats


def _seconds(ns: pl.Expr) -> pl.Expr:
    """Nanoseconds -> float seconds, whole seconds exact: polars divides by a literal as a
    multiplication by its reciprocal (500 s came out as 500.00000000000006)."""
    mag = ns.abs()
    return ns.sign() * ((mag // NS).cast(pl.Float64) + (mag % NS).cast(pl.Float64) / NS)


def _closes(ctl: pl.DataFrame, session_id: int) -> pl.DataFrame:
    """Scheduled close as announced, by record: ``created`` and every ``close_date_updated``."""
    return (
        ctl.filter(
            (pl.col("session_id") == session_id)
            & pl.col("msg_type").is_in(LIFECYCLE_MSG_TYPES)
            & pl.col("close_ts").is_not_null()
            & pl.col("market_ticker").is_not_null()
        )
        .select("market_ticker", "record_seq", (pl.col("close_ts") * NS).alias("close_ns"))
        .sort("record_seq")
    )


# ------------------------------------------------------------------------------- manifest
def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fresh_manifest(policy: TrainingPolicy) -> dict[str, Any]:
    return {
        "schema_version": TRAINING_SCHEMA_VERSION,
        "log_schema_version": SCHEMA_VERSION,
        "policy": policy.describe(),
        "seed": policy.seed,
        "builds": [],
        "included": {},
        "excluded": {},
        "pending": {},
    }


def _clean_orphans(out_dir: Path, manifest: dict[str, Any]) -> None:
    keep = {b["dir"] for b in manifest["builds"] if b.get("dir")}
    for child in out_dir.glob("build=*"):
        if child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


# ---------------------------------------------------------------------------------- build
def build_training_sets(
    data_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    middle_every_s: float = 1.0,
    top_n: int = TOP_N,
    min_updates: int = MIN_UPDATES,
    phases: PhasePolicy | None = None,
) -> TrainingSummary:
    """Build (incrementally) the training sets of ``data_dir``'s sealed segments into
    ``out_dir``. See the module docstring."""
    policy = TrainingPolicy.of(
        seed=seed,
        middle_every_s=middle_every_s,
        phases=phases,
        top_n=top_n,
        min_updates=min_updates,
    )
    return build(Path(data_dir), Path(out_dir), policy)


def build(data_dir: Path, out_dir: Path, policy: TrainingPolicy) -> TrainingSummary:
    """``build_training_sets`` with every policy knob."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = TrainingSummary(out_dir=str(out_dir))
    manifest = read_training_manifest(out_dir)
    if manifest is None or manifest.get("policy") != policy.describe():
        manifest = _fresh_manifest(policy)
    _clean_orphans(out_dir, manifest)

    # Sessions that ended with every market final are never read again (their markets are in
    # the manifest for good): the nightly build reads only what can still change.
    finished = frozenset(int(x) for x in manifest.get("finished_sessions", []))
    paths, skipped = readable_segments(data_dir, finished)
    files = [str(p) for p in paths]
    skipped += [
        line
        for line in manifest.get("skipped_segments", [])
        if session_of_path(Path(line.split(": ", 1)[0])) in finished
    ]
    summary.skipped_segments = skipped
    ended_now: set[int] = set()
    done = set(manifest["included"]) | {
        k for k, v in manifest["excluded"].items() if v.get("final", True)
    }
    frames: list[pl.DataFrame] = []
    new_included: dict[str, Any] = {}
    new_excluded: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    if files:
        scan = pl.scan_parquet(files, hive_partitioning=False)
        ctl = (
            scan.filter(
                (pl.col("kind") == Kind.DECISION) | pl.col("msg_type").is_in(LIFECYCLE_MSG_TYPES)
            )
            .select(
                "session_id",
                "record_seq",
                "recv_ns",
                "kind",
                *_KEY,
                "msg_type",
                "market_ticker",
                "raw",
                "event_type",
                "open_ts",
                "close_ts",
                "determination_ts",
                "result",
                "settlement_value",
            )
            .collect()
            .sort("session_id", "record_seq")
        )
        amendments = _amend_labels(out_dir, manifest, ctl, len(manifest["builds"]) + 1)
        manifest.setdefault("label_amendments", []).extend(amendments)
        summary.labels_amended = len(amendments)
        ended_now = set(
            ctl.filter(
                (pl.col("kind") == Kind.DECISION) & (pl.col("msg_type") == Decision.SESSION_END)
            )["session_id"].to_list()
        )
        todo: dict[int, list[_Market]] = {}
        for m in _markets(ctl):
            if m.key in done:
                continue
            if m.exclusion is not None:
                entry = _market_entry(m, {})
                if m.final:
                    new_excluded[m.key] = entry
                else:
                    pending[m.key] = entry
                continue
            todo.setdefault(m.session_id, []).append(m)
        for session_id, markets in sorted(todo.items()):
            ev, snaps = _session_events(scan, ctl, session_id, markets)
            t0 = time.perf_counter()
            book = replay(
                ReplayInput(
                    act=ev["act"].to_numpy(),
                    is_yes=(ev["side"] == "yes").fill_null(False).to_numpy(),
                    price=ev["price"].fill_null(0).to_numpy(),
                    delta=ev["delta"].fill_null(0).to_numpy(),
                    snapshots=snaps,
                ),
                policy.top_n,
            )
            summary.replay_seconds += time.perf_counter() - t0
            summary.deltas_replayed += int((ev["msg_type"] == DELTA_MSG).sum())
            rows, stats = _rows(ev, book, markets, _closes(ctl, session_id), policy)
            per = {r["market_ticker"]: r for r in stats.iter_rows(named=True)}
            counts = {
                (r["market_ticker"], r["phase"]): r["len"]
                for r in rows.group_by("market_ticker", "phase").len().iter_rows(named=True)
            }
            keep: list[str] = []
            for m in markets:
                st = per.get(m.ticker, {"updates": 0, "snapshots": 0, "valid_at_end": False})
                if not st["snapshots"]:
                    m.exclusion = Exclusion.NO_BOOK
                elif not st["valid_at_end"]:
                    m.exclusion = Exclusion.UNRECOVERED_GAP
                    m.detail = "book invalid at determination (gap/loss without a later snapshot)"
                elif st["updates"] < policy.min_updates:
                    m.exclusion = Exclusion.TOO_FEW
                    m.detail = f"{st['updates']} valid book states < {policy.min_updates}"
                if m.exclusion is not None:
                    new_excluded[m.key] = _market_entry(m, st)
                    continue
                keep.append(m.ticker)
                phases = {
                    ph: counts.get((m.ticker, ph), 0)
                    for ph in ("pre_open", "early", "middle", "late")
                }
                new_included[m.key] = {
                    **_market_entry(m, st),
                    "rows": sum(phases.values()),
                    "rows_by_phase": phases,
                    "flags": [F_NEVER_TRADED] if not st.get("deltas") else [],
                    "label": {
                        "result": m.result,
                        "value": m.settlement_value,
                        "from": m.label_from,
                    },
                }
            frames.append(rows.filter(pl.col("market_ticker").is_in(keep)))

    out = pl.concat(frames) if frames else None
    build_id = len(manifest["builds"]) + 1
    record: dict[str, Any] = {
        "build_id": build_id,
        "built_at": datetime.now(UTC).isoformat(),
        "dir": None,
        "rows": 0,
        "included": len(new_included),
        "excluded": len(new_excluded),
        "seed": policy.seed,
    }
    if out is not None and out.height:
        bdir = out_dir / f"build={build_id}"
        bdir.mkdir(parents=True, exist_ok=True)
        tmp = bdir / "part-0.parquet.tmp"
        out.write_parquet(tmp, compression="zstd")
        os.replace(tmp, bdir / "part-0.parquet")
        record["dir"] = bdir.name
        record["rows"] = out.height
        for entry in new_included.values():
            entry["build_id"] = build_id
        summary.rows = out.height
        summary.build_id = build_id
    manifest["included"].update(new_included)
    manifest["excluded"].update(new_excluded)
    for key in new_included:
        manifest["excluded"].pop(key, None)
    manifest["pending"] = pending
    still_open = {v["session_id"] for v in pending.values()}
    manifest["finished_sessions"] = sorted(finished | (ended_now - still_open))
    summary.seconds = time.perf_counter() - started
    record["seconds"] = round(summary.seconds, 3)
    record["deltas_replayed"] = summary.deltas_replayed
    manifest["builds"].append(record)
    manifest["skipped_segments"] = skipped
    # orjson: the manifest lists every market ever built; the stdlib encoder made writing it
    # the one cost of a nightly build that grew with history.
    _write_atomic(
        out_dir / TRAINING_MANIFEST,
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
    )
    summary.included = len(new_included)
    summary.excluded = len(new_excluded)
    summary.pending = len(pending)
    summary.total_included = len(manifest["included"])
    with contextlib.suppress(OSError):
        (out_dir / (TRAINING_MANIFEST + ".tmp")).unlink(missing_ok=True)
    return summary


def _market_entry(m: _Market, stats: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "session_id": m.session_id,
        "market_ticker": m.ticker,
        "join_reason": m.reason,
        "mid_lifecycle": m.mid_lifecycle,
        "open_ns": m.open_ns,
        "open_source": m.open_source,
        "end_ns": m.end_ns,
        "end_source": m.end_source,
    }
    if m.exclusion is not None:
        entry["reason"] = m.exclusion
        entry["final"] = m.final
        if m.detail:
            entry["detail"] = m.detail
    for k in ("updates", "snapshots", "deltas", "dropped_events"):
        if k in stats:
            entry[k] = int(stats[k])
    return entry


__all__ = ["TrainingPolicy", "TrainingSummary", "build", "build_training_sets"]

"""The soak's ground-truth verifier: a recording (segments, warehouse, training set) checked
against what the simulator really sent and really was, invariant by invariant.

``bench.soak`` produces a :class:`SoakRun` and calls :func:`verify` and :func:`render`; the tests
(``tests/soak``) import the same functions. It lives in ``bench/`` beside the soak, imports nothing
from ``tests/``, and reads only files: the data directory and the simulator's ground-truth folder
(through ``simulator.groundtruth``'s readers, beside the writer that knows its layout). What each
check means is in ``bench/soak.py``'s module docstring, points (a) to (d).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.decisions import (
    DecisionPayload,
    Disconnected,
    EndReason,
    Gap,
    LeaveReason,
    MarketLeft,
    Recovered,
    SessionEnd,
    read_decision,
)
from schemas.log import Decision
from schemas.units import parse_price, parse_size
from schemas.wire import DELTA_MSG, LIFECYCLE_CHANNEL, MVE_PREFIX, SNAPSHOT_MSG
from simulator.groundtruth import truth_books, truth_effects, truth_frames, truth_markets

P = TypeVar("P", bound=DecisionPayload)
# a market left because it was determined: by its notice, or by REST when the notice was lost
_LEFT_AS_DETERMINED = (LeaveReason.DETERMINED, LeaveReason.RECONCILED_DETERMINED)
MATCH_SLACK_NS = 50_000_000  # clock slack when matching a recorded epoch to a simulator connection


@dataclass
class ProcRun:
    """One recorder process: how it ended and the session it wrote."""

    started_ns: int
    ended_ns: int = 0
    session_id: int | None = None
    how: str = ""  # "kill" | "stop" | "exit"
    returncode: int | None = None
    stderr_tail: str = ""


@dataclass
class SoakRun:
    work: Path
    data: Path
    truth: Path
    seconds: float
    reconcile_s: float = 3.0
    procs: list[ProcRun] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)
    materialize_rc: int | None = None
    materialize_out: str = ""

    @property
    def kills(self) -> list[ProcRun]:
        return [p for p in self.procs if p.how == "kill"]


# ------------------------------------------------------------------------------- ground truth
# read with simulator.groundtruth's truth_* (the module that writes the files)


def top_levels(levels: list[list[str]], n: int) -> list[tuple[int, int]]:
    """A true side ([[price, size], ...] dollar strings) as the training set shows it: the n
    best (highest) bids as (micro-dollars, centi-contracts)."""
    parsed = sorted(((parse_price(p), parse_size(s)) for p, s in levels), reverse=True)
    return parsed[:n]


# ------------------------------------------------------------------------------------ report


@dataclass
class Report:
    """What :func:`verify` found: the counts :func:`render` shows, and every failed check."""

    sessions: int = 0
    frames_sent: int = 0
    frames_recorded: int = 0
    lost_outside_kill_windows: int = 0
    kill_window_losses: int = 0
    kill_window_max_ms: float = 0.0  # kill time - send time of the first frame a kill lost
    in_flight_at_drop: int = 0
    in_flight_at_stop: int = 0
    epochs: int = 0
    sim_connections: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # what the log shows of each fault
    created_received: int = 0
    joined: int = 0
    determined_received: int = 0
    left_determined: int = 0
    join_leave_excused: int = 0
    created_lost: int = 0  # created notices the exchange lost on a live connection
    lost_due: int = 0  # of those, markets undetermined for a period inside one session
    lost_joined_late: int = 0  # of those due, joined late (expect all)
    training_rows: int = 0
    books_checked: int = 0
    book_mismatches: int = 0
    gap_decisions: int = 0
    gaps_in_table: int = 0
    rows_in_gap_spans: int = 0
    segments: int = 0
    unreadable_segments: int = 0
    sessions_ended: int = 0
    sessions_crash_closed: int = 0  # killed sessions closed by the next start's end marker
    sessions_recovered: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        if len(self.failures) < 200:
            self.failures.append(msg)

    @property
    def ok(self) -> bool:
        return not self.failures


# ------------------------------------------------------------------------------------ reading


def read_segments(data: Path, report: Report) -> list[dict[str, Any]]:
    """(d) every file under segments/ reads; returns all records in (session, record_seq) order."""
    tables = []
    root = data / "segments"
    for f in sorted(root.rglob("*")) if root.is_dir() else []:
        if f.is_dir():
            continue
        if f.suffix != ".parquet" or f.name.startswith("."):
            report.fail(f"segments/ holds a file that is not a sealed segment: {f}")
            continue
        report.segments += 1
        try:
            tables.append(pq.read_table(f))
        except Exception as exc:
            report.unreadable_segments += 1
            report.fail(f"unreadable segment {f}: {exc}")
    if not tables:
        return []
    rows = pa.concat_tables(tables).to_pylist()
    rows.sort(key=lambda r: (r["session_id"], r["record_seq"]))
    return rows


def _decision(r: dict[str, Any], struct: type[P]) -> P:
    """A decision record's payload as its struct: the fields ``schemas.decisions`` declares, read
    the way the loader and training read them. A payload that does not read is a recorder bug:
    ``ValueError`` naming the record."""
    where = f"session {r['session_id']} record {r['record_seq']}"
    try:
        d = read_decision(r["msg_type"], r["raw"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(d, struct):
        raise ValueError(f"{where}: a {r['msg_type']} decision, not {struct.KIND}")
    return d


# ------------------------------------------------------------------------------- (a) frames


@dataclass
class Epoch:
    session_id: int
    conn: int
    epoch: int
    connected_ns: int
    end_ns: int = 0
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (recv_ns, raw)
    disconnected: str | None = None  # reason when the recorder saw the connection go
    sim_conn: int | None = None


def _epochs(
    rows: list[dict[str, Any]], procs: list[ProcRun]
) -> tuple[list[Epoch], dict[int, ProcRun]]:
    by_key: dict[tuple[int, int, int], Epoch] = {}
    last_ns: dict[int, int] = {}
    for r in rows:
        last_ns[r["session_id"]] = r["recv_ns"]
        key = (r["session_id"], r["conn"], r["epoch"])
        if r["kind"] == "decision" and r["msg_type"] == Decision.CONNECTED:
            by_key[key] = Epoch(r["session_id"], r["conn"], r["epoch"], r["recv_ns"])
        elif r["kind"] == "in":
            ep = by_key.get(key)
            if ep is None:  # frames before the connected record (should not happen)
                ep = by_key[key] = Epoch(r["session_id"], r["conn"], r["epoch"], r["recv_ns"])
            ep.frames.append((r["recv_ns"], r["raw"]))
        elif r["kind"] == "decision" and r["msg_type"] == Decision.DISCONNECTED:
            ep = by_key.get(key)
            if ep is not None:
                ep.disconnected = _decision(r, Disconnected).reason
                ep.end_ns = r["recv_ns"]
    # which process wrote which session: by the process's lifetime
    proc_of: dict[int, ProcRun] = {}
    for sid in last_ns:
        first = (
            min(e.connected_ns for e in by_key.values() if e.session_id == sid)
            if any(e.session_id == sid for e in by_key.values())
            else last_ns[sid]
        )
        for p in procs:
            if p.session_id == sid or (p.started_ns <= first <= (p.ended_ns or first)):
                proc_of[sid] = p
                break
    epochs = sorted(by_key.values(), key=lambda e: (e.connected_ns, e.session_id, e.conn))
    for e in epochs:
        if not e.end_ns:
            owner = proc_of.get(e.session_id)
            e.end_ns = owner.ended_ns if owner and owner.ended_ns else last_ns[e.session_id]
    return epochs, proc_of


def _matches(ep: Epoch, sent: list[tuple[int, bytes]]) -> bool:
    if len(ep.frames) > len(sent):
        return False
    if sent and not (ep.connected_ns - MATCH_SLACK_NS <= sent[0][0] <= ep.end_ns + MATCH_SLACK_NS):
        return False
    for (recv_ns, raw), (sent_ns, frame) in zip(ep.frames, sent, strict=False):
        if raw != frame or sent_ns > recv_ns + MATCH_SLACK_NS:
            return False
    return True


def _common_prefix(a: list[bytes], b: list[bytes]) -> int:
    i = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        i += 1
    return i


def check_frames(
    rows: list[dict[str, Any]],
    truth: dict[int, list[tuple[int, bytes]]],
    procs: list[ProcRun],
    report: Report,
) -> None:
    """(a) every recorded epoch is exactly a prefix of one simulator connection's frames."""
    epochs, proc_of = _epochs(rows, procs)
    report.epochs = len(epochs)
    report.sim_connections = len(truth)
    report.frames_sent = sum(len(v) for v in truth.values())
    ended = {r["session_id"] for r in rows if r["msg_type"] == Decision.SESSION_END}
    last_epoch: dict[int, Epoch] = {}
    for e in epochs:
        cur = last_epoch.get(e.session_id)
        if cur is None or e.connected_ns >= cur.connected_ns:
            last_epoch[e.session_id] = e
    free = sorted(truth)
    for ep in epochs:
        report.frames_recorded += len(ep.frames)
        cid = next((c for c in free if _matches(ep, truth[c])), None)
        if cid is None:
            raws = [r for _, r in ep.frames]
            best = max(
                free, key=lambda c: _common_prefix(raws, [f for _, f in truth[c]]), default=None
            )
            at = _common_prefix(raws, [f for _, f in truth[best]]) if best is not None else 0
            report.lost_outside_kill_windows += max(0, len(ep.frames) - at)
            report.fail(
                f"session {ep.session_id} conn {ep.conn} epoch {ep.epoch}: its {len(raws)} "
                f"frames are not a prefix of any simulator connection's (best: conn {best}, "
                f"first difference at frame {at})"
            )
            continue
        free.remove(cid)
        ep.sim_conn = cid
        tail = len(truth[cid]) - len(ep.frames)
        killed = ep.session_id not in ended
        if tail == 0:
            pass
        elif ep.disconnected is not None:
            report.in_flight_at_drop += tail
        elif last_epoch[ep.session_id] is ep and killed:
            report.kill_window_losses += tail
            owner = proc_of.get(ep.session_id)
            if owner is not None and owner.how == "kill":
                # how long before the kill the first lost frame was handed to the socket
                first_lost = truth[cid][len(ep.frames)][0]
                window = (owner.ended_ns - first_lost) / 1e6
                report.kill_window_max_ms = max(report.kill_window_max_ms, window)
        elif last_epoch[ep.session_id] is ep:
            report.in_flight_at_stop += tail
        else:
            report.lost_outside_kill_windows += tail
            report.fail(
                f"session {ep.session_id} epoch {ep.epoch}: {tail} frames sent on simulator "
                f"connection {cid} were never recorded, and neither a drop nor a kill ended it"
            )
    # simulator connections no epoch explains: only a kill may (handshake done, nothing flushed)
    kill_ns = [p.ended_ns for p in procs if p.how == "kill"]
    for cid in free:
        first = truth[cid][0][0]
        last = truth[cid][-1][0]
        if any(first - 5 * 10**9 <= k and last <= k + 10**9 for k in kill_ns):
            report.kill_window_losses += len(truth[cid])
        else:
            report.lost_outside_kill_windows += len(truth[cid])
            report.fail(
                f"simulator connection {cid} ({len(truth[cid])} frames) matches no recorded epoch"
            )
    # total order: record_seq 1..n per session, no hole
    by_session: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        by_session[r["session_id"]].append(r["record_seq"])
    for sid, seqs in by_session.items():
        if seqs != list(range(1, len(seqs) + 1)):
            report.fail(f"session {sid}: record_seq is not 1..{len(seqs)} (a hole or a repeat)")


# ----------------------------------------------------------------------------- (b) lifecycle


def check_lifecycle(rows: list[dict[str, Any]], report: Report) -> None:
    """(b) created -> joined, determined (of a joined market) -> left, in the same session."""
    ended = {r["session_id"] for r in rows if r["msg_type"] == Decision.SESSION_END}
    by_session: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_session[r["session_id"]].append(r)
    for sid, rs in by_session.items():
        joined: dict[str, int] = {}  # ticker -> index of its market_joined record
        left: dict[str, tuple[int, LeaveReason | str]] = {}
        for i, r in enumerate(rs):
            if r["kind"] == "decision" and r["msg_type"] == Decision.MARKET_JOINED:
                joined.setdefault(r["market_ticker"], i)
            elif r["kind"] == "decision" and r["msg_type"] == Decision.MARKET_LEFT:
                left.setdefault(r["market_ticker"], (i, _decision(r, MarketLeft).reason))
        report.joined += len(joined)
        for i, r in enumerate(rs):
            lifecycle = r["msg_type"] == LIFECYCLE_CHANNEL  # not MVE: opt-in, off in the soak
            if not (r["kind"] == "in" and lifecycle and not r["malformed"]):
                continue
            t, ev = r["market_ticker"], r["event_type"]
            # the decision follows the frame in the same event-loop turn: only a kill can cut
            # between them, and then nothing else of the session follows
            tail_of_kill = sid not in ended and not any(x["kind"] != "in" for x in rs[i + 1 :])
            if ev == "created":
                report.created_received += 1
                if t in joined:
                    continue
                if tail_of_kill:
                    report.join_leave_excused += 1
                    continue
                report.fail(f"session {sid}: {t} created (record {r['record_seq']}) never joined")
            elif ev == "determined" and t in joined:
                report.determined_received += 1
                lv = left.get(t)
                if lv is not None and lv[1] in _LEFT_AS_DETERMINED:
                    report.left_determined += 1
                    continue
                if tail_of_kill:
                    report.join_leave_excused += 1
                    continue
                how = "never left" if lv is None else f"left as {str(lv[1])!r}"
                report.fail(f"session {sid}: {t} determined (record {r['record_seq']}) but {how}")


LOST_SLACK_S = 2.5  # REST round trips, pacing and a loaded machine on top of one period


def check_lost_notices(rows: list[dict[str, Any]], run: SoakRun, report: Report) -> None:
    """(b) continued: a market whose ``created`` the exchange lost is joined late by the
    session that was recording while it stayed undetermined for a reconciliation period."""
    effects = truth_effects(run.truth)
    lost = {
        e["ticker"]
        for e in effects
        if e["effect"] == "lifecycle_dropped" and e.get("event_type") == "created"
    }
    report.created_lost = len(lost)
    if not lost:
        return
    markets = {m["ticker"]: m for m in truth_markets(run.truth)}
    spans: dict[int, list[int]] = {}  # session -> [first, last] recv_ns
    joined: dict[int, set[str]] = defaultdict(set)
    for r in rows:
        sp = spans.setdefault(r["session_id"], [r["recv_ns"], r["recv_ns"]])
        sp[1] = r["recv_ns"]
        if r["kind"] == "decision" and r["msg_type"] == Decision.MARKET_JOINED:
            joined[r["session_id"]].add(r["market_ticker"])
    need_ms = int((run.reconcile_s + LOST_SLACK_S) * 1000)
    for t in sorted(lost):
        m = markets.get(t)
        if m is None or t.startswith(MVE_PREFIX):
            continue
        created = m["created_ms"]
        det = m["determination_ts"]
        until = det * 1000 if det is not None else 2**62
        for sid, (first, last) in spans.items():
            first_ms, last_ms = first // 1_000_000, last // 1_000_000
            if first_ms + 1000 <= created and created + need_ms <= min(last_ms, until):
                report.lost_due += 1
                if t in joined[sid]:
                    report.lost_joined_late += 1
                else:
                    report.fail(
                        f"session {sid}: {t}'s created was lost and it stayed undetermined "
                        f"for {need_ms} ms of the session, but it was never joined"
                    )
                break


# ------------------------------------------------------------------------------- (c) books


def _training(data: Path) -> list[dict[str, Any]]:
    files = sorted((data / "training").glob("*/*.parquet"))
    if not files:
        return []
    return pa.concat_tables(pq.read_table(f) for f in files).to_pylist()


def _delta_index(rows: list[dict[str, Any]]) -> dict[tuple[int, int], tuple[str, int, int]]:
    """(session, record_seq) of each applied delta frame -> (ticker, ts_ms, i): it is the i-th
    true change of that market at that exchange ms. Duplicates (seq <= the sid's last) are not
    changes and are skipped, as the book replay does."""
    out: dict[tuple[int, int], tuple[str, int, int]] = {}
    seen: dict[tuple[int, str, int], int] = defaultdict(int)
    last_seq: dict[tuple[int, int | None, int | None, int | None], int] = {}
    for r in rows:
        if r["kind"] != "in" or r["sid"] is None or r["seq"] is None:
            continue
        k = (r["session_id"], r["conn"], r["epoch"], r["sid"])
        prev = last_seq.get(k)
        if prev is not None and r["seq"] <= prev:
            continue  # duplicate / stale
        last_seq[k] = r["seq"]
        if r["msg_type"] == DELTA_MSG and r["ts_ms"] is not None and r["price"] is not None:
            key = (r["session_id"], r["market_ticker"], r["ts_ms"])
            out[(r["session_id"], r["record_seq"])] = (r["market_ticker"], r["ts_ms"], seen[key])
            seen[key] += 1
    return out


def _gap_spans(rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[tuple[int, int]]]:
    """(session, ticker) -> [(first invalid record_seq, next snapshot's record_seq)] per gap."""
    spans: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    snaps: dict[tuple[int, str], list[int]] = defaultdict(list)
    for r in rows:
        if r["msg_type"] == SNAPSHOT_MSG and r["market_ticker"] and not r["malformed"]:
            snaps[(r["session_id"], r["market_ticker"])].append(r["record_seq"])
    for i, r in enumerate(rows):
        if not (r["kind"] == "decision" and r["msg_type"] == Decision.GAP):
            continue
        d = _decision(r, Gap)
        start = r["record_seq"]
        for x in reversed(rows[max(0, i - 50) : i]):  # the frame that revealed the gap
            if (
                x["session_id"] == r["session_id"]
                and x["kind"] == "in"
                and x["sid"] == d.sid
                and x["seq"] == d.got
            ):
                start = x["record_seq"]
                break
        for t in d.market_tickers:
            # a snapshot is a whole book: the first one at or after the revealing frame ends it
            # (when the revealing frame is itself that market's snapshot, the span is empty)
            later = [s for s in snaps[(r["session_id"], t)] if s >= start]
            end = later[0] if later else 2**62
            spans[(r["session_id"], t)].append((start, end))
    return spans


def check_books(rows: list[dict[str, Any]], data: Path, truth_dir: Path, report: Report) -> None:
    """(c) training rows equal true books; gaps reach rl_sequence_gaps; no row inside a gap."""
    import duckdb

    train = _training(data)
    report.training_rows = len(train)
    if not train:
        report.fail("the training set is empty: no market's whole life was captured")
    truth = truth_books(truth_dir)
    index = _delta_index(rows)
    top_n = sum(1 for k in (train[0] if train else {}) if k.startswith("yes_bid_price_"))
    spans = _gap_spans(rows)
    for row in train:
        key = (row["session_id"], row["market_ticker"])
        for a, b in spans.get(key, ()):
            if a <= row["record_seq"] < b:
                report.rows_in_gap_spans += 1
                report.fail(
                    f"training row {key} record {row['record_seq']} lies in a gap span "
                    f"[{a}, {b}) without a valid book"
                )
        hit = index.get((row["session_id"], row["record_seq"]))
        if hit is None:
            continue  # a row from a snapshot: its deltas are checked after it
        ticker, ms, i = hit
        states = truth.get((ticker, ms), [])
        report.books_checked += 1
        if i >= len(states):
            report.book_mismatches += 1
            report.fail(f"{ticker} @ {ms}: change #{i} is not in ground truth ({len(states)})")
            continue
        for side in ("yes", "no"):
            mine = [
                (row[f"{side}_bid_price_{k}"], row[f"{side}_bid_size_{k}"])
                for k in range(1, top_n + 1)
                if row[f"{side}_bid_price_{k}"] is not None
            ]
            if mine != top_levels(states[i][side], top_n):
                report.book_mismatches += 1
                report.fail(
                    f"{ticker} session {row['session_id']} record {row['record_seq']} {side}: "
                    f"training book {mine} != true {top_levels(states[i][side], top_n)}"
                )
                break
    # warehouse: every gap decision is a gap row; counts equal the log's
    gaps = {
        (r["session_id"], r["record_seq"])
        for r in rows
        if r["kind"] == "decision" and r["msg_type"] == Decision.GAP
    }
    report.gap_decisions = len(gaps)
    wh = data / "warehouse.duckdb"
    if not wh.exists():
        report.fail(f"no warehouse at {wh}")
        return
    con = duckdb.connect(str(wh), read_only=True)
    try:
        table = {
            (int(s), int(q))
            for s, q in con.execute(
                "SELECT session_id, record_seq FROM rl_sequence_gaps WHERE kind = 'gap'"
            ).fetchall()
        }
        report.gaps_in_table = len(gaps & table)
        for g in sorted(gaps - table)[:20]:
            report.fail(f"gap decision {g} is not in rl_sequence_gaps")
        want = {
            "rl_orderbook_deltas": sum(
                1
                for r in rows
                if r["kind"] == "in" and r["msg_type"] == DELTA_MSG and r["price"] is not None
            ),
            "rl_orderbook_snapshots": sum(
                1
                for r in rows
                if r["kind"] == "in" and r["msg_type"] == SNAPSHOT_MSG and not r["malformed"]
            ),
            "rl_market_participation": sum(
                1 for r in rows if r["msg_type"] == Decision.MARKET_JOINED
            ),
            "rl_orderbook_sessions": len({r["session_id"] for r in rows}),
        }
        for name, n in want.items():
            got = con.execute(f"SELECT count(*) FROM {name}").fetchone()
            if got is None or got[0] != n:
                report.fail(f"{name}: {got} rows in the warehouse, {n} in the log")
    finally:
        con.close()


# ------------------------------------------------------------------------ (d) sessions


def check_sessions(rows: list[dict[str, Any]], report: Report) -> None:
    """(d) every session has a session_end, or a later session's `recovered` names it."""
    sessions = sorted({r["session_id"] for r in rows})
    report.sessions = len(sessions)
    closed = {r["session_id"] for r in rows if r["msg_type"] == Decision.SESSION_END}
    ended = closed - {r["session_id"] for r in rows if _is_crash_end(r)}  # graceful ends only
    named: set[int] = set()
    for r in rows:
        if r["kind"] == "decision" and r["msg_type"] == Decision.RECOVERED:
            recovered = _decision(r, Recovered).sessions
            named.update(int(s) for s in recovered if s < r["session_id"])
    report.sessions_ended = len(ended)
    report.sessions_recovered = len(named & set(sessions))
    for s in sessions:
        if s not in closed and s not in named:
            report.fail(f"session {s} has neither a session_end nor a recovered record naming it")


# ------------------------------------------------------------------------------ verification


def _fault_evidence(rows: list[dict[str, Any]], report: Report) -> None:
    c: Counter[str] = Counter()
    for r in rows:
        if r["kind"] == "decision":
            c[r["msg_type"]] += 1
        elif r["kind"] == "in":
            if r["malformed"]:
                c["malformed"] += 1
            if r["msg_type"] == "error":
                c["error_frames"] += 1
    report.seen = dict(c)


def verify(run: SoakRun) -> Report:
    """Check the invariants (a)-(d) of the module docstring; failures are in ``report.failures``."""
    report = Report()
    for p in run.procs:
        if p.how not in ("kill", "stop"):
            report.fail(
                f"recorder run ended by itself ({p.how}, exit {p.returncode}):\n{p.stderr_tail}"
            )
        elif p.how == "stop" and p.returncode != 0:
            report.fail(f"graceful stop exited {p.returncode}:\n{p.stderr_tail}")
    if run.materialize_rc not in (None, 0):
        report.fail(f"materialize exited {run.materialize_rc}:\n{run.materialize_out}")
    rows = read_segments(run.data, report)
    live_left = list((run.data / "live").rglob("*.arrows")) if (run.data / "live").exists() else []
    if live_left:
        report.fail(f"live/ still holds {len(live_left)} file(s) after a graceful stop")
    if not rows:
        report.fail("no records in segments/")
        return report
    # The next start closes a killed session with a sealed `session_end {reason: crash}`: the
    # recorder's own records are what (a)-(c) judge, so those markers only count in (d).
    own = [r for r in rows if not _is_crash_end(r)]
    _fault_evidence(own, report)
    check_frames(own, truth_frames(run.truth), run.procs, report)
    check_lifecycle(own, report)
    check_lost_notices(own, run, report)
    check_sessions(rows, report)
    report.sessions_crash_closed = sum(1 for r in rows if _is_crash_end(r))
    check_books(own, run.data, run.truth, report)
    return report


def _is_crash_end(r: dict[str, Any]) -> bool:
    return (
        r["kind"] == "decision"
        and r["msg_type"] == Decision.SESSION_END
        and _decision(r, SessionEnd).reason == EndReason.CRASH
    )


# ------------------------------------------------------------------------------------ output

_FAULTS = [
    # (simulator counter, what the log shows of it, label)
    ("drops", "disconnected", "dropped connections (TCP reset)"),
    ("rejected_handshakes", "connect_failed", "refused handshakes (503)"),
    ("gaps", "gap", "sequence gaps"),
    ("duplicates", "stale_seq", "duplicate frames"),
    ("malformed", "malformed", "malformed frames"),
    ("subscribe_errors", "error_frames", "subscribe errors"),
    ("lifecycle_delayed", "", "delayed lifecycle notices"),
    ("lifecycle_reordered", "", "  of which reordered"),
    ("stalls", "", "output stalls"),
    ("bursts", "", "bursts of book changes"),
    ("lifecycle_dropped", "reconciled", "lost lifecycle notices"),
    ("async_errors", "", "async errors 10/17/25 on a sid"),
    ("closes", "", "4xxx closes"),
    ("not_found_new", "", "error 16 for a new market"),
    ("merged_subscribes", "subscription_merged", "merged repeat subscribes"),
    ("empty_pongs", "", "empty pongs"),
]


def render(run: SoakRun, report: Report) -> str:
    """The soak table (plain text, fixed width)."""
    lines = [
        f"soak: {run.seconds:.0f} s, {len(run.procs)} recorder run(s), "
        f"{len(run.kills)} kill -9, {report.sessions} session(s)",
        "",
        f"{'fault':34} {'injected':>9} {'in log':>8}  survived",
    ]
    ok = "yes" if report.ok else "NO"
    for counter, seen, label in _FAULTS:
        n = run.faults.get(counter, 0)
        shown = str(report.seen.get(seen, 0)) if seen else "-"
        lines.append(f"{label:34} {n:>9} {shown:>8}  {ok}")
    lines.append(
        f"{'kill -9 + restart':34} {len(run.kills):>9} {report.sessions_recovered:>8}  {ok}"
    )
    lines += [
        "",
        f"{'check':44} {'value':>10}",
        f"{'frames sent by the simulator':44} {report.frames_sent:>10}",
        f"{'frames recorded':44} {report.frames_recorded:>10}",
        f"{'frames lost outside kill windows (expect 0)':44} "
        f"{report.lost_outside_kill_windows:>10}",
        f"{'kill-window losses (tail of a killed epoch)':44} {report.kill_window_losses:>10}",
        f"{'  max kill window, ms (kill - first lost sent)':44} {report.kill_window_max_ms:>10.0f}",
        f"{'in flight at a drop (never delivered)':44} {report.in_flight_at_drop:>10}",
        f"{'in flight at the graceful stop':44} {report.in_flight_at_stop:>10}",
        f"{'epochs matched / simulator connections':44} "
        f"{f'{report.epochs}/{report.sim_connections}':>10}",
        f"{'created received / joined markets':44} "
        f"{f'{report.created_received}/{report.joined}':>10}",
        f"{'determined (joined) / left as determined':44} "
        f"{f'{report.determined_received}/{report.left_determined}':>10}",
        f"{'  excused at a kill tail':44} {report.join_leave_excused:>10}",
        f"{'created lost / due in a session / joined late':44} "
        f"{f'{report.created_lost}/{report.lost_due}/{report.lost_joined_late}':>10}",
        f"{'training rows':44} {report.training_rows:>10}",
        f"{'books checked against ground truth':44} {report.books_checked:>10}",
        f"{'book mismatches (expect 0)':44} {report.book_mismatches:>10}",
        f"{'gap decisions / in rl_sequence_gaps':44} "
        f"{f'{report.gap_decisions}/{report.gaps_in_table}':>10}",
        f"{'training rows inside gap spans (expect 0)':44} {report.rows_in_gap_spans:>10}",
        f"{'segments read / unreadable':44} "
        f"{f'{report.segments}/{report.unreadable_segments}':>10}",
        f"{'killed sessions closed by the next start':44} {report.sessions_crash_closed:>10}",
        f"{'sessions ended / recovered / total':44} "
        f"{f'{report.sessions_ended}/{report.sessions_recovered}/{report.sessions}':>10}",
        "",
        "RESULT: " + ("all invariants hold" if report.ok else f"{len(report.failures)} failure(s)"),
    ]
    lines += [f"  FAIL {f}" for f in report.failures[:40]]
    return "\n".join(lines)

"""The recorder against every uncertain-point switch of the simulator, each alone and all at once.

Each cell runs a simulator (lively markets, a connection drop with refused reconnects, a few seq
gaps: the baseline every cell shares, so each switch meets resyncs, a reconnect and REST
reconciliation) plus the switch, and the real recorder CLI for a few seconds. Then it checks the
recording against the simulator's ground truth:

* markets missed: every wanted market created during the session is joined, if its ``created``
  arrived, or else if it stayed undetermined for one reconciliation period (plus slack);
* every joined market determined in time was left and its book dropped (a ``delete_markets`` or
  ``unsubscribe`` sent, or the connection/sid it was on ended);
* no command outstanding past its deadline at the end (answered by id, by sid and type, by its
  snapshots, or declared timed out);
* no false gaps (a gap names a seq the exchange did send) and no resync without a cause;
* every frame kept verbatim, in order, once (each epoch is a prefix of what its connection sent);
* no disconnect the exchange did not cause.

Cells run concurrently (one background-thread simulator and one recorder process each) so the
matrix costs about one cell's wall time per ``WORKERS`` cells. ``python -m
tests.recorder.test_variant_matrix`` prints the matrix (cell -> markets missed) for BENCHMARKS.md.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.wire import MVE_PREFIX
from simulator.auth import load_or_create_keys
from simulator.faults import FaultConfig
from simulator.groundtruth import truth_effects, truth_markets
from simulator.market import GenConfig
from simulator.server import SimConfig, start_in_thread
from simulator.switches import config_from_switches
from tests.recorder.harness import ROOT, ground_truth_frames, read_log, recorder_cmd
from tests.support.wait import wait_for

DURATION_S = 14.0  # recorder run per cell
RECONCILE_S = 2.0  # the recorder's reconciliation period, passed short
DEADLINE_S = 2.0  # the recorder's command deadline, passed short
SLACK_S = 3.0  # REST round trips, pacing and a loaded machine on top of a period
WORKERS = 10  # 20 cells in two rounds; the cells mostly wait (about 26 s of CPU in all)
DROP_AFTER_S = 4.0  # baseline: the connection drops this long after the recorder connected
CLOSE_AFTER_S = 8.0  # close-code cells: the exchange closes with the code this long after


_ALL_PARAMS = "min_created_ts,tickers,mve_filter"


@dataclass(frozen=True)
class Cell:
    name: str
    switches: dict[str, Any] = field(default_factory=dict)
    recorder_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    close_code: int | None = None  # close the connection with this code at CLOSE_AFTER_S

    @property
    def include_mve(self) -> bool:
        return "--include-mve" in self.recorder_args


# Recorder settings for the pong cell: ping often, so an empty pong would matter within the run.
_PING_ENV = {"ping_interval_s": "1", "silence_timeout_s": "4", "ping_timeout_s": "2"}

_SMALL_SIDS = ("--max-markets-per-sid", "3")

CELLS: tuple[Cell, ...] = (
    Cell("baseline"),
    Cell("get_snapshot_ok=none", {"get_snapshot_ok": "none"}),
    Cell("get_snapshot_ok=after", {"get_snapshot_ok": "after"}),
    Cell("reply_id=sid_replies", {"reply_id": "sid_replies"}),
    Cell("reply_id=never", {"reply_id": "never"}),
    # a small cap per sid makes the recorder subscribe again on the same channel
    Cell("duplicate_subscribe=merge", {"duplicate_subscribe": "merge"}, _SMALL_SIDS),
    Cell("duplicate_subscribe=error", {"duplicate_subscribe": "error"}, _SMALL_SIDS),
    Cell("lifecycle_drop_rate=0.3", {"lifecycle_drop_rate": 0.3}),
    Cell("rest_time_precision=s", {"rest_time_precision": "s"}),
    Cell("clock_offset_s=-5", {"clock_offset_s": -5.0}),
    Cell("new_market_not_found_s=1.5", {"new_market_not_found_s": 1.5}),
    Cell("pong=empty", {"pong": "empty"}, env=_PING_ENV),
    Cell("async_error_rate=0.1", {"async_error_rate": 0.1}),
    Cell("close_code=4000", close_code=4000),
    Cell(
        "rest_unknown_params=reject",
        {"rest_unknown_params": "reject", "rest_unsupported_params": _ALL_PARAMS},
    ),
    Cell("rest_filters_ignored", {"rest_unsupported_params": _ALL_PARAMS}),
    Cell("mve_fraction=0.3", {"mve_fraction": 0.3}, ("--include-mve",)),
    Cell(
        "all_at_once",
        {
            "get_snapshot_ok": "none",
            "reply_id": "never",
            "duplicate_subscribe": "merge",
            "lifecycle_drop_rate": 0.3,
            "rest_time_precision": "s",
            "clock_offset_s": -5.0,
            "new_market_not_found_s": 1.5,
            "pong": "empty",
            "async_error_rate": 0.1,
            "rest_unknown_params": "reject",
            "rest_unsupported_params": _ALL_PARAMS,
            "mve_fraction": 0.3,
        },
        ("--include-mve", *_SMALL_SIDS),
        _PING_ENV,
        close_code=4000,
    ),
)


def _profile_cells() -> tuple[Cell, ...]:
    """One cell per committed probe report (``probe/reports/*.json``): the recorder against the
    simulator answering as the probed exchange did (``kalshi-simulator serve --profile``)."""
    try:
        from simulator.profile import load_profile
    except ImportError:  # the probe package is not there: no profiles to play
        return ()
    return tuple(
        Cell(f"profile:{f.stem}", load_profile(f))
        for f in sorted((ROOT / "probe" / "reports").glob("*.json"))
    )


CELLS = CELLS + _profile_cells()


def _generator() -> GenConfig:
    """Markets live several seconds, so a market whose notice was lost is still undetermined
    when the next reconciliation runs, and whole lives still fit in a run."""
    return GenConfig.short_lives(
        create_rate=2.0, lifetime="3:6", open_delay="0:0.5", delta_rate=60.0, regimes=False
    )


def _baseline_faults() -> FaultConfig:
    return FaultConfig(gap_rate=0.005, reject_after_drop_s=1.0)


@functools.cache
def _recorder_settings() -> frozenset[str]:
    """The recorder's setting names (its --print-config), so the matrix passes only those that
    exist: the short reconciliation period and deadline arrive with the new connection core."""
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "--print-config", "--key-id", "k", "--private-key", "k"],
        capture_output=True,
        text=True,
        cwd=RECORDER_ROOT,
        timeout=60,
    )
    try:
        return frozenset(orjson.loads(out.stdout))
    except orjson.JSONDecodeError:
        return frozenset()


# Run the matrix against another recorder checkout (e.g. ``git archive HEAD recorder schemas``
# unpacked somewhere): the recorder process starts there, the simulator and checks stay here.
RECORDER_ROOT = Path(os.environ.get("VARIANT_MATRIX_RECORDER_ROOT") or ROOT)


def _recorder_env(cell: Cell) -> dict[str, str]:
    wanted = {"reconcile_interval_s": str(RECONCILE_S), "command_timeout_s": str(DEADLINE_S)}
    wanted.update(cell.env)
    have = _recorder_settings()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, value in wanted.items():
        if name in have:
            env["KALSHI_RECORDER_" + name.upper()] = value
    return env


# ---- one cell -------------------------------------------------------------------------------


@dataclass
class Result:
    cell: str
    returncode: int
    stderr_tail: str
    wanted: int = 0
    mve_wanted: int = 0
    missed: list[str] = field(default_factory=list)
    not_left: list[str] = field(default_factory=list)
    not_dropped: list[str] = field(default_factory=list)
    outstanding: list[str] = field(default_factory=list)
    false_gaps: list[str] = field(default_factory=list)
    causeless_resyncs: list[str] = field(default_factory=list)
    frame_problems: list[str] = field(default_factory=list)
    spurious_disconnects: int = 0
    effects: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not (
            self.missed
            or self.not_left
            or self.not_dropped
            or self.outstanding
            or self.false_gaps
            or self.causeless_resyncs
            or self.frame_problems
            or self.spurious_disconnects
        )


def run_cell(cell: Cell, keys_dir: Path, work: Path, seed: int) -> Result:
    truth = work / "truth"
    data = work / "data"
    base = SimConfig(
        seed=seed,
        keys_dir=keys_dir,
        ground_truth=truth,
        generator=_generator(),
        faults=_baseline_faults(),
    )
    sim = start_in_thread(config_from_switches(cell.switches, base))
    proc = subprocess.Popen(
        recorder_cmd(sim, data, "--duration", str(DURATION_S), *cell.recorder_args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=RECORDER_ROOT,
        env=_recorder_env(cell),
    )
    try:
        # faults timed from the recorder's first connection, however slowly it started
        wait_for(lambda: sim.stats.connections_total > 0, "the recorder to connect", 60)
        t0 = time.monotonic()
        actions = [(DROP_AFTER_S, "drop")]
        if cell.close_code is not None:
            actions.append((CLOSE_AFTER_S, "close"))
        for at, what in actions:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            if what == "drop":
                sim.drop_connections()
            else:
                sim.close_connections(cell.close_code, "simulated close")
        _, err = proc.communicate(timeout=DURATION_S + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sim.stop()
    res = Result(cell.name, proc.returncode, err[-2000:])
    rows = read_log(data)
    if not rows:
        res.frame_problems.append("nothing recorded")
        return res
    check(cell, rows, truth, res)
    return res


# ---- the checks ---------------------------------------------------------------------------


def _raw(r: dict[str, Any]) -> Any:
    try:
        return orjson.loads(r["raw"])
    except orjson.JSONDecodeError:
        return None


def _truth_frames(truth: Path) -> list[list[bytes]]:
    return [sent for _, sent in sorted(ground_truth_frames(truth).items())]


def check(cell: Cell, rows: list[dict[str, Any]], truth: Path, res: Result) -> None:
    markets = {m["ticker"]: m for m in truth_markets(truth)}
    effects = truth_effects(truth)
    for e in effects:
        res.effects[e["effect"]] = res.effects.get(e["effect"], 0) + 1
    start_ns = next(r["recv_ns"] for r in rows if r["msg_type"] == "session_start")
    end_ns = next(
        (r["recv_ns"] for r in rows if r["msg_type"] == "session_end"), rows[-1]["recv_ns"]
    )
    start_ms, end_ms = start_ns // 1_000_000, end_ns // 1_000_000
    decisions = [r for r in rows if r["kind"] == "decision"]
    joined = {r["market_ticker"] for r in decisions if r["msg_type"] == "market_joined"}

    # 1. markets missed
    lifecycle_types = ("market_lifecycle_v2", "multivariate_market_lifecycle")
    arrived = {
        r["market_ticker"]
        for r in rows
        if r["kind"] == "in" and r["msg_type"] in lifecycle_types and r["event_type"] == "created"
        and r["recv_ns"] < end_ns - int(SLACK_S * 1e9)
    }  # fmt: skip
    period_ms = int((RECONCILE_S + SLACK_S) * 1000)
    required: set[str] = set()
    for t, m in markets.items():
        if t.startswith(MVE_PREFIX) and not cell.include_mve:
            continue
        created = m["created_ms"]
        if created < start_ms + 500:  # born before (or as) the session started: not wanted
            continue
        if t in arrived:
            required.add(t)
            continue
        det = m["determination_ts"]
        undetermined_until = det * 1000 if det is not None else end_ms
        if created + period_ms <= min(end_ms, undetermined_until):
            required.add(t)
    res.wanted = len(required)
    res.missed = sorted(required - joined)

    res.mve_wanted = sum(1 for t in required if t.startswith(MVE_PREFIX))

    # 2. determined markets left (within a period when the notice was lost), books dropped
    det_arrived = {
        r["market_ticker"]
        for r in rows
        if r["kind"] == "in" and r["msg_type"] in lifecycle_types
        and r["event_type"] == "determined"
    }  # fmt: skip
    left_at = {  # a leave at shutdown is not a leave on determination
        r["market_ticker"]: i
        for i, r in enumerate(rows)
        if r["kind"] == "decision"
        and r["msg_type"] == "market_left"
        and (_raw(r) or {}).get("reason") != "shutdown"
    }
    for t in sorted(joined):
        det = markets.get(t, {}).get("determination_ts")
        wait_s = SLACK_S if t in det_arrived else RECONCILE_S + SLACK_S
        if det is None or det * 1000 > end_ms - wait_s * 1000:
            continue
        if t not in left_at:
            res.not_left.append(t)
            continue
        if not _book_dropped(rows, t, left_at[t]):
            res.not_dropped.append(t)

    # 3. commands outstanding past their deadline
    res.outstanding = _outstanding(rows, end_ns)

    # 4. false gaps and causeless resyncs
    truth_frames = _truth_frames(truth)
    epochs = sorted({(r["conn"], r["epoch"]) for r in rows if r["kind"] == "in"})
    sent_seqs: dict[tuple[int, int], dict[int, set[int]]] = {}
    for (conn, epoch), frames in zip(epochs, truth_frames, strict=False):
        per_sid: dict[int, set[int]] = {}
        for fr in frames:
            try:
                obj = orjson.loads(fr)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("seq"), int) and "sid" in obj:
                per_sid.setdefault(obj["sid"], set()).add(obj["seq"])
        sent_seqs[(conn, epoch)] = per_sid
    for r in decisions:
        if r["msg_type"] != "gap":
            continue
        g = _raw(r)
        sent = sent_seqs.get((r["conn"], r["epoch"]), {}).get(g.get("sid"), set())
        if g.get("expected") in sent:
            res.false_gaps.append(f"epoch {r['epoch']} sid {g.get('sid')} seq {g.get('expected')}")
    res.causeless_resyncs = _causeless_resyncs(rows)

    # 5. frames verbatim, in order, once
    got: dict[tuple[int, int], list[bytes]] = {}
    for r in rows:
        if r["kind"] == "in":
            got.setdefault((r["conn"], r["epoch"]), []).append(r["raw"])
    if len(got) != len(truth_frames):
        res.frame_problems.append(f"{len(got)} recorded epochs, {len(truth_frames)} connections")
    for (key, frames), on_wire in zip(sorted(got.items()), truth_frames, strict=False):
        if frames != on_wire[: len(frames)]:
            res.frame_problems.append(f"epoch {key} is not a prefix of what was sent")

    # 6. disconnects the exchange did not cause (a drop or a close; +1: the run may end on one)
    caused = res.effects.get("close", 0) + res.effects.get("drop", 0)
    disconnects = sum(1 for r in decisions if r["msg_type"] == "disconnected")
    res.spurious_disconnects = max(0, disconnects - caused - 1)


def _book_dropped(rows: list[dict[str, Any]], ticker: str, left: int) -> bool:
    """After the leave: a delete/unsubscribe naming it (or any unsubscribe), or the connection
    or sid carrying it ended. A market never subscribed has no book to drop."""
    subscribed = False
    for r in rows[:left]:
        if r["kind"] == "out" and ticker.encode() in r["raw"]:
            subscribed = True
            break
    if not subscribed:
        return True
    for r in rows[left:]:
        if r["kind"] == "out":
            cmd = _raw(r) or {}
            params = cmd.get("params") or {}
            if cmd.get("cmd") == "unsubscribe":
                return True
            if params.get("action") == "delete_markets" and ticker in (
                params.get("market_tickers") or []
            ):
                return True
        elif (r["kind"] == "decision" and r["msg_type"] == "disconnected") or (
            r["kind"] == "in" and r["msg_type"] == "error" and r["sid"] is not None
        ):
            return True  # the connection, or the sid carrying it, ended
    return False


_ANSWERS = {
    "subscribe": ("subscribed", "ok", "error"),
    "unsubscribe": ("unsubscribed", "error"),
    "update_subscription": ("ok", "error", "orderbook_snapshot"),
    "list_subscriptions": ("ok", "error"),
}


def _outstanding(rows: list[dict[str, Any]], end_ns: int) -> list[str]:
    """Commands sent more than a deadline (plus slack) before the end, on a connection epoch
    that was still up, with no answer: by id, else by type in order, else a get_snapshot's
    snapshots, else a ``command_timeout`` decision."""
    ended = {(r["conn"], r["epoch"]) for r in rows if r["msg_type"] == "disconnected"}
    timed_out = {
        (r["conn"], r["epoch"], (_raw(r) or {}).get("cmd_id"))
        for r in rows
        if r["kind"] == "decision" and r["msg_type"] == "command_timeout"
    }
    pending: list[tuple[dict[str, Any], dict[str, Any]]] = []
    answered_ids: set[tuple[int, int, int]] = set()
    unmatched_in: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["conn"], r["epoch"])
        if r["kind"] == "out":
            cmd = _raw(r)
            if isinstance(cmd, dict) and cmd.get("cmd") in _ANSWERS:
                pending.append((r, cmd))
        elif r["kind"] == "in":
            if r["cmd_id"] is not None:
                answered_ids.add((r["conn"], r["epoch"], r["cmd_id"]))
            else:
                unmatched_in.setdefault(key, []).append(r)
    late_ns = end_ns - int((DEADLINE_S + SLACK_S) * 1e9)
    out = []
    for r, cmd in pending:
        key = (r["conn"], r["epoch"])
        cid = cmd.get("id")
        if r["recv_ns"] > late_ns or key in ended:
            continue
        if (key[0], key[1], cid) in answered_ids or (key[0], key[1], cid) in timed_out:
            continue
        params = cmd.get("params") or {}
        sid = params.get("sid", (params.get("sids") or [None])[0])
        want = _ANSWERS[cmd["cmd"]]
        cands = unmatched_in.get(key, [])
        hit = None
        for j, x in enumerate(cands):
            if x["record_seq"] <= r["record_seq"] or x["msg_type"] not in want:
                continue
            if cmd["cmd"] != "subscribe" and sid is not None and x["sid"] not in (None, sid):
                continue
            hit = j
            break
        if hit is not None:
            cands.pop(hit)
            continue
        out.append(f"{cmd['cmd']} id={cid} epoch={r['epoch']}")
    return out


_CAUSES = ("gap", "anomaly", "command_timeout", "loss", "stale_seq", "connected")


def _causeless_resyncs(rows: list[dict[str, Any]]) -> list[str]:
    """A resync with no gap, anomaly, timeout, loss or error on its connection since the
    previous resync of that sid is false: the recorder re-snapshotted a book for nothing."""
    since: dict[tuple[Any, Any, Any], bool] = {}
    conn_cause: dict[tuple[Any, Any], bool] = {}
    out = []
    for r in rows:
        key = (r["conn"], r["epoch"])
        is_cause = (r["kind"] == "decision" and r["msg_type"] in _CAUSES) or (
            r["kind"] == "in" and (r["msg_type"] == "error" or r["malformed"])
        )
        if is_cause:
            conn_cause[key] = True
            for k in since:
                if k[:2] == key:
                    since[k] = True
        if r["kind"] == "decision" and r["msg_type"] == "resync":
            sid = (_raw(r) or {}).get("sid")
            k = (r["conn"], r["epoch"], sid)
            if not since.get(k, conn_cause.get(key, False)):
                out.append(f"epoch {r['epoch']} sid {sid}")
            since[k] = False
    return out


# ---- running the matrix ---------------------------------------------------------------------


def run_matrix(keys_dir: Path, work: Path, cells: tuple[Cell, ...] = CELLS) -> list[Result]:
    load_or_create_keys(keys_dir)  # once, before the cells share it
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(run_cell, c, keys_dir, work / f"cell-{i:02d}", 100 + i)
            for i, c in enumerate(cells)
        ]
        return [f.result() for f in futures]


def table(results: list[Result]) -> str:
    lines = [
        "| cell | wanted (MVE) | missed | not left / not dropped | outstanding | false gaps / "
        "resyncs | frames | effects |",
        "| --- | ---: | ---: | --- | ---: | --- | --- | --- |",
    ]
    for r in results:
        fx = ", ".join(f"{k} {v}" for k, v in sorted(r.effects.items())) or "-"
        lines.append(
            f"| {r.cell} | {r.wanted} ({r.mve_wanted}) | {len(r.missed)} | {len(r.not_left)} / "
            f"{len(r.not_dropped)} | {len(r.outstanding)} | {len(r.false_gaps)} / "
            f"{len(r.causeless_resyncs)} | {'ok' if not r.frame_problems else 'BAD'} "
            f"(exit {r.returncode}) | {fx} |"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    keys = tmp_path_factory.mktemp("matrix-keys")
    work = tmp_path_factory.mktemp("matrix")
    t0 = time.monotonic()
    results = run_matrix(keys, work)
    print(f"\nvariant matrix ({time.monotonic() - t0:.0f} s):\n{table(results)}")
    return {r.cell: r for r in results}


@pytest.mark.parametrize("cell", [c.name for c in CELLS])
def test_variant_matrix_cell(matrix: dict[str, Result], cell: str) -> None:
    r = matrix[cell]
    detail = {k: v for k, v in vars(r).items() if v and k not in ("cell", "effects")}
    assert r.returncode == 0, r.stderr_tail
    assert r.wanted > 0, "the cell must create markets during the session"
    if cell.startswith(("mve", "all")):
        assert r.mve_wanted > 0, "MVE markets must be among the wanted ones"
    assert r.ok, detail


def test_every_switched_cell_did_something(matrix: dict[str, Result]) -> None:
    """Ground truth shows each switch acted, so a passing cell is not a switch left idle."""
    expect = {
        "get_snapshot_ok=none": "get_snapshot_without_ok",
        "reply_id=sid_replies": "reply_without_id",
        "reply_id=never": "reply_without_id",
        "lifecycle_drop_rate=0.3": "lifecycle_dropped",
        "async_error_rate=0.1": "async_error",
        "close_code=4000": "close",
        "duplicate_subscribe=merge": "merged_subscribe",
        "baseline": "drop",
    }
    idle = [c for c, e in expect.items() if not matrix[c].effects.get(e)]
    assert not idle, {c: matrix[c].effects for c in idle}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="variant-matrix-") as tmp:
        t0 = time.monotonic()
        results = run_matrix(Path(tmp) / "keys", Path(tmp))
        print(table(results))
        print(f"\n{len(results)} cells in {time.monotonic() - t0:.0f} s")
        for r in results:
            if r.missed:
                print(f"{r.cell}: missed {', '.join(r.missed)}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

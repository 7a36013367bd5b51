"""The probe against the simulator over real sockets: each switch (and a few combinations) set,
probed, and mapped back by ``simulator.profile``; the report must name every setting correctly.

All cells run concurrently against their own simulators (one fixture for the module), so the
probe's waits overlap and the module costs a few seconds, not a few per cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from probe.answers import analyze
from probe.script import ALLOWED_ACTIONS, ALLOWED_COMMANDS, ALLOWED_REST
from probe.transcript import Transcript
from simulator.profile import switches_from_report
from tests.probe.helpers import Cell, ServerLog, mismatches, observed, probe_cells

REST_FILTERS = ("tickers", "min_created_ts", "mve_filter")

CELLS = [
    Cell("defaults", {}),
    Cell("empty_side", {"empty_side": "empty_list"}),
    Cell("lifecycle_seq", {"lifecycle_seq": True}),
    Cell("reply_seq_echo", {"reply_seq": "echo"}),
    Cell("repeat_error", {"duplicate_subscribe": "error"}),
    Cell("repeat_merge", {"duplicate_subscribe": "merge"}),
    Cell("snapshot_ok_after", {"get_snapshot_ok": "after"}),
    Cell("snapshot_ok_none", {"get_snapshot_ok": "none"}),
    Cell("reply_id_sid", {"reply_id": "sid_replies"}),
    Cell("reply_id_never", {"reply_id": "never"}),
    Cell("pong_empty", {"pong": "empty"}),
    Cell("young_market", {"new_market_not_found_s": 1.0}),
    Cell("clock_offset", {"clock_offset_s": 3600.0}),
    Cell("clock_behind", {"clock_offset_s": -60.0}),
    Cell("rest_seconds", {"rest_time_precision": "s"}),
    Cell(
        "rest_reject",
        {"rest_unsupported_params": REST_FILTERS, "rest_unknown_params": "reject"},
    ),
    Cell("rest_ignore", {"rest_unsupported_params": ("tickers",), "rest_unknown_params": "ignore"}),
    Cell("mve", {"mve_fraction": 0.5}),
    Cell("seq_start", {"seq_start": 0}),
    Cell("legacy", {"legacy": True}),
    Cell(
        "combo_quiet_replies",
        {
            "reply_id": "never",
            "get_snapshot_ok": "after",
            "reply_seq": "echo",
            "duplicate_subscribe": "merge",
            "empty_side": "empty_list",
            "lifecycle_seq": True,
        },
    ),
    Cell(
        "combo_old_server",
        {
            "legacy": True,
            "reply_id": "sid_replies",
            "get_snapshot_ok": "none",
            "duplicate_subscribe": "error",
            "pong": "empty",
            "rest_time_precision": "s",
            "clock_offset_s": 90.0,
            "rest_unsupported_params": ("mve_filter", "min_created_ts"),
            "rest_unknown_params": "reject",
            "seq_start": 2,
        },
    ),
]


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe-sim-keys")


@pytest.fixture(scope="module")
def probed(keys_dir: Path) -> Iterator[tuple[dict[str, Cell], ServerLog]]:
    cells = [Cell(c.name, dict(c.switches)) for c in CELLS]
    with pytest.MonkeyPatch.context() as mp, observed(mp) as log:
        probe_cells(cells, keys_dir)
        yield {c.name: c for c in cells}, log


# The simulator shifts REST times and lifecycle *_ts by its clock offset but not the book deltas'
# ts_ms, and sends no HTTP Date header; a real exchange has one clock. An exchange clock behind
# ours is then invisible to the probe (ts_ms bounds the offset from below at ~0).


@pytest.mark.parametrize(
    "name",
    [c.name for c in CELLS],
)
def test_report_names_each_setting(name: str, probed: tuple[dict[str, Cell], ServerLog]) -> None:
    cell = probed[0][name]
    assert cell.run is not None and cell.report is not None and cell.cfg is not None
    assert cell.run.stopped_early is None, cell.run.stopped_early
    mapped = switches_from_report(cell.report)
    # every switch this cell sets was measured (none left "unknown") ...
    missing = [k for k in cell.switches if k not in mapped and k != "rest_unknown_params"]
    assert not missing, f"not measured: {missing}; answers: {cell.report['answers']}"
    # ... and everything the report maps to is what the simulator plays
    assert mismatches(mapped, cell.cfg, cell.report) == []


def test_answers_come_from_the_raw_frames(probed: tuple[dict[str, Cell], ServerLog]) -> None:
    """The report's answers are re-derived from its own frames (serialized and read back)."""
    for cell in probed[0].values():
        assert cell.report is not None
        frames = orjson.loads(orjson.dumps(cell.report["frames"]))
        again = {k: a.to_json() for k, a in analyze(Transcript.from_entries(frames)).items()}
        assert again == cell.report["answers"], cell.name
        for a in cell.report["answers"].values():
            assert all(0 <= n < len(frames) for n in a["evidence"]), (cell.name, a)


def test_probe_sends_only_its_read_only_allow_list(
    probed: tuple[dict[str, Cell], ServerLog],
) -> None:
    """What the simulators received (server side) is read-only, and is exactly what each report
    says was sent."""
    cells, log = probed
    for cell in cells.values():
        assert cell.sim is not None and cell.report is not None
        engine = id(cell.sim.sim.engine)
        got_ws = log.ws.get(engine, [])
        got_rest = log.rest.get(engine, [])
        assert got_ws and got_rest, cell.name
        for text in got_ws:
            cmd = orjson.loads(text)
            assert cmd["cmd"] in ALLOWED_COMMANDS, text
            if cmd["cmd"] == "update_subscription":
                assert cmd["params"]["action"] in ALLOWED_ACTIONS, text
            assert "order" not in cmd["cmd"], text
        for method, target in got_rest:
            path = urlsplit(target).path
            assert method == "GET", target
            assert "portfolio" not in target, target
            rel = path.removeprefix("/trade-api/v2")
            assert any(p.match(rel) for p in ALLOWED_REST), target
        sent_ws = [
            e["text"] for e in cell.report["frames"] if e["dir"] == "out" and e["kind"] == "ws"
        ]
        assert sent_ws == got_ws, cell.name
        sent_rest = [
            e["path"] + ("?" + e["query"] if e["query"] else "")
            for e in cell.report["frames"]
            if e["dir"] == "out" and e["kind"] == "rest"
        ]
        assert [
            re.sub("%2C", ",", t.removeprefix("/trade-api/v2")) for _, t in got_rest
        ] == sent_rest


def test_report_never_holds_the_key_or_signatures(
    probed: tuple[dict[str, Cell], ServerLog],
) -> None:
    cells, log = probed
    assert log.signatures  # the probe did sign (handshakes and REST)
    for cell in cells.values():
        assert cell.sim is not None and cell.report is not None
        data = orjson.dumps(cell.report).decode()
        pem = cell.sim.private_key_path.read_text()
        body_lines = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
        assert not any(ln in data for ln in body_lines), cell.name
        assert not any(sig in data for sig in log.signatures), cell.name
        assert "KALSHI-ACCESS" not in data
        assert cell.sim.key_id not in data

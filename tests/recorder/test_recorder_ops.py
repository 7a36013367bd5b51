"""Operating the recorder: keys, data dir, crash recovery, adoption, discovery, formats, metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from schemas.catalog import iter_live_batches
from simulator.server import SimConfig
from tests.recorder.harness import (
    decisions,
    metric,
    read_log,
    recorder_cmd,
    run_recorder,
    start_recorder,
    stdout_json,
    stop_gracefully,
)
from tests.support.sim import SimFactory, lively
from tests.support.wait import wait_for


def _write_key(path: Path, mode: int = 0o600) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(mode)


def _run_with(sim, data: Path, key_id: str, key_path: Path) -> subprocess.CompletedProcess[str]:
    # no useful --duration: a recorder that retried a rejected key would run into the deadline
    cmd = recorder_cmd(sim, data, "--duration", "3600", private_key=str(key_path))
    cmd[cmd.index("--key-id") + 1] = key_id
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_wrong_key_is_rejected_once_with_a_clear_message(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim()
    other = tmp_path / "other.pem"
    _write_key(other)
    proc = _run_with(sim, tmp_path / "data", sim.key_id, other)
    assert proc.returncode == 2
    assert "rejected the API key" in proc.stderr
    assert sim.stats.handshakes == 1  # rejected once, then exits instead of retrying
    assert "PRIVATE KEY" not in proc.stderr + proc.stdout


def test_unknown_key_id_is_rejected(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim()
    proc = _run_with(
        sim, tmp_path / "data", "00000000-0000-0000-0000-000000000000", sim.private_key_path
    )
    assert proc.returncode == 2
    assert "rejected the API key" in proc.stderr


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("world_readable", "chmod 600"),
        ("garbage", "not an unencrypted PEM RSA private key"),
    ],
)
def test_key_file_problems_say_what_to_do(
    make_sim: SimFactory, tmp_path: Path, setup: str, message: str
) -> None:
    sim = make_sim()
    key = tmp_path / "key.pem"
    if setup == "world_readable":
        _write_key(key, 0o644)
    elif setup == "garbage":
        key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        key.chmod(0o600)
    proc = _run_with(sim, tmp_path / "data", sim.key_id, key)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "bm90IGEga2V5" not in proc.stderr


def test_unwritable_data_dir_is_a_clear_error(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_recorder(sim, blocker / "data", "--duration", "5")
    assert proc.returncode == 2
    assert "kalshi-recorder: error:" in proc.stderr
    assert str(blocker) in proc.stderr


def test_disk_full_stops_cleanly_and_keeps_sealed_data(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = make_sim(generator=lively(delta_rate=2000.0))
    data = tmp_path / "data"
    proc = run_recorder(
        sim, data, "--duration", "30", "--disk-limit-bytes", "400000", "--roll-bytes", "60000"
    )
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in proc.stderr.lower() or "limit" in proc.stderr.lower(), proc.stderr
    rows = read_log(data)  # every sealed segment is readable
    assert rows
    seqs = [r["record_seq"] for r in rows]
    assert seqs == list(range(1, len(rows) + 1))


def test_kill9_then_restart_recovers_leftovers(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim()
    data = tmp_path / "data"
    proc = start_recorder(sim, data, "--duration", "60")
    wait_for(
        lambda: any(p.stat().st_size > 20_000 for p in (data / "live").rglob("*.arrows")),
        "live data",
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    crashed = {int(p.name.split("=")[1]) for p in (data / "live").glob("session_id=*")}
    assert crashed
    proc2 = run_recorder(sim, data, "--duration", "2")
    assert proc2.returncode == 0, proc2.stderr
    rows = read_log(data)
    sessions = sorted({r["session_id"] for r in rows})
    assert len(sessions) == 2
    old = [r for r in rows if r["session_id"] in crashed]
    assert old, "the crashed session's flushed rows were sealed"
    # a contiguous prefix of the crashed session survived: nothing in the middle is missing
    assert [r["record_seq"] for r in old] == list(range(1, len(old) + 1))
    # ... closed by the next start with an end marker sealed with it (atomic with the recovery)
    ends = decisions(old, "session_end")
    assert [e["reason"] for e in ends] == ["crash"]
    assert old[-1]["msg_type"] == "session_end"
    new = [r for r in rows if r["session_id"] not in crashed]
    rec = decisions(new, "recovered")
    assert rec and rec[0]["rows"] == len(old) - 1  # the recovered rows, not the marker
    assert not list((data / "live").rglob("*.arrows"))


def test_adopt_open_markets_marks_them_mid_lifecycle(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(generator=lively(create_rate=0.0, initial_markets=6, lifetime="30:40"))
    wait_for(lambda: len(sim.tickers("active")) >= 3, "open markets")
    open_now = set(sim.tickers("active"))
    data = tmp_path / "data"
    proc = run_recorder(sim, data, "--duration", "3", "--adopt-open-markets")
    assert proc.returncode == 0, proc.stderr
    joined = decisions(read_log(data), "market_joined")
    adopted = {j["market_ticker"] for j in joined if j["reason"] == "adopted"}
    assert open_now <= adopted
    assert all(j["mid_lifecycle"] for j in joined if j["reason"] == "adopted")
    # without the flag, open markets are skipped, and the skip is recorded (already_open)
    data2 = tmp_path / "data2"
    open_now = set(sim.tickers("active"))
    proc = run_recorder(sim, data2, "--duration", "2")
    assert proc.returncode == 0
    rows = read_log(data2)
    assert not decisions(rows, "market_joined")
    skipped = {d["market_ticker"] for d in decisions(rows, "market_skipped")}
    assert open_now and open_now <= skipped
    assert {d["reason"] for d in decisions(rows, "market_skipped")} == {"already_open"}
    # ... but only the markets this recorder would want: another shard's are not its business
    data3 = tmp_path / "data3"
    proc = run_recorder(sim, data3, "--duration", "2", "--exclude", "*")
    assert proc.returncode == 0
    assert not decisions(read_log(data3), "market_skipped")


def _live_rows(data: Path) -> int:
    """Rows a crash would leave behind: what reached live/ files, readable batches only."""
    total = 0
    for path in (data / "live").rglob("*.arrows"):
        try:
            total += sum(batch.num_rows for batch, _ in iter_live_batches(path))
        except OSError:
            continue
    return total


def test_every_restart_is_flagged_with_how_the_previous_session_ended(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """Specification: "log that we had a restart (for data quality tracking)", clean or not."""
    sim = make_sim()
    data = tmp_path / "data"
    assert run_recorder(sim, data, "--duration", "1").returncode == 0
    first = decisions(read_log(data), "session_start")
    assert len(first) == 1 and first[0]["previous_session"] is None
    assert first[0]["environment"] == "lifecycle_discovery"
    assert first[0]["exchange_env"] == "custom"  # --ws-url: not Kalshi's prod or demo
    assert run_recorder(sim, data, "--duration", "1").returncode == 0
    # a crash: kill -9 once something reached live/, then a restart
    proc = start_recorder(sim, data)
    wait_for(lambda: _live_rows(data) > 0, "records flushed to a live file")
    proc.kill()
    proc.wait(10)
    assert run_recorder(sim, data, "--duration", "1").returncode == 0
    rows = read_log(data)
    starts = sorted(
        (
            (r["session_id"], orjson.loads(r["raw"]))
            for r in rows
            if r["msg_type"] == "session_start"
        ),
        key=lambda x: x[0],
    )
    assert len(starts) == 4
    ids = [sid for sid, _ in starts]
    prev = [p["previous_session"] for _, p in starts]
    assert prev[1] == {"session_id": ids[0], "ended": "clean", "end_reason": "duration"}
    assert prev[2] is not None and prev[2]["session_id"] == ids[1] and prev[2]["ended"] == "clean"
    assert prev[3] == {"session_id": ids[2], "ended": "crash", "end_reason": "crash"}


def test_a_restart_follows_the_previous_session_of_its_own_shard(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """Shards may share a data directory: a session's predecessor is its own shard's."""
    sim = make_sim()
    data = tmp_path / "data"
    for shard in ("0/2", "1/2", "0/2"):
        assert run_recorder(sim, data, "--duration", "0.5", "--shard", shard).returncode == 0
    starts = sorted(
        (
            (r["session_id"], orjson.loads(r["raw"]))
            for r in read_log(data)
            if r["msg_type"] == "session_start"
        ),
        key=lambda x: x[0],
    )
    (first, _), (_, second), (_, third) = starts
    assert second["previous_session"] is None  # the first session of shard 1/2
    assert third["previous_session"]["session_id"] == first


def test_kalshi_ws_url_names_the_websocket_url(tmp_path: Path) -> None:
    env = {**os.environ, "KALSHI_WS_URL": "wss://example.invalid/trade-api/ws/v2"}
    out = subprocess.run(
        [sys.executable, "-m", "recorder", "--print-config", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["ws_url"] == "wss://example.invalid/trade-api/ws/v2"


def test_rest_discovery_mode_joins_open_markets(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(generator=lively(create_rate=0.0, initial_markets=5, lifetime="30:40"))
    wait_for(lambda: len(sim.tickers("active")) >= 3, "open markets")
    data = tmp_path / "data"
    proc = run_recorder(sim, data, "--duration", "3", "--discovery", "rest", "--rest-poll", "0.5")
    assert proc.returncode == 0, proc.stderr
    rows = read_log(data)
    assert decisions(rows, "session_start")[0]["lifecycle_mode"] is False
    joined = {j["market_ticker"] for j in decisions(rows, "market_joined")}
    assert set(sim.tickers("active")) & joined


def test_legacy_wire_format_and_filters(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim(legacy=True)
    data = tmp_path / "data"
    proc = run_recorder(sim, data, "--duration", "4", "--exclude", "FED*", "--connections", "2")
    assert proc.returncode == 0, proc.stderr
    rows = read_log(data)
    deltas = [r for r in rows if r["msg_type"] == "orderbook_delta"]
    assert deltas and all(r["price"] % 10_000 == 0 for r in deltas)  # whole cents
    assert not any(r["malformed"] for r in rows)
    joined = {j["market_ticker"] for j in decisions(rows, "market_joined")}
    assert joined and not any(t.startswith("FED") for t in joined)
    skipped = decisions(rows, "market_skipped")
    # Markets open at start are skipped as already_open, but only those the filter wants.
    assert {s["reason"] for s in skipped} <= {"filtered", "already_open"}, skipped
    for s in skipped:
        excluded = s["market_ticker"].startswith("FED") or s.get("detail") == "mve"
        assert excluded == (s["reason"] == "filtered"), s
    assert {r["conn"] for r in deltas} <= {0, 1}


def test_metrics_and_health_endpoints(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = make_sim()
    # port 0: the recorder binds any free port and prints it (no bind-then-close race)
    proc = start_recorder(sim, tmp_path / "data", "--metrics-port", "0", "--duration", "600")
    try:
        url = stdout_json(proc, "metrics_url")

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, "/healthz to answer 200 (connected, writer alive)")
        # frames counted as they arrive: wait until the counter moves, however slow the machine
        wait_for(lambda: metric(url, "recorder_frames_received_total") > 0, "frames counted")
        # counted by the connection's own epochs: a drop shows as a reconnect once back (on a
        # loaded machine the silence watchdog may have reconnected already: compare, not pin)
        before = metric(url, "recorder_reconnects_total")
        sim.drop_connections()
        wait_for(lambda: metric(url, "recorder_reconnects_total") > before, "the reconnect counted")
    finally:
        out, err = stop_gracefully(proc)
    assert proc.returncode == 0, err
    assert "end: signal" in out


def test_print_config_redacts_nothing_secret(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    _write_key(key)
    proc = subprocess.run(
        [
            "python",
            "-m",
            "recorder",
            "--print-config",
            "--private-key",
            str(key),
            "--key-id",
            "abc",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": os.path.dirname(sys.executable) + ":" + os.environ["PATH"]},
    )
    assert proc.returncode == 0, proc.stderr
    assert str(key) in proc.stdout
    assert "PRIVATE KEY" not in proc.stdout
    assert key.read_text().splitlines()[1] not in proc.stdout


_ = SimConfig  # re-exported type for readers of this module


def test_a_repeating_4xxx_close_ends_the_run_with_exit_2_and_one_line(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """The exchange closes every connection with 4001 (auth): after ``fatal_close_repeats`` (3)
    in a row the recorder stops with exit 2 and one clear line, its data sealed; each close code
    and reason is in its ``disconnected`` record."""
    sim = make_sim()
    data = tmp_path / "data"
    proc = start_recorder(sim, data, "--duration", "60")

    def connected(n: int) -> bool:
        return sim.connections_open == 1 and sim.stats.connections_total == n

    def gone(n: int) -> bool:
        total = sim.stats.connections_total
        return sim.connections_open == 0 or total > n or proc.poll() is not None

    try:
        for n in range(1, 4):
            wait_for(lambda: connected(n), f"connection {n}")  # noqa: B023 (called at once)
            sim.close_connections(4001, "authentication expired")
            wait_for(lambda: gone(n), f"connection {n} closed")  # noqa: B023
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "4001" in errors[0] and "KALSHI_API_KEY_ID" in errors[0], err
    rows = read_log(data)
    closes = [d for d in decisions(rows, "disconnected") if d.get("code") == 4001]
    assert len(closes) == 3 and all(d["close_reason"] == "authentication expired" for d in closes)
    assert decisions(rows, "fatal_close")[0]["repeats"] == 3
    assert decisions(rows, "session_end")[0]["reason"] == "auth_rejected"

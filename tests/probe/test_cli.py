"""``kalshi-probe`` as a user runs it: a subprocess against a live simulator, and the one-line
errors for key problems (exit 2, the key file never quoted)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.report import load_report
from simulator.profile import load_profile
from simulator.server import SimulatorThread, start_in_thread
from tests.probe.helpers import sim_config

TIMEOUT = 120  # safety net against a hang only


def probe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "probe", *args]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorThread]:
    handle = start_in_thread(sim_config({}, tmp_path_factory.mktemp("cli-keys")))
    try:
        yield handle
    finally:
        handle.stop()


def test_probe_command_writes_a_report_and_a_table(sim: SimulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KALSHI_")}
    env |= {"KALSHI_API_KEY_ID": sim.key_id, "KALSHI_PRIVATE_KEY_PATH": str(sim.private_key_path)}
    r = subprocess.run(
        probe_cmd(
            "--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--out", str(out), "--listen", "5"
        ),
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    report = load_report(out)
    for a in report["answers"].values():
        assert a["question"] in r.stdout
    assert report["environment"] == "custom" and report["run"]["stopped_early"] is None
    assert load_profile(out)
    pem = sim.private_key_path.read_text()
    secret_lines = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    for text in (r.stdout, r.stderr, out.read_text()):
        assert not any(ln in text for ln in secret_lines)
        assert sim.key_id not in text


def test_key_problems_are_one_line_errors(sim: SimulatorThread, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KALSHI_")}
    base = ["--ws-url", sim.ws_url, "--rest-url", sim.rest_url, "--out", str(tmp_path / "r.json")]
    r = subprocess.run(probe_cmd(*base), capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert r.returncode == 2 and "KALSHI_API_KEY_ID" in r.stderr
    loose = tmp_path / "key.pem"
    loose.write_text(sim.private_key_path.read_text())
    loose.chmod(0o644)
    r = subprocess.run(
        probe_cmd(*base, "--key-id", sim.key_id, "--private-key", str(loose)),
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert r.returncode == 2 and "chmod 600" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "PRIVATE KEY" not in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_a_refused_key_exits_2_and_says_which_environment(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """A key the exchange does not know: the handshake is refused (401), the report still says
    what happened, the message names the fix."""
    other = tmp_path / "keys"
    from simulator import auth

    km = auth.generate_keys(other)
    out = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KALSHI_")}
    r = subprocess.run(
        probe_cmd(
            "--ws-url",
            sim.ws_url,
            "--rest-url",
            sim.rest_url,
            "--out",
            str(out),
            "--key-id",
            km.key_id,
            "--private-key",
            str(km.private_key_path),
            "--listen",
            "1",
        ),
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
    )
    assert r.returncode == 2, r.stderr
    assert "refused the key" in r.stderr and "demo and prod keys differ" in r.stderr
    assert load_report(out)["run"]["handshake_status"] == 401

"""Handshake authentication: accepted, and each rejection the way the exchange rejects it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from simulator import auth
from simulator.server import SimulatorThread, start_in_thread
from tests.simulator.helpers import Client, auth_headers, quiet_config


def _reject(
    sim: SimulatorThread, headers: dict[str, str], path: str = "/trade-api/ws/v2"
) -> tuple[int, dict]:
    url = sim.ws_url.replace("/trade-api/ws/v2", path)
    with pytest.raises(InvalidStatus) as ei, connect(url, additional_headers=headers):
        pass
    resp = ei.value.response
    body = json.loads(resp.body)
    assert resp.headers["Content-Type"] == "application/json"
    return resp.status_code, body


def test_valid_signature_accepted(sim: SimulatorThread) -> None:
    with Client(sim) as c:
        reply = c.subscribe(["market_lifecycle_v2"])
        assert reply["type"] == "subscribed"


def test_missing_headers_rejected(sim: SimulatorThread) -> None:
    status, body = _reject(sim, {})
    assert status == 401
    assert body["code"] == "authentication_error" and "KALSHI-ACCESS-KEY" in body["message"]


def test_bad_signature_rejected(sim: SimulatorThread) -> None:
    h = auth_headers(sim.private_key_path, sim.key_id, path="/trade-api/v2/markets")
    status, body = _reject(sim, h)
    assert status == 401 and body["message"] == "invalid signature"
    h = auth_headers(sim.private_key_path, sim.key_id)
    h["KALSHI-ACCESS-SIGNATURE"] = "not base64!!"
    assert _reject(sim, h)[0] == 401


def test_signature_from_another_key_rejected(sim: SimulatorThread, tmp_path: Path) -> None:
    other = auth.generate_keys(tmp_path)
    h = auth_headers(other.private_key_path, sim.key_id)
    assert _reject(sim, h) == (
        401,
        {"code": "authentication_error", "message": "invalid signature"},
    )


def test_unknown_key_id_rejected(sim: SimulatorThread) -> None:
    h = auth_headers(sim.private_key_path, str(uuid.uuid4()))
    status, body = _reject(sim, h)
    assert status == 401 and "unknown" in body["message"]


def test_stale_timestamp_rejected(sim: SimulatorThread) -> None:
    old = int(time.time() * 1000) - 60_000
    status, body = _reject(sim, auth_headers(sim.private_key_path, sim.key_id, ts_ms=old))
    assert status == 401 and "timestamp" in body["message"]
    future = int(time.time() * 1000) + 60_000
    assert _reject(sim, auth_headers(sim.private_key_path, sim.key_id, ts_ms=future))[0] == 401


def test_skew_is_configurable(keys_dir: Path) -> None:
    with start_in_thread(quiet_config(keys_dir=keys_dir, max_skew_s=300)) as handle:
        old = int(time.time() * 1000) - 60_000
        with Client(handle, auth_headers(handle.private_key_path, handle.key_id, old)) as c:
            assert c.subscribe(["market_lifecycle_v2"])["type"] == "subscribed"


def test_wrong_path_is_404(sim: SimulatorThread) -> None:
    h = auth_headers(sim.private_key_path, sim.key_id)
    status, body = _reject(sim, h, path="/ws")
    assert status == 404 and body["code"] == "not_found"


def test_keygen_cli(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    out = subprocess.run(
        [sys.executable, "-m", "simulator", "keygen", "--keys-dir", str(d)],
        check=True,
        capture_output=True,
        text=True,
    )
    info = json.loads(out.stdout)
    pem = (d / "private_key.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert stat.S_IMODE(os.stat(d / "private_key.pem").st_mode) == 0o600
    key_id = (d / "key_id").read_text().strip()
    assert str(uuid.UUID(key_id)) == key_id == info["key_id"]
    registry = json.loads((d / "public_keys.json").read_text())
    assert registry[key_id].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in out.stdout + out.stderr

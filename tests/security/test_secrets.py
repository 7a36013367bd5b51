"""Secrets stay secret (ARCHITECTURE.md, Invariants): the private key never
reaches the recorder's output, a record, a sealed segment or ``--print-config``; key files others
can read are refused; database passwords never reach materialize's messages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from simulator.server import SimConfig, SimulatorThread, start_in_thread
from tests.recorder.harness import recorder_cmd
from tests.support.sim import lively

ROOT = Path(__file__).resolve().parents[2]


def _write_key(path: Path, mode: int = 0o600) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(mode)
    return pem


def _secrets(pem: bytes) -> list[bytes]:
    """Pieces of the key that must never show: every base64 body line, and 32-byte slices of
    the body joined without line breaks (in case something re-wraps or strips it)."""
    body = [ln for ln in pem.splitlines() if ln and not ln.startswith(b"-----")]
    joined = b"".join(body)
    return body + [joined[i : i + 32] for i in range(0, len(joined) - 32, 32)]


def _assert_absent(pem: bytes, *texts: str | bytes) -> None:
    for text in texts:
        blob = text.encode() if isinstance(text, str) else text
        leaked = [s for s in _secrets(pem) if s in blob]
        assert not leaked, f"private key material leaked: {leaked[0]!r}"


def _recorder(
    sim: SimulatorThread, data: Path, key_path: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = recorder_cmd(sim, data, *extra, private_key=key_path)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=ROOT)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorThread]:
    h = start_in_thread(SimConfig(keys_dir=tmp_path / "keys", generator=lively()))
    yield h
    h.stop()


def _scan_segments(data: Path, pem: bytes) -> int:
    """Every sealed file's bytes, and every decoded value of every column."""
    files = sorted((data / "segments").rglob("*.parquet"))
    for f in files:
        _assert_absent(pem, f.read_bytes())
        for col in pq.read_table(f).columns:
            for v in col.to_pylist():
                if isinstance(v, str | bytes):
                    _assert_absent(pem, v)
    return len(files)


def test_key_never_in_output_records_or_segments(sim: SimulatorThread, tmp_path: Path) -> None:
    pem = Path(sim.private_key_path).read_bytes()
    assert b"PRIVATE KEY" in pem
    data = tmp_path / "data"
    proc = _recorder(sim, data, str(sim.private_key_path), "--duration", "3")
    assert proc.returncode == 0, proc.stderr
    _assert_absent(pem, proc.stdout, proc.stderr)
    assert _scan_segments(data, pem) >= 1


def test_rejected_key_is_not_echoed(sim: SimulatorThread, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    pem = _write_key(other)
    data = tmp_path / "data"
    proc = _recorder(sim, data, str(other), "--duration", "20")
    assert proc.returncode == 2, proc.stderr
    assert "rejected" in proc.stderr
    _assert_absent(pem, proc.stdout, proc.stderr)
    _scan_segments(data, pem)


@pytest.mark.parametrize("shape", ["truncated", "corrupted", "public_only"])
def test_bad_key_file_is_not_echoed(sim: SimulatorThread, tmp_path: Path, shape: str) -> None:
    real = _write_key(tmp_path / "real.pem")
    lines = real.splitlines(keepends=True)
    if shape == "truncated":
        bad = b"".join(lines[: len(lines) // 2])
    elif shape == "corrupted":
        bad = b"".join([*lines[:5], lines[5][:10] + b"!!!!" + lines[5][14:], *lines[6:]])
    else:
        key = serialization.load_pem_private_key(real, password=None)
        bad = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    key_file = tmp_path / "bad.pem"
    key_file.write_bytes(bad)
    key_file.chmod(0o600)
    proc = _recorder(sim, tmp_path / "data", str(key_file), "--duration", "5")
    assert proc.returncode == 2, proc.stderr
    assert "kalshi-recorder: error:" in proc.stderr
    _assert_absent(real, proc.stdout, proc.stderr)
    _assert_absent(bad, proc.stdout, proc.stderr)


def test_print_config_shows_the_path_never_the_key(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    pem = _write_key(key)
    base = [sys.executable, "-m", "recorder", "--print-config", "--key-id", "abc"]
    by_path = subprocess.run(
        [*base, "--private-key", str(key)], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert by_path.returncode == 0, by_path.stderr
    assert str(key) in by_path.stdout
    _assert_absent(pem, by_path.stdout, by_path.stderr)
    # key material pasted where a path belongs (flag or environment): redacted, never echoed
    by_value = subprocess.run(
        [*base, "--private-key", pem.decode()], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    _assert_absent(pem, by_value.stdout, by_value.stderr)
    by_env = subprocess.run(
        base,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "KALSHI_PRIVATE_KEY_PATH": pem.decode()},
    )
    _assert_absent(pem, by_env.stdout, by_env.stderr)


def test_key_material_given_as_the_path_is_not_echoed_in_errors(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """A user pastes the PEM itself into KALSHI_PRIVATE_KEY_PATH: the 'file does not exist'
    error must not quote it back (it would land in journald)."""
    pem = _write_key(tmp_path / "k.pem")
    proc = _recorder(sim, tmp_path / "data", pem.decode(), "--duration", "5")
    assert proc.returncode == 2, proc.stderr
    _assert_absent(pem, proc.stdout, proc.stderr)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others_is_refused(
    sim: SimulatorThread, tmp_path: Path, mode: int
) -> None:
    key = tmp_path / "key.pem"
    pem = _write_key(key, mode)
    proc = _recorder(sim, tmp_path / "data", str(key), "--duration", "5")
    assert proc.returncode == 2
    assert "chmod 600" in proc.stderr
    _assert_absent(pem, proc.stdout, proc.stderr)
    assert not list((tmp_path / "data").rglob("*.parquet")), "refused before recording"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:s3cr3t@127.0.0.1:1/db",
        "postgres://u:s3cr3t@127.0.0.1:1/db?connect_timeout=2",
        "postgresql://u@127.0.0.1:1/db?password=s3cr3t",
        "host=127.0.0.1 port=1 user=u password=s3cr3t dbname=db connect_timeout=2",
    ],
    ids=["uri", "uri-query-opts", "uri-password-param", "key-value"],
)
@pytest.mark.parametrize("via", ["flag", "env"])
def test_dsn_password_never_in_materialize_messages(tmp_path: Path, dsn: str, via: str) -> None:
    data = tmp_path / "data"
    (data / "segments").mkdir(parents=True)
    cmd = [sys.executable, "-m", "materialize", "--data-dir", str(data)]
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    if via == "flag":
        cmd += ["--pg", dsn]
    else:
        env["DATABASE_URL"] = dsn
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "an unreachable database is reported"
    assert "s3cr3t" not in proc.stdout + proc.stderr

"""recorder.config: flags > environment > TOML file > defaults, and --print-config redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recorder.config import Settings, read_config_file, settings_from

ROOT = Path(__file__).resolve().parents[2]
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("KALSHI_", "LIFECYCLE_DISCOVERY_MODE")):
            monkeypatch.delenv(var)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recorder.toml"
    p.write_text(text)
    return p


def test_defaults_without_file_or_env() -> None:
    s, ns = settings_from([])
    assert s == Settings()
    assert s.config_file is None and ns.config is None


def test_toml_overrides_defaults_with_field_and_flag_spellings(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
        env = "demo"
        data_dir = "/srv/kalshi"
        connections = 3
        shard = "1/4"
        include = ["KXBTC*", "KXETH*"]
        rest_poll = 12          # the flag's spelling of rest_poll_s
        flush-interval = 0.25   # dashes are accepted
        roll_seconds = 1800     # an integer for a float field
        adopt_open_markets = true
        metrics_port = 9464
        """,
    )
    s, _ = settings_from(["--config", str(cfg)])
    assert s.env == "demo"
    assert s.data_dir == Path("/srv/kalshi")
    assert s.connections == 3
    assert s.shard == (1, 4)
    assert s.include == ["KXBTC*", "KXETH*"]
    assert s.rest_poll_s == 12.0 and s.flush_interval_s == 0.25
    assert s.roll_seconds == 1800.0 and isinstance(s.roll_seconds, float)
    assert s.adopt_open_markets is True
    assert s.metrics_port == 9464
    assert s.config_file == cfg
    # untouched fields keep their defaults
    assert s.max_markets_per_sid == Settings().max_markets_per_sid


def test_precedence_flag_over_env_over_toml_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(
        tmp_path,
        'connections = 3\nmetrics_port = 9000\ndata_dir = "/from/toml"\nkey_id = "toml-id"\n',
    )
    monkeypatch.setenv("KALSHI_RECORDER_CONFIG", str(cfg))
    monkeypatch.setenv("KALSHI_RECORDER_CONNECTIONS", "4")
    monkeypatch.setenv("KALSHI_RECORDER_DATA_DIR", "/from/env")
    monkeypatch.setenv("KALSHI_API_KEY_ID", "env-id")
    s, _ = settings_from(["--data-dir", "/from/flag"])
    assert s.data_dir == Path("/from/flag")  # flag > env > toml
    assert s.connections == 4  # env > toml
    assert s.key_id == "env-id"  # env (spec name) > toml
    assert s.metrics_port == 9000  # toml > default
    assert s.roll_seconds == Settings().roll_seconds  # default
    assert s.config_file == cfg  # found through KALSHI_RECORDER_CONFIG


def test_config_flag_beats_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a.toml"
    a.write_text("connections = 2\n")
    b = tmp_path / "b.toml"
    b.write_text("connections = 5\n")
    monkeypatch.setenv("KALSHI_RECORDER_CONFIG", str(a))
    s, _ = settings_from(["--config", str(b)])
    assert s.connections == 5 and s.config_file == b


def test_spec_env_names_still_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = write(tmp_path, 'discovery = "lifecycle"\nenv = "prod"\n')
    monkeypatch.setenv("LIFECYCLE_DISCOVERY_MODE", "false")
    monkeypatch.setenv("KALSHI_ENV", "demo")
    monkeypatch.setenv("KALSHI_PRIVATE_KEY_PATH", "/etc/kalshi-recorder/key.pem")
    s, _ = settings_from(["--config", str(cfg)])
    assert s.discovery == "rest" and not s.lifecycle_mode
    assert s.env == "demo"
    assert s.private_key == "/etc/kalshi-recorder/key.pem"


def test_generic_env_lists_and_bools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_RECORDER_EXCLUDE", "KXMVE*, KXTEST*")
    monkeypatch.setenv("KALSHI_RECORDER_INCLUDE_MVE", "yes")
    monkeypatch.setenv("KALSHI_RECORDER_SHARD", "0/2")
    s, _ = settings_from([])
    assert s.exclude == ["KXMVE*", "KXTEST*"]
    assert s.include_mve is True
    assert s.shard == (0, 2)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus = 1\n", "unknown setting 'bogus'"),
        ('connections = "many"\n', "key 'connections': expected an integer"),
        ('shard = "3/2"\n', "need 0 <= i < n"),
        ("include = [1, 2]\n", "expected a list of strings"),
        ("connections = \n", "not valid TOML"),
        ('env = "staging"\n', "unknown environment 'staging'"),
    ],
)
def test_bad_file_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    cfg = write(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        settings_from(["--config", str(cfg)])
    assert exc.value.code == 2  # the recorder's "configuration problem" exit status
    err = capsys.readouterr().err
    assert needle in err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        settings_from(["--config", str(tmp_path / "nope.toml")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_key_material_is_refused_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path, f"private_key = '''{PEM}'''\n")
    with pytest.raises(SystemExit) as exc:
        settings_from(["--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "*path* of the PEM file" in err
    assert "MIIEvQ" not in err
    # the same through the environment, and a bad type error hides it too
    monkeypatch.setenv("KALSHI_RECORDER_CONNECTIONS", PEM)
    with pytest.raises(SystemExit):
        settings_from([])
    assert "MIIEvQ" not in capsys.readouterr().err


def test_redacted_never_contains_key_material() -> None:
    s = Settings(private_key=PEM)
    assert "MIIEvQ" not in json.dumps(s.redacted())


def test_read_config_file_returns_typed_fields(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'data_dir = "~/kalshi"\nsimulate_arg = ["--seed", "3"]\n')
    got = read_config_file(cfg)
    assert got == {"data_dir": Path("~/kalshi").expanduser(), "simulate_args": ["--seed", "3"]}


def test_print_config_cli_shows_path_and_sources_never_the_key(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text(PEM)
    key.chmod(0o600)
    cfg = write(tmp_path, f'private_key = "{key}"\nconnections = 3\nkey_id = "abc"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("KALSHI_")}
    env["KALSHI_RECORDER_CONNECTIONS"] = "6"
    proc = subprocess.run(
        [sys.executable, "-m", "recorder", "--config", str(cfg), "--print-config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["private_key"] == str(key)
    assert shown["connections"] == 6
    assert shown["config_file"] == str(cfg)
    assert "MIIEvQ" not in proc.stdout + proc.stderr

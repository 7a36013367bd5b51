"""``kalshi COMMAND ARGS`` is the script's own ``main`` with the same arguments: same help, same
errors, same exit codes; ``kalshi --help`` lists every command; a wrong command is one line and
exit 2. The subprocess tests run the real thing (``python -m cli`` and the installed scripts)."""

from __future__ import annotations

import gc
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cli.__main__ import COMMANDS, EXIT_USAGE, Command, main

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEADLINE_S = 300.0  # every child gets a deadline; none should come near it


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S, check=False
    )


def _kalshi(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(sys.executable, "-m", "cli", *args)


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(str(BIN / name), *args)


# ------------------------------------------------------------------------------ the table


def test_every_script_in_pyproject_is_a_subcommand_with_the_same_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.pop("kalshi") == "cli.__main__:main"  # the dispatcher itself
    assert {c.script: c.target for c in COMMANDS} == scripts


def test_names_are_unique_and_every_target_resolves() -> None:
    assert len({c.name for c in COMMANDS}) == len(COMMANDS)
    for c in COMMANDS:
        assert callable(c.load()), c.target


# ------------------------------------------------------------------------------ in process


@pytest.fixture
def interpreter_state() -> Iterator[None]:
    """The recorder's main tunes the GC and the switch interval for itself: undo it for the
    rest of this test process."""
    threshold, interval, argv = gc.get_threshold(), sys.getswitchinterval(), sys.argv
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    sys.setswitchinterval(interval)
    assert sys.argv is argv, "the dispatcher must give sys.argv back"


def _exit_code(call: Callable[[], Any]) -> Any:
    """What the process would exit with: the return value, or the SystemExit's code."""
    try:
        return call()
    except SystemExit as exc:
        return exc.code


@pytest.mark.usefixtures("interpreter_state")
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize("args", [["--help"], ["--no-such-option"]], ids=["help", "bad-option"])
def test_subcommand_behaves_as_its_script(
    command: Command,
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    via_kalshi = _exit_code(lambda: main([command.name, *args]))
    out_kalshi = capsys.readouterr()
    # What the console script does: sys.argv is the command line, main() is called bare.
    monkeypatch.setattr(sys, "argv", [command.script, *args])
    direct = _exit_code(command.load())
    out_direct = capsys.readouterr()
    assert via_kalshi == direct
    if args == ["--help"]:
        assert direct == 0
    else:
        assert direct not in (None, 0)  # each script's own usage code (2, or 64 for some)
    assert (out_kalshi.out, out_kalshi.err) == (out_direct.out, out_direct.err)
    assert command.script in out_direct.out + out_direct.err  # the script's own usage line


def test_no_command_prints_the_list_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert all(f"  {c.name} " in err for c in COMMANDS)


# ------------------------------------------------------------------------------ subprocess


def test_help_lists_every_command_with_one_line() -> None:
    r = _kalshi("--help")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for c in COMMANDS:
        (line,) = [ln for ln in lines if ln.split()[:1] == [c.name]]
        assert c.script in line and c.summary in line


def test_simulate_help_is_the_simulators_own() -> None:
    via_kalshi, direct = _kalshi("simulate", "--help"), _script("kalshi-simulator", "--help")
    assert via_kalshi.returncode == direct.returncode == 0
    assert via_kalshi.stdout == direct.stdout
    assert "keygen" in direct.stdout and "serve" in direct.stdout


def test_unknown_command_is_one_line_and_exit_2() -> None:
    r = _kalshi("recrod", "--data-dir", "x")
    assert r.returncode == 2
    assert r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert "'recrod'" in line and "record" in line and "kalshi --help" in line


@pytest.mark.slow
def test_demo_data_runs_for_real_and_exit_codes_equal_the_scripts(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    r = _kalshi("demo-data", "--data-dir", str(data), "--seconds", "2", "--sessions", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"demo data in {data}" in r.stdout
    assert list((data / "segments").rglob("*.parquet"))
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as db:
        row = db.execute("SELECT count(*) FROM rl_orderbook_sessions").fetchone()
    assert row == (1,)
    # A second run into the same directory is refused, with the script's code and message.
    again = _kalshi("demo-data", "--data-dir", str(data))
    direct = _script("kalshi-demo-data", "--data-dir", str(data))
    assert again.returncode == direct.returncode == 66
    assert again.stderr == direct.stderr
    # And a usage error: argparse's exit 2 either way.
    bad, bad_direct = _kalshi("demo-data"), _script("kalshi-demo-data")
    assert bad.returncode == bad_direct.returncode == 2
    assert bad.stderr == bad_direct.stderr

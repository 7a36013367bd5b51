"""Third-party clients accept the simulator: Kalshi's REST SDK and kalshi-sdk's WebSocket client.

Both need Python >= 3.12, newer than ours, so they run in their own virtual environment (cached
under ~/.cache/kalshi-sim-interop) with a pyenv Python 3.13/3.12. On a developer's machine it is
skipped, with the reason, when no such Python exists or the packages cannot be installed; in CI
(``CI`` or ``REQUIRE_POSTGRES=1`` set, as ``.ci/run`` does) it fails instead, so a green CI always
means the third-party clients really ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from simulator.market import Dist, GenConfig
from simulator.server import SimConfig, start_in_thread
from simulator.wire import ProtocolOptions
from tests.support.interop import PACKAGES, installed, interop_venv, newer_python
from tests.support.kalshi_sdk import run_kalshi_sdk


def _cannot_run(why: str) -> NoReturn:
    """Skip on a developer's machine; fail in CI, where a skip would hide a broken interop."""
    if os.environ.get("CI") or os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"interop cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def interop_python() -> str:
    py = newer_python()
    if py is None:
        _cannot_run(
            "interop needs Python >= 3.12 (pyenv 3.13/3.12 or python3.13 on PATH); none found"
        )
    venv = interop_venv(py)
    vpy = venv / "bin" / "python"
    if not installed(venv):
        venv.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([py, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
        if r.returncode != 0:
            _cannot_run(f"cannot create a venv with {py}: {r.stderr.strip()[-300:]}")
        r = subprocess.run(
            [str(vpy), "-m", "pip", "install", "-q", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:
            _cannot_run(f"cannot install {PACKAGES}: {r.stderr.strip()[-500:]}")
        (venv / ".installed").write_text(" ".join(PACKAGES))
    return str(vpy)


@pytest.mark.slow
def test_third_party_clients(interop_python: str, keys_dir: Path) -> None:
    gen = GenConfig(
        create_rate=2,  # new markets keep the lifecycle channel talking
        initial_markets=6,
        open_delay=Dist("0"),
        lifetime=Dist("120"),
        delta_rate=500,
        never_trade_fraction=0.0,
        regimes=False,
    )
    # kalshi-sdk drops snapshots missing a side key and ignores ok frames: its switches.
    proto = ProtocolOptions(empty_side="empty_list", reply_seq="echo")
    with start_in_thread(
        SimConfig(seed=5, keys_dir=keys_dir, generator=gen, protocol=proto)
    ) as sim:
        tickers = sim.tickers()
        keys = {"key_id": sim.key_id, "private_key_path": str(sim.private_key_path)}
        out = asyncio.run(
            run_kalshi_sdk(
                interop_python,
                sim.ws_url,
                keys,
                book_messages=300,
                tickers=tickers[:4],
                rest_url=sim.rest_url,
            )
        )
    assert out["rest_tickers"][: len(tickers)] == tickers
    assert out["rest_open"] >= 1
    assert out["rest_market"] == tickers[0]
    assert "timeout" not in out, out
    kinds = out["kinds"]
    assert kinds.get("OrderbookSnapshotMessage", 0) >= 1, kinds
    assert kinds.get("OrderbookDeltaMessage", 0) >= 100, kinds
    assert any(k.startswith("lifecycle:") for k in kinds), kinds
    assert out["errors"] == [], out["errors"]
    print(json.dumps(out)[:2000], file=sys.stderr)

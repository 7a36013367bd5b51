"""Running the probe against simulators: configurations, what the server saw, comparisons.

The simulator is the ground truth here: each cell sets switches, the probe measures them over
real sockets, and :func:`mismatches` compares what the report maps back to with what was set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from probe.report import build_report
from probe.runner import ProbeRun, RunSettings, now_ms, run_probe
from recorder.auth import Signer, signer_from
from simulator import exchange, rest
from simulator.market import Dist, GenConfig
from simulator.server import SimConfig, SimulatorThread, start_in_thread
from simulator.switches import BY_NAME, Kind, config_from_switches, switch_values


def sim_config(switches: Mapping[str, Any], keys_dir: Path, seed: int = 3) -> SimConfig:
    """A live simulator: markets created every ~0.25 s (the probe waits for one), slow books."""
    gen = GenConfig(
        create_rate=4.0,
        delta_rate=10.0,
        lifetime=Dist("120:240"),
        open_delay=Dist("0:0.2"),
        regimes=False,
    )
    return config_from_switches(switches, SimConfig(seed=seed, keys_dir=keys_dir, generator=gen))


def fast_settings(sim: SimulatorThread) -> RunSettings:
    """The probe's script unchanged, with test-sized pacing and windows."""
    return RunSettings(
        ws_url=sim.ws_url,
        rest_url=sim.rest_url,
        signer=signer_from(sim.key_id, sim.private_key_path),
        command_interval_s=0.01,
        rest_interval_s=0.01,
        listen_s=8.0,
        linger_s=0.3,
        young_retry_s=0.3,
    )


@dataclass
class ServerLog:
    """What the simulators received, per engine: WebSocket texts and REST (method, target)."""

    ws: dict[int, list[str]] = field(default_factory=dict)
    rest: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    signatures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def observed(mp: pytest.MonkeyPatch) -> Iterator[ServerLog]:
    """Record, on the server side, everything the simulators receive, and every signature the
    client produced (wrapping, not replacing: the real code still runs)."""
    log = ServerLog()
    receive = exchange.Session.receive
    handle = rest.handle
    sign = Signer.sign

    def rec_receive(self: exchange.Session, text: str | bytes) -> None:
        t = text if isinstance(text, str) else text.decode("utf-8", "replace")
        log.ws.setdefault(id(self.ex.engine), []).append(t)
        receive(self, text)

    def rec_handle(engine: Any, method: str, target: str, *a: Any, **kw: Any) -> Any:
        log.rest.setdefault(id(engine), []).append((method, target))
        return handle(engine, method, target, *a, **kw)

    def rec_sign(self: Signer, ts_ms: str, method: str, path: str) -> str:
        sig = sign(self, ts_ms, method, path)
        log.signatures.append(sig)
        return sig

    mp.setattr(exchange.Session, "receive", rec_receive)
    mp.setattr(rest, "handle", rec_handle)
    mp.setattr(Signer, "sign", rec_sign)
    yield log


@dataclass
class Cell:
    name: str
    switches: dict[str, Any]
    sim: SimulatorThread | None = None
    cfg: SimConfig | None = None
    run: ProbeRun | None = None
    report: dict[str, Any] | None = None


def probe_cells(cells: list[Cell], keys_dir: Path) -> None:
    """Start a simulator per cell (playing its switches), probe them all concurrently (the waits
    overlap), and stop them; each cell keeps its config, probe run and report."""
    try:
        for cell in cells:
            cell.cfg = sim_config(cell.switches, keys_dir)
            cell.sim = start_in_thread(cell.cfg)
            cell.sim.create_market()  # never trades: a listed market with empty book sides
        asyncio.run(_probe_all(cells))
    finally:
        for cell in cells:
            if cell.sim is not None:
                cell.sim.stop()


async def _probe_all(cells: list[Cell]) -> None:

    async def one(cell: Cell) -> None:
        assert cell.sim is not None
        started = now_ms()
        cell.run = await run_probe(fast_settings(cell.sim))
        cell.report = build_report(
            cell.run.transcript,
            environment="simulator",
            ws_url=cell.sim.ws_url,
            rest_url=cell.sim.rest_url,
            started_ms=started,
            finished_ms=now_ms(),
            limits={},
            run={"stopped_early": cell.run.stopped_early},
        )

    await asyncio.gather(*(one(c) for c in cells))


def mismatches(mapped: Mapping[str, Any], cfg: SimConfig, report: Mapping[str, Any]) -> list[str]:
    """Every mapped switch against the simulator's true value ([] = the report is right).

    Measured quantities are compared by what a measurement can promise: the clock offset to
    within the REST times' resolution (whole seconds at worst) plus one second; the young-market
    window by being on/off and by its proven lower bound; the MVE share by being on/off."""
    truth = switch_values(cfg)
    bad = []
    for name, got in mapped.items():
        want = truth[name]
        if BY_NAME[name].kind is Kind.NAMES:
            ok = set(got) == set(want)
        elif name == "clock_offset_s":
            ok = abs(got - want) <= 2.0
        elif name == "new_market_not_found_s":
            young = report["answers"]["young_market"]["value"]
            low = young["not_found_after_s"]
            ok = (got > 0) == (want > 0) and (low is None or low < want)
        elif name == "mve_fraction":
            ok = (got > 0) == (want > 0)
        else:
            ok = got == want
        if not ok:
            bad.append(f"{name}: report says {got!r}, simulator plays {want!r}")
    return bad

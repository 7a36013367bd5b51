"""Every report committed under probe/reports/ is usable: it loads, it holds no credentials, its
answers re-derive from its raw frames, and it maps to a valid simulator profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.report import FORBIDDEN, PROBE_VERSION, load_report, reanalyze
from simulator.profile import load_profile
from simulator.switches import config_from_switches

REPORTS = Path(__file__).resolve().parents[2] / "probe" / "reports"
FILES = sorted(REPORTS.glob("*.json"))


def test_the_folder_ships_an_example() -> None:
    assert any(p.name.startswith("example-") for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_report_maps_to_a_valid_profile(path: Path) -> None:
    text = path.read_text()
    assert not [s for s in FORBIDDEN if s in text]
    report = load_report(path)
    if report["probe_version"] == PROBE_VERSION:
        again = {k: a.to_json() for k, a in reanalyze(report).items()}
        assert again == report["answers"]
    switches = load_profile(path)
    assert switches  # a report with nothing measured is not worth committing
    config_from_switches(switches)  # raises on any value the simulator cannot play

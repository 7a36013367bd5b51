"""Every report committed under probe/reports/ is usable: it loads, it holds no credentials, its
answers re-derive from its raw frames, and it maps to a valid simulator profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.report import FORBIDDEN, PROBE_VERSION, load_report, reanalyze
from simulator.profile import load_profile, switches_from_report
from simulator.switches import config_from_switches
from tests.probe.helpers import Cell, mismatches, probe_cells

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


def test_each_report_round_trips_through_the_simulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """report -> profile -> simulator -> probe -> report': the second report maps to the same
    switches (the probe and the simulator are inverses), for every committed report at once."""
    keys = tmp_path_factory.mktemp("roundtrip-keys")
    cells = [Cell(p.name, load_profile(p)) for p in FILES]
    probe_cells(cells, keys)
    for c in cells:
        assert c.report is not None and c.cfg is not None
        again = switches_from_report(c.report)
        assert set(c.switches) <= set(again) | {"rest_unknown_params"}, c.name
        assert mismatches(again, c.cfg, c.report) == [], c.name

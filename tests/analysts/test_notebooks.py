"""Every notebook in ``notebooks/`` runs headless against demo data (and an empty data directory)
without a cell error and shows at least one plot; the committed notebooks carry no outputs.

Notebooks are executed in memory (``nbclient``) from the ``notebooks/`` directory; nothing is
written back into ``notebooks/``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
EXPECTED = {
    "01_market_life.ipynb",
    "02_session_overview.ipynb",
    "03_data_quality.ipynb",
    "04_training_tour.ipynb",
    "paper_run.ipynb",
}


def _execute(path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the notebook in memory; return the number of PNG outputs."""
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("KALSHI_DATA_DIR", str(data_dir))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:  # the message names the cell and the traceback
        pytest.fail(f"{path.name} against {data_dir}: a cell failed:\n{exc}")
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )


def test_all_notebooks_present() -> None:
    assert {p.name for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: outputs are not stripped (clear them before committing)"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_demo_data(
    path: Path, demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = path.read_bytes()
    assert _execute(path, demo, monkeypatch) >= 1, f"{path.name} produced no plot"
    assert path.read_bytes() == before  # executed in memory only


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_an_empty_data_dir(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _execute(path, tmp_path, monkeypatch) >= 1, f"{path.name} showed nothing"

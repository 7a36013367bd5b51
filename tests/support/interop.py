"""The third-party Kalshi clients the interop tests run (in a venv of a newer Python, cached
between runs): which packages, which Python, and where the venv lives. Shared by
``tests/simulator/test_interop.py`` (which builds the venv) and ``tests/feed`` (which uses it if
it is there)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = ["kalshi-python-async==3.34.0", "kalshi-sdk==22.4.0"]


def newer_python() -> str | None:
    """A Python >= 3.12 (pyenv's 3.13/3.12, or python3.13/3.12 on PATH); None if there is none."""
    root = os.environ.get("PYENV_ROOT") or (
        subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
        if shutil.which("pyenv")
        else ""
    )
    for v in ("3.13.0", "3.13", "3.12.1", "3.12"):
        for cand in (Path(root) / "versions" / v / "bin" / "python",) if root else ():
            if cand.exists():
                return str(cand)
    for name in ("python3.13", "python3.12"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def interop_venv(py: str) -> Path:
    """Where the venv with ``PACKAGES`` for the Python ``py`` is cached."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kalshi-sim-interop"
    return cache / ("venv-" + Path(py).parent.parent.name)


def installed(venv: Path) -> bool:
    """The venv exists and holds exactly ``PACKAGES``."""
    marker = venv / ".installed"
    return (venv / "bin" / "python").exists() and (
        marker.exists() and marker.read_text() == " ".join(PACKAGES)
    )

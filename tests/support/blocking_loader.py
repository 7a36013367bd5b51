"""A real loader process that stops inside a segment's transaction, for kill tests.

``python -m tests.support.blocking_loader DATA_DIR N`` loads ``DATA_DIR`` into its DuckDB
warehouse with the real loader and target, except that once the ``N``-th segment's deltas are
written (its transaction open, its manifest row claimed, nothing committed) it prints
``blocked <relpath of the segment's first delta record_seq>`` on stdout and waits to be killed.
The test then knows, without timing, that a kill lands mid-load.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from materialize.loader import load
from materialize.targets import DuckDBTarget
from schemas.tables import DELTAS

BLOCKED = "blocked"


class _BlockingTarget(DuckDBTarget):
    def __init__(self, path: Path, block_at: int) -> None:
        super().__init__(path)
        self.block_at = block_at
        self.segments = 0

    def insert_arrow(self, table_name: str, data: pa.Table, *args: Any, **kwargs: Any) -> None:
        super().insert_arrow(table_name, data, *args, **kwargs)
        if table_name == DELTAS:
            self.segments += 1
            if self.segments == self.block_at:
                first = data["record_seq"][0].as_py() if data.num_rows else None
                print(f"{BLOCKED} {first}", flush=True)
                threading.Event().wait()  # until SIGKILL


def main(argv: list[str]) -> int:
    data_dir, block_at = Path(argv[0]), int(argv[1])
    target = _BlockingTarget(data_dir / "warehouse.duckdb", block_at)
    load(data_dir, target)
    print("finished", flush=True)  # only if there were fewer segments than block_at
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

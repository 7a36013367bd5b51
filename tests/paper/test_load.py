"""Paper logs load into DuckDB and a real PostgreSQL, exactly once, with exact values."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pytest

from paper.engine import PaperSession
from paper.load import PAPER_FILLS, PAPER_ORDERS, PAPER_PNL, load_paper_logs
from paper.log import PaperLog, read, sealed_files
from paper.policies import TakeOnce
from tests.paper.feedgen import session


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("paperload")
    for run_id in (1, 2):
        s = PaperSession(TakeOnce())
        log = PaperLog(data, run_id=run_id)
        for ev in session(n_markets=2, seed=run_id):
            rows = s.handle(ev)
            log.session_id = s.session_id
            log.append(rows)
        log.close()
    return data


def _expected(data: Path) -> dict[str, int]:
    kinds = read(data).column("kind").to_pylist()
    return {
        PAPER_ORDERS: sum(k in ("order", "reject", "cancel") for k in kinds),
        PAPER_FILLS: kinds.count("fill"),
        PAPER_PNL: sum(k in ("settle", "mark") for k in kinds),
    }


def test_loads_into_duckdb_exactly_once(paper_data: Path, tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    expected = _expected(paper_data)
    assert expected[PAPER_FILLS] == 4
    assert load_paper_logs(con, paper_data, "duckdb") == expected
    assert load_paper_logs(con, paper_data, "duckdb") == dict.fromkeys(expected, 0)
    fees = con.execute(f"SELECT sum(trade_fee), min(equity_usd) FROM {PAPER_FILLS}").fetchone()
    log = read(paper_data).to_pylist()
    assert fees is not None
    assert fees[0] == sum(r["trade_fee"] for r in log if r["kind"] == "fill")
    assert isinstance(fees[1], Decimal)


def test_loads_into_postgres_exactly_once(paper_data: Path, pg_dsn: str) -> None:
    expected = _expected(paper_data)
    with psycopg.connect(pg_dsn, autocommit=True) as con:  # as materialize's target opens it
        assert load_paper_logs(con, paper_data, "postgres") == expected
        assert load_paper_logs(con, paper_data, "postgres") == dict.fromkeys(expected, 0)
        row = con.execute(
            f"SELECT count(*), sum(size) FROM {PAPER_FILLS} WHERE liquidity = 'taker'"
        ).fetchone()
        assert row == (4, 400)


def test_nightly_materialize_loads_the_paper_logs(paper_data: Path, tmp_path: Path) -> None:
    """``kalshi-materialize`` picks up the paper logs next to the session log, once."""
    from materialize.__main__ import main

    data = tmp_path / "data"
    shutil.copytree(paper_data, data)
    (data / "segments").mkdir()  # a recorder's data directory, with nothing sealed yet
    expected = _expected(paper_data)
    for _ in range(2):  # the second night loads nothing twice
        assert main(["--data-dir", str(data), "--no-training"]) == 0
        con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
        got = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone() for t in expected}
        con.close()
        assert {t: n[0] for t, n in got.items() if n is not None} == expected


def test_a_file_loaded_once_is_not_read_again(paper_data: Path, tmp_path: Path) -> None:
    """A nightly load reads only new sealed files: one already loaded is garbage now (same size)
    and the next load neither reads it nor fails; a new file is still loaded."""
    data = tmp_path / "data"
    shutil.copytree(paper_data, data)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    first = load_paper_logs(con, data, "duckdb")
    files = sealed_files(data)
    files[0].write_bytes(b"\0" * files[0].stat().st_size)
    assert load_paper_logs(con, data, "duckdb") == dict.fromkeys(first, 0)
    s = PaperSession(TakeOnce())
    log = PaperLog(data, run_id=3)
    for ev in session(n_markets=1, seed=3):
        rows = s.handle(ev)
        log.session_id = s.session_id
        log.append(rows)
    log.close()
    assert sum(load_paper_logs(con, data, "duckdb").values()) > 0

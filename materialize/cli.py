"""What the materialize command lines share (``kalshi-materialize``, ``kalshi-retention``, and the
smaller ``python -m materialize.*`` tools): exit codes, a parser whose usage errors are one line
with exit 64, the arguments that say where the data and the tables are, and the one-line refusal
of a data directory that is not a recorder's (a typo in a nightly job must fail, not "succeed"
for ever on nothing)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from schemas.catalog import data_dir_problem

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DATABASE = 2
EXIT_USAGE = 64  # sysexits EX_USAGE
EXIT_NO_DATA = 66  # sysexits EX_NOINPUT: the data directory is missing or not a recorder's

WAREHOUSE = "warehouse.duckdb"
"""The embedded DuckDB file in the data directory, used when no PostgreSQL DSN is given."""


class UsageParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors exit :data:`EXIT_USAGE` (argparse's own is 2, which these
    commands use for "the database is unavailable")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def store_parser(
    prog: str, description: str, *, pg_help: str, pg_flags: tuple[str, ...] = ("--pg",)
) -> UsageParser:
    """A :class:`UsageParser` for a command that works on a data directory and its tables:
    ``--data-dir``, ``--pg DSN`` (or ``pg_flags``) and ``--duckdb FILE``, read by
    :func:`store_of`."""
    p = UsageParser(prog=prog, description=description)
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")
    p.add_argument(*pg_flags, dest="pg", metavar="DSN", default=None, help=pg_help)
    p.add_argument("--duckdb", type=Path, default=None, help="DuckDB file when no --pg is used")
    return p


def store_of(args: argparse.Namespace) -> tuple[str | None, Path]:
    """The PostgreSQL DSN (``--pg``, else ``$DATABASE_URL``, else None) and the DuckDB file
    used without one (``--duckdb``, else ``DATA/warehouse.duckdb``)."""
    dsn: str | None = args.pg if args.pg is not None else os.environ.get("DATABASE_URL")
    return dsn, args.duckdb or args.data_dir / WAREHOUSE


def fail(prog: str, message: object, code: int) -> int:
    """``code``, after the one line ``prog: message`` on stderr (how every command here reports
    a failure: what failed and what to do, never a traceback)."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def refuse_data_dir(prog: str, data_dir: Path) -> int | None:
    """:data:`EXIT_NO_DATA` after one line on stderr when ``data_dir`` does not exist or holds no
    recorder data; None when it is fine."""
    problem = data_dir_problem(data_dir)
    if problem is None:
        return None
    return fail(prog, problem, EXIT_NO_DATA)

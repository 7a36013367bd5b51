"""``python -m materialize`` / ``kalshi-materialize``: the nightly job.

Loads every sealed segment not loaded yet (exactly once, see ``materialize.loader``) into
PostgreSQL when a DSN is given (``--pg DSN``, else ``$DATABASE_URL``; ``--pg ""`` means "the libpq
environment", PGHOST/PGUSER/...), otherwise into the embedded default ``DATA/warehouse.duckdb`` so
the job works on a fresh machine with no database server. Then, unless ``--no-training``, builds
the training sets and the data-quality report. Prints a summary table at the end.

Exit status (for cron / systemd ``SuccessExitStatus`` and alerting):

* ``0``  everything found was loaded (or already loaded) and the later steps succeeded;
* ``2``  the database (or the ``--from-url`` bucket) is unreachable, cannot be opened, or went
  away mid-run: nothing partial
  (the segment in flight was rolled back; the one-line message never shows a password);
* ``3``  at least one segment was skipped (unreadable, unknown schema version, rejected by the
  database); it is listed with its path and reason, all the others were loaded;
* ``4``  loading succeeded but the training-set build or the quality report failed;
* ``64`` bad command line (``EX_USAGE``; not argparse's usual 2, which means "database" here);
* ``66`` the data directory does not exist or no recorder ever wrote to it (``EX_NOINPUT``):
  one line says so and nothing is created (a typo in a nightly job must not "succeed" for ever
  on a new empty warehouse).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

from materialize.cli import (
    EXIT_DATABASE,
    EXIT_OK,
    fail,
    refuse_data_dir,
    store_of,
    store_parser,
)
from materialize.loader import LoadSummary, default_progress, load
from materialize.targets import TargetUnavailable, open_target, redact
from schemas.tables import ALL_TABLES, LOADED_SEGMENTS

EXIT_SKIPPED = 3
EXIT_LATER_STEP = 4
SHOWN_MARKETS = 40
"""Markets the terminal summary lists (the worst first); the JSON report has them all."""


def build_parser() -> argparse.ArgumentParser:
    p = store_parser(
        "kalshi-materialize",
        "Load sealed segments into PostgreSQL (or the embedded DuckDB) exactly once, then build "
        "training sets and the data-quality report.",
        pg_help='PostgreSQL DSN (default: $DATABASE_URL; "" = libpq environment). '
        "Without one: DATA/warehouse.duckdb",
    )
    p.add_argument(
        "--quarantine",
        action="store_true",
        help="move skipped segments to DATA/quarantine/ (default: leave them and report)",
    )
    p.add_argument(
        "--from-url",
        metavar="URL",
        default=None,
        help="first mirror the sealed segments of a bucket (s3://bucket/prefix, see "
        "materialize.objectstore) into --data-dir, then load them",
    )
    p.add_argument("--no-training", action="store_true", help="load only")
    # Training knobs default to None so materialize.training's documented defaults apply (one
    # definition of each setting); only values given here are passed on.
    p.add_argument("--seed", type=int, default=None, help="training-set sampling seed")
    p.add_argument(
        "--middle-every-s",
        type=float,
        default=None,
        help="training-set middle-of-life sampling interval in seconds",
    )
    p.add_argument(
        "--min-updates",
        type=int,
        default=None,
        help="drop markets with fewer valid book states from the training sets (default: keep "
        "every market, never-traded ones flagged in the manifest)",
    )
    p.add_argument(
        "--phase-policy",
        choices=("fractions", "absolute", "union"),
        default=None,
        help="where a life is kept in full: fractions of life (default, first/last 20%%), "
        "absolute hours (first N, last M), or their union",
    )
    p.add_argument("--early-fraction", metavar="F", default=None, help="default 0.2")
    p.add_argument("--late-fraction", metavar="F", default=None, help="default 0.2")
    p.add_argument("--first-hours", metavar="N", default=None, help="default 1 (absolute, union)")
    p.add_argument("--last-hours", metavar="M", default=None, help="default 6 (absolute, union)")
    p.add_argument(
        "--copy-mode",
        choices=("arrow", "rows"),
        default="arrow",
        help="PostgreSQL COPY encoder: arrow (vectorised, default) or rows (psycopg write_row)",
    )
    p.add_argument(
        "--pg-partition-by-day",
        action="store_true",
        help="create the big tables (deltas, snapshots, gaps) partitioned by receive day, so "
        "kalshi-retention drops old days in constant time (new databases; see docs/scale-out.md)",
    )
    return p


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def print_summary(summary: LoadSummary, out: Any = None) -> None:
    """The end-of-run table: segments, rows per table, rows/s, what was skipped and why."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out or sys.stdout, soft_wrap=True)
    t = Table(title=f"materialize -> {summary.target}", show_header=True)
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("segments found", str(summary.segments_found))
    t.add_row("segments loaded now", str(len(summary.loaded)))
    t.add_row("segments already loaded", str(summary.already_loaded))
    t.add_row("segments skipped", str(len(summary.skipped)))
    t.add_row("segments opened and hashed", str(summary.hashed))
    t.add_row("log records read", str(summary.records))
    for name in ALL_TABLES:
        if name != LOADED_SEGMENTS:
            t.add_row(f"rows -> {name}", str(summary.rows.get(name, 0)))
    for what, n in sorted(summary.updates.items()):
        t.add_row(f"rows updated by {what}", str(n))
    for what, n in sorted(summary.derived.items()):
        t.add_row(f"derived: {what}", str(n))
    for what, n in sorted(summary.unmatched.items()):
        t.add_row(f"unmatched: {what}", str(n))
    for what, n in sorted(summary.malformed.items()):
        t.add_row(f"not loaded (malformed): {what}", str(n))
    t.add_row("seconds", f"{summary.seconds:.2f}")
    t.add_row("rows/s", _fmt_rate(summary.rows_per_s))
    console.print(t)
    for s in summary.skipped:
        where = f" -> moved to {s.moved_to}" if s.moved_to else ""
        console.print(f"SKIPPED {s.relpath}: {s.reason}{where}", markup=False)


def _later_steps(args: argparse.Namespace, data_dir: Path) -> int:
    """Training sets, then the data-quality report (each failure reported, exit 4)."""
    from materialize.quality import build_quality_report, render
    from materialize.training import build

    def training() -> None:
        t = build(data_dir, data_dir / "training", args.policy)
        print(
            f"training sets: {t.included} market(s) built now ({t.total_included} in total), "
            f"{t.excluded} excluded, {t.pending} pending; {t.rows:,} rows from "
            f"{t.deltas_replayed:,} deltas -> {t.out_dir} (reasons in manifest.json)"
        )

    def quality() -> None:
        out = data_dir / "quality" / "report.json"
        q = build_quality_report(data_dir, out)
        # The terminal shows what changed this run; the JSON has every session and market.
        print(render(q.changed(), max_markets=SHOWN_MARKETS).rstrip())
        print(
            f"quality report: {len(q.sessions)} session(s) ({q.reused_sessions} unchanged since "
            f"the last run), {len(q.markets)} market(s) -> {out}"
        )

    status = EXIT_OK
    for name, step in (("training sets", training), ("quality report", quality)):
        try:
            step()
        except Exception as exc:  # one step failing must not stop the next
            traceback.print_exc(file=sys.stderr)
            print(f"materialize: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = EXIT_LATER_STEP
    return status


def _given(args: argparse.Namespace, dests: tuple[str, ...]) -> dict[str, Any]:
    """The flags among ``dests`` given on the command line; the others keep the policy's
    documented default."""
    return {d: v for d in dests if (v := getattr(args, d)) is not None}


def _training_policy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """The training policy from the flags, validated where it is declared (a bad value is a
    usage error before anything runs)."""
    from materialize.sampling import PhasePolicy
    from materialize.training import TrainingPolicy

    phases = _given(
        args, ("phase_policy", "early_fraction", "late_fraction", "first_hours", "last_hours")
    )
    if "phase_policy" in phases:
        phases["kind"] = phases.pop("phase_policy")
    knobs = _given(args, ("seed", "middle_every_s", "min_updates"))
    try:
        return TrainingPolicy.of(phases=PhasePolicy(**phases), **knobs)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.policy = _training_policy(parser, args)
    data_dir: Path = args.data_dir
    dsn, duck = store_of(args)
    if args.from_url:
        from materialize.objectstore import fetch, redact_url

        source = redact_url(args.from_url)
        try:
            got = fetch(args.from_url, data_dir)
        except (OSError, ValueError) as exc:
            return fail("materialize", f"cannot read {source}: {exc}", EXIT_DATABASE)
        print(f"materialize: fetched {len(got)} new segment(s) from {source}")
    fetched = args.from_url and data_dir.is_dir()  # an empty bucket is not a typo
    if not fetched and (refused := refuse_data_dir("materialize", data_dir)) is not None:
        return refused
    try:
        target = open_target(
            dsn, duck, copy_mode=args.copy_mode, partition_by_day=args.pg_partition_by_day
        )
    except TargetUnavailable as exc:
        return fail("materialize", exc, EXIT_DATABASE)
    try:
        summary = load(data_dir, target, move_bad=args.quarantine, progress=default_progress())
        # Paper-trading logs (kalshi-paper) sit next to the session log; small, loaded idempotently.
        from paper.load import load_paper_logs

        paper_rows = load_paper_logs(target.con, data_dir, target.dialect)
        if any(paper_rows.values()):
            print(f"paper logs loaded: {paper_rows}")
    except TargetUnavailable as exc:
        return fail("materialize", exc, EXIT_DATABASE)
    except Exception as exc:
        # Never let a driver error print a DSN with its password.
        print(f"materialize: failed: {redact(str(exc), dsn)}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        target.close()
    print_summary(summary)
    status = EXIT_SKIPPED if summary.skipped else EXIT_OK
    if not args.no_training:
        later = _later_steps(args, data_dir)
        if status == EXIT_OK:
            status = later
    return status


if __name__ == "__main__":
    sys.exit(main())

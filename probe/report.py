"""The probe report: one JSON document (answers + raw frames) and a table for the terminal.

The JSON is the contract with :mod:`simulator.profile`: ``format`` names its version, ``answers``
maps each question id to ``{question, value, summary, evidence}``, ``frames`` holds every
transcript entry the evidence numbers point into. :func:`check_no_secrets` is the last gate before
a report is written: the transcript never holds request headers, and this makes sure of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from probe.answers import Answer, analyze
from probe.transcript import Transcript

REPORT_FORMAT = "kalshi-probe-report/1"
PROBE_VERSION = "1.0"
# Strings that must never appear in a report (header names whose values are signatures or
# key ids, and PEM armour).
FORBIDDEN = ("KALSHI-ACCESS-SIGNATURE", "KALSHI-ACCESS-KEY", "PRIVATE KEY", "-----BEGIN")


class ReportError(ValueError):
    """A report file that cannot be used; the message says which file and what is wrong."""


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def build_report(
    transcript: Transcript,
    *,
    environment: str,
    ws_url: str,
    rest_url: str,
    started_ms: int,
    finished_ms: int,
    limits: dict[str, Any],
    run: dict[str, Any],
) -> dict[str, Any]:
    answers = analyze(transcript)
    return {
        "format": REPORT_FORMAT,
        "probe_version": PROBE_VERSION,
        "environment": environment,
        "ws_url": ws_url,
        "rest_url": rest_url,
        "started_at": _iso(started_ms),
        "finished_at": _iso(finished_ms),
        "limits": limits,
        "run": run,
        "answers": {k: a.to_json() for k, a in answers.items()},
        "frames": transcript.entries,
    }


def check_no_secrets(data: bytes, secrets: tuple[str, ...] = ()) -> None:
    """Raise if the serialized report holds a forbidden marker or one of ``secrets``."""
    text = data.decode("utf-8", "replace")
    for s in (*FORBIDDEN, *secrets):
        if s and s in text:
            raise ReportError("refusing to write a report that contains credentials material")


def dumps(report: dict[str, Any], secrets: tuple[str, ...] = ()) -> bytes:
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    check_no_secrets(data, secrets)
    return data


def load_report(path: Path) -> dict[str, Any]:
    """Read and check a report file (format, answers); errors say what to do."""
    try:
        report = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ReportError(f"probe report {path} does not exist; run kalshi-probe first") from None
    except orjson.JSONDecodeError as exc:
        raise ReportError(
            f"probe report {path} is not JSON ({exc}); run kalshi-probe again"
        ) from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ReportError(
            f"{path} is not a kalshi-probe report (format {REPORT_FORMAT!r} expected)"
        )
    if not isinstance(report.get("answers"), dict):
        raise ReportError(f"probe report {path} has no answers; run kalshi-probe again")
    return report


def reanalyze(report: dict[str, Any]) -> dict[str, Answer]:
    """Derive the answers again from the report's own raw frames."""
    return analyze(Transcript.from_entries(report.get("frames") or []))


def render_table(report: dict[str, Any]) -> str:
    """A fixed-width table: question, evidence frame numbers, answer (never cut)."""
    rows = [("question", "frames", "answer")]
    for a in report["answers"].values():
        ev = ",".join(str(n) for n in a["evidence"][:4])
        rows.append((a["question"], ev, a["summary"]))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [
        f"kalshi-probe {report['probe_version']} · {report['environment']} · {report['started_at']}"
    ]
    for i, (q, ev, ans) in enumerate(rows):
        lines.append(f"{q:<{w0}}  {ev:<{w1}}  {ans}")
        if i == 0:
            lines.append(f"{'-' * w0}  {'-' * w1}  {'-' * 6}")
    return "\n".join(lines)

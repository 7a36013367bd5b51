"""Which session ran on this data directory before this one, and how it ended.

The specification asks to "log that we had a restart (for data quality tracking)": every session
that follows another on the same data directory says so in its ``session_start`` record, clean
restart or crash alike, so a quality report never has to guess why a market's coverage has a hole.

Only sealed segments are read (the start seals a crashed run's leftovers first, see
``recorder.segments.recover``), and only the ``session_start``/``session_end`` records of the few
most recent sessions: the cost does not grow with history. Several shards may share one data
directory; a session's predecessor is the latest earlier session of the *same* shard.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from schemas.log import SEGMENTS_DIR, Decision

log = logging.getLogger("recorder.restart")

_SESSION_DIR = re.compile(r"session_id=(\d+)")
LOOK_BACK = 20
"""Most recent earlier sessions examined for one of the same shard (shards share directories)."""


def _session_dirs(data_dir: Path) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    root = data_dir / SEGMENTS_DIR
    if not root.is_dir():
        return out
    for day in root.glob("date=*"):
        for d in day.glob("session_id=*"):
            m = _SESSION_DIR.fullmatch(d.name)
            if m is not None:
                out.setdefault(int(m.group(1)), []).append(d)
    return out


def _bounds(dirs: list[Path]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(session_start payload, last session_end payload) of one session's sealed files."""
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    files = sorted(p for d in dirs for p in d.glob("*.parquet"))
    for path in files:
        table = pq.read_table(
            path,
            columns=["record_seq", "msg_type", "raw"],
            filters=[("msg_type", "in", [Decision.SESSION_START, Decision.SESSION_END])],
        )
        rows = sorted(table.to_pylist(), key=lambda r: r["record_seq"])
        for r in rows:
            try:
                payload = orjson.loads(r["raw"])
            except orjson.JSONDecodeError:
                continue
            if not isinstance(payload, dict):
                continue
            if r["msg_type"] == Decision.SESSION_START and start is None:
                start = payload
            elif r["msg_type"] == Decision.SESSION_END:
                end = payload
    return start, end


def previous_session(
    data_dir: Path, own_session_id: int, shard: str, crashed: list[int] | None = None
) -> dict[str, Any] | None:
    """``{"session_id", "ended": "clean"|"crash"|"unknown", "end_reason"}`` of the latest earlier
    session of ``shard`` under ``data_dir``, or None when this is the first.

    ``crashed``: sessions whose leftovers this start sealed (``Recovered.sessions``): they
    ended in a crash whatever else their files say. A file that cannot be read makes its session
    "unknown", never an error: this is a data-quality note, not a reason to refuse to record.
    """
    dirs = _session_dirs(data_dir)
    crashed_set = set(crashed or ())
    earlier = sorted((s for s in dirs if s < own_session_id), reverse=True)[:LOOK_BACK]
    for sid in earlier:
        try:
            start, end = _bounds(dirs[sid])
        except (OSError, ValueError) as exc:  # unreadable segment: say so, go on
            log.warning("previous session %d: cannot read its segments: %s", sid, exc)
            start, end = None, None
        if start is not None and start.get("shard", "0/1") != shard:
            continue  # another shard's session in a shared directory
        reason = end.get("reason") if end is not None else None
        if sid in crashed_set or reason == "crash":
            ended = "crash"
        elif end is not None:
            ended = "clean"
        else:
            ended = "unknown"
        return {
            "session_id": sid,
            "ended": ended,
            "end_reason": reason if isinstance(reason, str) else None,
        }
    return None

"""Ground-truth files: what was sent on each connection and each market's true book over time.

Tests compare a client's recording against these exactly, so frames are written as the very
strings that went on the wire, in send order. Files are buffered and flushed on stop (and when
the buffer fills); they are a test oracle, not a crash-safe log.

Layout (one JSON object per line); the writer and the readers below (``truth_*``, for the
verifiers and the tests) are the only code that knows it:
* ``conn-<N>.jsonl``: ``{"t_ns", "conn", "frame"}``; t_ns = wall clock when handed to the socket.
* ``books.jsonl``: ``{"t_ns", "ticker", "yes": [[price, size], ...], "no": [...]}`` after every
  change; t_ns is the exchange's (virtual) time of the change in ns, the same clock as ``ts_ms``
  (so shifted by the ``clock_offset_s`` switch, like ``ts_ms``).
* ``markets.jsonl``: one line per market with its lifecycle facts (``mve`` says whether it is a
  multivariate market), written on stop.
* ``effects.jsonl``: what each protocol switch and fault did, in order (``{"effect": ...,
  "t_ms": exchange time, ...}``): lifecycle notices dropped, error 16 for young markets, async
  errors, close codes, merged subscribes, replies without id, get_snapshot without ok, REST
  parameters rejected or ignored.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import orjson

from simulator.book import fp_levels
from simulator.market import Engine

BOOKS = "books.jsonl"
MARKETS = "markets.jsonl"
EFFECTS = "effects.jsonl"


def _conn_file(conn_id: int | str) -> str:
    return f"conn-{conn_id}.jsonl"


class GroundTruth:
    def __init__(self, directory: Path, offset_ms: int = 0) -> None:
        self.dir = directory
        self.offset_ms = offset_ms
        directory.mkdir(parents=True, exist_ok=True)
        self._conns: dict[int, IO[bytes]] = {}
        self._books: IO[bytes] = open(directory / BOOKS, "wb")  # noqa: SIM115
        self._effects: IO[bytes] = open(directory / EFFECTS, "wb")  # noqa: SIM115

    def effects(self, effects: list[dict[str, Any]]) -> None:
        for e in effects:
            self._effects.write(orjson.dumps(e))
            self._effects.write(b"\n")

    def frames(self, conn_id: int, t_ns: int, frames: list[str]) -> None:
        f = self._conns.get(conn_id)
        if f is None:
            f = self._conns[conn_id] = open(self.dir / _conn_file(conn_id), "wb")  # noqa: SIM115
        for fr in frames:
            f.write(orjson.dumps({"t_ns": t_ns, "conn": conn_id, "frame": fr}))
            f.write(b"\n")

    def close_conn(self, conn_id: int) -> None:
        f = self._conns.pop(conn_id, None)
        if f is not None:
            f.close()
        # keep a closed connection's file name reserved: a reopened id would overwrite it

    def books(self, engine: Engine) -> None:
        log = engine.book_log
        if not log:
            return
        w = self._books.write
        off = self.offset_ms
        for ts_ms, ticker, yes, no in log:
            w(
                orjson.dumps(
                    {
                        "t_ns": (ts_ms + off) * 1_000_000,
                        "ticker": ticker,
                        "yes": fp_levels(yes),
                        "no": fp_levels(no),
                    }
                )
            )
            w(b"\n")
        log.clear()

    def close(self, engine: Engine) -> None:
        self.books(engine)
        self._books.close()
        self._effects.close()
        for cid in list(self._conns):
            self.close_conn(cid)
        with open(self.dir / MARKETS, "wb") as f:
            for m in engine.markets.values():
                f.write(orjson.dumps(m.facts()))
                f.write(b"\n")

    def flush(self) -> None:
        self._books.flush()
        self._effects.flush()
        for f in self._conns.values():
            f.flush()


# ---- reading


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """A ground-truth file's objects; [] when the simulator never wrote it."""
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def truth_frames(truth: Path) -> dict[int, list[tuple[int, bytes]]]:
    """simulator connection id -> [(t_ns handed to the socket, frame bytes)] in send order."""
    out: dict[int, list[tuple[int, bytes]]] = {}
    for f in sorted(truth.glob(_conn_file("*"))):
        out[int(f.stem.split("-")[1])] = [(int(o["t_ns"]), o["frame"].encode()) for o in _jsonl(f)]
    return out


def truth_books(truth: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """(ticker, exchange ms) -> the true book after each change at that ms, in order."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for b in _jsonl(truth / BOOKS):
        out[(b["ticker"], b["t_ns"] // 1_000_000)].append(b)
    return out


def truth_effects(truth: Path) -> list[dict[str, Any]]:
    """What each switch and fault did, in order."""
    return _jsonl(truth / EFFECTS)


def truth_markets(truth: Path) -> list[dict[str, Any]]:
    """Every market's lifecycle facts (:meth:`simulator.market.Market.facts`)."""
    return _jsonl(truth / MARKETS)

"""Ground-truth files: what was sent on each connection and each market's true book over time.

Tests compare a client's recording against these exactly, so frames are written as the very
strings that went on the wire, in send order. Files are buffered and flushed on stop (and when
the buffer fills); they are a test oracle, not a crash-safe log.

Layout (one JSON object per line):
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

from pathlib import Path
from typing import IO, Any

import orjson

from simulator.book import fp_levels
from simulator.market import Engine


class GroundTruth:
    def __init__(self, directory: Path, offset_ms: int = 0) -> None:
        self.dir = directory
        self.offset_ms = offset_ms
        directory.mkdir(parents=True, exist_ok=True)
        self._conns: dict[int, IO[bytes]] = {}
        self._books: IO[bytes] = open(directory / "books.jsonl", "wb")  # noqa: SIM115
        self._effects: IO[bytes] = open(directory / "effects.jsonl", "wb")  # noqa: SIM115

    def effects(self, effects: list[dict[str, Any]]) -> None:
        for e in effects:
            self._effects.write(orjson.dumps(e))
            self._effects.write(b"\n")

    def frames(self, conn_id: int, t_ns: int, frames: list[str]) -> None:
        f = self._conns.get(conn_id)
        if f is None:
            f = self._conns[conn_id] = open(self.dir / f"conn-{conn_id}.jsonl", "wb")  # noqa: SIM115
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
        with open(self.dir / "markets.jsonl", "wb") as f:
            for m in engine.markets.values():
                f.write(orjson.dumps(m.facts()))
                f.write(b"\n")

    def flush(self) -> None:
        self._books.flush()
        self._effects.flush()
        for f in self._conns.values():
            f.flush()

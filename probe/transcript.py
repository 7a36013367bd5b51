"""The probe's record of one run: every frame and request in, every command and request out.

Entries are plain JSON-able dicts because the same list is written into the report's ``frames`` and
read back by :mod:`probe.answers`: the answers in a report can always be re-derived from its raw
frames (the tests do exactly that for every committed report). No request headers are ever kept,
so the key id's signature can never end up in a report.

Entry fields (all entries): ``n`` (index), ``t_ms`` (our wall clock, ms), ``step`` (the script step
that was running), ``dir`` (``out`` = we sent, ``in`` = we received), ``kind``:

* ``ws``: a text frame, ``text`` verbatim;
* ``rest``: out ``method``, ``path``, ``query``; in ``status``, ``body`` (verbatim text), ``date``
  (the HTTP ``Date`` header or null), ``sent_ms`` (when the request left);
* ``ping`` / ``pong``: a control frame, ``data`` (payload as text) and ``data_hex``;
* ``close``: the exchange's close frame, ``code`` and ``reason``;
* ``note``: something the shell observed that is not a frame (a timeout, a failed connect).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

Entry = dict[str, Any]


@dataclass
class Transcript:
    """An append-only list of entries; ``parsed`` caches each ws frame's JSON (None if not JSON)."""

    entries: list[Entry] = field(default_factory=list)
    _parsed: dict[int, Any] = field(default_factory=dict, repr=False)

    def add(self, t_ms: int, step: str, direction: str, kind: str, **fields: Any) -> Entry:
        e: Entry = {"n": len(self.entries), "t_ms": t_ms, "step": step, "dir": direction}
        e["kind"] = kind
        e.update(fields)
        self.entries.append(e)
        return e

    def parsed(self, e: Entry) -> Any:
        """The JSON value of a ws or rest entry's text (None when it is not JSON)."""
        n = e["n"]
        if n not in self._parsed:
            text = e.get("text") if e["kind"] == "ws" else e.get("body")
            value: Any = None
            if isinstance(text, str):
                try:
                    value = orjson.loads(text)
                except orjson.JSONDecodeError:
                    value = None
            self._parsed[n] = value
        return self._parsed[n]

    def _ws(self, direction: str) -> Iterator[tuple[Entry, dict[str, Any]]]:
        for e in self.entries:
            if e["kind"] == "ws" and e["dir"] == direction:
                obj = self.parsed(e)
                if isinstance(obj, dict):
                    yield e, obj

    def ws_in(self) -> Iterator[tuple[Entry, dict[str, Any]]]:
        """Inbound ws frames that are JSON objects, in arrival order."""
        return self._ws("in")

    def ws_out(self) -> Iterator[tuple[Entry, dict[str, Any]]]:
        """Our ws commands that are JSON objects, in the order sent."""
        return self._ws("out")

    def rest_pairs(self) -> Iterator[tuple[Entry, Entry | None]]:
        """Each REST request with its response (None if it never came)."""
        out = [e for e in self.entries if e["kind"] == "rest"]
        for i, e in enumerate(out):
            if e["dir"] != "out":
                continue
            resp = out[i + 1] if i + 1 < len(out) and out[i + 1]["dir"] == "in" else None
            yield e, resp

    @classmethod
    def from_entries(cls, entries: list[Entry]) -> Transcript:
        return cls(entries=[dict(e) for e in entries])

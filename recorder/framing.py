"""Whole WebSocket frames out of the exchange's byte stream: the reader's fast path (issue 16).

Why this exists: websockets parses each frame with a generator, queues it, and wakes ``recv()``
through a future. Per frame that is ~4 µs, more than the recorder's own work on a delta and
~40% of the reader thread in the profile (BENCHMARKS.md, issue 16). A server-to-client data
frame is simple (RFC 6455 §5.2: two header bytes, an optional 2- or 8-byte length, no mask), so
the common case can be split out of the stream in a tight loop at ~0.7 µs.

Only the common case: a whole, unfragmented, unmasked text or binary frame with no reserved bits.
Every other frame (ping, pong, close, fragments, anything masked or with reserved bits) is
returned whole to the caller, which hands it to websockets unchanged, so the protocol itself (the
close handshake, pongs, fragment assembly and every protocol error) stays websockets' job. The
splitter never parses a payload and never judges a frame: it only finds where each one ends.

Sans-I/O: bytes in, calls out; ``recorder.connection`` wires it to the socket.
"""

from __future__ import annotations

from collections.abc import Callable

_FAST_TEXT = 0x81  # FIN + opcode 1 (text), RSV bits clear
_FAST_BINARY = 0x82  # FIN + opcode 2 (binary)
_MASK = 0x80
_JOIN_LATER = 1 << 16
"""A partial frame longer than this is kept in pieces and joined once it is whole: re-joining the
held bytes on every read would copy a 100 MB frame hundreds of times."""


class FrameSplitter:
    """Splits a server-to-client byte stream into whole frames, holding a partial one.

    ``feed`` calls ``on_data(payload)`` for each simple data frame while ``fast`` is True, and
    ``on_other(frame)`` with the whole bytes of any other frame (and of every frame while ``fast``
    is False; ``fast`` is read again before each frame, so ``on_other`` may change it).
    ``on_other`` returns True to go on splitting, or False to stop (the caller has given the
    stream to websockets from that frame on); ``feed`` then returns the bytes after that frame,
    which are the caller's to pass on, and keeps nothing.
    """

    __slots__ = ("_need", "_parts", "_pos", "_rest", "fast", "more")

    def __init__(self) -> None:
        self._rest = b""  # a partial frame (its length known or not), or frames left by ``limit``
        self._pos = 0  # where in ``_rest`` they start: a turn's leftovers are not copied again
        self._parts: list[bytes] = []  # or a large partial frame in pieces, without re-copying
        self._need = 0  # bytes the frame in ``_parts`` has in all
        self.fast = True
        self.more = False
        """True after ``feed`` stopped at its ``limit``: whole frames may be held; feed ``b""``
        to go on."""

    @property
    def buffered(self) -> int:
        """Bytes of a frame not yet complete."""
        return len(self._rest) - self._pos + sum(len(p) for p in self._parts)

    def feed(
        self,
        data: bytes,
        on_data: Callable[[bytes], object],
        on_other: Callable[[bytes], bool],
        limit: int | None = None,
    ) -> bytes:
        """Split ``data`` (after what is held); at most ``limit`` frames per call (the rest is
        held, and ``more`` says so), so one large read does not keep the caller busy for long."""
        self.more = False
        if self._parts:  # a large frame arriving read by read: join once, when it is whole
            self._parts.append(data)
            if sum(len(p) for p in self._parts) < self._need:
                return b""
            buf = b"".join(self._parts)
            self._parts = []
            pos = 0
        elif not data:
            buf, pos = self._rest, self._pos
        elif self._rest:
            buf, pos = self._rest[self._pos :] + data, 0
        else:
            buf, pos = data, 0
        self._rest, self._pos = b"", 0
        end = len(buf)
        left = -1 if limit is None else limit
        while end - pos >= 2:
            if left == 0:
                self.more = True
                self._rest, self._pos = buf, pos  # kept whole: no copy per turn
                return b""
            left -= 1
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            start = pos + 2
            if n == 126:
                if end - start < 2:
                    break
                n = buf[start] << 8 | buf[start + 1]  # no slice: this is every delta's length
                start += 2
            elif n == 127:
                if end - start < 8:
                    break
                n = int.from_bytes(buf[start : start + 8], "big")
                start += 8
            if b1 & _MASK:
                start += 4  # a masked frame is websockets' to refuse; we only measure it
            stop = start + n
            if stop > end:
                if stop - pos > _JOIN_LATER:
                    self._parts = [buf[pos:]]
                    self._need = stop - pos
                    return b""
                break
            if self.fast and (b0 == _FAST_TEXT or b0 == _FAST_BINARY) and not b1 & _MASK:  # noqa: SIM109
                on_data(buf[start:stop])
            elif not on_other(buf[pos:stop]):
                return buf[stop:]
            pos = stop
        self._rest = buf[pos:] if pos < end else b""
        return b""

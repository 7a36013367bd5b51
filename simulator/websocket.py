"""One WebSocket connection of the simulator: websockets' sans-I/O protocol on our own transport.

``websockets.server.ServerProtocol`` does the protocol (opening handshake, framing, control
frames, the closing handshake); :class:`WsConnection` is the ``asyncio.Protocol`` that moves its
bytes, so the transport is ours. That is what the simulator needs and the library's asyncio
server does not offer through its public API: many frames written per turn of the loop with one
drain (per-message ``send()`` builds a frame object and drains each time), a TCP reset on
demand (the ``abort`` drop fault), close frames with any code, pings with the exchange's own
payload, and an exchange that answers pings with an empty pong.

The owner (:class:`Hooks`) decides the handshake and gets every text message; it never sees bytes.
"""

from __future__ import annotations

import asyncio
import http
import struct
from typing import Protocol

import orjson
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

# After our close frame, how long the client has to answer it before the TCP connection is reset
# (the asyncio server's default close_timeout).
CLOSE_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 1 << 20  # inbound: commands are small; a larger message is close code 1009


_H2 = struct.Struct("!BB").pack
_H4 = struct.Struct("!BBH").pack
_H10 = struct.Struct("!BBQ").pack


def ws_text_frame(text: str) -> bytes:
    """One final text frame as a server sends it: unmasked, no extension (RFC 6455 §5.2)."""
    p = text.encode()
    n = len(p)
    if n < 126:
        return _H2(0x81, n) + p
    if n < 65_536:
        return _H4(0x81, 126, n) + p
    return _H10(0x81, 127, n) + p


class Hooks(Protocol):
    """What the simulator does with a connection; each hook runs on the event loop."""

    def ws_handshake(self, conn: WsConnection, request: Request) -> Response | None:
        """A response refuses the handshake; None accepts it."""

    def ws_open(self, conn: WsConnection) -> None: ...

    def ws_message(self, conn: WsConnection, message: str | bytes) -> None: ...

    def ws_closed(self, conn: WsConnection) -> None:
        """The TCP connection is gone (also when the handshake was refused)."""

    def ws_empty_pong(self) -> None:
        """A client's ping was answered with an empty pong (the ``pong="empty"`` switch)."""


class _EmptyPongProtocol(ServerProtocol):
    """Answers a client's Ping with an empty Pong, as the exchange may (docs/protocol.md §6),
    instead of echoing it as RFC 6455 asks. ``recv_frame`` is the one undocumented hook of the
    library used here: breaking the RFC on purpose has no public switch."""

    on_ping: Hooks | None = None

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.send_pong(b"")
            if self.on_ping is not None:
                self.on_ping.ws_empty_pong()
            return
        super().recv_frame(frame)


def json_response(protocol: ServerProtocol, status: int, code: str, message: str) -> Response:
    """A handshake refusal with the exchange's JSON error body (``{"code", "message"}``)."""
    resp = protocol.reject(
        http.HTTPStatus(status), orjson.dumps({"code": code, "message": message}).decode()
    )
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = "application/json"
    return resp


class WsConnection(asyncio.Protocol):
    """The I/O shell of one server-side WebSocket connection (see the module docstring)."""

    def __init__(self, hooks: Hooks, empty_pong: bool = False) -> None:
        self.hooks = hooks
        if empty_pong:
            proto = _EmptyPongProtocol(max_size=MAX_MESSAGE_BYTES)
            proto.on_ping = hooks
            self.protocol: ServerProtocol = proto
        else:
            self.protocol = ServerProtocol(max_size=MAX_MESSAGE_BYTES)
        self.transport: asyncio.Transport | None = None
        self._writable = asyncio.Event()  # cleared while the transport's buffer is over its mark
        self._writable.set()
        self._fragments: list[bytes | bytearray | memoryview] = []
        self._fragment_text = True
        self._close_timer: asyncio.TimerHandle | None = None

    # ---- what the owner calls ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN

    def send_texts(self, texts: list[str]) -> None:
        """Write one text frame per string, all at once (nothing is sent once the connection has
        left OPEN).

        The data frames are encoded by :func:`ws_text_frame`, not ``protocol.send_text``: a
        ``Frame`` object per message costs ~10% of the simulator's throughput
        (``python -m bench.simulator_throughput``). That leaves the protocol's outbound state
        right: it tracks fragmentation (we never fragment), extensions (none are negotiated) and
        closing (nothing is written once it leaves OPEN); its own pending bytes (pongs, pings)
        are written first, so frames keep their order."""
        transport = self.transport
        if not self.is_open or transport is None or transport.is_closing():
            return  # closing, or reset by the client and connection_lost not yet run
        self._flush()
        transport.write(b"".join([ws_text_frame(t) for t in texts]))

    @property
    def write_paused(self) -> bool:
        """The client reads slower than we write: the transport is over its high-water mark."""
        return not self._writable.is_set()

    async def drain(self) -> None:
        """Wait while the client reads slower than we write (the transport's high-water mark):
        backpressure holds the writer instead of buffering without bound."""
        await self._writable.wait()

    def ping(self, payload: bytes) -> None:
        if self.is_open:
            self.protocol.send_ping(payload)
            self._flush()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with ``code``; the client has ``CLOSE_TIMEOUT_S`` to
        answer before the connection is reset."""
        if self.is_open:
            self.protocol.send_close(code, reason)
            self._flush()

    def abort(self) -> None:
        """Reset the TCP connection: no close frame (the ``abort`` drop fault)."""
        if self.transport is not None:
            self.transport.abort()

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP server gives a stream transport
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        self._flush()  # automatic answers (pongs, close frames) go first
        for event in events:
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._writable.set()  # a writer waiting in drain() wakes and finds the connection closed
        self.hooks.ws_closed(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ---- internals --------------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        response = self.hooks.ws_handshake(self, request)
        if response is None:
            response = self.protocol.accept(request)
        self.protocol.send_response(response)
        self._flush()
        if self.is_open:
            self.hooks.ws_open(self)

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.BINARY:
            self._fragment_text = frame.opcode is Opcode.TEXT
            self._fragments = [frame.data]
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(frame.data)
        else:
            return  # control frames: the protocol has answered them already
        if not frame.fin:
            return
        data = b"".join(self._fragments)
        self._fragments = []
        if not self._fragment_text:
            self.hooks.ws_message(self, data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(1007, "invalid UTF-8 in a text message")  # RFC 6455 §8.1
            self._flush()
            return
        self.hooks.ws_message(self, text)

    def _flush(self) -> None:
        """Write what the protocol has to send; an empty chunk means "half-close now"."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.protocol.data_to_send()  # discard: nowhere to write it
            return
        chunks = self.protocol.data_to_send()  # one chunk per frame: one write() for them all
        eof = b"" in chunks
        if eof:
            chunks = chunks[: chunks.index(b"")]  # nothing follows the end of the stream
        data = b"".join(chunks)
        if data:
            transport.write(data)
        if eof:
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        if self.protocol.close_expected() and self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(CLOSE_TIMEOUT_S, transport.abort)

"""The asyncio shell shared by the live tap and the replay: a ``websockets`` server that moves
bytes between sockets and ``feed.fanout.Consumer`` objects.

Each connection has a reader (commands in -> ``Consumer.handle``) and a writer (queued frames
out, in order, as text frames like the exchange's). The writer is the only place that awaits the
socket, so a slow consumer only ever delays itself; its queue is bounded by the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from feed.auth import is_loopback, refusal
from feed.fanout import Consumer

log = logging.getLogger("feed")
CONNECTIONS_LOG = logging.getLogger("feed.tap.connections")
"""websockets logs every connection opened and closed at INFO: a thousand actors coming and going
would drown the recorder's own log (and, with stderr on a pipe nobody reads, stall it). Connection
events stay available at DEBUG level by lowering this logger's level."""
CONNECTIONS_LOG.setLevel(logging.WARNING)

SEND_BUFFER_BYTES = 64 * 1024
"""Kernel send buffer per consumer connection (Linux doubles it): about a thousand frames."""

Handler = Callable[[ServerConnection], Awaitable[None]]


BATCH_FRAMES = 256
"""Frames handed to the socket in one write: one syscall instead of one per frame."""

COALESCE_S = 0.0
"""A woken writer yields this long (0 = one event-loop turn) for more frames before writing,
unless a batch is already full: the frames the reader takes meanwhile go out in the same write.
(1 ms saved a little more CPU but tripled the median latency on a loaded machine.)"""


class BatchedConnection(ServerConnection):
    """A ``ServerConnection`` whose pending frames go out in one transport write.

    Why: the writer sends frames in batches (``send_context`` + ``protocol.send_text``), and the
    stock ``send_data`` writes each frame separately, one syscall each: that is most of what a
    consumer costs the recorder's process. The end-of-stream marker (an empty chunk) keeps the
    stock behaviour.
    """

    def send_data(self) -> None:
        chunks = self.protocol.data_to_send()
        if chunks and all(chunks):
            self.transport.write(b"".join(chunks))
            return
        for chunk in chunks:
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                with contextlib.suppress(Exception):
                    self.transport.write_eof()
            else:
                self.transport.close()


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (loopback) -> (host, port); ``ValueError`` says what to pass."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"tap address {address!r} is not HOST:PORT (e.g. 127.0.0.1:8765)"
        ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"tap address {address!r}: port must be 0..65535")
    return host, port


@dataclass(slots=True)
class Listening:
    server: Server
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/trade-api/ws/v2"


async def start_server(address: str, handler: Handler, token: str | None) -> Listening:
    """Listen on ``address``; refuse to listen beyond loopback without a token."""
    host, port = parse_address(address)
    if token is None and not is_loopback(host):
        raise ValueError(
            f"tap address {host} is not loopback: set a token (TAP_TOKEN) so only your actors "
            "can connect, or listen on 127.0.0.1"
        )

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        peer = conn.remote_address[0] if conn.remote_address else ""
        why = refusal(request.headers, request.path, str(peer), token)
        if why is None:
            return None
        return conn.respond(http.HTTPStatus.UNAUTHORIZED, why + "\n")

    server = await serve(
        handler,
        host,
        port,
        process_request=process_request,
        max_size=1 << 20,
        max_queue=64,
        compression=None,
        create_connection=BatchedConnection,
        logger=CONNECTIONS_LOG,
    )
    sock = next(iter(server.sockets))
    return Listening(server, host, sock.getsockname()[1])


def queue_limit(ws: ServerConnection, server_max: int) -> int:
    """The connection's queue bound: ``?max_queue=N`` in the URL may lower the server's (a
    consumer that wants to learn of its lag early), never raise it."""
    query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
    try:
        asked = int(query.get("max_queue", [""])[0])
    except ValueError:
        return server_max
    return max(16, min(asked, server_max))


async def pump(ws: ServerConnection, c: Consumer, on_command: Callable[[], None] | None) -> None:
    """Run one connection until it closes: commands in, queued frames out."""
    ready = asyncio.Event()
    c.wakeup = ready.set
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        # The consumer's queue is the buffer that counts (bounded, and it lags a consumer that
        # stalls); a small kernel send buffer keeps a stalled reader from hiding MBs in the OS.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    async def writer() -> None:
        while True:
            await ready.wait()
            if len(c.queue) < BATCH_FRAMES:
                await asyncio.sleep(COALESCE_S)  # let frames gather: one write, not one each
            ready.clear()
            while c.queue:
                frames = c.take()
                for i in range(0, len(frames), BATCH_FRAMES):
                    async with ws.send_context():  # checks the state, then writes and drains
                        for frame in frames[i : i + BATCH_FRAMES]:
                            ws.protocol.send_text(frame)

    task = asyncio.create_task(writer())
    try:
        async for raw in ws:
            c.handle(raw)
            if c.queue:
                ready.set()
            if on_command is not None:
                on_command()
            if task.done():
                break
    except ConnectionClosed:
        pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await task

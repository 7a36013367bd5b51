"""The reader's fast path over real sockets: every frame once, in order, however it arrives.

A bare TCP server (no websockets on its side, so nothing of the client's library is reused to
check it) does the opening handshake by hand and writes a scripted stream in random-sized pieces:
frames in the same write as the 101 response, pings, fragmented messages between plain ones,
large frames. ``recorder.connection.pump`` must hand over exactly the scripted messages, in order,
and answer each ping; a masked frame from the server still fails the connection as RFC 6455 says.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
import sys
from collections.abc import Awaitable, Callable

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from recorder.connection import RecorderConnection, pump

WAYS: list[str] = []
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def client_opcodes(data: bytes) -> list[int]:
    """Opcodes of the (masked) frames a client sent."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        n, start = data[pos + 1] & 0x7F, pos + 2
        if n == 126:
            n, start = struct.unpack("!H", data[start : start + 2])[0], start + 2
        elif n == 127:
            n, start = struct.unpack("!Q", data[start : start + 8])[0], start + 8
        out.append(data[pos] & 0x0F)
        pos = start + 4 + n
    return out


async def until_close(reader: asyncio.StreamReader) -> bytes:
    """What the client sends until its close frame (or it hangs up, or 10 s pass)."""
    data = b""
    try:
        while 0x8 not in client_opcodes(data):
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    return data


async def handshake(reader: asyncio.StreamReader) -> bytes:
    request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


async def run_client(
    script: Script, fail_after: int | None = None
) -> tuple[list[bytes], BaseException | None]:
    """Serve ``script`` on loopback, connect a RecorderConnection, pump until the end; with
    ``fail_after``, the handler raises ``Stopped`` on that frame (as a stopped writer would)."""
    server = await asyncio.start_server(lambda r, w: script(r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got: list[bytes] = []
    WAYS.clear()

    def handle(raw: bytes) -> None:
        if len(got) == fail_after:
            raise Stopped("writer stopped")
        # called from FrameSplitter.feed: the fast path; from pump: websockets' queue
        WAYS.append("fast" if sys._getframe(1).f_code.co_name == "feed" else "slow")
        got.append(raw)

    error: BaseException | None = None
    try:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}",
            create_connection=RecorderConnection,
            max_size=None,
            compression=None,
            ping_interval=None,
            open_timeout=10,
        )
        try:
            await asyncio.wait_for(pump(ws, handle, asyncio.Event()), 30)  # type: ignore[arg-type]
        except Exception as exc:  # ConnectionClosed at the end, or what the handler raised
            error = exc
    finally:
        server.close()
    return got, error


def after_handshake(stream: bytes) -> Script:
    """A server that shakes hands, lets the client start its reader, sends ``stream`` and waits
    for the client's close."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await handshake(reader))
        await asyncio.sleep(0.05)  # the reader engages the fast path (either way is correct)
        writer.write(stream)
        await writer.drain()
        await until_close(reader)
        writer.close()

    return script


class Stopped(Exception):
    pass


@pytest.mark.parametrize("seed", range(6))
def test_every_message_once_in_order(seed: int) -> None:
    """Random writes of 1 to 9,000 bytes; odd seeds write the whole stream at once, so a read
    holds more frames than one turn handles."""
    rng = random.Random(seed)
    biggest = 9000 if seed % 2 == 0 else 1 << 30
    expected: list[bytes] = []
    stream = b""
    pings = 0
    early = frame(1, b'{"early":1}')  # in the same write as the 101: websockets has it first
    expected.append(b'{"early":1}')
    for i in range(400):
        r = rng.random()
        if r < 0.8:
            body = b'{"n":%d,"pad":"%s"}' % (i, b"x" * rng.choice([0, 5, 120, 130, 70000]))
            stream += frame(rng.choice([1, 2]), body)
            expected.append(body)
        elif r < 0.9:
            parts = [b"part%d-%d;" % (i, k) for k in range(rng.randint(2, 4))]
            for k, p in enumerate(parts):
                stream += frame(1 if k == 0 else 0, p, fin=k == len(parts) - 1)
                if rng.random() < 0.5:
                    stream += frame(9, b"ping-in-fragments")
                    pings += 1
            expected.append(b"".join(parts))
        else:
            stream += frame(9, b"p%d" % i)
            pings += 1
    stream += frame(8, struct.pack("!H", 1000))
    pongs: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await handshake(reader) + early)
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, biggest)
            writer.write(stream[pos : pos + step])
            pos += step
            await writer.drain()
            if rng.random() < 0.2:
                await asyncio.sleep(0)
        data = await until_close(reader)  # the client's pongs, then its close answer
        pongs.append(client_opcodes(data).count(0xA))
        writer.close()

    got, error = asyncio.run(run_client(script))
    fast = sum(1 for way in WAYS if way == "fast")
    assert 0 < fast < len(got)  # both ways were taken
    assert isinstance(error, ConnectionClosed) and error.rcvd is not None
    assert error.rcvd.code == 1000
    assert got == expected
    assert pongs == [pings]  # every ping answered, once


def test_a_masked_frame_from_the_server_still_fails_the_connection() -> None:
    stream = frame(1, b"one") + frame(1, b"masked", mask=True) + frame(1, b"never")
    got, error = asyncio.run(run_client(after_handshake(stream)))
    assert got == [b"one"]
    assert isinstance(error, ConnectionClosed)
    assert error.sent is not None and error.sent.code == 1002  # protocol error


def test_what_the_handler_raises_ends_the_pump() -> None:
    """A failing handler (say, the writer has stopped) must stop the reading, not be lost in
    asyncio's transport callbacks."""
    stream = b"".join(frame(1, b"%d" % i) for i in range(10))
    got, error = asyncio.run(run_client(after_handshake(stream), fail_after=3))
    assert isinstance(error, Stopped)
    assert got == [b"0", b"1", b"2"]


def test_frames_read_before_the_connection_drops_are_all_handled() -> None:
    """Thousands of frames in one write, then the server hangs up without a close frame: every
    frame read before the end is handled (none left behind in a later turn), then the end."""
    bodies = [b'{"n":%d}' % i for i in range(5000)]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await handshake(reader))
        await asyncio.sleep(0.05)
        writer.write(b"".join(frame(1, b) for b in bodies))
        await writer.drain()
        writer.transport.abort()

    got, error = asyncio.run(run_client(script))
    assert got == bodies
    assert isinstance(error, ConnectionClosed) and error.rcvd is None

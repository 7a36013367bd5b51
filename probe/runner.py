"""The probe's asyncio shell: runs :func:`probe.script.script` against an exchange, records frames.

Thin on purpose: it executes one action at a time with a deadline, paces commands and requests,
checks every action against the allow-list before it leaves, and appends every frame (text, ping,
pong, close) and every REST exchange to the transcript. Everything it decides is in the script;
everything it concludes is in :mod:`probe.answers`.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, assert_never

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode

from probe.script import (
    MAX_ACTIONS,
    Action,
    Close,
    Command,
    Listen,
    NotAllowed,
    Ping,
    Plan,
    RestGet,
    RestResult,
    Wait,
    check_allowed,
    script,
)
from probe.transcript import Transcript
from recorder.auth import Signer


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RunSettings:
    """Where and how hard to probe. Defaults keep the run inside the exchange's documented
    limits: REST Basic tier is 20 reads/s (we do <= 10/s); commands at <= 4/s per connection."""

    ws_url: str
    rest_url: str
    signer: Signer | None
    max_seconds: float = 60.0  # the whole run, connect to close
    step_timeout_s: float = 5.0  # one command's answer, one REST call
    command_interval_s: float = 0.25
    rest_interval_s: float = 0.1
    listen_s: float = 20.0
    linger_s: float = 1.0
    young_retry_s: float = 1.0
    max_frames: int = 5_000  # frames kept in the report beyond this are counted, not stored


class _RecordingConnection(ClientConnection):
    """A client connection that reports ping and pong frames (the library hides them)."""

    on_control: Any = None

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode in (Opcode.PING, Opcode.PONG):
            cb = self.on_control
            if cb is not None:
                cb(event.opcode, bytes(event.data))
        super().process_event(event)


@dataclass
class ProbeRun:
    """The result of one run: the transcript plus what the shell itself observed."""

    transcript: Transcript = field(default_factory=Transcript)
    actions: int = 0
    dropped_frames: int = 0
    stopped_early: str | None = None  # why the script did not run to its end
    handshake_status: int | None = None


class _Shell:
    def __init__(self, settings: RunSettings) -> None:
        self.s = settings
        self.run = ProbeRun()
        self.t = self.run.transcript
        self.step = "start"
        self.ws: _RecordingConnection | None = None
        self.frames: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.last_command = 0.0
        self.last_rest = 0.0
        self.deadline = 0.0
        self.loop = asyncio.get_running_loop()
        self.closed = False

    # ---- recording -------------------------------------------------------------------------

    def _record(self, direction: str, kind: str, **fields: Any) -> None:
        if len(self.t.entries) >= self.s.max_frames and kind == "ws" and direction == "in":
            self.run.dropped_frames += 1
            return
        self.t.add(now_ms(), self.step, direction, kind, **fields)

    def _on_control(self, opcode: Opcode, data: bytes) -> None:
        kind = "ping" if opcode is Opcode.PING else "pong"
        self._record("in", kind, data=data.decode("utf-8", "replace"), data_hex=data.hex())
        self.changed.set()

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for msg in ws:
                text = msg if isinstance(msg, str) else msg.decode("utf-8", "replace")
                self._record("in", "ws", text=text)
                try:
                    obj = orjson.loads(text)
                except orjson.JSONDecodeError:
                    obj = None
                self.frames.append(obj if isinstance(obj, dict) else {})
                self.changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._record_close(ws)
            self.changed.set()

    def _record_close(self, ws: ClientConnection) -> None:
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None and not any(e["kind"] == "close" for e in self.t.entries):
            self._record("in", "close", code=int(rcvd.code), reason=rcvd.reason)

    # ---- waiting ---------------------------------------------------------------------------

    def _remaining(self) -> float:
        return self.deadline - self.loop.time()

    async def _wait_until(self, pred: Any, timeout: float) -> bool:
        end = self.loop.time() + min(timeout, max(0.0, self._remaining()))
        while True:
            self.changed.clear()
            if pred():
                return True
            left = end - self.loop.time()
            if left <= 0 or self.closed:
                return bool(pred())
            try:
                async with asyncio.timeout(left):
                    await self.changed.wait()
            except TimeoutError:
                return bool(pred())

    async def _pace(self, last: float, interval: float) -> None:
        wait = last + interval - self.loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    # ---- actions ---------------------------------------------------------------------------

    async def _connect(self) -> bool:
        path = urllib.parse.urlsplit(self.s.ws_url).path
        headers = self.s.signer.headers("GET", path) if self.s.signer else {}
        try:
            ws = await connect(
                self.s.ws_url,
                additional_headers=headers,
                create_connection=_RecordingConnection,
                open_timeout=min(self.s.step_timeout_s, max(0.1, self._remaining())),
                ping_interval=None,  # our only ping is the scripted one: its pong is a question
                max_size=2**22,
                max_queue=None,
                compression=None,
            )
        except InvalidStatus as exc:
            self.run.handshake_status = exc.response.status_code
            self._record("in", "note", text=f"handshake refused: HTTP {exc.response.status_code}")
            return False
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self._record("in", "note", text=f"connect failed: {type(exc).__name__}: {exc}")
            return False
        assert isinstance(ws, _RecordingConnection)
        ws.on_control = self._on_control
        self.ws = ws
        self.reader = asyncio.create_task(self._read(ws))
        return True

    async def _command(self, a: Command) -> list[dict[str, Any]]:
        await self._pace(self.last_command, self.s.command_interval_s)
        self.last_command = self.loop.time()
        start = len(self.frames)
        text = orjson.dumps(a.body).decode()
        self._record("out", "ws", text=text)
        assert self.ws is not None
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            return []
        done = await self._wait_until(lambda: a.done(self.frames[start:]), self.s.step_timeout_s)
        if not done:
            self._record("in", "note", text=f"no complete answer within {self.s.step_timeout_s} s")
        elif a.linger_s > 0:
            await self._wait_until(lambda: False, a.linger_s)
        return self.frames[start:]

    async def _ping(self, a: Ping) -> bytes | None:
        assert self.ws is not None
        start = len(self.t.entries)
        self._record("out", "ping", data=a.data.decode("utf-8", "replace"), data_hex=a.data.hex())
        try:
            await self.ws.ping(a.data)
        except ConnectionClosed:
            return None

        def pong() -> bool:
            return any(e["kind"] == "pong" for e in self.t.entries[start:])

        await self._wait_until(pong, self.s.step_timeout_s)
        got = next((e for e in self.t.entries[start:] if e["kind"] == "pong"), None)
        return bytes.fromhex(got["data_hex"]) if got else None

    async def _listen(self, a: Listen) -> list[dict[str, Any]]:
        start = len(self.frames)
        await self._wait_until(lambda: a.done(self.frames[start:]), a.max_s)
        return self.frames[start:]

    async def _close(self) -> None:
        if self.ws is None:
            return
        try:
            async with asyncio.timeout(max(1.0, min(5.0, self._remaining()))):
                await self.ws.close()
        except TimeoutError:
            self._record("in", "note", text="close handshake timed out")
        if self.reader is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self.reader  # cancelled with us at the deadline
            except TimeoutError:
                pass
        self._record_close(self.ws)

    def _rest_blocking(self, a: RestGet) -> tuple[int | None, str, str | None, int]:
        url = self.s.rest_url.rstrip("/") + a.path
        if a.params:
            url += "?" + urllib.parse.urlencode(a.params, safe=",")
        headers = {"Accept": "application/json"}
        if self.s.signer is not None:
            headers.update(self.s.signer.headers("GET", urllib.parse.urlsplit(url).path))
        req = urllib.request.Request(url, headers=headers)
        sent = now_ms()
        try:
            with urllib.request.urlopen(req, timeout=self.s.step_timeout_s) as resp:
                return (
                    resp.status,
                    resp.read().decode("utf-8", "replace"),
                    resp.headers.get("Date"),
                    sent,
                )
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace") if exc.fp is not None else ""
            return exc.code, body, exc.headers.get("Date") if exc.headers else None, sent
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None, sent

    async def _rest(self, a: RestGet) -> RestResult:
        await self._pace(self.last_rest, self.s.rest_interval_s)
        self.last_rest = self.loop.time()
        query = urllib.parse.urlencode(a.params, safe=",")
        self._record("out", "rest", method="GET", path=a.path, query=query)
        status, body, date, sent = await asyncio.to_thread(self._rest_blocking, a)
        self._record("in", "rest", path=a.path, status=status, body=body, date=date, sent_ms=sent)
        parsed: Any = None
        if status is not None:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                parsed = None
        return RestResult(status, parsed)

    async def execute(self, action: Action) -> Any:
        self.step = action.step
        match action:
            case RestGet():
                return await self._rest(action)
            case Close():
                await self._close()
                return None
        if self.ws is None and not self.closed and not await self._connect():
            self.closed = True
        if self.ws is None or self.closed:
            raise _Stop("the WebSocket connection is closed")
        match action:  # the rest need the WebSocket
            case Command():
                return await self._command(action)
            case Ping():
                return await self._ping(action)
            case Wait():
                await self._wait_until(lambda: False, action.seconds)
                return None
            case Listen():
                return await self._listen(action)
            case other:
                assert_never(other)

    async def drive(self, gen: Generator[Action, Any, None]) -> ProbeRun:
        self.deadline = self.loop.time() + self.s.max_seconds
        try:
            action = next(gen)
            while True:
                check_allowed(action)
                self.run.actions += 1
                if self.run.actions > MAX_ACTIONS:
                    raise _Stop(f"more than {MAX_ACTIONS} actions")
                if self._remaining() <= 0 and not isinstance(action, Close):
                    raise _Stop(f"the {self.s.max_seconds:g} s budget ran out")
                result = await self.execute(action)
                action = gen.send(result)
        except StopIteration:
            pass
        except (_Stop, NotAllowed) as exc:
            self.run.stopped_early = str(exc)
            self.step = "stop"
            self._record("in", "note", text=f"stopped: {exc}")
            gen.close()
            await self._close()
        return self.run


class _Stop(Exception):
    pass


async def run_probe(settings: RunSettings) -> ProbeRun:
    """Run the fixed script once against ``settings``' exchange; never raises for what the
    exchange does (a refused handshake or a dead connection ends the run early, recorded)."""
    shell = _Shell(settings)
    plan = Plan(
        now_s=int(time.time()),
        listen_s=settings.listen_s,
        linger_s=settings.linger_s,
        young_retry_s=settings.young_retry_s,
    )
    return await shell.drive(script(plan))

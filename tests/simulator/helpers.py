"""Plain-client helpers for simulator tests: signing, a sync WebSocket client, REST GETs.

Deliberately independent of the recorder: the same code a third party would write from
docs/protocol.md (cryptography for RSA-PSS, websockets' sync client, urllib).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from websockets.sync.client import ClientConnection, connect

from simulator.market import GenConfig
from simulator.server import SimConfig

WS_PATH = "/trade-api/ws/v2"
WAIT = 10.0  # safety net against hangs only; no test asserts on time


def quiet_config(**kw: Any) -> SimConfig:
    """A simulator whose clock moves only when the test says so, with no generated markets."""
    gen = GenConfig(create_rate=0, initial_markets=0, delta_rate=0, burst_rate=0)
    kw.setdefault("autostart", False)
    kw.setdefault("start_time", 1_767_225_600.0)  # 2026-01-01T00:00:00Z
    return SimConfig(generator=gen, **kw)


def load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def sign(key: rsa.RSAPrivateKey, ts: str, method: str, path: str) -> str:
    msg = (ts + method + path.split("?", 1)[0]).encode()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    return base64.b64encode(key.sign(msg, pss, hashes.SHA256())).decode()


def auth_headers(
    key_path: Path, key_id: str, ts_ms: int | None = None, path: str = WS_PATH
) -> dict[str, str]:
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    return {
        "KALSHI-ACCESS-KEY": key_id,
        "KALSHI-ACCESS-TIMESTAMP": ts,
        "KALSHI-ACCESS-SIGNATURE": sign(load_key(key_path), ts, "GET", path),
    }


class Client:
    """A bare WebSocket client speaking the documented command envelope."""

    def __init__(self, sim: Any, headers: dict[str, str] | None = None) -> None:
        if headers is None:
            headers = auth_headers(sim.private_key_path, sim.key_id)
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            # unbounded queue: a bounded one stops reading when full, and closing then waits
            # for the close timeout behind unread frames
            connect(sim.ws_url, additional_headers=headers, max_queue=None)
        )
        self.next_id = 1
        self.frames: list[str] = []  # every text frame received, verbatim

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, cmd: str, params: dict[str, Any] | None = None, **extra: Any) -> int:
        cid = self.next_id
        self.next_id += 1
        obj: dict[str, Any] = {"id": cid, "cmd": cmd}
        if params is not None:
            obj["params"] = params
        obj.update(extra)
        self.ws.send(json.dumps(obj))
        return cid

    def send_raw(self, text: str) -> None:
        self.ws.send(text)

    def recv_text(self, timeout: float = WAIT) -> str:
        text = self.ws.recv(timeout=timeout)
        assert isinstance(text, str)
        self.frames.append(text)
        return text

    def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        obj = json.loads(self.recv_text(timeout))
        assert isinstance(obj, dict)
        return obj

    def recv_n(self, n: int) -> list[dict[str, Any]]:
        return [self.recv() for _ in range(n)]

    def until(self, pred: Any, limit: int = 10_000) -> list[dict[str, Any]]:
        """Receive until ``pred(msg)`` holds; return everything received including that one."""
        out = []
        for _ in range(limit):
            m = self.recv()
            out.append(m)
            if pred(m):
                return out
        raise AssertionError("predicate never satisfied")

    def subscribe(self, channels: list[str], **params: Any) -> dict[str, Any]:
        cid = self.send("subscribe", {"channels": channels, **params})
        reply = self.recv()
        assert reply.get("id") == cid, reply
        return reply


def http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

"""The /metrics and /healthz endpoint over a real socket (port 0: the OS picks a free one)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from recorder.metrics import Metrics, serve


def _get(url: str) -> tuple[int, list[str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get_all("Content-Type") or [], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get_all("Content-Type") or [], e.read()


def test_metrics_healthz_and_unknown_paths() -> None:
    health = [(True, "ok\n")]

    async def main() -> list[tuple[int, list[str], bytes]]:
        server = await serve(
            0,
            Metrics(frames=lambda: 7, malformed=lambda: 2, reconnects=lambda: 3),
            lambda: health[0],
        )
        port = next(iter(server.sockets)).getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        out = [await loop.run_in_executor(None, _get, base + p) for p in ("/metrics", "/healthz")]
        health[0] = (False, "writer failed\n")
        out += [await loop.run_in_executor(None, _get, base + p) for p in ("/healthz", "/nope")]
        server.close()
        await server.wait_closed()
        return out

    (m_status, m_type, m_body), ok, sick, missing = asyncio.run(main())
    assert m_status == 200 and len(m_type) == 1 and m_type[0].startswith("text/plain; version=")
    assert b"recorder_frames_received_total 7.0" in m_body
    assert b"recorder_frames_malformed_total 2.0" in m_body
    assert b"recorder_reconnects_total 3.0" in m_body
    assert ok[0] == 200 and ok[2] == b"ok\n"
    assert sick[0] == 503 and sick[2] == b"writer failed\n"
    assert missing[0] == 404

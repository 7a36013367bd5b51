"""Prometheus metrics, a /healthz endpoint and the periodic status line.

Each ``Recorder`` gets its own registry, so several recorders in one process (tests) do not clash.
The HTTP endpoint runs on the event loop, on 127.0.0.1, with websockets' HTTP parser (no thread,
no extra dependency).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from http import HTTPStatus

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Metric,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.http11 import Request, Response


class _ReadAtScrape(Collector):
    """Counters whose owner already keeps the count as a plain int, read at scrape time.

    The session log counts frames, each connection's core counts gaps, error replies and epochs:
    a prometheus ``Counter`` beside them would be a second count of the same fact (and takes a
    lock on every ``inc()``, too much for the per-frame hot path)."""

    def __init__(self, counters: tuple[tuple[str, str, Callable[[], int]], ...]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self.counters:
            yield CounterMetricFamily(name, documentation, value=read())


_NONE: Callable[[], int] = lambda: 0  # noqa: E731 - a metric no recorder feeds (tests)


class Metrics:
    """The recorder's metrics (documented one by one in deploy/RUNBOOK.md)."""

    def __init__(
        self,
        frames: Callable[[], int] = _NONE,
        malformed: Callable[[], int] = _NONE,
        gaps: Callable[[], int] = _NONE,
        error_replies: Callable[[], int] = _NONE,
        reconnects: Callable[[], int] = _NONE,
    ) -> None:
        r = self.registry = CollectorRegistry()
        r.register(
            _ReadAtScrape(
                (
                    ("recorder_frames_received", "Frames received from the exchange", frames),
                    (
                        "recorder_frames_malformed",
                        "Frames that did not parse (kept verbatim)",
                        malformed,
                    ),
                    ("recorder_seq_gaps", "Forward sequence gaps detected", gaps),
                    ("recorder_error_replies", "Error replies from the exchange", error_replies),
                    ("recorder_reconnects", "Successful reconnects", reconnects),
                )
            )
        )
        counter = partial(Counter, registry=r)
        gauge = partial(Gauge, registry=r)
        self.lifecycle = counter("recorder_lifecycle_events", "market_lifecycle_v2 events received")
        self.commands = counter("recorder_commands_sent", "Commands sent to the exchange")
        self.resyncs = counter("recorder_resyncs", "Re-snapshot requests sent")
        self.anomalies = counter("recorder_book_anomalies", "Impossible book states seen")
        self.joined = gauge("recorder_markets_joined", "Markets currently recorded")
        self.queue_depth = gauge(
            "recorder_writer_queue_depth", "Batches waiting for the disk writer"
        )
        self.pending_rows = gauge(
            "recorder_writer_pending_rows", "Rows not yet handed to the writer thread"
        )
        self.bytes_written = gauge("recorder_bytes_written", "Bytes written to live files")
        self.segments = gauge("recorder_segments_sealed", "Segments sealed this session")
        self.last_lifecycle = gauge(
            "recorder_last_lifecycle_timestamp_seconds", "Unix time of the last lifecycle message"
        )
        self.connected = gauge("recorder_connections_up", "Connections currently open")
        self.disk_free = gauge(
            "recorder_data_dir_free_bytes", "Free bytes on the data directory's disk"
        )


_HTTP_LOG = logging.getLogger("recorder.metrics.http")
_HTTP_LOG.setLevel(logging.WARNING)  # websockets logs every answered request at INFO: scrapes


async def serve(port: int, metrics: Metrics, healthy: Callable[[], tuple[bool, str]]) -> Server:
    """Serve ``/metrics`` and ``/healthz`` on 127.0.0.1:port (0: any free port).

    websockets (already ours for the exchange) parses the HTTP requests: every request is
    answered in ``process_request``, so no WebSocket is ever opened here.
    """

    def answer(conn: ServerConnection, request: Request) -> Response:
        if request.path.startswith("/metrics"):
            response = conn.respond(HTTPStatus.OK, generate_latest(metrics.registry).decode())
            del response.headers["Content-Type"]  # a multi-dict: replace, do not add
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response
        if request.path.startswith("/healthz"):
            ok, why = healthy()
            return conn.respond(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, why)
        return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")

    async def never(ws: ServerConnection) -> None:  # pragma: no cover - process_request answers
        await ws.close()

    return await ws_serve(never, "127.0.0.1", port, process_request=answer, logger=_HTTP_LOG)


class RateMeter:
    """Messages per second between two status lines."""

    def __init__(self) -> None:
        self.last_t = time.monotonic()
        self.last_n = 0

    def rate(self, n: int) -> float:
        now = time.monotonic()
        dt = max(now - self.last_t, 1e-9)
        r = (n - self.last_n) / dt
        self.last_t, self.last_n = now, n
        return r

"""Prometheus metrics, a /healthz endpoint and the periodic status line.

Each ``Recorder`` gets its own registry, so several recorders in one process (tests) do not clash.
The HTTP endpoint is a tiny asyncio server on 127.0.0.1 (no thread, no extra dependency beyond
prometheus-client's text exposition).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Metric, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class _LogCounters(Collector):
    """Per-frame counters read from the session log at scrape time: a prometheus ``Counter``
    takes a lock on every ``inc()``, too much for the per-frame hot path."""

    def __init__(self, source: Callable[[], tuple[int, int]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        frames, malformed = self.source()
        yield CounterMetricFamily(
            "recorder_frames_received", "Frames received from the exchange", value=frames
        )
        yield CounterMetricFamily(
            "recorder_frames_malformed",
            "Frames that did not parse (kept verbatim)",
            value=malformed,
        )


class Metrics:
    """The recorder's metrics (documented one by one in deploy/RUNBOOK.md)."""

    def __init__(self, log_counts: Callable[[], tuple[int, int]] = lambda: (0, 0)) -> None:
        r = self.registry = CollectorRegistry()
        r.register(_LogCounters(log_counts))
        self.lifecycle = Counter(
            "recorder_lifecycle_events", "market_lifecycle_v2 events received", registry=r
        )
        self.commands = Counter(
            "recorder_commands_sent", "Commands sent to the exchange", registry=r
        )
        self.errors = Counter(
            "recorder_error_replies", "error replies from the exchange", registry=r
        )
        self.gaps = Counter("recorder_seq_gaps", "Forward sequence gaps detected", registry=r)
        self.resyncs = Counter("recorder_resyncs", "Re-snapshot requests sent", registry=r)
        self.anomalies = Counter(
            "recorder_book_anomalies", "Impossible book states seen", registry=r
        )
        self.reconnects = Counter("recorder_reconnects", "Successful reconnects", registry=r)
        self.joined = Gauge("recorder_markets_joined", "Markets currently recorded", registry=r)
        self.queue_depth = Gauge(
            "recorder_writer_queue_depth", "Batches waiting for the disk writer", registry=r
        )
        self.pending_rows = Gauge(
            "recorder_writer_pending_rows", "Rows not yet handed to the writer thread", registry=r
        )
        self.bytes_written = Gauge(
            "recorder_bytes_written", "Bytes written to live files", registry=r
        )
        self.segments = Gauge(
            "recorder_segments_sealed", "Segments sealed this session", registry=r
        )
        self.last_lifecycle = Gauge(
            "recorder_last_lifecycle_timestamp_seconds",
            "Unix time of the last lifecycle message",
            registry=r,
        )
        self.connected = Gauge("recorder_connections_up", "Connections currently open", registry=r)
        self.disk_free = Gauge(
            "recorder_data_dir_free_bytes", "Free bytes on the data directory's disk", registry=r
        )


async def serve(
    port: int, metrics: Metrics, healthy: Callable[[], tuple[bool, str]]
) -> asyncio.Server:
    """Serve ``/metrics`` and ``/healthz`` on 127.0.0.1:port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split(b" ")[1] if len(line.split(b" ")) > 1 else b"/"
            if path.startswith(b"/metrics"):
                body, status, ctype = (
                    generate_latest(metrics.registry),
                    "200 OK",
                    "text/plain; version=0.0.4",
                )
            elif path.startswith(b"/healthz"):
                ok, why = healthy()
                body = why.encode()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype = "text/plain"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


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

"""The recorder process: one session, connections, lifecycle decisions, writer, status, shutdown.

Flow of a run: seal crash leftovers -> new session id -> session_start record -> connections
(connection 0 also carries ``market_lifecycle_v2``) -> ``created`` joins a market (its book is
subscribed on the connection its ticker hashes to), ``determined`` leaves it -> on SIGINT/SIGTERM
or ``--duration``: markets left ("shutdown"), session_end, flush, seal, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import sys
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

import orjson

from feed.tap import TapHandle, start_tap
from recorder import __version__
from recorder.auth import Signer
from recorder.config import Settings
from recorder.connection import AuthRejected, BookConnection, woken
from recorder.connection_core import LifecycleEvent
from recorder.lifecycle import Action, Join, Leave, LifecycleRules, Skip
from recorder.metrics import Metrics, RateMeter, serve
from recorder.reconcile import ReconcileQueries
from recorder.rest import RestClient, RestError
from recorder.restart import previous_session
from recorder.selection import MarketFilter
from recorder.session import SessionLog, new_session_id
from recorder.writer import SegmentWriter, WriterOptions
from schemas.decisions import (
    DecisionPayload,
    EndReason,
    Reconciled,
    ReconcileFailed,
    Recovered,
    SessionEnd,
    SessionStart,
    WriterBacklog,
)

log = logging.getLogger("recorder")


class FatalError(Exception):
    """The run cannot go on; the message says what to do. Exit code in ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RunSummary:
    session_id: int
    seconds: float
    frames: int
    malformed: int
    commands: int
    decisions: dict[str, int]
    markets_joined: int
    markets_left: int
    reconnects: int
    gaps: int
    segments: list[Path] = field(default_factory=list)
    end_reason: str = ""

    def render(self) -> str:
        lines = [
            f"session {self.session_id}: {self.seconds:.1f}s, end: {self.end_reason}",
            f"  frames received   {self.frames:>10,}  (malformed kept: {self.malformed:,})",
            f"  commands sent     {self.commands:>10,}",
            f"  markets joined    {self.markets_joined:>10,}  left: {self.markets_left:,}",
            f"  reconnects        {self.reconnects:>10,}  seq gaps: {self.gaps:,}",
            f"  sealed segments   {len(self.segments):>10,}",
        ]
        lines += [f"    {p}" for p in self.segments[:10]]
        if len(self.segments) > 10:
            lines.append(f"    ... and {len(self.segments) - 10} more")
        return "\n".join(lines)


class Recorder:
    """Wires the sans-I/O core to the network and the disk for one session."""

    def __init__(
        self, settings: Settings, signer: Signer, recovery: Recovered | None = None
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.session_id = new_session_id()
        self.metrics = Metrics(
            frames=lambda: self.log.frames_in,
            malformed=lambda: self.log.malformed,
            gaps=lambda: self.gaps,
            error_replies=lambda: sum(c.core.error_replies for c in self.conns),
            reconnects=lambda: self.reconnects,
        )
        self.writer = SegmentWriter(
            settings.data_dir,
            self.session_id,
            WriterOptions(
                flush_interval=settings.flush_interval_s,
                fsync_interval=settings.fsync_interval_s,
                roll_seconds=settings.roll_seconds,
                roll_bytes=settings.roll_bytes,
                disk_limit_bytes=settings.disk_limit_bytes,
            ),
        )
        self.log = SessionLog(self.session_id, self.writer)
        self.filter = MarketFilter(
            include=settings.include,
            exclude=settings.exclude,
            shard=settings.shard,
            include_mve=settings.include_mve,
        )
        self.rules = LifecycleRules(
            self.filter,
            left_memory_s=settings.left_memory_s,
            left_forget_s=settings.left_forget_s,
        )
        ws_url, rest_url = settings.endpoints
        self.rest = RestClient(rest_url, signer)
        self.queries = ReconcileQueries(self.rest, settings.include_mve)
        self.conns = [
            BookConnection(
                i,
                ws_url,
                signer,
                settings,
                self.log,
                self.metrics,
                self.on_lifecycle,
                self.on_lifecycle_live,
            )
            for i in range(max(1, settings.connections))
        ]
        self.started_wall_ns = time.time_ns()
        self._reconcile_lock = asyncio.Lock()
        self._aux: set[asyncio.Task[None]] = set()
        self.stop_event = asyncio.Event()
        self.end_reason = EndReason.STOPPED
        self.joined_total = 0
        self.left_total = 0
        self.fatal: FatalError | None = None
        self.recovery = recovery
        self.started = time.monotonic()
        self.tap: TapHandle | None = None

    # ----------------------------------------------------------------- decisions
    @property
    def gaps(self) -> int:
        """Forward seq gaps over every connection (metrics, status line, run summary)."""
        return sum(c.core.gaps for c in self.conns)

    @property
    def reconnects(self) -> int:
        """Reconnects over every connection (metrics, status line, run summary)."""
        return sum(c.core.reconnects for c in self.conns)

    def conn_for(self, ticker: str) -> BookConnection:
        n = len(self.conns)
        return self.conns[zlib.crc32(b"conn:" + ticker.encode()) % n] if n > 1 else self.conns[0]

    def decide(self, d: DecisionPayload, market_ticker: str | None = None) -> None:
        """Write a session-level decision record (connection decisions carry their columns)."""
        self.log.decide(d.KIND, d.payload(), market_ticker=market_ticker)

    def apply(self, actions: Iterable[Action]) -> None:
        for a in actions:
            self.decide(a.record(), market_ticker=a.ticker)
            match a:
                case Join():
                    self.joined_total += 1
                    self.conn_for(a.ticker).want(a.ticker)
                case Leave():
                    self.left_total += 1
                    self.conn_for(a.ticker).unwant(a.ticker)
                case Skip():
                    pass
                case _:
                    assert_never(a)
        self.metrics.joined.set(len(self.rules.joined))

    def on_lifecycle(self, ev: LifecycleEvent, now_ns: int) -> None:
        """A lifecycle notice (only ticker and event type are needed to act on it)."""
        self.metrics.lifecycle.inc()
        self.metrics.last_lifecycle.set(now_ns / 1e9)
        if not self.settings.lifecycle_mode:
            return  # REST discovery mode: lifecycle events are recorded, not acted on
        self.apply(self.rules.on_event(ev.ticker, ev.event_type, ev.fields, now_ns))

    def on_lifecycle_live(self, conn: BookConnection, epoch: int) -> None:
        """The lifecycle feed is subscribed again after a reconnect: what was missed meanwhile
        is asked of REST now (events from here on arrive on the feed)."""
        if epoch > 1 and self.settings.lifecycle_mode:
            task = asyncio.get_running_loop().create_task(self.reconcile_until_done("reconnect"))
            self._aux.add(task)
            task.add_done_callback(self._aux.discard)

    def clock_offset_ns(self) -> int:
        """The exchange's clock minus ours, when measurably different: the REST ``Date`` header
        has whole seconds, so offsets under a second are taken as zero (not noise)."""
        offset = self.rest.clock_offset_ns or 0
        return offset if abs(offset) >= 1_000_000_000 else 0

    def anchor_ns(self) -> int:
        """Where missed markets are looked for from, in the exchange's clock: the session start
        less the clock-skew margin (plus the measured offset of the exchange's clock)."""
        margin = int(self.settings.clock_skew_margin_s * 1e9)
        return self.started_wall_ns + self.clock_offset_ns() - margin

    async def reconcile(self, trigger: str) -> None:
        """One REST reconciliation pass (raises ``RestError``; then nothing was changed)."""
        async with self._reconcile_lock:
            before = self.rest.requests
            anchor = self.anchor_ns()
            joined = sorted(self.rules.joined)
            markets = await self.queries.created_since(anchor // 1_000_000_000)
            known = {m.get("ticker") for m in markets}
            markets += await self.queries.status_of(t for t in joined if t not in known)
            # Anchor again: the first response may have measured the exchange's clock.
            anchor = min(anchor, self.anchor_ns())
            now_exchange = time.time_ns() + self.clock_offset_ns()
            self.rules.observe_time(time.time_ns())
            actions = self.rules.reconcile(markets, now_exchange, anchor)
            self.decide(
                Reconciled(
                    joined=[a.ticker for a in actions if isinstance(a, Join)],
                    left=[a.ticker for a in actions if isinstance(a, Leave)],
                    trigger=trigger,
                    anchor_ms=anchor // 1_000_000,
                    markets=len(markets),
                    requests=self.rest.requests - before,
                    fallbacks=list(self.queries.fallbacks) or None,
                )
            )
            self.apply(actions)

    async def reconcile_until_done(self, trigger: str) -> None:
        """A pass that keeps retrying (with backoff) until it succeeds or the run stops: a
        failed REST call never makes the recorder leave a market, nor skip a pass."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                await self.reconcile(trigger)
                return
            except RestError as exc:
                self.decide(ReconcileFailed(trigger=trigger, error=str(exc), retry_in_s=delay))
                log.warning("reconciliation (%s) failed: %s; retry in %.0fs", trigger, exc, delay)
            await woken(self.stop_event, delay)
            delay = min(delay * 2, max(1.0, self.settings.reconcile_interval_s or 60.0))

    async def reconcile_loop(self) -> None:
        """Periodic reconciliation on a live connection: a lifecycle notice lost on a live
        connection is otherwise never recovered (issue 11)."""
        interval = self.settings.reconcile_interval_s
        if interval <= 0 or not self.settings.lifecycle_mode:
            return
        while not self.stop_event.is_set():
            if await woken(self.stop_event, interval):
                return
            await self.reconcile_until_done("periodic")

    async def open_markets_at_start(self) -> None:
        """List the markets open at start once: ``--adopt-open-markets`` joins them (marked
        mid-lifecycle); otherwise each is recorded as skipped ``already_open``, so coverage
        reports tell "skipped at start" from "never seen". Without the flag a failed listing only
        costs those records (warned); with it the run cannot do what was asked (exit 2)."""
        adopt = self.settings.adopt_open_markets
        try:
            markets = await self.rest.list_markets(status="open")
        except RestError as exc:
            if adopt:
                raise FatalError(f"--adopt-open-markets: {exc}; check --rest-url", 2) from None
            log.warning(
                "could not list the markets open at start (not recorded as skipped): %s", exc
            )
            return
        self.rules.observe_time(time.time_ns())
        self.apply(self.rules.adopt(markets) if adopt else self.rules.skip_open_at_start(markets))

    async def rest_discovery(self) -> None:
        """Rollback mode: poll open markets, join new ones, leave those no longer open."""
        while not self.stop_event.is_set():
            try:
                markets = await self.rest.list_markets(status="open")
                self.rules.observe_time(time.time_ns())
                self.apply(self.rules.rest_discovery(markets))
            except RestError as exc:
                log.warning("REST discovery poll failed: %s", exc)
            await woken(self.stop_event, self.settings.rest_poll_s)

    # ----------------------------------------------------------------- status
    def healthy(self) -> tuple[bool, str]:
        if self.writer.error is not None:
            return False, f"writer failed: {self.writer.error}\n"
        up = sum(1 for c in self.conns if c.ws is not None)
        if up < len(self.conns):
            return False, f"{up}/{len(self.conns)} connections up\n"
        return True, f"ok session {self.session_id}\n"

    async def status_loop(self) -> None:
        meter = RateMeter()
        while not self.stop_event.is_set():
            await woken(self.stop_event, self.settings.status_interval_s)
            st = self.writer.stats
            self.metrics.queue_depth.set(st.queue_depth)
            self.metrics.pending_rows.set(st.pending_rows)
            self.metrics.bytes_written.set(st.bytes_written)
            self.metrics.segments.set(st.segments_sealed)
            self.metrics.connected.set(sum(1 for c in self.conns if c.ws is not None))
            try:
                self.metrics.disk_free.set(shutil.disk_usage(self.settings.data_dir).free)
            except OSError:
                pass
            self.rules.expire(time.time_ns())  # bounded memory of markets already left
            log.info(
                "markets %d | %.0f msg/s | %s MB written | gaps %d | reconnects %d | queue %d",
                len(self.rules.joined),
                meter.rate(self.log.frames_in),
                f"{st.bytes_written / 1e6:.1f}",
                self.gaps,
                self.reconnects,
                st.queue_depth,
            )

    async def writer_watch(self) -> None:
        backlog_reported = 0
        while not self.stop_event.is_set():
            if self.writer.failed.is_set():
                self.fatal = FatalError(str(self.writer.error), 1)
                self.end_reason = EndReason.WRITER_ERROR
                self.stop_event.set()
                return
            st = self.writer.stats
            if st.queue_depth and st.backlog_events > backlog_reported:
                backlog_reported = st.backlog_events
                self.decide(WriterBacklog(queue_depth=st.queue_depth, pending_rows=st.pending_rows))
            await asyncio.sleep(0.1)

    # ----------------------------------------------------------------- run
    def start_record(self) -> None:
        s = self.settings
        shard = f"{s.shard[0]}/{s.shard[1]}"
        crashed = self.recovery.sessions if self.recovery is not None else []
        self.decide(
            SessionStart(
                # The specification's vocabulary: the discovery mode is the "environment"; the
                # exchange (prod/demo, or custom for any other URL) has its own field.
                environment="lifecycle_discovery" if s.lifecycle_mode else "rest_discovery",
                exchange_env="custom" if s.ws_url else s.env,
                previous_session=previous_session(s.data_dir, self.session_id, shard, crashed),
                lifecycle_mode=s.lifecycle_mode,
                version=__version__,
                host=socket.gethostname(),
                shard=shard,
                ws_url=s.endpoints[0],
                config=s.redacted(),
            )
        )
        if self.recovery is not None and self.recovery.files:
            self.decide(self.recovery)

    async def run(self) -> RunSummary:
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread
                pass
        if s.tap is not None:
            await self.start_tap()
        self.writer.start()
        self.start_record()
        tasks = [asyncio.create_task(c.run(self.stop_event)) for c in self.conns]
        aux = [
            asyncio.create_task(self.status_loop()),
            asyncio.create_task(self.writer_watch()),
            asyncio.create_task(self.reconcile_loop()),
        ]
        server = None
        if s.metrics_port is not None:
            server = await serve(s.metrics_port, self.metrics, self.healthy)
            # port 0 lets the OS choose (no race over a "free" port): say which one it chose
            port = server.sockets[0].getsockname()[1]
            print(orjson.dumps({"metrics_url": f"http://127.0.0.1:{port}"}).decode(), flush=True)
        try:
            if s.lifecycle_mode:
                await self.open_markets_at_start()
            if not s.lifecycle_mode:
                aux.append(asyncio.create_task(self.rest_discovery()))
            stopper = asyncio.create_task(self.stop_event.wait())
            waiting: set[asyncio.Future[Any]] = {stopper, *tasks}
            timeout = s.duration_s
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                self.end_reason = EndReason.DURATION
            for t in done:
                if t is not stopper and t.exception() is not None:
                    exc = t.exception()
                    if isinstance(exc, AuthRejected):
                        self.fatal = FatalError(str(exc), 2)
                        self.end_reason = EndReason.AUTH_REJECTED
                    else:
                        self.fatal = FatalError(f"connection task failed: {exc!r}", 1)
                        self.end_reason = EndReason.ERROR
        except FatalError as exc:
            self.fatal = exc
            self.end_reason = EndReason.ERROR
        finally:
            self.stop_event.set()
            for c in self.conns:
                await c.close()
            extra = list(self._aux)
            for t in tasks + aux + extra:
                t.cancel()
            await asyncio.gather(*tasks, *aux, *extra, return_exceptions=True)
            if server is not None:
                server.close()
        summary = self.finish()
        if self.tap is not None:  # after finish: consumers see the shutdown leaves and the end
            await self.tap.close()
        return summary

    async def start_tap(self) -> None:
        """Serve this session on ``--tap`` before its first record, and, with ``--tap-wait``,
        hold the recording until a first consumer has subscribed (so it sees record 1)."""
        s = self.settings
        if s.tap is None:
            return
        try:
            self.tap = await start_tap(
                s.tap,
                self.log,
                {"config": s.redacted()},
                token=s.tap_token,
                max_queue=s.tap_max_queue,
            )
        except (ValueError, OSError) as exc:
            raise FatalError(f"cannot serve the tap on {s.tap}: {exc}", 2) from None
        # One machine-readable line, so a program that asked for port 0 can find the tap.
        print(orjson.dumps({"tap_url": self.tap.url, "session_id": self.session_id}).decode())
        sys.stdout.flush()
        deadline = time.monotonic() + s.tap_wait_s
        while s.tap_wait_s > 0 and not any(c.started for c in self.tap.fanout.consumers):
            if time.monotonic() > deadline:
                log.warning("no tap consumer within %.0f s; recording anyway", s.tap_wait_s)
                break
            await asyncio.sleep(0.01)

    def _on_signal(self) -> None:
        self.end_reason = EndReason.SIGNAL
        self.stop_event.set()

    def finish(self) -> RunSummary:
        """Leave every market, write session_end, drain and seal (graceful stop)."""
        if self.writer.error is None:
            for a in self.rules.shutdown():
                self.decide(a.record(), market_ticker=a.ticker)
                self.left_total += 1
            detail = str(self.fatal) if self.fatal is not None else None
            self.decide(SessionEnd(reason=self.end_reason, detail=detail))
        sealed = self.writer.stop(timeout=30.0)
        if self.writer.error is not None and self.fatal is None:
            self.fatal = FatalError(str(self.writer.error), 1)
        return RunSummary(
            session_id=self.session_id,
            seconds=time.monotonic() - self.started,
            frames=self.log.frames_in,
            malformed=self.log.malformed,
            commands=self.log.commands_out,
            decisions=dict(self.log.decisions),
            markets_joined=self.joined_total,
            markets_left=self.left_total,
            reconnects=self.reconnects,
            gaps=self.gaps,
            segments=list(sealed),
            end_reason=self.end_reason,
        )

"""The asyncio shell: WebSocket + REST servers, the clock, connection faults, ground truth.

Everything protocol-shaped lives in the sans-I/O modules (``exchange``, ``market``, ``wire``,
``rest``, ``auth``); this module only moves bytes and time. Usage::

    from simulator.server import SimConfig, Simulator
    async with Simulator(SimConfig(seed=1)) as sim:
        sim.ws_url, sim.rest_url, sim.key_id, sim.private_key_path, sim.faults, sim.stats,
        sim.connections_open

``start_in_thread(cfg)`` runs the same thing on a background event loop for synchronous code.

WebSocket connections are ``simulator.websocket.WsConnection``: websockets' sans-I/O protocol on
a transport of our own. A writer task per connection writes each batch of frames in one go, then
waits for the transport to drain (backpressure); that is what lets one process approach 100k
msgs/s, where per-message ``send()`` costs several times more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from websockets.http11 import Request, Response

from simulator import auth, rest
from simulator.book import Book, fp_levels, to_hundredths, to_pips
from simulator.exchange import Exchange, Session
from simulator.faults import FaultConfig, FaultCounters
from simulator.groundtruth import GroundTruth
from simulator.market import Engine, GenConfig, Market
from simulator.websocket import WsConnection, json_response
from simulator.wire import ProtocolOptions

log = logging.getLogger("simulator")

WS_PATH = "/trade-api/ws/v2"
T = TypeVar("T")


@dataclass
class SimConfig:
    """Everything a simulator run can vary; the defaults suit tests (small, fast, no faults)."""

    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0  # WebSocket port (0 = any free port)
    rest_port: int = 0  # REST port (0 = any free port)
    keys_dir: Path | None = None  # None: a temporary directory, removed on stop
    max_skew_s: float = 30.0  # accepted |server clock - KALSHI-ACCESS-TIMESTAMP|
    allow_unauthenticated: bool = False  # accept handshakes without auth headers (then error 9)
    ping_interval: float = 10.0  # server Ping frames with payload b"heartbeat"
    start_time: float | None = None  # Unix seconds of virtual t=0 (None = now)
    autostart: bool = True  # False: virtual time moves only via sim.advance()
    legacy: bool = False  # shortcut: legacy wire format (sets protocol.legacy and generator.legacy)
    generator: GenConfig = field(default_factory=GenConfig)
    protocol: ProtocolOptions = field(default_factory=ProtocolOptions)
    faults: FaultConfig = field(default_factory=FaultConfig)
    ground_truth: Path | None = None  # directory for ground-truth files


@dataclass
class Stats:
    """What only the shell counts. The engine's own counts (``sim.engine.steps``,
    ``deltas_emitted``, ``notices_emitted``, ``markets``, ``live``) are read from the engine, and
    the open connections from :attr:`Simulator.connections_open`."""

    handshakes: int = 0
    connections_total: int = 0
    frames_sent: int = 0
    lag_ms: int = 0  # how far virtual time trails wall time (the engine cannot keep up)


class _Conn:
    __slots__ = ("session", "stalled_until", "tasks", "wake", "ws")

    def __init__(self, ws: WsConnection, session: Session) -> None:
        self.ws = ws
        self.session = session
        self.wake = asyncio.Event()
        self.stalled_until = 0.0
        self.tasks: list[asyncio.Task[None]] = []


class Simulator:
    """A local Kalshi exchange. Use as ``async with Simulator(cfg) as sim``."""

    def __init__(self, cfg: SimConfig | None = None) -> None:
        self.cfg = cfg = cfg or SimConfig()
        if cfg.legacy:
            cfg.protocol = dataclasses.replace(cfg.protocol, legacy=True)
            cfg.generator = dataclasses.replace(cfg.generator, legacy=True)
        self.faults = FaultCounters()
        self.stats = Stats()
        self.ws_url = ""
        self.rest_url = ""
        self.key_id = ""
        self.private_key_path = Path()
        self._tmp_keys: Path | None = None
        self._ws_server: asyncio.Server | None = None
        self._rest_server: asyncio.Server | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._conns: dict[int, _Conn] = {}
        self._auth_by_conn: dict[WsConnection, bool] = {}
        self._by_ws: dict[WsConnection, _Conn] = {}
        self._sockets: set[WsConnection] = set()  # every TCP connection, handshake done or not
        self._reject_until = 0.0
        self._gt: GroundTruth | None = None
        self._fault_rng = random.Random(cfg.seed * 104_729 + 3)
        self._t0 = 0.0
        self._stopped = False
        self.effects: list[dict[str, Any]] = []  # what each switch and fault did, in order

    # ---- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        cfg = self.cfg
        keys_dir = cfg.keys_dir
        if keys_dir is None:
            keys_dir = self._tmp_keys = Path(tempfile.mkdtemp(prefix="kalshi-sim-keys-"))
        keys = auth.load_or_create_keys(Path(keys_dir))
        self._keys = keys
        self.key_id = keys.key_id
        self.private_key_path = keys.private_key_path
        epoch_ms = int((cfg.start_time if cfg.start_time is not None else time.time()) * 1000)
        self.engine = Engine(
            cfg.generator, cfg.seed, epoch_ms, record_books=cfg.ground_truth is not None
        )
        self.exchange = Exchange(self.engine, cfg.protocol, cfg.faults, self.faults, cfg.seed)
        if cfg.ground_truth is not None:
            self._gt = GroundTruth(
                Path(cfg.ground_truth), round(cfg.protocol.clock_offset_s * 1000)
            )
        self.engine.start()
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._pump()
        empty_pong = cfg.protocol.pong == "empty"
        self._ws_server = await self._loop.create_server(
            lambda: self._accepted(WsConnection(self, empty_pong)), cfg.host, cfg.port
        )
        ws_port = self._ws_server.sockets[0].getsockname()[1]
        legacy = cfg.protocol.legacy
        effect = self.exchange.effect
        self._rest_server = await rest.serve_rest(
            cfg.host,
            cfg.rest_port,
            lambda m, t: rest.handle(self.engine, m, t, legacy, cfg.protocol, effect),
            now=lambda: self.engine.now_ms / 1000 + cfg.protocol.clock_offset_s,
        )
        rest_port = self._rest_server.sockets[0].getsockname()[1]
        self.ws_url = f"ws://{cfg.host}:{ws_port}{WS_PATH}"
        self.rest_url = f"http://{cfg.host}:{rest_port}{rest.BASE}"
        if cfg.autostart:
            self._clock_task = asyncio.create_task(self._clock())
        log.info("simulator up: ws %s rest %s seed %d", self.ws_url, self.rest_url, cfg.seed)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task
        if self._ws_server is not None:
            self._ws_server.close()
            for conn in list(self._sockets):
                conn.abort()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._ws_server.wait_closed()
        if self._rest_server is not None:
            self._rest_server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._rest_server.wait_closed()
        if self._gt is not None:
            self._gt.close(self.engine)
        if self._tmp_keys is not None:
            shutil.rmtree(self._tmp_keys, ignore_errors=True)
        e = self.engine
        log.info(
            "simulator stopped: %s; %d steps, %d markets, %d deltas, %d notices; faults %s",
            self.stats,
            e.steps,
            len(e.markets),
            e.deltas_emitted,
            e.notices_emitted,
            self.faults,
        )

    @property
    def connections_open(self) -> int:
        """WebSocket connections open now (handshake done, not yet closed)."""
        return len(self._conns)

    # ---- handshake ------------------------------------------------------------------------

    def ws_handshake(self, conn: WsConnection, request: Request) -> Response | None:
        """Refuse by fault knob or failed authentication, else accept (``WsConnection`` hook)."""
        path = request.path.split("?", 1)[0]
        if path != WS_PATH:
            return json_response(
                conn.protocol, 404, "not_found", f"no WebSocket endpoint at {path}; use {WS_PATH}"
            )
        self.stats.handshakes += 1
        f = self.cfg.faults
        if self.stats.handshakes <= f.reject_first_n or self._loop.time() < self._reject_until:
            self.faults.rejected_handshakes += 1
            if f.reject_status == 429:
                resp = json_response(
                    conn.protocol, 429, "too_many_requests", "simulated rate limit; retry later"
                )
                resp.headers["Retry-After"] = "1"
                return resp
            return json_response(
                conn.protocol, 503, "service_unavailable", "simulated outage; retry later"
            )
        headers = request.headers
        if self.cfg.allow_unauthenticated and not any(
            h in headers
            for h in ("KALSHI-ACCESS-KEY", "KALSHI-ACCESS-TIMESTAMP", "KALSHI-ACCESS-SIGNATURE")
        ):
            self._auth_by_conn[conn] = False
            return None
        try:
            auth.verify_request(
                self._keys.public_keys,
                headers,
                "GET",
                WS_PATH,
                int(time.time() * 1000),
                int(self.cfg.max_skew_s * 1000),
            )
        except auth.AuthError as e:
            log.info("handshake rejected: %s", e.message)
            return json_response(conn.protocol, e.status, e.code, e.message)
        self._auth_by_conn[conn] = True
        return None

    # ---- connections ----------------------------------------------------------------------

    def ws_open(self, conn: WsConnection) -> None:
        """A handshake succeeded: a protocol session, a writer and a pinger for it."""
        authenticated = self._auth_by_conn.pop(conn, True)
        self._pump()  # deliver pending events before a snapshot can be taken
        session = self.exchange.open_session(authenticated)
        st = _Conn(conn, session)
        self._conns[session.conn_id] = st
        self._by_ws[conn] = st
        self.stats.connections_total += 1
        st.tasks.append(asyncio.create_task(self._writer(st)))
        if self.cfg.ping_interval > 0:
            st.tasks.append(asyncio.create_task(self._pinger(st)))

    def ws_message(self, conn: WsConnection, message: str | bytes) -> None:
        st = self._by_ws[conn]
        self._pump()
        st.session.receive(message)
        st.wake.set()

    def _accepted(self, conn: WsConnection) -> WsConnection:
        self._sockets.add(conn)
        return conn

    def ws_closed(self, conn: WsConnection) -> None:
        self._sockets.discard(conn)
        self._auth_by_conn.pop(conn, None)
        st = self._by_ws.pop(conn, None)
        if st is None:
            return
        for t in st.tasks:
            t.cancel()
        conn_id = st.session.conn_id
        self._conns.pop(conn_id, None)
        self.exchange.close_session(conn_id)
        if self._gt is not None:
            self._gt.close_conn(conn_id)

    def ws_empty_pong(self) -> None:
        self.faults.empty_pongs += 1
        self.exchange.effect("empty_pong")

    async def _writer(self, st: _Conn) -> None:
        ws = st.ws
        session = st.session
        gt = self._gt
        stats = self.stats
        conn_id = session.conn_id
        while ws.is_open:
            await st.wake.wait()
            st.wake.clear()
            delay = st.stalled_until - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            frames = session.take()
            if not frames or not ws.is_open:
                continue
            if gt is not None:
                gt.frames(conn_id, time.time_ns(), frames)
            stats.frames_sent += len(frames)
            ws.send_texts(frames)
            await ws.drain()

    async def _pinger(self, st: _Conn) -> None:
        while st.ws.is_open:
            await asyncio.sleep(self.cfg.ping_interval)
            st.ws.ping(b"heartbeat")

    def _close_with_code(self, st: _Conn, code: int, reason: str = "simulated close") -> None:
        """Close with a close frame carrying ``code`` (4000-4999: the exchange's own codes)."""
        self.faults.closes += 1
        self.exchange.effect("close", conn=st.session.conn_id, code=code, reason=reason)
        st.ws.close(code, reason)

    def _drop(self, st: _Conn) -> None:
        self.faults.drops += 1
        self.exchange.effect("drop", conn=st.session.conn_id, mode=self.cfg.faults.drop_mode)
        self._reject_until = self._loop.time() + self.cfg.faults.reject_after_drop_s
        if self.cfg.faults.drop_mode == "abort":
            st.ws.abort()
        else:
            st.ws.close(1011, "simulated failure")

    # ---- the clock ------------------------------------------------------------------------

    def _pump(self) -> None:
        self.exchange.pump()
        if self._gt is not None:
            self._gt.books(self.engine)
        fx = self.exchange.effects
        if fx:
            self.effects.extend(fx)
            if self._gt is not None:
                self._gt.effects(fx)
            fx.clear()
        for st in self._conns.values():
            if st.session.outbox:
                st.wake.set()

    async def _clock(self) -> None:
        engine = self.engine
        step_s = engine.cfg.step_ms / 1000.0
        loop = self._loop
        base = engine.steps
        last = loop.time()
        f = self.cfg.faults
        # connection faults, each at fixed times and at a rate: (times left, per connection per
        # second, what it does to a connection)
        conn_faults: list[tuple[list[float], float, Callable[[_Conn], None]]] = [
            (sorted(f.drop_at), f.drop_rate, self._drop),
            (sorted(f.close_at), f.close_rate, lambda st: self._close_with_code(st, f.close_code)),
        ]
        next_stall = f.stall_every_s if f.stall_every_s > 0 else None
        next_burst = f.burst_every_s if f.burst_every_s > 0 else None
        while True:
            now = loop.time()
            elapsed = now - self._t0
            target = base + int(elapsed / step_s)
            n = 0
            # A few steps per turn, then yield: if the engine falls behind, writers must still
            # run, or the backlog grows without bound and throughput collapses. Virtual time
            # then lags wall time (stats.lag_ms) instead.
            while engine.steps < target and n < 4:
                engine.step()
                n += 1
            if next_burst is not None and elapsed >= next_burst:
                engine.inject_burst(f.burst_size)
                self.faults.bursts += 1
                next_burst += f.burst_every_s
            self._pump()
            self.stats.lag_ms = (target - engine.steps) * engine.cfg.step_ms
            for times, rate, act in conn_faults:
                while times and elapsed >= times[0]:
                    times.pop(0)
                    for st in list(self._conns.values()):
                        act(st)
                if rate > 0:
                    p = rate * (now - last)
                    for st in list(self._conns.values()):
                        if self._fault_rng.random() < p:
                            act(st)
            if next_stall is not None and elapsed >= next_stall:
                for st in self._conns.values():
                    st.stalled_until = now + f.stall_for_s
                    self.faults.stalls += 1
                next_stall += f.stall_every_s
            last = now
            next_due = self._t0 + (engine.steps - base + 1) * step_s
            await asyncio.sleep(max(0.0, next_due - loop.time()))

    # ---- control API (call on the simulator's event loop) -----------------------------------

    def _ctl(self, fn: Callable[[], T]) -> T:
        result = fn()
        self._pump()
        return result

    def advance(self, steps: int = 1) -> None:
        """Move virtual time forward by ``steps`` generator steps (for autostart=False runs)."""
        for _ in range(steps):
            self.engine.step()
        self._ctl(lambda: None)

    def advance_seconds(self, seconds: float) -> None:
        self.advance(max(1, round(seconds * 1000 / self.engine.cfg.step_ms)))

    def create_market(self, ticker: str | None = None, **kw: Any) -> str:
        """Create a market now (see ``Engine.create_market`` for options); returns its ticker."""
        return self._ctl(lambda: self.engine.create_market(ticker, **kw).ticker)

    def determine(
        self, ticker: str, result: str = "yes", settlement_value: str | None = None
    ) -> None:
        self._ctl(lambda: self.engine.determine(ticker, result, settlement_value))

    def settle(self, ticker: str) -> None:
        self._ctl(lambda: self.engine.settle(ticker))

    def deactivate(self, ticker: str) -> None:
        self._ctl(lambda: self.engine.deactivate(ticker))

    def activate(self, ticker: str) -> None:
        self._ctl(lambda: self.engine.activate(ticker))

    def update_close(self, ticker: str, close_ts: float) -> None:
        self._ctl(lambda: self.engine.update_close(ticker, close_ts))

    def metadata_update(self, ticker: str) -> None:
        self._ctl(lambda: self.engine.metadata_update(ticker))

    def undocumented_event(self, ticker: str) -> None:
        self._ctl(lambda: self.engine.undocumented_event(ticker))

    def event_fee_update(
        self, event_ticker: str, fee_type: str | None, multiplier: str | None
    ) -> None:
        self._ctl(lambda: self.engine.event_fee_update(event_ticker, fee_type, multiplier))

    def push_delta(self, ticker: str, side: str, price: str | int, delta: str | int) -> None:
        """Change one level: price as dollars ("0.4500") or int cents; delta in contracts."""
        pips, hundredths = to_pips(price), to_hundredths(delta)
        self._ctl(lambda: self.engine.push_delta(ticker, side, pips, hundredths))

    def drop_connections(self) -> int:
        """Fault: drop every open connection now; returns how many."""
        conns = list(self._conns.values())
        for st in conns:
            self._drop(st)
        return len(conns)

    def close_connections(self, code: int, reason: str = "simulated close") -> int:
        """Fault: close every open connection now with ``code``; returns how many."""
        conns = list(self._conns.values())
        for st in conns:
            self._close_with_code(st, code, reason)
        return len(conns)

    def async_error(self, code: int, channel: str | None = None) -> int:
        """Fault: a terminal error (10, 17, 25) on every live sid (of ``channel``, if given) of
        every connection now; returns how many sids ended."""
        n = 0
        for st in list(self._conns.values()):
            for sub in list(st.session.subs.values()):
                if channel is None or sub.channel == channel:
                    st.session.async_error(sub, code)
                    n += 1
        self._pump()
        return n

    def paused_writers(self) -> int:
        """How many connections' writers wait for their client to read (backpressure)."""
        return sum(1 for st in self._conns.values() if st.ws.write_paused)

    def market(self, ticker: str) -> Market:
        return self.engine.market(ticker)

    def effect_log(self) -> list[dict[str, Any]]:
        """What each switch and fault did so far (a copy), as in ground truth's effects.jsonl."""
        self._ctl(lambda: None)
        return list(self.effects)

    def market_json(self, ticker: str) -> dict[str, Any]:
        return rest.market_object(self.engine.market(ticker), rest.Clock.of(self.cfg.protocol))

    def book(self, ticker: str) -> dict[str, list[list[str]]]:
        """The true book as REST would show it: {"yes": [[price, size], ...], "no": [...]}."""
        b: Book = self.engine.market(ticker).book
        return {"yes": fp_levels(b.levels("yes")), "no": fp_levels(b.levels("no"))}

    def tickers(self, status: str | None = None) -> list[str]:
        return [t for t, m in self.engine.markets.items() if status is None or m.status == status]

    def client_args(self) -> list[str]:
        """The ``kalshi-recorder`` flags that point a client at this simulator with its own key
        (tests and benchmarks build their command lines from it, never by hand)."""
        return [
            "--ws-url",
            self.ws_url,
            "--rest-url",
            self.rest_url,
            "--key-id",
            self.key_id,
            "--private-key",
            str(self.private_key_path),
        ]


_CONTROL = frozenset(
    {
        "advance",
        "advance_seconds",
        "create_market",
        "determine",
        "settle",
        "deactivate",
        "activate",
        "update_close",
        "metadata_update",
        "undocumented_event",
        "event_fee_update",
        "push_delta",
        "drop_connections",
        "close_connections",
        "async_error",
        "paused_writers",
        "effect_log",
        "market_json",
        "book",
        "tickers",
    }
)


class SimulatorThread:
    """A simulator on a background thread's event loop, for synchronous code and tests.

    Has the attributes of :class:`Simulator` (``ws_url``, ``rest_url``, ``key_id``,
    ``private_key_path``, ``faults``, ``stats``, ``connections_open``), the control methods (run
    on the simulator's loop and waited for), and ``stop()``.
    """

    def __init__(self, cfg: SimConfig) -> None:
        self.sim = Simulator(cfg)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop_evt: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kalshi-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop_evt = asyncio.Event()
        try:
            await self.sim.start()
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        await self._stop_evt.wait()
        await self.sim.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the simulator's loop and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def __getattr__(self, name: str) -> Any:
        if name in _CONTROL:
            meth = getattr(self.sim, name)
            return lambda *a, **kw: self.call(lambda: meth(*a, **kw))
        return getattr(self.sim, name)

    def __enter__(self) -> SimulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop_evt is not None:
            self._loop.call_soon_threadsafe(self._stop_evt.set)
            self._thread.join(30)


def start_in_thread(cfg: SimConfig | None = None) -> SimulatorThread:
    """Start a simulator on a daemon thread; returns once it accepts connections."""
    return SimulatorThread(cfg or SimConfig())

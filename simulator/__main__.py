"""Command line: ``python -m simulator keygen|serve`` (console script ``kalshi-simulator``).

``serve`` prints exactly one JSON line to stdout when ready (ws_url, rest_url, key_id,
private_key_path) so another program can start it and find it; all logging goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

from simulator import auth
from simulator.faults import MALFORMED_KINDS, FaultConfig
from simulator.market import Dist, GenConfig
from simulator.server import SimConfig, Simulator
from simulator.switches import BOOL, CHOICE, SWITCHES, config_from_switches


def _shown(v: object) -> str:
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v) or "none"
    return str(v)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kalshi-simulator", description="A local Kalshi exchange.")
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keygen", help="create a test API key pair and the server's key registry")
    k.add_argument("--keys-dir", type=Path, required=True)

    s = sub.add_parser("serve", help="run the exchange")
    a = s.add_argument
    a("--host", default="127.0.0.1")
    a("--port", type=int, default=0, help="WebSocket port (0 = any free)")
    a("--rest-port", type=int, default=0, help="REST port (0 = any free)")
    a("--keys-dir", type=Path, required=True, help="key registry; created if missing")
    a("--seed", type=int, default=1)
    a("--duration", type=float, default=None, help="stop after this many seconds")
    a("--ground-truth", type=Path, default=None, help="write ground-truth files here")
    a("--log-level", default="INFO")
    a("--max-skew", type=float, default=30.0, help="accepted clock skew of signed requests, s")
    a("--ping-interval", type=float, default=10.0)
    a("--allow-unauthenticated", action="store_true")
    g = s.add_argument_group("generator")
    g.add_argument("--create-rate", type=float, default=1.0, help="new markets per second")
    g.add_argument("--initial-markets", type=int, default=8)
    g.add_argument(
        "--lifetime", default="5:20", help='open->close: "A", "A:B", "exp:M"; units s/m/h'
    )
    g.add_argument("--open-delay", default="0:1")
    g.add_argument("--determine-delay", default="0.2:2")
    g.add_argument("--settle-delay", default="0.2:2")
    g.add_argument("--delta-rate", type=float, default=100.0, help="book changes per second")
    g.add_argument("--max-live-markets", type=int, default=10_000)
    g.add_argument("--undocumented-event-prob", type=float, default=0.0)
    g.add_argument("--no-regimes", action="store_true", help="constant delta rate")
    w = s.add_argument_group(
        "protocol switches",
        "one per uncertain point of the protocol (docs/protocol.md §9; the section of "
        "docs/protocol.md in brackets); defaults = the most likely real behaviour, fault-like "
        "ones off",
    )
    w.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="REPORT.json",
        help="answer as the exchange a kalshi-probe report describes (its measured answers set "
        "the switches; a switch flag given explicitly wins)",
    )
    for sw in SWITCHES:
        text = f"{sw.help} [{sw.section}; default {_shown(sw.default)}]"
        if sw.kind == BOOL:
            w.add_argument(sw.flag, dest=sw.name, action="store_true", help=text)
        elif sw.kind == CHOICE:
            w.add_argument(sw.flag, dest=sw.name, choices=sw.allowed, default=sw.default, help=text)
        else:
            w.add_argument(
                sw.flag,
                dest=sw.name,
                default=sw.default,
                metavar=sw.kind.upper(),
                help=f"{text}; {sw.describe()}",
            )
    f = s.add_argument_group("faults (all off by default)")
    f.add_argument("--gap-rate", type=float, default=0.0)
    f.add_argument("--duplicate-rate", type=float, default=0.0)
    f.add_argument("--malformed-rate", type=float, default=0.0)
    f.add_argument("--malformed-kinds", default=",".join(MALFORMED_KINDS))
    f.add_argument("--subscribe-error-rate", type=float, default=0.0)
    f.add_argument("--subscribe-error-code", type=int, default=17)
    f.add_argument("--lifecycle-delay-rate", type=float, default=0.0)
    f.add_argument("--lifecycle-delay-max", type=float, default=2.0)
    f.add_argument("--drop-rate", type=float, default=0.0, help="per connection per second")
    f.add_argument("--drop-at", type=_floats, default=(), help="comma list of seconds after start")
    f.add_argument("--drop-mode", choices=("abort", "close"), default="abort")
    f.add_argument("--reject-after-drop", type=float, default=0.0)
    f.add_argument("--reject-first", type=int, default=0)
    f.add_argument("--reject-status", type=int, choices=(429, 503), default=503)
    f.add_argument("--stall-every", type=float, default=0.0)
    f.add_argument("--stall-for", type=float, default=0.0)
    f.add_argument("--burst-every", type=float, default=0.0)
    f.add_argument("--burst-size", type=int, default=200)
    return p


def config_from_args(ns: argparse.Namespace) -> SimConfig:
    base = SimConfig(
        seed=ns.seed,
        host=ns.host,
        port=ns.port,
        rest_port=ns.rest_port,
        keys_dir=ns.keys_dir,
        max_skew_s=ns.max_skew,
        allow_unauthenticated=ns.allow_unauthenticated,
        ping_interval=ns.ping_interval,
        ground_truth=ns.ground_truth,
        generator=GenConfig(
            create_rate=ns.create_rate,
            initial_markets=ns.initial_markets,
            lifetime=Dist(ns.lifetime),
            open_delay=Dist(ns.open_delay),
            determine_delay=Dist(ns.determine_delay),
            settle_delay=Dist(ns.settle_delay),
            delta_rate=ns.delta_rate,
            max_live_markets=ns.max_live_markets,
            undocumented_event_prob=ns.undocumented_event_prob,
            regimes=not ns.no_regimes,
        ),
        faults=FaultConfig(
            gap_rate=ns.gap_rate,
            duplicate_rate=ns.duplicate_rate,
            malformed_rate=ns.malformed_rate,
            malformed_kinds=tuple(k for k in ns.malformed_kinds.split(",") if k),
            subscribe_error_rate=ns.subscribe_error_rate,
            subscribe_error_code=ns.subscribe_error_code,
            lifecycle_delay_rate=ns.lifecycle_delay_rate,
            lifecycle_delay_max_s=ns.lifecycle_delay_max,
            drop_rate=ns.drop_rate,
            drop_at=ns.drop_at,
            drop_mode=ns.drop_mode,
            reject_after_drop_s=ns.reject_after_drop,
            reject_first_n=ns.reject_first,
            reject_status=ns.reject_status,
            stall_every_s=ns.stall_every,
            stall_for_s=ns.stall_for,
            burst_every_s=ns.burst_every,
            burst_size=ns.burst_size,
        ),
    )
    values = {sw.name: getattr(ns, sw.name) for sw in SWITCHES}
    if getattr(ns, "profile", None) is not None:
        from simulator.profile import load_profile, merge  # imports the probe's report reader

        values = merge(values, load_profile(ns.profile))
    return config_from_switches(values, base)


async def _serve(cfg: SimConfig, duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(cfg) as sim:
        line = {
            "ws_url": sim.ws_url,
            "rest_url": sim.rest_url,
            "key_id": sim.key_id,
            "private_key_path": str(sim.private_key_path),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                await stop.wait()
        logging.getLogger("simulator").info("stopping")


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.command == "keygen":
        km = auth.generate_keys(ns.keys_dir)
        print(json.dumps({"key_id": km.key_id, "private_key_path": str(km.private_key_path)}))
        return 0
    logging.basicConfig(
        level=ns.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = config_from_args(ns)
    except ValueError as e:
        print(f"kalshi-simulator: {e}", file=sys.stderr)
        return 2
    asyncio.run(_serve(cfg, ns.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m simulator keygen|serve`` (console script ``kalshi-simulator``).

``serve`` prints exactly one JSON line to stdout when ready (ws_url, rest_url, key_id,
private_key_path) so another program can start it and find it; all logging goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator import auth
from simulator.faults import FaultConfig
from simulator.market import Dist, GenConfig
from simulator.server import SimConfig, Simulator
from simulator.switches import BY_NAME, SWITCHES, Kind, config_from_switches

# The generator's knobs that have a flag; every fault knob that is not a switch has one too.
# Each flag is named after its field (a unit suffix _s or _n left out) and takes the field's
# type and default from the dataclass, so a knob and its default are declared once, there.
GENERATOR_FLAGS = (
    "create_rate",
    "initial_markets",
    "lifetime",
    "open_delay",
    "determine_delay",
    "settle_delay",
    "delta_rate",
    "max_live_markets",
    "undocumented_event_prob",
)
FAULT_FLAGS = tuple(f.name for f in dataclasses.fields(FaultConfig) if f.name not in BY_NAME)
_HELP = {
    "create_rate": "new markets per second",
    "lifetime": 'open->close: "A", "A:B", "exp:M"; units s/m/h',
    "delta_rate": "book changes per second",
    "drop_rate": "per connection per second",
    "drop_at": "comma list of seconds after start",
    "drop_mode": "abort (TCP reset, no close frame) or close (close code 1011)",
    "reject_status": "503 or 429 (429 carries Retry-After)",
}


def _shown(v: object) -> str:
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v) or "none"
    if isinstance(v, Dist):
        return v.spec
    return str(v)


def _dist(text: str) -> Dist:
    try:
        return Dist(text)
    except ValueError as e:  # argparse shows this message, not a generic "invalid value"
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser_for(hint: Any) -> Callable[[str], Any]:
    """A flag's text -> the field's type: a Dist, a comma list for a tuple, else the type."""
    if hint is Dist:
        return _dist
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]

        def comma_list(text: str) -> tuple[Any, ...]:
            try:
                return tuple(item(x.strip()) for x in text.split(",") if x.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{text!r} is not a comma list of {item.__name__}"
                ) from None

        return comma_list
    return typing.cast(Callable[[str], Any], hint)


def _knob_flags(add: Callable[..., Any], cls: type, names: tuple[str, ...]) -> None:
    """One flag per knob ``names`` of the dataclass ``cls``, added with ``add``."""
    hints, defaults = typing.get_type_hints(cls), cls()
    for name in names:
        flag = name.removesuffix("_s").removesuffix("_n").replace("_", "-")
        default = getattr(defaults, name)
        add(
            "--" + flag,
            dest=name,
            type=_parser_for(hints[name]),
            default=default,
            metavar=flag.upper().replace("-", "_"),
            help="; ".join(filter(None, (_HELP.get(name), f"default {_shown(default)}"))),
        )


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
    _knob_flags(g.add_argument, GenConfig, GENERATOR_FLAGS)
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
        if sw.kind is Kind.BOOL:
            w.add_argument(sw.flag, dest=sw.name, action="store_true", help=text)
        elif sw.kind is Kind.CHOICE:
            w.add_argument(sw.flag, dest=sw.name, choices=sw.allowed, default=sw.default, help=text)
        else:
            w.add_argument(
                sw.flag,
                dest=sw.name,
                default=sw.default,
                metavar=sw.kind.name,
                help=f"{text}; {sw.describe()}",
            )
    f = s.add_argument_group("faults (all off by default)")
    _knob_flags(f.add_argument, FaultConfig, FAULT_FLAGS)
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
            **{n: getattr(ns, n) for n in GENERATOR_FLAGS}, regimes=not ns.no_regimes
        ),
        faults=FaultConfig(**{n: getattr(ns, n) for n in FAULT_FLAGS}),
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

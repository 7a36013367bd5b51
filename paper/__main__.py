"""``kalshi-paper``: run a policy on paper against the live tap or a replay of a recorded session.

    kalshi-paper --policy paper.policies:SpreadCapture --replay DATA [--session S]
    kalshi-paper --policy mymodule:MyActor --tap ws://127.0.0.1:8765/trade-api/ws/v2 --data-dir DATA

The policy is ``module:Class``, built with no arguments (``--policy-arg k=v`` passes integer or
float keyword arguments). The paper log goes to ``DATA/paper/``: ``--data-dir``, else the replay's
data directory, else (live) the recorder's data directory as the tap's hello names it when this
machine can see it. Paper only: no code path here can place a real order.

Exit codes: 0 done, 1 the feed failed, 2 a usage problem (bad policy, no such data), 3 the policy
raised (the paper log up to that point is sealed).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from feed.client import FeedError
from paper.actor import Actor
from paper.broker import Broker
from paper.drivers import RunResult, run_feed, run_replay
from paper.engine import PolicyError
from paper.fees import CENT, CENTICENT, FeeSchedule
from schemas.units import PRICE_SCALE, parse_price


def load_policy(spec: str, kwargs: dict[str, Any] | None = None) -> Actor:
    """``module:Class`` -> an instance; ``ValueError`` saying what to fix."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"--policy {spec!r}: expected module:Class, e.g. paper.policies:DoNothing")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"--policy {spec!r}: cannot import {module!r} ({exc})") from None
    cls = getattr(mod, name, None)
    if cls is None:
        raise ValueError(f"--policy {spec!r}: {module!r} has no {name!r}")
    actor = cls(**(kwargs or {}))
    if not callable(getattr(actor, "on_event", None)):
        raise ValueError(f"--policy {spec!r}: {name} has no on_event(observation) method")
    return actor


def _kv(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"--policy-arg {item!r}: expected name=value")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="kalshi-paper",
        description="Paper-trade a policy on the recorder's live tap or on a recorded session. "
        "Never places a real order.",
    )
    p.add_argument("--policy", required=True, help="module:Class with on_event(observation)")
    p.add_argument("--policy-arg", action="append", default=[], help="name=value for the policy")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tap", metavar="URL", help="the recorder's live tap (ws://...)")
    src.add_argument("--replay", metavar="DATA", type=Path, help="a recorder data directory")
    p.add_argument("--session", type=int, help="with --replay: session id (default: the latest)")
    p.add_argument("--markets", nargs="+", help="only these market tickers")
    p.add_argument(
        "--data-dir", type=Path, help="where the paper log goes (default: next to the session's)"
    )
    p.add_argument("--token", help="the tap's token (beyond loopback)")
    p.add_argument("--cash", default="1000", help="starting balance in dollars (default 1000)")
    p.add_argument("--maker-fee-series", nargs="*", default=[], help="series charging maker fees")
    p.add_argument(
        "--direct-member", action="store_true", help="balance precision $0.0001, not $0.01"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    try:
        actor = load_policy(a.policy, _kv(a.policy_arg))
        cash = parse_price(a.cash)
    except ValueError as exc:
        print(f"kalshi-paper: error: {exc}", file=sys.stderr)
        return 2
    broker = Broker(
        cash,
        fees=FeeSchedule(balance_precision=CENTICENT if a.direct_member else CENT),
        maker_fee_series=frozenset(a.maker_fee_series),
    )
    if a.replay is not None and not (a.replay / "segments").is_dir():
        print(
            f"kalshi-paper: error: {a.replay} has no segments/ (point --replay at a recorder "
            "--data-dir)",
            file=sys.stderr,
        )
        return 2
    log_dir: Path | str = a.data_dir or a.replay or "auto"

    async def run() -> RunResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if a.tap is not None:
            return await run_feed(
                a.tap,
                actor,
                log_dir=log_dir,
                broker=broker,
                markets=a.markets,
                token=a.token,
                stop=stop,
            )
        return await run_replay(
            a.replay,
            actor,
            session_id=a.session,
            markets=a.markets,
            log_dir=log_dir,
            broker=broker,
        )

    try:
        result = asyncio.run(run())
    except PolicyError as exc:
        print(f"kalshi-paper: error: {exc}", file=sys.stderr)
        return 3
    except (FeedError, OSError, TimeoutError) as exc:
        print(f"kalshi-paper: error: the feed failed: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. no such session
        print(f"kalshi-paper: error: {exc}", file=sys.stderr)
        return 2
    summary = result.session.summary()
    summary["log"] = None if result.log_file is None else str(result.log_file)
    summary["pnl_usd"] = (result.session.broker.cash - cash) / PRICE_SCALE
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

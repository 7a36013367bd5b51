"""Every recorder setting in one place, each with the reason for its default.

Precedence: command-line flag > environment variable > built-in default. ``--print-config`` shows
the effective settings with secrets redacted (the key *path* is shown, never the key).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENDPOINTS = {
    # Legacy hosts "remain supported" per the 2026 docs; the protocol notes default to them.
    "prod": (
        "wss://api.elections.kalshi.com/trade-api/ws/v2",
        "https://api.elections.kalshi.com/trade-api/v2",
    ),
    "demo": (
        "wss://demo-api.kalshi.co/trade-api/ws/v2",
        "https://demo-api.kalshi.co/trade-api/v2",
    ),
}


@dataclass
class Settings:
    """The recorder's configuration. Field comments explain each default."""

    env: str = "prod"
    ws_url: str | None = None  # overrides the --env WebSocket URL (simulator, other exchanges)
    rest_url: str | None = None
    key_id: str | None = None  # KALSHI_API_KEY_ID
    private_key: str | None = None  # KALSHI_PRIVATE_KEY_PATH (path only; the key is never shown)
    data_dir: Path = Path("data")
    discovery: str = "lifecycle"  # "rest" is the spec's rollback (LIFECYCLE_DISCOVERY_MODE=false)
    rest_poll_s: float = 30.0  # REST discovery: one markets listing per 30 s stays far below limits
    adopt_open_markets: bool = False  # spec: markets already open at start are skipped by default
    include: list[str] = field(default_factory=list)  # ticker/event/series globs; empty = all
    exclude: list[str] = field(default_factory=list)
    include_mve: bool = False  # KXMVE combos are numerous and rarely traded: opt-in
    shard: tuple[int, int] = (0, 1)
    connections: int = 1  # order-book connections; exchanges cap what one connection carries
    max_markets_per_sid: int = 200  # below the reported 256 cap; one gap re-snapshots <= 200 books
    max_tickers_per_command: int = 100  # peers saw connections killed by huge subscribe bursts
    debounce_s: float = 0.005  # batch markets created together into one command
    min_command_interval_s: float = 0.02  # pace commands: <= 50/s per connection
    flush_interval_s: float = 0.1  # invariant 7: kill -9 loses at most ~100 ms
    fsync_interval_s: float = 1.0  # invariant 7: power loss loses at most ~1 s
    roll_seconds: float = 3600.0  # a day is ~24 files per session, not thousands
    roll_bytes: int = 256 * 2**20
    disk_limit_bytes: int | None = None  # treat the data dir as full beyond this (tests, quotas)
    ping_interval_s: float = 10.0  # our own pings; the exchange pings every 10 s too
    ping_timeout_s: float = 20.0  # watchdog on the connection, never on quiet markets
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_reset_after_s: float = 60.0  # stable this long -> next failure starts from initial
    auth_failures_fatal: int = 1  # a rejected handshake (401/403) is a wrong key: exit, no loop
    status_interval_s: float = 10.0
    metrics_port: int | None = None  # Prometheus /metrics and /healthz on 127.0.0.1
    duration_s: float | None = None  # stop after this long (demo, tests)
    log_format: str = "text"
    simulate: bool = False  # start the built-in simulator on loopback and record from it
    simulate_args: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> tuple[str, str]:
        ws, rest = ENDPOINTS[self.env]
        return self.ws_url or ws, self.rest_url or rest

    @property
    def lifecycle_mode(self) -> bool:
        return self.discovery == "lifecycle"

    def redacted(self) -> dict[str, Any]:
        """Settings as plain data for --print-config and the session-start record."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else v
        out["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        return out


def _env_bool(name: str) -> bool | None:
    v = os.environ.get(name)
    if v is None:
        return None
    return v.strip().lower() in ("1", "true", "yes", "on")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/2") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kalshi-recorder",
        description="Record complete Kalshi market lives into crash-safe Parquet segments.",
    )
    a = p.add_argument
    a("--env", choices=sorted(ENDPOINTS), help="exchange environment (default prod)")
    a("--ws-url", help="WebSocket URL (overrides --env)")
    a("--rest-url", help="REST base URL ending in /trade-api/v2 (overrides --env)")
    a("--key-id", help="API key id (env KALSHI_API_KEY_ID)")
    a("--private-key", help="PEM private key path (env KALSHI_PRIVATE_KEY_PATH)")
    a("--data-dir", type=Path, help="where live/ and segments/ go (default ./data)")
    a("--discovery", choices=["lifecycle", "rest"], help="market discovery mode")
    a("--rest-poll", type=float, dest="rest_poll_s", help="REST discovery interval, s")
    a("--adopt-open-markets", action="store_true", default=None)
    a("--include", action="append", help="glob on ticker/event/series (repeatable)")
    a("--exclude", action="append", help="glob on ticker/event/series (repeatable)")
    a("--include-mve", action="store_true", default=None)
    a("--shard", type=_shard, help="i/n: record only markets whose ticker hashes to shard i")
    a("--connections", type=int, help="order-book connections (default 1)")
    a("--max-markets-per-sid", type=int)
    a("--flush-interval", type=float, dest="flush_interval_s")
    a("--fsync-interval", type=float, dest="fsync_interval_s")
    a("--roll-seconds", type=float)
    a("--roll-bytes", type=int)
    a("--disk-limit-bytes", type=int)
    a("--status-interval", type=float, dest="status_interval_s")
    a("--metrics-port", type=int, help="serve /metrics and /healthz on 127.0.0.1:PORT")
    a("--duration", type=float, dest="duration_s", help="stop after this many seconds")
    a("--log-format", choices=["text", "json"])
    a("--simulate", action="store_true", default=None, help="record from the built-in simulator")
    a(
        "--simulate-arg",
        action="append",
        dest="simulate_args",
        help="extra argument for the simulator's serve command (repeatable)",
    )
    a("--print-config", action="store_true", help="print the effective settings and exit")
    return p


def settings_from(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Merge flags over environment over defaults."""
    ns = build_parser().parse_args(argv)
    s = Settings()
    env = os.environ
    # environment
    s.key_id = env.get("KALSHI_API_KEY_ID") or s.key_id
    s.private_key = env.get("KALSHI_PRIVATE_KEY_PATH") or s.private_key
    if env.get("KALSHI_ENV"):
        s.env = env["KALSHI_ENV"]
    if env.get("KALSHI_RECORDER_DATA_DIR"):
        s.data_dir = Path(env["KALSHI_RECORDER_DATA_DIR"])
    lm = _env_bool("LIFECYCLE_DISCOVERY_MODE")
    if lm is not None:
        s.discovery = "lifecycle" if lm else "rest"
    # flags
    for f in dataclasses.fields(s):
        v = getattr(ns, f.name, None)
        if v is not None:
            setattr(s, f.name, v)
    if s.env not in ENDPOINTS:
        raise SystemExit(f"unknown environment {s.env!r}; use one of {sorted(ENDPOINTS)}")
    return s, ns

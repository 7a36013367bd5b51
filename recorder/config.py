"""Every recorder setting in one place, each with the reason for its default.

Where a setting comes from, highest precedence first:

1. a command-line flag (``--data-dir /srv/kalshi``);
2. an environment variable: the historical names ``KALSHI_API_KEY_ID``, ``KALSHI_PRIVATE_KEY_PATH``,
   ``KALSHI_ENV``, ``KALSHI_WS_URL`` and ``LIFECYCLE_DISCOVERY_MODE`` (the specification's names),
   ``TAP_TOKEN`` (the tap's token: environment only, never a flag) and, for every field
   of ``Settings``, ``KALSHI_RECORDER_<FIELD>`` (``KALSHI_RECORDER_DATA_DIR``,
   ``KALSHI_RECORDER_METRICS_PORT``; lists are comma separated, booleans 1/true/yes/on);
3. the optional TOML file named by ``--config FILE`` or ``KALSHI_RECORDER_CONFIG`` (the flag wins),
   whose top-level keys are the ``Settings`` field names (``data_dir``, ``connections``, ``shard =
   "0/2"``; the flag spellings ``rest_poll``/``flush_interval``/... and dashes are accepted too); an
   unknown key, a wrong type or an unreadable file is a configuration error (exit 2) naming the
   file and key;
4. the built-in default below.

``--print-config`` shows the effective settings with secrets redacted: the key *path* is shown,
never the key, and a value that looks like key material is never echoed, not even in an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

ENDPOINTS = {
    # Legacy hosts "remain supported" per the 2026 docs (docs/protocol.md §1).
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
    # Pacing (issue 11, docs/protocol.md §6): "a few commands per second" sustained, bursts
    # allowed. Peers saw ~2.9k commands in a burst kill a connection. 10/s with a burst of 20: a
    # storm of creations still becomes few commands (markets created meanwhile ride in the next,
    # batched, command), while ~6 commands/s of ordinary traffic never waits for a token.
    # Measured: 5/s (burst 10) made joins at 10 creations/s wait up to 400 ms (p99) for a token;
    # 10/s keeps p99 ~20 ms (BENCHMARKS.md, bench.recorder_latency).
    min_command_interval_s: float = 0.1
    command_burst: int = 20
    # Every command that expects an answer gets one within this, or the sid is freed and the truth
    # re-established (issue 11: an ok that never came froze a sid for ever). Replies take ms.
    command_timeout_s: float = 10.0
    # Error 16 ("market not found") this soon after a market was wanted is retried with backoff:
    # the exchange may list a new market a moment after announcing it.
    new_market_grace_s: float = 30.0
    # REST reconciliation on a live connection too (a lifecycle notice lost on a live connection
    # is otherwise never recovered); every 3 min costs a few requests per pass thanks to filters.
    reconcile_interval_s: float = 180.0
    # Missed markets are looked for from the session start less this: REST times may be whole
    # seconds and the exchange's clock differs from ours (measured from the REST Date header, to
    # the second, and added to this margin).
    clock_skew_margin_s: float = 30.0
    # Crash safety (ARCHITECTURE.md, Invariants): kill -9 loses at most the flush interval,
    # power loss at most the fsync interval.
    flush_interval_s: float = 0.1
    fsync_interval_s: float = 1.0
    roll_seconds: float = 3600.0  # a day is ~24 files per session, not thousands
    roll_bytes: int = 256 * 2**20
    disk_limit_bytes: int | None = None  # treat the data dir as full beyond this (tests, quotas)
    ping_interval_s: float = 10.0  # our own pings; the exchange pings every 10 s too
    # Keep-alive watches inbound silence, not pong payloads (the exchange's pong may be empty):
    # nothing at all (frame, ping, pong) for 30 s = dead connection (docs/protocol.md §6).
    silence_timeout_s: float = 30.0
    # A 4000-4999 close (auth, policy) this many times in a row ends the run with exit 2; one may
    # be a server restart, three are a person's problem.
    fatal_close_repeats: int = 3
    # A market whose values cannot be stored exactly (or whose book goes negative) is resynced
    # with backoff 0.5 s, 1 s, 2 s ... 30 s: a bad feed must not become a snapshot storm.
    resync_backoff_initial_s: float = 0.5
    resync_backoff_max_s: float = 30.0
    # A crossed book (best yes + best no > $1) is impossible; a transient one can be an in-flight
    # pair of deltas, one that lasts this long is resynced.
    crossed_grace_s: float = 2.0
    # Markets already left are remembered (so a replayed "created" cannot reopen them) until this
    # long after their "settled", or left_forget_s after leaving if no "settled" ever comes:
    # months-long runs keep memory bounded.
    left_memory_s: float = 3600.0
    left_forget_s: float = 14 * 86400.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_reset_after_s: float = 60.0  # stable this long -> next failure starts from initial
    status_interval_s: float = 10.0
    metrics_port: int | None = None  # Prometheus /metrics and /healthz on 127.0.0.1
    duration_s: float | None = None  # stop after this long (demo, tests)
    log_format: str = "text"  # "json": one JSON object per line, for journald / log shippers
    simulate: bool = False  # start the built-in simulator on loopback and record from it
    simulate_args: list[str] = field(default_factory=list)
    config_file: Path | None = None  # the TOML file these settings were read from, if any
    # The live tap (feed/, docs/tap-protocol.md): serve this session to actors in Kalshi's own
    # protocol. Off by default: nothing listens unless asked; loopback unless a token is set.
    tap: str | None = None  # HOST:PORT (port 0 = any free port, printed on stdout)
    tap_token: str | None = None  # TAP_TOKEN: required beyond loopback; never printed
    # A consumer may fall this many messages behind before it is lagged and re-snapshotted:
    # ~10 s of a busy market, and a bound on what one slow actor can cost in memory.
    tap_max_queue: int = 10_000
    # Hold the session's first record until a first consumer has subscribed, up to this long
    # (0 = never hold). For runs compared record for record with their replay (tests, research).
    tap_wait_s: float = 0.0

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
        if self.private_key is not None and _looks_like_key(self.private_key):
            out["private_key"] = REDACTED
        out["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        if self.tap_token is not None:
            out["tap_token"] = REDACTED_TOKEN
        return out


REDACTED = "<redacted: key material; give the path of the PEM file instead>"
REDACTED_TOKEN = "<redacted>"
CONFIG_ENV = "KALSHI_RECORDER_CONFIG"
ENV_PREFIX = "KALSHI_RECORDER_"


def _looks_like_key(value: str) -> bool:
    return "-----BEGIN" in value or "PRIVATE KEY" in value or "\n" in value


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
    a("--command-timeout", type=float, dest="command_timeout_s", help="answer deadline, s")
    a("--min-command-interval", type=float, dest="min_command_interval_s")
    a(
        "--reconcile-interval",
        type=float,
        dest="reconcile_interval_s",
        help="REST reconciliation period on a live connection, s (0 = after reconnects only)",
    )
    a("--clock-skew-margin", type=float, dest="clock_skew_margin_s")
    a("--silence-timeout", type=float, dest="silence_timeout_s")
    a("--flush-interval", type=float, dest="flush_interval_s")
    a("--fsync-interval", type=float, dest="fsync_interval_s")
    a("--roll-seconds", type=float)
    a("--roll-bytes", type=int)
    a("--disk-limit-bytes", type=int)
    a("--status-interval", type=float, dest="status_interval_s")
    a(
        "--metrics-port",
        type=int,
        help="serve /metrics and /healthz on 127.0.0.1:PORT (0: a free one, printed)",
    )
    a("--duration", type=float, dest="duration_s", help="stop after this many seconds")
    a("--log-format", choices=["text", "json"])
    a(
        "--tap",
        metavar="HOST:PORT",
        help="serve this session live to actors in Kalshi's WebSocket protocol "
        "(docs/tap-protocol.md); loopback unless TAP_TOKEN is set",
    )
    a(
        "--tap-max-queue",
        type=int,
        help="messages a tap consumer may lag before it is re-snapshotted",
    )
    a("--tap-wait", type=float, dest="tap_wait_s", help="hold recording until a tap consumer, s")
    a("--simulate", action="store_true", default=None, help="record from the built-in simulator")
    a(
        "--simulate-arg",
        action="append",
        dest="simulate_args",
        help="extra argument for the simulator's serve command (repeatable)",
    )
    a(
        "--config",
        type=Path,
        help=f"TOML settings file (env {CONFIG_ENV}); flags > environment > file > defaults",
    )
    a("--print-config", action="store_true", help="print the effective settings and exit")
    return p


_NUMBERS: dict[str, tuple[Callable[[Any], Any], type | tuple[type, ...], str]] = {
    "int": (int, int, "an integer"),  # a TOML float is not an int: refused, never truncated
    "float": (float, (int, float), "a number"),
}
"""Numeric field types: converter, the TOML types taken as they are (bool never), what to say."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names where it came from."""


def _coerce(name: str, value: Any, where: str) -> Any:
    """Convert a TOML or environment value to the type of ``Settings.<name>``.

    Environment values are strings; TOML values may already be typed. Errors name ``where``
    (file and key, or the variable) but never repeat a value that looks like key material.
    """
    kind = str(_FIELDS[name].type).replace(" ", "")
    optional = kind.endswith("|None")
    base = kind.removesuffix("|None")
    shown = "<hidden>" if isinstance(value, str) and _looks_like_key(value) else repr(value)

    def bad(expected: str) -> NoReturn:
        raise ConfigError(f"{where}: expected {expected}, got {shown}")

    if optional and (value is None or (isinstance(value, str) and value.strip() == "")):
        return None
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        bad("true or false")
    if base in _NUMBERS:
        convert, accepted, expected = _NUMBERS[base]
        if isinstance(value, accepted) and not isinstance(value, bool):
            return convert(value)
        if isinstance(value, str):
            try:
                return convert(value.strip())
            except ValueError:
                pass
        bad(expected)
    if base == "Path":
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        bad("a path (string)")
    if base == "str":
        if isinstance(value, str):
            return value
        bad("a string")
    if base == "list[str]":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        bad("a list of strings")
    if base == "tuple[int,int]":
        if isinstance(value, str):
            try:
                return _shard(value)
            except argparse.ArgumentTypeError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return _shard(f"{value[0]}/{value[1]}")
        bad('"i/n", e.g. "0/2"')
    raise AssertionError(f"no converter for Settings.{name}: {kind}")  # pragma: no cover


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_FILE_ONLY_EXCLUDED = frozenset({"config_file"})


def _toml_aliases() -> dict[str, str]:
    """Accepted TOML keys -> field: field names plus the flags' spellings (``rest_poll``)."""
    aliases = {n: n for n in _FIELDS if n not in _FILE_ONLY_EXCLUDED}
    for action in build_parser()._actions:
        dest = action.dest
        if dest in aliases:
            for opt in action.option_strings:
                if opt.startswith("--"):
                    aliases[opt[2:].replace("-", "_")] = dest
    aliases["simulate_arg"] = "simulate_args"
    return aliases


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file, keyed by field name and converted; ``ConfigError`` if bad."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    aliases = _toml_aliases()
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key.replace("-", "_"))
        if name is None:
            known = ", ".join(sorted(n for n in _FIELDS if n not in _FILE_ONLY_EXCLUDED))
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: {known})")
        out[name] = _coerce(name, value, f"config file {path}, key {key!r}")
    return out


def _from_environment(env: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        var = ENV_PREFIX + name.upper()
        if name not in _FILE_ONLY_EXCLUDED and env.get(var) is not None:
            out[name] = _coerce(name, env[var], f"environment variable {var}")
    # the historical / spec names (they win over the generic ones: they are what people set)
    if env.get("KALSHI_API_KEY_ID"):
        out["key_id"] = env["KALSHI_API_KEY_ID"]
    if env.get("KALSHI_PRIVATE_KEY_PATH"):
        out["private_key"] = env["KALSHI_PRIVATE_KEY_PATH"]
    if env.get("KALSHI_ENV"):
        out["env"] = env["KALSHI_ENV"]
    if env.get("KALSHI_WS_URL"):  # the specification's name for the WebSocket URL
        out["ws_url"] = env["KALSHI_WS_URL"]
    if env.get("TAP_TOKEN"):
        out["tap_token"] = env["TAP_TOKEN"]
    lm = _env_bool("LIFECYCLE_DISCOVERY_MODE")
    if lm is not None:
        out["discovery"] = "lifecycle" if lm else "rest"
    return out


def settings_from(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Merge flags over environment over the TOML file over defaults (see the module docstring).

    A configuration problem exits with status 2 (the recorder's "a person must fix this" code)
    and a message naming the file, key or variable.
    """
    parser = build_parser()
    ns = parser.parse_args(argv)
    env = os.environ
    s = Settings()
    try:
        config_path: Path | None = ns.config
        if config_path is None and env.get(CONFIG_ENV):
            config_path = Path(env[CONFIG_ENV]).expanduser()
        layers: list[dict[str, Any]] = []
        if config_path is not None:
            layers.append(read_config_file(config_path))
        layers.append(_from_environment(env))
        layers.append(
            {
                f.name: getattr(ns, f.name)
                for f in dataclasses.fields(s)
                if getattr(ns, f.name, None) is not None
            }
        )
    except ConfigError as exc:
        parser.error(str(exc))
    for layer in layers:
        for name, value in layer.items():
            setattr(s, name, value)
    s.config_file = config_path
    if s.env not in ENDPOINTS:
        parser.error(f"unknown environment {s.env!r}; use one of {sorted(ENDPOINTS)}")
    if s.discovery not in ("lifecycle", "rest"):
        parser.error(f"unknown discovery mode {s.discovery!r}; use lifecycle or rest")
    if s.log_format not in ("text", "json"):
        parser.error(f"unknown log format {s.log_format!r}; use text or json")
    if s.private_key is not None and _looks_like_key(s.private_key):
        parser.error(
            "the private key setting holds key material; it must be the *path* of the PEM file "
            "(KALSHI_PRIVATE_KEY_PATH / --private-key / private_key in the TOML file)"
        )
    return s, ns

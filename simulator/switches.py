"""One switch per uncertain point of the protocol: names, allowed values, defaults, sections.

Each switch is a row of the table in ``docs/protocol.md`` §9 (what the sources say, how the
recorder copes); ``section`` names the part of ``docs/protocol.md`` that describes the point.
The table is the single definition used by ``kalshi-simulator serve`` (one flag per switch, named
after it with dashes, documented in ``--help`` with its section), by
:func:`config_from_switches` (a dict of switch values -> a serve configuration; the probe maps
what it saw on the real exchange to such a dict) and by the recorder's variant matrix test.

Defaults are the most likely behaviour of the real exchange; fault-like switches (rates, times)
default to off. Where the sources give two versions and no evidence favours one, the default is the
one the simulator already played before the switch existed, so older recordings and tests keep
their meaning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, assert_never

from simulator.faults import FaultConfig
from simulator.market import GenConfig
from simulator.server import SimConfig
from simulator.wire import MARKETS_PARAMS, ProtocolOptions


class Kind(Enum):
    """How a switch's value is written (a dict value or a command-line flag) and checked."""

    CHOICE = "choice"  # one of ``allowed``
    BOOL = "bool"
    FLOAT = "float"  # >= 0, but for the clock offset
    INT = "int"
    FLOATS = "floats"  # comma list
    INTS = "ints"  # comma list
    NAMES = "names"  # comma list, each among ``allowed`` where that is a tuple


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _items(value: Any) -> Iterator[Any]:
    """A comma list (or a sequence) as its non-empty items, strings stripped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    for x in items:
        x = x.strip() if isinstance(x, str) else x
        if x != "":
            yield x


@dataclass(frozen=True)
class Switch:
    """One switch: ``name`` is the config field, the dict key and (with dashes) the CLI flag."""

    name: str
    where: str  # "protocol" (ProtocolOptions), "faults" (FaultConfig), "generator" (GenConfig)
    kind: Kind
    allowed: tuple[Any, ...] | str  # the choices, or a description of the range
    section: str  # the sections of docs/protocol.md that describe the point
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> Any:
        cls = {"protocol": ProtocolOptions, "faults": FaultConfig, "generator": GenConfig}
        return getattr(cls[self.where](), self.name)

    def coerce(self, value: Any) -> Any:
        """A value from a dict or the command line, checked; ValueError says what is allowed."""
        try:
            out = self._coerce(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"switch {self.name}: {value!r} is not allowed; expected {self.describe()}"
            ) from None
        if self.kind is Kind.CHOICE and out not in self.allowed:
            raise ValueError(f"switch {self.name}: {value!r} is not one of {self.describe()}")
        if self.kind is Kind.NAMES and isinstance(self.allowed, tuple):
            bad = [x for x in out if x not in self.allowed]
            if bad:
                raise ValueError(f"switch {self.name}: {bad} not among {self.describe()}")
        return out

    def _coerce(self, value: Any) -> Any:
        match self.kind:
            case Kind.CHOICE:
                return str(value)
            case Kind.BOOL:
                if isinstance(value, bool):
                    return value
                if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                    return value.lower() in _TRUE
                raise ValueError(value)
            case Kind.FLOAT:
                if isinstance(value, bool):
                    raise ValueError(value)
                v = float(value)
                if v < 0 and self.name != "clock_offset_s":
                    raise ValueError(value)
                return v
            case Kind.INT:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                return int(value)
            case Kind.FLOATS:
                return tuple(float(x) for x in _items(value))
            case Kind.INTS:
                return tuple(int(x) for x in _items(value))
            case Kind.NAMES:
                return tuple(str(x) for x in _items(value))
            case _:
                assert_never(self.kind)

    def describe(self) -> str:
        if isinstance(self.allowed, tuple):
            return "|".join(str(a) for a in self.allowed)
        return self.allowed


_PARAMS = tuple(sorted(MARKETS_PARAMS))

SWITCHES: tuple[Switch, ...] = (
    Switch(
        "legacy",
        "protocol",
        Kind.BOOL,
        (False, True),
        "§4",
        "legacy integer wire format (cents, whole contracts, RFC3339 delta ts)",
    ),
    Switch(
        "empty_side",
        "protocol",
        Kind.CHOICE,
        ("omit", "empty_list"),
        "§4",
        "an empty book side in a snapshot: key absent, or an empty list",
    ),
    Switch(
        "lifecycle_seq",
        "protocol",
        Kind.BOOL,
        (False, True),
        "§5, §4",
        "lifecycle/event messages carry a per-sid seq",
    ),
    Switch(
        "reply_seq",
        "protocol",
        Kind.CHOICE,
        ("consume", "echo"),
        "§5",
        "ok/unsubscribed replies consume a seq value, or echo the sid's last one",
    ),
    Switch(
        "duplicate_subscribe",
        "protocol",
        Kind.CHOICE,
        ("new_sid", "error", "merge"),
        "§3, §5",
        "a repeat subscribe to a channel already subscribed: a new sid, error 6, or merged "
        "into the existing sid (an ok without sid; new tickers added and snapshotted)",
    ),
    Switch(
        "max_markets_per_sub",
        "protocol",
        Kind.INT,
        ">= 1",
        "§3, §6",
        "markets per subscription before error 26",
    ),
    Switch("seq_start", "protocol", Kind.INT, ">= 0", "§5", "first seq value of a sid"),
    Switch(
        "get_snapshot_ok",
        "protocol",
        Kind.CHOICE,
        ("before", "after", "none"),
        "§3",
        "update_subscription get_snapshot: its ok before the snapshots, after them, or none",
    ),
    Switch(
        "reply_id",
        "protocol",
        Kind.CHOICE,
        ("always", "sid_replies", "never"),
        "§3",
        "which replies echo the command id: all; all but subscribed/ok/unsubscribed (errors "
        "and list_subscriptions keep it); none",
    ),
    Switch(
        "pong",
        "protocol",
        Kind.CHOICE,
        ("echo", "empty"),
        "§6",
        "the pong to a client's ping: echoes its payload (RFC 6455) or is empty",
    ),
    Switch(
        "new_market_not_found_s",
        "protocol",
        Kind.FLOAT,
        "seconds >= 0",
        "§3",
        "error 16 (market not found) on subscribe/add_markets for a market created less "
        "than this many seconds ago",
    ),
    Switch(
        "clock_offset_s",
        "protocol",
        Kind.FLOAT,
        "seconds, may be negative",
        "§2, §7",
        "exchange clock minus client clock: shifts REST times (and the *_ts filters), the "
        "REST Date header, lifecycle *_ts fields and delta ts_ms",
    ),
    Switch(
        "rest_time_precision",
        "protocol",
        Kind.CHOICE,
        ("ms", "s"),
        "§7",
        "REST created/updated/open/close times with milliseconds, or whole seconds (truncated)",
    ),
    Switch(
        "rest_unsupported_params",
        "protocol",
        Kind.NAMES,
        _PARAMS,
        "§7",
        "GET /markets parameters this exchange does not know (comma list), e.g. "
        "min_created_ts,tickers,mve_filter",
    ),
    Switch(
        "rest_unknown_params",
        "protocol",
        Kind.CHOICE,
        ("ignore", "reject"),
        "§7",
        "unknown REST query parameters: silently ignored (the filter does nothing) or 400",
    ),
    Switch(
        "lifecycle_drop_rate",
        "faults",
        Kind.FLOAT,
        "probability 0..1",
        "§9",
        "share of lifecycle notices lost on every live connection (REST stays truthful)",
    ),
    Switch(
        "async_error_rate",
        "faults",
        Kind.FLOAT,
        "per sid per second",
        "§3, §5",
        "asynchronous terminal errors on a live sid (the sid ends: resubscribe)",
    ),
    Switch(
        "async_error_codes",
        "faults",
        Kind.INTS,
        (10, 17, 25),
        "§3",
        "codes the asynchronous errors carry (comma list of 10, 17, 25)",
    ),
    Switch(
        "close_code",
        "faults",
        Kind.INT,
        "1000-4999, e.g. 4000-4999",
        "§6",
        "close code of --close-at/--close-rate closes (4001 = authentication)",
    ),
    Switch(
        "close_at",
        "faults",
        Kind.FLOATS,
        "seconds after start",
        "§6",
        "close every open connection with --close-code at these times (comma list)",
    ),
    Switch(
        "close_rate",
        "faults",
        Kind.FLOAT,
        "per connection per second",
        "§6",
        "close connections with --close-code at this rate",
    ),
    Switch(
        "mve_fraction",
        "generator",
        Kind.FLOAT,
        "probability 0..1",
        "§4",
        "share of new events that are MVE (KXMVE...) combos, announced only on "
        "multivariate_market_lifecycle",
    ),
)

BY_NAME: dict[str, Switch] = {s.name: s for s in SWITCHES}


def defaults() -> dict[str, Any]:
    return {s.name: s.default for s in SWITCHES}


def switch_values(cfg: SimConfig) -> dict[str, Any]:
    """The switch values a configuration plays (the inverse of :func:`config_from_switches`)."""
    parts = {"protocol": cfg.protocol, "faults": cfg.faults, "generator": cfg.generator}
    out = {s.name: getattr(parts[s.where], s.name) for s in SWITCHES}
    out["legacy"] = bool(cfg.legacy or cfg.protocol.legacy)
    return out


def config_from_switches(
    values: Mapping[str, Any], base: SimConfig | None = None, **sim: Any
) -> SimConfig:
    """A serve configuration playing ``values`` (switch name -> value; strings as on the command
    line are accepted too) on top of ``base`` (default: ``SimConfig(**sim)``). Unknown names and
    disallowed values raise ValueError naming the switch and what is allowed."""
    cfg = base if base is not None else SimConfig(**sim)
    grouped: dict[str, dict[str, Any]] = {"protocol": {}, "faults": {}, "generator": {}}
    for name, value in values.items():
        sw = BY_NAME.get(name)
        if sw is None:
            raise ValueError(f"unknown switch {name!r}; known: {', '.join(sorted(BY_NAME))}")
        grouped[sw.where][name] = sw.coerce(value)
    legacy = grouped["protocol"].get("legacy")
    return dataclasses.replace(
        cfg,
        legacy=cfg.legacy if legacy is None else legacy,
        protocol=dataclasses.replace(cfg.protocol, **grouped["protocol"]),
        faults=dataclasses.replace(cfg.faults, **grouped["faults"]),
        generator=dataclasses.replace(
            cfg.generator,
            **grouped["generator"],
            **({} if legacy is None else {"legacy": legacy}),
        ),
    )

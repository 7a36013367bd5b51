"""A probe report as simulator switches: ``kalshi-simulator serve --profile REPORT.json``.

The inverse of ``kalshi-probe``: each answer the probe measured on a real exchange becomes the
switch value that makes the simulator answer the same way. Only what was measured is set; an
answer the probe could not get ("unknown") leaves that switch at its default, and fault-like
switches (drop rates, asynchronous errors, forced closes, the market cap per subscription) are
never set from a report: one minute of probing cannot measure a rate, and a profile must not turn
faults on by itself.

Use :func:`switches_from_report` (a report dict -> switch dict), :func:`load_profile` (a report
file -> switch dict, checked against ``simulator.switches``) and :func:`merge` (profile values
under explicit flags), then ``simulator.switches.config_from_switches``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probe.report import load_report
from simulator.switches import BY_NAME, defaults

# The REST filters the probe tries, by the GET /markets parameter that carries each.
FILTER_PARAMS = {
    "tickers": "tickers",
    "min_created_ts": "min_created_ts",
    "mve_filter": "mve_filter",
}
CHOICES = {  # answer -> switch, for answers whose values are already switch values
    "empty_side": ("empty_side", ("omit", "empty_list")),
    "reply_seq": ("reply_seq", ("consume", "echo")),
    "get_snapshot_ok": ("get_snapshot_ok", ("before", "after", "none")),
    "reply_id": ("reply_id", ("always", "sid_replies", "never")),
    "pong": ("pong", ("echo", "empty")),
}
REPEAT_SUBSCRIBE = {"new_sid": "new_sid", "error": "error", "merged": "merge", "no_reply": "merge"}


def _value(answers: Mapping[str, Any], key: str) -> Any:
    a = answers.get(key)
    return a.get("value") if isinstance(a, dict) else None


def switches_from_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """Switch values (``simulator.switches`` names) for what the report measured."""
    answers = report.get("answers")
    if not isinstance(answers, Mapping):
        raise ValueError("probe report has no answers; run kalshi-probe again")
    out: dict[str, Any] = {}
    for key, (switch, allowed) in CHOICES.items():
        v = _value(answers, key)
        if v in allowed:
            out[switch] = v
    v = _value(answers, "repeat_subscribe")
    if v in REPEAT_SUBSCRIBE:
        out["duplicate_subscribe"] = REPEAT_SUBSCRIBE[v]
    v = _value(answers, "lifecycle_seq")
    if v in ("yes", "no"):
        out["lifecycle_seq"] = v == "yes"
    v = _value(answers, "wire_format")
    if v in ("current", "legacy"):
        out["legacy"] = v == "legacy"
    v = _value(answers, "seq_start")
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        out["seq_start"] = v
    v = _value(answers, "rest_time_precision")
    if isinstance(v, Mapping):
        digits = [d for k, d in v.items() if k in ("created_time", "updated_time")]
        if digits and all(isinstance(d, int) for d in digits):
            out["rest_time_precision"] = "ms" if max(digits) > 0 else "s"
    v = _value(answers, "rest_filters")
    if isinstance(v, Mapping):
        rejected = [p for f, p in FILTER_PARAMS.items() if v.get(f) == "rejected"]
        ignored = [p for f, p in FILTER_PARAMS.items() if v.get(f) == "ignored"]
        if any(v.get(f) in ("honored", "rejected", "ignored") for f in FILTER_PARAMS):
            out["rest_unsupported_params"] = tuple(sorted(rejected + ignored))
        if rejected or ignored:
            # the simulator has one rule for every unknown parameter: rejection wins (a 400 is
            # what breaks a client; an ignored filter only returns more than asked)
            out["rest_unknown_params"] = "reject" if rejected else "ignore"
    v = _value(answers, "clock_offset_ms")
    if isinstance(v, Mapping) and isinstance(v.get("estimate"), int):
        out["clock_offset_s"] = float(round(v["estimate"] / 1000))
    v = _value(answers, "young_market")
    if isinstance(v, Mapping):
        low, high = v.get("not_found_after_s"), v.get("accepted_after_s")
        if low is None and isinstance(high, int | float):
            out["new_market_not_found_s"] = 0.0
        elif isinstance(low, int | float):
            # not found at `low`, found at `high`: the window ends in (low, high]; take the end
            # so the simulator is at least as strict as the exchange (one retry step if unseen)
            end = high if isinstance(high, int | float) else low + 1.0
            out["new_market_not_found_s"] = math.ceil(end * 10) / 10
    channel = _value(answers, "mve_channel")
    share = _value(answers, "mve_share")
    if channel == "error":
        out["mve_fraction"] = 0.0
    elif channel == "subscribed" and isinstance(share, int | float) and not isinstance(share, bool):
        out["mve_fraction"] = float(min(1.0, max(0.0, share)))
    for name, value in out.items():  # a report that maps outside the table is a bug here
        out[name] = BY_NAME[name].coerce(value)
    return out


def load_profile(path: Path) -> dict[str, Any]:
    """The switch values of a probe report file; ValueError (one line, actionable) if unusable."""
    return switches_from_report(load_report(path))


def merge(flags: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """Switch values from the command line over a profile: a flag left at its default takes the
    profile's value; a flag set to something else wins (so one point can be overridden)."""
    base = defaults()
    out = dict(flags)
    for name, value in profile.items():
        if name not in out or out[name] == base[name]:
            out[name] = value
    return out

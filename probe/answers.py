"""The protocol's open questions (``docs/protocol.md`` §9), and how each answer is read off the
raw frames.

Plain functions over a :class:`~probe.transcript.Transcript`: no sockets, no clock. Each answer
carries a machine ``value`` (the words :mod:`simulator.profile` maps to switches), a one-line
``summary`` for people, and ``evidence``: the transcript entries (``n``) that show it. Values:

==================== ===================================================================
question             value
==================== ===================================================================
get_snapshot_ok      "before" | "after" (the snapshots) | "none" | "unknown"
reply_id             "always" | "sid_replies" (not subscribed/ok/unsubscribed) | "never" | "mixed"
repeat_subscribe     "merged" | "new_sid" | "error" | "no_reply" | "unknown"
reply_seq            "consume" | "echo" | "absent" | "mixed" | "unknown"
lifecycle_seq        "yes" | "no" | "mixed" | "unknown"
empty_side           "omit" | "empty_list" | "mixed" | "unknown"
pong                 "echo" | "empty" | "other" | "none" | "unknown"
rest_filters         {filter: "honored" | "accepted" | "ignored" | "rejected" | "error" | ...}
rest_time_precision  {field: fractional digits (max seen)} (empty if no market was listed)
end_cursor           "empty_string" | "null" | "absent" | "more_pages" | "unknown"
clock_offset_ms      {"estimate", "low", "high"}: exchange clock minus ours, ms (None = unbounded)
errors               {case: {"type", "code", "msg", "has_id", ...}}
mve_channel          "subscribed" | "error" | "no_reply" | "unknown"
mve_share            share of created notices that came on the MVE channel (0..1) | "unknown"
close_code           int | None
seq_start            int (first seq of a book subscription) | "mixed" | "unknown"
wire_format          "current" | "legacy" | "unknown"
young_market         {"not_found_after_s", "accepted_after_s"} (seconds after the created notice)
==================== ===================================================================
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from probe.script import ORDERBOOK_CHANNEL, REPLY_TYPES
from probe.transcript import Entry, Transcript
from recorder.subscriptions import CODE_MARKET_NOT_FOUND, RESUBSCRIBE_CODES
from schemas.wire import (
    DELTA_MSG,
    LIFECYCLE_CHANNEL,
    LIFECYCLE_CHANNEL_MSG_TYPES,
    MVE_LIFECYCLE_CHANNEL,
    SNAPSHOT_MSG,
    rfc3339_ms,
)

ASYNC_ERROR_CODES = RESUBSCRIBE_CODES  # arrive on a live sid, not as a command's reply
SIDE_KEYS = {"fp": ("yes_dollars_fp", "no_dollars_fp"), "legacy": ("yes", "no")}
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(\d+))?(?:Z|[+-]\d\d:\d\d)$")


@dataclass
class Answer:
    key: str
    question: str
    value: Any
    summary: str
    evidence: list[int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- helpers ---------------------------------------------------------------------------------


def _out_command(t: Transcript, step: str) -> tuple[Entry, dict[str, Any]] | None:
    return next(((e, o) for e, o in t.ws_out() if e["step"] == step), None)


def _asked(t: Transcript, step: str) -> tuple[Entry, list[tuple[Entry, dict[str, Any]]]] | None:
    """The command sent at ``step`` and its replies (see :func:`_replies`); None if not sent."""
    found = _out_command(t, step)
    return None if found is None else (found[0], _replies(t, *found))


def _next_out_n(t: Transcript, after: int) -> int:
    """Index of the next outbound ws entry after entry ``after`` (or the end)."""
    for e in t.entries[after + 1 :]:
        if e["dir"] == "out" and e["kind"] in ("ws", "ping"):
            return int(e["n"])
    return len(t.entries)


def _replies(t: Transcript, out: Entry, body: dict[str, Any]) -> list[tuple[Entry, dict[str, Any]]]:
    """Replies to one command: frames with its id anywhere after it, and id-less reply frames
    that arrived before the next command was sent (the only way to match them)."""
    cid = body.get("id")
    end = _next_out_n(t, out["n"])
    got = []
    for e, f in t.ws_in():
        if e["n"] <= out["n"] or f.get("type") not in REPLY_TYPES:
            continue
        by_id = cid is not None and f.get("id") == cid
        by_window = "id" not in f and e["n"] < end and not _async_error(f)
        if by_id or by_window:
            got.append((e, f))
    return got


def _async_error(f: dict[str, Any]) -> bool:
    msg = f.get("msg")
    return (
        f.get("type") == "error" and isinstance(msg, dict) and msg.get("code") in ASYNC_ERROR_CODES
    )


def _window(t: Transcript, out: Entry) -> Iterator[tuple[Entry, dict[str, Any]]]:
    end = _next_out_n(t, out["n"])
    for e, f in t.ws_in():
        if out["n"] < e["n"] < end:
            yield e, f


def _msg(f: dict[str, Any]) -> dict[str, Any]:
    msg = f.get("msg")
    return msg if isinstance(msg, dict) else {}


def _sid_of(f: dict[str, Any]) -> int | None:
    sid = f.get("sid")
    if isinstance(sid, int):
        return sid
    msg = f.get("msg")
    if f.get("type") == "subscribed" and isinstance(msg, dict) and isinstance(msg.get("sid"), int):
        return int(msg["sid"])
    return None


@dataclass(frozen=True)
class _Question:
    """One question: its key and text, said once; calling it gives an answer."""

    key: str
    text: str

    def __call__(self, value: Any, summary: str, evidence: list[int]) -> Answer:
        return Answer(self.key, self.text, value, summary, evidence)

    def unknown(self, why: str, evidence: list[int] | None = None) -> Answer:
        return Answer(self.key, self.text, "unknown", why, evidence or [])


Question = Callable[[Transcript], Answer]
_Reading = Callable[[Transcript, _Question], Answer]
_CommandReading = Callable[[Transcript, _Question, Entry, dict[str, Any]], Answer]


def _question(text: str) -> Callable[[_Reading], Question]:
    """Declares a question asking ``text``; its key is the function's name, so the two cannot
    drift apart. The function reads the transcript and answers through the ``_Question``."""

    def declare(read: _Reading) -> Question:
        q = _Question(read.__name__, text)

        @functools.wraps(read)
        def answer(t: Transcript) -> Answer:
            return read(t, q)

        return answer

    return declare


def _command_question(
    text: str, step: str, unsent: str = "not asked"
) -> Callable[[_CommandReading], Question]:
    """A question about the command the script sends at ``step``; the script skips steps it
    cannot take (no market to subscribe to), so an unsent command is an "unknown" answer
    (``unsent`` says why), and the function is given the command (``out`` entry and ``body``)."""

    def declare(read: _CommandReading) -> Question:
        @functools.wraps(read)
        def with_command(t: Transcript, q: _Question) -> Answer:
            found = _out_command(t, step)
            return q.unknown(unsent) if found is None else read(t, q, *found)

        return _question(text)(with_command)

    return declare


_NO_MARKET = "not asked (no market to subscribe to)"


# ---- the questions ---------------------------------------------------------------------------


@_command_question("Does get_snapshot get an ok?", "get_snapshot", _NO_MARKET)
def get_snapshot_ok(t: Transcript, a: _Question, out: Entry, body: dict[str, Any]) -> Answer:
    replies = _replies(t, out, body)
    oks = [e["n"] for e, f in replies if f.get("type") == "ok"]
    errors = [e["n"] for e, f in replies if f.get("type") == "error"]
    snaps = [e["n"] for e, f in _window(t, out) if f.get("type") == SNAPSHOT_MSG]
    ev = [out["n"], *oks, *errors, *snaps[:2]]
    if errors:
        return a.unknown("the command got an error", ev)
    if oks and snaps:
        when = "before" if oks[0] < snaps[0] else "after"
        return a(when, f"yes, {when} the snapshot", ev)
    if oks:
        return a("before", "yes (no snapshot came)", ev)
    if snaps:
        return a("none", "no: only the snapshot came", ev)
    return a.unknown("neither an ok nor a snapshot came", ev)


def _carries_sid(f: dict[str, Any]) -> bool:
    """subscribed / unsubscribed / an update's ok (not list_subscriptions' ok, not errors)."""
    kind = f.get("type")
    return kind in ("subscribed", "unsubscribed") or (
        kind == "ok" and not isinstance(f.get("msg"), list)
    )


@_question("Do replies carry id?")
def reply_id(t: Transcript, a: _Question) -> Answer:
    sid_with: list[int] = []
    sid_without: list[int] = []
    other_with: list[int] = []
    other_without: list[int] = []
    for e, f in t.ws_in():
        if f.get("type") not in REPLY_TYPES or _async_error(f):
            continue
        has = "id" in f
        if _carries_sid(f):
            (sid_with if has else sid_without).append(e["n"])
        else:
            (other_with if has else other_without).append(e["n"])
    with_id = sid_with + other_with
    without = sid_without + other_without
    ev = sorted(without[:4] + with_id[:2])
    if not with_id and not without:
        return a.unknown("no reply received")
    if not without:
        return a("always", f"yes: all {len(with_id)} replies", ev)
    if not with_id:
        return a("never", f"no: none of {len(without)} replies", ev)
    if not sid_with and not other_without:
        return a("sid_replies", "not on subscribed/ok/unsubscribed", ev)
    return a("mixed", f"{len(without)} of {len(t.entries)} without", ev)


@_command_question(
    "Does a repeat subscribe merge, get a new sid, or get an error?", "repeat_subscribe", _NO_MARKET
)
def repeat_subscribe(t: Transcript, a: _Question, out: Entry, body: dict[str, Any]) -> Answer:
    known = {
        s
        for e, f in t.ws_in()
        if e["n"] < out["n"] and f.get("type") == "subscribed" and (s := _sid_of(f)) is not None
    }
    replies = _replies(t, out, body)
    ev = [out["n"], *(e["n"] for e, _ in replies)]
    for _, f in replies:
        kind = f.get("type")
        if kind == "error":
            msg = _msg(f)
            return a("error", f"error {msg.get('code')}", ev)
        sid = _sid_of(f)
        if kind == "subscribed" and sid is not None and sid not in known:
            return a("new_sid", f"new sid {sid}", ev)
        if kind in ("subscribed", "ok"):
            return a("merged", f"{kind} on existing sid {sid}", ev)
    return a("no_reply", "no reply (merged silently?)", ev)


@_question("Do ok/unsubscribed replies consume or echo a seq?")
def reply_seq(t: Transcript, a: _Question) -> Answer:
    last: dict[int, int] = {}
    verdicts: list[tuple[int, str]] = []
    unsequenced: list[int] = []
    for e, f in t.ws_in():
        sid, seq = f.get("sid"), f.get("seq")
        if f.get("type") in ("ok", "unsubscribed") and isinstance(sid, int):
            if not isinstance(seq, int):
                unsequenced.append(e["n"])
                continue
            if sid in last:
                d = seq - last[sid]
                verdicts.append((e["n"], "consume" if d == 1 else "echo" if d == 0 else "other"))
        if isinstance(sid, int) and isinstance(seq, int):
            last[sid] = max(seq, last.get(sid, seq))
    kinds = {v for _, v in verdicts}
    ev = [n for n, _ in verdicts[:4]] + unsequenced[:2]
    if not verdicts:
        if unsequenced:
            return a("absent", "replies carry no seq", ev)
        return a.unknown("no sequenced reply after a sequenced frame")
    if kinds == {"consume"}:
        return a("consume", f"consume ({len(verdicts)} replies)", ev)
    if kinds == {"echo"}:
        return a("echo", f"echo ({len(verdicts)} replies)", ev)
    return a("mixed", ", ".join(v for _, v in verdicts), ev)


@_question("Do lifecycle messages carry a seq?")
def lifecycle_seq(t: Transcript, a: _Question) -> Answer:
    seen = [
        (e["n"], "seq" in f) for e, f in t.ws_in() if f.get("type") in LIFECYCLE_CHANNEL_MSG_TYPES
    ]
    if not seen:
        return a.unknown("no lifecycle message arrived while listening")
    ev = [n for n, _ in seen[:3]]
    flags = {s for _, s in seen}
    if flags == {True}:
        return a("yes", f"yes ({len(seen)} messages)", ev)
    if flags == {False}:
        return a("no", f"no ({len(seen)} messages)", ev)
    return a("mixed", "on some messages only", ev)


@_question("Is an empty book side omitted or []?")
def empty_side(t: Transcript, a: _Question) -> Answer:
    omit, empty = [], []
    for e, f in t.ws_in():
        msg = f.get("msg")
        if f.get("type") != SNAPSHOT_MSG or not isinstance(msg, dict):
            continue
        keys = SIDE_KEYS["legacy" if any(k in msg for k in ("yes", "no", "yes_dollars")) else "fp"]
        for k in keys:
            if k not in msg:
                omit.append(e["n"])
            elif msg[k] == []:
                empty.append(e["n"])
    ev = sorted(set(omit[:2] + empty[:2]))
    if omit and empty:
        return a("mixed", "both seen", ev)
    if omit:
        return a("omit", "omitted (key absent)", ev)
    if empty:
        return a("empty_list", "[] (key present, empty)", ev)
    return a.unknown("every snapshot had both sides")


@_question("What do the pongs carry?")
def pong(t: Transcript, a: _Question) -> Answer:
    ping = next((e for e in t.entries if e["kind"] == "ping" and e["dir"] == "out"), None)
    if ping is None:
        return a.unknown("no ping sent")
    after = [e for e in t.entries[ping["n"] + 1 :] if e["kind"] == "pong" and e["dir"] == "in"]
    if not after:
        return a("none", "no pong came", [ping["n"]])
    first = after[0]
    ev = [ping["n"], first["n"]]
    if first["data_hex"] == ping["data_hex"]:
        return a("echo", f"our payload ({ping['data']!r})", ev)
    if first["data_hex"] == "":
        return a("empty", "an empty payload", ev)
    return a("other", f"another payload ({first['data']!r})", ev)


def _rest(t: Transcript, step: str) -> tuple[Entry, Entry | None] | None:
    return next(((o, i) for o, i in t.rest_pairs() if o["step"] == step), None)


def _markets(t: Transcript, resp: Entry | None) -> list[dict[str, Any]] | None:
    if resp is None or resp.get("status") != 200:
        return None
    body = t.parsed(resp)
    if not isinstance(body, dict):
        return None
    ms = body.get("markets")
    if isinstance(ms, list):
        return [m for m in ms if isinstance(m, dict)]
    return [body["market"]] if isinstance(body.get("market"), dict) else None


FILTER_CHECKS: dict[str, Callable[[dict[str, str], list[dict[str, Any]]], bool | None]] = {
    "tickers": lambda q, ms: bool(ms) and all(m.get("ticker") == q["tickers"] for m in ms),
    "min_created_ts": lambda q, ms: not ms,
    "mve_filter": lambda q, ms: all(str(m.get("ticker", "")).startswith("KXMVE") for m in ms),
    "status_multi": lambda q, ms: None,  # 200 shows it is accepted; honoring cannot be told
}


@_question("Which REST filters are accepted?")
def rest_filters(t: Transcript, a: _Question) -> Answer:
    value: dict[str, str] = {}
    ev: list[int] = []
    for name, check in FILTER_CHECKS.items():
        pair = _rest(t, f"rest_filter_{name}")
        if pair is None:
            continue
        out, resp = pair
        ev += [out["n"]] + ([resp["n"]] if resp else [])
        if resp is None or resp.get("status") is None:
            value[name] = "no_answer"
        elif resp["status"] == 400:
            value[name] = "rejected"
        elif resp["status"] != 200:
            value[name] = f"http_{resp['status']}"
        else:
            ms = _markets(t, resp) or []
            params = dict(p.split("=", 1) for p in out["query"].split("&") if "=" in p)
            honored = check(params, ms)
            value[name] = "accepted" if honored is None else "honored" if honored else "ignored"
    if not value:
        return a({}, "not asked", [])
    return a(value, ", ".join(f"{k} {v}" for k, v in value.items()), ev)


def _frac_digits(s: str) -> int | None:
    m = _RFC3339.match(s)
    if m is None:
        return None
    return len(m.group(1) or "")


@_question("What precision does each REST time field have?")
def rest_time_precision(t: Transcript, a: _Question) -> Answer:
    digits: dict[str, int] = {}
    ev: list[int] = []
    for _out, resp in t.rest_pairs():
        ms = _markets(t, resp)
        if not ms or resp is None:
            continue
        ev.append(resp["n"])
        for m in ms:
            for k, v in m.items():
                if (
                    k.endswith("_time")
                    and isinstance(v, str)
                    and (d := _frac_digits(v)) is not None
                ):
                    digits[k] = max(d, digits.get(k, 0))
    if not digits:
        return a({}, "no market listed", ev[:3])
    parts = [f"{k} {v}" for k, v in sorted(digits.items())]
    return a(dict(sorted(digits.items())), ", ".join(parts), ev[:3])


@_question("What is the end-of-pagination cursor?")
def end_cursor(t: Transcript, a: _Question) -> Answer:
    pair = _rest(t, "rest_last_page")
    if pair is None or pair[1] is None or pair[1].get("status") != 200:
        return a.unknown("no single-page listing answered", [pair[0]["n"]] if pair else [])
    out, resp = pair
    assert resp is not None  # checked above
    body = t.parsed(resp)
    ev = [out["n"], resp["n"]]
    if not isinstance(body, dict):
        return a.unknown("the listing was not a JSON object", ev)
    if "cursor" not in body:
        return a("absent", "no cursor key", ev)
    c = body["cursor"]
    if c is None:
        return a("null", "null", ev)
    if c == "":
        return a("empty_string", '""', ev)
    return a("more_pages", "the page was not the last", ev)


def _iso_ms(s: str) -> int | None:
    try:
        return rfc3339_ms(s)
    except (ValueError, OverflowError):
        return None


@_question("How far apart are the exchange's clock and ours?")
def clock_offset_ms(t: Transcript, a: _Question) -> Answer:
    """Bounds on (exchange clock - ours). An exchange time stamp of something that already
    happened, received at our t_recv, gives offset >= ts - t_recv; an HTTP Date header (whole
    seconds, stamped between our send and receive) gives both bounds."""
    lows: list[tuple[int, int]] = []
    highs: list[tuple[int, int]] = []
    for out, resp in t.rest_pairs():
        if resp is None:
            continue
        if isinstance(resp.get("date"), str):
            d: int | None = None
            try:
                d = int(email.utils.parsedate_to_datetime(resp["date"]).timestamp() * 1000)
            except (TypeError, ValueError):
                pass
            if d is not None:
                lows.append((d - resp["t_ms"], resp["n"]))
                sent = int(resp.get("sent_ms") or out["t_ms"])
                highs.append((d + 999 - sent, resp["n"]))
        for m in _markets(t, resp) or []:
            for k in ("created_time", "updated_time"):
                v = m.get(k)
                if isinstance(v, str) and (ms := _iso_ms(v)) is not None:
                    lows.append((ms - resp["t_ms"], resp["n"]))
    for e, f in t.ws_in():
        stamps = [f.get("sending_ts_ms")]
        msg = f.get("msg")
        if isinstance(msg, dict):
            stamps.append(msg.get("ts_ms"))
            for k in ("determination_ts", "settled_ts"):
                if isinstance(msg.get(k), int):
                    stamps.append(msg[k] * 1000)
        for ts in stamps:
            if isinstance(ts, int) and not isinstance(ts, bool):
                lows.append((ts - e["t_ms"], e["n"]))
    low = max(lows, default=None)
    high = min(highs, default=None)
    ev = [x[1] for x in (low, high) if x is not None]
    value = {"estimate": None, "low": low[0] if low else None, "high": high[0] if high else None}
    if low is None and high is None:
        return a(value, "no exchange time stamp seen", [])
    if low is not None and high is not None:
        value["estimate"] = (low[0] + high[0]) // 2
        return a(value, f"{low[0]}..{high[0]} ms", ev)
    value["estimate"] = low[0] if low is not None else high[0] if high is not None else None
    side = "at least" if low is not None else "at most"
    return a(value, f"{side} {value['estimate']} ms", ev)


ERROR_CASES = {
    "unknown_channel": "error_unknown_channel",
    "bad_params": "error_bad_params",
    "unknown_sid": "error_unknown_sid",
    "unknown_market": "error_unknown_market",
}


@_question("What shapes do the error codes we can elicit take?")
def errors(t: Transcript, a: _Question) -> Answer:
    value: dict[str, Any] = {}
    ev: list[int] = []
    for case, step in ERROR_CASES.items():
        asked = _asked(t, step)
        if asked is None:
            continue
        out, replies = asked
        ev.append(out["n"])
        if not replies:
            value[case] = {"type": None}
            continue
        e, f = replies[0]
        ev.append(e["n"])
        msg = _msg(f)
        value[case] = {
            "type": f.get("type"),
            "code": msg.get("code"),
            "msg": msg.get("msg"),
            "has_id": "id" in f,
            "msg_keys": sorted(msg),
        }
    pair = _rest(t, "rest_unknown_market")
    if pair is not None and pair[1] is not None:
        body = t.parsed(pair[1])
        flat = isinstance(body, dict) and "code" in body
        value["rest_unknown_market"] = {
            "status": pair[1].get("status"),
            "shape": "flat"
            if flat
            else "nested"
            if isinstance(body, dict) and "error" in body
            else "other",
            "keys": sorted(body) if isinstance(body, dict) else [],
        }
        ev.append(pair[1]["n"])
    parts = [f"{k} {v.get('code') or v.get('status') or v.get('type')}" for k, v in value.items()]
    return a(value, ", ".join(parts) or "not asked", ev)


@_command_question("Is there a multivariate_market_lifecycle channel?", "subscribe_mve")
def mve_channel(t: Transcript, a: _Question, out: Entry, body: dict[str, Any]) -> Answer:
    replies = _replies(t, out, body)
    ev = [out["n"], *(e["n"] for e, _ in replies[:1])]
    if not replies:
        return a("no_reply", "no reply", ev)
    f = replies[0][1]
    if f.get("type") == "error":
        msg = _msg(f)
        return a("error", f"error {msg.get('code')}", ev)
    sid = _sid_of(f)
    seen = [
        e["n"]
        for e, g in t.ws_in()
        if g.get("sid") == sid and g.get("type") == MVE_LIFECYCLE_CHANNEL
    ]
    return a("subscribed", f"subscribed; {len(seen)} MVE notices", ev + seen[:2])


@_command_question(
    "What share of new markets are MVE (announced on their own channel)?",
    "subscribe_mve",
    "the MVE channel was not asked",
)
def mve_share(t: Transcript, a: _Question, out: Entry, body: dict[str, Any]) -> Answer:
    regular, mve = [], []
    for e, f in t.ws_in():  # both channels are live only after the MVE subscribe
        msg = f.get("msg")
        if e["n"] < out["n"]:
            continue
        if isinstance(msg, dict) and msg.get("event_type") == "created":
            if f.get("type") == LIFECYCLE_CHANNEL:
                regular.append(e["n"])
            elif f.get("type") == MVE_LIFECYCLE_CHANNEL:
                mve.append(e["n"])
    total = len(regular) + len(mve)
    if not total:
        return a.unknown("no market was created while we listened")
    share = round(len(mve) / total, 2)
    return a(share, f"{len(mve)} of {total} created", (mve[:2] + regular[:2]))


@_question("Which close code ends the connection?")
def close_code(t: Transcript, a: _Question) -> Answer:
    close = next((e for e in t.entries if e["kind"] == "close" and e["dir"] == "in"), None)
    if close is None:
        return a(None, "no close frame received", [])
    return a(
        close.get("code"),
        f"{close.get('code')} {close.get('reason') or ''}".strip(),
        [close["n"]],
    )


@_question("Which seq does a new subscription start at?")
def seq_start(t: Transcript, a: _Question) -> Answer:
    firsts: dict[int, tuple[int, int]] = {}
    book_sids = {
        sid
        for _, f in t.ws_in()
        if f.get("type") == "subscribed"
        and isinstance(f.get("msg"), dict)
        and f["msg"].get("channel") == ORDERBOOK_CHANNEL
        and (sid := _sid_of(f)) is not None
    }
    for e, f in t.ws_in():
        sid, seq = f.get("sid"), f.get("seq")
        if sid in book_sids and isinstance(seq, int) and sid not in firsts:
            firsts[sid] = (seq, e["n"])
    if not firsts:
        return a.unknown("no sequenced frame on a book subscription")
    values = sorted({s for s, _ in firsts.values()})
    ev = [n for _, n in list(firsts.values())[:3]]
    if len(values) > 1:
        return a("mixed", f"first seqs {values}", ev)
    return a(values[0], f"{values[0]}", ev)


@_question("Which wire format do book messages use?")
def wire_format(t: Transcript, a: _Question) -> Answer:
    for e, f in t.ws_in():
        msg = f.get("msg")
        if f.get("type") not in (SNAPSHOT_MSG, DELTA_MSG):
            continue
        if not isinstance(msg, dict):
            continue
        if any(k in msg for k in ("yes", "no", "price", "delta")):
            return a("legacy", "legacy (integer cents)", [e["n"]])
        if any(k in msg for k in ("yes_dollars_fp", "no_dollars_fp", "delta_fp")):
            return a("current", "current (_dollars/_fp strings)", [e["n"]])
    return a.unknown("no book message with a level arrived")


@_question("Is a market just created 'not found' (error 16) for a while?")
def young_market(t: Transcript, a: _Question) -> Answer:
    """Added at once after its ``created`` notice: error 16 for a while, or accepted?

    A rejection sent r ms after the notice arrived shows the window is longer than r (the market
    was created before its notice arrived); the first acceptance bounds it from above."""
    tries = [(e, o) for e, o in t.ws_out() if e["step"] == "young_market"]
    if not tries:
        return a.unknown("no market was created while we listened")
    first_cmd = tries[0][1]
    ticker = ((first_cmd.get("params") or {}).get("market_tickers") or [None])[0]
    notice = next(
        (
            e
            for e, f in t.ws_in()
            if f.get("type") == LIFECYCLE_CHANNEL
            and isinstance(f.get("msg"), dict)
            and f["msg"].get("market_ticker") == ticker
            and f["msg"].get("event_type") == "created"
        ),
        None,
    )
    if notice is None:
        return a.unknown("the created notice is missing", [tries[0][0]["n"]])
    low: float | None = None
    high: float | None = None
    ev = [notice["n"]]
    for out, body in tries:
        replies = _replies(t, out, body)
        ev += [out["n"], *(e["n"] for e, _ in replies[:1])]
        if not replies:
            continue
        f = replies[0][1]
        age = (out["t_ms"] - notice["t_ms"]) / 1000
        code = f["msg"].get("code") if isinstance(f.get("msg"), dict) else None
        if f.get("type") == "error" and code == CODE_MARKET_NOT_FOUND:
            low = age
        elif f.get("type") != "error":
            high = age
            break
    value = {"not_found_after_s": low, "accepted_after_s": high}
    if low is None and high is not None:
        return a(value, "no: accepted at once", ev)
    if low is not None and high is not None:
        return a(value, f"yes: for {low:.1f}..{high:.1f} s", ev)
    if low is not None:
        return a(value, f"yes: still after {low:.1f} s", ev)
    return a(value, "no answer", ev)


QUESTIONS: tuple[Question, ...] = (
    get_snapshot_ok,
    reply_id,
    repeat_subscribe,
    reply_seq,
    lifecycle_seq,
    empty_side,
    pong,
    rest_filters,
    rest_time_precision,
    end_cursor,
    clock_offset_ms,
    errors,
    mve_channel,
    mve_share,
    close_code,
    seq_start,
    wire_format,
    young_market,
)


def analyze(t: Transcript) -> dict[str, Answer]:
    """Every question's answer, keyed by question id, in the order of the issue."""
    return {a.key: a for a in (q(t) for q in QUESTIONS)}

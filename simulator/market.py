"""The market model and the deterministic market generator (sans-I/O, virtual clock).

Determinism: everything random comes from one ``random.Random(seed)`` and time is a virtual clock
advanced in fixed steps (``step_ms``), so the same seed and the same sequence of ``step()`` and
control calls produce the same markets, lifecycle events and book changes, whatever the clients
do and however late the event loop runs. The shell maps virtual time onto wall time.

Lifecycle follows docs/protocol.md §8: created -> (silent open) -> active -> (occasionally
deactivated / activated, close_date_updated) -> (silent close) -> determined -> settled.
Reactivation cancels all resting orders, so the book is emptied with negative deltas;
determination does the same.
"""

from __future__ import annotations

import heapq
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, assert_never

from schemas.wire import (
    EVENT_FEE_UPDATE_MSG,
    EVENT_LIFECYCLE_MSG,
    LIFECYCLE_CHANNEL,
    MVE_LIFECYCLE_CHANNEL,
)
from simulator.book import GRIDS, PRICE_RANGES, Book

_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "ms": 0.001}
_TICKER = re.compile(r"^[A-Za-z0-9._-]+$")
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$")


def _seconds(text: str) -> float:
    m = _NUM.match(text)
    if not m:
        raise ValueError(f"bad duration {text!r}; use e.g. 30, 2.5s, 10m, 4h")
    return float(m.group(1)) * _UNIT[m.group(2) or ""]


@dataclass(frozen=True)
class Dist:
    """A duration distribution in seconds: "A" fixed, "A:B" uniform, "exp:MEAN" exponential.

    Units s/m/h/ms may follow any number ("2h:6h"). A string form keeps CLI and config alike.
    """

    spec: str

    def __post_init__(self) -> None:
        self.sample(random.Random(0))  # validate early, with a readable error

    def sample(self, rng: random.Random) -> float:
        s = self.spec.strip()
        if s.startswith("exp:"):
            return rng.expovariate(1.0 / _seconds(s[4:]))
        if ":" in s:
            a, b = (_seconds(x) for x in s.split(":", 1))
            return rng.uniform(min(a, b), max(a, b))
        return _seconds(s)


@dataclass
class GenConfig:
    """Generator knobs; defaults make a small, lively exchange that finishes lives in seconds."""

    step_ms: int = 10  # virtual clock resolution; 10 ms keeps ts_ms realistic and steps cheap
    create_rate: float = 1.0  # new markets per second (0 = only the control API creates)
    initial_markets: int = 8  # created at t=0 so a fresh client sees books at once
    markets_per_event: tuple[int, int] = (1, 4)
    lifetime: Dist = Dist("5:20")  # open -> scheduled close
    open_delay: Dist = Dist("0:1")  # created -> open (initialized meanwhile)
    determine_delay: Dist = Dist("0.2:2")  # close -> determined
    settle_delay: Dist = Dist("0.2:2")  # determined -> settled
    delta_rate: float = 100.0  # book changes per second over all trading markets
    never_trade_fraction: float = 0.15  # markets whose book stays empty (both sides absent)
    subpenny_fraction: float = 0.1  # deci_cent / tapered_deci_cent markets
    fractional_fraction: float = 0.2  # markets with fractional sizes ("2.50")
    deactivate_prob: float = 0.05  # per market life: a pause (deactivated ... activated)
    close_update_prob: float = 0.1  # per market life: close_date_updated
    early_determination_prob: float = 0.05  # determined before the scheduled close
    metadata_update_prob: float = 0.03
    pls_update_prob: float = 0.02  # price_level_structure_updated
    fee_update_prob: float = 0.1  # per event: event_fee_update
    undocumented_event_prob: float = 0.0  # per market: an event_type not in the documented enum
    burst_rate: float = 0.2  # per second: a market starts a burst of activity
    burst_share: float = 0.5  # share of deltas going to bursting markets while any burst
    regimes: bool = True  # quiet/busy periods that scale delta_rate (x0.2 .. x2)
    max_live_markets: int = 10_000  # creation pauses above this many unsettled markets
    legacy: bool = False  # legacy era: whole cents and whole contracts only
    # share of new events that are MVE combos (KXMVE..., docs/protocol.md §4)
    mve_fraction: float = 0.0

    @classmethod
    def short_lives(cls, **overrides: Any) -> GenConfig:
        """Markets that live a few seconds, so whole lives (created to settled) fit in a short
        run: the exchange of the soak, the tests and the variant matrix, declared once here
        because ``bench/`` may not import ``tests/``. ``overrides`` set any other field; a
        string is read as a :class:`Dist` ("3:6")."""
        fields: dict[str, Any] = {
            "create_rate": 3.0,
            "initial_markets": 0,
            "lifetime": Dist("1:2"),
            "open_delay": Dist("0:0.3"),
            "determine_delay": Dist("0.1:0.4"),
            "settle_delay": Dist("0.1:0.3"),
            "delta_rate": 300.0,
        }
        fields.update({k: Dist(v) if isinstance(v, str) else v for k, v in overrides.items()})
        return cls(**fields)


@dataclass(slots=True, eq=False)
class Delta:
    """One book change (the payload of an ``orderbook_delta``): price in pips, delta in
    hundredths of a contract."""

    market: Market
    side: str
    price: int
    delta: int
    ts_ms: int


@dataclass(slots=True, eq=False)
class Notice:
    """A message on a lifecycle channel: ``kind`` is the wire ``type``, ``channel`` the channel
    that carries it (MVE markets and events only on ``multivariate_market_lifecycle``,
    docs/protocol.md §4)."""

    kind: str
    ticker: str
    msg: dict[str, Any]
    ts_ms: int
    channel: str = LIFECYCLE_CHANNEL


Event = Delta | Notice


class Action(Enum):
    """What the generator scheduled to happen at a virtual time, to a market (or, ``FEE``, to
    an event)."""

    OPEN = "open"  # the silent open at open time
    CLOSE = "close"  # the silent close at close time
    DETERMINE = "determine"
    SETTLE = "settle"
    DEACTIVATE = "deactivate"  # a pause; it schedules its own ACTIVATE
    ACTIVATE = "activate"
    CLOSE_UPDATE = "close_update"  # the close time moves
    EARLY = "early"  # determined before the scheduled close
    META = "meta"  # metadata_updated
    PLS = "pls"  # price_level_structure_updated
    UNDOC = "undoc"  # an event_type outside the documented enum
    FEE = "fee"  # event_fee_update


@dataclass(eq=False)
class Market:
    ticker: str
    event_ticker: str
    series_ticker: str
    market_id: str
    title: str
    yes_sub_title: str
    no_sub_title: str
    strike_type: str
    floor_strike: float | None
    cap_strike: float | None
    can_close_early: bool
    price_level_structure: str
    fractional: bool
    never_trades: bool
    created_ms: int
    open_ms: int
    close_ms: int
    expected_expiration_ms: int
    settlement_timer_s: int
    mid_idx: int
    status: str = "initialized"
    result: str = ""
    settlement_value: str = ""
    determination_ms: int | None = None
    settled_ms: int | None = None
    updated_ms: int = 0
    volume: int = 0  # hundredths of a contract
    last_price: int = 0  # pips
    plan: int = 0  # bumps when the close time changes, voiding stale scheduled actions
    auto: bool = True  # generator drives the lifecycle (False for control-API markets)
    mve: bool = False  # a multivariate (KXMVE) market: announced only on its own channel
    book: Book = field(default_factory=Book)
    history: list[tuple[int, str]] = field(default_factory=list)
    close_history: list[int] = field(default_factory=list)

    @property
    def grid(self) -> tuple[int, ...]:
        return GRIDS[self.price_level_structure]

    def facts(self) -> dict[str, Any]:
        """Lifecycle facts for ground truth (markets.jsonl)."""
        return {
            "ticker": self.ticker,
            "event_ticker": self.event_ticker,
            "market_id": self.market_id,
            "status": self.status,
            "created_ms": self.created_ms,
            "open_ts": self.open_ms // 1000,
            "close_ts": self.close_ms // 1000,
            "close_ts_history": [c // 1000 for c in self.close_history],
            "result": self.result,
            "settlement_value": self.settlement_value,
            "determination_ts": None
            if self.determination_ms is None
            else self.determination_ms // 1000,
            "settled_ts": None if self.settled_ms is None else self.settled_ms // 1000,
            "price_level_structure": self.price_level_structure,
            "fractional": self.fractional,
            "never_trades": self.never_trades,
            "mve": self.mve,
            "events": [[t, e] for t, e in self.history],
        }


_SERIES = [
    ("KXHIGHNY", "Highest temperature in NYC", "between"),
    ("KXBTCD", "Bitcoin price at close", "greater"),
    ("KXRAINSEA", "Rain in Seattle", "greater_or_equal"),
    ("KXFEDRATE", "Fed funds upper bound", "less"),
    ("KXNBAGAME", "NBA game winner", "custom"),
    ("FED", "Fed decision", "between"),
]
_MVE_SERIES = ("KXMVESPORTSMULTIGAME", "Multi-game combo", "custom")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class Engine:
    """Deterministic exchange state: markets, true books and the events they emit.

    Every mutator appends events to ``self.out``; the caller drains them with :meth:`take`.
    """

    def __init__(self, cfg: GenConfig, seed: int, epoch_ms: int, record_books: bool = False):
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.epoch_ms = epoch_ms
        self.now_ms = epoch_ms
        self.steps = 0
        self.markets: dict[str, Market] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.out: list[Event] = []
        self.book_log: (
            list[tuple[int, str, list[tuple[int, int]], list[tuple[int, int]]]] | None
        ) = [] if record_books else None
        self._heap: list[tuple[int, int, Action, str, int]] = []
        self._hseq = 0
        self._tradable: list[Market] = []
        self._tpos: dict[str, int] = {}
        self._bursting: list[tuple[Market, int]] = []
        self._acc_create = 0.0
        self._acc_delta = 0.0
        self._regime = 1.0
        self._event_counter = 0
        self.live = 0  # created and not yet settled
        self.bursts_injected = 0
        self.deltas_emitted = 0
        self.notices_emitted = 0
        self._started = False

    # ---- plumbing -------------------------------------------------------------------------

    def take(self) -> list[Event]:
        out, self.out = self.out, []
        return out

    def _schedule(self, due_ms: int, action: Action, ticker: str, plan: int) -> None:
        self._hseq += 1
        heapq.heappush(self._heap, (due_ms, self._hseq, action, ticker, plan))

    def _notice(self, m: Market, event_type: str, **fields: Any) -> None:
        msg: dict[str, Any] = {"market_ticker": m.ticker, "event_type": event_type}
        msg.update(fields)
        m.history.append((self.now_ms, event_type))
        m.updated_ms = self.now_ms
        self.notices_emitted += 1
        if m.mve:
            ch = MVE_LIFECYCLE_CHANNEL
            self.out.append(Notice(ch, m.ticker, msg, self.now_ms, ch))
        else:
            self.out.append(Notice(LIFECYCLE_CHANNEL, m.ticker, msg, self.now_ms))

    def _set_tradable(self, m: Market, on: bool) -> None:
        pos = self._tpos.get(m.ticker)
        if on and pos is None and not m.never_trades:
            self._tpos[m.ticker] = len(self._tradable)
            self._tradable.append(m)
        elif not on and pos is not None:
            last = self._tradable.pop()
            del self._tpos[m.ticker]
            if last is not m:
                self._tradable[pos] = last
                self._tpos[last.ticker] = pos

    def _apply(self, m: Market, side: str, price: int, delta: int) -> None:
        m.book.apply(side, price, delta)
        m.updated_ms = self.now_ms
        self.deltas_emitted += 1
        self.out.append(Delta(m, side, price, delta, self.now_ms))
        if self.book_log is not None:
            self.book_log.append((self.now_ms, m.ticker, m.book.levels("yes"), m.book.levels("no")))

    def _clear_book(self, m: Market) -> None:
        for side, price, delta in m.book.clear_deltas():
            self._apply(m, side, price, delta)

    # ---- creation -------------------------------------------------------------------------

    def _new_event_notice(
        self, event_ticker: str, series: str, title: str, subtitle: str, collateral: str, mve: bool
    ) -> None:
        """Register an event and announce it (``event_lifecycle``) on its markets' channel."""
        self.events[event_ticker] = {"event_ticker": event_ticker, "series_ticker": series}
        self.notices_emitted += 1
        msg = {
            "event_ticker": event_ticker,
            "exchange_index": 0,
            "title": title,
            "subtitle": subtitle,
            "collateral_return_type": collateral,
            "series_ticker": series,
        }
        channel = MVE_LIFECYCLE_CHANNEL if mve else LIFECYCLE_CHANNEL
        self.out.append(Notice(EVENT_LIFECYCLE_MSG, event_ticker, msg, self.now_ms, channel))

    def _new_event(self, n_markets: int, mve: bool = False) -> list[Market]:
        rng = self.rng
        cfg = self.cfg
        series, title, strike_type = _SERIES[rng.randrange(len(_SERIES))]
        if mve:
            series, title, strike_type = _MVE_SERIES
        self._event_counter += 1
        t = self.now_ms // 1000
        tm = time.gmtime(t)
        code = f"{tm.tm_year % 100:02d}{_MONTHS[tm.tm_mon - 1]}{tm.tm_mday:02d}"
        event_ticker = f"{series}-{code}S{self._event_counter:05d}"
        self._new_event_notice(
            event_ticker,
            series,
            f"{title} ({code})?",
            f"Simulated event {self._event_counter}",
            "MECNET" if n_markets > 1 else "",
            mve,
        )
        lifetime_ms = int(cfg.lifetime.sample(rng) * 1000)
        open_ms = self.now_ms + int(cfg.open_delay.sample(rng) * 1000)
        base = rng.randrange(20, 90)
        markets = []
        for i in range(n_markets):
            floor = base + 2 * i + 0.5
            m = self._make_market(
                ticker=f"{event_ticker}-B{floor}",
                event_ticker=event_ticker,
                series=series,
                title=f"{title} ({code})?",
                strike_type=strike_type,
                floor=floor,
                open_ms=open_ms,
                close_ms=open_ms + max(lifetime_ms, 1000),
                structure=None,
                fractional=None,
                never_trades=None,
                auto=True,
                mve=mve,
            )
            markets.append(m)
        if rng.random() < cfg.fee_update_prob:
            when = open_ms + rng.randrange(max(lifetime_ms, 1))
            self._schedule(when, Action.FEE, event_ticker, 0)
        return markets

    def _make_market(
        self,
        *,
        ticker: str,
        event_ticker: str,
        series: str,
        title: str,
        strike_type: str,
        floor: float | None,
        open_ms: int,
        close_ms: int,
        structure: str | None,
        fractional: bool | None,
        never_trades: bool | None,
        auto: bool,
        mid: int | None = None,
        mve: bool = False,
    ) -> Market:
        rng = self.rng
        cfg = self.cfg
        if ticker in self.markets:
            raise ValueError(f"market {ticker} already exists")
        if not _TICKER.match(ticker) or not _TICKER.match(event_ticker):
            # bodies are spliced as text for speed, so tickers must need no JSON escaping
            raise ValueError(f"bad ticker {ticker!r}: use A-Z, 0-9, '.', '-', '_'")
        if structure is None:
            structure = "linear_cent"
            if not cfg.legacy and rng.random() < cfg.subpenny_fraction:
                structure = rng.choice(("deci_cent", "tapered_deci_cent"))
        if structure not in GRIDS:
            raise ValueError(
                f"unknown price_level_structure {structure!r}; use one of {list(GRIDS)}"
            )
        if fractional is None:
            fractional = not cfg.legacy and rng.random() < cfg.fractional_fraction
        if never_trades is None:
            never_trades = rng.random() < cfg.never_trade_fraction
        grid = GRIDS[structure]
        if mid is None:
            lo, hi = len(grid) // 20, len(grid) - len(grid) // 20
            mid_idx = rng.randrange(max(lo, 1), min(hi, len(grid) - 1))
        else:
            mid_idx = min(range(1, len(grid) - 1), key=lambda i: abs(grid[i] - mid))
        market_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        label = f"{floor} to {floor + 1 if floor is not None else ''}"
        m = Market(
            ticker=ticker,
            event_ticker=event_ticker,
            series_ticker=series,
            market_id=market_id,
            title=title,
            yes_sub_title=label,
            no_sub_title=label,
            strike_type=strike_type,
            floor_strike=floor,
            cap_strike=None if floor is None else floor + 1,
            can_close_early=rng.random() < 0.3,
            price_level_structure=structure,
            fractional=fractional,
            never_trades=never_trades,
            created_ms=self.now_ms,
            open_ms=open_ms,
            close_ms=close_ms,
            expected_expiration_ms=close_ms + 3_600_000,
            settlement_timer_s=rng.choice((60, 300, 3600)),
            mid_idx=mid_idx,
            auto=auto,
            updated_ms=self.now_ms,
            mve=mve,
        )
        m.close_history.append(close_ms)
        self.markets[ticker] = m
        self.live += 1
        self._notice(m, "created", **self.created_fields(m))
        if open_ms <= self.now_ms:
            self._open(m)
        else:
            self._schedule(open_ms, Action.OPEN, ticker, m.plan)
        if auto:
            self._plan_life(m)
        return m

    def created_fields(self, m: Market) -> dict[str, Any]:
        f: dict[str, Any] = {}
        if not self.cfg.legacy:
            f["exchange_index"] = 0
        f["open_ts"] = m.open_ms // 1000
        f["close_ts"] = m.close_ms // 1000
        if not self.cfg.legacy:
            f["price_level_structure"] = m.price_level_structure
            f["price_ranges"] = PRICE_RANGES[m.price_level_structure]
        f["additional_metadata"] = {
            "name": m.yes_sub_title,
            "title": m.title,
            "yes_sub_title": m.yes_sub_title,
            "no_sub_title": m.no_sub_title,
            "rules_primary": f"If the outcome is {m.yes_sub_title}, the market resolves to Yes.",
            "rules_secondary": "",
            "can_close_early": m.can_close_early,
            "event_ticker": m.event_ticker,
            "expected_expiration_ts": m.expected_expiration_ms // 1000,
            "strike_type": m.strike_type,
            "floor_strike": m.floor_strike,
            "cap_strike": m.cap_strike,
        }
        return f

    def _plan_life(self, m: Market) -> None:
        """Schedule the market's optional mid-life events and its end."""
        rng = self.rng
        cfg = self.cfg
        life = max(m.close_ms - m.open_ms, 1)
        # (whether it can happen, its probability, the part of the life it falls in, the action,
        # the plan it belongs to: -1 = survives a close-time change). A row that cannot happen
        # draws no random number, so older seeds keep their markets.
        for possible, prob, (lo, hi), action, plan in (
            (True, cfg.deactivate_prob, (0.1, 0.6), Action.DEACTIVATE, -1),
            (True, cfg.metadata_update_prob, (0, 0.9), Action.META, -1),
            (not cfg.legacy, cfg.pls_update_prob, (0, 0.9), Action.PLS, -1),
            (True, cfg.undocumented_event_prob, (0, 0.9), Action.UNDOC, -1),
            (True, cfg.close_update_prob, (0.2, 0.8), Action.CLOSE_UPDATE, -1),
            (m.can_close_early, cfg.early_determination_prob * 3, (0.3, 0.9), Action.EARLY, m.plan),
        ):
            if possible and rng.random() < prob:
                at = m.open_ms + int(life * rng.uniform(lo, hi))
                self._schedule(at, action, m.ticker, plan)
        self._plan_end(m)

    def _plan_end(self, m: Market) -> None:
        self._schedule(m.close_ms, Action.CLOSE, m.ticker, m.plan)
        det = m.close_ms + int(self.cfg.determine_delay.sample(self.rng) * 1000)
        self._schedule(det, Action.DETERMINE, m.ticker, m.plan)

    # ---- lifecycle transitions (shared by the generator and the control API) ---------------

    def _open(self, m: Market) -> None:
        if m.status != "initialized":
            return
        m.status = "active"  # silent on the WS, as on the exchange
        m.updated_ms = self.now_ms
        self._set_tradable(m, True)
        if not m.never_trades and m.auto:
            for _ in range(self.rng.randrange(3, 12)):
                self._random_change(m, allow_move=False)

    def _close(self, m: Market) -> None:
        if m.status in ("active", "inactive") and m.close_ms <= self.now_ms:
            m.status = "closed"
            m.updated_ms = self.now_ms
            self._set_tradable(m, False)

    def deactivate(self, ticker: str) -> None:
        m = self.market(ticker)
        m.status = "inactive"
        self._set_tradable(m, False)
        self._notice(m, "deactivated", is_deactivated=True)

    def activate(self, ticker: str) -> None:
        """Unpause: all resting orders are cancelled, so the book empties (docs/protocol.md §8)."""
        m = self.market(ticker)
        self._notice(m, "activated", is_deactivated=False)
        self._clear_book(m)
        if m.status in ("inactive", "closed", "initialized"):
            m.status = "active" if m.close_ms > self.now_ms else "closed"
        if m.status == "active":
            self._set_tradable(m, True)

    def update_close(self, ticker: str, close_ts: float) -> None:
        """Move the close time (Unix seconds); a closed market reopens if it moves ahead."""
        m = self.market(ticker)
        m.close_ms = int(close_ts * 1000)
        m.close_history.append(m.close_ms)
        m.plan += 1
        self._notice(m, "close_date_updated", close_ts=m.close_ms // 1000)
        if m.status == "closed" and m.close_ms > self.now_ms:
            # reopen = close_date_updated then activated (docs/protocol.md §8)
            self.activate(ticker)
        if m.status in ("active", "inactive") and m.close_ms <= self.now_ms:
            self._close(m)
        if m.auto:
            self._plan_end(m)
        elif m.status in ("active", "inactive"):
            self._schedule(m.close_ms, Action.CLOSE, m.ticker, m.plan)

    def determine(
        self, ticker: str, result: str = "yes", settlement_value: str | None = None
    ) -> None:
        m = self.market(ticker)
        if m.status in ("active", "inactive", "initialized"):
            m.status = "closed"
            self._set_tradable(m, False)
        m.status = "determined"
        m.result = result
        m.settlement_value = settlement_value or ("1.0000" if result == "yes" else "0.0000")
        m.determination_ms = self.now_ms
        m.plan += 1
        self._notice(
            m,
            "determined",
            result=result,
            determination_ts=self.now_ms // 1000,
            settlement_value=m.settlement_value,
        )
        self._clear_book(m)
        if m.auto:
            self._schedule(
                self.now_ms + int(self.cfg.settle_delay.sample(self.rng) * 1000),
                Action.SETTLE,
                ticker,
                m.plan,
            )

    def settle(self, ticker: str) -> None:
        m = self.market(ticker)
        if m.status != "finalized":
            self.live -= 1
        m.status = "finalized"
        m.settled_ms = self.now_ms
        self._set_tradable(m, False)
        self._notice(m, "settled", settled_ts=self.now_ms // 1000)

    def metadata_update(self, ticker: str) -> None:
        m = self.market(ticker)
        self._notice(
            m,
            "metadata_updated",
            strike_type=m.strike_type,
            floor_strike=m.floor_strike,
            cap_strike=m.cap_strike,
            yes_sub_title=m.yes_sub_title,
        )

    def price_level_structure_update(self, ticker: str) -> None:
        """Re-announce the structure (switching grids mid-life would orphan resting levels)."""
        m = self.market(ticker)
        self._notice(
            m,
            "price_level_structure_updated",
            price_level_structure=m.price_level_structure,
            price_ranges=PRICE_RANGES[m.price_level_structure],
        )

    def undocumented_event(self, ticker: str) -> None:
        """An event_type outside the documented enum: new ones appear without notice
        (docs/protocol.md §4); this one existed for a while."""
        m = self.market(ticker)
        self._notice(m, "fractional_trading_updated", fractional_trading_enabled=m.fractional)

    def event_fee_update(
        self, event_ticker: str, fee_type: str | None, multiplier: str | None
    ) -> None:
        self.notices_emitted += 1
        self.out.append(
            Notice(
                EVENT_FEE_UPDATE_MSG,
                event_ticker,
                {
                    "event_ticker": event_ticker,
                    "fee_type_override": fee_type,
                    "fee_multiplier_override": multiplier,
                },
                self.now_ms,
            )
        )

    def market(self, ticker: str) -> Market:
        try:
            return self.markets[ticker]
        except KeyError:
            raise KeyError(f"unknown market {ticker!r}") from None

    # ---- control API ------------------------------------------------------------------------

    def create_market(
        self,
        ticker: str | None = None,
        *,
        event_ticker: str | None = None,
        open_in_s: float = 0.0,
        lifetime_s: float = 86_400.0,
        price_level_structure: str = "linear_cent",
        fractional: bool = False,
        mid: int = 5_000,
        auto: bool = False,
        mve: bool = False,
    ) -> Market:
        """Create one market now. With ``auto=False`` nothing happens to it unless asked,
        except the silent open/close at its times; it never trades on its own. ``mve=True``
        makes a multivariate market, announced only on ``multivariate_market_lifecycle``."""
        self._event_counter += 1
        if event_ticker is None:
            prefix = "KXMVETEST" if mve else "KXTEST"
            event_ticker = f"{prefix}-{self._event_counter:05d}"
        if ticker is None:
            ticker = f"{event_ticker}-T{self._event_counter}"
        if event_ticker not in self.events:
            self._new_event_notice(
                event_ticker, "KXTEST", f"Test event {event_ticker}", "control API", "", mve
            )
        open_ms = self.now_ms + int(open_in_s * 1000)
        m = self._make_market(
            ticker=ticker,
            event_ticker=event_ticker,
            series="KXTEST",
            title=f"Test market {ticker}",
            strike_type="greater",
            floor=None,
            open_ms=open_ms,
            close_ms=open_ms + int(lifetime_s * 1000),
            structure=price_level_structure,
            fractional=fractional,
            never_trades=not auto,
            auto=auto,
            mid=mid,
            mve=mve,
        )
        if not auto:
            self._schedule(m.close_ms, Action.CLOSE, m.ticker, m.plan)
        return m

    def push_delta(self, ticker: str, side: str, price: int, delta: int) -> None:
        """Apply one book change (pips, hundredths) and emit it. Raises if it would go negative."""
        if side not in ("yes", "no"):
            raise ValueError("side must be 'yes' or 'no'")
        self._apply(self.market(ticker), side, price, delta)

    # ---- the clock ----------------------------------------------------------------------

    def start(self) -> None:
        """Create the initial markets (idempotent)."""
        if self._started:
            return
        self._started = True
        made = 0
        while made < self.cfg.initial_markets:
            n = min(self.rng.randint(*self.cfg.markets_per_event), self.cfg.initial_markets - made)
            made += len(self._new_event(n))

    def step(self) -> None:
        """Advance the virtual clock by one step and generate what happens in it."""
        self.start()
        cfg = self.cfg
        rng = self.rng
        self.steps += 1
        self.now_ms += cfg.step_ms
        now = self.now_ms
        dt = cfg.step_ms / 1000.0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, action, ticker, plan = heapq.heappop(heap)
            self._run_action(action, ticker, plan)
        if cfg.create_rate > 0 and self.live < cfg.max_live_markets:
            self._acc_create += cfg.create_rate * dt
            while self._acc_create >= 1.0:
                n = rng.randint(*cfg.markets_per_event)
                self._acc_create -= n
                # the extra draw only when MVE is on keeps every older seed's markets unchanged
                self._new_event(n, mve=bool(cfg.mve_fraction) and rng.random() < cfg.mve_fraction)
        if cfg.regimes and self.steps % 100 == 0 and rng.random() < 0.2:
            self._regime = rng.choice((0.2, 0.5, 1.0, 1.0, 1.5, 2.0))
        if cfg.burst_rate > 0 and self._tradable and rng.random() < cfg.burst_rate * dt:
            m = self._tradable[rng.randrange(len(self._tradable))]
            self._bursting.append((m, now + rng.randrange(500, 5_000)))
        if self._bursting:
            self._bursting = [(m, u) for m, u in self._bursting if u > now and m.status == "active"]
        self._acc_delta += cfg.delta_rate * self._regime * dt
        n = int(self._acc_delta)
        self._acc_delta -= n
        tradable = self._tradable
        if not tradable:
            return
        bursting = self._bursting
        share = cfg.burst_share
        for _ in range(n):
            if bursting and rng.random() < share:
                m = bursting[rng.randrange(len(bursting))][0]
            else:
                m = tradable[rng.randrange(len(tradable))]
            self._random_change(m, allow_move=True)

    def inject_burst(self, size: int) -> None:
        """Fault knob: ``size`` changes on one market within one step."""
        if not self._tradable:
            return
        m = self._tradable[self.rng.randrange(len(self._tradable))]
        self.bursts_injected += 1
        for _ in range(size):
            self._random_change(m, allow_move=False)

    def _run_action(self, action: Action, ticker: str, plan: int) -> None:
        if action is Action.FEE:
            rng = self.rng
            if rng.random() < 0.3:
                self.event_fee_update(ticker, None, None)  # override cleared
            else:
                self.event_fee_update(
                    ticker, rng.choice(("quadratic", "flat")), rng.choice(("0.5", "2"))
                )
            return
        m = self.markets.get(ticker)
        if m is None or m.status == "finalized":
            return
        if plan >= 0 and plan != m.plan:
            return  # superseded by a close-time change or a determination
        match action:
            case Action.OPEN:
                if m.open_ms <= self.now_ms:
                    self._open(m)
            case Action.CLOSE:
                self._close(m)
            case Action.DETERMINE:
                if m.status in ("closed", "active", "inactive") and m.result == "":
                    if m.status == "inactive":
                        self.activate(ticker)  # a paused market ends paused rarely; unpause
                    self.determine(ticker, "yes" if self.rng.random() < 0.5 else "no")
            case Action.SETTLE:
                if m.status == "determined":
                    self.settle(ticker)
            case Action.DEACTIVATE:
                if m.status == "active":
                    self.deactivate(ticker)
                    back = self.now_ms + int(
                        max(m.close_ms - self.now_ms, 2) * self.rng.uniform(0.1, 0.5)
                    )
                    self._schedule(back, Action.ACTIVATE, ticker, -1)
            case Action.ACTIVATE:
                if m.status == "inactive":
                    self.activate(ticker)
            case Action.CLOSE_UPDATE:
                if m.status in ("active", "inactive"):
                    remaining = max(m.close_ms - self.now_ms, 1000)
                    new_close = self.now_ms + int(remaining * self.rng.uniform(0.5, 1.5))
                    self.update_close(ticker, new_close / 1000)
            case Action.EARLY:
                if m.status == "active":
                    self.update_close(ticker, self.now_ms / 1000)
            case Action.META:
                self.metadata_update(ticker)
            case Action.PLS:
                self.price_level_structure_update(ticker)
            case Action.UNDOC:
                self.undocumented_event(ticker)
            case _:
                assert_never(action)

    # ---- the random walk ------------------------------------------------------------------

    def _random_change(self, m: Market, allow_move: bool) -> None:
        rng = self.rng
        grid = m.grid
        n = len(grid)
        fine = n > 100
        book = m.book
        if allow_move and rng.random() < 0.04:
            step = rng.randint(1, 5) if fine else 1
            new = m.mid_idx + (step if rng.random() < 0.5 else -step)
            new = min(max(new, 1), n - 2)
            if new > m.mid_idx:
                limit = 10_000 - grid[new]  # NO bids must stay below 1 - mid
                for p in sorted(book.no):
                    if p >= limit:
                        self._apply(m, "no", p, -book.no[p])
            elif new < m.mid_idx:
                limit = grid[new]
                for p in sorted(book.yes):
                    if p >= limit:
                        self._apply(m, "yes", p, -book.yes[p])
            m.mid_idx = new
            return
        side = "yes" if rng.random() < 0.5 else "no"
        levels = book.yes if side == "yes" else book.no
        if levels and rng.random() < 0.45:
            price = rng.choice(list(levels))
            size = levels[price]
            if rng.random() < 0.4 or size <= 100:
                amount = size
            elif m.fractional:
                amount = rng.randint(1, size - 1)
            else:
                amount = 100 * rng.randint(1, size // 100 - 1) if size >= 200 else size
            if rng.random() < 0.5:
                m.volume += amount
                m.last_price = price if side == "yes" else 10_000 - price
            self._apply(m, side, price, -amount)
            return
        k = int(rng.expovariate(1.0 / (20.0 if fine else 3.0)))
        if side == "yes":
            idx = m.mid_idx - 1 - k
            if idx < 0:
                idx = 0
            price = grid[idx]
        else:
            idx = m.mid_idx + 1 + k
            if idx > n - 1:
                idx = n - 1
            price = 10_000 - grid[idx]
        if m.fractional:
            size = rng.randint(1, 50_000)
        else:
            size = 100 * rng.choice((1, 2, 5, 10, 10, 20, 25, 50, 100, 100, 200, 500, 1000))
        self._apply(m, side, price, size)

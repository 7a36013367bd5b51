"""A Gymnasium environment whose episodes are recorded market lives.

**Episodes.** One episode is one market captured from ``created`` to ``determined``, taken from
the training sets materialize builds (``DATA/training``, read with ``materialize.views``'s
manifest reader): every row is a *valid* book state (materialize never emits a row from a span
after a sequence gap and before the next snapshot), so invalid spans are skipped — the episode
jumps from the last valid state before a gap to the first after its repair. Markets the training
set excludes (mid-lifecycle, unrecovered gap, never determined, ...) are never episodes. Rows in
the middle 60% of a life are sampled (one per ``--middle-every-s``), the first and last 20% keep
every update. ``reset(seed=s)`` picks an episode with the env's seeded generator;
``reset(options={"episode": i})`` picks episode ``i`` of :attr:`PaperEnv.episodes`.

**Step.** The action is applied to the book of the current row through the broker (IOC, taker,
conservative fills: never more than the size shown, and liquidity we took is not offered again
until the shown size grows past it), then the env moves to the next row.

**Observation and actions**: the vector and the ``Discrete(4)`` actions (hold, buy YES at the
ask, buy NO at the NO ask, close) are defined in ``paper.features`` as functions of the actor
interface's ``Observation``: the env builds that observation from its broker with
``paper.actor.observe``, the same as the live and replay paper session, so a policy trained here
runs unchanged there through ``paper.features.VectorActor``. Orders the broker refuses (no
liquidity, market not open yet or closed, cash) simply do nothing. Nothing in the vector uses the
future: the training set's ``life_fraction``/``phase``/label columns are never read into it.

**Reward**: the change in equity (cash + position marked to mid, net of every fee) in dollars;
on the last row the market is determined with its recorded result and the position is settled
(YES pays $1 on yes), so the episode's rewards sum to its final profit and loss exactly (up to
float rounding of each step's exact ``Fraction``). Seeded and deterministic: the same seed gives
the same episode and, for the same actions, the same rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import polars as pl

from feed.events import LifecycleEvent
from paper.actor import Observation, observe
from paper.broker import NS, Broker
from paper.features import BUY_NO, BUY_YES, CLOSE, HOLD, N_ACTIONS, Features, obs_fields
from schemas.catalog import TRAINING_DIR, read_training_manifest, training_files
from schemas.units import PRICE_SCALE

__all__ = ["BUY_NO", "BUY_YES", "CLOSE", "HOLD", "OBS_FIELDS", "PaperEnv", "evaluate"]

OBS_FIELDS = obs_fields(5)
"""The layout for the default ``top_n = 5``."""


@dataclass(frozen=True, slots=True)
class Episode:
    """One market life: its rows (sorted by record_seq) and its recorded result."""

    session_id: int
    market_ticker: str
    open_ns: int | None
    rows: pl.DataFrame
    result: str | None
    settlement_value: int | None


def load_episodes(data_dir: Path | str, training_dir: Path | str | None = None) -> list[Episode]:
    """Every included market of the training sets under ``data_dir`` (or ``training_dir``),
    ordered by (session, ticker). Empty list if there is no training set."""
    tdir = Path(training_dir) if training_dir is not None else Path(data_dir) / TRAINING_DIR
    manifest = read_training_manifest(tdir)
    if not manifest:
        return []
    files = training_files(tdir, manifest)  # only the builds the manifest lists
    if not files:
        return []
    included = manifest.get("included", {})
    rows = pl.read_parquet(files).sort("session_id", "market_ticker", "record_seq")
    out: list[Episode] = []
    for (session_id, ticker), part in rows.group_by(
        ["session_id", "market_ticker"], maintain_order=True
    ):
        entry = included.get(f"{session_id}/{ticker}", {})
        last = part.row(-1, named=True)
        out.append(
            Episode(
                int(str(session_id)),
                str(ticker),
                entry.get("open_ns"),
                part,
                last.get("label_result"),
                last.get("label_settlement_value"),
            )
        )
    return out


class PaperEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """See the module docstring. ``trade_size`` and ``max_position`` in centi-contracts,
    ``cash`` in micro-dollars."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        episodes: list[Episode] | None = None,
        top_n: int = 5,
        trade_size: int = 100,
        max_position: int = 1000,
        cash: int = 1_000 * PRICE_SCALE,
    ) -> None:
        if episodes is None:
            if data_dir is None:
                raise ValueError("PaperEnv needs data_dir (with a training set) or episodes")
            episodes = load_episodes(data_dir)
        if not episodes:
            raise ValueError(
                f"no episodes: {data_dir} has no training set with an included market; "
                "run kalshi-materialize --data-dir on recorded data first"
            )
        self.episodes = episodes
        self.top_n = top_n
        self.trade_size = trade_size
        self.max_position = max_position
        self.cash = cash
        self.fields = obs_fields(top_n)
        self.features = Features(top_n, trade_size, max_position)
        low, high = self.features.bounds()
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self._ep: Episode = episodes[0]
        self._i = 0
        self._broker = Broker(cash)
        self._equity = Fraction(cash)
        self._cols: dict[str, list[Any]] = {}

    # -- gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if options and "episode" in options:
            idx = int(options["episode"])
        else:
            idx = int(self.np_random.integers(len(self.episodes)))
        self._ep = self.episodes[idx]
        self._cols = self._ep.rows.to_dict(as_series=False)
        self._i = 0
        self._broker = Broker(self.cash)
        ep = self._ep
        open_ts = None if ep.open_ns is None else -(-int(ep.open_ns) // NS)
        self._broker.on_lifecycle(
            LifecycleEvent(ep.market_ticker, "created", open_ts=open_ts), self._t()
        )
        self._load_row()
        self._equity = self._broker.equity()
        return self._obs(), self._info(idx)

    def step(
        self, action: np.int64 | int
    ) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not 0 <= a < N_ACTIONS:
            raise ValueError(f"action {action!r} is not one of 0..3 (hold, yes, no, close)")
        self._act(a)
        last = self._i + 1 >= len(self._cols["t_ns"])
        if last:
            self._settle()
        else:
            self._i += 1
            self._load_row()
        equity = self._broker.equity()
        reward = float(equity - self._equity) / PRICE_SCALE
        self._equity = equity
        return self._obs(), reward, last, False, self._info(None)

    # -- internals ----------------------------------------------------------------------------

    def _t(self) -> int:
        return int(self._cols["t_ns"][self._i])

    def _levels(self, side: str) -> list[tuple[int, int]]:
        out = []
        for j in range(1, self.top_n + 1):
            p = self._cols.get(f"{side}_bid_price_{j}", [None])[self._i]
            s = self._cols.get(f"{side}_bid_size_{j}", [None])[self._i]
            if p is not None and s:
                out.append((int(p), int(s)))
        return out

    def _load_row(self) -> None:
        t = self._t()
        to_close = self._cols["time_to_close_s"][self._i]
        if to_close is not None:
            close_ts = round(t / NS + float(to_close))
            m = self._broker.market(self._ep.market_ticker)
            if m.close_ts != close_ts:
                notice = LifecycleEvent(m.ticker, "close_date_updated", close_ts=close_ts)
                self._broker.on_lifecycle(notice, t)
        self._broker.on_snapshot(self._ep.market_ticker, self._levels("yes"), self._levels("no"), t)

    def _observation(self) -> Observation:
        return observe(self._broker, self._ep.market_ticker, self._t(), "book", self.top_n)

    def _act(self, a: int) -> None:
        if a == HOLD:
            return
        order = self.features.decide(a, self._observation())
        if order is not None:
            self._broker.submit(order, self._t())

    def _settle(self) -> None:
        ep = self._ep
        determined = LifecycleEvent(
            ep.market_ticker, "determined", result=ep.result, settlement_value=ep.settlement_value
        )
        self._broker.on_lifecycle(determined, self._t())

    def _obs(self) -> npt.NDArray[np.float32]:
        return self.features.vector(self._observation(), self.cash)

    def _info(self, idx: int | None) -> dict[str, Any]:
        m = self._broker.market(self._ep.market_ticker)
        info: dict[str, Any] = {
            "market_ticker": self._ep.market_ticker,
            "session_id": self._ep.session_id,
            "row": self._i,
            "record_seq": int(self._cols["record_seq"][self._i]),
            "position": m.position,
            "cash": self._broker.cash,
            "equity_usd": float(self._broker.equity()) / PRICE_SCALE,
        }
        if idx is not None:
            info["episode"] = idx
        return info


def evaluate(env: PaperEnv, policy: Any, episodes: int = 3, seed: int = 0) -> list[float]:
    """Run ``policy(obs) -> action`` for ``episodes`` episodes; return each episode's total
    reward (its profit and loss in dollars, net of fees)."""
    totals = []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            total += r
            done = term or trunc
        totals.append(total)
    return totals


if __name__ == "__main__":  # a short example: evaluate two trivial policies
    import sys

    env = PaperEnv(sys.argv[1] if len(sys.argv) > 1 else "data")
    hold = evaluate(env, lambda _obs: HOLD, episodes=5)

    def buy_yes_once(obs: npt.NDArray[np.float32]) -> int:
        return BUY_YES if obs[OBS_FIELDS.index("position_fraction")] == 0 else HOLD

    buy = evaluate(env, buy_yes_once, episodes=5)
    print(f"{len(env.episodes)} episodes; hold: {hold}; buy YES once and hold: {buy}")

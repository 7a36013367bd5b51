"""The Gymnasium environment over recorded market lives (training sets built by materialize from
sealed segments)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from materialize.training import build_training_sets
from paper.env import BUY_NO, BUY_YES, CLOSE, HOLD, OBS_FIELDS, PaperEnv, evaluate, load_episodes
from tests.training.markets import Life, simple_market, training_log

T0 = 1_800_000_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recorded lives (yes and no results), a gap-free session, built into a training set."""
    data = tmp_path_factory.mktemp("envdata")
    log = training_log()
    log.session_start()
    log.connected()
    simple_market(log, Life("KXA-26JAN01-Y", T0, T0 + 10, T0 + 60), result="yes", sid=2)
    simple_market(log, Life("KXA-26JAN01-N", T0 + 100, T0 + 110, T0 + 160), result="no", sid=3)
    log.session_end()
    log.write(data)
    build_training_sets(data, data / "training")
    return data


def test_episodes_are_the_included_market_lives(data_dir: Path) -> None:
    eps = load_episodes(data_dir)
    assert [(e.market_ticker, e.result) for e in eps] == [
        ("KXA-26JAN01-N", "no"),
        ("KXA-26JAN01-Y", "yes"),
    ]
    assert all(e.rows.height > 10 for e in eps)
    assert load_episodes(data_dir / "nothing-here") == []


def test_check_env_passes(data_dir: Path) -> None:
    env = PaperEnv(data_dir)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (len(OBS_FIELDS),)


def test_holding_earns_nothing_and_rewards_sum_to_the_settled_pnl(data_dir: Path) -> None:
    env = PaperEnv(data_dir)
    assert evaluate(env, lambda _o: HOLD, episodes=2) == [0.0, 0.0]
    for idx, won in ((1, True), (0, False)):  # the yes market and the no market
        _, info = env.reset(options={"episode": idx})
        total, done, k = 0.0, False, 0
        while not done:
            _, r, done, _, info = env.step(BUY_YES if k == 20 else HOLD)
            total += r
            k += 1
        cash_pnl = (info["cash"] - env.cash) / 1e6
        assert info["position"] == 0  # settled
        assert total == pytest.approx(cash_pnl, abs=1e-9)
        assert (cash_pnl > 0) == won  # paid $1 per contract on a yes, nothing on a no


def test_buying_no_and_closing_round_trips_through_the_broker(data_dir: Path) -> None:
    env = PaperEnv(data_dir)
    env.reset(options={"episode": 0})
    _, _, _, _, info = env.step(BUY_NO)
    assert info["position"] == 0  # before the open: refused
    for _ in range(20):
        _, _, _, _, info = env.step(HOLD)
    _, _, _, _, info = env.step(BUY_NO)
    assert info["position"] == -100  # one NO contract, bought at 1 - the YES bid
    _, _, _, _, info = env.step(CLOSE)
    assert info["position"] == 0 and info["cash"] < env.cash  # two spreads and fees paid


def test_seeded_and_deterministic(data_dir: Path) -> None:
    def rollout(seed: int) -> tuple[str, list[float], list[np.ndarray]]:
        env = PaperEnv(data_dir)
        obs, info = env.reset(seed=seed)
        env.action_space.seed(seed)
        rewards, obs_seen, done = [], [obs], False
        while not done:
            obs, r, done, _, _ = env.step(env.action_space.sample())
            rewards.append(r)
            obs_seen.append(obs)
        return info["market_ticker"], rewards, obs_seen

    a, b = rollout(3), rollout(3)
    assert a[0] == b[0] and a[1] == b[1]
    assert all(np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True))
    assert {rollout(s)[0] for s in range(8)} == {"KXA-26JAN01-Y", "KXA-26JAN01-N"}


def test_a_bad_action_or_no_data_is_a_clear_error(data_dir: Path, tmp_path: Path) -> None:
    env = PaperEnv(data_dir)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not one of"):
        env.step(7)
    with pytest.raises(ValueError, match="kalshi-materialize"):
        PaperEnv(tmp_path)


def test_invalid_spans_are_skipped(tmp_path: Path) -> None:
    """A gap, deltas while the book is invalid, then a fresh snapshot: the episode jumps from the
    last valid state to the snapshot; no step ever shows a book from inside the gap."""
    from tests.training.markets import determine, gapped_delta, steady_book

    life = Life("KXG-26JAN01-HEAL", T0, T0 + 5, T0 + 100)
    log = training_log()
    log.session_start()
    log.connected()
    steady_book(log, life, deltas=12)
    log.at(life.open + 30)
    gapped = gapped_delta(log, [life.ticker], skip=3)  # and its gap record, as the recorder does
    inside = {log.book_delta(life.ticker, "no", 500_000, 50) for _ in range(3)}
    log.at(life.open + 40)
    healed = log.book_snapshot(life.ticker, {400_000: 7}, {500_000: 9})
    for k in range(3):
        log.at(life.open + 41 + k)
        log.book_delta(life.ticker, "yes", 400_000, 1)
    determine(log, life)
    log.session_end()
    log.write(tmp_path)
    build_training_sets(tmp_path, tmp_path / "training")
    env = PaperEnv(tmp_path)
    _, info = env.reset(seed=0)
    seen, done = [info["record_seq"]], False
    while not done:
        _, _, done, _, info = env.step(HOLD)
        seen.append(info["record_seq"])
    assert healed in seen and gapped not in seen and not inside & set(seen)
    assert seen == sorted(seen)

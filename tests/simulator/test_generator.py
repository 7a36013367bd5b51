"""The market generator: deterministic per seed, realistic books, complete market lives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator.book import GRIDS
from simulator.market import Delta, Engine, GenConfig, Notice
from simulator.server import SimConfig, start_in_thread
from tests.simulator.helpers import Client

# many lives, and every rare lifecycle event several times in a few virtual seconds
FAST = GenConfig.short_lives(
    create_rate=5,
    initial_markets=10,
    lifetime="1:3",
    delta_rate=2_000,
    deactivate_prob=0.3,
    close_update_prob=0.3,
    undocumented_event_prob=0.1,
    subpenny_fraction=0.3,
)


def _trace(seed: int, steps: int, cfg: GenConfig = FAST) -> list[tuple[Any, ...]]:
    e = Engine(cfg, seed, epoch_ms=1_767_225_600_000)
    out: list[tuple[Any, ...]] = []
    for _ in range(steps):
        e.step()
        for ev in e.take():
            if isinstance(ev, Delta):
                out.append((ev.ts_ms, ev.market.ticker, ev.side, ev.price, ev.delta))
            else:
                out.append((ev.ts_ms, ev.kind, repr(ev.msg)))
    return out


def test_same_seed_same_events_different_seed_different() -> None:
    a = _trace(7, 600)
    assert len(a) > 5_000
    assert a == _trace(7, 600)
    assert a != _trace(8, 600)


def test_books_stay_valid_and_lives_complete() -> None:
    e = Engine(FAST, 3, epoch_ms=1_767_225_600_000)
    kinds: dict[str, list[str]] = {}
    for _ in range(1_500):  # 15 s of virtual time
        e.step()
        for ev in e.take():
            if isinstance(ev, Notice) and ev.kind == "market_lifecycle_v2":
                kinds.setdefault(ev.ticker, []).append(ev.msg["event_type"])
        for m in e.markets.values():
            grid = set(GRIDS[m.price_level_structure])
            yes, no = m.book.yes, m.book.no
            assert all(s > 0 for s in yes.values()) and all(s > 0 for s in no.values())
            assert set(yes) <= grid and {10_000 - p for p in no} <= grid
            if yes and no:
                assert max(yes) + max(no) < 10_000, m.ticker  # never crossed or locked
    finished = [t for t, k in kinds.items() if "settled" in k]
    assert len(finished) > 20
    for t in finished:
        k = kinds[t]
        assert k[0] == "created" and k[-1] == "settled" and k.count("determined") == 1
        assert k.index("determined") < k.index("settled")
    everything = {x for k in kinds.values() for x in k}
    assert {
        "created",
        "deactivated",
        "activated",
        "close_date_updated",
        "determined",
        "settled",
    } <= everything
    assert "fractional_trading_updated" in everything
    assert any(m.never_trades and not m.book.yes and not m.book.no for m in e.markets.values())
    assert any(
        m.fractional and any(s % 100 for s in m.book.yes.values()) for m in e.markets.values()
    )


def test_same_seed_same_frames_over_the_wire(keys_dir: Path) -> None:
    """Two simulators, same seed, a client subscribed from t=0: identical frames."""
    runs = []
    for _ in range(2):
        cfg = SimConfig(
            seed=11, keys_dir=keys_dir, autostart=False, start_time=1_767_225_600.0, generator=FAST
        )
        with start_in_thread(cfg) as sim, Client(sim) as c:
            c.subscribe(["market_lifecycle_v2"])
            tickers = sim.tickers()
            c.subscribe(["orderbook_delta"], market_tickers=tickers[:5])
            sim.advance(200)
            c.send("list_subscriptions")
            c.until(lambda m: m.get("id") == 3)
            runs.append(c.frames)
    assert len(runs[0]) > 50
    assert runs[0] == runs[1]

"""REST recovery endpoints: listing with filters and cursor pagination, one market, its book."""

from __future__ import annotations

from pathlib import Path

from simulator.server import SimulatorThread, start_in_thread
from tests.simulator.helpers import http_get, quiet_config

REQUIRED = {
    "ticker", "event_ticker", "market_type", "title", "status", "created_time", "open_time",
    "close_time", "yes_bid_dollars", "yes_ask_dollars", "no_bid_dollars", "no_ask_dollars",
    "last_price_dollars", "volume_fp", "open_interest_fp", "liquidity_dollars", "result",
    "settlement_bounds_type", "price_level_structure", "price_ranges",
}  # fmt: skip


def test_listing_pagination_and_filters(sim: SimulatorThread) -> None:
    tickers = [sim.create_market(f"KXR-26JAN01-B{i}.5") for i in range(7)]
    sim.determine(tickers[0], "yes")
    sim.determine(tickers[1], "no")
    sim.settle(tickers[1])
    sim.deactivate(tickers[2])
    sim.create_market("KXR-LATER", open_in_s=3600)
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        status, body = http_get(f"{sim.rest_url}/markets?limit=3&cursor={cursor}")
        assert status == 200
        pages += 1
        seen += [m["ticker"] for m in body["markets"]]
        for m in body["markets"]:
            assert set(m) >= REQUIRED, REQUIRED - set(m)
            assert m["close_time"].endswith("Z")
        cursor = body["cursor"]
        assert isinstance(cursor, str)
        if cursor == "":
            break
    assert pages == 3 and seen == [*tickers, "KXR-LATER"]

    def statuses(filt: str) -> list[str]:
        status, body = http_get(f"{sim.rest_url}/markets?status={filt}")
        assert status == 200, body
        return [m["ticker"] for m in body["markets"]]

    assert statuses("open") == tickers[3:]
    assert statuses("unopened") == ["KXR-LATER"]
    assert statuses("paused") == [tickers[2]]
    assert statuses("closed") == [tickers[0]]  # determined counts as closed (not finalized)
    assert statuses("settled") == [tickers[1]]
    assert statuses("finalized") == [tickers[1]]  # the REST vocabulary works too
    status, body = http_get(f"{sim.rest_url}/markets?tickers={tickers[4]},{tickers[6]}")
    assert [m["ticker"] for m in body["markets"]] == [tickers[4], tickers[6]]
    status, body = http_get(f"{sim.rest_url}/markets?status=bogus")
    assert status == 400 and body["code"] == "bad_request"


def test_one_market_and_404(sim: SimulatorThread) -> None:
    t = sim.create_market("KXONE-1")
    sim.determine(t, "yes")
    status, body = http_get(f"{sim.rest_url}/markets/{t}")
    assert status == 200
    m = body["market"]
    assert m["ticker"] == t and m["status"] == "determined" and m["result"] == "yes"
    assert m["settlement_bounds_type"] == "default"
    status, body = http_get(f"{sim.rest_url}/markets/NOPE-1")
    assert status == 404 and body["code"] == "not_found" and "message" in body
    status, body = http_get(f"{sim.rest_url}/markets/NOPE-1/orderbook")
    assert status == 404


def test_orderbook(sim: SimulatorThread) -> None:
    t = sim.create_market("KXOB-1")
    for p in (30, 35, 40):
        sim.push_delta(t, "yes", p, 10)
    status, body = http_get(f"{sim.rest_url}/markets/{t}/orderbook")
    assert status == 200
    assert body == {
        "orderbook_fp": {
            "yes_dollars": [["0.3000", "10.00"], ["0.3500", "10.00"], ["0.4000", "10.00"]],
            "no_dollars": [],
        }
    }
    status, body = http_get(f"{sim.rest_url}/markets/{t}/orderbook?depth=2")
    assert body["orderbook_fp"]["yes_dollars"] == [["0.3500", "10.00"], ["0.4000", "10.00"]]
    status, body = http_get(f"{sim.rest_url}/markets/{t}")
    assert body["market"]["yes_bid_dollars"] == "0.4000"
    assert body["market"]["no_ask_dollars"] == "0.6000"


def test_legacy_orderbook(keys_dir: Path) -> None:
    with start_in_thread(quiet_config(keys_dir=keys_dir, legacy=True)) as sim:
        t = sim.create_market("KXOB-2")
        sim.push_delta(t, "no", 55, 3)
        _status, body = http_get(f"{sim.rest_url}/markets/{t}/orderbook")
        assert body["orderbook"]["yes"] is None and body["orderbook"]["no"] == [[55, 3]]

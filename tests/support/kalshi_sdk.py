"""Kalshi's own Python clients driven against a server of ours: the simulator
(``tests/simulator/test_interop.py``) or the tap and the replay (``tests/feed``).

One script for both, run by the newer Python of the cached interop venv
(``tests.support.interop``): kalshi-sdk's WebSocket client subscribes to the lifecycle channel,
takes the first three markets it announces (or ``tickers`` when given), subscribes to their books
and counts the messages by the class kalshi-sdk parsed them into. With a ``rest_url`` it first
pages through the markets with kalshi-python-async's REST client.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

DEADLINE_S = 60
"""How long the script may talk to the server (it says ``"timeout": true`` when it runs out)."""

SCRIPT = r"""
import asyncio, json, sys
from kalshi.auth import KalshiAuth
from kalshi.config import KalshiConfig
from kalshi.ws.client import KalshiWebSocket

info = json.loads(sys.argv[1])
kinds, errors = {}, []
out = {"kinds": kinds, "errors": errors}

async def rest():
    from kalshi_python_async import ApiClient, Configuration, MarketApi

    api = MarketApi(ApiClient(Configuration(host=info["rest_url"])))
    tickers, cursor = [], None
    while True:
        kw = {"limit": 3}
        if cursor:
            kw["cursor"] = cursor
        page = await api.get_markets(**kw)
        tickers += [m.ticker for m in page.markets]
        cursor = page.cursor
        if not cursor:
            break
    out["rest_tickers"] = tickers
    opened = await api.get_markets(status="open", limit=1000)
    out["rest_open"] = len(opened.markets)
    m = await api.get_market(ticker=tickers[0])
    out["rest_market"] = m.market.ticker
    ob = await api.get_market_orderbook(ticker=tickers[0])
    out["rest_orderbook"] = type(ob).__name__

async def ws():
    async def on_error(e):
        errors.append(repr(e))
    cfg = KalshiConfig(
        base_url=info["rest_url"] or "http://127.0.0.1:9/trade-api/v2",  # the WS client only
        ws_base_url=info["ws_url"],
        allow_unknown_host=True,
    )
    auth = KalshiAuth.from_key_path(info["key_id"], info["private_key_path"])
    client = KalshiWebSocket(auth=auth, config=cfg, on_error=on_error)
    tickers = out["tickers"] = list(info["tickers"])
    async with client.connect() as session:
        life = await session.subscribe_market_lifecycle()
        async for msg in life:
            kinds["lifecycle:" + type(msg).__name__] = 1
            if len(tickers) < 3 and getattr(msg.msg, "event_type", None) == "created":
                tickers.append(msg.msg.market_ticker)
            if len(tickers) >= 3:
                break
        book = await session.subscribe_orderbook_delta(tickers=tickers)
        n = 0
        async for msg in book:
            kinds[type(msg).__name__] = kinds.get(type(msg).__name__, 0) + 1
            n += 1
            if n >= info["book_messages"]:
                break

async def main():
    if info["rest_url"]:
        await rest()
    await ws()

try:
    asyncio.run(asyncio.wait_for(main(), info["deadline_s"]))
except TimeoutError:
    out["timeout"] = True
print(json.dumps(out))
"""


async def run_kalshi_sdk(
    python: str,
    ws_url: str,
    keys: dict[str, str],
    *,
    book_messages: int = 20,
    tickers: list[str] | None = None,
    rest_url: str | None = None,
) -> dict[str, Any]:
    """Run :data:`SCRIPT` with ``python`` against ``ws_url`` (``keys``: ``key_id`` and
    ``private_key_path``); its output: ``kinds`` (message class -> count), ``errors``,
    ``tickers`` (``tickers`` or the first three announced), and the ``rest_*`` answers with a
    ``rest_url``. A failed run raises."""
    info = {
        **keys,
        "ws_url": ws_url,
        "rest_url": rest_url,
        "tickers": tickers or [],
        "book_messages": book_messages,
        "deadline_s": DEADLINE_S,
    }
    proc = await asyncio.create_subprocess_exec(
        python,
        "-c",
        SCRIPT,
        json.dumps(info),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(2 * DEADLINE_S):  # imports + the script's own deadline
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise AssertionError(f"kalshi's clients failed: {err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result

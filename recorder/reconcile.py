"""The REST side of reconciliation: which requests one pass makes, and their fallbacks.

One pass asks two questions (issue 11, "Discovery that cannot miss a market"):

1. Which markets were created since the anchor (the session start less a clock-skew margin)?
   ``GET /markets?min_created_ts=<anchor s>`` — a few pages, not a walk over every open market.
   ``mve_filter=exclude`` is added when MVE markets are not wanted.
2. What is the status of every market we hold a book for? ``GET /markets?tickers=a,b,...`` in
   batches; a market the listing leaves out is asked for by ``GET /markets/{ticker}``.

The filters are marked uncertain in docs/protocol.md (§7, §9). When the exchange rejects one with
HTTP 400, that filter is dropped for the rest of the run (``fallbacks`` says which) and the pass
falls back: status-by-status listings instead of ``min_created_ts``, one ``GET /markets/{ticker}``
per market instead of ``tickers``, no ``mve_filter`` (MVE markets are then filtered locally by the
rules). Any other failure raises ``RestError``: the caller retries the whole pass later and never
leaves a market because a call failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from recorder.rest import RestClient, RestError

TICKERS_PER_REQUEST = 100
"""Tickers per ``tickers=`` request: keeps the URL well under common 8 KiB limits."""
FALLBACK_STATUSES = ("unopened", "open", "closed")
"""Without ``min_created_ts``: every undetermined market, one status filter per request (the
official SDK accepts one status at a time)."""


class ReconcileQueries:
    """Runs the REST requests of one reconciliation pass; remembers rejected filters."""

    def __init__(self, rest: RestClient, include_mve: bool) -> None:
        self.rest = rest
        self.include_mve = include_mve
        self.use_min_created = True
        self.use_tickers = True
        self.use_mve_filter = not include_mve
        self.fallbacks: list[str] = []

    async def _list(
        self, params: dict[str, str], status: str | None = None
    ) -> list[dict[str, Any]]:
        query = dict(params)
        if self.use_mve_filter:
            query["mve_filter"] = "exclude"
        try:
            return await self.rest.list_markets(status=status, params=query)
        except RestError as exc:
            if exc.status != 400 or "mve_filter" not in query:
                raise
        # Was it mve_filter? Ask again without it; if that works, it was.
        del query["mve_filter"]
        markets = await self.rest.list_markets(status=status, params=query)
        self.use_mve_filter = False
        self.fallbacks.append("mve_filter")
        return markets

    async def created_since(self, anchor_s: int) -> list[dict[str, Any]]:
        """Markets created at or after ``anchor_s`` (Unix seconds, exchange clock), or, if the
        exchange rejects ``min_created_ts``, every undetermined market (the rules then pick by
        ``created_time``)."""
        if self.use_min_created:
            try:
                return await self._list({"min_created_ts": str(anchor_s)})
            except RestError as exc:
                if exc.status != 400:
                    raise
                self.use_min_created = False
                self.fallbacks.append("min_created_ts")
        markets: list[dict[str, Any]] = []
        for status in FALLBACK_STATUSES:
            markets += await self._list({}, status)
        return markets

    async def status_of(self, tickers: Iterable[str]) -> list[dict[str, Any]]:
        """REST records of ``tickers`` (markets REST does not know are left out)."""
        wanted = sorted(set(tickers))
        found: dict[str, dict[str, Any]] = {}
        if self.use_tickers and wanted:
            try:
                for start in range(0, len(wanted), TICKERS_PER_REQUEST):
                    batch = wanted[start : start + TICKERS_PER_REQUEST]
                    for market in await self._list({"tickers": ",".join(batch)}):
                        ticker = market.get("ticker")
                        if isinstance(ticker, str) and ticker in batch:
                            found[ticker] = market
            except RestError as exc:
                if exc.status != 400:
                    raise
                self.use_tickers = False
                self.fallbacks.append("tickers")
        for ticker in wanted:
            if ticker in found:
                continue
            try:
                one = await self.rest.get(f"/markets/{ticker}")
            except RestError as exc:
                if exc.status == 404:
                    continue  # unknown to REST: not "determined" either; the book stays
                raise
            if isinstance(one, dict) and isinstance(one.get("market"), dict):
                found[ticker] = one["market"]
        return list(found.values())

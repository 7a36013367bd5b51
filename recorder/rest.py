"""The few public REST calls the recorder needs (adoption, reconciliation, REST discovery).

Blocking ``urllib`` run in a worker thread: these calls are rare (start-up, after a reconnect, every
``rest_poll_s``), so a dependency-free client is enough and the event loop never blocks on them.
Auth headers are sent although market-data GETs are public (harmless, and future-proof).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from recorder.auth import Signer


class RestError(Exception):
    """A REST call failed after retries; the message names the URL path and status.

    ``status`` is the HTTP status when the exchange answered (400 = it rejected a parameter)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RestClient:
    def __init__(self, base_url: str, signer: Signer | None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.timeout_s = timeout_s
        self.requests = 0
        self.clock_offset_ns: int | None = None
        """Exchange clock minus ours, from the last response's ``Date`` header (whole seconds,
        so +-1 s); None until a response carried one."""

    def _note_date(self, date: str | None, sent_ns: int, received_ns: int) -> None:
        if not date:
            return
        try:
            server = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return
        if server.tzinfo is None:
            return
        middle = (sent_ns + received_ns) // 2
        # Date is truncated to the second: its midpoint is half a second later.
        self.clock_offset_ns = int(server.timestamp()) * 1_000_000_000 + 500_000_000 - middle

    def _get_blocking(self, path: str, params: dict[str, str]) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        if self.signer is not None:
            headers.update(self.signer.headers("GET", urllib.parse.urlsplit(url).path))
        delay = 0.5
        for attempt in range(5):
            req = urllib.request.Request(url, headers=headers)
            self.requests += 1
            sent = time.time_ns()
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    body = resp.read()
                    self._note_date(resp.headers.get("Date"), sent, time.time_ns())
                    return orjson.loads(body)
            except urllib.error.HTTPError as exc:
                # 429 and 5xx are transient; honour Retry-After when given.
                if exc.code == 429 or exc.code >= 500:
                    retry_after = exc.headers.get("Retry-After") if exc.headers else None
                    wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                    if attempt < 4:
                        time.sleep(wait + random.uniform(0, delay / 2))
                        delay = min(delay * 2, 8.0)
                        continue
                raise RestError(f"GET {path} failed: HTTP {exc.code}", exc.code) from None
            except orjson.JSONDecodeError as exc:
                raise RestError(f"GET {path}: the answer is not JSON ({exc})") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if attempt < 4:
                    time.sleep(delay)
                    delay = min(delay * 2, 8.0)
                    continue
                raise RestError(f"GET {path} failed: {exc}") from None
        raise RestError(f"GET {path} failed")  # pragma: no cover

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return await asyncio.to_thread(self._get_blocking, path, params or {})

    async def list_markets(
        self,
        status: str | None = None,
        limit: int = 1000,
        params: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """All markets with ``status`` (REST filter word, e.g. "open") and the extra query
        ``params`` (``min_created_ts``, ``tickers``, ``mve_filter``...), following the cursor."""
        out: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(10_000):  # bounded: 10M markets
            query = {"limit": str(limit), **(params or {})}
            if status:
                query["status"] = status
            if cursor:
                query["cursor"] = cursor
            page = await self.get("/markets", query)
            if not isinstance(page, dict):
                raise RestError("GET /markets: the answer is not a JSON object")
            markets = page.get("markets")
            if isinstance(markets, list):
                out.extend(m for m in markets if isinstance(m, dict))
            cursor = page.get("cursor") or ""
            if not isinstance(cursor, str) or not cursor:
                break
        return out

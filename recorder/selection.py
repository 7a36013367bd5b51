"""Which markets this recorder opens order books for: include/exclude patterns, MVE opt-in, shards.

The lifecycle feed is recorded for *every* market either way; this filter only decides whose order
book is subscribed (issue 4, "Which markets to record"). It is pure: ticker strings in, a
verdict out.

Patterns are shell-style globs (``fnmatch``: ``*``, ``?``, ``[...]``) matched against the market
ticker, its event ticker and its series ticker, so ``KXHIGHNY`` (a series), ``KXHIGHNY-25JAN01``
(an event) and ``KXHIGHNY-*-B45.5`` (markets) all work. Matching ignores case because tickers are
upper case on the wire while people type patterns in lower case.

Sharding spreads markets over several recorder processes (``--shard i/n``): a market belongs to
exactly one shard, computed from a hash of its ticker bytes that is the same on every machine and
every run (Python's ``hash()`` is salted per process, so it would move markets between shards on
every restart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from fnmatch import fnmatchcase

from schemas.decisions import SkipReason
from schemas.wire import MVE_PREFIX

"""Multivariate (combo) markets: numerous, rarely traded, and not on ``market_lifecycle_v2``."""

MVE = "mve"
"""``decide``'s reason for a multivariate market without ``--include-mve``: recorded as a
``filtered`` skip with this detail."""


def series_of(ticker: str) -> str:
    """Series ticker: the part before the first ``-`` (``KXHIGHNY-25JAN01-B45.5``: ``KXHIGHNY``)."""
    return ticker.split("-", 1)[0]


def event_of(ticker: str) -> str:
    """Best-effort event ticker: the part before the last ``-``.

    Ticker shapes are not a documented grammar and this split is wrong for some series: callers
    pass the real ``additional_metadata.event_ticker`` / REST ``event_ticker`` whenever they have
    it.
    """
    return ticker.rsplit("-", 1)[0] if "-" in ticker else ticker


def is_mve(ticker: str) -> bool:
    """True for multivariate (``KXMVE…``) markets."""
    return ticker.upper().startswith(MVE_PREFIX)


def shard_of(ticker: str, n: int) -> int:
    """The shard (0..n-1) a ticker belongs to; stable across processes, machines and versions.

    blake2b of the UTF-8 bytes, first 8 bytes big-endian, modulo ``n``.
    """
    if n < 1:
        raise ValueError(f"shard count must be >= 1, got {n}")
    digest = hashlib.blake2b(ticker.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (as in ``--shard 2/4``) into ``(i, n)``; errors say what to type."""
    try:
        left, right = text.split("/", 1)
        shard = (int(left), int(right))
    except ValueError:
        raise ValueError(
            f"shard {text!r} is not of the form i/n (e.g. 0/1 for a single recorder, 2/4 for the "
            "third of four)"
        ) from None
    _check_shard(shard)
    return shard


def _check_shard(shard: tuple[int, int]) -> None:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"shard {index}/{count} is invalid: need 0 <= i < n and n >= 1 (e.g. 0/1 for a single "
            "recorder)"
        )


class MarketFilter:
    """Decides whether this recorder wants a market's order book.

    Order of the checks (the first failing one names the reason): MVE opt-in, exclude patterns
    (exclude wins over include), include patterns (empty = everything), shard.
    """

    __slots__ = ("exclude", "include", "include_mve", "shard")

    def __init__(
        self,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        shard: tuple[int, int] = (0, 1),
        include_mve: bool = False,
    ) -> None:
        self.include: tuple[str, ...] = tuple(p.strip().upper() for p in include if p.strip())
        self.exclude: tuple[str, ...] = tuple(p.strip().upper() for p in exclude if p.strip())
        _check_shard(shard)
        self.shard: tuple[int, int] = (int(shard[0]), int(shard[1]))
        self.include_mve = include_mve

    def __repr__(self) -> str:
        return (
            f"MarketFilter(include={list(self.include)}, exclude={list(self.exclude)}, "
            f"shard={self.shard}, include_mve={self.include_mve})"
        )

    def describe(self) -> dict[str, object]:
        """JSON-ready description for the session-start record's config."""
        return {
            "include": list(self.include),
            "exclude": list(self.exclude),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "include_mve": self.include_mve,
        }

    def decide(
        self, ticker: str, event_ticker: str | None = None
    ) -> tuple[bool, SkipReason | str | None]:
        """``(True, None)`` if wanted, else ``(False, reason)`` with reason filtered|shard|mve."""
        if not self.include_mve and is_mve(ticker):
            return False, MVE
        names = _names(ticker, event_ticker)
        if self.exclude and _any_match(names, self.exclude):
            return False, SkipReason.FILTERED
        if self.include and not _any_match(names, self.include):
            return False, SkipReason.FILTERED
        index, count = self.shard
        if count > 1 and shard_of(ticker, count) != index:
            return False, SkipReason.SHARD
        return True, None

    def wants(self, ticker: str, event_ticker: str | None = None) -> bool:
        """Shorthand for ``decide(...)[0]``."""
        return self.decide(ticker, event_ticker)[0]


def _names(ticker: str, event_ticker: str | None) -> tuple[str, str, str]:
    upper = ticker.upper()
    event = (event_ticker or event_of(ticker)).upper()
    return upper, event, series_of(upper)


def _any_match(names: tuple[str, str, str], patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns for name in names)

"""Paper only: no code path in the project can place a real order (ARCHITECTURE.md, Invariants).

Three checks: (1) no source file outside the tests names an exchange order or portfolio endpoint,
an order-placing WebSocket command or FIX order message, and the exchange-facing packages never
use an HTTP method but GET; (2) the broker and everything it is built from import nothing that can
reach a network; (3) a whole backtest and a Gymnasium episode run with every socket connect
refused.
"""

from __future__ import annotations

import ast
import re
import socket
from pathlib import Path

import pytest

from paper.engine import PaperSession
from paper.policies import SpreadCapture, TakeOnce
from tests.paper.feedgen import session

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ["recorder", "materialize", "schemas", "simulator", "feed", "paper", "probe", "bench"]
EXCHANGE_CLIENTS = ["recorder", "feed", "paper", "probe"]
"""Packages that open connections to Kalshi or something speaking its protocol."""

ORDER_ENDPOINT = re.compile(r"portfolio|/orders\b|order_groups|/fills\b", re.IGNORECASE)
ORDER_COMMANDS = re.compile(
    r"^(create|cancel|amend|decrease|batch_create|batch_cancel)_orders?$|NewOrderSingle|"
    r"OrderCancelRequest|OrderCancelReplaceRequest",
)
WRITE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}

PURE_PAPER = [
    "fees",
    "orders",
    "book",
    "fillmodel",
    "broker",
    "actor",
    "policies",
    "engine",
    "env",
    "log",
    "features",
]
NETWORK_MODULES = {
    "socket",
    "ssl",
    "http",
    "urllib",
    "requests",
    "httpx",
    "aiohttp",
    "websockets",
    "asyncio",
    "feed.client",
    "feed.tap",
    "feed.replay",
    "feed.server",
    "recorder",
    "simulator",
    "boto3",
}


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, docstrings excluded (they may say what is forbidden)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def _files(dirs: list[str]) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]


def test_the_scan_sees_the_whole_tree_and_would_catch_an_order_endpoint() -> None:
    files = _files(SOURCE_DIRS)
    assert len(files) > 50 and ROOT / "paper" / "broker.py" in files
    assert ORDER_ENDPOINT.search("/trade-api/v2/portfolio/orders")
    assert ORDER_COMMANDS.search("create_order") and ORDER_COMMANDS.search("batch_cancel_orders")


def test_no_source_file_names_an_order_endpoint_or_command() -> None:
    hits = []
    for path in _files(SOURCE_DIRS):
        for line, text in _code_strings(path):
            if ORDER_ENDPOINT.search(text) or ORDER_COMMANDS.search(text.strip()):
                hits.append(f"{path.relative_to(ROOT)}:{line}: {text[:80]!r}")
    assert hits == [], "order/portfolio endpoints in the code:\n" + "\n".join(hits)


def test_exchange_clients_only_ever_get() -> None:
    hits = []
    for path in _files(EXCHANGE_CLIENTS):
        for line, text in _code_strings(path):
            if text.strip().upper() in WRITE_METHODS:
                hits.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert hits == [], "HTTP write methods in exchange-facing code:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", PURE_PAPER)
def test_the_broker_and_its_parts_import_nothing_that_reaches_a_network(name: str) -> None:
    tree = ast.parse((ROOT / "paper" / f"{name}.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {m for m in imported for n in NETWORK_MODULES if m == n or m.startswith(n + ".")}
    assert bad == set(), f"paper/{name}.py imports {bad}"
    assert imported, f"paper/{name}.py: the import scan found nothing (is the file parsed?)"


def test_a_backtest_runs_with_every_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kw: object) -> None:
        attempts.append(args)
        raise OSError("paper trading must not open connections")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for actor in (TakeOnce(), SpreadCapture()):
        s = PaperSession(actor)
        reports = [r for ev in session(n_markets=2) for r in s.handle(ev)]
        assert any(r.report.kind == "order" for r in reports)
    assert attempts == []

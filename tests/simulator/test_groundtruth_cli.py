"""Ground-truth files match what a client received; the CLI announces itself and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from simulator.groundtruth import truth_books, truth_frames, truth_markets
from simulator.server import start_in_thread
from tests.simulator.helpers import Client, http_get, quiet_config


def test_ground_truth_matches_client(keys_dir: Path, tmp_path: Path) -> None:
    gt = tmp_path / "gt"
    with start_in_thread(quiet_config(keys_dir=keys_dir, ground_truth=gt)) as sim:
        t = sim.create_market("KXGT-1", fractional=True)
        with Client(sim) as c:
            c.subscribe(["market_lifecycle_v2"])
            c.subscribe(["orderbook_delta"], market_tickers=[t])
            sim.push_delta(t, "yes", 40, "1.25")
            sim.push_delta(t, "no", 50, 3)
            sim.push_delta(t, "yes", 40, "-1.25")
            sim.determine(t, "yes")
            sim.settle(t)
            c.send("list_subscriptions")
            c.until(lambda m: m.get("id") == 3)
            received = list(c.frames)
            book = sim.book(t)
    rows = [json.loads(x) for x in (gt / "conn-1.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == received
    assert all(r["conn"] == 1 and isinstance(r["t_ns"], int) for r in rows)
    assert truth_frames(gt) == {1: [(r["t_ns"], r["frame"].encode()) for r in rows]}
    books = [json.loads(x) for x in (gt / "books.jsonl").read_text().splitlines()]
    mine = [b for b in books if b["ticker"] == t]
    assert mine[0]["yes"] == [["0.4000", "1.25"]] and mine[0]["no"] == []
    assert mine[1]["no"] == [["0.5000", "3.00"]]
    assert mine[-1] == {"t_ns": mine[-1]["t_ns"], "ticker": t, "yes": [], "no": []}
    assert book == {"yes": [], "no": []}
    assert [b for (ticker, _), bs in truth_books(gt).items() if ticker == t for b in bs] == mine
    markets = {m["ticker"]: m for m in truth_markets(gt)}
    facts = markets[t]
    assert facts["status"] == "finalized" and facts["result"] == "yes"
    assert [e for _, e in facts["events"]] == ["created", "determined", "settled"]


def test_cli_serve(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "serve", "--keys-dir", str(keys), "--seed", "3",
         "--duration", "120", "--create-rate", "0", "--delta-rate", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"ws_url", "rest_url", "key_id", "private_key_path"}
        assert info["ws_url"].endswith("/trade-api/ws/v2")
        assert info["rest_url"].endswith("/trade-api/v2")
        assert stat_mode(Path(info["private_key_path"])) == 0o600
        handle = SimpleNamespace(
            ws_url=info["ws_url"],
            key_id=info["key_id"],
            private_key_path=Path(info["private_key_path"]),
        )
        with Client(handle) as c:
            assert c.subscribe(["market_lifecycle_v2"])["type"] == "subscribed"
        status, body = http_get(info["rest_url"] + "/markets")
        assert status == 200 and len(body["markets"]) == 8
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "PRIVATE KEY" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stat_mode(p: Path) -> int:
    return os.stat(p).st_mode & 0o777

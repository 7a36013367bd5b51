"""``kalshi-probe``: ask the exchange every open protocol question (< 60 s).

The questions are the uncertain points of ``docs/protocol.md`` §9.

Uses the recorder's key settings (``KALSHI_API_KEY_ID``, ``KALSHI_PRIVATE_KEY_PATH``, ``KALSHI_ENV``
or the flags) and the recorder's signer. Read-only: subscription commands and public market-data
GETs only (see :mod:`probe.script`); never an order, never ``/portfolio``.

Exit codes: 0 report written, every step ran; 1 report written but the run stopped early (the
connection failed or the time budget ran out); 2 a configuration problem (key, environment, output
path) or the exchange refused the key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from probe.report import PROBE_VERSION, ReportError, build_report, dumps, render_table
from probe.runner import RunSettings, now_ms, run_probe
from probe.script import MAX_ACTIONS
from recorder.auth import KeyError_, Signer, signer_from
from recorder.config import ENDPOINTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kalshi-probe",
        description="Ask the Kalshi exchange, read-only and in under a minute, every question the "
        "protocol leaves open (docs/protocol.md §9); write a JSON report and print a table.",
    )
    a = p.add_argument
    a(
        "--env",
        choices=sorted(ENDPOINTS),
        help="exchange environment (env KALSHI_ENV; default demo)",
    )
    a("--ws-url", help="WebSocket URL (overrides --env; e.g. a local simulator)")
    a("--rest-url", help="REST base URL ending in /trade-api/v2 (overrides --env)")
    a("--key-id", help="API key id (env KALSHI_API_KEY_ID)")
    a("--private-key", help="PEM private key path (env KALSHI_PRIVATE_KEY_PATH)")
    a("--out", type=Path, help="report file (default ./kalshi-probe-ENV-TIME.json)")
    a("--listen", type=float, default=20.0, help="max seconds to wait for a lifecycle notice")
    a("--max-seconds", type=float, default=60.0, help="hard bound on the whole run (<= 60)")
    a("--quiet", action="store_true", help="do not print the table")
    a("--version", action="version", version=f"kalshi-probe {PROBE_VERSION}")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    env = ns.env or os.environ.get("KALSHI_ENV") or "demo"
    if env not in ENDPOINTS:
        parser.error(f"unknown environment {env!r}; use one of {sorted(ENDPOINTS)}")
    if not 0 < ns.max_seconds <= 60:
        parser.error("--max-seconds must be in (0, 60]: the probe is bounded to a minute")
    if not 0 <= ns.listen <= ns.max_seconds:
        parser.error("--listen must be between 0 and --max-seconds")
    ws_default, rest_default = ENDPOINTS[env]
    ws_url = ns.ws_url or ws_default
    rest_url = ns.rest_url or rest_default
    environment = env if not (ns.ws_url or ns.rest_url) else "custom"
    key_id = ns.key_id or os.environ.get("KALSHI_API_KEY_ID")
    key_path = ns.private_key or os.environ.get("KALSHI_PRIVATE_KEY_PATH")
    try:
        signer: Signer = signer_from(key_id, key_path)
    except KeyError_ as exc:
        print(f"kalshi-probe: {exc}", file=sys.stderr)
        return 2
    out: Path = ns.out or Path(
        f"kalshi-probe-{environment}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    if out.parent and not out.parent.is_dir():
        print(
            f"kalshi-probe: directory {out.parent} does not exist; create it or change --out",
            file=sys.stderr,
        )
        return 2
    settings = RunSettings(
        ws_url=ws_url,
        rest_url=rest_url,
        signer=signer,
        max_seconds=ns.max_seconds,
        listen_s=ns.listen,
    )
    started = now_ms()
    run = asyncio.run(run_probe(settings))
    report = build_report(
        run.transcript,
        environment=environment,
        ws_url=ws_url,
        rest_url=rest_url,
        started_ms=started,
        finished_ms=now_ms(),
        limits={"max_seconds": settings.max_seconds, "max_actions": MAX_ACTIONS},
        run={
            "actions": run.actions,
            "dropped_frames": run.dropped_frames,
            "stopped_early": run.stopped_early,
            "handshake_status": run.handshake_status,
        },
    )
    try:
        data = dumps(report, secrets=(signer.key_id,))
    except ReportError as exc:
        print(f"kalshi-probe: {exc}", file=sys.stderr)
        return 2
    out.write_bytes(data)
    if not ns.quiet:
        print(render_table(report))
    print(f"kalshi-probe: report written to {out}", file=sys.stderr)
    if run.handshake_status in (401, 403):
        print(
            f"kalshi-probe: the exchange refused the key (HTTP {run.handshake_status}); check "
            "KALSHI_API_KEY_ID matches the key file and that it is a key for --env "
            f"{env} (demo and prod keys differ)",
            file=sys.stderr,
        )
        return 2
    if run.stopped_early:
        print(f"kalshi-probe: the run stopped early: {run.stopped_early}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real recorder with the live tap attached, as ``recorder/app.py`` will wire ``--tap``.

Run as ``python -m tests.feed.livetap <recorder arguments>`` with ``FEED_TAP`` = the tap address
(``FEED_TAP_MAX_QUEUE`` optional). It prints ``{"url": ...}`` on its first stdout line and, with
``FEED_TAP_WAIT=1``, holds the recording until a first consumer has subscribed (so that consumer
sees the session from record 1; deadline 60 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from feed.fanout import DEFAULT_MAX_QUEUE
from feed.tap import start_tap
from recorder.app import Recorder
from recorder.auth import signer_from
from recorder.config import settings_from
from recorder.segments import recover


async def _main(argv: list[str]) -> int:
    settings, _ = settings_from(argv)
    signer = signer_from(settings.key_id, settings.private_key)
    report = recover(settings.data_dir, end_marker=True)
    rec = Recorder(settings, signer, report)
    max_queue = int(os.environ.get("FEED_TAP_MAX_QUEUE", DEFAULT_MAX_QUEUE))
    tap = await start_tap(
        os.environ["FEED_TAP"], rec.log, {"config": settings.redacted()}, max_queue=max_queue
    )
    print(json.dumps({"url": tap.url, "session_id": rec.session_id}), flush=True)
    if os.environ.get("FEED_TAP_WAIT") == "1":
        deadline = time.monotonic() + 60
        while not any(c.started for c in tap.fanout.consumers):
            if time.monotonic() > deadline:
                print("no consumer subscribed within 60 s", file=sys.stderr)
                return 3
            await asyncio.sleep(0.01)
    summary = await rec.run()
    await tap.close()
    print(json.dumps({"frames": summary.frames, "tap_failed": tap.failed}), flush=True)
    return 0 if tap.failed is None else 4


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1:])))

"""A console viewer as a program, to run inside a lab namespace (the lab's Internet):

    ip netns exec skf-<lab>-internet python tests/e2e/console_viewer.py ws://...?token=...

Connects to the console proxy's websocket, completes the RFB handshake (the proxy
offers no authentication: it did the VNC one), asks for the whole framebuffer and
prints one JSON line: ``{"ok": true, "width", "height", "colour": [r, g, b]}``, or
``{"ok": false, "status": <HTTP status of a refused upgrade>, "error": ...}``. With
``--hold SECONDS`` it keeps the session open that long before closing it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp  # noqa: E402

from appliances.console.testing import WsViewer  # noqa: E402


async def view(url: str, hold: float) -> dict:
    try:
        viewer = await WsViewer.connect(url)
    except aiohttp.WSServerHandshakeError as exc:
        return {"ok": False, "status": exc.status, "error": exc.message}
    try:
        await asyncio.wait_for(viewer.handshake(), 15)
        update = await asyncio.wait_for(viewer.framebuffer(), 15)
        if hold:
            print(json.dumps({"ok": True, "holding": hold}), flush=True)
            await asyncio.sleep(hold)
        return {
            "ok": True,
            "width": viewer.width,
            "height": viewer.height,
            "colour": list(update.dominant_colour()),
        }
    except (ConnectionError, TimeoutError, OSError) as exc:
        return {"ok": False, "status": None, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await viewer.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--hold", type=float, default=0.0)
    args = p.parse_args()
    print(json.dumps(asyncio.run(view(args.url, args.hold))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

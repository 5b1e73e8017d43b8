"""The download part of ``ssvm_cpvm``: download-and-verify of a 2 GiB file.

A loopback HTTP server (aiohttp's FileResponse: sendfile, its own process) serves a
generated 2 GiB file from a temp folder. In the same run, alternating:

* **baseline**: ``curl URL | sha256sum`` (receive and hash, nothing written);
* **Skiff**: the storage role's images service given a document naming the URL and
  its SHA-256: from commit to the image Downloaded, i.e. received, hashed while
  written to the store, fsynced, checksum compared, format inspected, installed.

``download_ratio`` is Skiff's throughput over the baseline's (medians); the target
is at least 0.9. Also runs as the server: ``python _ssvm_download.py --serve FILE``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 1 << 30
BLOCK = 4 << 20


def make_file(path: Path, size: int) -> str:
    """Write ``size`` bytes of random-looking data; its SHA-256 hex."""
    seed = os.urandom(BLOCK)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for k in range(size // BLOCK):
            block = k.to_bytes(8, "big") + seed[8:]
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def start_server(path: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/{path.name}"


def baseline(url: str, want: str) -> float:
    started = time.perf_counter()
    curl = subprocess.Popen(["curl", "-sS", "--fail", url], stdout=subprocess.PIPE)
    sha = subprocess.Popen(["sha256sum"], stdin=curl.stdout, stdout=subprocess.PIPE, text=True)
    assert curl.stdout is not None
    curl.stdout.close()
    out, _ = sha.communicate()
    if curl.wait() != 0 or out.split()[0] != want:
        raise RuntimeError(f"baseline failed: curl rc {curl.returncode}, {out!r}")
    return time.perf_counter() - started


async def _skiff(url: str, want: str, store: Path) -> float:
    from appliances.agent.service import AgentContext
    from appliances.storage.document import StorageDocument
    from appliances.storage.images import DOWNLOADED, Images
    from appliances.storage.services import ImageService

    doc = StorageDocument.model_validate(
        {
            "appliance_id": "bench",
            "generation": 1,
            "store": {"path": str(store)},
            "images": [{"id": "t1", "format": "RAW", "url": url, "checksum": want}],
        }
    )
    images = Images()
    service = ImageService(AgentContext("bench", store.parent, 0), images)
    try:
        change = await service.prepare(doc)
        started = time.perf_counter()
        await service.commit(change)
        item = images.items["t1"]
        assert item.task is not None
        await item.task
        elapsed = time.perf_counter() - started
        if item.state != DOWNLOADED:
            raise RuntimeError(f"Skiff's download failed: {item.error}")
        return elapsed
    finally:
        await service.stop()


def skiff(url: str, want: str, store: Path) -> float:
    try:
        return asyncio.run(_skiff(url, want, store))
    finally:
        shutil.rmtree(store, ignore_errors=True)  # outside the timing


def measure(size: int = 2 * GiB, rounds: int = 5, progress=print) -> tuple[list[str], dict]:
    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-ssvm-"))
    server = None
    try:
        progress(f"writing a {size / GiB:g} GiB file in {tmp}")
        path = tmp / "image.img"
        want = make_file(path, size)
        server, url = start_server(path)
        base_s, skiff_s = [], []
        for k in range(rounds):  # alternate, so both meet the same machine
            order = ("base", "skiff") if k % 2 == 0 else ("skiff", "base")
            for which in order:
                if which == "base":
                    base_s.append(baseline(url, want))
                else:
                    skiff_s.append(skiff(url, want, tmp / f"store{k}"))
            progress(f"round {k + 1}: curl|sha256sum {base_s[-1]:.2f} s, Skiff {skiff_s[-1]:.2f} s")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    mb = size / 1e6
    base_med, skiff_med = statistics.median(base_s), statistics.median(skiff_s)
    ratio = base_med / skiff_med
    lines = [
        f"download {size / GiB:g} GiB from loopback (medians of {rounds}, alternating):",
        f"  Skiff download-and-verify (hash while written, fsync, inspect, install): "
        f"{mb / skiff_med:.0f} MB/s ({skiff_med:.2f} s; runs "
        f"{', '.join(f'{s:.2f}' for s in skiff_s)})",
        f"  baseline curl | sha256sum (nothing written): {mb / base_med:.0f} MB/s "
        f"({base_med:.2f} s; runs {', '.join(f'{s:.2f}' for s in base_s)})",
        f"  download_ratio {ratio:.2f} (target >= 0.90: {'ok' if ratio >= 0.9 else 'MISSED'})",
    ]
    return lines, {"download_ratio": f"{ratio:.2f}"}


def _serve(path: str) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    async def main() -> None:
        app = web.Application()
        app.router.add_get(f"/{Path(path).name}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _serve(sys.argv[2])

"""The storage role converging the image store: downloads, errors, deletions, restarts.

Real files from qemu-img served by a loopback HTTP server; documents applied through
the agent's own Applier, and the agent's API (per-image status) through its app.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliances.agent.server import build_app
from tests.storage import fileserver
from tests.storage import imagefiles as img
from tests.storage.harness import Harness

MiB = 1 << 20


@pytest.fixture
async def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    img.qcow2(root / "disk.qcow2", "64M")
    img.raw(root / "big.img", 3 * MiB + 5, fill=os.urandom(4096))
    base = img.raw(tmp_path / "base.img")
    img.qcow2_with_backing(root / "child.qcow2", base)
    img.iso_by_hand(root / "cd.iso")
    srv, runner, port = await fileserver.start(root)
    srv.url = lambda name: f"http://127.0.0.1:{port}/{name}"
    srv.sha256 = lambda name: hashlib.sha256((root / name).read_bytes()).hexdigest()
    yield srv
    await runner.cleanup()


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    await harness.close()


def image(web, image_id, name, fmt, *, checksum=True, **kw):
    spec = {"id": image_id, "format": fmt, "url": web.url(name), **kw}
    if checksum is True:
        spec["checksum"] = "{SHA-256}" + web.sha256(name.split("?")[0])
    elif checksum:
        spec["checksum"] = checksum
    return spec


async def test_right_checksum_is_downloaded_with_sizes_and_status(web, h):
    outcome = await h.apply(h.doc(1, [image(web, "t1", "disk.qcow2", "QCOW2")]))
    assert outcome.services["images"] == "store " + str(h.store) + ", download 1"
    await h.settle()
    st = h.item("t1")
    size = (web.root / "disk.qcow2").stat().st_size
    assert st["state"] == "Downloaded" and st["status_text"] == "Download Complete"
    assert (st["percent"], st["virtual_size"], st["physical_size"]) == (100, 64 * MiB, size)
    assert st["checksum"] == "{SHA-256}" + web.sha256("disk.qcow2")
    assert h.store_files() == ["t1.json", "t1.qcow2"]
    assert (h.store / "t1.qcow2").read_bytes() == (web.root / "disk.qcow2").read_bytes()
    # The agent's API: /v1/status carries every image, /v1/images/<id> one.
    info = {
        "role": "storage",
        "appliance_id": "ssvm-t",
        "version": "t",
        "started": time.monotonic(),
    }
    async with TestClient(TestServer(build_app(h.applier, info))) as client:
        status = await (await client.get("/v1/status")).json()
        assert status["services"]["images"]["items"]["t1"]["state"] == "Downloaded"
        assert status["services"]["images"]["counts"] == {"Downloaded": 1}
        one = await client.get("/v1/images/t1")
        assert (await one.json())["virtual_size"] == 64 * MiB
        assert (await client.get("/v1/images/nope")).status == 404


async def test_wrong_checksum_is_an_error_and_nothing_is_stored(web, h):
    wrong = "{SHA-256}" + "0" * 64
    await h.apply(h.doc(1, [image(web, "t1", "big.img", "RAW", checksum=wrong)]))
    await h.settle()
    st = h.item("t1")
    assert st["state"] == "Error"
    assert st["error"].startswith("checksum mismatch: declared {SHA-256}0000")
    assert st["status_text"] == st["error"]
    assert h.store_files() == []


@pytest.mark.parametrize("alg", ["md5", "sha1", "sha512"])
async def test_other_algorithms_bare_hex(web, h, alg):
    digest = hashlib.new(alg, (web.root / "big.img").read_bytes()).hexdigest()
    await h.apply(h.doc(1, [image(web, "t1", "big.img", "RAW", checksum=digest)]))
    await h.settle()
    assert h.item("t1")["state"] == "Downloaded"
    assert h.item("t1")["checksum"].endswith(digest)


async def test_interrupted_transfer_is_resumed(web, h):
    await h.apply(h.doc(1, [image(web, "t1", "big.img?cut=once", "RAW")]))
    await h.settle()
    st = h.item("t1")
    assert st["state"] == "Downloaded", st
    assert (st["requests"], st["resumed"], st["restarts"]) == (2, 1, 0)
    assert web.requests[1][1].startswith("bytes=") and web.requests[1][1] != "bytes=0-"
    assert (h.store / "t1.img").read_bytes() == (web.root / "big.img").read_bytes()


async def test_qcow2_with_a_backing_file_is_refused(web, h):
    await h.apply(h.doc(1, [image(web, "t1", "child.qcow2", "QCOW2")]))
    await h.settle()
    assert h.item("t1")["state"] == "Error"
    assert "backing file" in h.item("t1")["error"]
    assert h.store_files() == []


async def test_iso_declared_as_qcow2_is_refused(web, h):
    await h.apply(h.doc(1, [image(web, "t1", "cd.iso", "QCOW2")]))
    await h.settle()
    assert h.item("t1")["error"] == "declared QCOW2 but the content is an ISO image"
    assert h.store_files() == []


async def test_size_limit(web, h):
    doc = h.doc(1, [image(web, "t1", "big.img", "RAW")], limits={"max_download_bytes": MiB})
    await h.apply(doc)
    await h.settle()
    assert "over the limit of 1048576" in h.item("t1")["error"]
    assert h.store_files() == []


async def test_http_error_is_reported(web, h):
    await h.apply(h.doc(1, [image(web, "t1", "missing.img", "RAW", checksum=None)]))
    await h.settle()
    assert h.item("t1")["error"].startswith("HTTP 404 Not Found from http://127.0.0.1:")


async def test_a_second_apply_changes_nothing(web, h):
    doc = h.doc(
        1,
        [
            image(web, "t1", "disk.qcow2", "QCOW2"),
            image(web, "t2", "big.img", "RAW", checksum="0" * 64),
        ],
    )
    await h.apply(doc)
    await h.settle()
    assert [h.item(i)["state"] for i in ("t1", "t2")] == ["Downloaded", "Error"]
    before = (h.store / "t1.qcow2").stat()
    requests = len(web.requests)
    same = await h.apply(doc)  # the same generation again
    assert not same.changed
    again = await h.apply({**doc, "generation": 2})  # a new generation, same images
    assert not again.changed and again.services == {}
    after = (h.store / "t1.qcow2").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(web.requests) == requests  # nothing fetched again, the error stays
    assert h.item("t2")["state"] == "Error"
    # Raising the attempt retries the failed one only.
    retry = {
        **doc,
        "generation": 3,
        "images": [doc["images"][0], {**doc["images"][1], "attempt": 1}],
    }
    outcome = await h.apply(retry)
    assert outcome.services["images"] == "download 1"
    await h.settle()
    assert len(web.requests) == requests + 1


async def test_a_corrected_url_fetches_again(web, h):
    spec = image(web, "t1", "missing.img", "RAW", checksum=None)
    await h.apply(h.doc(1, [spec]))
    await h.settle()
    assert h.item("t1")["state"] == "Error"
    await h.apply(h.doc(2, [{**spec, "url": web.url("big.img")}]))
    await h.settle()
    assert h.item("t1")["state"] == "Downloaded"


async def test_absent_and_dropped_images_are_deleted(web, h):
    specs = [image(web, f"t{k}", "big.img", "RAW") for k in (1, 2, 3)]
    await h.apply(h.doc(1, specs))
    await h.settle()
    assert len(h.store_files()) == 6
    await h.apply(h.doc(2, [specs[0], {**specs[1], "state": "absent"}]))
    assert h.store_files() == ["t1.img", "t1.json"]
    assert h.item("t2")["state"] == "Deleted"
    assert "t3" not in h.images.items  # dropped: gone from status too
    assert not (await h.apply(h.doc(3, [specs[0], {**specs[1], "state": "absent"}]))).changed


async def test_restart_finds_the_store_and_tidies_it(web, h, tmp_path):
    doc = h.doc(1, [image(web, "t1", "disk.qcow2", "QCOW2")])
    await h.apply(doc)
    await h.settle()
    await h.close()
    # A crash between rename and record, and a temp file, left behind.
    (h.store / "t9.qcow2").write_bytes(b"half")
    (h.store / ".partial" / "t1.abc.part").write_bytes(b"half")
    requests = len(web.requests)
    again = Harness(tmp_path)
    try:
        await again.start()  # re-applies the stored document
        assert again.item("t1")["state"] == "Downloaded"
        assert again.store_files() == ["t1.json", "t1.qcow2"]
        assert len(web.requests) == requests
    finally:
        await again.close()


async def test_a_deleted_download_in_flight_leaves_nothing(web, h):
    # The server cuts the first answer; the image is deleted before the retry.
    h.images.backoff = 30.0
    await h.apply(h.doc(1, [image(web, "t1", "big.img?cut=once", "RAW")]))
    while not web.requests:
        await asyncio.sleep(0.01)
    await h.apply(h.doc(2, [{**image(web, "t1", "big.img?cut=once", "RAW"), "state": "absent"}]))
    await h.settle()
    assert h.item("t1")["state"] == "Deleted"
    assert h.store_files() == []

"""Browser uploads and extract URLs on the appliance's data-plane listener."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl

import aiohttp
import pytest

from appliances.common import certs
from appliances.common.errors import ApplyError
from appliances.storage.signing import UploadMetadata, extract_token, upload_params
from tests.storage import imagefiles as img
from tests.storage.harness import KEY, Harness

MiB = 1 << 20


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    await harness.apply(harness.doc(1, []))
    yield harness
    await harness.close()


def params(
    h,
    image_id="up1",
    fmt="QCOW2",
    *,
    checksum=None,
    max_bytes=1 << 30,
    ttl=600,
    key=KEY,
    meta_id=None,
):
    meta = UploadMetadata(meta_id or image_id, fmt, max_bytes, checksum, name="my template")
    return upload_params(key, f"{h.base_url}/upload/{image_id}", meta, ttl=ttl, now=h.clock())


async def post(url, headers, data: bytes, *, field="files[]", filename="disk.qcow2"):
    form = aiohttp.FormData()
    form.add_field("name", "ignored text field")
    form.add_field(field, data, filename=filename, content_type="application/octet-stream")
    async with aiohttp.ClientSession() as s, s.post(url, data=form, headers=headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_valid_upload_is_verified_and_installed(h, tmp_path):
    data = img.qcow2(tmp_path / "a.qcow2", "32M").read_bytes()
    p = params(h, checksum="{SHA-512}" + hashlib.sha512(data).hexdigest())
    status, text, headers = await post(p.postURL, p.headers(), data)
    assert (status, text) == (200, "upload successful\n")
    assert headers["Access-Control-Allow-Origin"] == "*"
    st = h.item("up1")
    assert (st["state"], st["source"], st["status_text"]) == (
        "Downloaded",
        "upload",
        "Upload Complete",
    )
    assert (st["virtual_size"], st["physical_size"]) == (32 * MiB, len(data))
    assert st["name"] == "my template"
    assert (h.store / "up1.qcow2").read_bytes() == data
    assert h.store_files() == ["up1.json", "up1.qcow2"]
    # The same URL again: the image is there already.
    status, text, _ = await post(p.postURL, p.headers(), data)
    assert status == 409 and "already Downloaded" in text


@pytest.mark.parametrize(
    "case", ["forged", "wrong key", "expired", "other image", "no headers", "metadata edited"]
)
async def test_refused_uploads_change_nothing_on_disk(h, tmp_path, case):
    data = img.qcow2(tmp_path / "a.qcow2").read_bytes()
    p = params(h)
    headers = p.headers()
    url = p.postURL
    if case == "forged":
        headers["X-signature"] = "A" * 27 + "="
    elif case == "wrong key":
        headers = params(h, key="y" * 40).headers()
    elif case == "expired":
        h.clock.now += 601
    elif case == "other image":
        headers = params(h, "up1", meta_id="up2").headers()
    elif case == "no headers":
        headers = {}
    elif case == "metadata edited":
        headers["X-metadata"] = UploadMetadata("up1", "QCOW2", 1 << 40).encode()
    before = h.store_files()
    status, text, _ = await post(url, headers, data)
    assert status == 403, text
    assert h.store_files() == before == []
    assert "up1" not in h.images.items
    assert h.transfer.status()["uploads_refused"] == 1


async def test_upload_over_the_signed_limit(h, tmp_path):
    data = img.qcow2(tmp_path / "a.qcow2").read_bytes()
    p = params(h, max_bytes=1000)
    status, text, _ = await post(p.postURL, p.headers(), data + b"\0" * 100_000)
    assert status == 413 and "over the limit of 1000" in text
    assert h.store_files() == []


async def test_upload_whose_content_is_not_the_declared_format(h, tmp_path):
    data = img.iso_by_hand(tmp_path / "x.iso").read_bytes()
    p = params(h, fmt="QCOW2")
    status, text, _ = await post(p.postURL, p.headers(), data, filename="x.iso")
    assert status == 400 and "declared QCOW2 but the content is an ISO image" in text
    assert h.item("up1")["state"] == "Error"
    assert h.store_files() == []
    # A later upload with the right content may still come (the URL is valid).
    good = img.qcow2(tmp_path / "a.qcow2").read_bytes()
    assert (await post(p.postURL, p.headers(), good))[0] == 200


async def test_upload_with_a_wrong_checksum(h, tmp_path):
    data = img.iso_by_hand(tmp_path / "x.iso").read_bytes()
    p = params(h, fmt="ISO", checksum="0" * 32)
    status, text, _ = await post(p.postURL, p.headers(), data)
    assert status == 400 and text.startswith("checksum mismatch: declared {MD5}0000")
    assert h.store_files() == []


async def test_upload_not_a_file(h):
    p = params(h)
    form = aiohttp.FormData({"only": "text"})
    async with (
        aiohttp.ClientSession() as s,
        s.post(p.postURL, data=form(), headers=p.headers()) as resp,
    ):
        assert resp.status == 400  # urlencoded, not multipart
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("other", "just text")
    async with (
        aiohttp.ClientSession() as s,
        s.post(p.postURL, data=form, headers=p.headers()) as resp,
    ):
        assert resp.status == 422 and "not a file" in await resp.text()


async def test_upload_expected_by_the_document(h, tmp_path):
    await h.apply(h.doc(2, [{"id": "up1", "format": "ISO", "name": "cd"}]))
    assert h.item("up1")["state"] == "AwaitingUpload"
    assert h.item("up1")["status_text"] == "Not uploaded yet"
    data = img.iso_by_hand(tmp_path / "x.iso").read_bytes()
    wrong = params(h, fmt="QCOW2")
    assert (await post(wrong.postURL, wrong.headers(), data))[0] == 409
    p = params(h, fmt="ISO")
    assert (await post(p.postURL, p.headers(), data))[0] == 200
    assert h.item("up1")["state"] == "Downloaded"
    # A next generation naming it the same way changes nothing; absent deletes it.
    assert not (await h.apply(h.doc(3, [{"id": "up1", "format": "ISO", "name": "cd"}]))).changed
    await h.apply(h.doc(4, [{"id": "up1", "format": "ISO", "state": "absent"}]))
    assert h.store_files() == []
    assert (await post(p.postURL, p.headers(), data))[0] == 409  # deleted stays deleted


async def test_cors_preflight(h):
    async with aiohttp.ClientSession() as s:
        async with s.options(
            f"{h.base_url}/upload/up1",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        ) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            allowed = resp.headers["Access-Control-Allow-Headers"]
            assert {"x-signature", "x-metadata", "x-expires"} <= set(allowed.split(", "))
        doc = h.doc(2, [])
        doc["transfer"]["cors_origins"] = ["https://ui.example"]
        await h.apply(doc)
        for origin, status in (("https://ui.example", 204), ("https://evil.example", 403)):
            async with s.options(f"{h.base_url}/upload/up1", headers={"Origin": origin}) as r:
                assert r.status == status
                if status == 204:
                    assert r.headers["Access-Control-Allow-Origin"] == origin


async def _install(h, tmp_path, image_id="up1"):
    data = img.qcow2(tmp_path / "a.qcow2", "16M").read_bytes()
    p = params(h, image_id)
    assert (await post(p.postURL, p.headers(), data))[0] == 200
    return data


async def test_extract_serves_with_range_until_it_expires(h, tmp_path):
    data = await _install(h, tmp_path)
    url = f"{h.base_url}/extract/{extract_token(KEY, 'up1', h.clock() + 60)}"
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as resp:
            assert resp.status == 200 and await resp.read() == data
            assert resp.headers["Content-Disposition"] == 'attachment; filename="up1.qcow2"'
        async with s.get(url, headers={"Range": "bytes=100-"}) as resp:
            assert resp.status == 206 and await resp.read() == data[100:]
        async with s.head(url) as resp:
            assert resp.status == 200 and resp.content_length == len(data)
        h.clock.now += 60
        async with s.get(url) as resp:
            assert resp.status == 403 and "expired" in await resp.text()


async def test_extract_refuses_bad_tokens_and_unready_images(h, tmp_path):
    await _install(h, tmp_path)
    async with aiohttp.ClientSession() as s:
        for token, status in (
            (extract_token("z" * 40, "up1", h.clock() + 60), 403),
            ("garbage", 403),
            (extract_token(KEY, "nothing", h.clock() + 60), 404),
        ):
            async with s.get(f"{h.base_url}/extract/{token}") as resp:
                assert resp.status == status
        async with s.get(f"{h.base_url}/other") as resp:
            assert resp.status == 404


async def test_listener_moves_and_closes_with_the_document(h):
    first = h.transfer.listening()
    doc = h.doc(2, [])
    doc["transfer"]["address"] = "127.0.0.2"
    await h.apply(doc)
    assert h.transfer.listening().startswith("127.0.0.2:")
    await h.apply(h.doc(3, [], transfer=False))
    assert h.transfer.listening() is None
    assert first.startswith("127.0.0.1:")


async def _raw_post_head(h, headers: dict[str, str], image_id: str = "up1") -> bytes:
    """Send only a request head with ``Expect: 100-continue``; the first answer."""
    host, port = h.transfer.listening().split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /upload/{image_id} HTTP/1.1\r\nHost: {host}:{port}\r\nExpect: 100-continue\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000000\r\n"
        f"{head}\r\n".encode()
    )
    await writer.drain()
    first = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return first


async def test_expect_continue_refuses_before_the_body(h):
    good = params(h)
    assert (await _raw_post_head(h, good.headers())).startswith(b"HTTP/1.1 100 Continue")
    forged = {**good.headers(), "X-signature": "A" * 27 + "="}
    answer = await _raw_post_head(h, forged)
    assert answer.startswith(b"HTTP/1.1 403 Forbidden")
    too_big = params(h, "up2", max_bytes=1000)
    answer = await _raw_post_head(h, too_big.headers(), "up2")
    assert answer.startswith(b"HTTP/1.1 413")
    assert h.store_files() == [] and "up2" not in h.images.items
    # The admitted one was dropped after its head: an Error, nothing kept.
    for _ in range(500):
        if h.item("up1")["state"] != "Uploading":
            break
        await asyncio.sleep(0.01)
    assert "connection closed prematurely" in h.item("up1")["error"]


async def test_https_listener_and_a_pair_that_does_not_load(h, tmp_path):
    ca_key, ca = certs.make_ca("storage test CA", datetime.timedelta(days=1))
    key, cert = certs.issue(
        "ssvm",
        ca,
        ca_key,
        certs.SERVER,
        certs.server_sans("ssvm", "127.0.0.1"),
        datetime.timedelta(days=1),
    )
    doc = h.doc(2, [])
    doc["transfer"]["tls"] = {
        "cert_pem": certs.cert_pem(cert).decode(),
        "key_pem": certs.key_pem(key).decode(),
    }
    await h.apply(doc)
    assert h.transfer.status()["tls"] is True
    ctx = ssl.create_default_context(cadata=certs.cert_pem(ca).decode())
    data = img.qcow2(tmp_path / "a.qcow2").read_bytes()
    p = params(h)
    assert p.postURL.startswith("https://127.0.0.1:")
    form = aiohttp.FormData()
    form.add_field("files[]", data, filename="a.qcow2")
    async with (
        aiohttp.ClientSession() as s,
        s.post(p.postURL, data=form, headers=p.headers(), ssl=ctx) as resp,
    ):
        assert resp.status == 200
    # A key that does not match the certificate: refused before anything changes.
    listening = h.transfer.listening()
    bad = h.doc(3, [])
    bad["transfer"]["tls"] = {
        "cert_pem": certs.cert_pem(cert).decode(),
        "key_pem": certs.key_pem(certs.new_key()).decode(),
    }
    with pytest.raises(ApplyError, match="do not load"):
        await h.apply(bad)
    assert h.transfer.listening() == listening
    assert h.applier.generation == 2

"""The storage appliance for real: `skiff agent --role storage` in a namespace, images
fetched from a web server in another, a browser's upload and extract done with curl
from there, the agent driven over its mTLS API as the management server will."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from appliances.storage.signing import UploadMetadata, extract_token, upload_params
from appliances.storage.store import PARTIAL
from tests.storage import imagefiles as img
from tests.storage.storagelab import PUBLIC_PORT, SSVM_IP, storage_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.usefixtures("needs_lab")]

KEY = "lab-upload-key-" + "q" * 32
MiB = 1 << 20


@pytest.fixture
def needs_lab():
    from appliances.lab.testing import lab_skip_reason

    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def wait_settled(lab, ids: list[str]) -> dict[str, dict]:
    """Each image's status once none is Queued or Downloading (bounded)."""
    for _ in range(600):
        found = {}
        for image_id in ids:
            reply = await lab.agent.request("GET", f"/v1/images/{image_id}")
            assert reply.ok, reply
            found[image_id] = reply.body
        if all(s["state"] not in ("Queued", "Downloading") for s in found.values()):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"images did not settle: {found}")


def store_listing(lab) -> list[str]:
    return sorted(p.name for p in lab.store.iterdir() if p.name != PARTIAL) + sorted(
        p.name for p in (lab.store / PARTIAL).iterdir()
    )


async def test_storage_appliance_in_a_lab(tmp_path):
    async with storage_lab() as lab:
        www = lab.www
        img.qcow2(www / "disk.qcow2", "256M")
        img.raw(www / "big.img", 8 * MiB + 3)
        img.qcow2_with_backing(www / "child.qcow2", img.raw(tmp_path / "base.img"))
        img.iso_by_hand(www / "cd.iso")

        def spec(image_id, name, fmt, checksum=None):
            base = name.split("?")[0]
            return {
                "id": image_id,
                "format": fmt,
                "url": lab.web_url(name),
                "checksum": checksum or "{SHA-256}" + sha256(www / base),
            }

        doc = {
            "appliance_id": lab.appliance_id,
            "generation": 1,
            "store": {"path": str(lab.store)},
            "transfer": {
                "address": SSVM_IP,
                "port": PUBLIC_PORT,
                "key": KEY,
                "public_url": lab.public_url,
            },
            "images": [
                spec("good", "disk.qcow2", "QCOW2"),
                spec("wrongsum", "big.img", "RAW", "{MD5}" + "0" * 32),
                spec("resumed", "big.img?cut=once", "RAW"),
                spec("backing", "child.qcow2", "QCOW2"),
                spec("isoasqcow", "cd.iso", "QCOW2"),
                {"id": "up1", "format": "QCOW2", "name": "uploaded by a browser"},
            ],
        }
        reply = await lab.agent.apply(doc)
        assert reply.body["changed"] is True
        ids = [i["id"] for i in doc["images"] if "url" in i]
        st = await wait_settled(lab, ids)

        assert st["good"]["state"] == "Downloaded"
        assert st["good"]["virtual_size"] == 256 * MiB
        assert (lab.store / "good.qcow2").read_bytes() == (www / "disk.qcow2").read_bytes()
        assert st["wrongsum"]["state"] == "Error"
        assert st["wrongsum"]["error"].startswith("checksum mismatch: declared {MD5}000")
        assert st["resumed"]["state"] == "Downloaded"
        assert (st["resumed"]["resumed"], st["resumed"]["restarts"]) == (1, 0)
        assert sha256(lab.store / "resumed.img") == sha256(www / "big.img")
        assert "backing file" in st["backing"]["error"]
        assert st["isoasqcow"]["error"] == "declared QCOW2 but the content is an ISO image"
        assert store_listing(lab) == ["good.json", "good.qcow2", "resumed.img", "resumed.json"]
        status = (await lab.agent.status()).body
        assert status["role"] == "storage" and status["converged"] is True
        assert status["services"]["images"]["items"]["up1"]["state"] == "AwaitingUpload"
        assert status["services"]["transfer"]["listening"] == f"{SSVM_IP}:{PUBLIC_PORT}"

        # The same document again, then as a new generation: nothing changes.
        before = (lab.store / "good.qcow2").stat()
        assert (await lab.agent.apply(doc)).body["changed"] is False
        doc["generation"] = 2
        assert (await lab.agent.apply(doc)).body["changed"] is False
        after = (lab.store / "good.qcow2").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

        # Browser uploads from the web namespace: forged and expired change nothing.
        upload = img.qcow2(www / "upload.qcow2", "128M")
        post_url = f"{lab.public_url}/upload/up1"
        meta = UploadMetadata("up1", "QCOW2", 1 << 30, "{SHA-256}" + sha256(upload))
        good = upload_params(KEY, post_url, meta, ttl=600)
        forged = upload_params("not-the-key-" + "z" * 32, post_url, meta, ttl=600)
        expired = upload_params(KEY, post_url, meta, ttl=600, now=time.time() - 601)
        for params, want in ((forged, "403"), (expired, "403"), (good, "200")):
            listing = store_listing(lab)
            res = await lab.curl(
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                f"X-signature: {params.signature}",
                "-H",
                f"X-metadata: {params.metadata}",
                "-H",
                f"X-expires: {params.expires}",
                "-F",
                f"files[]=@{upload}",
                params.postURL,
            )
            assert res.stdout == want, res
            if want == "403":
                assert store_listing(lab) == listing
        st = await wait_settled(lab, ["up1"])
        assert st["up1"]["state"] == "Downloaded" and st["up1"]["virtual_size"] == 128 * MiB
        assert (lab.store / "up1.qcow2").read_bytes() == upload.read_bytes()

        # Extract: served (whole and a range) while the token lasts, then refused.
        expires = time.time() + 2
        url = f"{lab.public_url}/extract/{extract_token(KEY, 'good', expires)}"
        res = await lab.curl("-o", str(tmp_path / "out"), "-w", "%{http_code}", url)
        assert res.stdout == "200", res
        assert sha256(tmp_path / "out") == sha256(www / "disk.qcow2")
        res = await lab.curl("-r", "1000-", "-o", str(tmp_path / "part"), "-w", "%{http_code}", url)
        assert res.stdout == "206"
        assert (tmp_path / "part").read_bytes() == (www / "disk.qcow2").read_bytes()[1000:]
        while time.time() <= expires + 0.5:
            await asyncio.sleep(0.2)
        res = await lab.curl("-o", "/dev/null", "-w", "%{http_code}", url)
        assert res.stdout == "403"

        # Deleting: absent removes the file; the agent's status says so.
        doc["generation"] = 3
        doc["images"][0] = {**doc["images"][0], "state": "absent"}
        assert (await lab.agent.apply(doc)).body["services"]["images"] == "delete 1"
        assert not (lab.store / "good.qcow2").exists()
        assert (await lab.agent.request("GET", "/v1/images/good")).body["state"] == "Deleted"

"""Templates through the zone's real storage VM: a template registered over the API is
downloaded by the storage VM (a namespace the server started by itself) from a web
server on the lab's Internet, verified and shown Ready; a wrong checksum leaves an
error on the template; extracting gives a URL the lab's Internet can fetch the same
bytes from."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import pytest_asyncio
from e2e_traffic import until
from orchestration import cloud

from appliances.lab import names

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
LAB = "tpl"
PORT = 8070


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory):
    www = tmp_path_factory.mktemp("www")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(www / "disk.qcow2"), "32M"], check=True
    )
    async with cloud(LAB, tmp_path_factory.mktemp("mgmt")) as c:
        # The lab's Internet namespace comes up with the zone's system VMs.
        ssvm = await until(
            lambda: _storage_vm(c),
            lambda s: s.get("state") == "Running" and s.get("agentstate") == "Up",
            timeout=120,
            interval=0.5,
        )
        assert ssvm.get("agentstate") == "Up", ssvm
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                c.ns("internet"),
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                str(names.INTERNET_IP),
                "--directory",
                str(www),
                str(PORT),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            served = await until(
                lambda: c.curl(f"http://{names.INTERNET_IP}:{PORT}/"),
                lambda body: body is not None,
                timeout=20,
                interval=0.2,
            )
            assert served is not None, "the lab's web server did not start"
            yield c, www
        finally:
            server.terminate()
            server.wait(timeout=10)


async def _storage_vm(c) -> dict:
    found = (await c.call("listSystemVms", systemvmtype="secondarystoragevm")).get("systemvm", [])
    return found[0] if found else {}


def _settled(template: dict) -> bool:
    """Ready, or failed: no longer pending, downloading or installing."""
    status = template.get("status", "")
    return (
        bool(template.get("isready"))
        or bool(status)
        and status != "Download pending"
        and "Downloaded" not in status
        and "Installing" not in status
    )


async def _template(c, template_id: str) -> dict:
    found = (await c.call("listTemplates", templatefilter="all", id=template_id)).get(
        "template", []
    )
    return found[0] if found else {}


async def _register(c, name: str, checksum: str) -> dict:
    [ostype] = (await c.call("listOsTypes"))["ostype"][:1]
    return (
        await c.call(
            "registerTemplate",
            name=name,
            displaytext=name,
            format="QCOW2",
            hypervisor="KVM",
            url=f"http://{names.INTERNET_IP}:{PORT}/disk.qcow2",
            ostypeid=ostype["id"],
            zoneid=c.zone.zone["id"],
            checksum=checksum,
            isextractable="true",
        )
    )["template"][0]


async def test_a_template_is_downloaded_by_the_storage_vm_and_extracted(world):
    c, www = world
    digest = hashlib.sha256((www / "disk.qcow2").read_bytes()).hexdigest()
    good = await _register(c, "good", "{SHA-256}" + digest)
    ready = await until(lambda: _template(c, good["id"]), _settled, timeout=180, interval=1)
    assert ready["status"] == "Download Complete", ready
    assert ready["size"] == 32 * 1024 * 1024
    extract = (
        await c.call(
            "extractTemplate", id=good["id"], mode="HTTP_DOWNLOAD", zoneid=c.zone.zone["id"]
        )
    )["template"]
    body = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            c.ns("internet"),
            "curl",
            "-sf",
            "--max-time",
            "30",
            extract["url"],
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(body).hexdigest() == digest


async def test_a_wrong_checksum_leaves_an_error_and_no_ready_template(world):
    c, _www = world
    bad = await _register(c, "bad", "{SHA-256}" + "0" * 64)
    seen = await until(lambda: _template(c, bad["id"]), _settled, timeout=180, interval=1)
    assert seen["isready"] is False and "checksum" in seen["status"].lower(), seen

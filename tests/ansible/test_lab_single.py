"""ansible/lab.yml with inventories/single, all four plays, as an operator runs it on
one machine: the management server (every path under a temporary folder, a free
port, the fallback supervisor), the netns host, the image (really built by
skiff_image, with the default package cache that tests/image shares) and the zone,
whose routers then run from that image; then the cs-driven check (a network, an
instance, a port forward, the page from the lab's Internet); a second run changes
nothing. The server is stopped and the lab removed afterwards.

SKIFF_IMAGE_TESTS=0 (no image tools) copies a stand-in archive instead and leaves
system.vm.image empty: the routers run from this checkout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from labcheck import first_page
from mgmt_env import DOWN, Deployment, free_port
from playbooks import ANSIBLE, BIN, run_playbook
from zonelab import stand_in_image

from appliances.lab.lab import Lab
from appliances.lab.testing import (
    claimed,
    cleanup_stale_test_labs,
    image_agent_root,
    new_lab_name,
)

INVENTORY = ANSIBLE / "inventories" / "single" / "hosts.yml"
pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(not (BIN / "ansible-playbook").exists(), reason="no ansible-playbook"),
]


def play(d: Deployment, playbook: str, **kwargs):
    return asyncio.run(run_playbook(playbook, INVENTORY, d.root, extra_vars=d.vars(), **kwargs))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-single")
    name = new_lab_name()
    # skiff_zone's modules run with the server's venv, as on a remote management host
    # (test_zone_roles covers the default here, the playbook's own Python)
    extra = {"skiff_image_dir": str(root / "images"), "skiff_zone_python": "{{ skiff_python }}"}
    if os.environ.get("SKIFF_IMAGE_TESTS") == "0":
        extra.update(skiff_image_src=str(stand_in_image(root / "stand-in.tar.zst")),
                     skiff_zone_system_vm_image="")
    d = Deployment(root, name, free_port(), extra)
    with claimed(name):
        asyncio.run(cleanup_stale_test_labs())
        try:
            first = play(d, "lab.yml")
            yield d, first
        finally:
            play(d, DOWN)
            for pid in d.marked_pids():  # a failed stop must not leave a server
                os.kill(pid, signal.SIGKILL)
            asyncio.run(Lab(name).down(quiet=True))


def test_lab_yml_deploys_a_lab_that_serves_a_page(deployed):
    d, first = deployed
    assert first.rc == 0 and first.failed == 0 and first.changed > 0, first.text[-6000:]
    admin = json.loads((d.root / "home" / "admin.json").read_text())
    url = f"http://127.0.0.1:{d.port}/client/api"
    page = first_page(url, admin["apikey"], admin["secretkey"], d.lab, wait=180)
    assert page.body.split()[:1] == ["check"], page
    if os.environ.get("SKIFF_IMAGE_TESTS") != "0":  # the router that forwarded it is the image's
        [ns] = [p.name for p in Path("/run/netns").glob(f"skf-{d.lab}-r-*")]
        root = asyncio.run(image_agent_root(ns))
        assert root is not None and (root / "etc/skiff/image.json").is_file()


def test_second_run_changes_nothing(deployed):
    d, _ = deployed
    second = play(d, "lab.yml")
    assert second.rc == 0 and second.changed == 0, second.text[-6000:]

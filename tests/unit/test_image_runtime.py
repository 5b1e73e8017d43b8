"""Running appliances from the image without booting one: the base cache key, the shared
root file system extraction, the qemu host URL and command line."""

from __future__ import annotations

import io
import ipaddress
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from appliances.image import imageroot
from appliances.image.build import BuildOptions, _Build, _mmdebstrap_argv, base_key
from appliances.image.recipe import load
from appliances.image.stages import Progress
from mgmt.orchestration.hosts.driver import ApplianceCerts, NicPlan, RouterPlan
from mgmt.orchestration.hosts.qemu import QemuHostDriver, parse_qemu_url


def _key(tmp_path: Path, epoch: int = 1, **recipe_changes) -> str:
    recipe = load()
    if recipe_changes:
        recipe = recipe.model_copy(update=recipe_changes)
    opts = BuildOptions(out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    b = _Build(opts, recipe, epoch, Progress(total=1, log_dir=tmp_path / "logs"))
    b.work.mkdir(parents=True, exist_ok=True)
    return base_key(b, _mmdebstrap_argv(b))


def test_base_key_follows_the_packages_and_mirror_not_the_epoch(tmp_path):
    first = _key(tmp_path)
    assert _key(tmp_path, epoch=2) == first  # a new commit: the same base
    assert _key(tmp_path / "elsewhere") == first  # another out dir and cache: the same
    packages = {**load().packages, "admin": ["qemu-guest-agent"]}
    assert _key(tmp_path, packages=packages) != first
    assert _key(tmp_path, mirror="http://deb.example/debian") != first


def _archive(tmp_path: Path, members: dict[str, bytes]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "rootfs.tar.zst"
    subprocess.run(["zstd", "-q", "-o", str(path)], input=raw.getvalue(), check=True)
    return path


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd missing")
async def test_one_shared_extraction_per_archive(tmp_path):
    host = imageroot.LocalHost()
    roots = str(tmp_path / "roots")
    archive = _archive(tmp_path, {"opt/skiff/bin/python": b"#!/bin/sh\n", "etc/x": b"1\n"})
    root, sha = await imageroot.ensure_root(host, str(archive), roots)
    assert Path(root).name == sha and (Path(root) / "etc/x").read_text() == "1\n"
    (Path(root) / "etc/x").write_text("marker\n")
    assert await imageroot.ensure_root(host, str(archive), roots) == (root, sha)
    assert (Path(root) / "etc/x").read_text() == "marker\n"  # not unpacked again
    assert sorted(p.name for p in Path(roots).iterdir()) == [sha]  # no temporary left

    other = tmp_path / "other"
    other.mkdir()
    not_an_image = _archive(other, {"etc/x": b"2\n"})
    with pytest.raises(imageroot.ImageRootError, match="not a system-VM root"):
        await imageroot.ensure_root(host, str(not_an_image), roots)
    with pytest.raises(imageroot.ImageRootError, match="no such file"):
        await imageroot.ensure_root(host, str(tmp_path / "absent.tar.zst"), roots)
    with pytest.raises(imageroot.ImageRootError, match="absolute"):
        await imageroot.ensure_root(host, "rootfs.tar.zst", roots)


async def test_an_appliance_on_a_new_image_loses_its_old_writable_layer(tmp_path):
    host = imageroot.LocalHost()
    root = imageroot.ApplianceRoot(str(tmp_path / "r-1-VM"))
    await imageroot.prepare(host, root, "a" * 64, [("boot.json", b"{}", 0o644)])
    (Path(root.upper) / "kept").write_text("state")
    await imageroot.prepare(host, root, "a" * 64, [("key.pem", b"k", 0o600)])
    assert (Path(root.upper) / "kept").exists()
    assert (Path(root.boot_dir) / "key.pem").stat().st_mode & 0o777 == 0o600
    await imageroot.prepare(host, root, "b" * 64, [])
    assert not (Path(root.upper) / "kept").exists()
    argv = imageroot.boot_argv("/usr/bin/python3", "/roots/x", root)
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert "--overlay" in argv and f"{root.boot_dir}:/var/lib/skiff/boot" in argv
    assert argv[-7:] == ["/opt/skiff/bin/python", "-m", "appliances.agent.boot", "--run",
                         "--lab", "--source", "dir:/var/lib/skiff/boot"]


def test_qemu_url():
    u = parse_qemu_url("qemu://lab1?image=/srv/skiff-systemvm.qcow2")
    assert (u.lab, u.image, u.memory_mib) == ("lab1", "/srv/skiff-systemvm.qcow2", 512)
    assert u.accel in ("tcg", "kvm")
    u = parse_qemu_url("qemu://lab1?image=/i.qcow2&accel=kvm&memory=1024&boot_timeout=120")
    assert (u.accel, u.memory_mib, u.boot_timeout) == ("kvm", 1024, 120.0)
    for bad, why in (("qemu://lab1", "absolute path"), ("qemu://lab1?image=i.qcow2", "absolute"),
                     ("qemu://lab1?image=/i,x.qcow2", "commas"),
                     ("qemu://lab1?image=/i.qcow2&accel=xen", "tcg or kvm"),
                     ("qemu://lab1?image=/i.qcow2&memory=lots", "numbers"),
                     ("qemu://lab1?image=/i.qcow2&cpu=4", "unknown"),
                     ("qemu://toolongname?image=/i.qcow2", "."),
                     ("netns://lab1?image=/i.qcow2", "qemu://")):
        with pytest.raises(ValueError, match=why):
            parse_qemu_url(bad)


def test_qemu_command_line_follows_the_plan(tmp_path):
    driver = QemuHostDriver("qtest", "/srv/i.qcow2", memory_mib=512, state_dir=tmp_path)
    plan = RouterPlan(
        name="r-12-VM",
        nics=(NicPlan("eth0", "02:00:0a:00:00:01", "guest", 1000),
              NicPlan("eth1", "0e:00:a9:fe:00:05", "control"),
              NicPlan("eth2", "06:00:cb:00:71:0a", "public", 1)),
        control_ip=ipaddress.IPv4Interface("169.254.3.5/24"),
        certs=ApplianceCerts("ca", "cert", "key"), memory_mib=256)
    argv = driver.qemu_argv(plan, tmp_path / "r-12-VM")
    text = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64" and "-nodefaults" in argv
    assert argv[argv.index("-m") + 1] == "512" and argv[argv.index("-name") + 1] == "r-12-VM"
    devices = [a for a in argv if a.startswith("virtio-net-pci")]
    assert devices == ["virtio-net-pci,netdev=n0,mac=02:00:0a:00:00:01,addr=0x3",
                       "virtio-net-pci,netdev=n1,mac=0e:00:a9:fe:00:05,addr=0x4",
                       "virtio-net-pci,netdev=n2,mac=06:00:cb:00:71:0a,addr=0x5"]
    assert "ifname=r12vm-0," in text and "ifname=r12vm-2," in text
    assert f"file={tmp_path}/r-12-VM/boot.img,if=none,id=d1,format=raw,readonly=on" in text
    assert f"file:{tmp_path}/logs/r-12-VM-console.log" in text

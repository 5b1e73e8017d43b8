"""The image recipe's validation, the manifest's parts and the build's failure messages,
without building anything (tests/image builds the image)."""

from __future__ import annotations

import hashlib
import io
import json
import tomllib

import pytest

from appliances.image import disk
from appliances.image.manifest import dpkg_packages, verify
from appliances.image.recipe import DEFAULT_RECIPE, RecipeError, load
from appliances.image.stages import Progress, StageError

ROLE_PACKAGES = ("nftables", "dnsmasq-base", "haproxy", "strongswan-charon",
                 "strongswan-swanctl", "libcharon-extra-plugins", "keepalived", "conntrackd",
                 "conntrack", "iproute2", "busybox", "python3", "qemu-guest-agent",
                 "openssh-server")


def _write(tmp_path, text: str):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def _base() -> str:
    return DEFAULT_RECIPE.read_text()


def test_the_recipe_lists_every_role_package_and_locks_root():
    recipe = load()
    assert set(ROLE_PACKAGES) <= set(recipe.all_packages())
    assert any(p.startswith("linux-image-") for p in recipe.all_packages())
    assert [u.name for u in recipe.users] == ["root"]
    assert "ssh.service" in recipe.services.disable
    assert "net.ipv4.ip_forward = 1" in recipe.sysctl_conf()


def test_a_password_is_refused(tmp_path):
    text = _base().replace('password = "locked"', 'password = "$6$salt$hash"')
    with pytest.raises(RecipeError, match="users.0.password"):
        load(_write(tmp_path, text))


def test_bad_names_are_refused_by_field(tmp_path):
    data = tomllib.loads(_base())
    text = _base().replace('"nftables",', '"nftables; rm -rf /",', 1)
    text = text.replace('enable = ["skiff-agent.service"', 'enable = ["$(reboot)"')
    text = text.replace('"kernel.panic" = "10"', '"kernel.panic" = "10; reboot"')
    with pytest.raises(RecipeError) as err:
        load(_write(tmp_path, text))
    for field in ("packages", "services.enable", "sysctl"):
        assert field in str(err.value)
    assert data["name"] == "skiff-systemvm"


def test_root_on_the_command_line_is_the_builders(tmp_path):
    text = _base().replace('kernel_cmdline = "ro', 'kernel_cmdline = "root=/dev/sda1 ro')
    with pytest.raises(RecipeError, match="disk.kernel_cmdline"):
        load(_write(tmp_path, text))


def test_unknown_keys_and_broken_toml(tmp_path):
    with pytest.raises(RecipeError, match="surprise"):
        load(_write(tmp_path, _base() + "\nsurprise = 1\n"))
    with pytest.raises(RecipeError, match="not valid TOML"):
        load(_write(tmp_path, "name = \n"))
    with pytest.raises(RecipeError, match="cannot read"):
        load(tmp_path / "absent.toml")


def test_syslinux_boots_the_root_partition_by_partuuid():
    recipe = load()
    cfg = disk.syslinux_cfg(recipe)
    assert f"root=PARTUUID={disk.disk_id(recipe)}-02" in cfg
    assert "console=ttyS0,115200n8" in cfg and "SERIAL 0 115200" in cfg
    assert len(disk.disk_id(recipe)) == 8


STATUS = """Package: nftables
Status: install ok installed
Architecture: amd64
Version: 1.0.6-2+deb12u2
Description: tool
 with a continuation line: not a field

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: busybox
Status: install ok installed
Architecture: amd64
Version: 1:1.35.0-4+b3
"""


def test_dpkg_status_gives_installed_packages_only():
    packages = dpkg_packages(STATUS)
    assert packages == {"busybox": {"version": "1:1.35.0-4+b3", "architecture": "amd64"},
                        "nftables": {"version": "1.0.6-2+deb12u2", "architecture": "amd64"}}


def test_verify_names_missing_packages_and_bad_hashes(tmp_path):
    recipe = load()
    artifact = tmp_path / "skiff-systemvm-rootfs.tar.zst"
    artifact.write_bytes(b"archive")
    manifest = {"packages": {p: {"version": "1"} for p in recipe.all_packages()
                             if p != "haproxy"},
                "artifacts": {"rootfs": {"file": artifact.name,
                                         "sha256": hashlib.sha256(b"other").hexdigest()}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(tmp_path, recipe)
    assert "recipe package haproxy is not in the image with a version" in problems
    assert "rootfs: skiff-systemvm-rootfs.tar.zst does not match its sha256" in problems
    assert "sha512sum.txt is missing" in problems
    assert verify(tmp_path / "none", recipe)[0].startswith("no readable manifest.json")


def test_a_failed_command_names_its_stage_and_shows_the_log(tmp_path):
    out = io.StringIO()
    progress = Progress(total=2, log_dir=tmp_path, out=out)
    with pytest.raises(StageError) as err, progress.stage("rootfs", "testing"):
        progress.run(["sh", "-c", "echo the mirror said no >&2; exit 3"])
    assert err.value.stage == "rootfs"
    assert "sh exited 3" in str(err.value) and "the mirror said no" in str(err.value)
    with pytest.raises(StageError, match="stage qcow2: .*not installed"), \
            progress.stage("qcow2", "testing"):
        progress.run(["/nonexistent/mkfs.thing"])
    with pytest.raises(StageError, match="stage manifest: KeyError"), \
            progress.stage("manifest", "testing"):
        raise KeyError("x")
    assert "==> [1/2] rootfs: testing" in out.getvalue()

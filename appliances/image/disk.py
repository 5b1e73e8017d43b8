"""The bootable qcow2, made without loop devices or mounts.

Layout (MBR): partition 1 is FAT with the kernel, the initrd and SYSLINUX
(``syslinux`` installs into a FAT image file through mtools); partition 2 is
the ext4 root, made by ``mkfs.ext4 -d`` straight from the root directory. The
two file systems are made as files, copied into a raw disk whose partition
table ``sfdisk`` wrote, SYSLINUX's MBR code goes into the first 440 bytes, and
``qemu-img convert -c`` makes the compressed qcow2.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from appliances.image.recipe import Recipe
from appliances.image.stages import Progress, StageError

MBR_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
TOOLS = ("mkfs.ext4", "mkfs.vfat", "mcopy", "syslinux", "sfdisk", "qemu-img", str(MBR_CODE))
MIB = 1 << 20
FIRST = 1  # MiB before the first partition
ROOT_LABEL = "skiff-root"


def disk_id(recipe: Recipe) -> str:
    """The MBR disk signature (8 hex digits), fixed per recipe name: the root is
    ``PARTUUID=<id>-02`` in fstab and on the kernel command line."""
    return hashlib.sha256(f"skiff-disk:{recipe.name}".encode()).hexdigest()[:8]


def _fs_uuid(recipe: Recipe) -> str:
    return str(uuid.UUID(hashlib.sha256(f"skiff-root:{recipe.name}".encode()).hexdigest()[:32]))


def syslinux_cfg(recipe: Recipe) -> str:
    return (
        "SERIAL 0 115200\n"
        "DEFAULT skiff\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL skiff\n"
        "  KERNEL /vmlinuz\n"
        "  INITRD /initrd.img\n"
        f"  APPEND root=PARTUUID={disk_id(recipe)}-02 {recipe.disk.kernel_cmdline}\n"
    )


def kernel_files(rootfs: Path) -> tuple[Path, Path]:
    """The image's newest kernel and its initrd."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise StageError("qcow2", "the root file system has no kernel in /boot "
                         "(does the recipe list a linux-image package?)")
    kernel = kernels[-1]
    initrd = rootfs / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-")
    if not initrd.exists():
        raise StageError("qcow2", f"no initrd for {kernel.name} (initramfs-tools missing?)")
    return kernel, initrd


def make_qcow2(progress: Progress, recipe: Recipe, rootfs: Path, work: Path, target: Path,
               epoch: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    boot, root, raw = work / "boot.fat", work / "root.ext4", work / "disk.raw"
    for f in (boot, root, raw):
        f.unlink(missing_ok=True)
    env = {"SOURCE_DATE_EPOCH": str(epoch), "E2FSPROGS_FAKE_TIME": str(epoch),
           "MTOOLS_SKIP_CHECK": "1"}
    kernel, initrd = kernel_files(rootfs)
    boot_mib, root_mib = recipe.disk.boot_mib, recipe.disk.root_mib
    hidden = FIRST * MIB // 512
    progress.run(["mkfs.vfat", "-C", "-F", "32", "-n", "SKIFFSYS", "-i", disk_id(recipe),
                  "-h", str(hidden), str(boot), str(boot_mib * 1024)], env=env)
    cfg = work / "syslinux.cfg"
    cfg.write_text(syslinux_cfg(recipe))
    for source, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        progress.run(["mcopy", "-m", "-i", str(boot), str(source), f"::/{name}"], env=env)
    progress.run(["syslinux", "--install", str(boot)], env=env)
    fs_uuid = _fs_uuid(recipe)
    progress.run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-U", fs_uuid,
                  "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(rootfs), str(root),
                  f"{root_mib}M"], env=env)
    total = (FIRST + boot_mib + root_mib) * MIB
    with raw.open("wb") as f:
        f.truncate(total)
    start1, start2 = FIRST * MIB // 512, (FIRST + boot_mib) * MIB // 512
    table = (f"label: dos\nlabel-id: 0x{disk_id(recipe)}\nunit: sectors\n\n"
             f"start={start1}, size={boot_mib * MIB // 512}, type=c, bootable\n"
             f"start={start2}, size={root_mib * MIB // 512}, type=83\n")
    progress.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
                 stdin=table.encode(), env=env)
    with raw.open("r+b") as f:
        f.write(MBR_CODE.read_bytes()[:440])
    _copy_sparse(boot, raw, FIRST * MIB)
    _copy_sparse(root, raw, (FIRST + boot_mib) * MIB)
    target.unlink(missing_ok=True)
    progress.run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2",
                  "-o", "compression_type=zlib", str(raw), str(target)], env=env)
    for f in (boot, root, raw):
        f.unlink(missing_ok=True)


def _copy_sparse(source: Path, target: Path, offset: int) -> None:
    """Copy source's data regions into target at offset, leaving its holes as holes."""
    with source.open("rb") as src, target.open("r+b") as dst:
        fd, end = src.fileno(), os.fstat(src.fileno()).st_size
        pos = 0
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # only a hole is left
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            src.seek(data)
            dst.seek(offset + data)
            remaining = hole - data
            while remaining:
                chunk = src.read(min(remaining, 8 * MIB))
                dst.write(chunk)
                remaining -= len(chunk)
            pos = hole

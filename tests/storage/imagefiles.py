"""Real image files for the tests: qemu-img and xorriso where they can make them,
hand-made headers where they cannot (a VHD with a parent, a minimal ISO 9660)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def qcow2(path: Path, size: str = "64M", *options: str) -> Path:
    """``qemu-img create -f qcow2`` with ``-o`` options such as compat=0.10."""
    extra = ["-o", ",".join(options)] if options else []
    qemu_img("create", "-f", "qcow2", *extra, str(path), size)
    return path


def qcow2_with_backing(path: Path, backing: Path) -> Path:
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", str(backing), str(path))
    return path


def qcow2_with_data_file(path: Path, data: Path, size: str = "16M") -> Path:
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={data}", str(path), size)
    return path


def vhd(path: Path, size: str = "32M", subformat: str = "dynamic") -> Path:
    qemu_img("create", "-f", "vpc", "-o", f"subformat={subformat}", str(path), size)
    return path


def vhd_checksum(footer: bytes) -> int:
    return ~sum(footer[:64] + b"\0\0\0\0" + footer[68:]) & 0xFFFFFFFF


def make_differencing(path: Path) -> Path:
    """Turn a dynamic VHD's footers into a differencing disk's (type 4), checksums fixed."""
    data = bytearray(path.read_bytes())
    for offset in (0, len(data) - 512):
        footer = bytearray(data[offset : offset + 512])
        struct.pack_into(">I", footer, 60, 4)
        struct.pack_into(">I", footer, 64, vhd_checksum(bytes(footer)))
        data[offset : offset + 512] = footer
    path.write_bytes(bytes(data))
    return path


def raw(path: Path, size: int = 1 << 20, fill: bytes = b"raw disk ") -> Path:
    path.write_bytes((fill * (size // len(fill) + 1))[:size])
    return path


def iso_by_hand(path: Path, sectors: int = 24) -> Path:
    """A minimal ISO 9660 image: a primary volume descriptor and a terminator."""
    data = bytearray(sectors * 2048)
    pvd = bytearray(2048)
    pvd[0:7] = b"\x01CD001\x01"
    pvd[40:72] = b"SKIFF".ljust(32)
    struct.pack_into("<I", pvd, 80, sectors)
    struct.pack_into(">I", pvd, 84, sectors)
    struct.pack_into("<H", pvd, 128, 2048)
    struct.pack_into(">H", pvd, 130, 2048)
    data[0x8000:0x8800] = pvd
    data[0x8800:0x8807] = b"\xffCD001\x01"
    path.write_bytes(bytes(data))
    return path


def iso_by_xorriso(path: Path, content_dir: Path) -> Path:
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", "SKIFF", "-o", str(path), str(content_dir)],
        check=True,
        capture_output=True,
    )
    return path

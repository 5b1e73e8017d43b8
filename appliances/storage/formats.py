"""Image format inspection from headers only (never a pass over the data).

A template is handed to hypervisors that open it by its declared format, so the
content must be that format and must not reach outside itself:

* **QCOW2**: magic ``QFI\\xfb``, version 2 or 3, virtual size from the header. A
  backing file (header field or backing-format extension) or an external data file
  (incompatible feature bit 2, or the data-file-name extension) would make the
  hypervisor open another file of its host: refused. So are encryption, a header
  marked corrupt and incompatible features this inspector does not know.
* **RAW**: virtual size is the file size; refused when the content is another
  container format (qcow2, VHD, VMDK, VDI, LUKS), which is how a "raw" upload
  smuggles a qcow2 with a backing file past a format check.
* **VHD**: the 512-byte footer at the end (cookie ``conectix``, checksum), current
  size as virtual size; differencing disks (type 4) have a parent: refused.
* **ISO**: an ISO 9660 volume descriptor (``CD001`` at 0x8001); virtual size is the
  file size.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

FORMATS = ("QCOW2", "RAW", "VHD", "ISO")
EXTENSIONS = {"QCOW2": "qcow2", "RAW": "img", "VHD": "vhd", "ISO": "iso"}

QCOW2_MAGIC = b"QFI\xfb"
VHD_COOKIE = b"conectix"
ISO_OFFSET = 0x8000  # first volume descriptor (sector 16 of 2048 bytes)

# qcow2 incompatible feature bits (docs/interop/qcow2.txt)
_QCOW2_DIRTY = 1 << 0
_QCOW2_CORRUPT = 1 << 1
_QCOW2_DATA_FILE = 1 << 2
_QCOW2_COMPRESSION = 1 << 3
_QCOW2_EXTENDED_L2 = 1 << 4
_QCOW2_KNOWN_INCOMPATIBLE = (
    _QCOW2_DIRTY | _QCOW2_CORRUPT | _QCOW2_DATA_FILE | _QCOW2_COMPRESSION | _QCOW2_EXTENDED_L2
)
# qcow2 autoclear bit 1: "raw external data" (only meaningful with a data file)
_QCOW2_RAW_DATA = 1 << 1
# qcow2 header extensions
_EXT_END = 0
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_DATA_FILE = 0x44415441
_MAX_EXTENSION_BYTES = 1 << 20

_VHD_FIXED, _VHD_DYNAMIC, _VHD_DIFFERENCING = 2, 3, 4


class FormatError(ValueError):
    """The content is not the declared format, or is one that is refused."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    physical_size: int


def inspect(path: Path, declared: str) -> ImageInfo:
    """Check that ``path`` holds a ``declared`` image and read its sizes."""
    if declared not in FORMATS:
        raise FormatError(f"unknown format {declared!r}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = _read_at(f, 0, 4096)
        if declared == "QCOW2":
            return _qcow2(f, head, size)
        if declared == "VHD":
            return _vhd(f, size)
        if declared == "ISO":
            return _iso(f, head, size)
        return _raw(f, head, size)


def sniff(path: Path) -> str | None:
    """The container format the content carries, if any (for error messages)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return _container(f, _read_at(f, 0, 4096), size)


def _read_at(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


def _container(f, head: bytes, size: int) -> str | None:
    if head.startswith(QCOW2_MAGIC):
        return "QCOW2"
    if head.startswith(b"KDMV") or head.startswith(b"# Disk DescriptorFile"):
        return "VMDK"
    if head[64:68] == b"\x7f\x10\xda\xbe":
        return "VDI"
    if head.startswith(b"LUKS\xba\xbe"):
        return "LUKS"
    if head.startswith(VHD_COOKIE) or (size >= 512 and _read_at(f, size - 512, 8) == VHD_COOKIE):
        return "VHD"
    if size >= ISO_OFFSET + 6 and _read_at(f, ISO_OFFSET + 1, 5) == b"CD001":
        return "ISO"
    return None


def _mismatch(declared: str, found: str | None) -> FormatError:
    article = "an" if found and found[0] in "AEIOU" else "a"
    what = f"{article} {found} image" if found else "no recognisable header"
    return FormatError(f"declared {declared} but the content is {what}")


# -- qcow2 -----------------------------------------------------------------------------


def _qcow2(f, head: bytes, size: int) -> ImageInfo:
    if not head.startswith(QCOW2_MAGIC):
        raise _mismatch("QCOW2", _container(f, head, size))
    if len(head) < 72:
        raise FormatError("qcow2 header is truncated")
    (version, backing_offset, backing_size, cluster_bits, virtual_size, crypt_method) = (
        struct.unpack_from(">IQIIQI", head, 4)
    )
    if version not in (2, 3):
        raise FormatError(f"qcow2 version {version} is not supported (2 or 3)")
    if not 9 <= cluster_bits <= 21:
        raise FormatError(f"qcow2 cluster_bits {cluster_bits} is out of range 9-21")
    if backing_offset or backing_size:
        raise FormatError("qcow2 image has a backing file: refused")
    if crypt_method:
        raise FormatError("qcow2 image is encrypted: refused")
    header_length = 72
    if version == 3:
        if len(head) < 104:
            raise FormatError("qcow2 v3 header is truncated")
        incompatible, _compatible, autoclear, _refcount_order, header_length = struct.unpack_from(
            ">QQQII", head, 72
        )
        if incompatible & _QCOW2_DATA_FILE or autoclear & _QCOW2_RAW_DATA:
            raise FormatError("qcow2 image uses an external data file: refused")
        if incompatible & _QCOW2_CORRUPT:
            raise FormatError("qcow2 image is marked corrupt")
        unknown = incompatible & ~_QCOW2_KNOWN_INCOMPATIBLE
        if unknown:
            raise FormatError(f"qcow2 image has unknown incompatible features {unknown:#x}")
        if header_length < 104 or header_length % 8:
            raise FormatError(f"qcow2 header_length {header_length} is invalid")
    _qcow2_extensions(f, header_length, 1 << cluster_bits)
    return ImageInfo("QCOW2", virtual_size, size)


def _qcow2_extensions(f, offset: int, cluster_size: int) -> None:
    """Walk the header extensions (they end within the first cluster)."""
    limit = min(cluster_size, _MAX_EXTENSION_BYTES)
    data = _read_at(f, 0, limit)
    while True:
        if offset + 8 > len(data):
            raise FormatError("qcow2 header extensions run past the first cluster")
        kind, length = struct.unpack_from(">II", data, offset)
        if kind == _EXT_END:
            return
        if kind == _EXT_BACKING_FORMAT:
            raise FormatError("qcow2 image names a backing file format: refused")
        if kind == _EXT_DATA_FILE:
            raise FormatError("qcow2 image names an external data file: refused")
        offset += 8 + (length + 7) // 8 * 8


# -- raw, vhd, iso ----------------------------------------------------------------------


def _raw(f, head: bytes, size: int) -> ImageInfo:
    found = _container(f, head, size)
    if found not in (None, "ISO"):  # a raw disk may well hold an ISO 9660 file system
        raise _mismatch("RAW", found)
    return ImageInfo("RAW", size, size)


def _vhd(f, size: int) -> ImageInfo:
    footer = _read_at(f, size - 512, 512) if size >= 512 else b""
    if len(footer) < 512 or not footer.startswith(VHD_COOKIE):
        head = _read_at(f, 0, 4096)
        raise _mismatch("VHD", _container(f, head, size))
    stored = struct.unpack_from(">I", footer, 64)[0]
    computed = ~sum(footer[:64] + b"\0\0\0\0" + footer[68:]) & 0xFFFFFFFF
    if stored != computed:
        raise FormatError("VHD footer checksum does not match")
    current_size = struct.unpack_from(">Q", footer, 48)[0]
    disk_type = struct.unpack_from(">I", footer, 60)[0]
    if disk_type == _VHD_DIFFERENCING:
        raise FormatError("VHD is a differencing disk (it has a parent): refused")
    if disk_type not in (_VHD_FIXED, _VHD_DYNAMIC):
        raise FormatError(f"VHD disk type {disk_type} is not fixed (2) or dynamic (3)")
    if disk_type == _VHD_FIXED and current_size > size - 512:
        raise FormatError("fixed VHD is shorter than its declared size")
    return ImageInfo("VHD", current_size, size)


def _iso(f, head: bytes, size: int) -> ImageInfo:
    descriptor = _read_at(f, ISO_OFFSET, 7)
    if len(descriptor) < 7 or descriptor[1:6] != b"CD001" or descriptor[6] != 1:
        raise _mismatch("ISO", _container(f, head, size))
    if head.startswith(QCOW2_MAGIC):
        raise _mismatch("ISO", "QCOW2")
    return ImageInfo("ISO", size, size)

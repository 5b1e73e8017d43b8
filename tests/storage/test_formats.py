"""Format inspection on real images (qemu-img, xorriso) and hand-made headers."""

from __future__ import annotations

import struct
import typing

import pytest

from appliances.storage import formats
from appliances.storage.document import Format
from appliances.storage.formats import FormatError, inspect, sniff
from tests.storage import imagefiles as img

MiB = 1 << 20


def test_the_document_and_the_inspector_know_the_same_formats():
    assert set(typing.get_args(Format)) == set(formats.FORMATS) == set(formats.EXTENSIONS)


@pytest.mark.parametrize("compat", ["1.1", "0.10"])
def test_qcow2_virtual_size_from_header(tmp_path, compat):
    path = img.qcow2(tmp_path / "a.qcow2", "64M", f"compat={compat}")
    info = inspect(path, "QCOW2")
    assert info.format == "QCOW2"
    assert info.virtual_size == 64 * MiB
    assert info.physical_size == path.stat().st_size < MiB


def test_qcow2_with_a_backing_file_is_refused(tmp_path):
    base = img.raw(tmp_path / "base.img")
    path = img.qcow2_with_backing(tmp_path / "child.qcow2", base)
    with pytest.raises(FormatError, match="backing file"):
        inspect(path, "QCOW2")


def test_qcow2_backing_format_extension_alone_is_refused(tmp_path):
    # Clear the backing offset/size but keep the backing-format header extension.
    base = img.raw(tmp_path / "base.img")
    path = img.qcow2_with_backing(tmp_path / "child.qcow2", base)
    data = bytearray(path.read_bytes())
    struct.pack_into(">QI", data, 8, 0, 0)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="backing file format"):
        inspect(path, "QCOW2")


def test_qcow2_with_an_external_data_file_is_refused(tmp_path):
    path = img.qcow2_with_data_file(tmp_path / "d.qcow2", tmp_path / "d.raw")
    with pytest.raises(FormatError, match="external data file"):
        inspect(path, "QCOW2")


def test_qcow2_data_file_extension_without_the_feature_bit_is_refused(tmp_path):
    path = img.qcow2_with_data_file(tmp_path / "d.qcow2", tmp_path / "d.raw")
    data = bytearray(path.read_bytes())
    incompatible = struct.unpack_from(">Q", data, 72)[0]
    struct.pack_into(">Q", data, 72, incompatible & ~(1 << 2))
    struct.pack_into(">Q", data, 88, 0)  # autoclear: raw external data
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="external data file"):
        inspect(path, "QCOW2")


def test_qcow2_unknown_incompatible_feature_is_refused(tmp_path):
    path = img.qcow2(tmp_path / "a.qcow2")
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 72, 1 << 40)
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="unknown incompatible"):
        inspect(path, "QCOW2")


def test_encrypted_qcow2_is_refused(tmp_path):
    path = img.qcow2(tmp_path / "a.qcow2")
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, 32, 1)  # crypt_method AES
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="encrypted"):
        inspect(path, "QCOW2")


def test_truncated_qcow2_is_refused(tmp_path):
    path = tmp_path / "t.qcow2"
    path.write_bytes(img.qcow2(tmp_path / "a.qcow2").read_bytes()[:50])
    with pytest.raises(FormatError, match="truncated"):
        inspect(path, "QCOW2")


def test_iso_declared_as_qcow2_is_refused(tmp_path):
    path = img.iso_by_hand(tmp_path / "x.iso")
    with pytest.raises(FormatError, match="declared QCOW2 but the content is an ISO image"):
        inspect(path, "QCOW2")


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_vhd_current_size_from_footer(tmp_path, subformat):
    path = img.vhd(tmp_path / "a.vhd", "32M", subformat)
    info = inspect(path, "VHD")
    # qemu rounds a VHD's size to its CHS geometry; the footer holds what it chose.
    footer = path.read_bytes()[-512:]
    assert info.virtual_size == struct.unpack_from(">Q", footer, 48)[0]
    assert abs(info.virtual_size - 32 * MiB) < MiB
    assert info.physical_size == path.stat().st_size


def test_differencing_vhd_is_refused(tmp_path):
    path = img.make_differencing(img.vhd(tmp_path / "a.vhd"))
    with pytest.raises(FormatError, match="differencing"):
        inspect(path, "VHD")


def test_vhd_with_a_bad_footer_checksum_is_refused(tmp_path):
    path = img.vhd(tmp_path / "a.vhd", subformat="fixed")
    data = bytearray(path.read_bytes())
    data[-512 + 48] ^= 0x01  # current size changed, checksum not
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        inspect(path, "VHD")


def test_qcow2_declared_as_vhd_is_refused(tmp_path):
    with pytest.raises(FormatError, match="declared VHD but the content is a QCOW2"):
        inspect(img.qcow2(tmp_path / "a.qcow2"), "VHD")


def test_hand_made_iso(tmp_path):
    path = img.iso_by_hand(tmp_path / "x.iso")
    info = inspect(path, "ISO")
    assert info.virtual_size == info.physical_size == path.stat().st_size


def test_xorriso_iso(tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "hello.txt").write_text("hello\n")
    path = img.iso_by_xorriso(tmp_path / "x.iso", content)
    assert inspect(path, "ISO").virtual_size == path.stat().st_size
    assert sniff(path) == "ISO"


def test_qcow2_declared_as_iso_is_refused(tmp_path):
    with pytest.raises(FormatError, match="declared ISO"):
        inspect(img.qcow2(tmp_path / "a.qcow2"), "ISO")


def test_raw_virtual_size_is_its_size(tmp_path):
    path = img.raw(tmp_path / "a.img", 3 * MiB + 17)
    info = inspect(path, "RAW")
    assert info.virtual_size == info.physical_size == 3 * MiB + 17


@pytest.mark.parametrize("maker", ["qcow2", "vhd"])
def test_a_container_declared_raw_is_refused(tmp_path, maker):
    # How a "raw" template would smuggle a qcow2 with a backing file to a hypervisor.
    path = getattr(img, maker)(tmp_path / f"a.{maker}")
    with pytest.raises(FormatError, match="declared RAW"):
        inspect(path, "RAW")


def test_qcow2_with_backing_declared_raw_is_refused(tmp_path):
    base = img.raw(tmp_path / "base.img")
    path = img.qcow2_with_backing(tmp_path / "child.qcow2", base)
    with pytest.raises(FormatError, match="declared RAW but the content is a QCOW2"):
        inspect(path, "RAW")


def test_iso_may_be_used_as_raw(tmp_path):
    assert inspect(img.iso_by_hand(tmp_path / "x.iso"), "RAW").format == "RAW"


def test_empty_file_is_no_image(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    for fmt in ("QCOW2", "VHD", "ISO"):
        with pytest.raises(FormatError, match="no recognisable header"):
            inspect(path, fmt)

"""The RFB pieces the proxy relies on: VNC's DES, version choice, both handshakes."""

from __future__ import annotations

import asyncio
import struct

import pytest

from appliances.console import rfb


def test_des_matches_the_classic_test_vector():
    # FIPS 46 worked example: key 133457799BBCDFF1, plaintext 0123456789ABCDEF.
    key = bytes.fromhex("133457799BBCDFF1")
    assert rfb.des_encrypt(key, bytes.fromhex("0123456789ABCDEF")).hex() == "85e813540f0ab405"


def test_the_vnc_key_reverses_each_byte_and_pads_to_eight():
    assert rfb.vnc_des_key("") == b"\0" * 8
    assert rfb.vnc_des_key("\x01") == b"\x80" + b"\0" * 7
    assert rfb.vnc_des_key("abcdefghijk") == rfb.vnc_des_key("abcdefgh")  # VNC keeps 8


@pytest.mark.parametrize(
    "line,minor",
    [
        (b"RFB 003.003\n", 3),
        (b"RFB 003.005\n", 3),
        (b"RFB 003.007\n", 7),
        (b"RFB 003.008\n", 8),
        (b"RFB 003.889\n", 8),
        (b"RFB 004.001\n", 8),
    ],
)
def test_version_choice(line, minor):
    assert rfb._minor_to_speak(*rfb.parse_version(line)) == minor


def test_a_non_rfb_greeting_is_refused():
    with pytest.raises(rfb.RfbError):
        rfb.parse_version(b"HTTP/1.1 200")


class _Pipe:
    """A scripted server: what it says, and what the proxy wrote back."""

    def __init__(self, script: bytes):
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(script)
        self.reader.feed_eof()
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass


async def _upstream(script: bytes, password: str = "pw") -> tuple[int, bytes]:
    pipe = _Pipe(script)
    minor = await rfb.authenticate_upstream(pipe.reader, pipe, password)  # type: ignore[arg-type]
    return minor, bytes(pipe.written)


async def test_upstream_3_8_vnc_auth():
    challenge = bytes(range(16))
    minor, sent = await _upstream(b"RFB 003.008\n" + bytes([2, 1, 2]) + challenge + b"\0\0\0\0")
    assert minor == 8
    assert sent == b"RFB 003.008\n" + b"\x02" + rfb.vnc_auth_response("pw", challenge)


async def test_upstream_3_8_prefers_none_when_auth_is_not_offered():
    minor, sent = await _upstream(b"RFB 003.008\n" + bytes([1, 1]) + b"\0\0\0\0")
    assert (minor, sent) == (8, b"RFB 003.008\n\x01")


async def test_upstream_3_7_none_has_no_security_result():
    minor, sent = await _upstream(b"RFB 003.007\n" + bytes([1, 1]))
    assert (minor, sent) == (7, b"RFB 003.007\n\x01")


async def test_upstream_3_3_server_chooses():
    challenge = bytes(16)
    minor, sent = await _upstream(b"RFB 003.003\n" + struct.pack("!I", 2) + challenge + b"\0\0\0\0")
    assert minor == 3
    assert sent == b"RFB 003.003\n" + rfb.vnc_auth_response("pw", challenge)


async def test_upstream_wrong_password_names_the_reason():
    script = b"RFB 003.008\n" + bytes([1, 2]) + bytes(16) + struct.pack("!II", 1, 4) + b"nope"
    with pytest.raises(rfb.RfbError, match="authentication failed: nope"):
        await _upstream(script)


async def test_upstream_refusal_and_unknown_types():
    with pytest.raises(rfb.RfbError, match="refused the connection: busy"):
        await _upstream(b"RFB 003.008\n\x00" + struct.pack("!I", 4) + b"busy")
    with pytest.raises(rfb.RfbError, match="no security type"):
        await _upstream(b"RFB 003.008\n" + bytes([2, 19, 16]))


class _Viewer:
    def __init__(self, says: bytes):
        self.says = bytearray(says)
        self.heard = bytearray()

    async def readexactly(self, n: int) -> bytes:
        if len(self.says) < n:
            raise asyncio.IncompleteReadError(bytes(self.says), n)
        out = bytes(self.says[:n])
        del self.says[:n]
        return out

    async def send(self, data: bytes) -> None:
        self.heard += data


@pytest.mark.parametrize(
    "version,choice,expected",
    [
        (b"RFB 003.008\n", b"\x01", b"RFB 003.008\n\x01\x01\0\0\0\0"),
        (b"RFB 003.007\n", b"\x01", b"RFB 003.008\n\x01\x01"),
        (b"RFB 003.003\n", b"", b"RFB 003.008\n\0\0\0\x01"),
    ],
)
async def test_the_viewer_is_offered_none(version, choice, expected):
    viewer = _Viewer(version + choice)
    await rfb.greet_viewer(viewer, viewer.send)
    assert bytes(viewer.heard) == expected


async def test_a_viewer_choosing_vnc_auth_is_refused():
    viewer = _Viewer(b"RFB 003.008\n\x02")
    with pytest.raises(rfb.RfbError):
        await rfb.greet_viewer(viewer, viewer.send)

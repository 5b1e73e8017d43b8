"""The RFB (VNC) handshake that the proxy performs on the viewer's behalf.

With a password in the token, the proxy answers the VNC server's DES challenge
itself and then offers the browser a connection without authentication ("None"),
so the password never reaches the browser (what CloudStack's console proxy does).
After both handshakes the two streams carry the same protocol (ClientInit,
ServerInit, messages are alike in 3.3, 3.7 and 3.8), so the proxy just copies bytes.

RFC 6143 is the reference; section numbers are given where the versions differ.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Awaitable, Callable

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

SEC_INVALID = 0
SEC_NONE = 1
SEC_VNC_AUTH = 2
_VERSION_RE = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")
_MAX_REASON = 4096


class RfbError(Exception):
    """The handshake failed; the message is safe to log (never the password)."""


class ByteSource:
    """Anything with ``readexactly`` (asyncio.StreamReader, WsReader)."""

    async def readexactly(self, n: int) -> bytes:  # pragma: no cover - protocol
        raise NotImplementedError


def vnc_des_key(password: str) -> bytes:
    """VNC's DES key: the password's first 8 bytes, NUL-padded, each byte bit-reversed
    (an old quirk of the reference implementation that every server keeps)."""
    raw = password.encode()[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


def des_encrypt(key: bytes, data: bytes) -> bytes:
    """Single DES in ECB mode, as triple DES with three equal keys (EDE with K1=K2=K3
    is DES); OpenSSL 3 keeps plain DES in its legacy provider only."""
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    if len(challenge) != 16:
        raise RfbError("the VNC challenge is 16 bytes")
    return des_encrypt(vnc_des_key(password), challenge)


def parse_version(line: bytes) -> tuple[int, int]:
    m = _VERSION_RE.match(line)
    if not m:
        raise RfbError(f"not an RFB protocol version: {line[:12]!r}")
    return int(m.group(1)), int(m.group(2))


def _minor_to_speak(major: int, minor: int) -> int:
    """3.8 with anyone at 3.8 or later (Apple's 3.889 too), 3.7, else 3.3 (3.5 is 3.3)."""
    if major != 3:
        return 8 if major > 3 else 3
    return 8 if minor >= 8 else 7 if minor == 7 else 3


async def _read_reason(reader: ByteSource) -> str:
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    if length > _MAX_REASON:
        return "(reason too long)"
    return (await reader.readexactly(length)).decode(errors="replace")


async def authenticate_upstream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str
) -> int:
    """Run the version and security phases with the VNC server, answering VNC
    authentication with ``password``. Returns the minor version spoken. On return
    the server waits for ClientInit (which the viewer will send)."""
    major, minor = parse_version(await reader.readexactly(12))
    spoken = _minor_to_speak(major, minor)
    writer.write(b"RFB 003.%03d\n" % spoken)
    await writer.drain()
    if spoken >= 7:  # 7.1.2: a list of types, the client picks one
        count = (await reader.readexactly(1))[0]
        if count == 0:
            raise RfbError(f"the VNC server refused the connection: {await _read_reason(reader)}")
        offered = set(await reader.readexactly(count))
        if SEC_VNC_AUTH in offered:
            chosen = SEC_VNC_AUTH
        elif SEC_NONE in offered:
            chosen = SEC_NONE
        else:
            raise RfbError(
                f"the VNC server offers no security type the proxy speaks: {sorted(offered)}"
            )
        writer.write(bytes([chosen]))
        await writer.drain()
    else:  # 3.3: the server decides
        (chosen,) = struct.unpack("!I", await reader.readexactly(4))
        if chosen == SEC_INVALID:
            raise RfbError(f"the VNC server refused the connection: {await _read_reason(reader)}")
        if chosen not in (SEC_NONE, SEC_VNC_AUTH):
            raise RfbError(f"the VNC server wants security type {chosen}, which the proxy lacks")
    if chosen == SEC_VNC_AUTH:
        writer.write(vnc_auth_response(password, await reader.readexactly(16)))
        await writer.drain()
    elif spoken < 8:
        return spoken  # 7.1.3: no SecurityResult after None before 3.8
    (result,) = struct.unpack("!I", await reader.readexactly(4))
    if result != 0:
        reason = await _read_reason(reader) if spoken >= 8 else ""
        raise RfbError(f"VNC authentication failed{': ' + reason if reason else ''}")
    return spoken


async def greet_viewer(reader: ByteSource, send: Callable[[bytes], Awaitable[None]]) -> int:
    """Version and security phases with the viewer, offering only None (the proxy
    has authenticated already). Returns the minor version spoken; next the viewer
    sends ClientInit."""
    await send(b"RFB 003.008\n")
    major, minor = parse_version(await reader.readexactly(12))
    spoken = _minor_to_speak(major, minor)
    if spoken >= 7:
        await send(bytes([1, SEC_NONE]))
        choice = (await reader.readexactly(1))[0]
        if choice != SEC_NONE:
            raise RfbError(f"the viewer chose security type {choice}, not None")
        if spoken >= 8:
            await send(struct.pack("!I", 0))
    else:
        await send(struct.pack("!I", SEC_NONE))
    return spoken

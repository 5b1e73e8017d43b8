"""What registerTemplate / registerIso accept as a URL and a checksum.

The storage appliance fetches the URL, so the server refuses what it must not
fetch or cannot: other schemes, credentials in the URL (they would show in every
listing), spaces and control characters, and literal addresses that point back
into the appliance or its control network (loopback, link-local, unspecified,
multicast) unless ``secstorage.allowed.internal.sites`` names them, as
CloudStack's setting of that name does. IPv6 literals are refused, as in
CloudStack. Host names are not resolved here: DNS answers at fetch time are the
appliance's to trust (see the README's limits).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from yarl import URL

from appliances.storage.checksum import parse_checksum
from mgmt.api.errors import param_error

MAX_URL = 2048
_NUMERIC = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


def internal_sites(text: str) -> list[ipaddress.IPv4Network]:
    """The setting's CIDRs; entries that do not parse are ignored (0.0.0.0/0 too)."""
    sites = []
    for part in (text or "").split(","):
        try:
            net = ipaddress.IPv4Network(part.strip(), strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            sites.append(net)
    return sites


def check_url(url: str, sites: list[ipaddress.IPv4Network]) -> str:
    """The URL as given, or a 431 naming what is wrong with it."""
    shown = url[:100]

    def bad(why: str):
        return param_error(f"invalid value for url: {shown!r} {why}")

    if len(url) > MAX_URL:
        raise param_error(f"invalid value for url: longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise bad("contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise bad("is not an http:// or https:// URL")
    if "@" in parts.netloc:
        raise bad(
            "carries credentials (user:password@host); the image server must not "
            "need them, or put a token in the path"
        )
    try:
        parts.port  # noqa: B018 - raises for a port out of range or not a number
        parsed = URL(url)
    except ValueError as exc:
        raise bad(f"does not parse: {exc}") from None
    host = (parsed.host or "").rstrip(".").lower()
    if not host:
        raise bad("has no host")
    address = _literal(host)
    if address is None:
        return url
    if address.version == 6:
        raise bad("names an IPv6 address; IPv6 addresses are not supported")
    if (
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
    ) and not any(address in net for net in sites):
        raise bad(
            f"names {address}, an address inside the appliance or its control network "
            "(allow it with secstorage.allowed.internal.sites)"
        )
    return url


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names without DNS: dotted quads, the short and numeric forms
    the resolver also reads as addresses (127.1, 2130706433, 0x7f000001), IPv6."""
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _NUMERIC.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_checksum(text: str | None) -> str | None:
    """The checksum as given (stripped), or a 431 explaining the accepted forms."""
    if text is None or not text.strip():
        return None
    try:
        parse_checksum(text)
    except ValueError as exc:
        raise param_error(f"invalid value for checksum: {exc}") from None
    return text.strip()

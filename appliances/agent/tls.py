"""Mutual TLS for the agent: it serves only clients with a certificate from its CA."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """For talking to an agent; pass ``server_hostname=<appliance id>`` per request,
    so the server certificate must name the appliance we meant to reach."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx

"""The lab PKI: certificates chain to the CA, name the appliance, and work for mTLS."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from appliances.lab.pki import CLIENT_CN, client_ssl_context, create_lab_pki, server_ssl_context


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), "r-lab", "169.254.100.2")


def _load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_cert_verifies_for_id_and_ip(pki):
    ca, server = _load(pki.ca_cert), _load(pki.server_cert)
    builder = PolicyBuilder().store(Store([ca]))
    builder.build_server_verifier(x509.DNSName("r-lab")).verify(server, [])
    ip = ipaddress.IPv4Address("169.254.100.2")
    builder.build_server_verifier(x509.IPAddress(ip)).verify(server, [])
    with pytest.raises(x509.verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("r-other")).verify(server, [])
    assert server.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "r-lab"


def test_client_cert_verifies(pki):
    ca, client = _load(pki.ca_cert), _load(pki.client_cert)
    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    verifier.verify(client, [])
    assert client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == CLIENT_CN


def test_keys_are_private(pki):
    for key in (pki.ca_key, pki.server_key, pki.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def _handshake(server_ctx, client_ctx, hostname):
    async def handle(reader, writer):
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=hostname)
        data = await reader.read()
        writer.close()
        return data
    finally:
        server.close()


async def test_mutual_tls_handshake(pki):
    assert await _handshake(server_ssl_context(pki), client_ssl_context(pki), "r-lab") == b"hi"
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server_ssl_context(pki), client_ssl_context(pki), "r-wrong")


async def test_server_rejects_client_without_cert(pki):
    anonymous = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        data = await _handshake(server_ssl_context(pki), anonymous, "r-lab")
    except (ssl.SSLError, ConnectionError):
        return
    assert data != b"hi"  # TLS 1.3 may only show the rejection as a closed stream

"""The API over HTTPS (--tls-cert/--tls-key) and serve's settings from the environment
(what the Ansible role's EnvironmentFile gives it)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cs.client import CloudStack

from mgmt.cli import build_parser
from mgmt.server.app import ManagementServer, Settings
from mgmt.server.cli import _settings


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "api.crt", tmp_path / "api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_api_over_https_answers_a_signed_call_and_refuses_plain_http(tmp_path):
    cert, key = self_signed(tmp_path)
    server = ManagementServer(Settings(home=tmp_path / "h", port=0, tls_cert=cert, tls_key=key))
    await server.open()
    try:
        [url] = await server.listen()
        assert url.startswith("https://127.0.0.1:")
        api = CloudStack(
            url, key=server.admin.apikey, secret=server.admin.secretkey, verify=str(cert)
        )
        zones = await asyncio.to_thread(api.listZones)
        assert zones == {} or "zone" in zones
        with pytest.raises(requests.exceptions.ConnectionError):
            await asyncio.to_thread(
                requests.get,
                url.replace("https://", "http://"),
                params={"command": "listZones"},
                timeout=10,
            )
    finally:
        await server.close()


def test_serve_reads_its_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SKIFF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKIFF_MGMT_HOST", "127.0.0.2")
    monkeypatch.setenv("SKIFF_MGMT_PORT", "18443")
    monkeypatch.setenv("SKIFF_DB_URL", "postgresql://skiff@db.example/skiff")
    monkeypatch.setenv("SKIFF_TLS_CERT", str(tmp_path / "c.pem"))
    monkeypatch.setenv("SKIFF_TLS_KEY", str(tmp_path / "k.pem"))
    settings = _settings(build_parser().parse_args(["mgmt", "serve"]))
    assert (settings.home, settings.host, settings.port) == (tmp_path / "home", "127.0.0.2", 18443)
    assert settings.db == "postgresql://skiff@db.example/skiff"
    assert (settings.tls_cert, settings.tls_key) == (tmp_path / "c.pem", tmp_path / "k.pem")
    # flags win over the environment; an empty variable counts as unset
    monkeypatch.setenv("SKIFF_DB_URL", "")
    settings = _settings(build_parser().parse_args(["mgmt", "serve", "--port", "9"]))
    assert settings.port == 9 and settings.db is None

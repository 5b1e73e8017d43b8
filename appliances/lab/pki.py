"""A throwaway PKI for one lab: a CA, the agent's server certificate and a client certificate.

The server certificate names the appliance id (CN and DNS SAN) because clients verify
the agent with ``server_hostname=<appliance id>``; the control address is an IP SAN too.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliances.agent import tls

CLIENT_CN = "skiff-lab-client"
VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class PkiPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_dir(cls, d: Path, server: str = "server") -> PkiPaths:
        """Paths in d; ``server`` names the server certificate's files (one per router)."""
        return cls(d / "ca.pem", d / "ca.key", d / f"{server}.pem", d / f"{server}.key",
                   d / "client.pem", d / "client.key")

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name,
             key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _leaf(subject: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]):
    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        _builder(subject, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def create_lab_pki(directory: Path, appliance_id: str,
                   control_ip: ipaddress.IPv4Address | str) -> PkiPaths:
    """Write a fresh CA, server and client certificate into directory (keys mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = PkiPaths.in_dir(directory)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cn = f"skiff lab CA {appliance_id}"
    ca_cert = (
        _builder(ca_cn, _name(ca_cn), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key, server_cert = _leaf(
        appliance_id, ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(appliance_id), x509.IPAddress(ipaddress.IPv4Address(str(control_ip)))],
    )
    # RFC 5280 profiles (and strict verifiers) want a SAN on every leaf, clients too.
    client_key, client_cert = _leaf(CLIENT_CN, ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH,
                                    [x509.DNSName(CLIENT_CN)])
    _write_key(paths.ca_key, ca_key)
    _write_cert(paths.ca_cert, ca_cert)
    _write_key(paths.server_key, server_key)
    _write_cert(paths.server_cert, server_cert)
    _write_key(paths.client_key, client_key)
    _write_cert(paths.client_cert, client_cert)
    return paths


def add_server_cert(directory: Path, appliance_id: str, control_ip: ipaddress.IPv4Address | str,
                    server: str) -> PkiPaths:
    """Issue another server certificate from the lab CA in directory (one more router):
    files <server>.pem and <server>.key, naming appliance_id and control_ip."""
    paths = PkiPaths.in_dir(directory, server)
    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key, cert = _leaf(
        appliance_id, ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(appliance_id), x509.IPAddress(ipaddress.IPv4Address(str(control_ip)))],
    )
    _write_key(paths.server_key, key)
    _write_cert(paths.server_cert, cert)
    return paths


def client_ssl_context(paths: PkiPaths) -> ssl.SSLContext:
    """TLS context for talking to the agent: trusts only the lab CA, presents the client cert.

    Hostname checking stays on; pass ``server_hostname=<appliance id>`` when connecting.
    """
    return tls.client_context(paths.ca_cert, paths.client_cert, paths.client_key)


def server_ssl_context(paths: PkiPaths) -> ssl.SSLContext:
    """TLS context for a server in the lab's PKI that requires client certificates."""
    return tls.server_context(paths.ca_cert, paths.server_cert, paths.server_key)

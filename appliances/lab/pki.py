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
from cryptography.hazmat.primitives.asymmetric import ec

from appliances.agent import tls
from appliances.common import certs

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
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(certs.key_pem(key))


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(certs.cert_pem(cert))


def create_lab_pki(directory: Path, appliance_id: str,
                   control_ip: ipaddress.IPv4Address | str) -> PkiPaths:
    """Write a fresh CA, server and client certificate into directory (keys mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = PkiPaths.in_dir(directory)
    ca_key, ca_cert = certs.make_ca(f"skiff lab CA {appliance_id}", VALIDITY)
    server_key, server_cert = certs.issue(appliance_id, ca_cert, ca_key, certs.SERVER,
                                          certs.server_sans(appliance_id, control_ip), VALIDITY)
    client_key, client_cert = certs.issue(CLIENT_CN, ca_cert, ca_key, certs.CLIENT,
                                          [x509.DNSName(CLIENT_CN)], VALIDITY)
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
    ca_cert = certs.load_cert(paths.ca_cert.read_bytes())
    ca_key = certs.load_key(paths.ca_key.read_bytes())
    key, cert = certs.issue(appliance_id, ca_cert, ca_key, certs.SERVER,
                            certs.server_sans(appliance_id, control_ip), VALIDITY)
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

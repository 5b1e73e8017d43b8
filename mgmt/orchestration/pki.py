"""The appliance CA: every agent's certificate, and the servers' client certificate.

The CA lives in the ``keystore`` table so that every management server of one
database signs with it and trusts the same agents (CloudStack keeps its root
CA there too). The first server to start creates it; a server that loses the
race reads the winner's. Each server issues itself a client certificate at
start, kept as 0600 files in its home because ``ssl`` loads chains from files.

An agent's certificate names its appliance id (CN and DNS SAN) and its control
address; the management server connects with ``server_hostname=<appliance
id>``, so an agent answering on the wrong address is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import socket
import ssl
import string
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from appliances.agent import tls
from appliances.common import certs
from mgmt.db.engine import Database
from mgmt.db.models.compute import KeystoreEntry
from mgmt.db.secretfile import private_dir
from mgmt.orchestration.hosts.driver import ApplianceCerts

CA_NAME = "appliance-ca"
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)


@dataclass
class ApplianceCA:
    cert: x509.Certificate
    key: object  # ec.EllipticCurvePrivateKey
    ca_pem: str
    client_dir: Path

    @classmethod
    async def load(cls, db: Database, home: Path) -> ApplianceCA:
        """The database's CA (created on first use) and this server's client files."""
        entry = await _entry(db)
        if entry is None:
            key, cert = certs.make_ca("Skiff appliance CA", CA_VALIDITY)
            try:
                async with db.sessions() as session:
                    session.add(KeystoreEntry(name=CA_NAME,
                                              certificate=certs.cert_pem(cert).decode(),
                                              private_key=certs.key_pem(key).decode()))
                    await session.commit()
            except IntegrityError:
                pass  # another server created it first: use theirs
            entry = await _entry(db)
            assert entry is not None
        ca = cls(certs.load_cert(entry.certificate.encode()),
                 certs.load_key(entry.private_key.encode()), entry.certificate,
                 home / "pki")
        ca._write_client()
        return ca

    def issue_agent(self, appliance_id: str, control_ip: str) -> ApplianceCerts:
        key, cert = certs.issue(appliance_id, self.cert, self.key, certs.SERVER,  # type: ignore[arg-type]
                                certs.server_sans(appliance_id, control_ip), LEAF_VALIDITY)
        return ApplianceCerts(self.ca_pem, certs.cert_pem(cert).decode(),
                              certs.key_pem(key).decode())

    def derive_secret(self, label: str, length: int = 8) -> str:
        """A short alphanumeric secret for ``label`` that every server of the database
        derives alike (HMAC keyed by the CA's private key), so none needs a column.
        For secrets a protocol limits to a few characters (VRRP's 8)."""
        secret = certs.key_pem(self.key)  # type: ignore[arg-type]
        digest = hmac.new(secret, label.encode(), hashlib.sha256).digest()
        alphabet = string.ascii_letters + string.digits
        return "".join(alphabet[b % len(alphabet)] for b in digest[:length])

    def fingerprint_secret(self) -> bytes:
        """The secret mgmt.orchestration.fingerprints keys document hashes with: from
        the CA's private key, so every server of the database has the same."""
        secret = certs.key_pem(self.key)  # type: ignore[arg-type]
        return hmac.new(secret, b"document fingerprints", hashlib.sha256).digest()

    def _write_client(self) -> None:
        private_dir(self.client_dir)
        name = f"skiff-mgmt-{socket.gethostname()}"
        key, cert = certs.issue(name, self.cert, self.key, certs.CLIENT,  # type: ignore[arg-type]
                                [x509.DNSName(name)], LEAF_VALIDITY)
        for path, data in ((self.ca_file, self.ca_pem.encode()),
                           (self.client_cert, certs.cert_pem(cert)),
                           (self.client_key, certs.key_pem(key))):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.unlink(missing_ok=True)
            tmp.touch(0o600)
            tmp.write_bytes(data)
            tmp.replace(path)

    @property
    def ca_file(self) -> Path:
        return self.client_dir / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.client_dir / "mgmt-client.pem"

    @property
    def client_key(self) -> Path:
        return self.client_dir / "mgmt-client.key"

    def client_context(self) -> ssl.SSLContext:
        """Trusts only this CA, presents this server's client certificate; hostname
        checking on (connect with server_hostname=<appliance id>)."""
        return tls.client_context(self.ca_file, self.client_cert, self.client_key)


async def _entry(db: Database) -> KeystoreEntry | None:
    async with db.sessions() as session:
        return await session.scalar(
            select(KeystoreEntry).where(KeystoreEntry.name == CA_NAME, KeystoreEntry.live()))

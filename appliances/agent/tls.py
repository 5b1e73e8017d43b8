"""Mutual TLS for the agent: it serves only clients with a certificate from its CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID


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


def certificate_names(cert: Path) -> set[str]:
    """DNS names (SAN) and the common name of a PEM certificate file."""
    return pem_names(Path(cert).read_bytes())


def pem_names(pem: bytes) -> set[str]:
    """DNS names (SAN) and the common name of PEM certificate text."""
    certificate = x509.load_pem_x509_certificate(pem)
    names = {
        attr.value for attr in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names |= set(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return {str(name) for name in names}


def check_identity(cert: Path, appliance_id: str) -> None:
    """Clients verify that the agent's certificate names the appliance they meant
    to reach; refuse to start with one that does not, with a message that says so."""
    names = certificate_names(cert)
    if appliance_id not in names:
        raise SystemExit(
            f"skiff agent: the certificate {cert} names {', '.join(sorted(names)) or 'nothing'}, "
            f"not this appliance ({appliance_id}); clients would refuse it. "
            "Issue a certificate whose DNS name is the appliance id."
        )

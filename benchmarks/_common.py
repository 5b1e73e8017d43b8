"""Small helpers shared by the benchmarks: timing statistics, progress and RESULT lines.

Every benchmark prints human-readable lines and ends with one machine-readable line
``RESULT <name> key=value ...`` (the last line of its output).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Samples:
    """Durations in milliseconds."""

    values: list[float] = field(default_factory=list)

    def add(self, ms: float) -> None:
        self.values.append(ms)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")

    def brief(self) -> str:
        """``median/min`` as a short string."""
        return f"{fmt(self.median)}/{fmt(self.min)}"


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.ms``."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.ms = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.ms = (time.perf_counter() - self._start) * 1000


def fmt(value: float) -> str:
    """One decimal below 100, an integer above (as the RESULT lines want)."""
    if value != value:  # NaN
        return "nan"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def result_line(name: str, fields: Iterable[tuple[str, object]]) -> str:
    parts = [f"RESULT {name}"]
    for key, value in fields:
        parts.append(f"{key}={fmt(value) if isinstance(value, float) else value}")
    return " ".join(parts)


def make_pki(directory, server_name: str) -> dict[str, str]:
    """A throwaway CA, a server certificate for ``server_name`` (CN and DNS SAN) and a
    client certificate, written into ``directory`` (keys mode 0600). Returns the paths."""
    import datetime
    import os
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, issuer, key, signer, ca: bool, usage=None, sans=None):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                           critical=True)
        )
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                              False, False), critical=True)
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signer, hashes.SHA256())

    def write(stem: str, key, crt) -> None:
        key_path = d / f"{stem}.key"
        key_path.unlink(missing_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        (d / f"{stem}.pem").write_bytes(crt.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = f"skiff bench CA {server_name}"
    ca_cert = cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = cert(server_name, ca_name, srv_key, ca_key, ca=False,
                    usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=[x509.DNSName(server_name)])
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli_cert = cert("skiff-bench-client", ca_name, cli_key, ca_key, ca=False,
                    usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    write("ca", ca_key, ca_cert)
    write("server", srv_key, srv_cert)
    write("client", cli_key, cli_cert)
    return {stem: str(d / f"{stem}.{ext}") for stem, ext in
            (("ca", "pem"), ("server", "pem"), ("client", "pem"))} | {
        "server_key": str(d / "server.key"), "client_key": str(d / "client.key")}

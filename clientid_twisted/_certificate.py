# -*- test-case-name: tests.test_testing -*-
"""
TLS certificates as values: a loaded certificate and key that make Twisted
TLS options (L{ServerCertificate}), and a self-signed one made on the spot
(L{selfSignedCertificate}).

Library code: the server's certificate handling
(C{clientid_twisted.server.tls}), the gateway and the test helpers
(L{clientid_twisted.testing.throwawayCertificate}) all use it.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from pathlib import Path
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twisted.internet import ssl

__all__ = ["ServerCertificate", "loadAuthorities", "selfSignedCertificate"]


def selfSignedCertificate(
    hostname: str = "localhost", days: int = 825, key: Any = None
) -> tuple[bytes, bytes]:
    """
    Make a self-signed certificate for C{hostname} (and 127.0.0.1, ::1).

    @param key: The private key to sign with (a C{cryptography} private
        key); by default a new P-256 key.
    @return: (certificate PEM, private key PEM).
    """
    import ipaddress

    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        names.append(x509.DNSName("localhost"))
    names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@frozen
class ServerCertificate:
    """
    A loaded certificate and key, ready to make TLS contexts.

    @ivar certificatePEM: The certificate (chain), PEM.
    @ivar keyPEM: The private key, PEM.
    @ivar generated: Whether this is the self-signed development certificate.
    """

    certificatePEM: bytes
    keyPEM: bytes
    generated: bool = False

    @property
    def fingerprint(self) -> str:
        """
        SHA-256 of the leaf certificate (DER), colon-separated hex: what
        clients show when asked to trust a self-signed certificate.
        """
        der = x509.load_pem_x509_certificate(self.certificatePEM).public_bytes(
            serialization.Encoding.DER
        )
        digest = hashlib.sha256(der).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))

    def options(self) -> ssl.CertificateOptions:
        """
        Server-side TLS options (Twisted's secure defaults, TLS 1.2+).
        """
        private = ssl.PrivateCertificate.loadPEM(self.keyPEM + b"\n" + self.certificatePEM)
        chain = [
            ssl.Certificate.loadPEM(pem).original
            for pem in _splitPEM(self.certificatePEM)[1:]
        ]
        return ssl.CertificateOptions(
            privateKey=private.privateKey.original,
            certificate=private.original,
            extraCertChain=chain or None,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )


def _splitPEM(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    parts = [p.strip() + b"\n" + marker + b"\n" for p in pem.split(marker) if p.strip()]
    return parts


def loadAuthorities(path: Path | str) -> object:
    """
    Every certificate of a PEM file, as a trust root for client TLS (a
    C{ca} file may be a bundle: each of its certificates is trusted, not
    only the first).

    @raise OSError: If the file cannot be read.
    @raise ValueError: If it holds no certificate.
    """
    data = Path(path).read_bytes()
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.DOTALL
    )
    if not blocks:
        raise ValueError(f"no PEM certificate in {path}")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])

# -*- test-case-name: tests.test_tap -*-
"""
The server's TLS certificate: the operator's PEM files, or a self-signed
development certificate generated once into the data directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from clientid_twisted._certificate import ServerCertificate, loadAuthorities, selfSignedCertificate

__all__ = [
    "ServerCertificate",
    "selfSignedCertificate",
    "loadCertificate",
    "loadOrCreateCertificate",
    "loadAuthorities",
]


def loadCertificate(certificatePath: Path, keyPath: Path) -> ServerCertificate:
    """
    Load the operator's certificate (chain) and key PEM files.

    @raise ValueError: With a clear message if a file is unreadable or not
        PEM of the right kind.
    """
    try:
        certificatePEM = certificatePath.read_bytes()
        keyPEM = keyPath.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read TLS file: {e}") from None
    try:
        x509.load_pem_x509_certificate(certificatePEM)
    except ValueError:
        raise ValueError(f"{certificatePath} holds no PEM certificate") from None
    try:
        serialization.load_pem_private_key(keyPEM, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{keyPath} holds no unencrypted PEM private key") from None
    return ServerCertificate(certificatePEM, keyPEM, generated=False)


def loadOrCreateCertificate(dataDir: Path, hostname: str) -> ServerCertificate:
    """
    The development certificate in C{dataDir/tls/}, made on first use.

    The key file is created readable by its owner only.
    """
    directory = dataDir / "tls"
    certificatePath = directory / "selfsigned.pem"
    keyPath = directory / "selfsigned.key"
    if certificatePath.exists() and keyPath.exists():
        return ServerCertificate(
            certificatePath.read_bytes(), keyPath.read_bytes(), generated=True
        )
    directory.mkdir(parents=True, exist_ok=True)
    certificatePEM, keyPEM = selfSignedCertificate(hostname)
    fd = os.open(keyPath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(keyPEM)
    certificatePath.write_bytes(certificatePEM)
    return ServerCertificate(certificatePEM, keyPEM, generated=True)

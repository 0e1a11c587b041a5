"""The certificate of the services' ClickHouse HTTP interfaces.

The operator's own (``KEYHOUSE_TLS_CERT_FILE`` and ``KEYHOUSE_TLS_KEY_FILE``), or one Keyhouse
makes on first start under ``data_dir/tls``: a private CA (``ca.pem``, the file clients verify
against) and a server certificate it signs for the configured host, ``localhost`` and the
loopback addresses. Keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyhouse.config import CA_FILE, Settings

_VALID = dt.timedelta(days=3650)
_RENEW = dt.timedelta(days=30)
log = logging.getLogger("keyhouse.tls")


def server_context(settings: Settings) -> ssl.SSLContext:
    if settings.tls_cert_file is not None:
        if settings.tls_key_file is None:
            raise ValueError("KEYHOUSE_TLS_KEY_FILE is needed with KEYHOUSE_TLS_CERT_FILE")
        cert, key = settings.tls_cert_file, settings.tls_key_file
    else:
        cert, key = ensure_certificate(settings.data_dir / "tls", settings.clickhouse_host)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def _unfit(cert: x509.Certificate, host: str) -> str | None:
    """Why ``cert`` cannot serve ``host`` any longer, or None."""
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW:
        return "it expires within 30 days"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it names no host"
    try:
        covered = ipaddress.ip_address(host) in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        covered = host.lower() in (name.lower() for name in names.get_values_for_type(x509.DNSName))
    return None if covered else f"it does not name {host}"


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Keyhouse"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """The server certificate and key under ``directory``, made (with the CA) when missing, or
    made again when they no longer serve ``host``: the configured host is not among its names
    (``KEYHOUSE_CLICKHOUSE_HOST`` changed: every client would refuse it), or it expires within
    ``_RENEW``. The CA is new then too (its key is never kept): clients fetch ``ca.pem`` again."""
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    if cert_path.exists() and key_path.exists():
        why = _unfit(x509.load_pem_x509_certificate(cert_path.read_bytes()), host)
        if why is None:
            return cert_path, key_path
        log.warning("the services' TLS certificate is made again (%s); clients need the new %s",
                    why, directory / CA_FILE)  # fmt: skip
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Keyhouse local CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    addresses = {"127.0.0.1", "::1"}
    try:
        addresses.add(str(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # The CA's key is not kept: nothing else is ever signed with it.
    _write(directory / CA_FILE, ca.public_bytes(serialization.Encoding.PEM), private=False)
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path, key_path

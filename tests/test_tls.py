"""The certificate Keyhouse makes for the services' ClickHouse ports serves the configured host:
made once, kept while it names that host, made again (with a new CA) when the host changes."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from keyhouse.clickhouse_http.tls import ensure_certificate
from keyhouse.config import CA_FILE


def _names(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name) for name in names.get_values_for_type(x509.DNSName)} | {
        str(address) for address in names.get_values_for_type(x509.IPAddress)
    }


def test_the_certificate_follows_the_clickhouse_host(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    cert, key = ensure_certificate(directory, "10.1.2.3")
    assert {"10.1.2.3", "127.0.0.1", "localhost"} <= _names(cert)
    first_ca = (directory / CA_FILE).read_bytes()
    # The same host: the same certificate and CA (clients keep the CA they fetched).
    ensure_certificate(directory, "10.1.2.3")
    assert (directory / CA_FILE).read_bytes() == first_ca
    # Another host (KEYHOUSE_CLICKHOUSE_HOST changed): made again, for it, with a new CA
    # that verifies it.
    cert, key = ensure_certificate(directory, "db.example.com")
    assert "db.example.com" in _names(cert)
    assert (directory / CA_FILE).read_bytes() != first_ca
    context = ssl.create_default_context(cafile=str(directory / CA_FILE))
    context.load_cert_chain(cert, key)  # the key matches the new certificate
    assert "127.0.0.1" in _names(cert)  # (loopback stays named for local clients)
    second_ca = (directory / CA_FILE).read_bytes()
    ensure_certificate(directory, "DB.example.com")  # names are not case-sensitive
    assert (directory / CA_FILE).read_bytes() == second_ca

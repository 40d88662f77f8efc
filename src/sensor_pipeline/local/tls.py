"""The local stack's own certificate authority, for the listeners that stand in for AWS's TLS endpoints.

Amazon MSK (IAM, port 9098) and DocumentDB accept TLS only, with certificates clients verify against
a CA bundle. The local broker's SASL_SSL listener and the DocumentDB stand-in do the same with a CA
made once per state folder (``<state>/tls/``): ``ca.pem`` is what clients trust (it takes the place
of Amazon's CA and of ``rds-global-bundle.pem``), ``server.pem`` holds the key and the certificate
chain for ``127.0.0.1``/``localhost`` (a PEM key store Kafka reads as it is), ``server.crt`` and
``server.key`` the same for FerretDB.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_pem(self) -> Path:  # private key + certificate chain (Kafka's PEM key store)
        return self.folder / "server.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"


#: The names the server certificate holds: the broker's and the DocumentDB stand-ins' loopback addresses.
SERVER_NAMES = ("localhost", *(f"127.0.0.{n}" for n in range(1, 10)))


def ensure(state: Path) -> TlsFiles:
    """The CA and the server certificate under ``<state>/tls/``, made once (valid ten years)."""
    files = TlsFiles(state / "tls")
    names = files.folder / "names"
    if names.is_file() and names.read_text() == " ".join(SERVER_NAMES) and files.ca.is_file():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=3650)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("sensor-pipeline local CA"))
        .issuer_name(name("sensor-pipeline local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) if n == "localhost" else x509.IPAddress(ipaddress.ip_address(n)) for n in SERVER_NAMES]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_pem = cert.public_bytes(pem)
    ca_pem = ca_cert.public_bytes(pem)
    files.folder.mkdir(parents=True, exist_ok=True)
    files.folder.chmod(0o755)
    for path, content, mode in (
        (files.server_key, key_pem, 0o600),
        (files.server_pem, key_pem + cert_pem + ca_pem, 0o600),
        (files.server_cert, cert_pem + ca_pem, 0o644),
        (files.ca, ca_pem, 0o644),
        (names, " ".join(SERVER_NAMES).encode(), 0o644),  # last: its presence means the set is complete
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode)
        tmp.replace(path)
    return files

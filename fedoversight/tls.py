"""X.509 helpers both sides need: reading certificates, the facts an identity check looks at,
and plain-language reasons for failed TLS handshakes.

The carrier's identity is its certificate: the coordinator reads the peer certificate of every
stream and operator call (:func:`certificate_info` of the PEM gRPC puts in the auth context)
and checks it against its registry. Nothing here ever reads or prints a private key's content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from fedoversight.errors import ConfigError


def format_serial(serial: int) -> str:
    """A certificate serial as lowercase hex without separators (how revocation lists name it)."""
    return f"{serial:x}"


def normalise_serial(text: str) -> str:
    """Accept ``0A:1b``, ``0x0a1b`` or ``a1b`` alike; return :func:`format_serial`'s form."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return format_serial(int(cleaned, 16))
    except ValueError:
        raise ConfigError("a revoked serial is not hexadecimal") from None


@dataclass(frozen=True)
class CertificateInfo:
    """What an identity check looks at in a certificate."""

    common_name: str
    #: Lowercase hex (see :func:`format_serial`).
    serial: str
    #: SHA-256 of the DER encoding, lowercase hex (what a pin names).
    fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime
    issuer: str

    def valid_at(self, when: dt.datetime) -> bool:
        return self.not_before <= when <= self.not_after


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_info(cert: x509.Certificate) -> CertificateInfo:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = names[0].value if names else ""
    return CertificateInfo(
        common_name=common_name if isinstance(common_name, str) else common_name.decode(),
        serial=format_serial(cert.serial_number),
        fingerprint=fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(),
    )


def parse_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError("not a PEM certificate") from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a bundle of CAs, or one certificate)."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror}") from exc
    except ValueError:
        raise ConfigError(f"{path} holds no PEM certificate") from None
    return certs


def load_certificate(path: Path) -> x509.Certificate:
    return load_certificates(path)[0]


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key signed ``cert`` (and the names chain)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_identity_files(
    cert_path: Path, key_path: Path, *, now: dt.datetime | None = None, what: str = "this"
) -> CertificateInfo:
    """Check one's own certificate before using it: readable, current, matching its key.

    Raises :class:`ConfigError` with a plain reason (expired, not yet valid, wrong key); the
    key's content never appears in any message.
    """
    now = now or dt.datetime.now(dt.UTC)
    cert = load_certificate(cert_path)
    info = certificate_info(cert)
    if now > info.not_after:
        raise ConfigError(
            f"{what} certificate {cert_path.name} expired on {info.not_after:%Y-%m-%d %H:%M}Z"
        )
    if now < info.not_before:
        raise ConfigError(
            f"{what} certificate {cert_path.name} is not valid before"
            f" {info.not_before:%Y-%m-%d %H:%M}Z"
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read key {key_path.name}: {exc.strerror}") from exc
    except (ValueError, TypeError):
        raise ConfigError(f"{key_path.name} is not an unencrypted PEM private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ConfigError(f"{key_path.name}: unsupported key type")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise ConfigError(f"key {key_path.name} does not belong to certificate {cert_path.name}")
    return info


#: Fragments of gRPC / BoringSSL handshake errors and what they mean, most specific first.
_HANDSHAKE_REASONS: tuple[tuple[str, str], ...] = (
    ("certificate_expired", "the peer refused an expired certificate"),
    ("certificate expired", "the peer's certificate has expired"),
    ("certificate_revoked", "the peer refused a revoked certificate"),
    ("unknown_ca", "the peer does not trust the CA that issued this side's certificate"),
    ("certificate_required", "the peer requires a client certificate"),
    ("peer_did_not_return_a_certificate", "the peer presented no certificate"),
    ("bad_certificate", "the peer refused this side's certificate"),
    ("certificate_verify_failed", "the peer's certificate is not trusted by the configured CA"),
    ("certificate verify failed", "the peer's certificate is not trusted by the configured CA"),
    ("unable to get local issuer", "the peer's certificate is not trusted by the configured CA"),
    ("peer name", "the peer's certificate does not name the address dialled (server_name)"),
    ("hostname", "the peer's certificate does not name the address dialled (server_name)"),
    ("wrong_version_number", "the peer does not speak TLS (is it in insecure mode?)"),
    ("handshake", "the TLS handshake failed"),
    ("ssl", "the TLS handshake failed"),
)


def describe_handshake_failure(details: str) -> str | None:
    """A plain reason for a failed TLS handshake from a gRPC error's details, or None."""
    lowered = details.lower()
    for fragment, reason in _HANDSHAKE_REASONS:
        if fragment in lowered:
            return reason
    return None

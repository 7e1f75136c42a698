"""Ed25519 signatures over exact message bytes (requests by operators, results by nodes).

The signed bytes are the serialized message as produced by the signer; the verifier checks
the signature over those bytes before decoding them, so the encoding is canonical by
construction.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedoversight.errors import AuthenticationError, ConfigError


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load signing key {path.name}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {path.name} is not Ed25519")
        return cls(key)

    @property
    def key_id(self) -> str:
        return key_id(self.private.public_key())

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.private.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class Verifier:
    public: Ed25519PublicKey

    @classmethod
    def load(cls, path: Path) -> Verifier:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load public key {path.name}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"public key {path.name} is not Ed25519")
        return cls(key)

    @functools.cached_property
    def key_id(self) -> str:
        """The key's id (computed once: it is checked on every verification)."""
        return key_id(self.public)

    def verify(self, data: bytes, signature: bytes, claimed_key_id: str) -> None:
        if claimed_key_id != self.key_id:
            raise AuthenticationError("signed by an unknown key")
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            raise AuthenticationError("bad signature") from None

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

"""Who may talk to the coordinator: carriers on the node stream, operators on the operator API.

Mutual TLS has already checked that every peer's certificate chains to a CA in the trust bundle
and is within its validity window (expired or foreign certificates never get past the
handshake; gRPC's own log names the reason on this side). What is checked here, on every
node hello and every operator call, is the identity the certificate names:

- a carrier's certificate names its carrier id (common name), that id is registered, the
  certificate is not revoked, and it is either the pinned one (a carrier using its own PKI) or
  issued by the federation's CA (the first certificate of the trust bundle), so one carrier's
  own CA can never vouch for another carrier;
- an operator API caller is an operator or a viewer, known by its certificate's common name or
  by a bearer token (``authorization: Bearer ...``) whose SHA-256 is configured; carrier
  certificates carry no operator rights. Where offices are configured the caller belongs to
  one, and sees rounds of the purposes its office is entitled to only (the operator API checks
  that per round).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import grpc
from cryptography import x509

from coordinator.config import CarrierEntry, OperatorEntry, Role
from fedoversight.errors import AuthenticationError, ConfigError, OversightError
from fedoversight.tls import (
    CertificateInfo,
    certificate_info,
    is_issued_by,
    normalise_serial,
    parse_certificate,
)
from fedoversight.v1 import types_pb2

log = logging.getLogger(__name__)

#: Longest ``authorization`` metadata value looked at (a bearer token is far shorter).
MAX_TOKEN_CHARS = 512


class ForbiddenError(OversightError):
    """An authenticated caller whose role does not allow the call."""

    public = "this role may not do that"
    code = types_pb2.ERROR_CODE_UNAUTHENTICATED
    status = grpc.StatusCode.PERMISSION_DENIED


class Revocations:
    """Revoked certificate serials: from the config, plus a file re-read whenever it changes."""

    def __init__(self, serials: Iterable[str] = (), file: Path | None = None) -> None:
        self._static = frozenset(normalise_serial(s) for s in serials)
        self._file = file
        self._file_serials: frozenset[str] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self._reload()

    def _reload(self) -> None:
        if self._file is None:
            return
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            if self._file_serials:
                log.warning("revocation file %s vanished; keeping its last contents", self._file)
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        serials = []
        for line in self._file.read_text(encoding="utf-8").splitlines():
            text = line.split("#", 1)[0].strip()
            if text:
                try:
                    serials.append(normalise_serial(text))
                except ConfigError:
                    log.error("revocation file %s: a line is not a hex serial", self._file)
        self._file_serials = frozenset(serials)
        self._stamp = stamp
        log.info("revocation list: %d serials from %s", len(serials), self._file.name)

    def is_revoked(self, serial: str) -> bool:
        self._reload()
        return serial in self._static or serial in self._file_serials


@dataclass(frozen=True)
class Peer:
    """A caller's certificate as TLS presented it (None without TLS)."""

    certificate: x509.Certificate | None
    info: CertificateInfo | None


def peer_of(context: grpc.aio.ServicerContext) -> Peer:
    auth = context.auth_context()
    pem = auth.get("x509_pem_cert") or []
    if not pem:
        return Peer(None, None)
    try:
        cert = parse_certificate(pem[0])
    except ConfigError:
        return Peer(None, None)
    return Peer(cert, certificate_info(cert))


class CarrierAccess:
    """The identity check of a node stream's hello."""

    def __init__(
        self,
        entries: Mapping[str, CarrierEntry],
        *,
        federation_ca: x509.Certificate | None,
        revocations: Revocations,
        require_certificate: bool,
    ) -> None:
        self._entries = dict(entries)
        self._ca = federation_ca
        self._revocations = revocations
        self._require = require_certificate

    def serial(self, context: grpc.aio.ServicerContext) -> str:
        """The serial of the stream's certificate ("" without one)."""
        info = peer_of(context).info if self._require else None
        return info.serial if info is not None else ""

    def is_revoked(self, serial: str) -> bool:
        return self._revocations.is_revoked(serial)

    def refusal(
        self, carrier_id: str, context: grpc.aio.ServicerContext, now: dt.datetime | None = None
    ) -> str | None:
        """None when the stream's certificate vouches for ``carrier_id``, else why not."""
        if not self._require:
            return None
        peer = peer_of(context)
        if peer.certificate is None or peer.info is None:
            return "no client certificate"
        return self.check_certificate(carrier_id, peer.certificate, peer.info, now)

    def check_certificate(
        self,
        carrier_id: str,
        cert: x509.Certificate,
        info: CertificateInfo,
        now: dt.datetime | None = None,
    ) -> str | None:
        now = now or dt.datetime.now(dt.UTC)
        if info.common_name != carrier_id:
            return "certificate does not match the carrier id"
        if self._revocations.is_revoked(info.serial):
            return "certificate revoked"
        if not info.valid_at(now):
            return "certificate expired or not yet valid"
        entry = self._entries.get(carrier_id)
        if entry is not None and entry.cert_sha256 is not None:
            if not hmac.compare_digest(entry.cert_sha256, info.fingerprint):
                return "certificate is not the one registered for this carrier"
        elif self._ca is not None and not is_issued_by(cert, self._ca):
            return "certificate not issued by the federation CA"
        return None


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    #: How the caller was recognised: "certificate", "token" or "insecure".
    via: str
    #: The caller's office (None: offices are not configured, or an open demo).
    office: str | None = None

    _RANK: ClassVar[dict[Role, int]] = {Role.VIEWER: 1, Role.OPERATOR: 2}

    def may(self, role: Role) -> bool:
        return self._RANK[self.role] >= self._RANK[role]


class OperatorAccess:
    """Authentication and roles on the operator API."""

    def __init__(
        self,
        operators: Sequence[OperatorEntry],
        *,
        revocations: Revocations,
        tls: bool,
        carrier_ids: Iterable[str] = (),
    ) -> None:
        self._by_name = {o.name: o for o in operators}
        self._tokens = [(o.token_sha256, o) for o in operators if o.token_sha256]
        self._revocations = revocations
        self._tls = tls
        self._carriers = frozenset(carrier_ids)
        self.open = not tls and not operators
        if self.open:
            log.warning(
                "operator API OPEN TO ANYONE who can reach it (insecure demo mode, no operators"
                " configured)"
            )

    def identify(self, context: grpc.aio.ServicerContext, now: dt.datetime | None = None) -> Caller:
        now = now or dt.datetime.now(dt.UTC)
        peer = peer_of(context) if self._tls else Peer(None, None)
        if peer.info is not None:
            if self._revocations.is_revoked(peer.info.serial):
                raise AuthenticationError("certificate revoked")
            if not peer.info.valid_at(now):
                raise AuthenticationError("certificate expired or not yet valid")
        token = _bearer_token(context)
        if token is not None:
            digest = hashlib.sha256(token.encode()).hexdigest()
            for expected, entry in self._tokens:
                if hmac.compare_digest(expected, digest):
                    return Caller(entry.name, entry.role, "token", entry.office)
            raise AuthenticationError("unknown token")
        if peer.info is not None:
            known = self._by_name.get(peer.info.common_name)
            if known is not None:
                return Caller(known.name, known.role, "certificate", known.office)
            if peer.info.common_name in self._carriers:
                raise AuthenticationError("a carrier certificate has no operator rights")
            raise AuthenticationError("certificate not registered as an operator")
        if self.open:
            return Caller("anonymous", Role.OPERATOR, "insecure")
        raise AuthenticationError("no operator credentials (certificate or token)")

    def require(self, context: grpc.aio.ServicerContext, role: Role) -> Caller:
        caller = self.identify(context)
        if not caller.may(role):
            raise ForbiddenError(f"role {caller.role} may not do this (needs {role})")
        return caller


def _bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if len(text) > MAX_TOKEN_CHARS:
            raise AuthenticationError("authorization metadata too long")
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("authorization must be 'Bearer TOKEN'")
        return token.strip()
    return None

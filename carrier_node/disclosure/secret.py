"""The node's disclosure secret: where record keys and the noise key come from.

One random 256-bit secret per node, kept in its state directory (readable by the node's user
only), never sent and never logged. From it come the record secret the engine hashes member
ids with (:func:`carrier_node.query.sql.member_key`) and the key of every noise draw
(:func:`carrier_node.disclosure.noise.draw`).

It carries the policy's ``key_version``: a policy with a higher version makes a new secret,
and so new noise for every value. Only a new policy version should do that — the same query
answered before and after the change gives two independent draws, which an analyst could
average — so a lower version than the one on disk is refused rather than silently reused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from fedoversight.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeSecret:
    version: int
    secret: bytes

    @property
    def record_secret(self) -> str:
        """What the engine hashes member ids with (hex text: it is a SQL literal)."""
        return hmac.new(self.secret, b"record keys", hashlib.sha256).hexdigest()[:32]

    @property
    def noise_key(self) -> bytes:
        return hmac.new(self.secret, b"noise", hashlib.sha256).digest()

    @classmethod
    def generate(cls, version: int = 1) -> NodeSecret:
        return cls(version, secrets.token_bytes(32))

    @classmethod
    def load_or_create(cls, path: Path, version: int) -> NodeSecret:
        """The secret at ``path`` for key ``version``: made (and kept) when there is none or
        when ``version`` is newer than the one kept."""
        kept = cls._read(path)
        if kept is not None and kept.version == version:
            return kept
        if kept is not None and kept.version > version:
            raise ConfigError(
                f"the policy's perturbation key_version {version} is older than the node's"
                f" disclosure secret (version {kept.version}); raise key_version, never lower it"
            )
        made = cls.generate(version)
        made._write(path)
        if kept is None:
            log.info("made the node's disclosure secret (key version %d)", version)
        else:
            log.warning(
                "made a new disclosure secret for key version %d (was %d): every value"
                " gets new noise from now on",
                version,
                kept.version,
            )
        return made

    @staticmethod
    def _read(path: Path) -> NodeSecret | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the disclosure secret {path.name}: {exc}") from None
        try:
            secret = bytes.fromhex(data["secret"])
            version = int(data["version"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"the disclosure secret {path.name} is malformed") from None
        if len(secret) != 32 or version < 1:
            raise ConfigError(f"the disclosure secret {path.name} is malformed")
        return NodeSecret(version, secret)

    def _write(self, path: Path) -> None:
        data = json.dumps(
            {
                "version": self.version,
                "secret": self.secret.hex(),
                "created_at": dt.datetime.now(dt.UTC).isoformat(),
            }
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + ".new")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            raise ConfigError(
                f"cannot keep the disclosure secret in {path.parent}: {exc.strerror}"
            ) from None

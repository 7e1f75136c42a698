"""Is a coordinator's configuration ready to serve? ``oversight serve --check``.

Everything a start would open or rely on is checked without binding a port or changing
anything: the coordinator's own certificate and key, the trust bundle, the operator keys, that
some operator can use the operator API, that every registered carrier has a result-signing key
(without one, every result it sends is rejected), the revocation file, the schedule (its suites
valid, and a key to sign their rounds), and the round store (opened, its schema version
checked; a SQLite file that does not exist yet is not created).

A *problem* means the coordinator would start but not work as configured, or would not start:
the check exits with status 2. A *warning* (a certificate close to expiry, an insecure demo) is
printed and does not fail the check.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from coordinator.config import CoordinatorConfig
from coordinator.schedule import load_schedule
from fedoversight.errors import OversightError
from fedoversight.signing import Signer, Verifier
from fedoversight.tls import check_identity_files, load_certificates

#: A certificate with fewer days than this left is a warning.
EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class Finding:
    ok: bool
    problem: bool
    text: str


def _ok(text: str) -> Finding:
    return Finding(ok=True, problem=False, text=text)


def _problem(text: str) -> Finding:
    return Finding(ok=False, problem=True, text=text)


def _warning(text: str) -> Finding:
    return Finding(ok=False, problem=False, text=text)


def check(config: CoordinatorConfig, *, now: dt.datetime | None = None) -> list[Finding]:
    """What a start of this configuration would meet, in the order a start meets it."""
    now = now or dt.datetime.now(dt.UTC)
    return [
        *_identity(config, now),
        *_operator_keys(config),
        *_operators(config),
        *_carriers(config),
        *_revocations(config),
        *_schedule(config),
        *_store(config),
    ]


def _identity(config: CoordinatorConfig, now: dt.datetime) -> list[Finding]:
    if config.tls is None:
        return [_warning("insecure: no TLS, unsigned requests accepted (demos only)")]
    tls = config.tls
    try:
        info = check_identity_files(tls.cert, tls.key, now=now, what="the coordinator's")
    except OversightError as exc:
        return [_problem(exc.detail)]
    days = (info.not_after - now).days
    found = [_ok(f"certificate {tls.cert.name}: matches its key, {days} days left")]
    if days < EXPIRY_WARNING_DAYS:
        found.append(_warning(f"the coordinator's certificate expires in {days} days"))
    try:
        bundle = load_certificates(tls.ca_cert)
    except OversightError as exc:
        found.append(_problem(f"trust bundle {tls.ca_cert.name}: {exc.detail}"))
    else:
        found.append(_ok(f"trust bundle {tls.ca_cert.name}: {len(bundle)} certificate(s)"))
    return found


def _operator_keys(config: CoordinatorConfig) -> list[Finding]:
    found: list[Finding] = []
    signer = verifier = None
    try:
        if config.operator_signing_key is not None:
            signer = Signer.load(config.operator_signing_key)
            found.append(_ok(f"operator signing key {config.operator_signing_key.name}"))
        if config.operator_public_key is not None:
            verifier = Verifier.load(config.operator_public_key)
            found.append(_ok(f"operator public key {config.operator_public_key.name}"))
    except OversightError as exc:
        return [*found, _problem(exc.detail)]
    if signer is not None and verifier is not None and signer.key_id != verifier.key_id:
        found.append(_problem("operator_public_key is not the public half of operator_signing_key"))
    if signer is None and verifier is None and not config.insecure:
        found.append(
            _problem(
                "neither operator_signing_key nor operator_public_key: no request can be"
                " signed or checked"
            )
        )
    return found


def _schedule(config: CoordinatorConfig) -> list[Finding]:
    if config.schedule is None:
        return []
    try:
        schedule = load_schedule(config.schedule)
    except OversightError as exc:
        return [_problem(exc.detail)]
    if schedule.suites and config.operator_signing_key is None and not config.insecure:
        return [_problem("a schedule needs operator_signing_key: its rounds are signed with it")]
    names = ", ".join(s.name for s in schedule.suites) or "none"
    return [_ok(f"schedule {config.schedule.name}: {len(schedule.suites)} suite(s) ({names})")]


def _operators(config: CoordinatorConfig) -> list[Finding]:
    if config.insecure:
        return []
    if not config.operators:
        return [_problem("no [[operators]]: the operator API would refuse every call")]
    roles = sorted({str(o.role) for o in config.operators})
    return [_ok(f"{len(config.operators)} operator(s) ({', '.join(roles)})")]


def _carriers(config: CoordinatorConfig) -> list[Finding]:
    if config.result_keys_dir is not None and not config.result_keys_dir.is_dir():
        return [_problem(f"result_keys_dir {config.result_keys_dir} is not a directory")]
    if not config.carriers:
        return [
            _warning("no carriers registered")
            if config.auto_register
            else _problem("no [[carriers]]: no node can connect")
        ]
    missing: list[str] = []
    found: list[Finding] = []
    for entry in config.carriers:
        path = config.result_key_path(entry)
        if path is None:
            missing.append(entry.id)
            continue
        try:
            Verifier.load(path)
        except OversightError as exc:
            found.append(_problem(f"carrier {entry.id}: result key {path.name}: {exc.detail}"))
    if missing and not (config.insecure and len(missing) == len(config.carriers)):
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        found.append(
            _problem(
                f"{len(missing)} carrier(s) without a result-signing key (every result they"
                f" send would be rejected): {shown}"
            )
        )
    keyed = len(config.carriers) - len(missing)
    found.insert(0, _ok(f"{len(config.carriers)} carrier(s), {keyed} with a result key"))
    return found


def _revocations(config: CoordinatorConfig) -> list[Finding]:
    found = []
    if config.revoked_serials:
        found.append(_ok(f"{len(config.revoked_serials)} revoked serial(s) in the config"))
    path = config.revocation_file
    if path is not None:
        if not path.exists():
            found.append(_warning(f"revocation file {path} does not exist (yet)"))
        elif not os.access(path, os.R_OK):
            found.append(_problem(f"revocation file {path} is not readable"))
        else:
            found.append(_ok(f"revocation file {path.name}"))
    return found


def _store(config: CoordinatorConfig) -> list[Finding]:
    from coordinator.store import open_round_store

    if config.round_store is None:
        path = Path(config.store_path)
        if not path.exists():
            parent = path.parent if str(path.parent) else Path(".")
            if parent.is_dir() and os.access(parent, os.W_OK):
                return [_ok(f"round store {path} will be created at the first start")]
            return [_problem(f"round store {path}: its directory is missing or not writable")]
    try:
        store = open_round_store(config)
    except OversightError as exc:
        return [_problem(f"round store: {exc.detail}")]
    except sqlite3.DatabaseError as exc:
        return [_problem(f"round store {config.store_path}: not a usable SQLite store ({exc})")]
    try:
        carriers = len(store.carriers())
    finally:
        store.close()
    where = "PostgreSQL" if config.round_store is not None else str(config.store_path)
    return [_ok(f"round store {where}: opened, {carriers} carrier(s) recorded")]

"""The node's audit log: append-only, hash-chained, verifiable by the carrier with one command.

One JSON object per line. Every entry carries its sequence number, the time, its kind, what it
is about, the hash of the entry before it (``prev``) and its own ``hash``: the SHA-256 of the
entry's canonical JSON (sorted keys, no spaces) without the ``hash`` field. So an edited entry
no longer matches its hash, and a deleted, inserted or reordered entry breaks the sequence or
the chain at that point. A head file beside the log (``LOG.head``) records the last sequence
number and hash, so entries cut from the end are detected too. The head file holds one JSON
object padded with spaces to a fixed width, rewritten in place after every append (heads written
by earlier versions, unpadded, read the same).

The chain and the head file only show that the log is consistent with itself: whoever can write
the files can cut the tail and delete (or rewrite) the head, or edit an entry and recompute
every hash after it. What proves more is outside the node: each signed result carries the log's
head when it was signed (its *audit anchor*, :meth:`AuditLog.head`), and the coordinator keeps
every signed result. :func:`verify` with those anchors checks that every anchored entry is still
in the log with the hash the node signed, and that every anchored result's ``released`` entry
follows its anchor. Without anchors, it says what it cannot prove.

A log found at start-up without its head file, or not ending where its head says, is not taken
as complete: the node logs an error and records what it found in the ``started`` entry
(``audit_head``), which :func:`verify` reports.

What is logged (never a data row, member id or SQL text; see :class:`AuditKind`): every request
received (its digest and claimed ids), the decision on it (admitted, or refused with the stage
and the reason), and everything released: the digest, signature and per-table disclosure
summary of the signed result, and the signed result itself (aggregates that already left).
In manual release mode a result is first logged as held (its digest and disclosure summary,
not its figures), then released with the reviewer's name, or rejected with the reviewer's
reason.

Only the node daemon appends to the log: ``carrier-node approve`` records a decision in the
node's state, and the daemon logs it when it carries it out.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

from fedoversight.anchors import AnchoredResult
from fedoversight.domain import AuditAnchor
from fedoversight.errors import ConfigError

log = logging.getLogger(__name__)

#: The ``prev`` of the first entry.
GENESIS = "0" * 64

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None

_REQUIRED = ("seq", "time", "kind", "prev", "hash")

#: Width of the head record: ``{"seq": N, "hash": "<64 hex>"}`` padded with spaces and ended
#: by a newline, so each update overwrites the same bytes (one block, no new file).
HEAD_WIDTH = 128


#: Where the OS has it, files opened with O_DSYNC make each write durable before it returns
#: (data and size, as ``fdatasync``), one system call instead of a write and a sync.
_O_DSYNC: int = getattr(os, "O_DSYNC", 0)


def _datasync(fd: int) -> None:
    """Make a file's data (and its size) durable: ``fdatasync`` where there is one."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[written:]
        if offset is not None:
            offset += written


def _sync_directory(path: Path) -> None:
    """Make a new file's name durable (where directories can be opened and synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _head_record(head: Head) -> bytes:
    text = json.dumps({"seq": head.seq, "hash": head.hash})
    return (text.ljust(HEAD_WIDTH - 1) + "\n").encode("ascii")


class AuditKind(StrEnum):
    #: The node started: node and catalogue versions, the policy digest in force.
    STARTED = "started"
    #: A request arrived (before any check): its digest, claimed ids, key id, size.
    RECEIVED = "received"
    #: It passed signature, expiry, replay, decoding and policy checks.
    ADMITTED = "admitted"
    #: It was refused: the stage, the wire error code and the reason.
    REFUSED = "refused"
    #: A signed result left: digest, signature, tables' disclosure summaries, the result.
    RELEASED = "released"
    #: A duplicate delivery was answered with the answer already given.
    RESENT = "resent"
    #: Manual release mode: a signed result kept back for the reviewer (digest, disclosure
    #: summaries); it leaves with a ``released`` entry naming the reviewer, or never.
    HELD = "held"
    #: The reviewer rejected a held result: who, their reason, the refusal sent instead.
    REJECTED = "rejected"


def entry_hash(entry: Mapping[str, JsonValue]) -> str:
    """SHA-256 of the entry's canonical JSON without its ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".head")


def encode_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


def _read_head(path: Path) -> Head | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return Head(int(raw["seq"]), str(raw["hash"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return Head(-1, "unreadable")


def _last_line(path: Path) -> str | None:
    """The last non-empty line of a file, read from its end."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            block = 1 << 16
            data = b""
            pos = end
            while pos > 0:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
                lines = data.rstrip(b"\n").split(b"\n")
                if len(lines) > 1 or pos == 0:
                    last = lines[-1].strip()
                    return last.decode("utf-8", errors="replace") if last else None
    except FileNotFoundError:
        return None
    return None


class AuditLog:
    """Appends entries to one log file (thread-safe; each append is written and synced
    before it returns, with one write for all the entries of :meth:`append_many`)."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self._head_path = head_path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._seq, self._prev = 0, GENESIS
        last = _last_line(path)
        if last is not None:
            try:
                raw = json.loads(last)
                self._seq, self._prev = int(raw["seq"]), str(raw["hash"])
            except (ValueError, KeyError, TypeError):
                log.error("the audit log's last line is damaged: run `carrier-node audit verify`")
                raise ConfigError(f"audit log {path.name} ends in a damaged entry") from None
        head = _read_head(self._head_path)
        #: What the head file said when the log was opened, when it was not the log's end:
        #: the node records it in its ``started`` entry (None when they agreed).
        self.head_at_open: dict[str, JsonValue] | None = None
        if head is None and self._seq > 0:
            self.head_at_open = {"state": "missing", "log_ends_at": self._seq}
        elif head is not None and (head.seq, head.hash) != (self._seq, self._prev):
            state = (
                "unreadable"
                if head.seq < 0
                else "ahead of the log"
                if head.seq > self._seq
                else "behind the log"
                if head.seq < self._seq
                else "different"
            )
            self.head_at_open = {"state": state, "log_ends_at": self._seq, "head_seq": head.seq}
        if self.head_at_open is not None:
            log.error(
                "audit log %s: its head file is %s (the log ends at entry %d): entries may have"
                " been cut from its end; run `carrier-node audit verify --anchors`",
                path.name,
                self.head_at_open["state"],
                self._seq,
            )
        created = not path.exists()
        self._sync_flag = _O_DSYNC if fsync else 0
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | self._sync_flag, 0o644
        )
        if created and fsync:
            _sync_directory(path.parent)
        self._head_fd: int | None = None

    @property
    def seq(self) -> int:
        return self._seq

    def head(self) -> AuditAnchor:
        """The last entry written (its sequence number and hash): the anchor a result signed
        now carries."""
        with self._lock:
            return AuditAnchor(self._seq, self._prev)

    def append(
        self,
        kind: AuditKind,
        *,
        request_id: str = "",
        round_id: str = "",
        **data: JsonValue,
    ) -> dict[str, JsonValue]:
        return self.append_many([(kind, request_id, round_id, data)])[-1]

    def append_many(
        self, items: Sequence[tuple[AuditKind, str, str, Mapping[str, JsonValue]]]
    ) -> list[dict[str, JsonValue]]:
        """Append several entries with one write and one sync."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        with self._lock:
            entries: list[dict[str, JsonValue]] = []
            seq, prev = self._seq, self._prev
            for kind, request_id, round_id, data in items:
                seq += 1
                entry: dict[str, JsonValue] = {
                    "seq": seq,
                    "time": now,
                    "kind": str(kind),
                    "request_id": request_id,
                    "round_id": round_id,
                    **data,
                    "prev": prev,
                }
                entry["hash"] = prev = entry_hash(entry)
                entries.append(entry)
            text = "".join(
                json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"
                for e in entries
            )
            if self._fd is None:
                raise ValueError("the audit log is closed")
            size = os.fstat(self._fd).st_size
            try:
                _write_all(self._fd, text.encode("ascii"))
                if self._fsync and not self._sync_flag:
                    _datasync(self._fd)
            except OSError:
                # A full disk: no part of the entries stays, so the chain goes on unbroken
                # once there is room again.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, size)
                raise
            self._seq, self._prev = seq, prev
            # Only after the entries are durable: a head never names an entry the log lacks.
            self._write_head(Head(seq, prev))
        return entries

    def _write_head(self, head: Head) -> None:
        """Overwrite the head record in place: one synced write of an existing block, rather
        than a new file, its sync and a rename per append."""
        first = self._head_fd is None
        if self._head_fd is None:
            created = not self._head_path.exists()
            self._head_fd = os.open(
                self._head_path, os.O_RDWR | os.O_CREAT | self._sync_flag, 0o644
            )
            if created and self._fsync:
                _sync_directory(self._head_path.parent)
        _write_all(self._head_fd, _head_record(head), 0)
        if first:  # a head written by an earlier version may be longer than the record
            os.ftruncate(self._head_fd, HEAD_WIDTH)
            if self._fsync:
                _datasync(self._head_fd)
        elif self._fsync and not self._sync_flag:
            _datasync(self._head_fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._head_fd is not None:
                os.close(self._head_fd)
                self._head_fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- reading and verifying ------------------------------------------------------------------


class Outcome(StrEnum):
    """What :func:`verify` could establish."""

    #: The chain holds, the head file agrees, and every anchor holds.
    ANCHORED = "anchored"
    #: Nothing wrong was found, but something cannot be proven: no anchors to check against,
    #: or no head file.
    UNPROVEN = "unproven"
    #: Something is wrong: named in :attr:`Verification.problem`.
    BROKEN = "broken"


#: Said when there are no anchors to check the log against.
WITHOUT_ANCHORS = (
    "without anchors a truncated tail or a recomputed chain cannot be detected: export the"
    " anchors from the coordinator (`oversight anchors`) and pass --anchors"
)


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`."""

    entries: int
    #: The 1-based line of the first bad entry, or None when the log holds.
    first_bad_line: int | None
    #: The sequence number that line claims (None when unreadable or none).
    first_bad_seq: int | None
    problem: str
    #: Whether the log's head file exists (its agreement with the log is checked).
    head_found: bool = True
    #: Anchors checked and found to hold (None when no anchors were given).
    anchors: int | None = None
    #: The latest anchored entry (0 when none).
    anchored_to: int = 0
    #: What cannot be proven, in plain words (empty when the log is anchored to its end).
    unproven: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing wrong was found (see :attr:`outcome` for what could be proven)."""
        return self.first_bad_line is None and not self.problem

    @property
    def outcome(self) -> Outcome:
        if not self.ok:
            return Outcome.BROKEN
        if not self.anchors or not self.head_found:
            return Outcome.UNPROVEN
        return Outcome.ANCHORED


def read_entries(path: Path) -> Iterator[tuple[int, dict[str, JsonValue] | None]]:
    """(line number, entry) for every non-empty line; entry None when it does not parse."""
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except ValueError:
                yield number, None
                continue
            yield number, raw if isinstance(raw, dict) else None


def _broken(count: int, line: int | None, seq: int | None, problem: str) -> Verification:
    return Verification(count, line, seq, problem)


def verify(
    path: Path,
    *,
    head: Path | None = None,
    anchors: Sequence[AnchoredResult] | None = None,
) -> Verification:
    """Check the whole chain; name the first entry that is edited, missing, extra or out of
    order. ``head`` defaults to the head file beside the log (checked when it exists).

    With ``anchors`` (the node's signed results, as the coordinator kept them; their
    signatures checked by whoever read them), also check that each anchored entry is in the
    log with the hash the node signed (an edit before it, even with every hash after it
    recomputed, changes it), and that each anchored result's ``released`` entry follows its
    anchor (a log cut short lacks it, whatever its head file says).
    """
    if not path.exists():
        return Verification(0, None, None, f"no audit log at {path}")
    wanted = {a.anchor.seq for a in anchors or ()}
    results = {a.result_sha256 for a in anchors or ()}
    hashes: dict[int, str] = {0: GENESIS} if 0 in wanted else {}
    released: dict[str, list[tuple[int, JsonValue, JsonValue]]] = {}
    restarts: list[str] = []
    expected_seq, prev = 1, GENESIS
    count = 0
    for number, entry in read_entries(path):
        if entry is None or any(k not in entry for k in _REQUIRED):
            return _broken(count, number, None, f"line {number} is not an audit entry")
        seq = entry["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            return _broken(count, number, None, f"line {number} has no sequence number")
        if seq != expected_seq:
            return _broken(
                count,
                number,
                seq,
                f"entry {seq} at line {number}: expected entry {expected_seq} here (an entry"
                " was deleted, inserted or moved)",
            )
        if entry["prev"] != prev:
            return _broken(
                count,
                number,
                seq,
                f"entry {seq} at line {number} does not chain to the entry before it (that"
                " entry was altered, or entries were deleted, inserted or moved)",
            )
        if entry["hash"] != entry_hash(entry):
            return _broken(
                count,
                number,
                seq,
                f"entry {seq} at line {number} was edited (its hash does not match its content)",
            )
        prev = str(entry["hash"])
        if seq in wanted:
            hashes[seq] = prev
        kind = entry["kind"]
        if kind == AuditKind.RELEASED and entry.get("result_sha256") in results:
            released.setdefault(str(entry["result_sha256"]), []).append(
                (seq, entry.get("result"), entry.get("signature"))
            )
        elif kind == AuditKind.STARTED and isinstance(entry.get("audit_head"), dict):
            found = entry["audit_head"]
            assert isinstance(found, dict)
            restarts.append(
                f"at entry {seq} the node started with its head file {found.get('state')}"
                f" (the log ended at entry {found.get('log_ends_at')}): entries may have been"
                " cut from its end before then"
            )
        expected_seq += 1
        count += 1
    head_file = head or head_path(path)
    recorded = _read_head(head_file)
    if recorded is not None and (recorded.seq, recorded.hash) != (count, prev):
        if recorded.seq > count:
            problem = (
                f"the log ends at entry {count} but its head records entry {recorded.seq}:"
                " entries were removed from the end"
            )
        else:
            problem = (
                f"the log ends at entry {count} but its head records entry {recorded.seq}"
                f" ({head_file.name} does not match the log)"
            )
        return _broken(count, None, None, problem)
    if anchors:
        problem = _check_anchors(anchors, count, hashes, released)
        if problem:
            return _broken(count, None, None, problem)
    unproven: list[str] = []
    head_found = recorded is not None or count == 0
    if not head_found:
        unproven.append(
            f"the head file {head_file.name} is missing: entries cut from the end of the log"
            " cannot be detected by it"
        )
    anchored_to = max((a.anchor.seq for a in anchors or ()), default=0)
    if not anchors:
        unproven.append(WITHOUT_ANCHORS)
    elif anchored_to < count:
        unproven.append(
            f"entries {anchored_to + 1} to {count} come after the last anchor: an edit or a cut"
            " there cannot be detected until a later signed result anchors them"
        )
    unproven.extend(restarts)
    return Verification(
        count,
        None,
        None,
        "",
        head_found=head_found,
        anchors=len(anchors) if anchors is not None else None,
        anchored_to=anchored_to,
        unproven=tuple(unproven),
    )


def _check_anchors(
    anchors: Sequence[AnchoredResult],
    count: int,
    hashes: Mapping[int, str],
    released: Mapping[str, list[tuple[int, JsonValue, JsonValue]]],
) -> str:
    """The first anchor the log does not hold ("" when all do), checked in the log's order."""
    for a in sorted(anchors, key=lambda a: a.anchor.seq):
        what = f"request {a.request_id} (round {a.round_id})"
        seq = a.anchor.seq
        if seq > count:
            return (
                f"the result signed for {what} anchors entry {seq}, but the log ends at entry"
                f" {count}: entries were cut from the end of the log"
            )
        if hashes.get(seq) != a.anchor.hash:
            return (
                f"entry {seq} is not the entry the node signed into its result for {what}: the"
                f" log was rewritten at or before entry {seq} (entries edited and the chain"
                " recomputed)"
            )
        after = [r for r in released.get(a.result_sha256, []) if r[0] > seq]
        if not after:
            return (
                f"the release of {what}, signed after entry {seq}, is not in the log: entries"
                f" after entry {seq} were cut or replaced"
            )
        encoded = encode_bytes(a.result)
        if not any(r[1] == encoded and r[2] == a.signature.hex() for r in after):
            return (
                f"the release entry of {what} does not hold the result and signature the"
                " coordinator kept: it was rewritten"
            )
    return ""

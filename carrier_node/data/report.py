"""The report of ``carrier-node check``: a list of findings, each of a *kind*, and its outcome.

Kinds so far: ``validation`` (the schema checks of :mod:`carrier_node.data.validation`, or their
warehouse counterpart) and ``plausibility`` (the rules of :mod:`fedoversight.plausibility`).
Another check adds findings of its own kind; the shape stays the same (see
``docs/operations.md``, "Checking the data").

A finding names table, file (or warehouse table), column, rule, the rows affected and the first
few row positions, never a data value: the report stays at the carrier, and still shows no
member id or value.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from fedoversight.schema import SCHEMA_VERSION

Severity = Literal["error", "warning"]
Status = Literal["clean", "warnings", "errors"]
#: How a finding's ``first_rows`` locate rows: 1-based row numbers within the file, a
#: PostgreSQL table's ``ctid`` (block, item; valid until the row is updated or the table
#: vacuumed full), or nothing.
RowIdentity = Literal["file_row", "ctid", "none"]

#: Exit statuses of ``carrier-node check`` (the command's help and docs/operations.md).
EXIT_CLEAN = 0  # no finding
EXIT_WARNINGS = 1  # warnings only: the data can be answered from, but look at them
EXIT_ERRORS = 2  # at least one error (also click's status for a usage error)
EXIT_NOT_CHECKED = 3  # the check could not run: unreadable config, unreachable warehouse

#: Version of the JSON document :meth:`CheckReport.to_json` returns.
REPORT_VERSION = 1


@dataclass(frozen=True)
class Finding:
    """One located finding; never holds a data value."""

    #: ``validation`` | ``plausibility`` (other checks add kinds of their own).
    kind: str
    severity: Severity
    table: str
    #: The file name (never its path) or the warehouse table; None for the whole table.
    file: str | None
    column: str | None
    #: The rule or problem: a plausibility rule's name, or a validation problem's kind.
    rule: str
    #: Rows affected (0 for file- and column-level problems).
    rows: int
    message: str
    #: Positions of the first rows affected, in source order (see :data:`RowIdentity`).
    first_rows: tuple[int | str, ...] = ()
    #: Facts particular to the kind (e.g. a control total's month and its two figures, which
    #: are the carrier's own aggregates); empty for validation and plausibility findings.
    detail: Mapping[str, str | int | float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "table": self.table,
            "file": self.file,
            "column": self.column,
            "rule": self.rule,
            "rows": self.rows,
            "first_rows": list(self.first_rows),
            "message": self.message,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class CheckReport:
    """What ``carrier-node check`` found in one data source."""

    #: ``files`` or ``warehouse``.
    source: Literal["files", "warehouse"]
    #: The data directory, or the warehouse's ``host:port/dbname/schema``.
    location: str
    as_of: datetime.date
    row_identity: RowIdentity
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def status(self) -> Status:
        if any(f.severity == "error" for f in self.findings):
            return "errors"
        return "warnings" if self.findings else "clean"

    @property
    def exit_code(self) -> int:
        return {"clean": EXIT_CLEAN, "warnings": EXIT_WARNINGS, "errors": EXIT_ERRORS}[self.status]

    def with_findings(self, *findings: Finding) -> CheckReport:
        """This report with more findings (another check's) after its own."""
        return CheckReport(
            self.source,
            self.location,
            self.as_of,
            self.row_identity,
            (*self.findings, *findings),
        )

    def to_json(self) -> dict[str, object]:
        """The documented JSON shape (``carrier-node check --format json``)."""
        return {
            "report": "carrier-node check",
            "report_version": REPORT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "source": {"kind": self.source, "location": self.location},
            "as_of": self.as_of.isoformat(),
            "row_identity": self.row_identity,
            "status": self.status,
            "exit_code": self.exit_code,
            "counts": {
                "error": sum(f.severity == "error" for f in self.findings),
                "warning": sum(f.severity == "warning" for f in self.findings),
            },
            "findings": [f.to_json() for f in self.findings],
        }

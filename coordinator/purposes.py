"""Purposes, offices and retention at the coordinator (docs/purpose.md).

Every round declares why it is asked: a purpose of the coordinator's closed, versioned list,
a justification and the requesting office, all inside the signed request. An office may ask
rounds of the purposes it is entitled to and read their results only; each purpose keeps its
results for a retention period, after which the coordinator deletes them (keeping the
receipts' digests and signatures).

Requests without a purpose are handled so:

- a round created through the operator API without one gets the configured
  ``default_purpose`` (and the purpose's title, marked as the default, as justification), or
  is refused when no default is configured;
- a request the operator signed on their side must carry a purpose of the list, of the
  caller's office: the coordinator cannot add one to signed bytes;
- rounds stored before purposes have none: callers bound to an office see them only when
  their office is entitled to the default purpose (none when there is no default).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from coordinator.access import Caller, ForbiddenError
from coordinator.config import (
    AGENCY_OFFICE,
    DEFAULT_PURPOSE_LIST_VERSION,
    DEFAULT_PURPOSES,
    CoordinatorConfig,
    PurposeEntry,
)
from fedoversight import wire
from fedoversight.domain import Purpose, RequestSpec
from fedoversight.errors import ConfigError, InvalidRequestError

#: Justification recorded for a round given the default purpose (its title is prefixed).
DEFAULT_JUSTIFICATION = "(the coordinator's default purpose: no justification was given)"


@dataclass(frozen=True)
class PurposeRegistry:
    list_version: str
    purposes: tuple[PurposeEntry, ...]
    default_purpose: str
    #: Office -> purposes it is entitled to (empty: offices are not configured).
    offices: dict[str, frozenset[str]]

    @classmethod
    def from_config(cls, config: CoordinatorConfig) -> PurposeRegistry:
        return cls(
            list_version=config.purpose_list_version,
            purposes=config.purposes,
            default_purpose=config.default_purpose,
            offices={o.name: frozenset(o.purposes) for o in config.offices},
        )

    @classmethod
    def default(cls) -> PurposeRegistry:
        """The registry of a coordinator configured with nothing about purposes."""
        return cls(DEFAULT_PURPOSE_LIST_VERSION, DEFAULT_PURPOSES, DEFAULT_PURPOSES[0].code, {})

    def entry(self, code: str) -> PurposeEntry | None:
        return next((p for p in self.purposes if p.code == code), None)

    def office_of(self, caller: Caller) -> str:
        """The office a caller asks for (``agency`` when offices are not used)."""
        return caller.office if self.offices and caller.office else AGENCY_OFFICE

    def entitled(self, caller: Caller) -> frozenset[str]:
        """The purposes the caller's office may ask and read."""
        if not self.offices or caller.office is None:
            return frozenset(p.code for p in self.purposes)
        return self.offices.get(caller.office, frozenset())

    def may_read(self, caller: Caller, purpose: str | None) -> bool:
        """Whether the caller may see a round of ``purpose`` (None: a round stored before
        purposes, read as of the default purpose)."""
        code = purpose if purpose is not None else self.default_purpose
        if not self.offices or caller.office is None:
            return True
        return bool(code) and code in self.entitled(caller)

    def retain_until(self, code: str, created: dt.datetime) -> dt.datetime | None:
        entry = self.entry(code)
        if entry is None or entry.retention_days == 0:
            return None
        return created + dt.timedelta(days=entry.retention_days)

    def for_new_round(self, caller: Caller, code: str, justification: str) -> Purpose:
        """The purpose of a round the coordinator builds for ``caller``."""
        given = code
        code = code or self.default_purpose
        if not code:
            raise InvalidRequestError("a round needs a purpose (no default purpose is configured)")
        entry = self.entry(code)
        if entry is None:
            raise InvalidRequestError("the purpose is not in the coordinator's list")
        self._check_entitled(caller, code)
        if not justification:
            justification = f"{entry.title} {DEFAULT_JUSTIFICATION}" if not given else entry.title
        return wire.make_purpose(code, self.list_version, justification, self.office_of(caller))

    def for_suite(self, suite: str, code: str, office: str, description: str) -> Purpose:
        """The purpose of a scheduled suite's rounds: the suite's own (``code``, else the
        default purpose), asked for the suite's office (else ``agency``), justified by the
        suite's description."""
        code = code or self.default_purpose
        if not code:
            raise ConfigError(f"suite {suite}: no purpose, and no default purpose is configured")
        entry = self.entry(code)
        if entry is None:
            raise ConfigError(f"suite {suite}: purpose {code!r} is not in the coordinator's list")
        office = office or AGENCY_OFFICE
        if self.offices and code not in self.offices.get(office, frozenset()):
            raise ConfigError(f"suite {suite}: office {office!r} is not entitled to {code!r}")
        justification = description or f"{entry.title}: the scheduled suite {suite}"
        return wire.make_purpose(code, self.list_version, justification, office)

    def check_signed(self, caller: Caller, request: RequestSpec) -> Purpose:
        """The purpose of a request the operator signed: of the list's current version, one
        the caller's office is entitled to, naming that office."""
        purpose = request.purpose
        if purpose is None:
            raise InvalidRequestError("a signed request must declare a purpose")
        if purpose.list_version != self.list_version or self.entry(purpose.code) is None:
            raise InvalidRequestError("the signed request's purpose is not in the current list")
        self._check_entitled(caller, purpose.code)
        if purpose.office != self.office_of(caller):
            raise ForbiddenError("the signed request names another office")
        return purpose

    def _check_entitled(self, caller: Caller, code: str) -> None:
        if code not in self.entitled(caller):
            raise ForbiddenError("the caller's office is not entitled to this purpose")

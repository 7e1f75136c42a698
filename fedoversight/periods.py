"""Calendar periods: inclusive ranges of months, parsed from what operators type."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from fedoversight.errors import InvalidRequestError

MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
QUARTER_RE = re.compile(r"^(\d{4})-?Q([1-4])$")
YEAR_RE = re.compile(r"^(\d{4})$")
#: Longest period one request may span (guards the months table a query builds).
MAX_MONTHS = 120


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        m = MONTH_RE.match(text)
        if not m:
            raise InvalidRequestError(f"not a month (YYYY-MM): {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, day: dt.date) -> Month:
        return cls(day.year, day.month)

    @property
    def first_day(self) -> dt.date:
        return dt.date(self.year, self.month, 1)

    @property
    def last_day(self) -> dt.date:
        return self.next().first_day - dt.timedelta(days=1)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def quarter(self) -> str:
        return f"{self.year}Q{(self.month - 1) // 3 + 1}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True)
class Period:
    """An inclusive range of calendar months."""

    first: Month
    last: Month

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise InvalidRequestError("period ends before it starts")
        if len(self.months()) > MAX_MONTHS:
            raise InvalidRequestError(f"period longer than {MAX_MONTHS} months")
        if not (self.first.year >= 1900 and self.last.year <= 2200):
            raise InvalidRequestError("period out of range")

    @classmethod
    def parse(cls, text: str) -> Period:
        """``2026-01``, ``2026-01:2026-03``, ``2026Q1``, ``2026`` or ``2026Q1:2026Q2``."""
        text = text.strip()
        if ":" in text:
            start, end = text.split(":", 1)
            return cls(cls.parse(start).first, cls.parse(end).last)
        if m := YEAR_RE.match(text):
            year = int(m.group(1))
            return cls(Month(year, 1), Month(year, 12))
        if m := QUARTER_RE.match(text):
            year, q = int(m.group(1)), int(m.group(2))
            return cls(Month(year, 3 * q - 2), Month(year, 3 * q))
        month = Month.parse(text)
        return cls(month, month)

    def months(self) -> list[Month]:
        out = [self.first]
        while out[-1] < self.last and len(out) <= MAX_MONTHS:
            out.append(out[-1].next())
        return out

    @property
    def start_date(self) -> dt.date:
        return self.first.first_day

    @property
    def end_date(self) -> dt.date:
        return self.last.last_day

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"

"""Logging set-up for the command-line entry points (library code never configures logging),
and the ids a log record carries as fields of its own.

A record may carry a round id, a carrier id and a request id (:data:`LOG_FIELDS`): given with
``extra=`` on the call, or bound for a stretch of work with :func:`log_fields` (a context
variable, so it follows the task and the threads it hands work to). The JSON lines of
``--json-logs`` hold them as keys, so a round's or a carrier's lines can be selected without
parsing messages. Only ids go there: never a carrier's rows, member ids or SQL.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import IO

#: The fields a log record may carry beside its message.
LOG_FIELDS = ("round_id", "carrier_id", "request_id")

_NONE: Mapping[str, str] = MappingProxyType({})
_bound: ContextVar[Mapping[str, str]] = ContextVar("fedoversight_log_fields", default=_NONE)


def _checked(fields: Mapping[str, str]) -> dict[str, str]:
    unknown = set(fields) - set(LOG_FIELDS)
    if unknown:
        raise ValueError(f"not a log field: {', '.join(sorted(unknown))}")
    return dict(fields)


def _merged(fields: Mapping[str, str]) -> MappingProxyType[str, str]:
    """The bound fields with ``fields`` over them; an empty value unbinds its field."""
    merged = {**_bound.get(), **_checked(fields)}
    return MappingProxyType({k: v for k, v in merged.items() if v})


@contextmanager
def log_fields(**fields: str) -> Iterator[None]:
    """Records logged inside the block (in this task, and in what it starts or hands to
    threads meanwhile) carry these fields; an empty value unbinds a field for the block (a
    round's own lines logged while handling one carrier's message)."""
    token = _bound.set(_merged(fields))
    try:
        yield
    finally:
        _bound.reset(token)


def bind_log_fields(**fields: str) -> None:
    """Records logged from here to the end of the current task (and in the tasks it starts
    from now on) carry these fields: for code that cannot wrap its work in a block, such as
    a generator serving a stream."""
    _bound.set(_merged(fields))


class ContextFields(logging.Filter):
    """Puts the bound fields on each record (a field given with ``extra=`` is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value:
                payload[name] = str(value)
        if record.exc_info and record.exc_info[0] is not None:
            payload["error"] = record.exc_info[0].__name__
        return json.dumps(payload)


def log_handler(stream: IO[str] | None = None, *, json_format: bool = False) -> logging.Handler:
    """A handler writing to ``stream`` (stderr): JSON lines with the bound fields, or text."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFields())
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    return handler


def configure_logging(level: str = "INFO", *, json_format: bool = False) -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(json_format=json_format)]
    root.setLevel(level.upper())

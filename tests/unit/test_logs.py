"""Log records carry the bound ids as fields of their own, and the JSON lines hold them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from fedoversight.logs import (
    LOG_FIELDS,
    ContextFields,
    bind_log_fields,
    log_fields,
    log_handler,
)

log = logging.getLogger("tests.logs")


def lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = log_handler(out, json_format=True)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield out
    log.removeHandler(handler)
    log.propagate = True


def test_bound_ids_reach_tasks_and_threads_and_end_with_their_block(stream: io.StringIO) -> None:
    async def answer() -> None:
        with log_fields(request_id="r-1.q", round_id="r-1"):
            log.info("in the task")
            await asyncio.to_thread(log.info, "in a thread")
            log.info("given", extra={"round_id": "r-2"})
        log.info("after the block")

    async def stream_of_a_carrier() -> None:
        bind_log_fields(carrier_id="c001")
        await asyncio.create_task(answer())

    async def main() -> None:
        await asyncio.gather(stream_of_a_carrier(), asyncio.to_thread(log.info, "elsewhere"))
        log.info("outside")

    asyncio.run(main())
    found = {
        line["message"]: {k: line.get(k) for k in ("carrier_id", "round_id", "request_id")}
        for line in lines(stream)
    }
    assert found == {
        "in the task": {"carrier_id": "c001", "round_id": "r-1", "request_id": "r-1.q"},
        "in a thread": {"carrier_id": "c001", "round_id": "r-1", "request_id": "r-1.q"},
        "given": {"carrier_id": "c001", "round_id": "r-2", "request_id": "r-1.q"},
        "after the block": {"carrier_id": "c001", "round_id": None, "request_id": None},
        "elsewhere": {"carrier_id": None, "round_id": None, "request_id": None},
        "outside": {"carrier_id": None, "round_id": None, "request_id": None},
    }


def test_only_the_known_fields_can_be_bound() -> None:
    with pytest.raises(ValueError, match="member_id"), log_fields(member_id="M1"):
        pass


def test_an_empty_value_unbinds_a_field_for_its_block() -> None:
    seen: list[dict[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append({k: getattr(record, k) for k in LOG_FIELDS if hasattr(record, k)})

    logger = logging.getLogger("tests.unbind")
    handler = Keep()
    handler.addFilter(ContextFields())
    logger.addHandler(handler)
    try:
        with log_fields(carrier_id="c001"):
            with log_fields(round_id="r-1", carrier_id=""):
                logger.warning("the round's own line")
            logger.warning("the carrier's line")
    finally:
        logger.removeHandler(handler)
    assert seen == [{"round_id": "r-1"}, {"carrier_id": "c001"}]

"""Rendering a query's or a batch's text: what it leaves behind besides the text."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from sqlglot import exp

from carrier_node.query import batch, render, sql
from carrier_node.query.render import Keying, collector_paused
from fedoversight.periods import Period
from oversight_sim.suites import monthly_suite


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_while_held_and_back_after_the_last_holder() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer holder still holds it
    assert gc.isenabled()


def test_the_collector_comes_back_after_a_failure_inside() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("inside")
    assert gc.isenabled()


def test_a_collector_the_process_turned_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_is_back_only_when_every_thread_has_let_go() -> None:
    gc.enable()
    entered, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def hold() -> None:
        with collector_paused():
            entered.set()
            release.wait(5)
        seen.append(gc.isenabled())

    other = threading.Thread(target=hold)
    other.start()
    assert entered.wait(5)
    with collector_paused():
        pass
    assert not gc.isenabled()  # the other thread still holds it
    release.set()
    other.join(5)
    assert seen == [True] and gc.isenabled()


def test_a_batch_is_built_with_the_collector_off(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.enable()
    seen: list[bool] = []
    plan = batch.plan

    def recording(*args: object, **kwargs: object) -> batch.BatchPlan:
        seen.append(gc.isenabled())
        return plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "plan", recording)
    queries = tuple(monthly_suite())[:3]
    rendered = render.render_batch.__wrapped__(  # the cache left out: built here, not looked up
        "duckdb", None, None, Period.parse("2026-01"), queries, Keying("k" * 32)
    )
    assert seen == [False]
    assert gc.isenabled()
    assert len(rendered.queries) == 3


def test_templates_keep_no_note_of_their_place_in_the_text() -> None:
    """Each copy of a template would copy such notes (a dict per identifier)."""
    tree = sql.parse("SELECT a.x AS y FROM t AS a JOIN u AS b ON a.k = b.k WHERE a.q = 1")
    assert len(list(tree.find_all(exp.Identifier))) >= 6
    assert all(node.meta_get("line") is None for node in tree.walk())
    assert tree.sql(dialect="duckdb") == (
        "SELECT a.x AS y FROM t AS a JOIN u AS b ON a.k = b.k WHERE a.q = 1"
    )

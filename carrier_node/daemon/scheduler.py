"""Slots for evaluations: a few at once, a bounded queue, and light requests never starved.

A node evaluates up to ``slots`` requests at once. A request is *light* when its estimated
cells (:mod:`carrier_node.daemon.cost`) are at most ``light_cells``, *heavy* otherwise. With two
slots or more, heavy requests take at most ``slots - 1`` of them, so one is always left for a
light request: a trivial round behind a heavy one is answered at once. Waiting requests are
started light first, then in arrival order; at most ``max_queued`` wait, and one more is
refused as busy rather than left to time out. Waiting counts against the request's budget: a
request whose deadline passes in the queue is refused then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from carrier_node.budget import Budget
from fedoversight.errors import DeadlineExceededError, NodeBusyError, NodeStoppingError


@dataclass(eq=False)
class _Waiter:
    light: bool
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Scheduler:
    def __init__(self, slots: int, *, max_queued: int, light_cells: int) -> None:
        if slots < 1 or max_queued < 0:
            raise ValueError("a scheduler needs a slot and a queue of zero or more")
        self.slots = slots
        self.heavy_slots = slots - 1 if slots > 1 else 1
        self.max_queued = max_queued
        self.light_cells = light_cells
        self._running = 0
        self._running_heavy = 0
        self._waiting: deque[_Waiter] = deque()
        self._stopped = False

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _can_start(self, light: bool) -> bool:
        if self._running >= self.slots:
            return False
        return light or self._running_heavy < self.heavy_slots

    def _take(self, light: bool) -> None:
        self._running += 1
        if not light:
            self._running_heavy += 1

    def _give_back(self, light: bool) -> None:
        self._running -= 1
        if not light:
            self._running_heavy -= 1
        self._start_waiting()

    def _start_waiting(self) -> None:
        """Start what may start now: light requests first, then in arrival order."""
        for light_first in (True, False):
            for waiter in list(self._waiting):
                if light_first and not waiter.light:
                    continue
                if waiter.granted.done():  # given up (deadline, cancelled): drop it
                    self._waiting.remove(waiter)
                    continue
                if self._can_start(waiter.light):
                    self._waiting.remove(waiter)
                    self._take(waiter.light)
                    waiter.granted.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self, cells: int, budget: Budget) -> AsyncIterator[None]:
        """Hold a slot for a request of ``cells`` estimated cells while the block runs.

        Raises :class:`NodeBusyError` when the queue is full, :class:`DeadlineExceededError`
        when ``budget`` runs out while waiting, :class:`NodeStoppingError` once stopped."""
        if self._stopped:
            raise NodeStoppingError("the node is stopping")
        light = cells <= self.light_cells
        if self._can_start(light) and not any(w.light or not light for w in self._waiting):
            self._take(light)
        else:
            if len(self._waiting) >= self.max_queued:
                raise NodeBusyError(f"{len(self._waiting)} requests wait already")
            waiter = _Waiter(light)
            self._waiting.append(waiter)
            self._start_waiting()
            try:
                await asyncio.wait_for(asyncio.shield(waiter.granted), budget.timeout())
            except BaseException as exc:
                if waiter.granted.done() and not waiter.granted.cancelled():
                    if waiter.granted.exception() is None:
                        self._give_back(light)  # granted as it gave up: hand the slot on
                else:
                    waiter.granted.cancel()
                    with contextlib.suppress(ValueError):
                        self._waiting.remove(waiter)
                if isinstance(exc, TimeoutError):
                    raise DeadlineExceededError("past the deadline waiting for a slot") from None
                raise
        try:
            yield
        finally:
            self._give_back(light)

    def stop(self) -> None:
        """Refuse every waiting request and every later one (the node is stopping)."""
        self._stopped = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.granted.done():
                waiter.granted.set_exception(NodeStoppingError("the node is stopping"))

"""A request's time budget, and how every stage that evaluates it is stopped.

One :class:`Budget` goes with each admitted request: its deadline (the round's, less a margin
for signing and sending, and never more than the node's own cap) and its cancellation. The
stages check it between steps (:meth:`Budget.check`); a stage that blocks in a library — a
DuckDB query, a PostgreSQL statement — registers how to interrupt it
(:meth:`Budget.interruptible`), and :meth:`Budget.cancel` calls that from another thread. A
budget past its deadline, or cancelled because the node is stopping, raises the same error at
every later check, so an evaluation ends at its next step whatever it was doing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fedoversight.errors import DeadlineExceededError, NodeUnableError

log = logging.getLogger(__name__)

Interrupt = Callable[[], None]


class Budget:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        """A budget of ``seconds`` from now (``math.inf``: no deadline, only cancellation)."""
        self._clock = clock
        self._deadline = clock() + seconds
        self._lock = threading.Lock()
        self._error: NodeUnableError | None = None
        self._interrupts: dict[int, Interrupt] = {}
        self._next = 0

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(math.inf)

    def remaining(self) -> float:
        """Seconds left (0 once cancelled or past the deadline)."""
        if self._error is not None:
            return 0.0
        return max(0.0, self._deadline - self._clock())

    def timeout(self) -> float | None:
        """:meth:`remaining` as asyncio takes a timeout (None: none)."""
        remaining = self.remaining()
        return None if math.isinf(remaining) else remaining

    @property
    def error(self) -> NodeUnableError | None:
        """Why the budget ended (None while it runs)."""
        return self._error

    def cancel(self, error: NodeUnableError) -> None:
        """End the budget with ``error`` and interrupt whatever is registered (once; later
        calls change nothing)."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            interrupts = list(self._interrupts.values())
        for interrupt in interrupts:
            try:
                interrupt()
            except Exception as exc:  # an interrupt that fails must not stop the others
                log.warning("interrupting an evaluation failed: %s", type(exc).__name__)

    def check(self, stage: str) -> None:
        """Raise the budget's error if it has ended (past its deadline: ended here)."""
        if self._error is None and self._clock() >= self._deadline:
            self.cancel(DeadlineExceededError(f"past the deadline in {stage}"))
        if self._error is not None:
            raise self._error

    @contextmanager
    def interruptible(self, interrupt: Interrupt) -> Iterator[None]:
        """While the block runs, :meth:`cancel` calls ``interrupt`` (at once if the budget has
        ended already)."""
        with self._lock:
            key = self._next
            self._next += 1
            self._interrupts[key] = interrupt
            ended = self._error is not None
        if ended:
            interrupt()
        try:
            yield
        finally:
            with self._lock:
                del self._interrupts[key]

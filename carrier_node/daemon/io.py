"""The node's I/O thread: its state, outbox and audit log are written on one thread of their
own, in order, so they never wait behind an evaluation (which runs on the default executor)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from fedoversight.errors import OversightError

T = TypeVar("T")


class IoThread:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False

    async def run(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``call(*args, **kwargs)`` on the I/O thread (in a copy of the caller's context)."""
        if self._closed:
            raise OversightError("the node is shutting down")
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # as asyncio.to_thread does
        return await loop.run_in_executor(
            self._executor, functools.partial(context.run, call, *args, **kwargs)
        )

    def close(self) -> None:
        """Refuse new calls; wait for those under way."""
        self._closed = True
        self._executor.shutdown(wait=True)

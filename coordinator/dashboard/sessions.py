"""Server-side sessions: a random id in a cookie, everything else (the user's bearer token
inside their operator API client) in this process's memory only.

A visitor gets an anonymous session (for the login form's CSRF token); signing in replaces it
with a new id, so an id planted before login is worthless after. Sessions end on logout, after
``idle`` seconds unused, or when more than ``limit`` are open: the oldest anonymous one first,
then the oldest signed-in one.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from coordinator.client import Identity, OperatorClient

COOKIE = "fedoversight_session"


@dataclass
class Session:
    id: str
    csrf: str
    last_used: float
    user: Identity | None = None
    client: OperatorClient | None = field(default=None, repr=False)

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf, given)


class Sessions:
    def __init__(
        self,
        *,
        idle: float,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle
        self._limit = limit
        self._clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    async def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle clock restarted), or None."""
        await self.expire()
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        session.last_used = self._clock()
        self._by_id.move_to_end(session_id)
        return session

    async def new(self) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), last_used=self._clock()
        )
        self._by_id[session.id] = session
        while len(self._by_id) > self._limit:
            # Visitors who have not signed in make room first: opening the login page again
            # and again never pushes out a signed-in user while such sessions remain.
            anonymous = next((s for s in self._by_id.values() if s.user is None), None)
            oldest = anonymous or next(iter(self._by_id.values()))
            await self.end(oldest.id)
        return session

    async def sign_in(self, old: Session | None, user: Identity, client: OperatorClient) -> Session:
        """A new session for ``user`` (the old one, if any, ends)."""
        if old is not None:
            await self.end(old.id)
        session = await self.new()
        session.user = user
        session.client = client
        return session

    async def end(self, session_id: str) -> None:
        session = self._by_id.pop(session_id, None)
        if session is not None:
            await _close(session)

    async def expire(self) -> None:
        cutoff = self._clock() - self._idle
        stale = [s for s in self._by_id.values() if s.last_used < cutoff]
        for session in stale:
            await self.end(session.id)

    async def close(self) -> None:
        for session_id in list(self._by_id):
            await self.end(session_id)


async def _close(session: Session) -> None:
    client, session.client, session.user = session.client, None, None
    if client is not None:
        await client.close()

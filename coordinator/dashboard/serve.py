"""Serving the dashboard with uvicorn until SIGINT or SIGTERM."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from coordinator.dashboard.app import create_app
from coordinator.dashboard.settings import DashboardConfig


async def serve_dashboard(
    config: DashboardConfig, *, announce: Callable[[str], None] | None = None
) -> None:
    """Serve until stopped; ``announce`` gets the address once the socket is bound (with port
    0 in ``listen``, the one the system chose)."""
    host, port = config.host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="on",
        )
    )
    if announce is not None:
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        announce(f"http://{shown}:{bound}")
    await server.serve(sockets=[sock])

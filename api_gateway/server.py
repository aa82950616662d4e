"""Runs the gateway app with uvicorn inside the caller's event loop (the process's own signal
handling stays in charge: `lily up` stops the gateway with everything else)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp

from api_gateway.app import GatewaySettings, create_app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the process that embeds the gateway


@dataclass
class Gateway:
    """A running gateway."""

    port: int
    socket: socket.socket
    _server: _Server
    _task: asyncio.Task[None]

    async def stop(self, grace: float = 5.0) -> None:
        self._server.should_exit = True
        try:
            async with asyncio.timeout(grace):
                await self._task
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def serve(
    settings: GatewaySettings, host: str, port: int, mounts: Mapping[str, ASGIApp] | None = None
) -> Gateway:
    """Binds host:port (0: any free port; OSError if it is taken) and serves until stop()
    (the apps of `mounts` under their prefixes: see create_app)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
    # say so, and with Nagle on, every keep-alive reply waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    config = uvicorn.Config(
        create_app(settings, mounts=mounts),
        lifespan="on",
        log_config=None,
        access_log=False,
        http="httptools",
        ws="none",
        loop="none",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="lily-gateway")
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the gateway stopped before it started")
        await asyncio.sleep(0.01)
    return Gateway(sock.getsockname()[1], sock, server, task)

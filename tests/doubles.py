"""Local HTTP servers that stand in for outside systems in the tests: a Starlette app served
by uvicorn on a free port of 127.0.0.1, while an `async with` block runs."""

from __future__ import annotations

import asyncio
from typing import Self

import uvicorn
from starlette.applications import Starlette

from core.stack import free_port
from tests.helpers import eventually


class Served:
    """Serves `self.app()` at self.base (http://127.0.0.1:<port>)."""

    graceful: float | None = None  # seconds a stop waits for requests in flight (None: all)
    _port: int | None = None

    def app(self) -> Starlette:
        raise NotImplementedError

    @property
    def port(self) -> int:
        """Its port, chosen when first asked (so its URL can be given before it serves)."""
        if self._port is None:
            self._port = free_port()
        return self._port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.server = self._server()

    def _server(self) -> uvicorn.Server:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning")
        # (uvicorn annotates it int; it waits any number of seconds)
        config.timeout_graceful_shutdown = self.graceful  # type: ignore[assignment]
        return uvicorn.Server(config)

    async def __aenter__(self) -> Self:
        self._serve()
        await self._start()
        return self

    async def _start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())

        async def listening() -> bool:
            return bool(self.server.started)

        await eventually(listening)

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self._task, 10)

    async def restart(self, down: float = 0.0) -> None:
        """Stops listening (connections refused), for `down` seconds, and serves again on the
        same port with what it holds."""
        self.server.should_exit = True
        await asyncio.wait_for(self._task, 10)
        await asyncio.sleep(down)
        self.server = self._server()
        await self._start()

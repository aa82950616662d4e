"""Integrations as the adapter runtime sees them: ResolveIntegration on the core (its
settings, secrets and key), each answer kept `ttl` seconds, one call at a time per
integration; while the core cannot be reached, the last answer serves on. And the lists of
every tenant's integrations of a type (ListPlatformIntegrations), for pollers and followers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
from lily.v1 import integration_pb2 as integration_pb
from lily.v1 import integration_pb2_grpc as integration_grpc

Resolved = integration_pb.ResolveIntegrationResponse
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)


class CoreUnavailable(Exception):
    """The core cannot be reached, and nothing is known of the integration meanwhile."""


class Resolver:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: str,
        *,
        ttl: float = 5.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = integration_grpc.IntegrationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._known: dict[str, tuple[float, Resolved | None]] = {}
        self._asking: dict[str, asyncio.Future[Resolved | None]] = {}

    async def get(self, integration_id: str, max_age: float | None = None) -> Resolved | None:
        """The integration, or None if there is none of that id: what is known of it if that
        is younger than `max_age` seconds (default: the ttl), else what the core says now
        (or, while the core cannot be reached, what is known however old)."""
        known = self._known.get(integration_id)
        age = self._ttl if max_age is None else max_age
        if known is not None and self._clock() - known[0] < age:
            return known[1]
        asking = self._asking.get(integration_id)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(integration_id, known))
            self._asking[integration_id] = asking
            asking.add_done_callback(lambda _f: self._asking.pop(integration_id, None))
        return await asyncio.shield(asking)

    async def listed(self, kind: str, page: int = 500) -> AsyncIterator[integration_pb.Integration]:
        """Every tenant's integrations of a type (ListPlatformIntegrations, a page at a time);
        raises grpc.aio.AioRpcError if the core cannot say."""
        after = ""
        while True:
            found = await self._stub.ListPlatformIntegrations(
                integration_pb.ListPlatformIntegrationsRequest(
                    type=kind, page_size=page, after_integration_id=after
                ),
                metadata=self._metadata,
                timeout=self._timeout,
            )
            for i in found.integrations:
                yield i
            if len(found.integrations) < page:
                return
            after = found.integrations[-1].integration_id

    def forget(self, integration_id: str) -> None:
        self._known.pop(integration_id, None)

    async def _ask(
        self, integration_id: str, known: tuple[float, Resolved | None] | None
    ) -> Resolved | None:
        try:
            found: Resolved | None = await self._stub.ResolveIntegration(
                integration_pb.ResolveIntegrationRequest(integration_id=integration_id),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                found = None
            elif err.code() in TRANSIENT:
                if known is not None:
                    return known[1]  # stale, but the best there is while the core is away
                raise CoreUnavailable(f"the core is unavailable ({err.code().name})") from err
            else:
                raise
        self._known[integration_id] = (self._clock(), found)
        return found

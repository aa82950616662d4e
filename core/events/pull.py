"""Pull: a durable JetStream pull consumer's messages, fetched in batches at a few
microseconds of client CPU a message.

nats-py's PullSubscription.fetch takes each message after the first with next_msg, which
makes a uuid and two asyncio tasks per message: about 20 us of CPU, paid by every consumer of
every change event (three of them in the server process for each asset a bulk ingest
writes). Here the messages are taken by a subscription callback into a list instead, and a
fetch waits on one future.

A fetch asks first for what is there now (no_wait), and only when that is nothing waits for
one message (up to `timeout`) and then takes what else is there. Each request has a reply
subject of its own: a status that answers a request given up on is ignored, and a message
that comes late for one is kept for the next fetch (it is this consumer's, pending its ack).

A NATS client utility with nothing of Lily's domain in it: the adapter runtime uses it too.
"""

from __future__ import annotations

import asyncio
import json

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

_API = "$JS.API.CONSUMER.MSG.NEXT"
_SLACK = 2.0  # seconds a request may take beyond its own expiry before it is given up on
_ENDS = {"404", "408"}  # no messages (now), request expired: the request is over
# (409: the consumer was deleted, too many waiting requests, a leader changed, ...; 503: no
# one answers the subject: no such consumer)


class Pull:
    """Fetches from the durable consumer `consumer` of `stream` (made elsewhere)."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._subject = f"{_API}.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._asked = 0  # requests made
        self._reply = ""  # the open request's reply subject
        self._want = 0
        self._got: list[Msg] = []
        self._over: asyncio.Future[str] | None = None

    @classmethod
    async def bind(cls, js: JetStreamContext, stream: str, consumer: str) -> Pull:
        pull = cls(js._nc, stream, consumer)  # (the context's connection)
        pull._sub = await pull._nc.subscribe(pull._inbox + ".*", cb=pull._on_message)
        return pull

    async def _on_message(self, msg: Msg) -> None:
        status = (msg.headers or {}).get("Status") if not msg.data else None
        if status is None:
            self._got.append(msg)
            if len(self._got) >= self._want:
                self._end("")
        elif msg.subject == self._reply and status != "100":  # (100: a heartbeat)
            why = (msg.headers or {}).get("Description", "")
            self._end("" if status in _ENDS else f"{status} {why}")

    def _end(self, error: str) -> None:
        if self._over is not None and not self._over.done():
            self._over.set_result(error)

    async def _ask(self, batch: int, expires: float | None) -> None:
        """One request for up to `batch` messages: no_wait, or waiting `expires` seconds."""
        self._asked += 1
        self._reply = f"{self._inbox}.{self._asked}"
        self._want = batch
        self._over = asyncio.get_running_loop().create_future()
        if len(self._got) >= batch:
            self._end("")
            return
        request: dict[str, object] = {"batch": batch - len(self._got)}
        if expires is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(expires * 1e9)
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._reply)
        try:
            async with asyncio.timeout((expires or 0.0) + _SLACK):
                error = await self._over
        except TimeoutError:  # (the connection dropped it, say): a late answer is kept
            error = ""
        finally:
            self._reply = ""
        if error and not self._got:
            raise nats.errors.Error(f"pull from {self._subject}: {error}")

    async def fetch(self, batch: int, timeout: float = 5.0) -> list[Msg]:
        """Up to `batch` messages: what is there now, else the first to come within `timeout`
        seconds and what is there with it; none if nothing came."""
        if not self._got:
            await self._ask(batch, None)
            if not self._got:
                await self._ask(1, timeout)
                if self._got and batch > 1:
                    await self._ask(batch, None)
        return self._take(batch)

    def _take(self, batch: int) -> list[Msg]:
        msgs, self._got = self._got[:batch], self._got[batch:]
        return msgs

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

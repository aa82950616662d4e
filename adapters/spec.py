"""What an adapter tells Lily about the integrations it serves: its type's name, the built-in
role its integrations' credentials get, its webhook route and what it does with a delivery,
what it polls, and its settings (a pydantic model, checked when an integration is created or
changed). Registered under the `lily.adapters` entry point group (pyproject.toml), which is how the
integration registry and the adapter runtime find it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import grpc
import orjson
from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, slots=True)
class AdapterType:
    name: str
    role: str
    settings: type[BaseModel]
    webhook: str = ""  # its route's segment: /webhook/<webhook>/<integration id>
    inbound: Inbound | None = None  # what it does with its webhooks (and what it polls)
    poller: Poller | None = None  # reads the sender's API on a schedule (the safety net)
    # takes Lily's asset change events of its integrations' tenants (an enforcement target):
    # the runtime files those it wants as deliveries of the integration, for `inbound`
    follower: Follower | None = None
    # Whether one integration's deliveries must be mapped one at a time, in the order they
    # came (Monte Carlo: an update after its incident); False where event time decides.
    ordered: bool = True
    # sends Lily's notifications to its integrations (a destination of subscriptions)
    sink: Sink | None = None
    # Lily signs what it sends with the integration's webhook secret (made and rotated by
    # Lily as a webhook secret is; while a rotation's grace lasts, it signs with both)
    signs: bool = False
    # answers the sender's one-time GET that proves the webhook URL is Lily's (Okta's event
    # hook verification)
    challenge: Challenge | None = None

    @property
    def destination(self) -> bool:
        return self.sink is not None

    def check_settings(self, settings: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            self.settings.model_validate(settings)
        except ValidationError as exc:
            return [
                (".".join(str(part) for part in e["loc"]), e["msg"].removeprefix("Value error, "))
                for e in exc.errors()
            ]
        return []


@dataclass(frozen=True, slots=True)
class Delivery:
    """One inbound delivery, as the inbox keeps it: accepted (its sender verified) and not yet
    mapped."""

    integration_id: str
    tenant_id: str
    type: str
    delivery_id: str  # the sender's delivery, as the adapter names it (a repeat: the same)
    body: bytes
    received_at: float  # epoch seconds
    retries: int = 0  # how many times it was kept as pending and tried again
    trace: str = ""  # the W3C traceparent of what it came from (its handling continues it)


class TryLater(Exception):
    """What a delivery needs cannot be reached just now (an engine downstream is down): the
    delivery stays queued and is tried again, with growing pauses."""


class Refused(Exception):
    """A delivery refused at the door, with its HTTP status (400, 403, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_body(body: bytes) -> Any:
    """A delivery's body, read as JSON (with the json module, as a sender's reference code
    reads it: a signature may be over that reading); Refused 400 if it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not JSON") from None


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of a delivery: done (mapped onto Lily), unmapped (an event type this adapter
    does not map: kept, not an error), or pending (it names no asset Lily knows yet: kept)."""

    kind: Literal["done", "unmapped", "pending"]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LilyClient:
    """Lily as an adapter reaches it: the generated gRPC stubs on the core's channel, with the
    integration's own credential."""

    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]
    timeout: float = 10.0


class Memory(Protocol):
    """What an adapter remembers between deliveries of one integration (e.g. the assets an
    incident was attached to), kept durably by the runtime."""

    async def get(self, key: str) -> list[str]: ...

    async def put(self, key: str, values: Sequence[str]) -> None: ...

    async def read(self, key: str) -> tuple[list[str], int]:
        """The values and their revision (0: none yet), for a `write` that must not lose
        another writer's (another runtime serving the same integration)."""
        ...

    async def write(self, key: str, values: Sequence[str], revision: int) -> bool:
        """Puts the values if the key is still at `revision`; False if it was written since."""
        ...


class Inbound(Protocol):
    """What an adapter that takes webhooks does with them."""

    def accept(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> str:
        """Verifies a delivery (its signature or secret, its shape); returns its delivery id
        (a repeated delivery: the same id). Raises Refused."""
        ...

    async def handle(
        self,
        delivery: Delivery,
        settings: Mapping[str, Any],
        lily: LilyClient,
        memory: Memory,
        secrets: Mapping[str, str],
    ) -> Handled:
        """Maps the delivery onto Lily through `lily`. A gRPC error it raises that says Lily
        is unavailable, or TryLater, leaves the delivery queued for later; any other error
        dead-letters it."""
        ...


class Challenge(Protocol):
    """A sender's one-time check, by GET, that its webhook URL is served by the receiver
    (Okta's event hook verification)."""

    def answer(self, headers: Mapping[str, str], secrets: Sequence[str]) -> dict[str, Any]:
        """The JSON to answer with, once the request is verified (its secret, in constant
        time). Raises Refused."""
        ...


@dataclass(frozen=True, slots=True)
class Polled:
    """What one poll read: deliveries for the inbox (mapped as webhooks are, by the type's
    Inbound; a delivery id read again is kept once), and the cursor the next poll starts from."""

    deliveries: Sequence[tuple[str, bytes]]  # (delivery id, body)
    cursor: str
    more: bool = False  # it stopped at its page limit: poll again at once


class PollFailed(Exception):
    """A poll the sender's API refused or failed, with its HTTP status (0: none, e.g. it could
    not be reached) and, where it said so, how long to wait before the next."""

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Poller(Protocol):
    """What an adapter that reads its sender's API on a schedule does."""

    def interval(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> float | None:
        """Seconds between polls of an integration; None if it is not polled (e.g. it has no
        API credentials)."""
        ...

    async def poll(
        self,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        cursor: str,
        *,
        now: float,
        timeout: float,
    ) -> Polled:
        """Reads what changed since `cursor` ("" : never polled), each call to the API within
        `timeout` seconds. Raises PollFailed."""
        ...


@dataclass(frozen=True, slots=True)
class AssetChange:
    """An asset change event as a follower sees it: the asset after the change."""

    asset_id: str
    qualified_name: str
    asset_type: int  # lily.v1.AssetType
    version: int
    tags: tuple[str, ...]  # effective, after the change
    deleted: bool = False


def body_of(changes: list[AssetChange]) -> bytes:
    """The body of the delivery the runtime files for a follower: the changes it wants."""
    return orjson.dumps(
        {
            "changes": [
                {
                    "asset_id": c.asset_id,
                    "qualified_name": c.qualified_name,
                    "asset_type": c.asset_type,
                    "version": c.version,
                    "tags": list(c.tags),
                    "deleted": c.deleted,
                }
                for c in changes
            ]
        }
    )


def changes_of(body: Mapping[str, object]) -> list[AssetChange]:
    """The changes of a delivery the runtime made for a follower (body_of, read back)."""
    found = body.get("changes")
    return [
        AssetChange(
            asset_id=str(c["asset_id"]),
            qualified_name=str(c["qualified_name"]),
            asset_type=int(c.get("asset_type", 0)),
            version=int(c["version"]),
            tags=tuple(str(t) for t in c.get("tags", ())),
            deleted=bool(c.get("deleted", False)),
        )
        for c in (found if isinstance(found, list) else [])
        if isinstance(c, dict) and "asset_id" in c and "version" in c
    ]


class Follower(Protocol):
    """What an adapter that follows Lily's asset changes wants of them."""

    def wants(self, settings: Mapping[str, Any], change: AssetChange) -> bool:
        """Whether a change concerns the integration (e.g. an object of its engine)."""
        ...


SEVERITY_NAMES = ("", "low", "medium", "high", "critical")  # lily.v1.IssueSeverity, by number


@dataclass(frozen=True, slots=True)
class Notification:
    """What a destination is asked to deliver: an event a subscription took (or a burst of
    them, summarised: count > 1, the worst named in `assets`), a test, or either again. Its
    JSON (dump) is what the outbound stream holds and the delivery's record keeps."""

    delivery_id: str
    tenant_id: str
    subscription_id: str  # "" : a test
    integration_id: str
    event_type: str  # e.g. issue.opened (policy/notifications.py lists them); "test"
    title: str  # one line
    text: str  # the subscription's template, rendered
    severity: str = ""  # SEVERITY_NAMES ("" : none)
    asset_id: str = ""
    qualified_name: str = ""
    asset_type: int = 0  # lily.v1.AssetType
    url: str = ""
    occurred_at: float = 0.0  # epoch seconds
    count: int = 1
    assets: tuple[str, ...] = ()  # a burst's worst, by qualified name
    tags: tuple[str, ...] = ()
    actor: str = ""
    event_ids: tuple[str, ...] = ()
    # of issue events: the Lily issue (what a ticket is kept for), its status and source
    issue_id: str = ""
    issue_status: str = ""  # open | acknowledged | resolved
    issue_source: str = ""
    issue_external_id: str = ""
    max_attempts: int = 8
    test: bool = False
    trace: str = ""  # the W3C traceparent of the event it is for (of a burst: its first)

    def dump(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def load(cls, raw: bytes) -> Notification:
        """Read back (a field it does not know is left out; one it lacks takes its default)."""
        doc = orjson.loads(raw)
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        for name in ("assets", "tags", "event_ids"):
            if name in known:
                known[name] = tuple(str(v) for v in known[name] or ())
        return cls(**known)

    def fields(self) -> dict[str, str]:
        """What a template names (policy/notifications.py: PLACEHOLDERS)."""
        return {
            "event_type": self.event_type,
            "qualified_name": self.qualified_name,
            "asset_id": self.asset_id,
            "title": self.title,
            "severity": self.severity,
            "status": self.issue_status,
            "tags": ", ".join(self.tags),
            "count": str(self.count),
            "url": self.url,
            "text": self.text,
            "actor": self.actor,
        }


@dataclass(frozen=True, slots=True)
class Sent:
    """A destination took a notification: its HTTP status, what it said, and what it made of
    it, where it says (a ticket's key, a message's ts)."""

    status: int = 200
    message: str = "ok"
    ref: str = ""


class SendFailed(Exception):
    """A destination did not take a notification: its HTTP status (0: it could not be
    reached), how long it asked to wait (Retry-After), and whether sending it again cannot
    help (e.g. 400: the payload; 404, 410: the destination is gone)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent


def send_failed(status: int, message: str, retry_after: str | None = None) -> SendFailed:
    """An HTTP answer that is not a success, as SendFailed: 408, 425, 429 and 5xx are worth
    trying again (after Retry-After, in seconds, where given); any other is not."""
    wait: float | None = None
    if retry_after:
        try:
            wait = max(0.0, float(retry_after))
        except ValueError:
            wait = None  # (an HTTP date: the back-off decides)
    again = status in (408, 425, 429) or status >= 500
    return SendFailed(message[:500], status=status, retry_after=wait, permanent=not again)


class Sink(Protocol):
    """What an adapter that delivers notifications does."""

    def rate(self, settings: Mapping[str, Any]) -> float | None:
        """How many notifications a second an integration takes at most (None: no limit)."""
        ...

    async def send(
        self,
        notification: Notification,
        settings: Mapping[str, Any],
        secrets: Mapping[str, str],
        memory: Memory,
        *,
        signing: Sequence[str],
        timeout: float,
    ) -> Sent:
        """Delivers it, each call within `timeout` seconds; `signing`: the webhook secrets
        to sign with (current first). Raises SendFailed. Where the destination can be asked
        whether it has it already (a ticket for its Lily key), it asks before making one."""
        ...

"""The integration registry: a tenant's connections to outside systems, each of a type an
adapter provides (found through the `lily.adapters` entry points), with its settings checked
by that type, its secrets sealed at rest (policy/secretbox.py), and a credential of its own
(an API key with the type's role) that its adapter calls Lily with.

A secret is never returned, nor logged: the webhook secret Lily makes is shown once, when the
integration is created or its secret rotated; the adapter runtime (a platform role) alone
resolves an integration to its secrets."""

from __future__ import annotations

import base64
import logging
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from typing import Any

import orjson

from core.domain.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from core.metadata.pagination import page_size
from core.requestctx import Principal
from core.wire.validation import check_mask, check_query, check_text
from policy import tokens
from policy.credentials import credential_record
from policy.model import IntegrationRecord, KeptRecord
from policy.ports import IntegrationStore, IntegrationType, KeptDeliveries
from policy.secretbox import SecretBox

log = logging.getLogger(__name__)

WEBHOOK_SECRET = "webhook_secret"  # the secret a sender signs (or authenticates) with
# Sealed with its secrets, never among the names shown: the integration's own API key, and the
# webhook secret before the last rotation.
_INTERNAL = "\x00"
_API_KEY = _INTERNAL + "api_key"
_PREVIOUS = _INTERNAL + "previous"
DEFAULT_GRACE = timedelta(days=1)
MAX_GRACE = timedelta(days=7)
MAX_SECRETS = 16
MAX_SECRET_BYTES = 8192
MAX_SETTINGS_BYTES = 64 * 1024
_SECRET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ID = re.compile(r"^int_[0-9a-f]{24}$")
MAX_KEPT_PAGE = 500
MAX_PLATFORM_PAGE = 500
UPDATABLE = frozenset({"display_name", "settings", "disabled", "secrets"})


def load_types() -> dict[str, IntegrationType]:
    """The integration types installed adapters provide (entry point group lily.adapters)."""
    found: dict[str, IntegrationType] = {}
    for ep in entry_points(group="lily.adapters"):
        kind = ep.load()
        found[kind.name] = kind
    return found


def new_secret(kind: IntegrationType) -> str:
    """A webhook secret Lily makes: for a type that signs what Lily sends, as Standard
    Webhooks writes its secrets (whsec_ and 32 random bytes in base64)."""
    if kind.signs:
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Draft:
    """An integration as a caller describes it."""

    type: str = ""
    display_name: str = ""
    settings: dict[str, Any] | None = None
    secrets: Mapping[str, str] | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Resolved:
    """What an adapter needs to serve an integration."""

    integration: IntegrationRecord
    secrets: dict[str, str]
    webhook_secrets: list[str]  # the current one, then the previous while its grace lasts
    api_key: str


class Integrations:
    def __init__(
        self,
        store: IntegrationStore,
        box: SecretBox | None,
        types: Mapping[str, IntegrationType],
        *,
        system_tenant: str,
        on_links: Callable[[], Awaitable[None]],
        kept: KeptDeliveries | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._kept = kept
        self._box = box
        self.types = dict(types)
        self._system = system_tenant
        self._on_links = on_links  # the role links changed: apply them here at once
        self._now = now

    def webhook_path(self, i: IntegrationRecord) -> str:
        kind = self.types.get(i.type)
        return f"/webhook/{kind.webhook}/{i.integration_id}" if kind and kind.webhook else ""

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise FailedPrecondition(
                "integrations need Lily's secret key (LILY_SECRET_KEY), to encrypt their "
                "secrets at rest; `lily up` makes one in its data directory"
            )
        return self._box

    def _open(self, i: IntegrationRecord) -> dict[str, str]:
        return self._sealer().open(i.sealed, f"{i.tenant_id}/{i.integration_id}")

    def _seal(self, i: IntegrationRecord, values: dict[str, str]) -> IntegrationRecord:
        sealed = self._sealer().seal(values, f"{i.tenant_id}/{i.integration_id}")
        names = tuple(sorted(n for n in values if not n.startswith(_INTERNAL)))
        return replace(i, sealed=sealed, secret_names=names)

    # -- checks

    def _check(self, draft: Draft, problems: list[FieldViolation], *, type_: str) -> None:
        check_text("integration.display_name", draft.display_name, 200, problems)
        kind = self.types.get(type_)
        if draft.settings is not None:
            if len(orjson.dumps(draft.settings)) > MAX_SETTINGS_BYTES:
                problems.append(
                    FieldViolation("integration.settings", f"over {MAX_SETTINGS_BYTES} bytes")
                )
            elif kind is not None:
                for path, what in kind.check_settings(draft.settings):
                    where = f"integration.settings.{path}" if path else "integration.settings"
                    problems.append(FieldViolation(where, what))
        given = dict(draft.secrets or {})
        if len(given) > MAX_SECRETS:
            problems.append(FieldViolation("integration.secrets", f"at most {MAX_SECRETS}"))
        for name, value in given.items():
            if not _SECRET_NAME.fullmatch(name):
                problems.append(
                    FieldViolation(
                        f"integration.secrets[{name[:64]!r}]",
                        "a secret's name is a-z, 0-9 and _, starting with a letter",
                    )
                )
            elif len(value.encode()) > MAX_SECRET_BYTES:
                problems.append(FieldViolation(f"integration.secrets[{name!r}]", "over 8192 bytes"))

    async def _mine(self, principal: Principal, integration_id: str) -> IntegrationRecord:
        """The caller's tenant's integration; NotFound for any other (another tenant's too)."""
        found = None
        if _ID.fullmatch(integration_id):
            found = await self._store.integration(integration_id)
        if found is None or found.tenant_id != principal.tenant_id:
            raise NotFound(
                f"integration {integration_id[:64]!r} not found",
                metadata={"integration_id": integration_id[:64]},
            )
        return found

    async def _save(self, new: IntegrationRecord, read: IntegrationRecord) -> None:
        """Stores `new` unless the integration changed since `read` was read (Aborted)."""
        if not await self._store.update_integration(new, read.updated_at):
            raise Aborted(
                f"integration {read.integration_id!r} was changed meanwhile; read it and try again"
            )

    # -- the API

    async def create(self, principal: Principal, draft: Draft) -> tuple[IntegrationRecord, str]:
        """The new integration, and the webhook secret to give its sender ("" for a type that
        takes no webhooks)."""
        problems: list[FieldViolation] = []
        kind = self.types.get(draft.type)
        if kind is None:
            known = ", ".join(sorted(self.types)) or "none installed"
            problems.append(FieldViolation("integration.type", f"must be one of: {known}"))
        self._check(draft, problems, type_=draft.type)
        if problems:
            raise InvalidArgument(problems)
        assert kind is not None
        self._sealer()  # nothing is made without the key to seal its secrets
        now = self._now()
        integration_id = "int_" + uuid.uuid4().hex[:24]
        key = tokens.new_api_key()
        credential, links = credential_record(
            principal,
            "API_KEY",
            key,
            f"integration:{integration_id}",
            [kind.role],
            f"the {kind.name} integration {integration_id}",
        )
        values = {k: v for k, v in (draft.secrets or {}).items() if v}
        webhook_secret = ""
        if kind.webhook or kind.signs:
            webhook_secret = values.setdefault(WEBHOOK_SECRET, new_secret(kind))
        values[_API_KEY] = key.secret
        record = IntegrationRecord(
            integration_id,
            principal.tenant_id,
            kind.name,
            draft.display_name,
            dict(draft.settings or {}),
            b"",
            (),
            draft.enabled,
            key.credential_id,
            principal.subject,
            now,
            now,
        )
        record = self._seal(record, values)
        await self._store.create_integration(record, credential, links)
        await self._on_links()
        log.info(
            "integration created",
            extra={"integration_id": integration_id, "type": kind.name, "by": principal.subject},
        )
        return record, webhook_secret

    async def get(self, principal: Principal, integration_id: str) -> IntegrationRecord:
        return await self._mine(principal, integration_id)

    async def of_tenant(self, principal: Principal, type_: str) -> list[IntegrationRecord]:
        check_query(type=(type_, 64))
        return await self._store.integrations(principal.tenant_id, type_)

    async def update(
        self, principal: Principal, integration_id: str, draft: Draft, paths: Sequence[str]
    ) -> IntegrationRecord:
        problems: list[FieldViolation] = []
        check_mask(paths, UPDATABLE, problems)
        current = await self._mine(principal, integration_id)
        self._check(draft, problems, type_=current.type)
        if problems:
            raise InvalidArgument(problems)
        new = replace(current, updated_at=self._now())
        if "display_name" in paths:
            new = replace(new, display_name=draft.display_name)
        if "settings" in paths:
            new = replace(new, settings=dict(draft.settings or {}))
        if "disabled" in paths:
            new = replace(new, enabled=draft.enabled)
        if "secrets" in paths:
            values = self._open(current)
            for name, value in (draft.secrets or {}).items():
                if value:
                    values[name] = value
                else:
                    values.pop(name, None)
            new = self._seal(new, values)
        await self._save(new, current)
        return new

    async def rotate(
        self, principal: Principal, integration_id: str, secret: str, grace_seconds: int
    ) -> tuple[IntegrationRecord, str, datetime]:
        problems: list[FieldViolation] = []
        grace = timedelta(seconds=grace_seconds) if grace_seconds else DEFAULT_GRACE
        if grace_seconds < 0 or grace > MAX_GRACE:
            problems.append(FieldViolation("grace_seconds", "must be between 0 and 604800"))
        if len(secret.encode()) > MAX_SECRET_BYTES:
            problems.append(FieldViolation("webhook_secret", "over 8192 bytes"))
        current = await self._mine(principal, integration_id)
        kind = self.types.get(current.type)
        if kind is None or not (kind.webhook or kind.signs):
            problems.append(
                FieldViolation(
                    "integration_id", f"a {current.type} integration has no webhook secret"
                )
            )
        if problems:
            raise InvalidArgument(problems)
        assert kind is not None
        now = self._now()
        values = self._open(current)
        made = secret or new_secret(kind)
        previous = values.get(WEBHOOK_SECRET, "")
        values[WEBHOOK_SECRET] = made
        if previous:
            values[_PREVIOUS] = previous
        until = now + grace
        new = self._seal(
            replace(current, updated_at=now, secret_rotated_at=now, previous_secret_until=until),
            values,
        )
        await self._save(new, current)
        log.info("integration secret rotated", extra={"integration_id": integration_id})
        return new, made, until

    async def delete(self, principal: Principal, integration_id: str) -> None:
        current = await self._mine(principal, integration_id)
        if not await self._store.delete_integration(current.integration_id, self._now()):
            raise NotFound(f"integration {integration_id!r} not found")
        log.info("integration deleted", extra={"integration_id": integration_id})

    # -- what its adapter kept rather than mapped

    def _kept_deliveries(self) -> KeptDeliveries:
        if self._kept is None:
            raise FailedPrecondition("this server does not reach the adapter runtime's streams")
        return self._kept

    async def kept(
        self, principal: Principal, integration_id: str, kind: str, after: int, limit: int
    ) -> list[KeptRecord]:
        limit = page_size(limit, MAX_KEPT_PAGE, 50)
        current = await self._mine(principal, integration_id)
        return await self._kept_deliveries().find(
            current.tenant_id, current.integration_id, kind, after, limit
        )

    async def replay(
        self, principal: Principal, integration_id: str, kind: str, sequences: Sequence[int]
    ) -> int:
        if len(sequences) > MAX_KEPT_PAGE:
            raise InvalidArgument(
                [FieldViolation("sequences", f"at most {MAX_KEPT_PAGE} at a time")]
            )
        current = await self._mine(principal, integration_id)
        replayed = await self._kept_deliveries().replay(
            current.tenant_id, current.integration_id, kind, sequences
        )
        log.info(
            "kept deliveries replayed",
            extra={"integration_id": integration_id, "replayed": replayed, "by": principal.subject},
        )
        return replayed

    def _platform_only(self, principal: Principal) -> None:
        if principal.tenant_id != self._system:
            raise PermissionDenied(
                "only the adapter runtime of the platform sees every tenant's integrations"
            )

    async def of_platform(
        self, principal: Principal, type_: str, after: str, limit: int
    ) -> list[IntegrationRecord]:
        """Integrations of every tenant, in id order, a page at a time: for the adapter
        runtime (a principal of the system tenant only)."""
        self._platform_only(principal)
        limit = page_size(limit, MAX_PLATFORM_PAGE)
        check_query(type=(type_, 64), after_integration_id=(after, 64))
        return await self._store.platform_integrations(type_, after, limit)

    async def resolve(self, principal: Principal, integration_id: str) -> Resolved:
        """An integration of any tenant with its secrets: for the adapter runtime, a
        principal of the system tenant only (a tenant's own role assignments cannot reach
        another tenant's secrets)."""
        self._platform_only(principal)
        found = None
        if _ID.fullmatch(integration_id):
            found = await self._store.integration(integration_id)
        if found is None:
            raise NotFound(f"integration {integration_id[:64]!r} not found")
        values = self._open(found)
        api_key = values.pop(_API_KEY, "")
        previous = values.pop(_PREVIOUS, "")
        webhook = [values[WEBHOOK_SECRET]] if values.get(WEBHOOK_SECRET) else []
        until = found.previous_secret_until
        if previous and until is not None and until > self._now():
            webhook.append(previous)
        return Resolved(found, values, webhook, api_key)

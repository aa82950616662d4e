"""Enforcement receipts: what each enforcement target (an integration whose adapter closes
restricted assets in an engine downstream, e.g. a PostgreSQL warehouse) did with each asset's
restricted tags. The target's adapter files them with the integration's own credential; a
tenant's admin or steward reads them ("enforced at version N at time T"); each one kept is
also an event, lily.<tenant>.enforcement.<applied | failed | drifted>."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

from core.domain.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from core.metadata.pagination import page_size
from core.requestctx import Principal
from core.wire.validation import check_query, check_text
from policy.integrations import Integrations
from policy.model import ReceiptRecord
from policy.ports import EnforcementStore, EventPublisher

log = logging.getLogger(__name__)

MAX_RECEIPTS = 1000
MAX_PAGE = 1000
OUTCOMES = frozenset({"applied", "failed", "drifted"})
STATES = frozenset({"open", "closed"})

# (receipt) -> (subject, event id, ChangeEvent bytes): policy/mapping.py's, given by the servicer
Encode = Callable[[ReceiptRecord], tuple[str, str, bytes]]


def event_id(r: ReceiptRecord) -> str:
    """The same receipt filed twice (a retry) is the same event."""
    key = f"{r.integration_id}|{r.asset_id}|{r.applied_at.isoformat()}|{r.outcome}"
    return "enf_" + hashlib.sha256(key.encode()).hexdigest()[:32]


class Enforcement:
    def __init__(
        self,
        store: EnforcementStore,
        integrations: Integrations,
        events: EventPublisher | None = None,
    ) -> None:
        self._store = store
        self._integrations = integrations
        self._events = events

    async def record(
        self,
        principal: Principal,
        integration_id: str,
        receipts: Sequence[ReceiptRecord],
        encode: Encode,
    ) -> int:
        integration = await self._integrations.get(principal, integration_id)
        if not principal.credential_id or principal.credential_id != integration.credential_id:
            raise PermissionDenied("only the integration's own credential files its receipts")
        problems = _problems(receipts)
        if problems:
            raise InvalidArgument(problems)
        mine = [
            replace(r, integration_id=integration.integration_id, tenant_id=integration.tenant_id)
            for r in receipts
        ]
        kept = await self._store.record(mine)
        if kept and self._events is not None:
            await self._events.publish([encode(r) for r in kept])
        return len(kept)

    async def get(self, principal: Principal, integration_id: str, asset_id: str) -> ReceiptRecord:
        integration = await self._integrations.get(principal, integration_id)
        check_query(asset_id=(asset_id, 128))
        found = await self._store.receipt(integration.integration_id, asset_id)
        if found is None:
            raise NotFound(f"no receipt for asset {asset_id[:128]!r} from this target")
        return found

    async def list(
        self,
        principal: Principal,
        integration_id: str,
        outcome: str,
        prefix: str,
        after: str,
        limit: int,
    ) -> list[ReceiptRecord]:
        limit = page_size(limit, MAX_PAGE)
        integration = await self._integrations.get(principal, integration_id)
        check_query(qualified_name_prefix=(prefix, 2048), after_qualified_name=(after, 2048))
        return await self._store.receipts(integration.integration_id, outcome, prefix, after, limit)


def _problems(receipts: Sequence[ReceiptRecord]) -> list[FieldViolation]:
    if len(receipts) > MAX_RECEIPTS:
        return [FieldViolation("receipts", f"at most {MAX_RECEIPTS} a call")]
    problems: list[FieldViolation] = []
    for n, r in enumerate(receipts):
        where = f"receipts[{n}]"
        check_text(f"{where}.asset_id", r.asset_id, 128, problems, required=True)
        check_text(f"{where}.qualified_name", r.qualified_name, 2048, problems, required=True)
        check_text(f"{where}.target_object", r.target_object, 2048, problems)
        check_text(f"{where}.detail", r.detail, 8192, problems)
        if r.outcome not in OUTCOMES:
            problems.append(FieldViolation(f"{where}.outcome", "is required"))
        if r.desired not in STATES:
            problems.append(FieldViolation(f"{where}.desired", "is required"))
        for name, texts in (
            ("statements", r.statements),
            ("taken", r.taken),
            ("restricted_tags", r.restricted_tags),
            ("denied_roles", r.denied_roles),
        ):
            if len(texts) > 1000:
                problems.append(FieldViolation(f"{where}.{name}", "has more than 1000 entries"))
            for k, text in enumerate(texts):
                check_text(f"{where}.{name}[{k}]", text, 16384, problems)
    return problems

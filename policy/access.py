"""core.ports.Access over the policy service: per-asset writes and tag-aware reads for the
principal of the current call."""

from __future__ import annotations

from collections.abc import Collection

from core.domain.model import AssetType
from core.ports import ReadView
from core.requestctx import Principal, principal_ctx
from policy.rules import asset_object
from policy.service import PolicyService


def _principal() -> Principal:
    principal = principal_ctx.get()
    if principal is None:  # the interceptor sets it before any handler runs
        raise RuntimeError("no principal in this call")
    return principal


class PolicyAccess:
    def __init__(self, policy: PolicyService) -> None:
        self._policy = policy
        self._restricted = frozenset(policy.settings.restricted_tags)
        self._refuse = policy.settings.restricted_read == "refuse"

    def may_write(self, asset_type: AssetType, qualified_name: str, method: str) -> bool:
        return self._policy.decisions.may(
            _principal(), asset_object(asset_type, qualified_name), "write", method
        )

    def may_write_all(self, method: str) -> bool:
        return self._policy.decisions.may_all(_principal(), "asset:", "write")

    def read_view(self, tag_names: Collection[str], method: str) -> ReadView:
        restricted = self._restricted.intersection(tag_names)
        if not restricted:
            return "full"
        principal = _principal()
        for tag in sorted(restricted):
            if not self._policy.decisions.decide(principal, f"tag:{tag}", "read").allowed:
                if self._refuse:
                    self._policy.denials.record(
                        principal.tenant_id,
                        principal.subject,
                        method,
                        f"tag:{tag}",
                        "read",
                        "PERMISSION_DENIED",
                        f"needs read on tag:{tag}",
                        "",
                    )
                    return "refused"
                return "redacted"
        return "full"


class OpenAccess:
    """Authentication off: everything, whole."""

    def may_write(self, asset_type: AssetType, qualified_name: str, method: str) -> bool:
        return True

    def may_write_all(self, method: str) -> bool:
        return True

    def read_view(self, tag_names: Collection[str], method: str) -> ReadView:
        return "full"

"""Okta as the identity source of a tenant: its event hooks (users suspended, deactivated,
reactivated; group memberships) and a scheduled reconciliation through its Management API
keep the tenant's directory current (policy/directory.py), so a person Okta deactivates loses
access at once and their roles follow their groups. Signing in with Okta is the core's
(policy/sessions.py: the tenant's OIDC issuer)."""

from adapters.okta.config import OktaSettings
from adapters.okta.inbound import OktaInbound
from adapters.okta.poll import OktaReconciler
from adapters.spec import AdapterType

_HOOKS = OktaInbound()

ADAPTER = AdapterType(
    name="okta",
    role="integration_okta",
    settings=OktaSettings,
    webhook="okta",
    inbound=_HOOKS,
    challenge=_HOOKS,
    poller=OktaReconciler(),
)

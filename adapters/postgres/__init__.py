"""PostgreSQL as an enforcement target: an asset tagged PII or GDPR (its own tag or one
propagated from upstream) is closed, by SELECT privileges, to the roles the target's policy
denies, and opened again to exactly what its owners had granted once the tag is gone."""

from adapters.postgres.config import PostgresTargetSettings
from adapters.postgres.enforce import PostgresEnforcer
from adapters.spec import AdapterType

_ENFORCER = PostgresEnforcer()

ADAPTER = AdapterType(
    name="postgres",
    role="integration_postgres",
    settings=PostgresTargetSettings,
    inbound=_ENFORCER,
    poller=_ENFORCER,
    follower=_ENFORCER,
)

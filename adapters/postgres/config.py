"""The settings of one PostgreSQL enforcement target (a warehouse Lily closes restricted
columns and tables in)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_TAGS = ("PII", "GDPR")


class Rule(BaseModel):
    """Which restricted tags take reading away from which roles, and which roles keep it."""

    model_config = ConfigDict(extra="forbid")

    tags: list[str] = Field(default_factory=lambda: list(DEFAULT_TAGS), min_length=1)
    deny: list[str] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        description='Roles that lose SELECT; "*": every role granted it on the object '
        "(PUBLIC included), but its owner and `keep`.",
    )
    keep: list[str] = Field(default_factory=list, description="Roles that keep reading it.")


class PostgresTargetSettings(BaseModel):
    """The connection (its password is the secret `password`), the qualified names of its
    objects in Lily, and the policy: rules, and what to do with drift."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Host name, or a Unix socket directory.")
    port: int = Field(5432, ge=1, le=65535)
    database: str = Field(min_length=1)
    user: str = Field(min_length=1, description="A superuser, or the owner of the objects.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    prefix: str = Field(
        description="The qualified-name prefix of this database's objects in Lily, e.g. "
        "postgres://warehouse:5432/sales: <prefix>/<schema>/<table>[/<column>]."
    )
    rules: list[Rule] = Field(default_factory=lambda: [Rule()], min_length=1)
    revert_drift: bool = Field(
        True, description="Whether a reconciliation puts back what someone changed by hand."
    )
    reconcile_interval_seconds: float = Field(300.0, ge=10, le=86400)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if "://" not in value or value.endswith("/"):
            raise ValueError("must look like scheme://authority/database, without a final /")
        return value

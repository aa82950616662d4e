"""The settings of one Monte Carlo integration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class MonteCarloSettings(BaseModel):
    """How Monte Carlo's tables are named in Lily, and how its API is polled. Secrets (set on
    the integration, never here): `webhook_secret` (signs its webhooks; Lily makes one),
    `mcd_id` and `mcd_token` (an API key, for polling)."""

    model_config = ConfigDict(extra="forbid")

    warehouses: dict[str, str] = Field(
        default_factory=dict,
        description="Monte Carlo warehouse (its uuid or name) -> the qualified-name prefix of "
        "its tables in Lily, e.g. snowflake://acct: table db:schema.orders becomes "
        "snowflake://acct/db/schema/orders.",
    )
    default_prefix: str = Field(
        "", description="The prefix for tables of a warehouse not in `warehouses`."
    )
    api_url: str = Field(
        "https://api.getmontecarlo.com/graphql",
        pattern=r"^https?://\S+$",
        description="Monte Carlo's GraphQL API.",
    )
    poll_interval_seconds: float = Field(
        300.0, ge=10, le=86400, description="How often incidents are polled (with an API key)."
    )
    poll_lookback_hours: float = Field(
        24.0,
        ge=0,
        le=24 * 59,  # Monte Carlo answers for a range of at most two months
        description="How far back the first poll reads (later ones go on from where the last "
        "stopped).",
    )

    @field_validator("warehouses")
    @classmethod
    def _prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for warehouse, prefix in value.items():
            _check_prefix(prefix, f"the prefix of {warehouse!r}")
        return value

    @field_validator("default_prefix")
    @classmethod
    def _default(cls, value: str) -> str:
        return _check_prefix(value, "it") if value else value


def _check_prefix(prefix: str, what: str) -> str:
    if "://" not in prefix or prefix.endswith("/"):
        raise ValueError(f"{what} must look like scheme://authority[/path], without a final /")
    return prefix

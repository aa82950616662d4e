"""Lily's settings, from LILY_* environment variables (and `lily up` flags)."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.domain.model import TENANT_ID_PATTERN, AssetType, Consistency


class CassandraSettings(BaseModel):
    """The Cassandra cluster assets are kept in (DistributedStores)."""

    model_config = ConfigDict(extra="forbid")

    hosts: str = Field(
        "127.0.0.1:9042", description="Contact points, host:port[,host:port] (one port for all)."
    )
    keyspace: str = Field(
        "lily",
        pattern=r"^[a-z][a-z0-9_]{0,47}$",
        description="The shared cell's keyspace (created and migrated at start).",
    )
    replication_factor: int = Field(1, ge=1, le=9, description="For a keyspace Lily creates.")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds per Cassandra request.")

    @field_validator("hosts")
    @classmethod
    def _contact_points(cls, value: str) -> str:
        ports = set()
        for part in value.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{part.strip()!r} is not host:port")
            ports.add(port)
        if len(ports) > 1:
            raise ValueError("all contact points must share one port")
        return value


class LocalStores(BaseModel):
    """The `local` profile: assets, their outbox and lineage in Postgres (Lily's own: the
    embedded one, or `postgres_dsn`). The shared cell uses the public schema; each DEDICATED
    tenant's cell a schema of its own, with a pool of its own."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["local"] = "local"
    dedicated_pool_size: int = Field(
        4,
        ge=1,
        le=50,
        description="Postgres connections per DEDICATED tenant (its schema's pool), in each "
        "server process.",
    )


class DistributedStores(BaseModel):
    """The `distributed` profile: assets and their outbox (write intents) in Cassandra,
    lineage in JanusGraph (on Cassandra). Each DEDICATED tenant's cell gets a keyspace and a
    graph of its own (made with JanusGraph's ConfiguredGraphFactory)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["distributed"]
    cassandra: CassandraSettings = Field(default_factory=CassandraSettings)
    janusgraph_url: str = Field(
        "ws://127.0.0.1:8182/gremlin",
        pattern=r"^wss?://[^/\s]+/\S*$",
        description="JanusGraph's Gremlin Server (WebSocket URL).",
    )


# Where a cell's metadata and lineage live, chosen by `type` (core/backends opens them).
Stores = Annotated[LocalStores | DistributedStores, Field(discriminator="type")]


class PluginSettings(BaseModel):
    """A transformation hook a tenant enables (core/transforms): an entry point and how it
    runs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Its entry point's name (e.g. pii, qualified_name).")
    budget_ms: float = Field(
        200.0, gt=0, le=60_000, description="Time each call may take, in milliseconds."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for its factory."
    )


class TransformSettings(PluginSettings):
    on_failure: Literal["reject", "skip"] = Field(
        "reject",
        description="A call that fails or runs out of time: refuse that asset (reject), or "
        "keep it as it was (skip). A transformer's own refusal always refuses.",
    )


class ActionSettings(PluginSettings):
    on_failure: Literal["retry", "skip"] = Field(
        "retry",
        description="A call that fails or runs out of time: the event comes again later (retry;"
        " after 8 tries it goes to the dead letters), or is let go (skip).",
    )


class OidcIssuerSettings(BaseModel):
    """An OIDC provider whose ID or access tokens Lily accepts (e.g. an Okta org's
    authorization server, issuer `https://<org>.okta.com/oauth2/default`)."""

    issuer: str = Field(description="The tokens' `iss`, exactly.")
    audience: str = Field(description="The `aud` tokens must carry (e.g. api://lily).")
    jwks_url: str = Field(
        "", description="Where its keys are; empty reads jwks_uri from its discovery document."
    )
    tenant: str = Field("", description="The tenant of every principal it vouches for, or ...")
    tenant_claim: str = Field("lily_tenant", description="... the claim naming the tenant.")
    roles_claim: str = Field(
        "groups", description="A claim listing roles (Okta groups named after Lily roles)."
    )
    subject_claim: str = Field("sub", description="The claim that names the principal.")
    client_id: str = Field(
        "",
        description="Its OAuth2 client (a native app allowed the Device Authorization grant) "
        "people sign in to Lily with (`lily login`, StartLogin); empty: no sign-in through "
        "Lily. The tenant must be fixed (`tenant`) or named by the ID token's `tenant_claim`.",
    )
    client_secret: SecretStr = Field(
        SecretStr(""), description="That client's secret, if it is a confidential one."
    )
    scopes: str = Field(
        "openid profile email groups offline_access",
        description="What a sign-in asks for: the ID token's profile and groups, and a "
        "refresh token (offline_access) that keeps the session refreshable.",
    )
    login_subject_claim: str = Field(
        "preferred_username",
        description="The ID token claim that names a person who signs in (their login, as "
        "Okta's access tokens name them); its `sub` if absent.",
    )


class AuthSettings(BaseModel):
    """Authentication and authorization (policy/)."""

    enabled: bool = Field(
        True,
        description="False serves every call as an admin of `system_tenant` with no credential "
        "at all: only for measuring what authentication costs. Never in production.",
    )
    system_tenant: str = Field(
        "default",
        pattern=TENANT_ID_PATTERN,
        description="The tenant `lily up` creates first; its admins are platform admins "
        "(create and list tenants).",
    )
    issuer: str = Field("urn:lily", description="Lily's own token issuer (`iss`).")
    audience: str = Field("lily", description="The audience of Lily's own tokens (`aud`).")
    token_ttl: int = Field(900, ge=60, le=86400, description="Seconds a token Lily issues lasts.")
    leeway: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on exp and nbf.")
    oidc: list[OidcIssuerSettings] = Field(
        default_factory=list, description="OIDC issuers to trust (JSON in LILY_AUTH__OIDC)."
    )
    jwks_refresh: float = Field(
        30.0, ge=1, description="Least seconds between fetches of an issuer's keys."
    )
    session_ttl: int = Field(
        7 * 86400,
        ge=300,
        le=90 * 86400,
        description="Seconds a signed-in session can be refreshed for, from its sign-in.",
    )
    restricted_tags: list[str] = Field(
        default_factory=lambda: ["PII", "GDPR"],
        description="Tags whose assets need `read` on `tag:<TAG>` (pii_reader) to be read.",
    )
    restricted_read: Literal["redact", "refuse"] = Field(
        "redact",
        description="What a reader without that permission gets: the asset with its "
        "description, attributes, business terms and external id blanked (redact), or "
        "PERMISSION_DENIED (refuse; left out of searches and lineage).",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LILY_", env_nested_delimiter="__", extra="ignore")

    stores: Stores = Field(
        default_factory=LocalStores,
        description="Where metadata and lineage are kept: `type` local (Postgres) or "
        "distributed (Cassandra and JanusGraph), with that type's settings "
        "(LILY_STORES__TYPE, LILY_STORES__CASSANDRA__HOSTS, ...). Both profiles use Postgres "
        "and NATS for the rest.",
    )
    data_dir: Path = Field(
        Path(".lily"), description="Where the embedded Postgres and NATS keep data."
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="32 random bytes, base64: encrypts integrations' secrets at rest. Keep it "
        "apart from the database (a secret manager). `lily up` makes one in its data directory "
        "(secret.key) when none is given; without one, integrations cannot be created.",
    )
    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server listens on.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    http_host: str = Field("127.0.0.1", description="Address the REST gateway listens on.")
    http_port: int = Field(
        8080, ge=0, le=65535, description="REST gateway port (0 picks a free one)."
    )
    gateway_timeout: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Deadline of a gateway call whose client sent no Grpc-Timeout header.",
    )
    postgres_dsn: str = Field("", description="Postgres to use; empty starts the embedded one.")
    nats_url: str = Field("", description="NATS to use; empty starts the embedded nats-server.")
    max_message_bytes: int = Field(16 * 1024 * 1024, description="Largest gRPC message accepted.")
    consistency: dict[AssetType, Consistency] = Field(
        default_factory=dict,
        description="Overrides of the consistency class per asset type, e.g. "
        '{"COLUMN": "STRONG"} (JSON in LILY_CONSISTENCY).',
    )
    ingest_batch: int = Field(
        1000, ge=1, le=10000, description="Work items the ingest worker writes per batch."
    )
    workers: bool = Field(
        True,
        description="Run background work: the outbox relay, and the ingest worker unless "
        "it runs in processes of its own.",
    )
    worker_processes: int = Field(
        2,
        ge=0,
        le=16,
        description="Ingest-worker processes `lily up` starts beside the server (`lily worker`); "
        "0 runs the ingest worker inside the server process. Two by default: once a bulk "
        "stream has been accepted, the queued columns are written on two cores, not one.",
    )
    propagate_tags: list[str] = Field(
        default_factory=lambda: ["PII", "GDPR"],
        description="Tags that propagate downstream in lineage (JSON in LILY_PROPAGATE_TAGS).",
    )
    propagation_depth: int = Field(
        10, ge=1, le=50, description="How many steps downstream a tag propagates."
    )
    propagation_chunk: int = Field(
        500, ge=1, le=4000, description="Assets per propagation transaction (and progress step)."
    )
    propagation_parallel: int = Field(
        4, ge=1, le=32, description="Transactions of one propagation run side by side."
    )
    quality_every: float = Field(
        3600.0,
        ge=1,
        le=7 * 24 * 3600,
        description="Seconds between scheduled passes of each data-quality rule over the assets "
        "it covers (one Lily instance runs each pass).",
    )
    transforms: dict[str, list[TransformSettings]] = Field(
        default_factory=dict,
        description="Pre-ingest transformers per tenant, in order (its id, or `*` for every "
        'tenant without its own list), e.g. {"*": [{"name": "pii"}]} (JSON in '
        "LILY_TRANSFORMS).",
    )
    actions: dict[str, list[ActionSettings]] = Field(
        default_factory=dict,
        description="Post-consume actions per tenant (its id, or `*`), run on its change "
        "events (JSON in LILY_ACTIONS).",
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="Authentication and authorization."
    )
    log_level: str = Field("INFO", description="Root log level.")
    shutdown_grace: float = Field(5.0, description="Seconds in-flight RPCs get on shutdown.")

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_variables(cls, values: Any) -> Any:
        """A variable an older Lily read is refused, not silently ignored (its deployment
        would otherwise start on other stores than it names)."""
        for name in sorted(os.environ):
            for old, new in _RENAMED.items():
                if name.upper().startswith(old):
                    raise ValueError(
                        f"{name} is no longer read: set {new}{name[len(old) :].upper()} instead"
                    )
        return values

    @field_validator("secret_key")
    @classmethod
    def _a_key(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value().strip()
        if raw:
            try:
                size = len(base64.urlsafe_b64decode(raw.encode() + b"=="))
            except (binascii.Error, ValueError):
                raise ValueError("is not base64") from None
            if size != 32:
                raise ValueError(f"must be 32 bytes, base64 (it is {size} bytes)")
        return value

    @field_validator("consistency", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        if isinstance(value, dict):
            try:
                return {
                    (AssetType[k] if isinstance(k, str) else k): (
                        Consistency[v] if isinstance(v, str) else v
                    )
                    for k, v in value.items()
                }
            except KeyError as exc:
                raise ValueError(f"unknown asset type or consistency class {exc}") from exc
        return value


# Variables of an older Lily: the prefix it read, and the one that says the same now.
_RENAMED = {
    "LILY_PROFILE": "LILY_STORES__TYPE",
    "LILY_CASSANDRA__": "LILY_STORES__CASSANDRA__",
    "LILY_JANUSGRAPH_URL": "LILY_STORES__JANUSGRAPH_URL",
    "LILY_DEDICATED_POOL_SIZE": "LILY_STORES__DEDICATED_POOL_SIZE",
}


def describe_errors(exc: ValidationError) -> list[str]:
    """Each problem of a ValidationError of Settings as one line naming the setting and its
    environment variable: `stores.cassandra.hosts (LILY_STORES__CASSANDRA__HOSTS): ...`."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if loc[:1] == ["stores"] and loc[1:2] and loc[1] in _STORE_TYPES:
            del loc[1]  # the union's tag, not a field
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "union_tag_not_found":
            loc.append("type")
            message = f"is required: one of {', '.join(sorted(_STORE_TYPES))}"
        elif error["type"] == "union_tag_invalid":
            loc.append("type")
            message = (
                f"is {error['input'].get('type')!r}, not one of {', '.join(sorted(_STORE_TYPES))}"
            )
        if not loc:  # about the settings as a whole (a renamed variable)
            lines.append(message)
            continue
        env = "LILY_" + "__".join(loc).upper()
        lines.append(f"{'.'.join(loc)} ({env}): {message}")
    return lines


_STORE_TYPES = tuple(
    get_args(m.model_fields["type"].annotation)[0] for m in (LocalStores, DistributedStores)
)

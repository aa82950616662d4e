"""The built-in qualified-name normaliser (transformer `qualified_name`): one spelling for
one asset, whichever scraper names it. `POSTGRESQL://Host:5432//db/public/Orders/` and
`postgres://host/db/public/Orders` are the same table, and get the same asset id once both
are normalised.

It lowercases the scheme and the host, spells a scheme one way (`aliases`), drops a port
that is the scheme's default (`default_ports`), collapses repeated slashes and drops a
trailing one; with `case` ("lower" or "upper") it also folds the path (for engines whose
identifiers are case-insensitive, e.g. Snowflake's upper case). The parent's name is
normalised the same way."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from core.transforms import AssetDraft

ALIASES = {"postgresql": "postgres", "psql": "postgres", "mssql": "sqlserver"}
DEFAULT_PORTS = {
    "postgres": 5432,
    "mysql": 3306,
    "sqlserver": 1433,
    "oracle": 1521,
    "redshift": 5439,
    "http": 80,
    "https": 443,
}
_NAME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>[^/]*)(?P<path>.*)$")
_SLASHES = re.compile(r"/{2,}")


class QualifiedNameNormaliser:
    def __init__(
        self,
        case: str = "keep",
        aliases: Mapping[str, str] | None = None,
        default_ports: Mapping[str, int] | None = None,
    ) -> None:
        if case not in ("keep", "lower", "upper"):
            raise ValueError(f"case must be keep, lower or upper (not {case!r})")
        self._case = case
        self._aliases = {**ALIASES, **(aliases or {})}
        self._ports = {**DEFAULT_PORTS, **(default_ports or {})}

    def normalise(self, name: str) -> str:
        m = _NAME.match(name)
        if m is None:
            return name  # not <scheme>://...: left as it is
        scheme = m["scheme"].lower()
        scheme = self._aliases.get(scheme, scheme)
        host = m["host"].lower()
        if ":" in host:
            hostname, _, port = host.rpartition(":")
            if port.isdigit() and int(port) == self._ports.get(scheme):
                host = hostname
        path = _SLASHES.sub("/", m["path"]).rstrip("/")
        if self._case == "lower":
            path = path.lower()
        elif self._case == "upper":
            path = path.upper()
        return f"{scheme}://{host}{path}"

    async def transform(self, tenant_id: str, draft: AssetDraft) -> AssetDraft:
        name = self.normalise(draft.qualified_name)
        parent = self.normalise(draft.parent_qualified_name) if draft.parent_qualified_name else ""
        if name == draft.qualified_name and parent == draft.parent_qualified_name:
            return draft
        return replace(draft, qualified_name=name, parent_qualified_name=parent, wire=b"")

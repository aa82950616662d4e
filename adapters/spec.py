"""What an adapter tells Lily about the integrations it serves: its type's name, the built-in
role its integrations' credentials get, its webhook route, and its settings (a pydantic model,
checked when an integration is created or changed). Registered under the `lily.adapters`
entry point group (pyproject.toml), which is how the integration registry finds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, slots=True)
class AdapterType:
    name: str
    role: str
    settings: type[BaseModel]
    webhook: str = ""  # its route's segment: /webhook/<webhook>/<integration id>

    def check_settings(self, settings: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            self.settings.model_validate(settings)
        except ValidationError as exc:
            return [
                (".".join(str(part) for part in e["loc"]), e["msg"].removeprefix("Value error, "))
                for e in exc.errors()
            ]
        return []

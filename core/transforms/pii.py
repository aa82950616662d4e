"""The built-in PII classifier (transformer `pii`): tags a column or BI field as PII from its
name and its data type alone (no data is read), with a RULE tag whose value says why, e.g.
`email: name customer_email, type varchar`. Propagation downstream and enforcement in the
warehouse take it from there, as from any PII tag.

A name is split into words (snake_case, camelCase, kebab-case, dotted) and matched against
the kinds below; a kind also needs a data type it can have, when the type is known
(attributes `data_type` or `type`): `has_email` (a boolean) or `email_count` (an integer) is
not an email address. Words that say the column holds a flag, count or kind of the thing
(`is`, `has`, `count`, `verified`, `domain`, `type`, ...) keep it from matching."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from core.transforms import AssetDraft, AssetType, TagAssignment

_TEXT = ("char", "text", "string", "varchar", "clob", "variant", "json", "str")
_NUMBER = ("int", "number", "numeric", "decimal", "bigint")
_DATE = ("date", "time")
# kind: (name words, as a regex of whole words; the data types it may have)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "email": (r"e_?mails?(_address|_addr)?", _TEXT),
    "phone": (
        r"(phone|telephone|tel|mobile|cell_?phone|msisdn|fax)(_number|_no|_nr)?",
        _TEXT + _NUMBER,
    ),
    "national_id": (
        r"ssn|social_security(_number|_no)?|national_(id|insurance)(_number|_no)?|nino|"
        r"tax_?(id|number)|tin|passport(_number|_no)?|drivers?_licen[cs]e(_number|_no)?|"
        r"personal_?(id|number)|aadhaar|cpf|dni|nric|pesel|bsn|sofinummer|steuer_?id",
        _TEXT + _NUMBER,
    ),
    "iban": (r"iban|bank_account(_number|_no)?|account_number|routing_number", _TEXT + _NUMBER),
    "card_number": (r"(credit_?)?card_(number|no|nr)|ccn|pan|cvv|cvc", _TEXT + _NUMBER),
    "date_of_birth": (r"dob|date_of_birth|birth_?date|birthday", _DATE + _TEXT),
    "person_name": (r"(first|last|given|family|full|middle|maiden)_?name|surname", _TEXT),
    "address": (r"(street|home|postal|billing|shipping)_?address|street|postcode|zip_?code", _TEXT),
    "ip_address": (r"ip(_?address|v4|v6)?|client_ip|remote_addr", (*_TEXT, "inet")),
}
_NOT = re.compile(
    r"(^|_)(is|has|count|cnt|num|total|verified|valid|enabled|flag|opt_?in|status|type|domain|"
    r"provider|template|format|country|hash|hashed|masked|length|len)(_|$)"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")
FIELDS = frozenset({AssetType.COLUMN, AssetType.BI_FIELD})


def words(name: str) -> str:
    """`customerEmail-Address` -> `customer_email_address`."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


class PiiClassifier:
    """Options: `tag` (default PII), `kinds` (default: all of KINDS), `propagate` (mark the
    tag to travel downstream even if it is not a configured propagating tag)."""

    def __init__(
        self, tag: str = "PII", kinds: Iterable[str] | None = None, propagate: bool = False
    ) -> None:
        chosen = list(KINDS) if kinds is None else list(kinds)
        unknown = sorted(set(chosen) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {sorted(KINDS)}")
        self._tag = tag
        self._propagate = propagate
        self._pattern = re.compile(
            "|".join(f"(?:^|_)(?P<{k}>{KINDS[k][0]})(?:_|$)" for k in chosen)
        )

    def classify(self, name: str, data_type: str) -> tuple[str, str] | None:
        """(kind, why) of a column named `name` of type `data_type` ('' if unknown)."""
        said = words(name)
        if not said or _NOT.search(said):
            return None
        found = self._pattern.search(said)
        if found is None or found.lastgroup is None:
            return None
        kind = found.lastgroup
        kind_type = data_type.lower()
        if kind_type and not any(t in kind_type for t in KINDS[kind][1]):
            return None
        why = f"name {name}" + (f", type {data_type}" if data_type else "")
        return kind, why

    async def transform(self, tenant_id: str, draft: AssetDraft) -> AssetDraft:
        if draft.asset_type not in FIELDS:
            return draft
        name = draft.name or draft.qualified_name.rsplit("/", 1)[-1]
        data_type = ""
        if draft.attributes:
            data_type = draft.attributes.get("data_type") or draft.attributes.get("type", "")
        found = self.classify(name, data_type)
        if found is None:
            return draft
        kind, why = found
        tag = TagAssignment(self._tag, f"{kind}: {why}"[:1024], (), self._propagate)
        kept = tuple(t for t in draft.rule_tags if t.name != self._tag)
        return replace(draft, rule_tags=(*kept, tag), wire=b"")

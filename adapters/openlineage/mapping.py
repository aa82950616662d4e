"""OpenLineage events -> the assets and lineage Lily should hold. Pure functions: no I/O.

The current spec (openlineage.io/spec): a RunEvent (`eventType`, `eventTime`, `run.runId`,
`job`, `inputs`, `outputs`), a JobEvent (`eventTime`, `job`, `inputs`, `outputs`) or a
DatasetEvent (`eventTime`, `dataset`); each with `producer` and `schemaURL`. Datasets are
named by OpenLineage's naming spec (openlineage.io/docs/spec/naming): a namespace that says
where (`postgres://host:5432`, `snowflake://org-account`, `bigquery`, `s3://bucket`) and a
name within it (`db.schema.table`, `project.dataset.table`, `path/to/file`); here that is the
qualified name `<namespace>/<name's parts>` (`postgres://host:5432/db/schema/table`), or the
integration's own prefix for a namespace (`settings.namespaces`). Jobs become PIPELINE assets
(`openlineage://<job namespace>/<job name>`); each input flows into the job and the job into
each output; the schema facet gives a dataset's columns, columnLineage column-level edges,
ownership and documentation their owners and description. A run that COMPLETEs counts as one
query of each dataset it read (usage, in the hour of its event time, once per run id: what
the data-quality rules read).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from adapters.openlineage.config import OpenLineageSettings

MAX_DATASETS = 500
MAX_FIELDS = 2000


class BadEvent(ValueError):
    """An event that is not one: `path` names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True, slots=True)
class AssetSpec:
    qualified_name: str
    kind: str  # TABLE | COLUMN | PIPELINE
    name: str
    description: str = ""
    owners: tuple[str, ...] = ()
    parent: str = ""
    data_type: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """What an event says: assets (each once), edges (upstream, downstream), and when."""

    event_time: datetime
    assets: list[AssetSpec] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    # Of a run that completed: its id, and the datasets it read (their usage: one query each)
    run_id: str = ""
    reads: list[str] = field(default_factory=list)


def _dict(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise BadEvent(path, "must be an object")
    return value


def _str(value: Any, path: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadEvent(path, "must be a non-empty string" if required else "must be a string")
    return value.strip()


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadEvent(path, "must be an array")
    if len(value) > MAX_DATASETS:
        raise BadEvent(path, f"at most {MAX_DATASETS}")
    return value


def event_time(event: Mapping[str, Any]) -> datetime:
    text = _str(event.get("eventTime"), "eventTime")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadEvent("eventTime", "must be an ISO 8601 date-time") from None
    if when.tzinfo is None:
        raise BadEvent("eventTime", "must carry its UTC offset")
    return when


def check(event: Any) -> str:
    """The event's kind (run, job, dataset), or BadEvent naming what is wrong."""
    body = _dict(event, "(the body)", required=True)
    event_time(body)
    _str(body.get("producer"), "producer")
    if "dataset" in body and "job" not in body:
        _dataset(body["dataset"], "dataset")
        return "dataset"
    job = _dict(body.get("job"), "job", required=True)
    _str(job.get("namespace"), "job.namespace")
    _str(job.get("name"), "job.name")
    for side in ("inputs", "outputs"):
        for i, d in enumerate(_list(body.get(side), side)):
            _dataset(d, f"{side}[{i}]")
    if "run" in body or "eventType" in body:
        run = _dict(body.get("run"), "run", required=True)
        _str(run.get("runId"), "run.runId")
        return "run"
    return "job"


def _dataset(d: Any, path: str) -> Mapping[str, Any]:
    d = _dict(d, path, required=True)
    _str(d.get("namespace"), f"{path}.namespace")
    _str(d.get("name"), f"{path}.name")
    facets = _dict(d.get("facets"), f"{path}.facets")
    schema = _dict(facets.get("schema"), f"{path}.facets.schema")
    fields = _list(schema.get("fields"), f"{path}.facets.schema.fields")
    if len(fields) > MAX_FIELDS:
        raise BadEvent(f"{path}.facets.schema.fields", f"at most {MAX_FIELDS}")
    for i, f in enumerate(fields):
        _str(_dict(f, f"{path}.facets.schema.fields[{i}]", required=True).get("name"),
             f"{path}.facets.schema.fields[{i}].name")  # fmt: skip
    return d


def dataset_name(namespace: str, name: str, settings: OpenLineageSettings) -> str:
    """A dataset's qualified name in Lily (see the module's docstring)."""
    base = settings.namespaces.get(namespace) or (
        namespace if "://" in namespace else f"{namespace}://"
    )
    path = name.strip("/") if "/" in name else name.replace(".", "/")
    return f"{base}{path}" if base.endswith("://") else f"{base.rstrip('/')}/{path}"


def job_name(namespace: str, name: str) -> str:
    return f"openlineage://{namespace}/{name}"


def _owners(facets: Mapping[str, Any]) -> tuple[str, ...]:
    ownership = facets.get("ownership")
    owners = ownership.get("owners") if isinstance(ownership, Mapping) else None
    names = [o.get("name") for o in owners or [] if isinstance(o, Mapping)]
    return tuple(n.strip() for n in names if isinstance(n, str) and n.strip())[:50]


def _doc(facets: Mapping[str, Any]) -> str:
    doc = facets.get("documentation")
    text = doc.get("description") if isinstance(doc, Mapping) else None
    return text.strip()[:4000] if isinstance(text, str) else ""


def plan(event: Mapping[str, Any], settings: OpenLineageSettings) -> Plan:
    """What a checked event (see check) says Lily should hold."""
    out = Plan(event_time(event))
    seen: set[str] = set()

    def add(spec: AssetSpec) -> None:
        if spec.qualified_name not in seen:
            seen.add(spec.qualified_name)
            out.assets.append(spec)

    def dataset(d: Mapping[str, Any]) -> str:
        facets = d.get("facets") if isinstance(d.get("facets"), Mapping) else {}
        assert isinstance(facets, Mapping)
        qn = dataset_name(d["namespace"].strip(), d["name"].strip(), settings)
        add(AssetSpec(qn, "TABLE", d["name"].strip(), _doc(facets), _owners(facets)))
        schema = facets.get("schema") if isinstance(facets.get("schema"), Mapping) else {}
        for f in schema.get("fields") or []:  # type: ignore[union-attr]
            add(
                AssetSpec(
                    f"{qn}/{f['name'].strip()}",
                    "COLUMN",
                    f["name"].strip(),
                    f.get("description", "") if isinstance(f.get("description"), str) else "",
                    parent=qn,
                    data_type=f.get("type", "") if isinstance(f.get("type"), str) else "",
                )
            )
        lineage = facets.get("columnLineage")
        fields = lineage.get("fields") if isinstance(lineage, Mapping) else None
        for column, how in (fields or {}).items():
            for source in how.get("inputFields", []) if isinstance(how, Mapping) else []:
                if isinstance(source, Mapping) and all(
                    isinstance(source.get(k), str) for k in ("namespace", "name", "field")
                ):
                    upstream = dataset_name(source["namespace"], source["name"], settings)
                    out.edges.append((f"{upstream}/{source['field']}", f"{qn}/{column}"))
        return qn

    if "dataset" in event and "job" not in event:
        dataset(event["dataset"])
        return out
    if event.get("eventType") == "COMPLETE" and isinstance(event.get("run"), Mapping):
        out = replace(out, run_id=event["run"]["runId"].strip())
    job = event["job"]
    job_facets = job.get("facets") if isinstance(job.get("facets"), Mapping) else {}
    assert isinstance(job_facets, Mapping)
    pipeline = job_name(job["namespace"].strip(), job["name"].strip())
    add(AssetSpec(pipeline, "PIPELINE", job["name"].strip(), _doc(job_facets), _owners(job_facets)))
    for d in event.get("inputs") or []:
        read = dataset(d)
        out.edges.append((read, pipeline))
        if out.run_id and read not in out.reads:
            out.reads.append(read)
    for d in event.get("outputs") or []:
        out.edges.append((pipeline, dataset(d)))
    return out

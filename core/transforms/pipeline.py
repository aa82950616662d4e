"""Runs the transformation hooks (core/transforms/__init__.py says what they are): loads the
plug-ins the settings name from their entry points once, at start (an unknown name, or a
factory that fails, stops the start with a clear error), and runs each tenant's transformers
over an ingest's drafts, or its actions over a change event."""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from typing import Any, TypeVar, cast

from lily.v1 import events_pb2 as events_pb

from core.domain.errors import FieldViolation
from core.domain.model import AssetDraft
from core.lifecycle import StartupError
from core.settings import ActionSettings, PluginSettings, TransformSettings
from core.transforms import Action, Reject
from core.wire.common import check_changed

log = logging.getLogger(__name__)

TRANSFORMERS, ACTIONS = "lily.transformers", "lily.actions"
T = TypeVar("T")


Drafts = Sequence[tuple[int, AssetDraft]]  # with their index in the call (or stream)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    plugin: Any
    budget: float  # seconds
    skip: bool  # on failure, keep going without it


def _load(group: str, configured: PluginSettings, kind: str) -> Any:
    found = {ep.name: ep for ep in entry_points(group=group)}
    ep = found.get(configured.name)
    if ep is None:
        known = ", ".join(sorted(found)) or "none installed"
        raise StartupError(f"no {kind} named {configured.name!r} (entry points {group}: {known})")
    try:
        return ep.load()(**configured.options)
    except Exception as exc:
        raise StartupError(f"{kind} {configured.name!r} could not be made: {exc}") from exc


class Pipeline:
    """One tenant's transformers, in order."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = stages

    async def run(
        self, tenant_id: str, drafts: Drafts
    ) -> tuple[list[tuple[int, AssetDraft]], list[tuple[int, AssetDraft, str]]]:
        """The drafts as the transformers leave them, and those they refused (or that failed,
        unless skipped), each with why."""
        items = list(drafts)
        rejected: list[tuple[int, AssetDraft, str]] = []
        for stage in self.stages:
            transform: Callable[[str, AssetDraft], Any] = stage.plugin.transform
            kept: list[tuple[int, AssetDraft]] = []
            for i, draft in items:
                why = ""
                started = time.perf_counter()
                try:
                    out = await within(transform(tenant_id, draft), stage.budget)
                except Reject as refusal:
                    rejected.append((i, draft, f"refused by {stage.name}: {refusal.reason}"))
                    continue
                except TimeoutError:
                    why = f"{stage.name} took longer than its {stage.budget * 1000:g} ms"
                except Exception as exc:  # the plug-in's own failure: its asset's, not the batch's
                    why = f"{stage.name} failed: {type(exc).__name__}: {exc}"[:500]
                else:
                    if out is draft:
                        kept.append((i, draft))
                        continue
                    checked = _checked(draft, out, i)
                    if isinstance(checked, str):
                        why = f"{stage.name} returned an asset that is not valid: {checked}"
                    else:
                        kept.append((i, checked))
                        continue
                if stage.skip:
                    log.warning(
                        "transformer %s skipped for %s: %s (%.1f ms)",
                        stage.name,
                        draft.qualified_name[:200],
                        why,
                        (time.perf_counter() - started) * 1000,
                        extra={"tenant_id": tenant_id},
                    )
                    kept.append((i, draft))
                else:
                    rejected.append((i, draft, why))
            items = kept
        return items, rejected


async def within(call: Coroutine[Any, Any, T], budget: float) -> T:
    """Awaits `call` for at most `budget` seconds once it waits on anything (TimeoutError
    then). Most transformers never wait (a pure function of the draft): those run to their
    end at once, without the cost of a timer for each asset; what runs before a first wait
    cannot be interrupted anyway."""
    try:
        waiting = call.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    return await asyncio.wait_for(_resumed(call, waiting), budget)


@types.coroutine
def _resumed(call: Coroutine[Any, Any, T], waiting: Any) -> Generator[Any, Any, T]:
    """The rest of a coroutine that was started by hand and is waiting on `waiting` (what a
    task runs it as: `yield from`, from where it stands)."""
    while True:
        try:
            sent = yield waiting
        except BaseException as exc:  # (a cancellation: the budget ran out)
            try:
                waiting = call.throw(exc)
            except StopIteration as done:
                return cast(T, done.value)
        else:
            try:
                waiting = call.send(sent)
            except StopIteration as done:
                return cast(T, done.value)


def _checked(before: AssetDraft, out: object, i: int) -> AssetDraft | str:
    """A transformer's output, checked where it differs from its input (the draft, with its
    encoding for the queue dropped, or why not)."""
    if not isinstance(out, AssetDraft):
        return f"not an AssetDraft but {type(out).__name__}"
    problems: list[FieldViolation] = []
    check_changed(before, out, f"assets[{i}]", problems)
    if problems:
        return "; ".join(f"{p.field}: {p.description}" for p in problems[:3])
    return out if not out.wire else replace(out, wire=b"")


class Hooks:
    """Every tenant's transformers and actions, made once from the settings."""

    def __init__(
        self,
        transforms: Mapping[str, Sequence[TransformSettings]],
        actions: Mapping[str, Sequence[ActionSettings]],
    ) -> None:
        made: dict[str, Any] = {}  # one instance per configuration, shared by tenants

        def stage(group: str, s: PluginSettings, kind: str, skip: bool) -> Stage:
            key = f"{group}:{s.model_dump_json()}"
            if key not in made:
                made[key] = _load(group, s, kind)
            return Stage(s.name, made[key], s.budget_ms / 1000, skip)

        # (a tenant's own empty list turns `*`'s off for it)
        self._pipelines = {
            tenant: Pipeline(
                [stage(TRANSFORMERS, s, "transformer", s.on_failure == "skip") for s in stages]
            )
            for tenant, stages in transforms.items()
        }
        self._actions = {
            tenant: [stage(ACTIONS, s, "action", s.on_failure == "skip") for s in stages]
            for tenant, stages in actions.items()
        }

    def pipeline(self, tenant_id: str) -> Pipeline | None:
        """The tenant's transformers (its own list, else `*`'s), if any."""
        found = self._pipelines.get(tenant_id, self._pipelines.get("*"))
        return found if found is not None and found.stages else None

    def actions(self, tenant_id: str) -> Sequence[Stage]:
        return self._actions.get(tenant_id, self._actions.get("*", ()))

    @property
    def has_actions(self) -> bool:
        return any(self._actions.values())

    async def act(self, stage: Stage, event: events_pb.ChangeEvent) -> str:
        """Runs one action on one event: '' if it did, else why not."""
        handle: Action = stage.plugin
        try:
            async with asyncio.timeout(stage.budget):
                await handle.handle(event)
        except TimeoutError:
            return f"{stage.name} took longer than its {stage.budget * 1000:g} ms"
        except Exception as exc:  # the plug-in's own failure
            return f"{stage.name} failed: {type(exc).__name__}: {exc}"[:500]
        return ""


NO_HOOKS = Hooks({}, {})

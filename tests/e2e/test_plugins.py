"""Transformation hooks from a package installed with pip (tests/fixtures/lily_plugin_demo):
its transformer and action are found through their entry points by `lily up`, run only for
the tenants whose configuration enables them, beside the built-in PII classifier and
qualified-name normaliser; a plug-in that refuses, fails or is too slow refuses only its own
asset (or is skipped, if so configured), never the batch."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import pytest
from lily.v1 import common_pb2 as C
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.stack import EmbeddedStack, free_port
from tests.e2e.test_lily_up import _admin, _lily_up, _stop
from tests.helpers import COLUMN, asset, eventually, new_tenant

PLUGIN = Path(__file__).parent.parent / "fixtures" / "lily_plugin_demo"
CREATED, REJECTED = O.INGEST_OUTCOME_CREATED, O.INGEST_OUTCOME_REJECTED


async def _pip_install(target: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--target", str(target), str(PLUGIN),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


@pytest.mark.slow
async def test_a_pip_installed_plugin_transforms_ingest_and_acts_on_changes(tmp_path):
    site = tmp_path / "site"
    await _pip_install(site)
    journal = tmp_path / "journal.jsonl"
    team = {"name": "team_owner", "budget_ms": 300, "options": {"domain": "acme.com"}}
    transforms = {
        "plugins": [team, {"name": "pii"}, {"name": "qualified_name"}],
        "skipper": [{**team, "on_failure": "skip"}],
    }
    actions = {"plugins": [{"name": "journal", "options": {"path": str(journal)}}]}
    stack = EmbeddedStack(tmp_path / "stack")
    dsn, url = await stack.start()
    env = {
        "LILY_POSTGRES_DSN": dsn,
        "LILY_NATS_URL": url,
        "LILY_WORKER_PROCESSES": "0",
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "LILY_TRANSFORMS": json.dumps(transforms),
        "LILY_ACTIONS": json.dumps(actions),
    }
    port = free_port()
    proc = await _lily_up(tmp_path, port, **env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            admin = _admin(tmp_path)
            md = {t: await new_tenant(ch, admin, t) for t in ("plugins", "skipper", "plain")}
            names = ["orders", "tmp_scratch", "boom", "slow"]
            batch = [asset(f"postgres://db/sales/{n}") for n in names] + [
                asset(
                    "POSTGRESQL://DB:5432/sales/orders/customer_email",
                    COLUMN,
                    parent_qualified_name="postgres://db/sales/orders",
                    attributes={"data_type": "varchar"},
                ),
                # (two columns: written in one transaction, their events travel as one batch)
                asset(
                    "postgres://db/sales/orders/id",
                    COLUMN,
                    parent_qualified_name="postgres://db/sales/orders",
                    attributes={"data_type": "bigint"},
                ),
            ]
            got = {
                t: list(
                    (
                        await stub.IngestMetadata(O.IngestMetadataRequest(assets=batch), metadata=m)
                    ).results
                )
                for t, m in md.items()
            }

            # plugins: the batch goes on around the three refusals, each saying why
            r = got["plugins"]
            assert [x.outcome for x in r[:4]] == [CREATED, REJECTED, REJECTED, REJECTED]
            assert "scratch tables are not catalogued" in r[1].error.message
            assert (
                "team_owner failed: RuntimeError: the team directory is down" in r[2].error.message
            )
            assert "team_owner took longer than its 300 ms" in r[3].error.message
            assert r[4].outcome == O.INGEST_OUTCOME_ACCEPTED  # a column: queued
            assert r[4].qualified_name == "postgres://db/sales/orders/customer_email"

            async def column() -> C.Asset:
                try:
                    found = await stub.LookupMetadata(
                        O.LookupMetadataRequest(qualified_name=r[4].qualified_name),
                        metadata=md["plugins"],
                    )
                except grpc.aio.AioRpcError as err:
                    raise AssertionError(err.code()) from err
                return found.asset

            email = await eventually(column)
            assert list(email.owners) == ["sales@acme.com"]
            [pii] = [t for t in email.tags if t.name == "PII"]
            assert pii.source == C.TAG_SOURCE_RULE
            assert pii.value == "email: name customer_email, type varchar"
            orders = await stub.GetMetadata(
                O.GetMetadataRequest(asset_id=r[0].asset_id), metadata=md["plugins"]
            )
            assert list(orders.asset.owners) == ["sales@acme.com"]

            # skipper: a failing or slow plug-in is skipped; its own refusal still refuses
            s = got["skipper"]
            assert [x.outcome for x in s[:4]] == [CREATED, REJECTED, CREATED, CREATED]
            # plain: no transformers at all
            p = got["plain"]
            assert [x.outcome for x in p] == [CREATED] * 4 + [O.INGEST_OUTCOME_ACCEPTED] * 2
            assert p[4].qualified_name == batch[4].qualified_name  # not normalised
            plain = await stub.GetMetadata(
                O.GetMetadataRequest(asset_id=p[0].asset_id), metadata=md["plain"]
            )
            assert list(plain.asset.owners) == []

        # the action saw the plugins tenant's changes, and no other tenant's
        async def journaled() -> list[dict]:
            lines = journal.read_text().splitlines() if journal.exists() else []
            seen = [json.loads(x) for x in lines]
            assert {e["asset"] for e in seen} >= {
                "postgres://db/sales/orders",
                "postgres://db/sales/orders/customer_email",
                "postgres://db/sales/orders/id",
            }, seen
            return seen

        seen = await eventually(journaled, timeout=20)
        assert {e["tenant"] for e in seen} == {"plugins"}
    finally:
        await _stop(proc)
        await stack.stop()

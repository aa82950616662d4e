"""Enforcement as a user works it: `lily up` in its own process; over its REST gateway, a
warehouse (a separate embedded Postgres) made an enforcement target, its tables, columns and
lineage ingested, an upstream column tagged PII; a real SQL connection as `analyst` is then
refused the downstream column, and reads it again once the tag is removed."""

from __future__ import annotations

import asyncpg
import httpx

from core.stack import EmbeddedPostgres, free_port
from tests.e2e.test_lily_up import _gateway_url, _lily_up, _stop
from tests.helpers import eventually

PREFIX = "postgres://warehouse:5432/postgres"


async def _refused(socket: str, sql: str) -> bool:
    conn = await asyncpg.connect(host=socket, user="analyst", database="postgres", timeout=10)
    try:
        await conn.fetch(sql)
    except asyncpg.InsufficientPrivilegeError:
        return True
    finally:
        await conn.close()
    return False


async def test_a_user_tags_an_upstream_column_and_the_warehouse_enforces_it(tmp_path):
    warehouse = EmbeddedPostgres(tmp_path / "warehouse")
    dsn = await warehouse.start()
    socket = str(warehouse.data_dir / "pgdata")
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        """
        CREATE ROLE analyst LOGIN;
        CREATE SCHEMA raw; CREATE SCHEMA mart;
        CREATE TABLE raw.people (id int, email text);
        CREATE TABLE mart.contacts (id int, email text);
        INSERT INTO mart.contacts VALUES (1, 'ann@example.com');
        GRANT USAGE ON SCHEMA raw, mart TO analyst;
        GRANT SELECT ON raw.people, mart.contacts TO analyst;
        """
    )
    await conn.close()
    lines: list[str] = []
    proc = await _lily_up(tmp_path / "data", free_port(), lines)
    try:
        key = (tmp_path / "data" / "credentials").read_text().strip()
        me = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=_gateway_url(lines), timeout=10) as http:
            made = await http.post(
                "/api/v1/integrations",
                headers=me,
                json={
                    "type": "postgres",
                    "displayName": "warehouse",
                    "settings": {
                        "host": socket,
                        "database": "postgres",
                        "user": "postgres",
                        "prefix": PREFIX,
                    },
                },
            )
            assert made.status_code == 200, made.text
            names = [
                ("raw/people", "ASSET_TYPE_TABLE"),
                ("raw/people/email", "ASSET_TYPE_COLUMN"),
                ("mart/contacts", "ASSET_TYPE_TABLE"),
                ("mart/contacts/id", "ASSET_TYPE_COLUMN"),
                ("mart/contacts/email", "ASSET_TYPE_COLUMN"),
            ]
            posted = await http.post(
                "/api/v1/metadata",
                headers=me,
                json={
                    "assets": [{"qualifiedName": f"{PREFIX}/{n}", "assetType": t} for n, t in names]
                },
            )
            ids = {
                n: r["assetId"] for (n, _), r in zip(names, posted.json()["results"], strict=True)
            }

            async def written() -> bool:  # columns: by the ingest worker, soon after
                for asset_id in ids.values():
                    got = await http.get(f"/api/v1/metadata/{asset_id}", headers=me)
                    assert got.status_code == 200, got.text
                return True

            await eventually(written)
            lineage = await http.post(
                "/api/v1/lineage",
                headers=me,
                json={
                    "relationships": [
                        {
                            "upstream": {"qualifiedName": f"{PREFIX}/raw/people/email"},
                            "downstream": {"qualifiedName": f"{PREFIX}/mart/contacts/email"},
                        }
                    ]
                },
            )
            assert lineage.status_code == 200, lineage.text
            sql = "SELECT email FROM mart.contacts"
            assert not await _refused(socket, sql)

            tagged = await http.post(
                f"/api/v1/metadata/{ids['raw/people/email']}/tags",
                headers=me,
                json={"add": [{"name": "PII"}]},
            )
            assert tagged.status_code == 200, tagged.text

            async def closed() -> bool:
                return await _refused(socket, sql)

            await eventually(closed, timeout=20)
            assert not await _refused(socket, "SELECT id FROM mart.contacts")
            receipt = await http.get(
                f"/api/v1/integrations/{made.json()['integration']['integrationId']}"
                f"/enforcement/{ids['mart/contacts/email']}",
                headers=me,
            )
            assert receipt.json()["receipt"]["applied"] == "ENFORCEMENT_STATE_CLOSED"

            untagged = await http.post(
                f"/api/v1/metadata/{ids['raw/people/email']}/tags",
                headers=me,
                json={"remove": ["PII"]},
            )
            assert untagged.status_code == 200, untagged.text

            async def opened() -> bool:
                return not await _refused(socket, sql)

            await eventually(opened, timeout=20)
    finally:
        assert await _stop(proc) == 0
        await warehouse.stop()

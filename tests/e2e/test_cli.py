"""The `lily` CLI as a person uses it, against the session's server."""

from __future__ import annotations

import asyncio
import json
import sys

from core.server import Lily

LILY = [sys.executable, "-m", "core.cli"]


async def _lily(lily: Lily, tenant: str, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *LILY,
        args[0],
        "--addr",
        lily.address,
        "--tenant",
        tenant,
        *args[1:],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode()


async def test_ingest_a_jsonl_file_then_get_search_and_watch(lily, tenant, tmp_path):
    lines = [
        {
            "qualifiedName": "pg://cli/db/s/orders",
            "assetType": "ASSET_TYPE_TABLE",
            "owners": ["ann"],
            "tags": [{"name": "PII"}],
        },
        {
            "qualifiedName": "pg://cli/db/s/orders/email",
            "assetType": "ASSET_TYPE_COLUMN",
            "parentQualifiedName": "pg://cli/db/s/orders",
        },
    ]
    path = tmp_path / "assets.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rc, out = await _lily(lily, tenant, "ingest", str(path), "--wait")
    assert rc == 0, out
    assert "received 2, created 1" in out and "queued 1" in out and "succeeded" in out

    rc, out = await _lily(lily, tenant, "get", "pg://cli/db/s/orders/email")
    assert rc == 0, out
    got = json.loads(out)
    assert got["qualifiedName"] == "pg://cli/db/s/orders/email" and got["version"] == "1"

    rc, out = await _lily(lily, tenant, "search", "--tag", "PII")
    assert rc == 0, out
    assert "pg://cli/db/s/orders  [PII]" in out and "(1 shown)" in out

    watcher = await asyncio.create_subprocess_exec(
        *LILY,
        "watch",
        "--addr",
        lily.address,
        "--tenant",
        tenant,
        "--tag",
        "PII",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watcher.stderr is not None and watcher.stdout is not None
        await asyncio.wait_for(watcher.stderr.readline(), 30)  # "watching"
        await asyncio.sleep(0.3)  # the subscription is made right after that line
        rc, out = await _lily(
            lily,
            tenant,
            "ingest",
            "-",
            stdin=json.dumps(
                {
                    "qualifiedName": "pg://cli/db/s/users",
                    "assetType": "ASSET_TYPE_TABLE",
                    "tags": [{"name": "PII"}],
                }
            ).encode(),
        )
        assert rc == 0, out
        line = (await asyncio.wait_for(watcher.stdout.readline(), 10)).decode()
        assert "asset.created" in line and "pg://cli/db/s/users" in line and "tags=PII" in line
    finally:
        watcher.terminate()
        await watcher.wait()


async def test_bad_lines_and_server_errors_are_reported_plainly(lily, tenant, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"qualifiedName": "pg://x", "assetType": "ASSET_TYPE_NOPE"}\n')
    rc, out = await _lily(lily, tenant, "ingest", str(path))
    assert rc != 0 and "bad.jsonl:1" in out
    rc, out = await _lily(lily, tenant, "get", "0" * 32)
    assert rc == 2 and "NOT_FOUND" in out and "Traceback" not in out

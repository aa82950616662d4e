"""The `lily` CLI as a person uses it, against the session's server."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from core.server import Lily

LILY = [sys.executable, "-m", "core.cli"]


async def _lily(lily: Lily, token: str, *args: str, stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *LILY,
        args[0],
        "--addr",
        lily.address,
        "--token",
        token,
        *args[1:],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode()


@pytest.fixture
def token(md) -> str:
    """The test tenant's admin API key, as a person would paste it."""
    return dict(md)["authorization"].removeprefix("Bearer ")


async def test_ingest_a_jsonl_file_then_get_search_and_watch(lily, token, tmp_path):
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
    rc, out = await _lily(lily, token, "ingest", str(path), "--wait")
    assert rc == 0, out
    assert "received 2, created 1" in out and "queued 1" in out and "succeeded" in out

    rc, out = await _lily(lily, token, "get", "pg://cli/db/s/orders/email")
    assert rc == 0, out
    got = json.loads(out)
    assert got["qualifiedName"] == "pg://cli/db/s/orders/email" and got["version"] == "1"

    rc, out = await _lily(lily, token, "search", "--tag", "PII")
    assert rc == 0, out
    assert "pg://cli/db/s/orders  [PII]" in out and "(1 shown)" in out

    watcher = await asyncio.create_subprocess_exec(
        *LILY,
        "watch",
        "--addr",
        lily.address,
        "--token",
        token,
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
            token,
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


async def test_bad_lines_and_server_errors_are_reported_plainly(lily, token, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"qualifiedName": "pg://x", "assetType": "ASSET_TYPE_NOPE"}\n')
    rc, out = await _lily(lily, token, "ingest", str(path))
    assert rc != 0 and "bad.jsonl:1" in out
    rc, out = await _lily(lily, token, "get", "0" * 32)
    assert rc == 2 and "NOT_FOUND" in out and "Traceback" not in out
    rc, out = await _lily(lily, "lily_0123456789abcdef_nope", "get", "0" * 32)
    assert rc == 2 and "UNAUTHENTICATED" in out and "Traceback" not in out


async def test_a_malformed_line_refuses_the_whole_file_before_anything_is_written(
    lily, token, tmp_path
):
    path = tmp_path / "half.jsonl"
    good = {"qualifiedName": "pg://cli/half/first", "assetType": "ASSET_TYPE_TABLE"}
    path.write_text(json.dumps(good) + "\n" + '{"qualifiedName": "pg://cli/half/second", \n')
    rc, out = await _lily(lily, token, "ingest", str(path))
    assert rc == 2 and "half.jsonl:2" in out and "nothing was ingested" in out, out
    rc, out = await _lily(lily, token, "get", "pg://cli/half/first")
    assert rc == 2 and "NOT_FOUND" in out, out  # line 1 was not sent either


async def test_search_says_when_there_are_more_and_goes_on_from_there(lily, token, tmp_path):
    path = tmp_path / "three.jsonl"
    path.write_text(
        "".join(
            json.dumps({"qualifiedName": f"pg://cli/more/t{n}", "assetType": "ASSET_TYPE_TABLE"})
            + "\n"
            for n in range(3)
        )
    )
    assert (await _lily(lily, token, "ingest", str(path)))[0] == 0
    rc, out = await _lily(lily, token, "search", "--prefix", "pg://cli/more/", "--limit", "2")
    assert rc == 0 and "(2 shown; there may be more" in out, out
    after = out.split("--after=")[1].split(")")[0]
    rc, rest = await _lily(lily, token, "search", "--prefix", "pg://cli/more/", f"--after={after}")
    assert rc == 0 and "(1 shown)" in rest, rest
    names = [line.split()[-1] for line in (out + rest).splitlines() if "pg://cli/more/" in line]
    assert sorted(names) == [f"pg://cli/more/t{n}" for n in range(3)]


async def test_policies_and_credentials_from_the_command_line(lily, token, tenant, tmp_path):
    path = tmp_path / "policies.csv"
    path.write_text(
        f"# scrapers of the warehouse\n"
        f"p, wh-scraper, {tenant}, asset:TABLE:snowflake://wh/*, write\n"
        f"g, admin@{tenant}, admin, {tenant}\n"
        f"g, bob, viewer, {tenant}\n"
    )
    rc, out = await _lily(lily, token, "policy", "apply", str(path))
    assert rc == 0 and "applied 1 policies and 2 role assignments" in out, out
    rc, out = await _lily(lily, token, "policy", "export")
    assert rc == 0 and f"g, bob, viewer, {tenant}" in out and "wh-scraper" in out, out
    rc, out = await _lily(lily, token, "policy", "check", "metadata", "write", "--subject", "bob")
    assert rc == 1 and out.startswith("denied"), out
    rc, out = await _lily(lily, token, "policy", "check", "metadata", "read", "--subject", "bob")
    assert rc == 0 and "p, viewer, *, metadata, read, allow" in out, out

    rc, out = await _lily(
        lily, token, "credential", "create", "--role", "scraper", "--subject", "wh-scraper"
    )
    assert rc == 0, out
    key = out.strip().splitlines()[-1]
    assert key.startswith("lily_")
    table = json.dumps({"qualifiedName": "snowflake://wh/db/s/t", "assetType": "ASSET_TYPE_TABLE"})
    rc, out = await _lily(lily, key, "ingest", "-", stdin=table.encode())
    assert rc == 0 and "created 1" in out, out
    elsewhere = json.dumps({"qualifiedName": "pg://other/t", "assetType": "ASSET_TYPE_TABLE"})
    rc, out = await _lily(lily, key, "ingest", "-", stdin=elsewhere.encode())
    assert "rejected 1" in out and "may not write TABLE" in out, out

    bad = tmp_path / "bad.csv"
    bad.write_text("p, x, *, metadata, read\nq, nonsense\n")
    rc, out = await _lily(lily, token, "policy", "apply", str(bad))
    assert rc == 2 and "INVALID_ARGUMENT" in out and "policy_text:2" in out, out
    rc, out = await _lily(lily, token, "policy", "export")
    assert "wh-scraper" in out  # nothing was replaced


async def test_platform_admins_make_dedicated_tenants_and_rotate_keys(lily, tenant):
    root = lily.bootstrap_key
    assert root
    rc, out = await _lily(lily, root, "tenant", "create", tenant + "-d", "--dedicated")
    assert rc == 0 and "DEDICATED" in out, out
    key = out.strip().splitlines()[-1]  # its admin's key, printed last
    rc, out = await _lily(lily, key, "policy", "export")
    assert rc == 0 and f"admin, {tenant}-d" in out, out
    rc, out = await _lily(lily, root, "policy", "rotate-key")
    assert rc == 0 and "signed with key" in out and "verifies until" in out, out
    rc, out = await _lily(lily, key, "policy", "rotate-key")  # a tenant admin may not
    assert rc != 0 and "PERMISSION_DENIED" in out, out

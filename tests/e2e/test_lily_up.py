"""The product as a user runs it: `lily up` in its own process, against real Postgres and NATS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import asyncpg
import grpc
import httpx
import nats
import psutil
import pytest
from lily.v1 import events_pb2 as events_pb
from lily.v1 import metadata_pb2 as O
from lily.v1 import metadata_pb2_grpc as metadata_grpc

from core.stack import EmbeddedStack, free_port
from tests.helpers import asset, bearer, eventually, mc_signature

LILY = [sys.executable, "-m", "core.cli"]


async def _lily_up(
    data_dir: Path, port: int, seen: list[str] | None = None, **env: str
) -> asyncio.subprocess.Process:
    """`lily up` (its REST gateway on a free port), once it says it is ready; its start-up
    lines go to `seen`."""
    proc = await asyncio.create_subprocess_exec(
        *LILY,
        "up",
        "--data-dir",
        str(data_dir),
        "--grpc-port",
        str(port),
        "--http-port",
        "0",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while not (line := await proc.stdout.readline()).startswith(b"lily: ready"):
            assert line, f"lily up exited early ({await proc.wait()})"
            if seen is not None:
                seen.append(line.decode())
    # keep reading what it says (its logs too): a full pipe would block it mid-write
    reader = asyncio.create_task(proc.stdout.read())
    _readers.add(reader)
    reader.add_done_callback(_readers.discard)
    return proc


_readers: set[asyncio.Task[bytes]] = set()


def _admin(data_dir: Path) -> tuple[tuple[str, str], ...]:
    """The admin credential the first `lily up` saved for the CLI."""
    return bearer((data_dir / "credentials").read_text().strip())


def _gateway_url(lines: list[str]) -> str:
    found = [re.search(r"REST gateway on (http://\S+?)/api/v1", line) for line in lines]
    return next(m.group(1) for m in found if m)


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await proc.wait()


@pytest.mark.slow
async def test_no_event_is_lost_when_the_server_dies_between_write_and_publish(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")  # its own backends: no other relay may help
    dsn, url = await stack.start()
    env = {"LILY_POSTGRES_DSN": dsn, "LILY_NATS_URL": url}
    port = free_port()
    nc = await nats.connect(url)
    seen: list = []

    async def on_msg(msg):
        seen.append(msg)

    await nc.subscribe("lily.default.>", cb=on_msg)
    try:
        doomed = await _lily_up(tmp_path, port, **env, LILY_TEST_EXIT_AFTER_COMMIT="1")
        md = _admin(tmp_path)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.IngestMetadata(
                    O.IngestMetadataRequest(assets=[asset("pg://crash/t")]), metadata=md, timeout=10
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # Died right after the commit, by itself. (Not _stop: a signal sent before asyncio has
        # seen the exit makes Popen.send_signal reap the process, and asyncio then reports 255.)
        async with asyncio.timeout(30):
            assert await doomed.wait() == 70
        conn = await asyncpg.connect(dsn)
        try:
            assert (
                await conn.fetchval("SELECT count(*) FROM assets WHERE tenant_id = 'default'") == 1
            )
            assert (
                await conn.fetchval("SELECT count(*) FROM outbox_batch WHERE tenant_id = 'default'")
                == 1
            )
            await asyncio.sleep(0.5)
            assert seen == []  # written, not published

            restarted = await _lily_up(tmp_path, port, **env)
            try:
                await eventually(lambda: _true(len(seen) == 1), timeout=10)
                event = events_pb.ChangeEvent.FromString(seen[0].data)
                assert (seen[0].subject, event.qualified_name) == (
                    "lily.default.asset.created",
                    "pg://crash/t",
                )
                assert await eventually(lambda: _zero(conn))
            finally:
                assert await _stop(restarted) == 0  # SIGTERM: clean shutdown
            assert len(seen) == 1
        finally:
            await conn.close()
    finally:
        await nc.close()
        await stack.stop()


def _stopped(pid: int) -> bool:
    """Gone, or a zombie until something reaps it (this container's pid 1 may not)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _true(value):
    return value


async def _zero(conn):
    return await conn.fetchval("SELECT count(*) FROM outbox_batch WHERE tenant_id = 'default'") == 0


async def _when_first_serving(port: int, data_dir: Path) -> tuple[bool, int]:
    """Polls gRPC health from before `lily up` listens; the first time it says SERVING:
    whether the admin key was saved by then, and how the REST gateway answered."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    retry_fast = [  # not gRPC's backoff of seconds: it could sleep through the moment
        ("grpc.initial_reconnect_backoff_ms", 20),
        ("grpc.min_reconnect_backoff_ms", 20),
        ("grpc.max_reconnect_backoff_ms", 50),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=retry_fast) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                said = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                said = None
            if said is not None and said.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.02)
    saved = (data_dir / "credentials").exists()
    if not (data_dir / "gateway").exists():
        return saved, 0  # it does not even say where its gateway is yet
    gateway = (data_dir / "gateway").read_text().strip()
    async with httpx.AsyncClient(timeout=5) as http:
        return saved, (await http.get(f"{gateway}/openapi.json")).status_code


@pytest.mark.slow
async def test_lily_up_embedded_starts_serves_and_stops_on_sigterm(tmp_path):
    port = free_port()
    lines: list[str] = []
    first_serving = asyncio.create_task(_when_first_serving(port, tmp_path / "data"))
    proc = await _lily_up(tmp_path / "data", port, lines)
    try:
        # health says SERVING only once all of it is: the gateway answers, the key is saved
        saved, gateway_status = await asyncio.wait_for(first_serving, 30)
        assert saved and gateway_status == 200
        # the CLI finds this Lily (its port is not the default) and its key by the data dir
        for how in (("--data-dir", str(tmp_path / "data")), ()):
            cli = await asyncio.create_subprocess_exec(
                *LILY,
                "search",
                *how,
                env={**os.environ, "LILY_DATA_DIR": str(tmp_path / "data")},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(cli.communicate(), 60)
            assert cli.returncode == 0 and "(0 shown)" in out.decode(), out.decode()
        # the README's curl example, over the gateway lily up serves
        key = (tmp_path / "data" / "credentials").read_text().strip()
        assert [line for line in lines if key in line]  # shown once at first start
        assert (tmp_path / "data" / "credentials").stat().st_mode & 0o077 == 0
        async with httpx.AsyncClient(base_url=_gateway_url(lines), timeout=10) as http:
            nobody = await http.post("/api/v1/metadata", json={"assets": []})
            assert nobody.status_code == 401
            tenant = {"Authorization": f"Bearer {key}"}
            posted = await http.post(
                "/api/v1/metadata",
                headers=tenant,
                json={
                    "assets": [{"qualifiedName": "pg://up/rest", "assetType": "ASSET_TYPE_TABLE"}]
                },
            )
            asset_id = posted.json()["results"][0]["assetId"]
            got = await http.get(f"/api/v1/metadata/{asset_id}", headers=tenant)
            assert got.json()["asset"]["qualifiedName"] == "pg://up/rest"
            assert (await http.get("/openapi.json")).json()["openapi"].startswith("3.")
            # a Monte Carlo incident through the webhook door lily up serves
            made = await http.post(
                "/api/v1/integrations",
                headers=tenant,
                json={"type": "monte_carlo", "settings": {"default_prefix": "pg://up"}},
            )
            hook, secret = made.json()["integration"]["webhookPath"], made.json()["webhookSecret"]
            incident = {
                "action": "incident",
                "type": "open_anomaly_incident",
                "payload": {"incident_id": "up-1", "event_list": [{"full_table_id": "x:y.z"}]},
            }
            table = {"qualifiedName": "pg://up/x/y/z", "assetType": "ASSET_TYPE_TABLE"}
            made_table = await http.post(
                "/api/v1/metadata", headers=tenant, json={"assets": [table]}
            )
            target = made_table.json()["results"][0]["assetId"]
            body = json.dumps(incident).encode()
            signed = mc_signature(secret, body)
            answer = await http.post(hook, content=body, headers={"x-mcd-signature": signed})
            assert answer.status_code == 200, answer.text

            async def attached():
                listed = await http.get(f"/api/v1/metadata/{target}/issues", headers=tenant)
                assert [i["externalId"] for i in listed.json().get("issues", [])] == ["up-1"]
                return True

            await eventually(attached)
            assert (tmp_path / "data" / "adapter-runtime.key").stat().st_mode & 0o077 == 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = metadata_grpc.MetadataServiceStub(ch)
            r = await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://up/t")]),
                metadata=_admin(tmp_path / "data"),
                timeout=10,
            )
            assert r.results[0].outcome == O.INGEST_OUTCOME_CREATED
    finally:
        assert await _stop(proc) == 0
    assert not (
        tmp_path / "data" / "postgres" / "pgdata" / "postmaster.pid"
    ).exists()  # Postgres stopped too


@pytest.mark.slow
async def test_restart_after_lily_was_killed_stops_the_leftover_nats_server(tmp_path):
    port = free_port()
    first = await _lily_up(tmp_path / "data", port)
    first.kill()  # SIGKILL: no clean shutdown, nats-server and Postgres stay behind
    await first.wait()
    pid_file = tmp_path / "data" / "nats" / "nats-server.pid"
    leftover = psutil.Process(int(pid_file.read_text()))
    assert "nats-server" in leftover.name()
    lines: list[str] = []
    second = await _lily_up(tmp_path / "data", port, lines)
    try:
        assert _stopped(leftover.pid)
        key = (tmp_path / "data" / "credentials").read_text().strip()
        assert not [line for line in lines if key in line]  # never shown again
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = metadata_grpc.MetadataServiceStub(ch)
            r = await stub.IngestMetadata(
                O.IngestMetadataRequest(assets=[asset("pg://again/t")]),
                metadata=_admin(tmp_path / "data"),
                timeout=10,
            )
            assert r.results[0].outcome == O.INGEST_OUTCOME_CREATED
    finally:
        assert await _stop(second) == 0


@pytest.mark.slow
@pytest.mark.parametrize("which", ["--grpc-port", "--http-port"])
async def test_a_busy_port_is_refused_clearly_and_nothing_is_left_running(tmp_path, which):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "--http-port" if which == "--grpc-port" else "--grpc-port"
        proc = await asyncio.create_subprocess_exec(
            *LILY,
            "up",
            "--data-dir",
            str(tmp_path),
            which,
            str(port),
            other,
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    expected = "cannot listen on" if which == "--grpc-port" else "cannot serve the REST gateway on"
    assert f"{expected} 127.0.0.1:{port}" in out.decode(), out.decode()
    assert b"Traceback" not in out + err
    assert _stopped(int((tmp_path / "nats" / "nats-server.pid").read_text()))
    assert not (tmp_path / "postgres" / "pgdata" / "postmaster.pid").exists()

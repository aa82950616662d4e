"""What every client command of the `lily` CLI shares: where Lily is, the credential to call
it with, a channel, and how answers and refusals are shown.

Where Lily is: --addr (LILY_ADDR), else the address `lily up` wrote into its data directory
(--data-dir, LILY_DATA_DIR, default .lily), else 127.0.0.1:50051. The credential: --token
(LILY_TOKEN), else the session `lily login` opened with that Lily (kept in
$LILY_CONFIG_DIR, default ~/.config/lily, readable by its owner only; refreshed when its
access token is about to expire), else the admin key `lily up` saved in the data directory."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from lily.v1 import policy_pb2 as policy_pb
from lily.v1 import policy_pb2_grpc as policy_grpc

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_DATA_DIR = ".lily"
RPC_TIMEOUT = 30.0
CREDENTIALS_FILE = "credentials"  # the first admin's API key, saved by `lily up`
ADDRESS_FILE = "address"  # the gRPC address `lily up` listens on
GATEWAY_FILE = "gateway"  # the REST gateway's base URL

Metadata = tuple[tuple[str, str], ...]
# Adds a client command (name, help) with the options above; the command's parser.
Client = Callable[[str, str], argparse.ArgumentParser]


class CliError(Exception):
    """A refusal to show as one line (exit status 2 unless given)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def say(*parts: object) -> None:
    print(*parts, flush=True)


def show(msg: Any) -> None:
    """A message as protobuf JSON."""
    say(json_format.MessageToJson(msg, indent=2))


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("LILY_DATA_DIR") or DEFAULT_DATA_DIR)


def address(args: argparse.Namespace) -> str:
    """Lily's gRPC address: --addr, else the one `lily up` wrote in the data dir."""
    if args.addr:
        return str(args.addr)
    try:
        return (data_dir(args) / ADDRESS_FILE).read_text().strip() or DEFAULT_ADDR
    except OSError:
        return DEFAULT_ADDR


SESSION_FILE = "session.json"
REFRESH_BEFORE = 60.0  # seconds before its access token expires, a session is refreshed


def session_path() -> Path:
    base = os.environ.get("LILY_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "lily"
    )
    return Path(base) / SESSION_FILE


def load_session() -> dict[str, Any] | None:
    try:
        found = json.loads(session_path().read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def save_session(addr: str, session: policy_pb.Session) -> None:
    """Keeps a session (its refresh token is a secret: the file is its owner's alone)."""
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {
        "addr": addr,
        "tenant_id": session.principal.tenant_id,
        "subject": session.principal.subject,
        "session_id": session.session_id,
        "access_token": session.access_token,
        "expires_at": time.time() + session.expires_in,
        "refresh_token": session.refresh_token,
    }
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    os.replace(path.with_suffix(".tmp"), path)


def forget_session() -> None:
    session_path().unlink(missing_ok=True)


async def _session_token(args: argparse.Namespace) -> str:
    """The access token of the session `lily login` opened with this Lily ('' if none),
    refreshed first if it is about to expire."""
    kept = load_session()
    if kept is None or kept.get("addr") != address(args):
        return ""
    if float(kept.get("expires_at", 0)) - time.time() > REFRESH_BEFORE:
        return str(kept["access_token"])
    try:
        async with channel(args) as ch:
            got = await policy_grpc.PolicyServiceStub(ch).RefreshSession(
                policy_pb.RefreshSessionRequest(refresh_token=str(kept["refresh_token"])),
                timeout=RPC_TIMEOUT,
            )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            forget_session()
            ended = f"your session has ended ({exc.details()}): `lily login` again"
            raise CliError(ended) from None
        raise
    save_session(address(args), got.session)
    return got.session.access_token


async def credentials(args: argparse.Namespace) -> Metadata:
    """The call's credential: --token (LILY_TOKEN), else the session `lily login` opened,
    else the key `lily up` saved."""
    token = args.token or await _session_token(args)
    if not token:
        path = data_dir(args) / CREDENTIALS_FILE
        try:
            token = path.read_text().strip()
        except OSError:
            raise CliError(
                f"no credential: pass --token (or LILY_TOKEN), or point --data-dir (or "
                f"LILY_DATA_DIR) at the data directory of a `lily up` (no {path})"
            ) from None
    return (("authorization", f"Bearer {token}"),)


def channel(args: argparse.Namespace) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address(args))


def add_options(parser: argparse.ArgumentParser, *, hidden: bool = False) -> None:
    """--addr, --token and --data-dir (hidden: a subcommand's copies of its parent's, so
    they may follow it: `lily policy apply f --addr X`)."""
    options = (
        (
            "--addr",
            f"Lily's gRPC address (LILY_ADDR; default: the address `lily up` wrote in "
            f"the data directory, else {DEFAULT_ADDR})",
        ),
        (
            "--token",
            "API key or bearer token (LILY_TOKEN; default: the admin key `lily up` "
            "saved in the data directory). The tenant is the credential's.",
        ),
        (
            "--data-dir",
            f"the data directory of the `lily up` to use (LILY_DATA_DIR, default "
            f"{DEFAULT_DATA_DIR})",
        ),
    )
    env = {"--addr": "LILY_ADDR", "--token": "LILY_TOKEN", "--data-dir": ""}
    for flag, text in options:
        if hidden:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            name = env[flag]
            parser.add_argument(flag, default=os.environ.get(name, "") if name else "", help=text)


def rpc_error(exc: grpc.aio.AioRpcError) -> CliError:
    """A failed call as one line: what went wrong, and what to do where it is plain."""
    code = exc.code()
    hint = ""
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = " (is `lily up` running there? --addr or --data-dir says where)"
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        hint = " (--token, LILY_TOKEN or --data-dir gives the credential)"
    return CliError(f"{code.name}: {exc.details()}{hint}")

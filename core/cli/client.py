"""What every client command of the `lily` CLI shares: where Lily is, the credential to call
it with, a channel, and how answers and refusals are shown.

Where Lily is: --addr (LILY_ADDR), else the address `lily up` wrote into its data directory
(--data-dir, LILY_DATA_DIR, default .lily), else 127.0.0.1:50051. The credential: --token
(LILY_TOKEN), else the admin key `lily up` saved in that data directory."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

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


def credentials(args: argparse.Namespace) -> Metadata:
    """The call's credential: --token (LILY_TOKEN), else the one `lily up` saved."""
    token = args.token
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

"""The `lily` command: run Lily (`lily up`, core.cli.serve) and use it (ingest, get, search,
watch, job: core.cli.metadata; policy, tenant and credential: policy.cli).

Client commands find Lily and their credential as core.cli.client says. Output is for people;
the server's logs are JSON lines on stderr. Every refusal is one line and a non-zero exit
status: 2 for what the command was given (arguments, files, settings, a call refused), 1 when
Lily cannot start."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
import pydantic

from core.cli import client, metadata, serve
from core.settings import describe_errors


def parser() -> argparse.ArgumentParser:
    from policy.cli import add_commands as add_policy_commands

    p = argparse.ArgumentParser(prog="lily", description="Lily, a near-real-time metadata plane.")
    sub = p.add_subparsers(dest="command", required=True)
    serve.add_commands(sub)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        client.add_options(c)
        return c

    metadata.add_commands(command)
    add_policy_commands(command)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(args.run(args))
    except client.CliError as exc:
        _fail(str(exc))
        return exc.status
    except grpc.aio.AioRpcError as exc:
        _fail(str(client.rpc_error(exc)))
        return 2
    except pydantic.ValidationError as exc:
        for line in describe_errors(exc):
            _fail(f"bad setting {line}")
        return 2
    except OSError as exc:  # a file the command was given
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}")
        return 2
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> None:
    print(f"lily: {message.removeprefix('lily: ')}", file=sys.stderr, flush=True)

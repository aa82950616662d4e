"""Starting and stopping a process's parts: what cannot start says so in one line
(StartupError), and what stops never holds up the rest (close_all, stop_tasks)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

# (name, close, what to do instead if close takes too long)
Closer = tuple[str, Callable[[], Awaitable[None]], Callable[[], None]]


class StartupError(RuntimeError):
    """A backend Lily needs could not be reached at start; the message says which."""


def nothing() -> None:
    """What to do when a close that leaves nothing behind takes too long."""


async def close_all(steps: Sequence[Closer], timeout: float = 10.0) -> None:
    """Runs each close in at most `timeout` seconds: one that hangs is logged and left
    behind, and never holds up the rest."""
    loop = asyncio.get_running_loop()
    for name, close, abandon in steps:
        started = loop.time()
        try:
            await asyncio.wait_for(close(), timeout)
        except TimeoutError:
            log.warning("shutdown: %s did not close within %.0f s; left behind", name, timeout)
            abandon()
            continue
        except Exception as exc:  # the shutdown boundary: log, and close the rest
            log.warning("shutdown: closing %s failed: %r", name, exc)
            continue
        log.info("shutdown: %s closed in %.2f s", name, loop.time() - started)


async def stop_tasks(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancels background tasks and waits for them (a while).

    A cancel can be lost: Python 3.11's asyncio.wait_for drops one that lands as its inner
    future completes, and nats-py's fetch waits in wait_for; a worker loop that lost its
    cancel goes round again for ever. Waiting on it is the suspected cause of `lily up`
    hanging on SIGTERM (seen once for over 10 minutes after a benchmark, idle loop, no worker
    processes left). So the cancel is sent again, and a task that still runs is left."""
    pending = set(tasks)
    for _ in range(3):
        for task in pending:
            task.cancel()
        if not pending:
            break
        _, pending = await asyncio.wait(pending, timeout=5.0)
    for task in pending:
        log.warning("shutdown: task %s did not stop; left behind", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("shutdown: task %s had failed: %r", task.get_name(), task.exception())

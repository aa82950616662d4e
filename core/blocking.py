"""Blocking calls that may hang, kept off the event loop and out of the way of exit."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def settle(done: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    """Completes `done` (on its loop) with `exc` or else `result`, unless its waiter has
    already given up (a timeout, a cancel)."""
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)


async def in_daemon_thread(work: Callable[[], T], timeout: float, name: str) -> T:
    """The result of blocking `work`, run in a daemon thread of its own, waited for at most
    `timeout` seconds (TimeoutError after). For calls that can hang, such as a driver closing
    its connections to a server that has gone: asyncio.to_thread's pool is joined when the
    process exits, so a stuck call there would hold up exit; a daemon thread does not."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        result, error = None, None
        try:
            result = work()
        except BaseException as exc:  # handed to the waiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle, done, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await asyncio.wait_for(done, timeout)

"""A cancel-safe ``asyncio.wait_for`` for Python 3.11, installed by the CLI.

Why: on Python 3.11, ``asyncio.wait_for`` returns the awaited result instead of
raising ``CancelledError`` when the cancel and the result arrive in the same
loop iteration (gh-86296, fixed in 3.12 by rewriting ``wait_for`` on
``asyncio.timeout``). aiomqtt awaits every connect, subscribe and publish through
``asyncio.wait_for``, so a TaskGroup aborting because one task failed could have
its cancel of an MQTT task swallowed. That task then runs on, the TaskGroup
waits for it forever, the failure is never raised, and a later SIGTERM (which
only cancels the outermost task, already waiting inside the aborting TaskGroup)
had no effect until ``run_until_signalled`` cancelled everything again after its
grace period: the edge with its metrics port in use ran silently without metrics
and took 10 s or more to stop.

:func:`install_cancel_safe_wait_for` replaces ``asyncio.wait_for`` with the
3.12 semantics on 3.11 and does nothing on 3.12 and later. Libraries look the
function up as ``asyncio.wait_for`` at call time, so installing it at start-up
reaches them.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["cancel_safe_wait_for", "install_cancel_safe_wait_for"]

_T = TypeVar("_T")

# kept for the timer-less cases, where 3.11's is harmless
_original_wait_for = asyncio.wait_for  # noqa: TID251


async def cancel_safe_wait_for(
    fut: Awaitable[_T],
    timeout: float | None,  # noqa: ASYNC109 (wait_for's own signature)
) -> _T:
    """``asyncio.wait_for`` as in Python 3.12: a cancel is never lost.

    A coroutine runs in the calling task (no extra task), as in 3.12; on timeout
    the awaitable is cancelled and ``TimeoutError`` raised; a cancel of the
    caller always raises ``CancelledError``, even when ``fut`` completed in the
    same loop iteration (its result is then dropped, as a cancel means).
    """
    if timeout is None or timeout <= 0:
        # no timer involved: 3.11 does no harm here (None awaits directly;
        # <= 0 cancels at once) and keeps its exact behaviour
        return await _original_wait_for(fut, timeout)
    async with asyncio.timeout(timeout):
        return await fut


def install_cancel_safe_wait_for() -> bool:
    """Use :func:`cancel_safe_wait_for` as ``asyncio.wait_for`` on Python 3.11.

    Returns whether it was installed (False on 3.12+, whose own is safe).
    Idempotent.
    """
    if sys.version_info >= (3, 12):
        return False
    patched: Any = cancel_safe_wait_for
    asyncio.wait_for = patched  # noqa: TID251 (the point of this module)
    asyncio.tasks.wait_for = patched
    return True

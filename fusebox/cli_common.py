"""What every ``fusebox`` command module shares: the exit codes, the process
runner that turns SIGINT/SIGTERM into a clean shutdown, and the ``--clock`` flag.

It sits below :mod:`fusebox.cli` (the parser and ``main``) and the command
modules :mod:`fusebox.cli_edge` and :mod:`fusebox.cli_cloud`, so none of them
imports back up; :mod:`fusebox.cli` re-exports these names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocols.clock import Clock

log = logging.getLogger("fusebox")

EXIT_BAD_CONFIG = 2


def run_until_signalled(
    main: Callable[[], Coroutine[Any, Any, Any]],
    *,
    grace_s: float = 10.0,
    force_s: float = 20.0,
) -> int:
    """Run ``main`` until it returns or SIGINT/SIGTERM arrives; then cancel it so
    its ``finally`` blocks (closing the outbox, stopping servers) run. Returns 0.

    A shutdown never hangs: ``grace_s`` after the signal, tasks still running are
    logged with where they wait and cancelled again (a cancel can be lost, e.g.
    by ``asyncio.wait_for`` on Python 3.11); at ``force_s``, or on a second
    signal, the process exits with code 1 at once. Everything durable is
    crash-safe (the outbox survives ``kill -9``), so a forced exit loses nothing.

    Lost cancels are prevented where they come from (``asyncio.wait_for`` on
    3.11, see :mod:`fusebox.aio`), and the signal also cancels again every task
    whose earlier cancel is still pending: a TaskGroup that is already aborting
    ignores the cancel of its parent, so a child that lost the TaskGroup's cancel
    would otherwise keep the process up until the grace period.
    """
    from fusebox.aio import install_cancel_safe_wait_for

    install_cancel_safe_wait_for()

    async def runner() -> None:
        task = asyncio.create_task(main(), name="main")
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        signalled: list[float] = []

        def on_signal(sig: signal.Signals) -> None:
            if signalled:
                _force_exit(f"second {sig.name} during shutdown")
            signalled.append(loop.time())
            log.info("%s: shutting down", sig.name)
            task.cancel()
            for t in _running_tasks(loop, me):
                if t is not task and t.cancelling():
                    t.cancel()  # its earlier cancel was lost: repeat it
            loop.call_later(grace_s, _cancel_again, loop, me, grace_s, force_s)
            # still alive when this fires (asyncio.run waits for worker threads
            # after main has returned): something is stuck
            why = f"shutdown not finished {force_s:g} s after {sig.name}"
            loop.call_later(force_s, _force_exit, why)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    return 0


def _running_tasks(
    loop: asyncio.AbstractEventLoop, me: asyncio.Task[Any] | None
) -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks(loop) if t is not me and not t.done()]


def _force_exit(why: str) -> None:
    log.error("%s: exiting now (code 1)", why)
    logging.shutdown()
    os._exit(1)


def _cancel_again(
    loop: asyncio.AbstractEventLoop,
    me: asyncio.Task[Any] | None,
    grace_s: float,
    force_s: float,
) -> None:
    """The grace period is over: log where each task still running waits and
    cancel it again."""
    left = _running_tasks(loop, me)
    if not left:
        log.warning(
            "shutdown: still waiting for worker threads %g s after the "
            "signal (forced exit at %g s)",
            grace_s,
            force_s,
        )
        return
    log.warning(
        "shutdown: %d task(s) still running %g s after the signal; "
        "cancelling them again (forced exit at %g s)",
        len(left),
        grace_s,
        force_s,
    )
    for t in left:
        frames = t.get_stack(limit=1)
        where = (
            f"{frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else "?"
        )
        log.warning("shutdown:   %s waiting at %s", t.get_name(), where)
        t.cancel()


def clock_from_args(args: argparse.Namespace) -> Clock:
    """The clock of ``--clock``, else of ``$FUSEBOX_CLOCK``, else the real one."""
    from protocols.clock import CLOCK_ENV, Clock

    spec = getattr(args, "clock", None)
    return Clock.parse(
        spec if spec is not None else os.environ.get(CLOCK_ENV), real=time.time
    )

"""A cancel that meets a result in the same loop iteration is not lost.

On Python 3.11 ``asyncio.wait_for`` swallowed such a cancel (aiomqtt awaits all
its MQTT operations through it): a TaskGroup aborting on one task's failure then
waited forever for the task that lost its cancel, the failure never surfaced,
and SIGTERM did nothing until the grace period. ``run_until_signalled`` installs
a cancel-safe ``wait_for`` (:mod:`fusebox.aio`) and, on the signal, repeats
cancels still pending. Each case runs a real child process.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time

from fusebox.aio import cancel_safe_wait_for

PRELUDE = """
import asyncio, logging, sys
from fusebox.cli import run_until_signalled
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
"""

# One task fails just as the result another awaits through wait_for arrives:
# the TaskGroup's cancel and the result land in the same loop iteration.
RACE = """
async def waiter(fut):
    await asyncio.wait_for(fut, 10)
    await asyncio.sleep(3600)  # only a lost cancel gets here and stays

async def failer(fut):
    await asyncio.sleep(0.05)
    fut.set_result(1)
    raise RuntimeError("port in use")

async def main():
    fut = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(waiter(fut), name="waiter")
        tg.create_task(failer(fut), name="failer")

sys.exit(run_until_signalled(main, grace_s=30, force_s=60))
"""


def test_a_taskgroup_failure_is_raised_even_when_a_cancel_meets_a_result() -> None:
    started = time.monotonic()
    # with the cancel lost, this hangs until the 60 s forced exit: TimeoutExpired
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(RACE)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert time.monotonic() - started < 10
    assert proc.returncode == 1
    assert "RuntimeError: port in use" in proc.stderr


# A child that swallows the TaskGroup's cancel (as a lost cancel did) keeps the
# aborting TaskGroup waiting; the signal must reach it at once, not after grace_s.
DEAF = """
async def deaf():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # the TaskGroup's cancel, lost
    print("ready", flush=True)
    await asyncio.sleep(3600)

async def failer():
    await asyncio.sleep(0.05)
    raise RuntimeError("listener failed")

async def main():
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(deaf(), name="deaf")
            tg.create_task(failer(), name="failer")
    finally:
        print("finally ran", flush=True)

sys.exit(run_until_signalled(main, grace_s=30, force_s=60))
"""


def test_the_signal_repeats_a_cancel_that_a_task_lost() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(DEAF)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    assert proc.poll() is None  # the TaskGroup is stuck waiting for "deaf"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    took = time.monotonic() - started
    assert took < 2, err
    assert "finally ran" in out
    assert "RuntimeError: listener failed" in err  # the failure is not hidden
    assert "still running" not in err


async def test_cancel_safe_wait_for_keeps_wait_for_semantics() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await cancel_safe_wait_for(answer(), 1) == 42
    assert await cancel_safe_wait_for(answer(), None) == 42
    slow = asyncio.get_running_loop().create_future()
    try:
        await cancel_safe_wait_for(slow, 0.01)
    except TimeoutError:
        pass
    else:
        raise AssertionError("no TimeoutError")
    assert slow.cancelled()  # the awaited future is cancelled on timeout

"""SIGTERM stops every long-running ``fusebox`` process, even when a task loses its
cancel: run_until_signalled cancels again after a grace period and exits hard at a
deadline. Each case runs a real child process and signals it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

PRELUDE = """
import asyncio, logging, sys
from fusebox.cli import run_until_signalled
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

async def deaf(times):
    # swallows the first ``times`` cancels, as a lost cancel would
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            times -= 1
            if times < 0:
                raise
"""


def start(body: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
    return proc


def finish(proc: subprocess.Popen[str], within_s: float) -> tuple[int, str, str, float]:
    started = time.monotonic()
    out, err = proc.communicate(timeout=within_s)
    return proc.returncode, out, err, time.monotonic() - started


MAIN = """
async def main():
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(deaf({times}), name="deaf-loop")
            await asyncio.sleep(0.05)
            print("ready", flush=True)
    finally:
        print("finally ran", flush=True)

sys.exit(run_until_signalled(main, grace_s=0.5, force_s=2.0))
"""


def test_a_clean_shutdown_runs_the_finally_blocks_and_exits_0() -> None:
    proc = start(MAIN.format(times=0))
    proc.send_signal(signal.SIGTERM)
    code, out, err, took = finish(proc, 10)
    assert code == 0, err
    assert "finally ran" in out
    assert "still running" not in err
    assert took < 0.5


def test_a_lost_cancel_is_repeated_after_the_grace_period() -> None:
    proc = start(MAIN.format(times=1))
    proc.send_signal(signal.SIGTERM)
    code, out, err, took = finish(proc, 10)
    assert code == 0, err
    assert "finally ran" in out
    assert "2 task(s) still running 0.5 s after the signal" in err  # main, deaf-loop
    assert "deaf-loop waiting at" in err  # names the task and where it waits
    assert 0.4 < took < 2.0


def test_a_task_that_never_stops_is_cut_off_at_the_deadline() -> None:
    proc = start(MAIN.format(times=10**6))
    proc.send_signal(signal.SIGTERM)
    code, _, err, took = finish(proc, 10)
    assert code == 1
    assert "shutdown not finished 2 s after SIGTERM: exiting now" in err
    assert 1.8 < took < 5


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_exits_at_once(second: signal.Signals) -> None:
    proc = start(MAIN.format(times=10**6).replace("force_s=2.0", "force_s=60.0"))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(second)
    code, _, err, took = finish(proc, 10)
    assert code == 1
    assert f"second {second.name} during shutdown" in err
    assert took < 2

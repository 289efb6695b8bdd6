"""``fusebox sim fleet`` as a user runs it: progress lines while it runs, a
summary and exit 0 on Ctrl-C, and exit 2 with a clear message for bad flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.mosquitto import MosquittoServer
from tests.harness.timing import timeout


def _fleet(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fusebox", "sim", "fleet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FUSEBOX_CLOUD_MQTT_URL": "mqtt://127.0.0.1:1"},
    )


def test_progress_lines_then_a_summary_on_ctrl_c(mosquitto: MosquittoServer) -> None:
    proc = _fleet(
        "--gateways", "20", "--mqtt-url", mosquitto.url,
        "--interval", "0.5", "--progress", "0.5", "--prefix", "cli",
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout(30)
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"exited early: {proc.wait()} {seen}"
            seen.append(line)
            if line.startswith("fleet ") and "20/20 connected" in line:
                break
        else:
            pytest.fail(f"no line with every gateway connected: {seen}")
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=timeout(30))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "backlog" in seen[-1] and "busy" in seen[-1] and "acked" in seen[-1]
    assert "fleet summary after" in rest and "readings produced" in rest


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gateways", "-1"], "cannot be negative"),
        (["--gateways", "0"], "at least one gateway or charger"),
        (["--gateways", "0", "--chargers", "5"], "--ocpp-url"),
        (["--mqtt-url", "http://x"], "scheme must be mqtt"),
        (["--mqtt-url", "mqtts://h:8883"], "plain TCP only"),
        (["--accounts", "/nonexistent/accounts.csv"], "--accounts"),
        (["--interval", "0"], "interval_s must be positive"),
    ],
)
def test_bad_arguments_get_a_clear_error(args: list[str], says: str) -> None:
    proc = _fleet(*args)
    out, err = proc.communicate(timeout=timeout(30))
    assert proc.returncode == 2, (out, err)
    assert says in err and "Traceback" not in err, err

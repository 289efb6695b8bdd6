"""The README's first command: ``fusebox demo`` shows readings in the cloud within
30 s and stops cleanly, on embedded defaults (no servers needed); its two
simulated chargers (OCPP 1.6 and 2.0.1) connect to the edge and charging
sessions reach the cloud's ``sessions`` table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusebox.demo import DEMO_CHARGERS
from tests.harness.procs import free_port
from tests.harness.timing import timeout

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("broker", ["auto", "amqtt"])
def test_demo_shows_readings_and_sessions_within_30s(
    artifacts_dir: Path, broker: str
) -> None:
    # Embedded PostgreSQL runs as its own system user, which must traverse the
    # data dir's parents; pytest keeps its tmp root at mode 0700 (and any other
    # pytest session on the machine resets it), so keep the state in artifacts.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusebox",
            "demo",
            "--duration",
            "30",
            "--interval",
            "1",
            "--state-dir",
            str(artifacts_dir / "demo"),
            "--cloud-port",
            str(free_port()),
            "--site-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=timeout(180),
        env={**os.environ, "FUSEBOX_EMBEDDED_BROKER": broker},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-3])
    assert summary["first_reading_s"] is not None
    assert summary["first_reading_s"] < 30
    assert summary["readings_in_cloud"] > 0
    for device in ("grid-glow", "grid-tasmota", "grid-shelly"):
        assert device in result.stdout, f"{device} not shown live"
    # both chargers booted on the edge (their boot events are in the cloud) and
    # at least one session (start or complete) reached PostgreSQL ``sessions``
    chargers = [c.id for c in DEMO_CHARGERS]
    assert summary["chargers_connected"] == sorted(chargers), summary
    assert summary["sessions_in_cloud"] >= 1, summary
    for c in DEMO_CHARGERS:
        shown = f"{c.id:<14} {c.ocpp:<5} connected"
        assert shown in result.stdout, f"{c.id} not shown connected live"
    # the web app's owner account (credentials printed) sees the live chargers
    assert "web app: http://127.0.0.1:" in result.stdout
    assert summary["owner_sees_chargers"] == sorted(chargers), summary
    # the demo runs on a simulated evening: the clock is shown, and the edge's
    # controller reports what each charger is given
    assert "simulated " in result.stdout
    assert "controller     cp-demo-16:" in result.stdout
    assert "stopped cleanly." in result.stdout

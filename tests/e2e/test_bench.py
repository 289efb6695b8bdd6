"""``fusebox bench pipeline``, ``fleet`` and ``ocpp`` run end to end (small), their
last line is the JSON the README documents, and they lose nothing. Timings are not
asserted (benchmarks print, tests check behaviour); the fleet bench's batching is
behaviour, so it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.mosquitto import MosquittoServer
from tests.harness.timing import timeout

pytestmark = pytest.mark.e2e


def _bench(
    args: list[str], *, servers: tuple[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``fusebox bench ARGS`` (against ``servers`` = (PostgreSQL, broker) if
    given); assert it exited 0 and return it with its last line's JSON."""
    env = dict(os.environ)
    if servers is not None:
        env["FUSEBOX_DATABASE_URL"], env["FUSEBOX_CLOUD_MQTT_URL"] = servers
    result = subprocess.run(
        [sys.executable, "-m", "fusebox", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout(300),
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return result, figures


def test_bench_pipeline_prints_its_figures(
    pg_server: str, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    result, figures = _bench(
        [
            "pipeline",
            "--readings",
            "20000",
            "--state-dir",
            str(tmp_path),
        ],
        servers=(pg_server, mosquitto.url),
    )
    for key in (
        "outbox_append_per_s",
        "drain_per_s",
        "copy_per_s",
        "drain_vs_copy",
        "edge_rss_mb",
    ):
        assert figures[key] > 0, key
    assert figures["rows_stored"] == 20000
    assert figures["lost"] == 0
    assert "[bench] drain:" in result.stderr


def test_bench_fleet_batches_live_readings_and_loses_nothing(
    pg_server: str, mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    result, figures = _bench(
        [
            "fleet",
            "--gateways",
            "10",
            "--duration",
            "6",
            "--state-dir",
            str(tmp_path),
        ],
        servers=(pg_server, mosquitto.url),
    )
    assert figures["lost"] == 0
    for phase in ("baseline", "linger"):
        f = figures[phase]
        assert f["readings"] > 0 and f["stored"] == f["readings"], f
        assert f["batches_per_s"] > 0, f
    # the linger is what this bench exists to show: several meters' messages
    # share a batch (10 gateways x 3 meters at 0.2 s: about 0.3x the batches)
    assert figures["batches_vs_baseline"] < 0.6, figures
    assert figures["linger"]["readings_per_batch"] > 6, figures
    assert "[bench] linger:" in result.stderr


def test_bench_ocpp_prints_its_figures(tmp_path: Path) -> None:
    _, figures = _bench(
        [
            "ocpp",
            "--chargers",
            "50",
            "--duration",
            "10",
            "--meter-interval",
            "2",
            "--heartbeat-interval",
            "5",
            "--state-dir",
            str(tmp_path),
        ],
    )
    assert figures["chargers"] == 50
    assert (
        figures["call_errors"] == 0
    )  # every Boot/Status/MeterValues/Heartbeat handled
    for key in (
        "msgs_per_s",
        "p99_ms",
        "edge_rss_mb",
        "kib_per_connection",
        "baseline_p99_ms",
    ):
        assert figures[key] > 0, key
    assert figures["failures"] == 0
    # after each boot the edge read the capabilities and installed the fail-safe
    assert figures["edge_calls_answered"] == 2 * 50

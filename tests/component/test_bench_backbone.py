"""The backbone's two benchmark commands run and print the JSON the README shows.

``python -m fusebox.bench_backbone`` (start times and MQTT QoS 1 rates, R1 vs R3,
on real nats-server processes) and ``python -m fusebox.bench_doors`` (the same
batches through the MQTT and the JetStream ingest doors into a real PostgreSQL).
Short runs: the figures are printed, not asserted; what is asserted is that they
are there and that nothing was lost on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.harness.timing import timeout


def _last_json(stdout: str) -> dict[str, object]:
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict)
    return figures


def test_bench_backbone_prints_start_times_and_rates() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusebox.bench_backbone",
            "--seconds",
            "1",
            "--publishers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=timeout(240),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = _last_json(result.stdout)
    assert {
        "start_s_1",
        "start_s_3",
        "qos1_per_s_r1_1pub",
        "qos1_per_s_r3_1pub",
    } <= set(figures)
    assert "stored in FUSEBOX_UP" in result.stdout


def test_bench_doors_stores_every_reading_through_both_doors(pg_server: str) -> None:
    env = {**os.environ, "FUSEBOX_DATABASE_URL": pg_server}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusebox.bench_doors",
            "--gateways",
            "2",
            "--batches",
            "5",
            "--readings",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=timeout(240),
        env=env,
    )
    # exit 1 means a door lost or doubled rows
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = _last_json(result.stdout)
    assert figures["bench"] == "ingest_doors"
    for door in ("mqtt", "jetstream"):
        d = figures[door]
        assert isinstance(d, dict)
        assert d["rows"] == d["expected_rows"] == 2 * 5 * 50
        assert float(d["readings_per_s"]) > 0

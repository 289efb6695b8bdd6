"""``fusebox bench api`` runs end to end on the test's PostgreSQL and reports its
figures as the last line; no wall-clock floors (a benchmark prints, it does not
fail on speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness.procs import REPO_ROOT
from tests.harness.timing import timeout

FIGURES = ("rps", "p50_ms", "p99_ms", "errors")


def test_bench_api_reports_reads_and_submissions(
    pg_server: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fusebox",
            "bench",
            "api",
            "--clients",
            "4",
            "--duration",
            "5",
            # the year of history scaled down: 2 days, 51,840 readings
            "--days",
            "2",
            "--database-url",
            pg_server,
            "--state-dir",
            str(tmp_path / "bench"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout(180),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "api" and result["clients"] == 4
    for phase in (
        "baseline",
        "reads",
        "submissions",
        "reads_under_login_flood",
        "login_flood",
        "readings_small",
        "readings_year",
    ):
        figures = result[phase]
        assert all(k in figures for k in FIGURES), (phase, figures)
        assert figures["errors"] == 0, (phase, figures, proc.stderr[-3000:])
        assert figures["requests"] > 0 and figures["rps"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert set(result["reads"]["by_endpoint"]) == {"sites", "live", "plan"}
    subs = result["submissions"]
    # answered 202 by the intake, then every one stored by its consumer
    assert subs["created"] == subs["stored"] > 0 and subs["drain_s"] >= 0
    assert subs["by_endpoint"]["replay"]["requests"] > 0
    assert result["login"]["errors"] == 0 and result["login"]["requests"] == 4
    assert result["reads_vs_baseline"] > 0
    for phase in ("readings_small", "readings_year"):
        assert set(result[phase]["by_endpoint"]) == {"page", "next", "power_w"}
    history = result["history"]
    per_day = 86_400 // history["step_s"] * history["streams"]
    small, year = history["small"], history["year"]
    assert small["days"] == year["days"] == 1  # --days 2: one day, then the other
    assert small["rows_copied"] == year["rows_copied"] == per_day
    # and the 30 minutes of the seeded batch
    assert small["rows_stored"] == per_day + 120
    assert year["rows_stored"] == 2 * per_day + 120
    assert result["readings_year_vs_small"]["p99"] > 0

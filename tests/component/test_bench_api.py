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
    for phase in ("baseline", "reads", "submissions"):
        figures = result[phase]
        assert all(k in figures for k in FIGURES), (phase, figures)
        assert figures["errors"] == 0, (phase, figures, proc.stderr[-3000:])
        assert figures["requests"] > 0 and figures["rps"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert set(result["reads"]["by_endpoint"]) == {"sites", "live", "plan"}
    subs = result["submissions"]
    assert subs["created"] == subs["stored"] > 0
    assert subs["by_endpoint"]["replay"]["requests"] > 0
    assert result["login"]["errors"] == 0 and result["login"]["requests"] == 4
    assert result["reads_vs_baseline"] > 0

"""Fixtures for every test tier; the harness lives in ``tests/harness``.

Registered here: ``mosquitto``, ``mosquitto2`` (private Mosquitto per test),
``nats_backbone``, ``nats_cluster``, ``backbone_factory`` (private nats-server backbone
per test),
``pg_server`` (session admin DSN), ``pg_dsn`` (fresh database per test), ``procs``
(subprocesses killed at teardown), ``tcp_proxy_factory`` (pausable TCP proxies) and
``artifacts_dir``. asyncio mode is ``auto`` (pyproject.toml); timeouts scale with
``FUSEBOX_TEST_TIME_UNIT`` (tests/harness/timing.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.harness.mosquitto import mosquitto, mosquitto2
from tests.harness.nats import backbone_factory, nats_backbone, nats_cluster
from tests.harness.postgres import pg_dsn, pg_server
from tests.harness.procs import REPO_ROOT, procs, tcp_proxy_factory

__all__ = [
    "artifacts_dir",
    "backbone_factory",
    "mosquitto",
    "mosquitto2",
    "nats_backbone",
    "nats_cluster",
    "pg_dsn",
    "pg_server",
    "procs",
    "tcp_proxy_factory",
]


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """``test-artifacts/<test id>/`` at the repo root (gitignored), emptied per test.

    Put logs and files worth keeping after a failure here; CI can upload the folder.
    """
    test_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    path = REPO_ROOT / "test-artifacts" / test_id
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path

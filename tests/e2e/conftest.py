from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.db import migrate
from tests.e2e.stack import Stack
from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import Procs, free_port


@pytest.fixture
async def stack(
    procs: Procs,
    mosquitto: MosquittoServer,
    mosquitto2: MosquittoServer,
    pg_dsn: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    """Site broker ``mosquitto``, cloud broker ``mosquitto2``, a fresh database with
    the schema; processes are started by the test through the Stack."""
    await migrate(pg_dsn)
    yield Stack(
        procs=procs,
        site=mosquitto,
        cloud=mosquitto2,
        dsn=pg_dsn,
        work=tmp_path,
        metrics_port=free_port(),
    )

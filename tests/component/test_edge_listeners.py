"""The real ``fusebox edge run`` with its listeners' ports already taken.

A ``metrics.listen`` port in use used to be ignored silently (the bind failed
inside the agent's TaskGroup, whose cancel an MQTT connect then lost), and a
SIGTERM then took 10-20 s. Now it is a start-up error: exit 2 and a message
naming the address and what to do. The installer's local API deliberately runs
on without its page when its port is taken (logged as an error); that edge must
still stop promptly on SIGTERM. Both run against real Mosquitto brokers, so the
MQTT connects race the listener as they do in the field.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import Procs, free_port
from tests.harness.timing import eventually, timeout


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A port on 127.0.0.1 held (bound and listening) by this test."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def write_config(
    path: Path,
    *,
    cloud: MosquittoServer,
    site: MosquittoServer,
    metrics_port: int,
    local_api_port: int,
) -> Path:
    path.write_text(
        f"""gateway_id = "gw-listen"
[cloud]
mqtt_url = "{cloud.url}"
[local]
mqtt_url = "{site.url}"
[outbox]
path = "{path.parent / "outbox.db"}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[local_api]
listen = "127.0.0.1:{local_api_port}"
[[meters]]
type = "glow"
id = "grid"
topic = "glow/listen-test"
"""
    )
    return path


async def test_a_metrics_port_in_use_stops_the_edge_at_start_with_exit_2(
    procs: Procs,
    mosquitto: MosquittoServer,
    mosquitto2: MosquittoServer,
    taken: socket.socket,
    tmp_path: Path,
) -> None:
    port = taken.getsockname()[1]
    config = write_config(
        tmp_path / "edge.toml",
        cloud=mosquitto2,
        site=mosquitto,
        metrics_port=port,
        local_api_port=free_port(),
    )
    edge = procs.start(["fusebox", "edge", "run", "--config", str(config)])
    code = await edge.wait_async(timeout_s=timeout(15))
    log = edge.log_text()
    assert code == 2, log
    assert f"metrics.listen = '127.0.0.1:{port}'" in log
    assert "address already in use" in log
    assert "choose another metrics.listen" in log
    assert "stop the other process" in log
    # refused before it started anything: no MQTT session, no traceback
    assert "connected to" not in log and "subscribed on" not in log
    assert "Traceback" not in log


async def test_an_edge_whose_local_api_port_is_taken_runs_on_and_stops_on_sigterm(
    procs: Procs,
    mosquitto: MosquittoServer,
    mosquitto2: MosquittoServer,
    taken: socket.socket,
    tmp_path: Path,
) -> None:
    api_port = taken.getsockname()[1]
    metrics_port = free_port()
    config = write_config(
        tmp_path / "edge.toml",
        cloud=mosquitto2,
        site=mosquitto,
        metrics_port=metrics_port,
        local_api_port=api_port,
    )
    edge = procs.start(["fusebox", "edge", "run", "--config", str(config)])

    async def serving() -> bool:
        log = edge.log_text()
        assert edge.is_running, log
        if "subscribed on" not in log or "connected to" not in log:
            return False
        async with httpx.AsyncClient() as client:
            try:
                r = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
            except httpx.TransportError:
                return False
        return r.status_code == 200 and "fusebox_meters_connected 1.0" in r.text

    await eventually(serving, timeout_s=timeout(20), message="edge up with metrics")
    log = edge.log_text()
    assert f"local api: cannot listen on 127.0.0.1:{api_port}" in log
    assert "choose another [local_api] listen" in log

    started = time.monotonic()
    code = await asyncio.to_thread(edge.terminate, timeout_s=timeout(15))
    took = time.monotonic() - started
    log = edge.log_text()
    assert code == 0, log
    assert took < timeout(3), f"SIGTERM took {took:.1f} s\n{log}"
    assert "still running" not in log
    assert "outbox closed cleanly" in log

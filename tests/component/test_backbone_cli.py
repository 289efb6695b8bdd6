"""``fusebox cloud backbone --cluster 3``: starts three nodes, prints their URLs and
the edge how-to, serves MQTT into FUSEBOX_UP, and Ctrl-C stops every node."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import psutil
import pytest

from cloud.backbone.streams import UP_STREAM
from tests.harness.nats import MqttProbe
from tests.harness.procs import Procs
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.timeout(timeout(120))


async def test_cloud_backbone_cluster_command(procs: Procs, tmp_path: Path) -> None:
    import nats

    data_dir = tmp_path / "bb"
    proc = procs.start(
        ["fusebox", "cloud", "backbone", "--cluster", "3", "--data-dir", str(data_dir)],
        name="backbone",
    )
    await eventually(
        lambda: "Ctrl-C" in proc.log_text(),
        timeout_s=timeout(60),
        message="the backbone prints its URLs",
    )
    text = proc.log_text()
    nats_urls = re.findall(r"NATS (nats://127\.0\.0\.1:\d+)", text)
    mqtt_urls = re.findall(r"MQTT (mqtt://127\.0\.0\.1:\d+)", text)
    assert len(nats_urls) == len(mqtt_urls) == 3
    assert "mqtt_url = " in text
    nc = await nats.connect(nats_urls)
    try:
        await nc.jetstream().add_consumer(
            UP_STREAM, durable_name="ingest", filter_subject="fusebox.v1.gw.*.up.>"
        )
        gw = await asyncio.to_thread(MqttProbe.connect, mqtt_urls[2], "fusebox-edge-x")
        try:
            assert await asyncio.to_thread(
                gw.publish, "fusebox/v1/gw/x/up/batch", b"hello"
            )
        finally:
            gw.close()
        info = await nc.jsm().stream_info(UP_STREAM)
        assert info.config.num_replicas == 3
        assert info.state.messages == 1
    finally:
        await nc.close()
    servers = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.name() == "nats-server"
    ]
    assert len(servers) == 3
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGINT)
    assert await proc.wait_async(timeout_s=timeout(30)) == 0
    assert "backbone: stopped" in proc.log_text()
    assert not any(p.is_running() and p.status() != "zombie" for p in servers)


async def test_killed_command_leaves_no_node_behind(
    procs: Procs, tmp_path: Path
) -> None:
    proc = procs.start(
        ["fusebox", "cloud", "backbone", "--data-dir", str(tmp_path / "bb")],
        name="backbone",
    )
    await eventually(
        lambda: "Ctrl-C" in proc.log_text(),
        timeout_s=timeout(60),
        message="the backbone is up",
    )
    assert proc.pid is not None
    (server,) = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.name() == "nats-server"
    ]
    os.kill(proc.pid, signal.SIGKILL)
    await eventually(
        lambda: not server.is_running() or server.status() == "zombie",
        timeout_s=timeout(20),
        message="nats-server exits with the killed command",
    )

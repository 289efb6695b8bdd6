"""Backbone configuration: the generated nats-server configs pass nats-server's own
check, listen on loopback only, agree with the stream limits and the cloud packet
limit; accounts refuse ids nats-server's MQTT cannot carry; streams are created
idempotently; a missing nats-server is reported with the command that installs it.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cloud.backbone import cluster as cluster_module
from cloud.backbone.accounts import (
    gateway_subjects,
    gateway_user,
    hash_password,
    service_user,
)
from cloud.backbone.cluster import (
    BackboneCluster,
    NatsServerNotFoundError,
    find_nats_server,
)
from cloud.backbone.config import DEFAULT_MAX_FILE_STORE_BYTES, render_node_config
from cloud.backbone.streams import UP_STREAM, ensure_streams, stream_plans
from protocols.broker_limits import CLOUD_MAX_PACKET_BYTES
from tests.harness.nats import Backbone
from tests.harness.procs import REPO_ROOT
from tests.harness.timing import timeout


def _layout(tmp_path: Path, nodes: int) -> BackboneCluster:
    return BackboneCluster.create(
        tmp_path,
        nodes=nodes,
        users=[
            gateway_user("gw1", hash_password("pw", cost=4)),
            service_user("ingest", hash_password("pw", cost=4)),
        ],
    )


@pytest.mark.parametrize("nodes", [1, 3])
def test_generated_config_passes_nats_server_check(tmp_path: Path, nodes: int) -> None:
    backbone = _layout(tmp_path, nodes)
    for node in backbone.nodes:
        node.write_config(backbone.spec, backbone.users)
        check = subprocess.run(
            [node.binary, "-t", "-c", str(node.conf_path)],
            capture_output=True,
            text=True,
            timeout=timeout(10),
        )
        assert check.returncode == 0, check.stdout + check.stderr
        text = node.conf_path.read_text()
        listens = re.findall(r'(?:listen|http): "([^"]+)"', text)
        assert len(listens) == (4 if nodes > 1 else 3)
        assert all(address.startswith("127.0.0.1:") for address in listens)
        assert f"stream_replicas: {min(nodes, 3)}" in text
        assert f"max_payload: {CLOUD_MAX_PACKET_BYTES}" in text
        assert "$2b$04$" in text and '"pw"' not in text  # only hashes are stored


def test_every_port_is_distinct(tmp_path: Path) -> None:
    backbone = _layout(tmp_path, 3)
    ports = [
        port
        for node in backbone.nodes
        for port in (
            node.spec.client_port,
            node.spec.mqtt_port,
            node.spec.cluster_port,
            node.spec.monitor_port,
        )
    ]
    assert len(set(ports)) == 12


def test_single_node_has_no_cluster_block(tmp_path: Path) -> None:
    backbone = _layout(tmp_path, 1)
    text = render_node_config(backbone.nodes[0].spec, backbone.spec, [])
    assert "cluster {" not in text
    assert "authorization" not in text  # no users: open, loopback only


def test_stream_limits_agree_with_the_nodes() -> None:
    single_up, single_dead = stream_plans(1)
    up, dead = stream_plans(5)
    assert (single_up.replicas, single_dead.replicas, up.replicas) == (1, 1, 3)
    assert up.max_msg_size_bytes == CLOUD_MAX_PACKET_BYTES
    assert (up.retention, up.discard) == ("interest", "new")
    # every replica of both streams fits in one node's file store
    assert up.max_bytes + dead.max_bytes < DEFAULT_MAX_FILE_STORE_BYTES


def test_gateway_permissions_name_only_its_own_subjects() -> None:
    publish, subscribe = gateway_subjects("gw1")
    assert publish == ("fusebox.v1.gw.gw1.up.>",)
    assert "fusebox.v1.gw.gw1.down.>" in subscribe
    assert not any(".gw.*" in s or s in (">", "fusebox.>") for s in subscribe)
    for bad in ("a.b", "", "a b", "*", ">", "-x"):
        with pytest.raises(ValueError):
            gateway_subjects(bad)


def test_missing_nats_server_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FUSEBOX_NATS_SERVER", raising=False)
    monkeypatch.setattr(cluster_module, "_NATS_SERVER_CANDIDATES", ())
    assert find_nats_server() is None
    with pytest.raises(NatsServerNotFoundError, match="apt-get install -y nats-server"):
        BackboneCluster.create(tmp_path)


async def test_streams_are_created_and_updated_idempotently(
    nats_backbone: Backbone,
) -> None:
    url = nats_backbone.nats_urls[0]
    up, dead = stream_plans(1)
    assert await ensure_streams(url, 1, timeout_s=timeout(10)) == [
        "FUSEBOX_UP",
        "FUSEBOX_DEAD",
    ]
    shorter = dataclasses.replace(up, max_age_s=3600.0)
    await ensure_streams(url, 1, timeout_s=timeout(10), plans=(shorter, dead))
    nc = await nats_backbone.connect()
    try:
        info = await nc.jsm().stream_info(UP_STREAM)
        assert info.config.max_age == 3600.0
        assert info.config.max_bytes == up.max_bytes
        assert info.config.max_msg_size == CLOUD_MAX_PACKET_BYTES
        streams = {s.config.name for s in await nc.jsm().streams_info()}
        assert {"FUSEBOX_UP", "FUSEBOX_DEAD"} <= streams
    finally:
        await nc.close()


def _settings(text: str) -> dict[str, str]:
    """``key: value`` lines of a nats-server config (flattened, last wins)."""
    return dict(re.findall(r"^\s*(\w+):\s*(.+?)\s*$", text, flags=re.MULTILINE))


def test_compose_backbone_config_agrees_with_the_code(tmp_path: Path) -> None:
    shipped = REPO_ROOT / "deploy/nats/backbone.conf"
    check = subprocess.run(
        [find_nats_server() or "nats-server", "-t", "-c", str(shipped)],
        capture_output=True,
        text=True,
        env={"SERVER_NAME": "nats-1"},
        timeout=timeout(10),
    )
    assert check.returncode == 0, check.stdout + check.stderr
    backbone = _layout(tmp_path, 3)
    generated = _settings(render_node_config(backbone.nodes[0].spec, backbone.spec))
    compose_side = _settings(shipped.read_text())
    for key in (
        "max_payload",
        "max_file_store",
        "max_memory_store",
        "stream_replicas",
        "name",
    ):
        assert compose_side[key] == generated[key], key
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    nodes = [f"nats-{i}" for i in (1, 2, 3)]
    routes = re.findall(r"nats-route://([\w-]+):6222", compose_side["routes"])
    assert routes == nodes
    for node in nodes:
        assert compose["services"][node]["environment"]["SERVER_NAME"] == node

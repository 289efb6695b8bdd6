"""The brokers' packet size limits against the largest messages Fusebox builds, and
every config we ship or generate saying the same limit (so they cannot drift).

The real brokers refusing what is over the limit, and the edge's largest batches
passing whole: tests/component/test_broker_limits.py.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from edge.config import UplinkSettings
from edge.site_broker import mosquitto_settings, site_broker_config
from edge.uplink import _BATCH_HEAD_BYTES, _ROW_BYTES, _STREAM_BYTES
from fusebox.embedded import MosquittoProcess
from protocols import contract
from protocols.broker_limits import (
    CLOUD_MAX_PACKET_BYTES,
    MQTT_MAX_TOPIC_BYTES,
    PUBLISH_OVERHEAD_MAX_BYTES,
    SITE_MAX_PACKET_BYTES,
    max_payload_bytes,
    publish_packet_bytes,
)
from protocols.lease import MAX_LEASE_BYTES, down_schedule
from protocols.meters import MAX_PAYLOAD_BYTES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LONGEST_GW = "g" * 64  # protocols.contract.GatewayId allows 64 characters


def limit_in(text: str) -> int:
    return int(mosquitto_settings(text)["max_packet_size"])


# --------------------------------------------------------------------------- relations


def test_the_cloud_limit_holds_the_largest_batch_and_lease() -> None:
    topic = contract.up_batch(LONGEST_GW)
    batch = publish_packet_bytes(topic, contract.MAX_BATCH_BYTES)
    lease = publish_packet_bytes(down_schedule(LONGEST_GW), MAX_LEASE_BYTES)
    assert batch <= CLOUD_MAX_PACKET_BYTES
    assert lease <= CLOUD_MAX_PACKET_BYTES
    # even with the longest topic MQTT allows and a kilobyte of properties
    largest = contract.MAX_BATCH_BYTES + PUBLISH_OVERHEAD_MAX_BYTES
    assert largest <= CLOUD_MAX_PACKET_BYTES
    fits = max_payload_bytes(topic, CLOUD_MAX_PACKET_BYTES)
    assert fits > contract.MAX_BATCH_BYTES
    # and it refuses what the probe could send (8 MB)
    assert CLOUD_MAX_PACKET_BYTES < 8_000_000


def test_the_site_limit_holds_the_largest_meter_reading() -> None:
    assert SITE_MAX_PACKET_BYTES >= MAX_PAYLOAD_BYTES + PUBLISH_OVERHEAD_MAX_BYTES
    assert SITE_MAX_PACKET_BYTES < CLOUD_MAX_PACKET_BYTES


def test_the_edge_cannot_ask_for_more_records_than_a_batch_may_hold() -> None:
    most = UplinkSettings.model_fields["batch_max_records"].metadata
    assert any(getattr(m, "le", None) == contract.MAX_BATCH_RECORDS for m in most)


def test_the_edges_batch_estimate_is_an_upper_bound() -> None:
    """edge.uplink cuts batches by an estimate; each part of it must be at least
    what MessagePack really takes for the biggest values, or a batch could pass
    MAX_BATCH_BYTES (and then the cloud broker's limit set from it)."""
    row = [2**63 - 1, 2**63 - 1, 2**32 - 1, -1.0e308]
    assert len(msgpack.packb(row)) <= _ROW_BYTES
    event_row = [2**63 - 1, 2**63 - 1, 2**32 - 1, {"k": "v" * 70_000}]
    data = msgpack.packb(event_row[3])
    assert len(msgpack.packb(event_row)) <= _ROW_BYTES - 9 + len(data)
    device, name = "d" * 70_000, "n" * 70_000
    assert len(msgpack.packb([device, name])) <= _STREAM_BYTES + 140_000
    head = contract.batch_dict(
        gw=LONGEST_GW,
        epoch=2**63 - 1,
        first_seq=2**63 - 1,
        last_seq=2**63 - 1,
        sent_ms=2**63 - 1,
        streams=[],
        readings=[],
        events=[],
    )
    assert len(contract.pack(head)) <= _BATCH_HEAD_BYTES


# --------------------------------------------------------------------------- formula


@pytest.mark.parametrize(
    ("topic", "payload", "v5", "expected"),
    [
        # 1 type + 1 length + (2 + 1 topic + 2 id) + 3 payload
        ("t", 3, False, 1 + 1 + 5 + 3),
        ("t", 3, True, 1 + 1 + 6 + 3),  # + empty properties
        ("t", 122, False, 1 + 1 + 127),  # remaining 127: one length byte
        ("t", 123, False, 1 + 2 + 128),  # remaining 128: two
        ("t", 16_384 - 5, False, 1 + 3 + 16_384),  # three from 128**2
    ],
)
def test_packet_size(topic: str, payload: int, v5: bool, expected: int) -> None:
    assert publish_packet_bytes(topic, payload, v5=v5) == expected


def test_max_payload_is_the_inverse() -> None:
    for limit in (100, 128, 16_390, SITE_MAX_PACKET_BYTES, CLOUD_MAX_PACKET_BYTES):
        fits = max_payload_bytes("a/b", limit)
        assert publish_packet_bytes("a/b", fits) <= limit
        assert publish_packet_bytes("a/b", fits + 1) > limit
    with pytest.raises(ValueError, match="not valid MQTT"):
        publish_packet_bytes("x" * (MQTT_MAX_TOPIC_BYTES + 1), 0)


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "conf", ["mosquitto-cloud.conf", "mosquitto/mosquitto-dynsec.conf"]
)
def test_the_shipped_cloud_brokers_have_the_cloud_limit(conf: str) -> None:
    assert limit_in((DEPLOY / conf).read_text()) == CLOUD_MAX_PACKET_BYTES


def test_the_site_brokers_have_the_site_limit() -> None:
    shipped = (DEPLOY / "mosquitto-site.conf").read_text()
    written = site_broker_config(persistence_location="/data")
    assert limit_in(shipped) == limit_in(written) == SITE_MAX_PACKET_BYTES


def test_the_embedded_broker_writes_a_limit(tmp_path: Path) -> None:
    broker = MosquittoProcess(state_dir=tmp_path)
    broker._write_conf(1883)
    assert limit_in(broker.conf_path.read_text()) == CLOUD_MAX_PACKET_BYTES
    broker.max_packet_size = SITE_MAX_PACKET_BYTES
    broker._write_conf(1883)
    assert limit_in(broker.conf_path.read_text()) == SITE_MAX_PACKET_BYTES

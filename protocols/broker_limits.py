"""MQTT packet size limits of the brokers Fusebox ships, derived from the largest
legitimate message each carries (pure: constants and arithmetic).

Without a limit Mosquitto accepts any packet up to the protocol's 256 MB: one
client can make the broker read, hold and (for a retained or queued message)
persist and forward megabytes at will. Mosquitto 2.0's ``max_packet_size BYTES``
(``man mosquitto.conf``) bounds a whole packet, header and topic included: a client
that sends a bigger one is **disconnected** before the broker buffers it (MQTT 5
clients are told the limit in the CONNACK and get DISCONNECT 0x95 "packet too
large"; 3.1.1 clients just lose the connection). The older
``message_size_limit`` is not used: it reads the whole payload first, then drops
it while completing the QoS flow, so a 3.1.1 sender gets a PUBACK for a message
nobody will receive.

The limits, and why they are safe (``tests/unit/test_broker_limit_rules.py`` keeps
these relations true, and that every config below says the same number):

``CLOUD_MAX_PACKET_BYTES`` = 3 MiB, in ``deploy/mosquitto-cloud.conf``,
    ``deploy/mosquitto/mosquitto-dynsec.conf`` and the private Mosquitto of
    ``fusebox.embedded`` (the demo's and the tests' brokers). The largest
    legitimate message is a gateway's reading batch: the edge never builds one
    over ``protocols.contract.MAX_BATCH_BYTES`` (2 MiB; ``edge.uplink`` cuts a
    batch to fit, and the ingest worker refuses a bigger payload anyway), plus at
    most :data:`PUBLISH_OVERHEAD_MAX_BYTES`. Leases (``MAX_LEASE_BYTES``, 512 KiB)
    and everything else are smaller. 3 MiB leaves about 0.8 MiB of margin; an
    8 MB message is refused.
``SITE_MAX_PACKET_BYTES`` = 256 KiB, in ``deploy/mosquitto-site.conf`` and the
    config ``fusebox edge init`` writes (``edge.site_broker``). The largest
    legitimate message is a meter's reading: the edge's decoders refuse a payload
    over ``protocols.meters.MAX_PAYLOAD_BYTES`` (64 KiB, counted as
    ``too_large``); past 256 KiB the broker disconnects the sender instead.

Raise a limit only together with the message cap it covers.
"""

from __future__ import annotations

__all__ = [
    "CLOUD_MAX_PACKET_BYTES",
    "MQTT_MAX_TOPIC_BYTES",
    "PUBLISH_OVERHEAD_MAX_BYTES",
    "SITE_MAX_PACKET_BYTES",
    "max_payload_bytes",
    "publish_packet_bytes",
]

CLOUD_MAX_PACKET_BYTES = 3 * 1024 * 1024
SITE_MAX_PACKET_BYTES = 256 * 1024

# A topic name is a UTF-8 string with a 2-byte length: at most 65,535 bytes.
MQTT_MAX_TOPIC_BYTES = 65_535
# Properties an MQTT 5 PUBLISH of ours may carry (none today; room for a few).
_V5_PROPERTIES_MAX_BYTES = 1024

# Fixed header (1 byte + at most 4 of remaining length), topic (2 + topic),
# packet id (2), MQTT 5 properties: what a PUBLISH adds to its payload at most.
PUBLISH_OVERHEAD_MAX_BYTES = (
    1 + 4 + 2 + MQTT_MAX_TOPIC_BYTES + 2 + (4 + _V5_PROPERTIES_MAX_BYTES)
)


def publish_packet_bytes(topic: str, payload_bytes: int, *, v5: bool = True) -> int:
    """The size of a QoS 1 PUBLISH packet of ``payload_bytes`` on ``topic`` (the
    whole packet, as MQTT 5 defines "packet size"). Mosquitto 2.0.11 compares the
    limit with this size less the 1-4 bytes of "remaining length" (measured, see
    tests/component/test_broker_limits.py), so a packet sized here at or under
    ``max_packet_size`` always passes."""
    topic_bytes = len(topic.encode("utf-8"))
    if topic_bytes > MQTT_MAX_TOPIC_BYTES:
        raise ValueError(f"a topic of {topic_bytes} bytes is not valid MQTT")
    variable = 2 + topic_bytes + 2 + (1 if v5 else 0)  # v5: empty properties
    remaining = variable + payload_bytes
    length_bytes = 1
    while remaining >= 128**length_bytes and length_bytes < 4:
        length_bytes += 1
    return 1 + length_bytes + remaining


def max_payload_bytes(topic: str, packet_limit: int, *, v5: bool = True) -> int:
    """The largest payload a QoS 1 PUBLISH on ``topic`` may carry within
    ``packet_limit`` bytes (the inverse of :func:`publish_packet_bytes`)."""
    payload = max(0, packet_limit - publish_packet_bytes(topic, 0, v5=v5) - 3)
    while publish_packet_bytes(topic, payload + 1, v5=v5) <= packet_limit:
        payload += 1
    while payload and publish_packet_bytes(topic, payload, v5=v5) > packet_limit:
        payload -= 1
    return payload

"""Backbone benchmark: nats-server start times and MQTT QoS 1 publish rates, R1 vs R3.

``python -m fusebox.bench_backbone [--seconds 5] [--publishers 1,4] [--payload 1024]``

For one node (``FUSEBOX_UP`` R1) and a 3-node cluster (R3) on loopback, it measures:

* start: from spawning the nodes to every node's ``/healthz?js-enabled-only`` (all
  processes up), to the streams being created (JetStream meta leader elected) and
  to one QoS 1 message PUBACKed through every node (nats-server creates its MQTT
  streams at the first MQTT client);
* publish: gateways (paho, MQTT 3.1.1, each its own thread and connection, up to 100
  messages in flight) publish QoS 1 batches of ``--payload`` bytes to their own
  ``fusebox/v1/gw/<id>/up/batch`` for ``--seconds``, spread over the nodes; the rate
  counts PUBACKs per second, and the stream's count is read to check them in.

The load generator is Python on the same machine, so the figures are a floor for
nats-server. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cloud.backbone.cluster import BackboneCluster
from cloud.backbone.streams import UP_STREAM, ensure_streams

__all__ = ["main", "measure"]


def _publisher(url: str, gateway: str, payload: bytes, until: float) -> int:
    """Publish QoS 1 until ``until`` (monotonic; at least one message) with up to
    100 in flight, wait for the last PUBACKs; return the number of PUBACKs."""
    import urllib.parse

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"fusebox-edge-{gateway}"
    )
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(200)
    acked = 0
    lock = threading.Lock()

    def on_publish(*_args: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1

    client.on_publish = on_publish
    parts = urllib.parse.urlsplit(url)
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    topic = f"fusebox/v1/gw/{gateway}/up/batch"
    pending: list[Any] = []
    while True:
        pending.append(client.publish(topic, payload, qos=1))
        if len(pending) >= 100:
            pending.pop(0).wait_for_publish(10)
        if time.monotonic() >= until:
            break
    for info in pending:  # the last ones in flight
        info.wait_for_publish(10)
    with lock:
        done = acked
    client.disconnect()
    client.loop_stop()
    return done


async def _publish_rate(
    cluster: BackboneCluster, publishers: int, payload_bytes: int, seconds: float
) -> dict[str, float]:
    import nats

    nc = await nats.connect(cluster.nats_urls)
    js = nc.jetstream()
    consumer = f"bench{publishers}"
    await js.add_consumer(
        UP_STREAM, durable_name=consumer, filter_subject="fusebox.v1.gw.*.up.>"
    )
    before = (await nc.jsm().stream_info(UP_STREAM)).state.messages
    payload = b"x" * payload_bytes
    until = time.monotonic() + seconds
    started = time.monotonic()
    counts = await asyncio.gather(
        *(
            asyncio.to_thread(
                _publisher,
                cluster.mqtt_urls[i % len(cluster.mqtt_urls)],
                f"bench{publishers}-{i}",
                payload,
                until,
            )
            for i in range(publishers)
        )
    )
    elapsed = time.monotonic() - started
    stored = (await nc.jsm().stream_info(UP_STREAM)).state.messages - before
    await js.delete_consumer(UP_STREAM, consumer)
    await nc.close()
    acked = sum(counts)
    return {"acked": acked, "stored": stored, "rate": acked / elapsed}


def measure(
    nodes: int, publisher_counts: list[int], payload_bytes: int, seconds: float
) -> dict[str, Any]:
    """Start ``nodes`` nodes, time it, publish, stop; the figures."""
    with tempfile.TemporaryDirectory(prefix="fusebox-bench-backbone-") as tmp:
        cluster = BackboneCluster.create(Path(tmp), nodes=nodes)
        spawn = time.monotonic()
        cluster.start()
        ready_s = time.monotonic() - spawn
        try:
            asyncio.run(ensure_streams(cluster.nats_urls, nodes, timeout_s=60.0))
            streams_s = time.monotonic() - spawn
            # each node sets up its MQTT side (streams $MQTT_*) at its first MQTT
            # client: not part of the publish rate
            mqtt_ready_s = _warm_up(cluster) + streams_s
            rates = {
                count: asyncio.run(
                    _publish_rate(cluster, count, payload_bytes, seconds)
                )
                for count in publisher_counts
            }
        finally:
            cluster.stop()
    return {
        "nodes": nodes,
        "ready_s": ready_s,
        "streams_s": streams_s,
        "mqtt_ready_s": mqtt_ready_s,
        "rates": rates,
    }


def _warm_up(cluster: BackboneCluster) -> float:
    """One QoS 1 message through every node's MQTT listener; the seconds that took
    (returned). Then 1 s of publishing through each node, not measured: the first
    seconds after a cluster forms are slow (leaders still settling)."""
    started = time.monotonic()
    for i, url in enumerate(cluster.mqtt_urls):
        _publisher(url, f"warmup{i}", b"w", time.monotonic())
    ready_s = time.monotonic() - started
    for i, url in enumerate(cluster.mqtt_urls):
        _publisher(url, f"warmup{i}", b"w" * 1024, time.monotonic() + 1.0)
    return ready_s


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; the last line is JSON."""
    parser = argparse.ArgumentParser(prog="python -m fusebox.bench_backbone")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--publishers", default="1,4", help="comma-separated counts")
    parser.add_argument("--payload", type=int, default=1024, help="bytes per batch")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.publishers.split(",")]
    python = platform.python_version()
    print(f"machine: {platform.node()} {platform.machine()}, python {python}")
    summary: dict[str, Any] = {}
    for nodes in (1, 3):
        result = measure(nodes, counts, args.payload, args.seconds)
        replicas = "R3" if nodes > 1 else "R1"
        print(
            f"{nodes} node(s): processes ready {result['ready_s']:.2f} s, streams "
            f"ready {result['streams_s']:.2f} s, MQTT on every node "
            f"{result['mqtt_ready_s']:.2f} s"
        )
        summary[f"start_s_{nodes}"] = round(result["streams_s"], 2)
        for count, figures in result["rates"].items():
            print(
                f"  {replicas}, {count} MQTT QoS1 publisher(s), {args.payload} B: "
                f"{figures['rate']:.0f} PUBACK/s ({figures['acked']} acked, "
                f"{figures['stored']} stored in {UP_STREAM})"
            )
            summary[f"qos1_per_s_{replicas.lower()}_{count}pub"] = round(
                figures["rate"]
            )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

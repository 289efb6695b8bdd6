"""The edge side of ``fusebox bench pipeline``, run as its own process so that its
peak RSS is the edge's alone.

    python -m fusebox.bench_edge fill  --db FILE --readings N
    python -m fusebox.bench_edge drain --db FILE --mqtt-url URL --gateway-id ID

Each prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta

from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url

DEVICES = 10
START = datetime(2026, 3, 1, tzinfo=UTC)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def messages(first: int, count: int) -> list[list[Reading]]:
    """Meter messages ``first .. first+count-1``: each an energy register and a
    power sample of one of ten devices, ten seconds apart per device."""
    out: list[list[Reading]] = []
    for i in range(first, first + count):
        device = f"meter-{i % DEVICES:02d}"
        ts = START + timedelta(seconds=10 * (i // DEVICES))
        out.append(
            [
                Reading(device, "import_energy_wh", ts, 1_000_000.0 + i),
                Reading(device, "power_w", ts, float(200 + i % 3000)),
            ]
        )
    return out


async def fill(db: str, n: int, chunk_messages: int = 5_000) -> dict[str, float]:
    outbox = Outbox.open(db, cap_bytes=0, synchronous="FULL")
    await outbox.start()
    total = 0
    msgs_all = n // 2
    next_progress = time.monotonic() + 5
    elapsed = 0.0
    for start in range(0, msgs_all, chunk_messages):
        # Made outside the clock: what is timed is the edge's work, from the
        # messages of 5,000 meters arriving at once to all of them durable.
        batch = messages(start, min(chunk_messages, msgs_all - start))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(outbox.submit(m) for m in batch))
        elapsed += time.perf_counter() - t0
        total += sum(r.accepted for r in results)
        if time.monotonic() > next_progress:
            print(f"  fill: {total:,} readings appended", file=sys.stderr)
            next_progress = time.monotonic() + 5
    stats = await outbox.stats()
    await outbox.close()
    return {
        "appended": total,
        "append_per_s": total / elapsed,
        "outbox_bytes": stats.used_bytes,
        "rss_mb": peak_rss_mb(),
    }


async def drain(
    db: str, mqtt_url: str, gateway_id: str, window: int, batch: int
) -> dict[str, float]:
    outbox = Outbox.open(db, cap_bytes=0)
    await outbox.start()
    before = await outbox.stats()
    uplink = Uplink(
        outbox,
        UplinkConfig(
            gateway_id=gateway_id,
            target=parse_mqtt_url(mqtt_url),
            client_id=f"bench-{gateway_id}",
            window=window,
            batch_max_records=batch,
            ack_timeout_s=60,
        ),
    )
    t0 = time.perf_counter()
    task = asyncio.create_task(uplink.run())
    next_progress = time.monotonic() + 5
    while True:
        s = await outbox.stats()
        if s.backlog_records == 0:
            break
        if time.monotonic() > next_progress:
            print(
                f"  drain: {before.backlog_records - s.backlog_records:,} of "
                f"{before.backlog_records:,} acked",
                file=sys.stderr,
            )
            next_progress = time.monotonic() + 5
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await outbox.close()
    return {
        "drained": before.backlog_records,
        "drain_s": elapsed,
        "drain_per_s": before.backlog_records / elapsed,
        "busy": uplink.metrics.busy,
        "timeouts": uplink.metrics.timeouts,
        "rss_mb": peak_rss_mb(),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fill", "drain"])
    p.add_argument("--db", required=True)
    p.add_argument("--readings", type=int, default=1_000_000)
    p.add_argument("--mqtt-url")
    p.add_argument("--gateway-id", default="bench-gw")
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--batch", type=int, default=5000)
    a = p.parse_args()
    if a.mode == "fill":
        result = asyncio.run(fill(a.db, a.readings))
    else:
        result = asyncio.run(drain(a.db, a.mqtt_url, a.gateway_id, a.window, a.batch))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

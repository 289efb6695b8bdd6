"""Child process of ``test_outbox.py``'s kill -9 test: appends until it is killed.

    python _outbox_writer.py OUTBOX_PATH DEVICES GROUPS_IN_FLIGHT

Tick ``k`` is one group: for every device ``m<i>`` an ``import_energy_wh`` register
of ``k * 10 + i`` and a ``power_w`` sample of ``(k * 7 + i) % 5000`` at
``BASE + k * 10 s``. It resumes after the last tick the outbox holds and, only after
``Outbox.submit``'s future resolved (the group is durable), prints
``k first_seq last_seq`` and flushes.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from edge.outbox import Outbox  # noqa: E402
from protocols.readings import Reading  # noqa: E402

BASE = datetime(2024, 3, 1, tzinfo=UTC)
TICK_S = 10


def group(k: int, devices: int) -> list[Reading]:
    ts = BASE + timedelta(seconds=TICK_S * k)
    items: list[Reading] = []
    for i in range(devices):
        items.append(Reading(f"m{i}", "import_energy_wh", ts, float(k * 10 + i)))
        items.append(Reading(f"m{i}", "power_w", ts, float((k * 7 + i) % 5000)))
    return items


async def main(path: str, devices: int, in_flight: int) -> None:
    outbox = Outbox.open(path)
    await outbox.start()
    stats = await outbox.stats()
    k = 0
    if stats.last_seq:
        (last,) = await outbox.read(stats.last_seq, stats.last_seq, 1)
        k = (last.ts_ms - int(BASE.timestamp() * 1000)) // (TICK_S * 1000) + 1
    out = sys.stdout
    while True:
        futures = [
            (k + j, outbox.submit(group(k + j, devices))) for j in range(in_flight)
        ]
        k += in_flight
        for tick, future in futures:
            result = await future
            out.write(f"{tick} {result.first_seq} {result.last_seq}\n")
            out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

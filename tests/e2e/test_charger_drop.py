"""The charger's connection drops mid-session: queued transaction messages are
delivered later, in order, and the session reaches the cloud exactly once.

``fusebox sim charger`` (1.6 and 2.0.1) talks to the real edge process through a
TCP proxy. Once meter values flow, the proxy cuts the connection and refuses new
ones (``refuse``: the port is closed; ``blackhole``: connections are accepted
and never answered, so the charger's opening handshake times out); the charger
keeps charging, queues its MeterValues / TransactionEvents and
the stop, and delivers them when the proxy lets it back in.

Checked against the charger's ledger (one line per message the edge answered):

* ``sessions`` has the session once, with the ledger's meter start and stop;
* every energy reading the charger sent (also those queued during the outage) is
  in ``readings`` exactly once with its value, and nothing else is there for the
  charger. The edge's outbox drops a reading not newer than the stream's last one,
  so a queued message delivered out of order would show up here as missing;
* order: the cloud's readings of the charger have rising timestamps in seq order,
  and the session_stopped event comes after every one of them; the ledger (in
  the order the edge answered) has rising timestamps, and for 2.0.1 seqNos
  0, 1, 2, ... with none skipped or repeated;
* the outage really happened: messages produced during it are flagged offline in
  the ledger and were answered after the proxy came back, and the charger
  connected to the edge twice.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.stack import GATEWAY, Stack, read_charger_ledger
from tests.harness.procs import PauseMode, ProxyFactory, free_port
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery"
CHARGER = "SIM1"
TAG = "TAG1"
OUTAGE_MIN_S = 10.0
SCENARIO = [
    {"at": 1, "action": "plug", "connector": 1},
    {"at": 2, "action": "authorize+start", "connector": 1, "id_tag": TAG},
    {"at": 18, "action": "stop", "connector": 1},
    {"at": 19, "action": "unplug", "connector": 1},
]


def _queued(state: Path) -> list[dict[str, Any]]:
    """The charger's undelivered transaction messages (its state file)."""
    try:
        data = json.loads(state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return list(data.get("queue", []))


def _ts_ms(text: str) -> int:
    # the edge's outbox keeps milliseconds, computed the same way
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _fetch(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_queued_messages_arrive_in_order_after_a_drop(
    stack: Stack, tcp_proxy_factory: ProxyFactory, version: str, mode: PauseMode
) -> None:
    port = free_port()
    stack.write_edge_config()
    stack.add_ocpp_charger(port=port, charger=CHARGER, password=PASSWORD, id_tag=TAG)
    stack.ingest()
    edge = stack.edge()
    await eventually(
        lambda: _listening(port), timeout_s=timeout(30), message="edge OCPP port up"
    )
    proxy = tcp_proxy_factory(f"ws://127.0.0.1:{port}")
    sim, ledger, state = stack.start_scenario_charger(
        url=proxy.url_for(f"ws://127.0.0.1:{port}/ocpp"),
        charger=CHARGER,
        password=PASSWORD,
        version=version,
        scenario=SCENARIO,
    )

    def metered_online() -> bool:
        lines = read_charger_ledger(ledger)
        return sum(1 for x in lines if x["kind"] == "meter" and not x["offline"]) >= 2

    await eventually(metered_online, timeout_s=timeout(40), message="meter values")
    # --- the outage: existing connection cut, new ones refused
    assert "connection lost" not in sim.log_text()
    proxy.pause(mode=mode)
    paused_at = time.monotonic()
    accepted_before = proxy.connections_accepted
    # once the charger has noticed, nothing more can be answered until the resume
    await eventually(
        lambda: "connection lost" in sim.log_text(),
        timeout_s=timeout(30),
        message="the charger saw the drop",
    )
    acked_before = len(read_charger_ledger(ledger))

    def stop_queued() -> bool:
        offline = [e["kind"] for e in _queued(state) if e["offline"]]
        return "stop" in offline and offline.count("meter") >= 3

    await eventually(
        stop_queued, timeout_s=timeout(60), message="the stop queued while offline"
    )
    queued = _queued(state)
    await asyncio.sleep(max(0.0, OUTAGE_MIN_S - (time.monotonic() - paused_at)))
    assert len(read_charger_ledger(ledger)) == acked_before, (
        "answered while the proxy was down"
    )
    proxy.resume()

    code = await sim.wait_async(timeout_s=timeout(90))
    assert code == 0, sim.log_tail(30)
    assert edge.is_running
    lines = read_charger_ledger(ledger)

    # --- the outage was real: everything queued was delivered afterwards
    if mode == "refuse":
        assert proxy.connections_accepted > accepted_before
    assert edge.log_text().count(f"charger {CHARGER} connected from") >= 2
    delivered_later = lines[acked_before:]
    assert [x["message_id"] for x in delivered_later[: len(queued)]] == [
        e["message_id"] for e in queued
    ], "queued messages answered out of order"
    offline = [x for x in delivered_later if x["offline"]]
    assert sum(1 for x in offline if x["kind"] == "meter") >= 3, lines
    assert [x["kind"] for x in offline][-1] == "stop", lines

    # --- the ledger in the order the edge answered
    stamps = [_ts_ms(x["timestamp"]) for x in lines]
    assert stamps == sorted(stamps), "ledger timestamps out of order"
    assert len({x["message_id"] for x in lines}) == len(lines), "answered twice"
    if version == "2.0.1":
        assert [x["seq_no"] for x in lines] == list(range(len(lines)))
    starts = [x for x in lines if x["kind"] == "start"]
    stops = [x for x in lines if x["kind"] == "stop"]
    assert len(starts) == 1 and len(stops) == 1, lines
    start, stop = starts[0], stops[0]
    assert start["transaction_id"] == stop["transaction_id"]
    assert start["transaction_id"] not in (None, -1)
    assert stop["meter_stop_wh"] > start["meter_start_wh"]

    # --- (1) the session, once, with the right energy
    async def session_folded() -> list[asyncpg.Record]:
        rows = await _fetch(
            stack,
            "SELECT transaction_id, connector_id, id_tag, meter_start_wh, "
            "meter_stop_wh, energy_wh, stopped_at FROM sessions "
            "WHERE gateway_id = $1 AND charger_id = $2",
            GATEWAY,
            CHARGER,
        )
        return rows if len(rows) == 1 and rows[0]["stopped_at"] else []

    await eventually(session_folded, timeout_s=timeout(60), message="session stored")

    # --- (2) every energy reading the charger sent, once, and nothing else
    expected: dict[int, float] = {}
    for x in lines:
        if "energy_wh" in x:
            # 2.0.1 Started and ChargingStateChanged may share one timestamp: the
            # outbox keeps the first of a stream's readings at one instant
            expected.setdefault(_ts_ms(x["timestamp"]), x["energy_wh"])
    if version == "1.6":
        assert all(x["kind"] == "meter" for x in lines if "energy_wh" in x)
    offline_stamps = {_ts_ms(x["timestamp"]) for x in offline if "energy_wh" in x}
    assert offline_stamps and offline_stamps <= expected.keys()
    readings_query = (
        "SELECT seq, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, value "
        "FROM readings_v WHERE gateway_id = $1 AND device_id = $2 "
        "AND quantity = 'import_energy_wh' ORDER BY seq"
    )

    async def all_stored() -> bool:
        rows = await _fetch(stack, readings_query, GATEWAY, CHARGER)
        return {r["ts_ms"] for r in rows} >= expected.keys()

    await eventually(all_stored, timeout_s=timeout(60), message="readings stored")
    await asyncio.sleep(1)  # a late duplicate would land now
    readings = await _fetch(stack, readings_query, GATEWAY, CHARGER)
    counts = Counter(r["ts_ms"] for r in readings)
    assert [t for t, n in counts.items() if n > 1] == [], "readings stored twice"
    assert counts.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - counts.keys())}, "
        f"unexpected {sorted(counts.keys() - expected.keys())}"
    )
    wrong = [
        (r["ts_ms"], r["value"]) for r in readings if r["value"] != expected[r["ts_ms"]]
    ]
    assert wrong == []

    # --- (3) the edge stored them in the order they were sent
    by_seq = [r["ts_ms"] for r in readings]
    assert by_seq == sorted(by_seq), "readings stored out of order"
    events = await _fetch(
        stack,
        "SELECT e.seq, s.name, e.data FROM events e JOIN streams s "
        "ON s.id = e.stream_id WHERE e.gateway_id = $1 AND s.device_id = $2 "
        "AND s.name IN ('session_started', 'session_stopped') ORDER BY e.seq",
        GATEWAY,
        CHARGER,
    )
    names = [e["name"] for e in events]
    assert names == ["session_started", "session_stopped"], names
    if version == "1.6":  # 2.0.1: the Started event's readings come first
        assert events[0]["seq"] < readings[0]["seq"]
    assert events[1]["seq"] > readings[-1]["seq"], "the stop overtook meter values"

    row = (await session_folded())[0]
    assert row["transaction_id"] == str(start["transaction_id"])
    assert row["connector_id"] == 1 and row["id_tag"] == TAG
    assert row["meter_start_wh"] == start["meter_start_wh"]
    assert row["meter_stop_wh"] == stop["meter_stop_wh"]
    assert row["energy_wh"] == stop["meter_stop_wh"] - start["meter_start_wh"]

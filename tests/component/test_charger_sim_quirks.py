"""The charge-point simulator against the real edge OCPP server, in-process:

* ``--quirks``: a session whose every transaction message mixes sampled values
  the OCPP schemas refuse in with the good ones (both versions; 1.6 with
  ``transactionData`` on the stop). Reconciled against the simulator's ledger:
  every energy register it sent is in the outbox once with its value, every
  quirk it sent is counted by the edge under the expected reason, and the
  tolerated ones are stored;
* a charger held Pending by discovery sends nothing but BootNotification (2.0.1
  B02.FR.09, 1.6 §4.2), even with a scenario that plugs in and starts: the
  frames are recorded by a websocket relay between the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from edge.ocpp.config import ChargerConfig, OcppServerConfig
from edge.ocpp.server import OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Outbox
from simulators import charger
from tests.component.test_ocpp_transactions import stored
from tests.harness.timing import eventually, timeout

CHARGER = "SIM1"

EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "1.6": {
        "unit_hz": ("tolerated", "unit"),
        "unit_kv": ("skipped", "unit"),
        "unknown_measurand": ("skipped", "measurand"),
        "value_as_number": ("tolerated", "value"),
        "value_text": ("skipped", "value"),
        "value_nan": ("skipped", "non_finite"),
        "value_1e999": ("skipped", "non_finite"),
    },
    "2.0.1": {
        "register_as_text": ("tolerated", "value"),
        "unknown_measurand": ("skipped", "measurand"),
        "unit_unknown": ("skipped", "unit"),
        "value_text": ("skipped", "value"),
        "value_nan": ("skipped", "non_finite"),
        "value_infinity": ("skipped", "non_finite"),
    },
}
"""Per version, each ``--quirks`` name -> what the edge does with it and the
reason it counts it under (``protocols.ocpp.salvage``)."""


def expected_counts(
    version: str, ledger: list[dict[str, Any]]
) -> tuple[Counter[str], Counter[str]]:
    """(skipped, tolerated) by reason, from the quirks the ledger says were sent."""
    skipped: Counter[str] = Counter()
    tolerated: Counter[str] = Counter()
    for line in ledger:
        for name in line.get("quirks", []):
            outcome, reason = EXPECTED[version][name]
            (skipped if outcome == "skipped" else tolerated)[reason] += 1
    return skipped, tolerated


def ts_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def expected_registers(ledger: list[dict[str, Any]]) -> dict[int, float]:
    """Every energy register the charger sent, by timestamp (the outbox keeps
    the first reading of a stream at one instant)."""
    out: dict[int, float] = {}
    for line in ledger:
        if "energy_wh" in line:
            out.setdefault(ts_ms(line["timestamp"]), float(line["energy_wh"]))
    return out


@asynccontextmanager
async def edge(
    tmp_path: Path, chargers: list[ChargerConfig], **settings: Any
) -> AsyncIterator[tuple[OcppServer, Outbox]]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    config = OcppServerConfig(
        port=0, security_profile=0, allow_unsecured_lab=True, **settings
    )
    server = OcppServer(
        config, chargers, box, transactions_path=store_path_beside(box.store.path)
    )
    await server.start()
    try:
        yield server, box
    finally:
        await server.stop()
        await box.close()


def sim_args(
    url: str, charger_id: str, version: str, tmp_path: Path, *more: str
) -> Any:
    parser = argparse.ArgumentParser()
    charger.add_arguments(parser)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            [
                {"at": 0.3, "action": "plug"},
                {"at": 0.4, "action": "authorize+start", "id_tag": "TAG1"},
                {"at": 3.0, "action": "stop"},
                {"at": 3.1, "action": "unplug"},
            ]
        )
    )
    return parser.parse_args(
        [
            *("--url", url, "--id", charger_id, "--ocpp", version),
            *("--meter-interval", "0.5", "--speed", "60", "--max-backoff", "0.5"),
            *("--ledger", str(tmp_path / "ledger.jsonl")),
            *("--state", str(tmp_path / "state.json")),
            *("--scenario", str(scenario)),
            *more,
        ]
    )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_quirky_charger_loses_no_reading(version: str, tmp_path: Path) -> None:
    async with edge(tmp_path, [ChargerConfig(id=CHARGER)], id_tags=["TAG1"]) as (
        server,
        box,
    ):
        url = f"ws://127.0.0.1:{server.port}/ocpp"
        args = sim_args(url, CHARGER, version, tmp_path, "--quirks")
        assert await asyncio.wait_for(charger.run(args), timeout(30)) == 0
        bad = server.bad_input[CHARGER]
        skipped, tolerated = Counter(bad.values_skipped), Counter(bad.values_tolerated)
        events, readings = await stored(box)
    ledger = [
        json.loads(line)
        for line in (tmp_path / "ledger.jsonl").read_text().splitlines()
    ]
    quirky = [line for line in ledger if line.get("quirks")]
    assert len(quirky) >= 4, ledger
    if version == "1.6":
        assert quirky[-1]["kind"] == "stop" and "energy_wh" in quirky[-1]
    # every register once, with its value, and nothing else
    registers = [
        (ts, value)
        for device, quantity, ts, value in readings
        if device == CHARGER and quantity == "import_energy_wh"
    ]
    assert dict(registers) == expected_registers(ledger)
    assert len(registers) == len({ts for ts, _ in registers})
    # every quirk counted under its reason
    assert (skipped, tolerated) == expected_counts(version, ledger)
    # the tolerated 1.6 quirks were stored at the time of their message
    if version == "1.6":
        for quantity in ("frequency_hz", "voltage_v"):
            stamps = {ts for d, q, ts, _ in readings if q == quantity}
            assert stamps == {ts_ms(line["timestamp"]) for line in quirky}
    kinds = [kind for _, kind, _ in events]
    assert kinds.count("session_started") == 1 and kinds.count("session_stopped") == 1


# -- a Pending charger sends nothing but its boot ------------------------------------


Frames = list[tuple[str, list[Any]]]


@asynccontextmanager
async def relay(upstream: str, frames: Frames) -> AsyncIterator[str]:
    """A websocket relay to ``upstream`` (a ws:// base URL) that records every
    frame as ("up" | "down", parsed frame); yields its own base URL."""

    async def pump(
        source: Callable[[], Awaitable[Any]],
        sink: Callable[[Any], Awaitable[None]],
        direction: str,
    ) -> None:
        with suppress(ConnectionClosed):
            while True:
                frame = await source()
                frames.append((direction, json.loads(frame)))
                await sink(frame)

    async def handle(ws: ServerConnection) -> None:
        assert ws.request is not None
        async with connect(
            upstream + ws.request.path.removeprefix("/ocpp"),
            subprotocols=[Subprotocol(ws.subprotocol or "ocpp1.6")],
        ) as up:
            await asyncio.wait(
                [
                    asyncio.create_task(pump(ws.recv, up.send, "up")),
                    asyncio.create_task(pump(up.recv, ws.send, "down")),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )

    async with serve(
        handle,
        "127.0.0.1",
        0,
        subprotocols=[Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6")],
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ocpp"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_pending_charger_sends_only_its_boot(
    version: str, tmp_path: Path
) -> None:
    frames: Frames = []
    async with edge(tmp_path, [], allow_discovery=True) as (server, box):
        base = f"ws://127.0.0.1:{server.port}/ocpp"
        async with relay(base, frames) as url:
            args = sim_args(url, "NEW1", version, tmp_path)
            stop = asyncio.Event()
            sim = asyncio.create_task(charger.run(args, stop=stop))
            await eventually(
                lambda: server.pending.get("NEW1") and server.pending["NEW1"].boot,
                timeout_s=timeout(10),
                message="NEW1 held pending",
            )
            await asyncio.sleep(2.0)  # the scenario plugs in and starts meanwhile
            stop.set()
            assert await asyncio.wait_for(sim, timeout(10)) == 0
        assert (await stored(box)) == ([], [])
    sent = [
        frame[2] for direction, frame in frames if direction == "up" and frame[0] == 2
    ]
    answers = [frame for direction, frame in frames if direction == "down"]
    assert sent and set(sent) == {"BootNotification"}, sent
    assert all(frame[0] == 3 for frame in answers), answers

"""Every charger -> edge row of the interop matrix (``edge.ocpp.interop``)
against a real server over real websockets, both versions: an accepted charger
sends every action of its version (both directions, and one no version
knows) with an empty payload, a Pending one the same; the CallError
codes are the matrix's, and the connection answers a Heartbeat after each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.typing import Subprotocol

from edge.ocpp import lib
from edge.ocpp.config import ChargerConfig
from edge.ocpp.routes import CHARGE_POINT_CLASSES
from edge.outbox import Outbox
from protocols.ocpp.frames import PENDING_ALLOWED
from tests.component.test_ocpp_server import charger, exchange, running

# a well-formed boot, so that the pending charger is held (its boot answered)
BOOT = {
    "1.6": {"chargePointModel": "M", "chargePointVendor": "V"},
    "2.0.1": {
        "chargingStation": {"model": "M", "vendorName": "V"},
        "reason": "PowerUp",
    },
}
ROUTING_CODES = {"NotSupported", "NotImplemented", "SecurityError"}


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    yield box
    await box.close()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_every_charger_message_gets_the_matrix_answer(
    outbox: Outbox, version: str
) -> None:
    known = lib.known_actions(version)
    routed = lib.routed_actions(CHARGE_POINT_CLASSES[version])
    actions = sorted(known | {"FlyToTheMoon"})
    chargers = [ChargerConfig(id="LAB1")]
    subprotocols = [Subprotocol(f"ocpp{version}")]
    async with running(
        outbox,
        chargers,
        security_profile=0,
        allow_unsecured_lab=True,
        allow_discovery=True,
    ) as server:
        for identity, pending in (("LAB1", False), ("NEW1", True)):
            async with charger(server, identity, subprotocols, None) as ws:
                answer = await exchange(
                    ws, [2, "boot", "BootNotification", BOOT[version]]
                )
                assert answer[2]["status"] == ("Pending" if pending else "Accepted")
                for n, action in enumerate(actions):
                    if action == "BootNotification":
                        continue
                    answer = await exchange(ws, [2, f"m{n}", action, {}])
                    code = answer[2] if answer[0] == 4 else None
                    if pending and action not in PENDING_ALLOWED[version]:
                        expected: str | None = "SecurityError"
                    elif action not in known:
                        expected = "NotImplemented"
                    elif action not in routed:
                        expected = "NotSupported"
                    else:
                        expected = None  # handled: a result, or a schema code
                    if expected is None:
                        assert code not in ROUTING_CODES, (identity, action, answer)
                    else:
                        assert code == expected, (identity, action, answer)
                    # the connection carries on
                    beat = await exchange(ws, [2, f"hb{n}", "Heartbeat", {}])
                    if pending and version == "2.0.1":
                        assert beat[2] == "SecurityError"
                    else:
                        assert beat[0] == 3, beat

"""The charge-point simulator survives the CSMS (the edge) dying mid-call.

The CSMS here is a raw websockets server speaking OCPP-J 1.6 frames by hand, so
it can drop a connection (transport abort, as a SIGKILLed edge does: no close
frame) at an exact point: while the simulator awaits the answer to its CALL, or
right after the CSMS sent a CALL whose answer and follow-up are in flight. The
simulator used to die with ``InvalidStateError: Result is not set`` (it read the
result of a call it had only asked to cancel). Now it reconnects, and its
offline queue delivers every transaction message: each one acknowledged once
in the ledger, a message whose answer was lost resent with the same id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from simulators import charger

UNIT_S = float(os.environ.get("FUSEBOX_TEST_TIME_UNIT", "1"))
TX_ACTIONS = {"StartTransaction", "StopTransaction", "MeterValues"}


def timeout(n: float) -> float:
    return n * UNIT_S


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "BootNotification": lambda _: {
        "status": "Accepted",
        "currentTime": _now(),
        "interval": 300,
    },
    "StatusNotification": lambda _: {},
    "Heartbeat": lambda _: {"currentTime": _now()},
    "Authorize": lambda _: {"idTagInfo": {"status": "Accepted"}},
    "StartTransaction": lambda _: {
        "transactionId": 7,
        "idTagInfo": {"status": "Accepted"},
    },
    "MeterValues": lambda _: {},
    "StopTransaction": lambda _: {"idTagInfo": {"status": "Accepted"}},
}


@dataclass
class Call:
    conn: int
    message_id: str
    action: str
    payload: dict[str, Any]


# A rule sees (connection number, CALL received) and says what the CSMS does.
Rule = Callable[[int, Call], str]  # "answer" | "drop"


@dataclass
class RawCsms:
    """An OCPP 1.6 CSMS over raw frames that drops connections on cue."""

    rule: Rule = lambda conn, call: "answer"
    calls: list[Call] = field(default_factory=list)
    results: list[tuple[int, list[Any]]] = field(default_factory=list)
    connects: int = 0
    port: int = 0
    # sent to the charger after the boot of connection n (CSMS -> charger CALLs)
    push: dict[int, list[list[Any]]] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RawCsms]:
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self

    def actions(self, conn: int | None = None) -> list[str]:
        return [c.action for c in self.calls if conn in (None, c.conn)]

    async def _handler(self, ws: ServerConnection) -> None:
        self.connects += 1
        conn = self.connects
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                if frame[0] != 2:
                    self.results.append((conn, frame))
                    continue
                call = Call(conn, frame[1], frame[2], frame[3])
                self.calls.append(call)
                if self.rule(conn, call) == "drop":
                    ws.transport.abort()  # the edge is SIGKILLed: no close frame
                    return
                answer = ANSWERS[call.action](call.payload)
                await ws.send(json.dumps([3, call.message_id, answer]))
                if call.action == "BootNotification":
                    for push in self.push.pop(conn, []):
                        await ws.send(json.dumps(push))
                        if push[2] == "DROP":
                            ws.transport.abort()
                            return


def sim_args(csms: RawCsms, tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    charger.add_arguments(parser)
    return parser.parse_args(
        [
            "--url",
            f"ws://127.0.0.1:{csms.port}/ocpp",
            "--id",
            "CP1",
            "--ocpp",
            "1.6",
            "--meter-interval",
            "0.5",
            "--speed",
            "60",
            "--max-backoff",
            "0.3",
            "--ledger",
            str(tmp_path / "ledger.jsonl"),
            "--state",
            str(tmp_path / "state.json"),
            *extra,
        ]
    )


def write_scenario(tmp_path: Path) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            [
                {"at": 0.3, "action": "plug"},
                {"at": 0.4, "action": "authorize+start", "id_tag": "TAG1"},
                {"at": 3.0, "action": "stop"},
                {"at": 3.1, "action": "unplug"},
            ]
        )
    )
    return str(path)


def read_ledger(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_delivered_once(csms: RawCsms, tmp_path: Path) -> None:
    """Every transaction message acknowledged exactly once, in order, nothing
    left queued; a resend (its answer lost with the connection) keeps its id."""
    ledger = read_ledger(tmp_path)
    ids = [e["message_id"] for e in ledger]
    assert len(ids) == len(set(ids)), "a message was acknowledged twice"
    answered = [c.message_id for c in csms.calls if c.action in TX_ACTIONS]
    # the CSMS saw each ledger entry, and nothing the ledger lacks
    assert set(answered) == set(ids)
    actions = [e["action"] for e in ledger]
    assert actions[0] == "StartTransaction" and actions[-1] == "StopTransaction"
    assert "MeterValues" in actions
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["queue"] == []


def no_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}"
        if r.exc_info
        else r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
    ]


async def test_the_csms_dying_while_the_simulator_awaits_its_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection 1 dies on the BootNotification, connection 2 on the first
    StartTransaction (a queued transaction message mid-call); 3 answers all."""

    def rule(conn: int, call: Call) -> str:
        if conn == 1 and call.action == "BootNotification":
            return "drop"
        if conn == 2 and call.action == "StartTransaction":
            return "drop"
        return "answer"

    caplog.set_level(logging.INFO)
    csms = RawCsms(rule=rule)
    async with csms.running():
        args = sim_args(csms, tmp_path, "--scenario", write_scenario(tmp_path))
        code = await asyncio.wait_for(charger.run(args), timeout(20))
    assert code == 0
    assert no_errors(caplog) == []
    assert csms.connects == 3
    assert csms.actions(1) == ["BootNotification"]
    assert csms.actions(2)[-1] == "StartTransaction"
    starts = [c for c in csms.calls if c.action == "StartTransaction"]
    # sent on 2 (answer lost with the connection), resent on 3 with the same id
    assert [c.conn for c in starts] == [2, 3]
    assert starts[0].message_id == starts[1].message_id
    assert_delivered_once(csms, tmp_path)


@pytest.mark.parametrize(
    "push",
    [
        # the charger answers, then its follow-up CALL meets a dead connection
        [2, "trigger-1", "TriggerMessage", {"requestedMessage": "BootNotification"}],
        [2, "remote-1", "RemoteStartTransaction", {"connectorId": 1, "idTag": "T1"}],
    ],
    ids=["trigger", "remote-start"],
)
async def test_the_csms_dying_while_it_awaits_the_simulators_answer(
    push: list[Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The CSMS sends a CALL and dies at once, before the simulator's answer
    (and the calls that follow it) can arrive."""
    caplog.set_level(logging.INFO)
    csms = RawCsms(push={1: [push, [2, "x", "DROP", {}]]})
    stop = asyncio.Event()
    async with csms.running():
        sim = asyncio.create_task(charger.run(sim_args(csms, tmp_path), stop=stop))
        try:

            async def reconnected() -> None:
                while csms.connects < 2 or "BootNotification" not in csms.actions(2):
                    assert not sim.done(), "the simulator stopped"
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(reconnected(), timeout(10))
            if push[2] == "RemoteStartTransaction":

                def started() -> bool:
                    return any(
                        e["action"] == "StartTransaction"
                        for e in (
                            read_ledger(tmp_path)
                            if (tmp_path / "ledger.jsonl").exists()
                            else []
                        )
                    )

                async def wait_started() -> None:
                    while not started():
                        assert not sim.done(), "the simulator stopped"
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(wait_started(), timeout(10))
            await asyncio.sleep(0.5)  # let any follow-up task fail, if one would
            assert not sim.done()
        finally:
            stop.set()
            code = await asyncio.wait_for(sim, timeout(5))
    assert code == 0
    assert no_errors(caplog) == []
    if push[2] == "RemoteStartTransaction":
        ledger = read_ledger(tmp_path)
        starts = [e for e in ledger if e["action"] == "StartTransaction"]
        assert len(starts) == 1

"""The meter simulator against a real Mosquitto: what the ledger says was published is
what a subscriber received and what ``protocols.meters`` decodes, also across a broker
restart, a SIGTERM and a resumed run.

Each test starts its own Mosquitto on a free port (``private_broker`` below; to be
replaced by the shared harness fixture). Waits are multiples of ``UNIT_S``, scaled by
``FUSEBOX_TEST_TIME_UNIT`` on slow machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from protocols.meters import (
    MeterFormat,
    decode_generic,
    decode_glow,
    decode_shelly,
    decode_tasmota,
    meter_topic_filters,
)
from protocols.readings import Reading, ms_to_ts
from simulators import meter
from simulators.meter import (
    SIM_GENERIC_MAPPING,
    LedgerEntry,
    read_ledger,
    sim_base_topic,
)
from tests.harness.procs import free_port

UNIT_S = float(os.environ.get("FUSEBOX_TEST_TIME_UNIT", "1"))
START = "2024-01-15T16:00:00+00:00"

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="needs the mosquitto binary"
)


# --- a private broker -----------------------------------------------------------------


class PrivateMosquitto:
    """A Mosquitto of this test's own on a free port; ``restart`` keeps the port.

    ``persistent`` brokers save sessions and queued messages on a graceful stop, so a
    subscriber with a persistent session misses nothing across a restart.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"user {getpass.getuser()}",  # as root, stay root: the workdir is ours
        ]
        if persistent:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        else:
            lines += ["persistence false"]
        self.config.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / "mosquitto.log").open("ab")
        self._process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 10 * UNIT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: see {self.workdir}/mosquitto.log"
                )
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(0.02)
        raise TimeoutError(f"mosquitto did not listen on {self.port}")

    def kill(self) -> None:
        """Die without saving anything, as on a power cut."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10 * UNIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Callable[..., PrivateMosquitto]]:
    started: list[PrivateMosquitto] = []

    def start(*, persistent: bool = False) -> PrivateMosquitto:
        workdir = tmp_path / f"mosquitto-{len(started)}"
        workdir.mkdir()
        broker = PrivateMosquitto(workdir, persistent=persistent)
        broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


# --- a subscriber that survives broker restarts ---------------------------------------


class Subscriber:
    """Collects every message on the meter's topics, reconnecting with a persistent
    session (QoS 1) so that a persistent broker queues what it misses."""

    def __init__(self, broker: PrivateMosquitto, filters: tuple[str, ...]) -> None:
        self._broker = broker
        self._filters = filters
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self._broker.port,
                    identifier=f"test-subscriber-{self._broker.port}",
                    clean_session=False,
                    protocol=aiomqtt.ProtocolVersion.V311,
                ) as client:
                    for topic_filter in self._filters:
                        await client.subscribe(topic_filter, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        payload = message.payload
                        assert isinstance(payload, bytes)
                        self.messages.append((str(message.topic), payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def subscribed(
    broker: PrivateMosquitto, meter_format: MeterFormat, device: str
) -> AsyncIterator[Subscriber]:
    filters = meter_topic_filters(meter_format, sim_base_topic(meter_format, device))
    subscriber = Subscriber(broker, filters)
    task = asyncio.create_task(subscriber.run(), name="test-subscriber")
    try:
        await asyncio.wait_for(subscriber.subscribed.wait(), 10 * UNIT_S)
        yield subscriber
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- helpers --------------------------------------------------------------------------


def sim_args(broker: PrivateMosquitto, ledger: Path, *extra: str) -> list[str]:
    return [
        "--broker",
        broker.url,
        "--ledger",
        str(ledger),
        "--start",
        START,
        "--seed",
        "42",
        "--max-backoff",
        str(0.5 * UNIT_S),
        "--publish-timeout",
        str(5 * UNIT_S),
        "--log-every",
        "1",
        *extra,
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    meter.add_arguments(parser)
    return parser.parse_args(argv)


def decode(meter_format: MeterFormat, topic: str, payload: bytes) -> list[Reading]:
    device, now = "dut", ms_to_ts(0) + timedelta(days=20000)
    if meter_format is MeterFormat.GLOW:
        return decode_glow(payload, device_id=device, now=now)
    if meter_format is MeterFormat.TASMOTA:
        return decode_tasmota(payload, device_id=device, now=now)
    if meter_format is MeterFormat.SHELLY:
        return decode_shelly(payload, device_id=device, now=now, topic=topic)
    return decode_generic(
        payload, device_id=device, now=now, mapping=SIM_GENERIC_MAPPING
    )


def decoded_by_ts(
    meter_format: MeterFormat, messages: list[tuple[str, bytes]]
) -> dict[object, dict[str, float]]:
    """Everything received, decoded, by reading timestamp; duplicates must agree."""
    by_ts: dict[object, dict[str, float]] = {}
    for topic, payload in messages:
        for reading in decode(meter_format, topic, payload):
            values = by_ts.setdefault(reading.ts, {})
            assert values.get(reading.quantity, reading.value) == reading.value
            values[reading.quantity] = reading.value
    return by_ts


def assert_ledger_delivered(
    meter_format: MeterFormat,
    ledger: list[LedgerEntry],
    messages: list[tuple[str, bytes]],
) -> None:
    received = decoded_by_ts(meter_format, messages)
    for entry in ledger:
        assert entry.ts in received, f"ledgered reading {entry.n} at {entry.ts} lost"
        values = received[entry.ts]
        assert values["import_energy_wh"] == entry.import_energy_wh
        assert values["export_energy_wh"] == entry.export_energy_wh
        assert values["power_w"] == entry.power_w


def assert_consistent(ledger: list[LedgerEntry], *, step_s: int) -> None:
    """Readings one step apart, registers never running backwards."""
    for earlier, later in itertools.pairwise(ledger):
        assert later.ts - earlier.ts == timedelta(seconds=step_s)
        assert later.import_energy_wh >= earlier.import_energy_wh


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s * UNIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def ledger_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def spawn_sim(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "simulators.meter", *argv],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meter_format", "phases"),
    [
        (MeterFormat.GLOW, 1),
        (MeterFormat.TASMOTA, 1),
        (MeterFormat.TASMOTA, 3),
        (MeterFormat.SHELLY, 1),
        (MeterFormat.SHELLY, 3),
        (MeterFormat.GENERIC, 3),
    ],
)
async def test_ledger_is_what_the_broker_delivered(
    private_broker: Callable[..., PrivateMosquitto],
    tmp_path: Path,
    meter_format: MeterFormat,
    phases: int,
) -> None:
    broker = private_broker()
    ledger_path = tmp_path / "ledger.jsonl"
    argv = sim_args(
        broker,
        ledger_path,
        *("--format", meter_format.value, "--device", "m1", "--phases", str(phases)),
        *("--interval", "0.01", "--step", "60", "--count", "30"),
    )

    async with subscribed(broker, meter_format, "m1") as subscriber:
        assert await meter.run(parse(argv)) == 0
        await wait_for(lambda: len(subscriber.messages) >= 30, 10, "30 messages")

    ledger = list(read_ledger(ledger_path))
    assert [entry.n for entry in ledger] == list(range(1, 31))
    assert {(e.device, e.format) for e in ledger} == {("m1", meter_format.value)}
    assert ledger[0].ts.isoformat() == START
    assert_consistent(ledger, step_s=60)
    assert_ledger_delivered(meter_format, ledger, subscriber.messages)
    assert len(subscriber.messages) == 30  # no resends on a healthy broker
    if phases == 3:
        assert all(len(e.phase_import_energy_wh or ()) == 3 for e in ledger)


async def test_broker_restart_loses_no_ledgered_reading(
    private_broker: Callable[..., PrivateMosquitto], tmp_path: Path
) -> None:
    broker = private_broker(persistent=True)
    ledger_path = tmp_path / "ledger.jsonl"
    argv = sim_args(
        broker,
        ledger_path,
        *("--format", "glow", "--device", "m2"),
        *("--interval", "0.05", "--step", "30", "--count", "60"),
    )

    async with subscribed(broker, MeterFormat.GLOW, "m2") as subscriber:
        sim = spawn_sim(argv, tmp_path / "sim.log")
        try:
            await wait_for(lambda: ledger_lines(ledger_path) >= 15, 20, "15 readings")
            broker.stop()
            held_at = ledger_lines(ledger_path)
            await asyncio.sleep(1.0 * UNIT_S)
            assert ledger_lines(ledger_path) == held_at, "ledgered without a broker"
            broker.start()
            await wait_for(lambda: sim.poll() is not None, 60, "the meter to finish")
        finally:
            if sim.poll() is None:
                sim.kill()
        assert sim.returncode == 0, (tmp_path / "sim.log").read_text()
        ledger = list(read_ledger(ledger_path))
        await wait_for(
            lambda: len(decoded_by_ts(MeterFormat.GLOW, subscriber.messages)) >= 60,
            10,
            "every ledgered reading at the subscriber",
        )

    assert [entry.n for entry in ledger] == list(range(1, 61))
    assert_consistent(ledger, step_s=30)
    assert_ledger_delivered(MeterFormat.GLOW, ledger, subscriber.messages)
    log = (tmp_path / "sim.log").read_text()
    assert "unavailable" in log and "back after" in log


async def test_broker_crash_is_noticed_without_waiting_for_the_puback_timeout(
    private_broker: Callable[..., PrivateMosquitto], tmp_path: Path
) -> None:
    broker = private_broker()
    ledger_path = tmp_path / "ledger.jsonl"
    argv = sim_args(
        broker,
        ledger_path,
        *("--format", "generic", "--device", "m6"),
        *("--interval", "0.02", "--step", "5", "--count", "40"),
        *("--publish-timeout", str(120 * UNIT_S)),  # last argument wins
    )
    sim = spawn_sim(argv, tmp_path / "sim.log")
    try:
        await wait_for(lambda: ledger_lines(ledger_path) >= 10, 20, "10 readings")
        broker.kill()
        await asyncio.sleep(0.5 * UNIT_S)
        broker.start()
        # Far less than the 120 s a publish waits for its PUBACK.
        await wait_for(lambda: sim.poll() is not None, 30, "the meter to finish")
    finally:
        if sim.poll() is None:
            sim.kill()
    assert sim.returncode == 0, (tmp_path / "sim.log").read_text()

    ledger = list(read_ledger(ledger_path))
    assert [entry.n for entry in ledger] == list(range(1, 41))
    assert_consistent(ledger, step_s=5)


async def test_nothing_is_ledgered_without_a_puback(tmp_path: Path) -> None:
    """A "broker" that accepts the connection, swallows the PUBLISH and hangs up:
    the meter must notice at once (not after the 120 s PUBACK timeout), retry, and
    never write a ledger line."""
    connections = 0

    async def swallow_publish(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal connections
        connections += 1
        await reader.read(65536)  # CONNECT
        writer.write(bytes([0x20, 0x02, 0x00, 0x00]))  # CONNACK, accepted
        await writer.drain()
        while chunk := await reader.read(65536):
            if chunk[0] & 0xF0 == 0x30:  # PUBLISH: hang up without a PUBACK
                break
        writer.close()

    server = await asyncio.start_server(swallow_publish, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ledger_path = tmp_path / "ledger.jsonl"
    argv = [
        *("--broker", f"mqtt://127.0.0.1:{port}", "--ledger", str(ledger_path)),
        *("--device", "m7", "--publish-timeout", "120", "--max-backoff", "0.2"),
    ]
    stop = asyncio.Event()
    async with server:
        run = asyncio.create_task(meter.run(parse(argv), stop=stop))
        await wait_for(lambda: connections >= 3, 10, "three connection attempts")
        stop.set()
        assert await asyncio.wait_for(run, 10 * UNIT_S) == 0

    assert ledger_lines(ledger_path) == 0


async def test_meter_waits_for_a_broker_that_is_not_up_yet(
    private_broker: Callable[..., PrivateMosquitto], tmp_path: Path
) -> None:
    broker = private_broker()
    broker.stop()
    ledger_path = tmp_path / "ledger.jsonl"
    argv = sim_args(
        broker,
        ledger_path,
        *("--format", "tasmota", "--device", "m3"),
        *("--interval", "0.01", "--step", "10", "--count", "5"),
    )
    run = asyncio.create_task(meter.run(parse(argv)))
    await asyncio.sleep(1.0 * UNIT_S)
    assert not run.done() and ledger_lines(ledger_path) == 0

    broker.start()
    async with subscribed(broker, MeterFormat.TASMOTA, "m3") as subscriber:
        assert await asyncio.wait_for(run, 30 * UNIT_S) == 0
        await wait_for(lambda: len(subscriber.messages) >= 4, 10, "messages")

    ledger = list(read_ledger(ledger_path))
    assert len(ledger) == 5
    # The first reading was held while the broker was down, so the subscriber (which
    # connected after it) may have missed it; every later one it must have.
    assert_ledger_delivered(MeterFormat.TASMOTA, ledger[1:], subscriber.messages)


async def test_sigterm_stops_cleanly_and_a_resumed_meter_continues(
    private_broker: Callable[..., PrivateMosquitto], tmp_path: Path
) -> None:
    broker = private_broker()
    ledger_path = tmp_path / "ledger.jsonl"
    base = sim_args(
        broker,
        ledger_path,
        *("--format", "shelly", "--device", "m4", "--phases", "3"),
        *("--interval", "0.02", "--step", "15"),
    )

    async with subscribed(broker, MeterFormat.SHELLY, "m4") as subscriber:
        sim = spawn_sim(base, tmp_path / "sim.log")
        try:
            await wait_for(lambda: ledger_lines(ledger_path) >= 10, 20, "10 readings")
            sim.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(sim.wait, 10 * UNIT_S)
        finally:
            if sim.poll() is None:
                sim.kill()
        assert returncode == 0, (tmp_path / "sim.log").read_text()
        first_run = list(read_ledger(ledger_path))

        resumed = parse([*base, "--resume-ledger", "--count", "5", "--seed", "43"])
        assert await meter.run(resumed) == 0
        await wait_for(
            lambda: len(subscriber.messages) >= len(first_run) + 5, 10, "messages"
        )

    ledger = list(read_ledger(ledger_path))
    second_run = ledger[len(first_run) :]
    assert [entry.n for entry in second_run] == [1, 2, 3, 4, 5]
    assert second_run[0].ts == first_run[-1].ts + timedelta(seconds=15)
    assert_consistent(ledger, step_s=15)
    for earlier, later in itertools.pairwise(ledger):
        assert earlier.phase_import_energy_wh is not None
        assert later.phase_import_energy_wh is not None
        for before, after in zip(
            earlier.phase_import_energy_wh, later.phase_import_energy_wh, strict=True
        ):
            assert after >= before
    assert_ledger_delivered(MeterFormat.SHELLY, ledger, subscriber.messages)


async def test_resume_refuses_another_meters_ledger(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    entry = LedgerEntry(
        n=1,
        device="other",
        format="glow",
        topic="glow/other/SENSOR/electricitymeter",
        ts=ms_to_ts(1_700_000_000_000),
        import_energy_wh=1.0,
        export_energy_wh=0.0,
        power_w=1.0,
    )
    ledger_path.write_text(entry.to_json() + "\n" + '{"n": 2, "dev')
    argv = [
        "--broker",
        "mqtt://127.0.0.1:1",
        "--device",
        "m5",
        "--ledger",
        str(ledger_path),
        "--resume-ledger",
    ]

    assert await meter.run(parse(argv)) == 2
    # The torn last line (a crash mid-write) was cut off on the way.
    assert ledger_path.read_text() == entry.to_json() + "\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--broker", "http://127.0.0.1:1883"],
        ["--device", "a/b"],
        ["--step", "0.5"],
        ["--count", "0"],
        ["--resume-ledger"],
        ["--household-timezone", "Mars/Olympus_Mons"],
    ],
)
async def test_bad_flags_exit_2(argv: list[str]) -> None:
    assert await meter.run(parse(argv)) == 2


async def test_corrupt_ledger_is_not_resumed(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    ledger_path.write_text('{"n": 1, "device": "m8"}\n')
    argv = ["--device", "m8", "--ledger", str(ledger_path), "--resume-ledger"]
    assert await meter.run(parse(argv)) == 2


async def test_unwritable_ledger_exits_1(tmp_path: Path) -> None:
    argv = [
        "--broker",
        "mqtt://127.0.0.1:1",
        "--ledger",
        str(tmp_path / "no/such.jsonl"),
    ]
    assert await meter.run(parse(argv)) == 1


# --- the shared simulated clock and loads behind the meter ----------------------------


def _sim_clock(speed: float = 600.0, lead_s: float = 0.3) -> str:
    from protocols.clock import sim_spec

    start = datetime.fromisoformat("2025-01-15T17:55:00+00:00")
    return sim_spec(start, anchor=time.time() + lead_s, speed=speed)


@pytest.mark.parametrize(
    "argv",
    [
        ["--clock", "sim:2025-01-15T17:55:00Z@1x600", "--step", "10"],
        ["--clock", "sim:2025-01-15T17:55:00Z@1x600", "--start", START],
        ["--clock", "sim:2025-01-15T17:55:00Z@1x600", "--interval", "0.5"],
        ["--clock", "sim:yesterday@1x600"],
    ],
)
async def test_bad_clock_flags_exit_2(argv: list[str]) -> None:
    assert await meter.run(parse(argv)) == 2


async def test_simulated_clock_and_loads_behind_the_meter(
    private_broker: Callable[..., PrivateMosquitto], tmp_path: Path
) -> None:
    """``--clock sim:...``: a reading every ``--interval`` simulated seconds stamped
    with the clock; ``--add-load-file`` (a charger's power file) and, while it
    exists, ``--spike-file`` are added to the household's power and register."""
    broker = private_broker()
    ledger_path = tmp_path / "ledger.jsonl"
    ev_file = tmp_path / "ev-power.json"
    ev_file.write_text(json.dumps({"power_w": 7000.0, "ts": "x"}))
    spike = tmp_path / "spike.json"
    spike.write_text(json.dumps({"add_w": 8000}))
    clock = _sim_clock(lead_s=-0.1)
    argv = [
        *("--broker", broker.url, "--ledger", str(ledger_path), "--seed", "42"),
        *("--device", "site", "--interval", "60", "--count", "40"),
        *("--clock", clock, "--add-load-file", str(ev_file)),
        *("--spike-file", str(spike), "--initial-import-kwh", "1000"),
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(meter.run(parse(argv), stop=stop))
    try:
        await wait_for(lambda: ledger_lines(ledger_path) >= 5, 10 * UNIT_S, "5")
        spike.unlink()
        await wait_for(lambda: ledger_lines(ledger_path) >= 15, 10 * UNIT_S, "15")
        ev_file.write_text(json.dumps({"power_w": 0.0}))
        assert await asyncio.wait_for(task, 20 * UNIT_S) == 0
    finally:
        stop.set()
    real_end = time.time()
    ledger = list(read_ledger(ledger_path))
    assert len(ledger) == 40
    from protocols.clock import Clock
    from simulators.household import HouseholdLoad

    sim_now = Clock.parse(clock, real=time.time).now()
    first = ledger[0].ts
    # stamped on the clock: 17:55 when the run started, a minute apart
    assert first.isoformat().startswith("2025-01-15T17:5")
    assert [(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(ledger)] == [
        60.0
    ] * 39
    assert ledger[-1].ts <= sim_now
    assert time.time() - real_end < 5
    # the household runs from the clock's start, whenever the meter started
    house = HouseholdLoad(
        seed=42,
        start=Clock.parse(clock, real=time.time).start or first,
        import_energy_wh=1_000_000.0,
    )
    house_first_wh = house.advance_to(first).import_energy_wh
    assert house.sample().import_energy_wh == pytest.approx(
        ledger[0].import_energy_wh, abs=1
    )
    extras = []
    for entry in ledger:
        house_w = house.advance_to(entry.ts).power_w
        extras.append(round(entry.power_w - house_w, -2))
    # spike + EV, then the EV, then nothing; each change seen at the next reading
    assert extras[0] == 15_000
    assert extras[-1] == 0
    assert extras == sorted(extras, reverse=True)
    assert set(extras) == {15_000, 7_000, 0}
    assert extras.count(7_000) >= 5
    # the register integrates the load behind the meter too
    extra_wh = (ledger[-1].import_energy_wh - ledger[0].import_energy_wh) - (
        house.sample().import_energy_wh - house_first_wh
    )
    expected_wh = sum(w * 60 / 3600 for w in extras[:-1])
    assert extra_wh == pytest.approx(expected_wh, abs=30)

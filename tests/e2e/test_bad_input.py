"""Bad input loses nothing else (architecture decision 9), end to end.

Simulated Glow and Tasmota meters run normally while the test publishes junk on their
own topics on the site broker: the junk is counted by reason in the edge's metrics,
logged when a meter's state changes rather than per message, and every reading the
meters' ledgers hold is still stored in the cloud exactly once. A bad edge config
file is refused with exit code 2 and a message naming the field.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from protocols.urls import parse_mqtt_url
from tests.e2e.stack import Reconciliation, Stack
from tests.harness.procs import REPO_ROOT
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e

GLOW, TASMOTA = "glow-1", "tasmota-1"
# a configured Glow with no simulator: only the test publishes on its topic, so the
# order of its messages (and therefore its log lines) is the test's to choose
JUNK = "glow-junk"
GLOW_NO_READING_KW = -8388.608  # skipped by the decoder: no power rows stored

TOO_LARGE = b'{"pad": "' + b"x" * 200_000 + b'"}'


def _j(document: object) -> bytes:
    return json.dumps(document).encode()


def _glow(import_kwh: object, *, ts: datetime | None = None) -> bytes:
    meter: dict[str, object] = {
        "energy": {"import": {"cumulative": import_kwh, "units": "kWh"}},
        "power": {"value": GLOW_NO_READING_KW, "units": "kW"},
    }
    if ts is not None:
        meter["timestamp"] = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _j({"electricitymeter": meter})


GLOW_JUNK = {
    "not_json": b'{"electricitymeter": {"energy": ',
    "wrong_type": _glow("6613.405"),
    "missing_field": _j({"electricitymeter": {"power": {"value": 0.5}}}),
    "too_large": TOO_LARGE,
    "implausible": _glow(-12.5),
}
TASMOTA_JUNK = {
    "not_json": b"\xff\xfe not even UTF-8",
    "wrong_type": _j({"ENERGY": {"Total": "1523.412", "Power": 140}}),
    "missing_field": _j({"ENERGY": {"Power": 140}}),
    "too_large": TOO_LARGE,
    "implausible": _j({"ENERGY": {"Total": -3.5, "Power": 140}}),
}
# how many of each to send, per simulated meter
SENT = {
    GLOW: Counter(
        not_json=3, wrong_type=2, missing_field=2, too_large=1, implausible=2
    ),
    TASMOTA: Counter(
        not_json=2, wrong_type=3, missing_field=1, too_large=2, implausible=1
    ),
}
TOPICS = {
    GLOW: f"glow/{GLOW}/SENSOR/electricitymeter",
    TASMOTA: f"tele/{TASMOTA}/SENSOR",
    JUNK: f"glow/{JUNK}/SENSOR/electricitymeter",
}
PAYLOADS = {GLOW: GLOW_JUNK, TASMOTA: TASMOTA_JUNK}

# glow-junk's own valid readings, in a stream no simulator writes to
T0 = datetime(2030, 1, 1, tzinfo=UTC)
JUNK_VALID = [(T0, 1000.0), (T0 + timedelta(seconds=40), 1000.25)]
JUNK_BACKWARDS = [
    (T0 + timedelta(seconds=10), 999.5),
    (T0 + timedelta(seconds=20), 999.99),
]


def _junk_meter_config() -> str:
    return f'\n[[meters]]\ntype = "glow"\nid = "{JUNK}"\ntopic = "glow/{JUNK}"\n'


async def _publish(broker_url: str, messages: list[tuple[str, bytes]]) -> None:
    target = parse_mqtt_url(broker_url)
    async with aiomqtt.Client(
        target.host, target.port, identifier="test-junk-publisher", timeout=10
    ) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)
            await asyncio.sleep(0.02)


def _bad_counts(metrics: dict[str, float], meter: str) -> Counter[str]:
    pattern = re.compile(
        r'^fusebox_meter_bad_payloads_total\{meter="([^"]+)",reason="([^"]+)"\}$'
    )
    out: Counter[str] = Counter()
    for key, value in metrics.items():
        m = pattern.match(key)
        if m and m.group(1) == meter:
            out[m.group(2)] = int(value)
    return out


def _without_junk_meter(rec: Reconciliation) -> Reconciliation:
    """The reconciliation of the simulated meters only: ``Stack.reconcile`` reads
    every row of the gateway, glow-junk's valid readings included."""
    junk_rows = sorted(u for u in rec.unexpected if u[0] == JUNK)
    expected_ms = sorted((JUNK, int(ts.timestamp() * 1000)) for ts, _ in JUNK_VALID)
    assert junk_rows == expected_ms, junk_rows
    rec.unexpected = [u for u in rec.unexpected if u[0] != JUNK]
    rec.stored -= len(junk_rows)
    return rec


async def test_junk_on_meter_topics_is_counted_logged_and_loses_nothing(
    stack: Stack,
) -> None:
    stack.add_meter("glow", GLOW)
    stack.add_meter("tasmota", TASMOTA)
    config = stack.write_edge_config()
    config.write_text(config.read_text() + _junk_meter_config())
    stack.ingest()
    edge = stack.edge()
    await stack.edge_ready()
    for device in stack.meters:
        stack.start_meter(device, count=200, interval_s=0.05)

    # junk on the simulated meters' topics, mixed in with their real readings
    junk = [
        (TOPICS[meter], PAYLOADS[meter][reason])
        for meter, counts in SENT.items()
        for reason, n in counts.items()
        for _ in range(n)
    ]
    random.Random(9).shuffle(junk)
    # glow-junk: five not-JSON in a row (one state change), a valid reading, two
    # registers below it (with later timestamps), then a valid reading again
    junk_meter = (
        [(TOPICS[JUNK], b"<html>502 Bad Gateway</html>")] * 5
        + [(TOPICS[JUNK], _glow(JUNK_VALID[0][1], ts=JUNK_VALID[0][0]))]
        + [(TOPICS[JUNK], _glow(kwh, ts=ts)) for ts, kwh in JUNK_BACKWARDS]
        + [(TOPICS[JUNK], _glow(JUNK_VALID[1][1], ts=JUNK_VALID[1][0]))]
    )
    await asyncio.sleep(0.5)
    await _publish(stack.site.url, junk + junk_meter)

    expected = {
        **SENT,
        JUNK: Counter(not_json=5, register_backwards=len(JUNK_BACKWARDS)),
    }

    def counted() -> dict[str, Counter[str]]:
        metrics = stack.metrics()
        return {meter: _bad_counts(metrics, meter) for meter in expected}

    await eventually(
        lambda: counted() == expected,
        timeout_s=timeout(30),
        message="bad payloads counted by reason",
    )

    await stack.wait_meters_done(timeout(60))
    rec = _without_junk_meter(await stack.wait_reconciled(timeout(60)))
    assert rec.ledgered > 0
    assert rec.exact, str(rec)
    assert edge.is_running, edge.log_tail(30)
    assert counted() == expected  # nothing more arrived late

    log = edge.log_text()
    # five not-JSON in a row: one state change, one line
    assert log.count(f"meter {JUNK}: bad payload (not_json)") == 1, log
    assert log.count(f"meter {JUNK}: payloads decode again") >= 1, log
    assert log.count(f"meter {JUNK}: bad payload (register_backwards)") >= 1, log
    # on the simulated meters real readings interleave, so each junk message can
    # be a state change: never more lines than messages, and every reason shown
    for meter, counts in SENT.items():
        lines = [
            line for line in log.splitlines() if f"meter {meter}: bad payload (" in line
        ]
        assert len(set(counts)) <= len(lines) <= sum(counts.values()), lines
        for reason in counts:
            assert f"meter {meter}: bad payload ({reason})" in log, reason
    assert "Traceback" not in log, log


async def test_registers_running_backwards_are_logged_once(stack: Stack) -> None:
    stack.write_edge_config()
    config = stack.edge_config
    config.write_text(config.read_text() + _junk_meter_config())
    stack.ingest()
    edge = stack.edge()
    await stack.edge_ready()
    start = [(TOPICS[JUNK], _glow(500.0, ts=T0))]
    backwards = [
        (TOPICS[JUNK], _glow(400.0, ts=T0 + timedelta(seconds=10 * (i + 1))))
        for i in range(4)
    ]
    await _publish(stack.site.url, start + backwards)

    def counted() -> Counter[str]:
        return _bad_counts(stack.metrics(), JUNK)

    await eventually(
        lambda: counted() == Counter(register_backwards=4),
        timeout_s=timeout(20),
        message="backwards registers counted",
    )
    log = edge.log_text()
    assert log.count(f"meter {JUNK}: bad payload (register_backwards)") == 1, log
    assert f"meter {JUNK}: payloads decode again" not in log, log


def test_bad_edge_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'gateway_id = "gw-bad"\n'
        "[cloud]\n"
        'mqtt_url = "mqtt://127.0.0.1:1"\n'
        "[uplink]\n"
        "window = 0\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "fusebox", "edge", "run", "--config", str(bad)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "uplink.window" in result.stderr, result.stderr
    assert str(bad) in result.stderr, result.stderr

"""``fusebox cloud run`` with no URLs starts embedded PostgreSQL and a broker, serves
the API, stores a gateway's batch and acks it, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import aiomqtt
import pytest

from protocols import contract
from tests.harness.procs import Procs, free_port
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e


OPERATOR = ("ops@example.test", "operator-password-1")


def _get(url: str, token: str | None = None) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=2) as r:
        return r.status, json.loads(r.read())


def _login(base: str) -> str:
    body = json.dumps({"email": OPERATOR[0], "password": OPERATOR[1]}).encode()
    request = urllib.request.Request(
        f"{base}/v1/auth/login",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return str(json.loads(r.read())["access_token"])


async def test_cloud_run_on_embedded_defaults(
    procs: Procs, artifacts_dir: Path
) -> None:
    # Embedded PostgreSQL runs as its own system user, which must traverse the
    # data dir's parents; pytest keeps its tmp root at mode 0700 (and any other
    # pytest session on the machine resets it), so keep the state in artifacts.
    api_port, mqtt_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FUSEBOX_DATABASE_URL", "FUSEBOX_CLOUD_MQTT_URL")
    }
    env["FUSEBOX_EMBEDDED_MQTT_PORT"] = str(mqtt_port)
    # the first operator account, created at start (API calls need a token)
    env["FUSEBOX_BOOTSTRAP_OPERATOR_EMAIL"] = OPERATOR[0]
    env["FUSEBOX_BOOTSTRAP_OPERATOR_PASSWORD"] = OPERATOR[1]
    cloud = procs.start(
        [
            "fusebox",
            "cloud",
            "run",
            "--state-dir",
            str(artifacts_dir / "cloud"),
            "--api-port",
            str(api_port),
        ],
        name="cloud",
        env=env,
    )
    base = f"http://127.0.0.1:{api_port}"

    def healthy() -> bool:
        return _get(f"{base}/healthz")[0] == 200

    await eventually(healthy, timeout_s=timeout(60), message="API healthy")
    with pytest.raises(urllib.error.HTTPError) as unauthorized:
        _get(f"{base}/v1/gateways")
    assert unauthorized.value.code == 401
    token = _login(base)
    assert _get(f"{base}/v1/gateways", token) == (200, [])

    async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="gw-x-test") as c:
        await c.subscribe(contract.down_ack("gw-x"), qos=1)
        batch = contract.batch_dict(
            gw="gw-x",
            epoch=1,
            first_seq=1,
            last_seq=1,
            sent_ms=0,
            streams=[("m1", "power_w")],
            readings=[(1, 1_767_225_600_000, 0, 42.0)],
            events=[],
        )
        answer = None
        for _ in range(20):  # the ingest worker may still be subscribing
            await c.publish(contract.up_batch("gw-x"), contract.pack(batch), qos=1)
            try:
                async with asyncio.timeout(timeout(2)):
                    async for message in c.messages:
                        answer = contract.unpack_down(bytes(message.payload))  # type: ignore[arg-type]
                        break
            except TimeoutError:
                continue
            break
    assert isinstance(answer, contract.Ack)
    assert answer.stored_through_seq == 1
    status, rows = _get(f"{base}/v1/gateways/gw-x/readings", token)
    assert status == 200
    assert [r["value"] for r in rows] == [42.0]  # type: ignore[union-attr,index]

    assert cloud.pid is not None
    os.kill(cloud.pid, signal.SIGTERM)
    assert await cloud.wait_async(timeout_s=timeout(30)) == 0

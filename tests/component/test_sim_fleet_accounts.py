"""The fleet on a broker with per-gateway accounts (Mosquitto's dynamic security,
``cloud.broker_auth``), as the cloud runs it: each simulated gateway logs in with
its own account, bound to its client id ``fusebox-edge-<id>``, and may use only
its own topics. A gateway with a wrong password is refused (and counted), keeps
its readings, and costs the others nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.broker_auth import DynsecBrokerAuth
from simulators.fleet import Fleet, FleetConfig
from tests.component.test_sim_fleet import ingest
from tests.harness.mosquitto import MosquittoServer, dynsec_server
from tests.harness.timing import eventually, timeout

ADMIN, ADMIN_PASSWORD = "fleet-admin", "fleet-admin-password-0123"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = dynsec_server(tmp_path / "broker", ADMIN, ADMIN_PASSWORD).start()
    try:
        yield server
    finally:
        server.stop(timeout_s=timeout(5))


async def test_each_gateway_logs_in_with_its_own_account(
    broker: MosquittoServer, pg_dsn: str
) -> None:
    n = 30
    port = broker.mqtt_port
    auth = DynsecBrokerAuth(
        f"mqtt://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{port}", timeout_s=timeout(5)
    )
    config = FleetConfig(
        mqtt_url=f"mqtt://127.0.0.1:{port}",
        gateways=n,
        prefix="fleet-acct",
        interval_s=0.5,
        processes=1,
        ramp_s=0.5,
    )
    ids = config.gateway_ids()
    accounts = {gid: await auth.issue_gateway_credentials(gid) for gid in ids}
    bad = ids[-1]
    accounts[bad] = (accounts[bad][0], "not-the-password-0123456789")
    config.accounts = accounts
    cloud_user, cloud_password = await auth.issue_cloud_credentials()
    cloud_url = f"mqtt://{cloud_user}:{cloud_password}@127.0.0.1:{port}"

    async with ingest(pg_dsn, cloud_url), Fleet(config) as fleet:

        async def settled() -> object:
            s = await fleet.stats()
            return s if s.connected == n - 1 and s.refused_logins >= 1 else None

        await eventually(
            settled, timeout_s=timeout(30), message="all but the bad gateway in"
        )
        await fleet.pause_readings()
        drained = await fleet.wait_drained(timeout_s=timeout(10))
        result = await fleet.reconcile(pg_dsn)
    # the refused gateway still holds every reading it made; nobody else holds any
    assert drained.connected == n - 1
    assert result.pending == drained.held > 0
    assert result.stored == result.produced - result.pending
    assert (result.lost, result.duplicates, result.mismatched) == (0, 0, 0)
    assert result.unexpected == 0

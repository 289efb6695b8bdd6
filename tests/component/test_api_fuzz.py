"""Schemathesis over every operation of the cloud API's OpenAPI (issue 5, done-when 3).

The real app is served by uvicorn on a free port in a thread of this process, on a
real PostgreSQL seeded like ``test_api_roles``: two homes with an owner and an
installer each (claimed gateway, site, charger, meters, readings, a session, prices,
a plan, preferences, a manual reading, a boost command), an unclaimed gateway and an
operator. Each operation is then fuzzed with the bearer token of an owner, an
installer and an operator, with valid and invalid data. Valid data takes its path
parameters from the seeded ids (home B's too, and one that exists nowhere), so the
requests reach the handlers' database code instead of stopping at "no gateway 'x'"
(404); invalid data is generated from the OpenAPI as published.

Checks: no 5xx (``not_a_server_error``); invalid input is refused with a 4xx
(``negative_data_rejection``; a JSON boolean is not a number either); responses have
the documented content type and their declared shape
(``response_schema_conformance``; the handlers' own 422s have FastAPI's shape too).
Undocumented status codes are not checked: 401/403/404/409/429 are the API's
documented behaviour in prose, not in the OpenAPI.

Bounded: a fixed number of examples per operation and role, derandomized (the same
requests every run), no Hypothesis deadline (a busy machine makes it slower, not
flaky). On the API as it stands this finds no 5xx; a 5xx it finds later is shown
with a ``curl`` line that reproduces it, to keep as a plain regression test.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import hypothesis
import pytest
import schemathesis
import uvicorn
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from cloud.api import create_app
from cloud.auth import ApiSettings, create_user, issue_token
from cloud.db import migrate
from cloud.ingest import BatchStore
from fusebox.embedded import run_coroutine_sync
from protocols import contract
from tests.component.test_api_roles import (
    CODE_A,
    CODE_B,
    Feeder,
    World,
    charge,
    install,
    minute_ms,
    prices,
    sha,
)
from tests.harness.postgres import fresh_database
from tests.harness.timing import timeout

ROLES = ("owner", "installer", "operator")
# who fuzzes as which role: home A's owner and installer, the operator
ACCOUNT = {"owner": "owner_a", "installer": "inst_a", "operator": "op"}
# examples per operation and role; with ~40 operations x 3 roles this is the budget
MAX_EXAMPLES = 60

# seeded ids each path parameter is also drawn from (home B's: tenancy is fuzzed too)
COMMAND_ID = "cmd-seed-1"
KNOWN_PATH_VALUES: dict[str, list[str]] = {
    "gateway_id": ["gw-a", "gw-b", "gw-c", "gw-d"],
    "charger_id": ["CP-A", "CP-B"],
    "meter_id": ["m-a", "m-a-manual", "m-b"],
    "tariff_id": ["tariff-gw-a", "tariff-gw-b"],
    "command_id": [COMMAND_ID],
}


@dataclass
class Served:
    base_url: str
    dsn: str
    tokens: dict[str, str]  # role -> bearer token
    users: dict[str, int]  # account name -> id


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not the main thread
        pass


async def _seed(dsn: str, base_url: str) -> tuple[dict[str, int], dict[str, str]]:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await BatchStore.init_connection(conn)
        feeder = Feeder(conn)
        for gw, code in (("gw-a", CODE_A), ("gw-b", CODE_B), ("gw-d", "QRST-5555")):
            await feeder.store.update_status(
                conn,
                contract.GatewayStatus(
                    gw=gw, state="online", software="1.2.3", claim_sha256=sha(code)
                ),
            )
        await feeder.store.update_status(
            conn,
            contract.GatewayStatus(gw="gw-c", state="offline", backlog_records=42),
        )
        users: dict[str, int] = {}
        tokens: dict[str, dict[str, str]] = {}
        for name, role in (
            ("owner_a", "owner"),
            ("owner_b", "owner"),
            ("inst_a", "installer"),
            ("inst_b", "installer"),
            ("op", "operator"),
            # logout and logout_all are fuzzed with these, so the main tokens live
            ("owner_x", "owner"),
            ("inst_x", "installer"),
            ("op_x", "operator"),
        ):
            uid = await create_user(conn, f"{name}@example.com", role, None)  # type: ignore[arg-type]
            users[name] = uid
            token, _ = await issue_token(conn, uid, timedelta(hours=2), None)
            tokens[name] = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            w = World(app=None, client=client, conn=conn, feeder=feeder, tokens=tokens)  # type: ignore[arg-type]
            await install(w, "inst_a", "gw-a", CODE_A, "owner_a")
            await install(w, "inst_b", "gw-b", CODE_B, "owner_b")
            await charge(w, "gw-a", "CP-A", "m-a")
            await charge(w, "gw-b", "CP-B", "m-b")
            await prices(w, "gw-a", 20.0, 150.0)
            start = minute_ms(0) - minute_ms(0) % 1_800_000
            lease = {
                "slots_start_ms": start,
                "price_p_per_kwh": [10.0, 30.0],
                "carbon_g_per_kwh": [50.0, 60.0],
                "chargers": [
                    {
                        "charger_id": "CP-A",
                        "periods": [
                            {
                                "start_ms": start,
                                "end_ms": start + 1_800_000,
                                "limit_w": 7000,
                            }
                        ],
                    }
                ],
            }
            now = datetime.now(UTC)
            await conn.execute(
                "INSERT INTO plans (gateway_id, version, issued_at, valid_until,"
                " inputs_at, reason, lease) VALUES ('gw-a', 1, $1, $2, now(),"
                " 'plug_in', $3::jsonb)",
                now,
                now + timedelta(hours=1),
                json.dumps(lease),
            )
            r = await w.req(
                "owner_a",
                "PUT",
                "/v1/gateways/gw-a/chargers/CP-A/preferences",
                json={"ready_by": "07:30", "target_energy_kwh": 20, "mode": "smart"},
            )
            assert r.status_code == 200, r.text
            r = await w.req(
                "owner_a",
                "POST",
                "/v1/gateways/gw-a/meters/m-a-manual/readings",
                json={
                    "ts": (now - timedelta(hours=1)).isoformat(),
                    "register_kwh": 1234.5,
                    "idempotency_key": "seed-1",
                },
            )
            assert r.status_code == 202, r.text  # accepted into the intake
            r = await w.req(
                "owner_a", "POST", "/v1/gateways/gw-a/chargers/CP-A/boost", json=None
            )
            assert r.status_code == 202, r.text
            await conn.execute(
                "UPDATE commands SET id = $2 WHERE id = $1", r.json()["id"], COMMAND_ID
            )
        bearer = {
            role: tokens[ACCOUNT[role]]["Authorization"].removeprefix("Bearer ")
            for role in ROLES
        }
        return users, bearer
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_server: str) -> Iterator[Served]:
    """The API on uvicorn in a thread, on a seeded database."""
    import cloud.broker_auth

    async def fake_issue(gateway_id: str) -> tuple[str, str]:
        # the real one needs a Mosquitto; its 503 on a dead broker is tested apart
        return f"gw-{gateway_id}", "p" * 32

    saved_issue = cloud.broker_auth.issue_gateway_credentials
    cloud.broker_auth.issue_gateway_credentials = fake_issue  # type: ignore[assignment]
    with fresh_database(pg_server) as dsn:
        app = create_app(
            dsn,
            settings=ApiSettings(
                claim_delay_s=0,
                public_mqtt_url="mqtts://broker.example:8883",
            ),
        )
        server = _ThreadedServer(
            uvicorn.Config(
                app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
            )
        )
        thread = threading.Thread(target=server.run, name="api-under-fuzz")
        thread.start()
        try:
            deadline = time.monotonic() + timeout(30)
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, (
                    "the API did not start"
                )
                time.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            base_url = f"http://127.0.0.1:{port}"
            users, tokens = run_coroutine_sync(lambda: _seed(dsn, base_url))
            yield Served(base_url, dsn, tokens, users)
        finally:
            server.should_exit = True
            thread.join(timeout(30))
            cloud.broker_auth.issue_gateway_credentials = saved_issue  # type: ignore[assignment]


def _bias_path_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI with each known path parameter drawn from the seeded ids (and
    one that exists nowhere); invalid data still gets arbitrary strings there."""
    spec = copy.deepcopy(spec)
    for item in spec.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict):
                continue
            for param in op.get("parameters", []):
                values = KNOWN_PATH_VALUES.get(param.get("name", ""))
                if param.get("in") == "path" and values:
                    param["schema"] = {"type": "string", "enum": [*values, "nowhere-1"]}
    return spec


def _fresh_token(served: Served, role: str) -> str:
    """A token of the role's throwaway account (logout revokes it, or all of them)."""
    name = {"owner": "owner_x", "installer": "inst_x", "operator": "op_x"}[role]

    async def issue() -> str:
        conn = await asyncpg.connect(served.dsn)
        try:
            token, _ = await issue_token(
                conn, served.users[name], timedelta(hours=1), None
            )
            return token
        finally:
            await conn.close()

    return run_coroutine_sync(issue)


# The OpenAPI the served app publishes (building the app opens no connection), so
# the operations are known when the tests are collected.
SPEC: dict[str, Any] = create_app("postgresql://unused@127.0.0.1:1/unused").openapi()
# valid data from the seeded ids; invalid data from the schema as published (an id
# outside the seeded ones is no invalid request)
SEEDED = schemathesis.openapi.from_dict(_bias_path_parameters(SPEC))
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = [
    (method.upper(), path)
    for path, item in SPEC["paths"].items()
    for method in item
    if method in ("get", "put", "post", "patch", "delete")
]


FUZZ = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[
        hypothesis.Phase.explicit,
        hypothesis.Phase.generate,
        hypothesis.Phase.shrink,
    ],
)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS]
)
def test_fuzz(served: Served, role: str, method: str, path: str) -> None:
    """Valid and invalid requests to one operation with one role's token."""
    # the token is fixed, not generated: the generated cases are about the request
    auth = {"Authorization": f"Bearer {served.tokens[role]}"}
    cases = hypothesis.strategies.one_of(
        SEEDED[path][method].as_strategy(GenerationMode.POSITIVE, headers=auth),
        SCHEMA[path][method].as_strategy(GenerationMode.NEGATIVE, headers=auth),
    )

    @FUZZ
    @hypothesis.given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        if path.startswith("/v1/auth/logout"):  # it revokes the token it is sent
            case.headers = {"Authorization": f"Bearer {_fresh_token(served, role)}"}
        case.call_and_validate(
            base_url=served.base_url,
            timeout=timeout(30),
            checks=[
                not_a_server_error,
                negative_data_rejection,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    fuzz()

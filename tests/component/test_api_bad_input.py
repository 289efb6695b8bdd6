"""Bad input to every operation of both HTTP APIs, over real HTTP (issue 10, item 6).

The cloud API (with the web app and the docs) runs on uvicorn in a thread on a
real PostgreSQL seeded like ``test_api_fuzz`` (its ``served`` fixture); the edge's
local API runs inside a real ``EdgeAgent`` (``test_edge_local_api.running``).
The operations are enumerated from each app's route table, so a route added later
is fuzzed too; the fields to spoil come from the app's OpenAPI.

Each operation gets, as each role (cloud: anonymous, owner, installer, operator;
edge: anonymous, installer):

* ``NaN``, ``Infinity``, ``-Infinity``, ``1e999`` and a lone surrogate
  (``"\\ud800"``) in each field of its body (a body of one field ``x`` where it
  takes none): 422 naming that field;
* ``"nan"``, ``"inf"``, ``"-Infinity"``, ``"1e999"`` as text in each numeric
  field (valid JSON, so it reaches the model): 422 naming the field for every
  role the handler validates for;
* a 10 MB body, declared and chunked: 413 before it is read; 100,000 levels of
  ``[`` (413, or 422 where the cap is larger) and 50,000 (422).

Every answer is a 4xx under 4 KiB; nothing is logged with a traceback; after it
all the service still answers normal requests.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from cloud.api import create_app
from cloud.api.docs import CDN, inline_script_hashes
from cloud.api.limits import BODY_CAPS, PRICE_CURVE_CAP_BYTES
from cloud.ingest import BatchStore
from cloud.web.session import SESSION_COOKIE, csrf_token
from edge.agent import EdgeAgent
from edge.local_api import create_app as create_edge_app
from protocols.body_gate import DEFAULT_BODY_CAP_BYTES
from tests.component.test_api_fuzz import COMMAND_ID, Served, served
from tests.component.test_api_roles import Feeder, minute_ms
from tests.component.test_edge_local_api import AUTH, edge_config, running
from tests.harness.timing import timeout

__all__ = ["served"]  # the cloud API fixture, shared with test_api_fuzz

MAX_ANSWER_BYTES = 4096
HUGE_BYTES = 10 * 1024 * 1024
MARK = "__spoiled__"
# JSON literals Python's json module reads but plain JSON cannot carry
BAD_LITERALS = {
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e999": "1e999",
    "lone surrogate": '"\\ud800"',
}
# valid JSON text that a lax number parser reads as not finite
NUMBER_TEXTS = ['"nan"', '"inf"', '"-Infinity"', '"1e999"']
CLOUD_PATH_VALUES = {
    "gateway_id": "gw-a",
    "gw": "gw-a",
    "charger_id": "CP-A",
    "cid": "CP-A",
    "meter_id": "m-a-manual",
    "tariff_id": "tariff-gw-a",
    "command_id": COMMAND_ID,
    "installer_id": "1",
    "uid": "1",
    "name": "live",
}
EDGE_PATH_VALUES = {"charger_id": "CP1"}
JSON_TYPE = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Place:
    """Where in an operation's body a value goes (``loc`` after ``"body"``)."""

    loc: tuple[str | int, ...]
    numeric: bool

    def body(self, literal: str) -> bytes:
        """A body holding ``literal`` (raw JSON) at this place."""
        value: Any = MARK
        for key in reversed(self.loc):
            value = [value] if isinstance(key, int) else {key: value}
        return json.dumps(value).replace(f'"{MARK}"', literal).encode()


@dataclass(frozen=True)
class Operation:
    method: str
    route: str  # the path as declared, parameters in braces
    url: str
    places: tuple[Place, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.route}"


def _routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """Every ``(path, methods)`` of a route table, included routers flattened."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            sub = getattr(route.include_context, "prefix", "") or ""
            yield from _routes(inner.routes, prefix + sub)
        elif getattr(route, "methods", None):
            yield prefix + route.path, set(route.methods)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for choice in schema.get("anyOf", []):  # a body or null: the body
        if choice.get("type") != "null":
            return _resolve(spec, choice)
    return schema


def _numeric(schema: dict[str, Any]) -> bool:
    types = {schema.get("type")} | {c.get("type") for c in schema.get("anyOf", [])}
    return bool(types & {"number", "integer"})


def _places(spec: dict[str, Any], method: str, path: str) -> tuple[Place, ...]:
    """A place per field of the operation's JSON body; ``x`` if it takes none."""
    op = spec.get("paths", {}).get(path, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return (Place(("x",), False),)
    schema = _resolve(spec, content["application/json"]["schema"])
    prefix: tuple[int, ...] = ()
    if schema.get("type") == "array":
        schema, prefix = _resolve(spec, schema["items"]), (0,)
    props = schema.get("properties", {})
    assert props, f"{method} {path}: a body without fields: {schema}"
    return tuple(
        Place((*prefix, name), _numeric(_resolve(spec, p))) for name, p in props.items()
    )


def operations(app: FastAPI, values: dict[str, str]) -> list[Operation]:
    """Every operation of ``app`` (HEAD aside) with its path filled from
    ``values`` and the places of its body's fields."""
    spec = app.openapi()
    ops = []
    for path, methods in _routes(app.router.routes):
        url = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m[1], "x"), path)
        for method in sorted(methods - {"HEAD"}):
            ops.append(Operation(method, path, url, _places(spec, method, path)))
    documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert documented <= {(o.method, o.route) for o in ops}, "routes not enumerated"
    return ops


def chunks(total_bytes: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body of ``total_bytes`` sent chunked (no Content-Length)."""
    yield b'["'
    for _ in range(total_bytes // size):
        yield b"a" * size
    yield b'"]'


async def achunks(total_bytes: int) -> AsyncIterator[bytes]:
    """``chunks`` for an async client."""
    for chunk in chunks(total_bytes):
        yield chunk


def bounded(r: httpx.Response, op: Operation, what: str) -> None:
    assert 400 <= r.status_code < 500, (str(op), what, r.status_code, r.text[:300])
    assert len(r.content) < MAX_ANSWER_BYTES, (str(op), what, len(r.content))


def names(r: httpx.Response, place: Place, kind: str | None = None) -> bool:
    """Whether ``r`` is a 422 naming ``place`` (with error type ``kind``)."""
    if r.status_code != 422:
        return False
    want = ["body", *place.loc]
    return any(
        e["loc"] == want and (kind is None or e["type"] == kind)
        for e in r.json()["detail"]
    )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_tracebacks() -> Iterator[None]:
    """Fail if anything in the block logs a traceback, or the servers log an
    error (uvicorn's loggers do not propagate: they are watched too)."""
    handler = _Records()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    bad = [
        f"{r.name} {r.levelname}: {r.getMessage()[:200]}"
        for r in handler.records
        if r.exc_info
        or "Traceback" in r.getMessage()
        or (r.levelno >= logging.ERROR and r.name.startswith(("uvicorn", "fastapi")))
    ]
    assert not bad, bad


# -- the cloud API ---------------------------------------------------------------

CLOUD_OPS = operations(
    create_app("postgresql://unused@127.0.0.1:1/unused"), CLOUD_PATH_VALUES
)
CLOUD_ROLES = ("anonymous", "owner", "installer", "operator")


def _cloud_headers(served: Served, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    return {"Authorization": f"Bearer {served.tokens[role]}"}


def test_every_cloud_operation_is_enumerated() -> None:
    routes = {str(o) for o in CLOUD_OPS}
    # API, web pages, static files and the docs
    for op in (
        "POST /v1/auth/login",
        "PUT /v1/tariffs/{tariff_id}/prices",
        "POST /app/site/{gw}/readings",
        "GET /app/static/app.css",
        "GET /docs",
    ):
        assert op in routes
    assert len(CLOUD_OPS) >= 60


def test_cloud_refuses_values_json_cannot_carry(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    """NaN, Infinity, 1e999, lone surrogates: 422 naming the field, every
    operation and role, the login before any login included."""
    with (
        no_tracebacks(),
        httpx.Client(base_url=served.base_url, timeout=timeout(30)) as client,
    ):
        for role in CLOUD_ROLES:
            headers = {**_cloud_headers(served, role), **JSON_TYPE}
            for op in CLOUD_OPS:
                for place in op.places:
                    for what, literal in BAD_LITERALS.items():
                        r = client.request(
                            op.method,
                            op.url,
                            content=place.body(literal),
                            headers=headers,
                        )
                        bounded(r, op, f"{role} {what} at {place.loc}")
                        assert names(r, place), (str(op), role, what, r.text)
        _cloud_is_healthy(client, served)
    assert "Traceback" not in capfd.readouterr().err


def test_cloud_models_refuse_numbers_as_text_that_are_not_finite(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    """``"nan"`` and the like in a number field: valid JSON, refused by the body
    model with 422 "not a number" naming the field."""
    with (
        no_tracebacks(),
        httpx.Client(base_url=served.base_url, timeout=timeout(30)) as client,
    ):
        checked = 0
        for op in CLOUD_OPS:
            for place in (p for p in op.places if p.numeric):
                for text in NUMBER_TEXTS:
                    answers = [
                        client.request(
                            op.method,
                            op.url,
                            content=place.body(text),
                            headers={**_cloud_headers(served, role), **JSON_TYPE},
                        )
                        for role in CLOUD_ROLES
                    ]
                    for r in answers:
                        bounded(r, op, f"{text} at {place.loc}")
                    assert any(names(r, place, "finite_number") for r in answers), (
                        str(op),
                        place,
                        [(r.status_code, r.text[:200]) for r in answers],
                    )
                    checked += 1
        assert checked >= 40  # preferences, prices, manual readings, sites, ...
        _cloud_is_healthy(client, served)
    assert "Traceback" not in capfd.readouterr().err


def test_cloud_refuses_huge_and_deep_bodies_unread(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    headers = {**_cloud_headers(served, "owner"), **JSON_TYPE}
    huge = b'["' + b"a" * HUGE_BYTES + b'"]'
    with (
        no_tracebacks(),
        httpx.Client(base_url=served.base_url, timeout=timeout(30)) as client,
    ):
        for op in CLOUD_OPS:
            r = client.request(op.method, op.url, content=huge, headers=headers)
            bounded(r, op, "10 MB declared")
            assert r.status_code == 413 and "too large" in r.json()["detail"], r.text
            r = client.request(
                op.method, op.url, content=chunks(HUGE_BYTES), headers=headers
            )
            bounded(r, op, "10 MB chunked")
            assert r.status_code == 413, r.text
            r = client.request(
                op.method, op.url, content=b"[" * 100_000, headers=headers
            )
            bounded(r, op, "100,000 levels")
            cap = BODY_CAPS(op.method, op.route)
            assert r.status_code == (413 if cap < 100_000 else 422), r.text
            r = client.request(
                op.method, op.url, content=b"[" * 50_000, headers=headers
            )
            bounded(r, op, "50,000 levels")
            assert r.json()["detail"][0]["type"] == "json_too_deep", r.text
        _cloud_is_healthy(client, served)
    assert "Traceback" not in capfd.readouterr().err


def _cloud_is_healthy(client: httpx.Client, served: Served) -> None:
    assert client.get("/healthz").status_code == 200
    owner = _cloud_headers(served, "owner")
    me = client.get("/v1/me", headers=owner)
    assert me.status_code == 200 and me.json()["role"] == "owner"
    r = client.put(
        "/v1/gateways/gw-a/chargers/CP-A/preferences",
        json={"ready_by": "07:30", "target_energy_kwh": 20, "mode": "smart"},
        headers=owner,
    )
    assert r.status_code == 200, r.text


def test_a_two_year_price_curve_fits_its_cap_and_more_does_not(served: Served) -> None:
    """The one route with a larger cap: the longest curve it takes (two years of
    half-hour slots, pretty-printed) is accepted; over the cap it is 413; a
    curve of bad slots is a bounded 422, not one error per slot."""
    start = datetime(2030, 1, 1, tzinfo=UTC)
    slots = [
        {
            "slot_start": (start + timedelta(minutes=30 * i)).isoformat(),
            "price_p_per_kwh": round(-1.5 + (i % 97) / 7, 4),
            "carbon_g_per_kwh": round(100 + (i % 53) / 3, 4),
        }
        for i in range(2 * 366 * 48)
    ]
    body = json.dumps(slots, indent=2).encode()
    assert DEFAULT_BODY_CAP_BYTES < len(body) < PRICE_CURVE_CAP_BYTES
    operator = {**_cloud_headers(served, "operator"), **JSON_TYPE}
    with httpx.Client(base_url=served.base_url, timeout=timeout(60)) as client:
        r = client.put("/v1/tariffs/tariff-big/prices", content=body, headers=operator)
        assert r.status_code == 200 and r.json()["slots"] == len(slots), r.text
        padded = body[:-1] + b" " * (PRICE_CURVE_CAP_BYTES - len(body) + 1) + b"]"
        r = client.put(
            "/v1/tariffs/tariff-big/prices", content=padded, headers=operator
        )
        assert r.status_code == 413
        assert f"{PRICE_CURVE_CAP_BYTES} bytes" in r.json()["detail"]
        bad = json.dumps([{"slot_start": "x", "price_p_per_kwh": "y"}] * 30_000)
        r = client.put("/v1/tariffs/tariff-big/prices", content=bad, headers=operator)
        assert r.status_code == 422 and len(r.content) < MAX_ANSWER_BYTES
        assert r.json()["detail"][-1]["type"] == "too_many_errors"
        # other routes keep the default cap
        r = client.post(
            "/v1/claims",
            content=b'{"claim_code": "' + b"A" * 70_000 + b'"}',
            headers=operator,
        )
        assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]


def test_validation_errors_echo_only_an_excerpt(served: Served) -> None:
    owner = {**_cloud_headers(served, "owner"), **JSON_TYPE}
    long_text = "é" * 15_000  # long, but the body is under the cap
    with httpx.Client(base_url=served.base_url, timeout=timeout(30)) as client:
        r = client.put(
            "/v1/gateways/gw-a/chargers/CP-A/preferences",
            content=json.dumps(
                {"ready_by": long_text, "mode": long_text}, ensure_ascii=False
            ).encode(),
            headers=owner,
        )
        assert r.status_code == 422 and len(r.content) < MAX_ANSWER_BYTES, r.text
        for error in r.json()["detail"]:
            assert len(error.get("input", "")) <= 64


def test_nosniff_everywhere_and_a_csp_on_the_docs(served: Served) -> None:
    with httpx.Client(base_url=served.base_url, timeout=timeout(30)) as client:
        for path in (
            "/healthz",
            "/v1/gateways",  # 401
            "/openapi.json",
            "/login",
            "/app/static/app.css",
            "/app/static/app.js",
            "/docs",
            "/redoc",
            "/no-such-page",
        ):
            r = client.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
        # the web pages keep their own policy
        assert (
            "script-src 'self'"
            in client.get("/login").headers["content-security-policy"]
        )
        docs = client.get("/docs")
        csp = docs.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        script_src = directives["script-src"].split()
        assert CDN in script_src and "'unsafe-inline'" not in script_src
        hashes = inline_script_hashes(docs.text)
        assert hashes and set(hashes) <= set(script_src)  # the page's own script
        assert f'src="{CDN}/' in docs.text  # what FastAPI loads, from that CDN
        assert CDN in directives["style-src"]
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        redoc = client.get("/redoc").headers["content-security-policy"]
        assert f"script-src {CDN};" in redoc and "worker-src blob:" in redoc


async def test_csv_cells_are_not_formulas(served: Served) -> None:
    conn = await asyncpg.connect(served.dsn)
    try:
        await BatchStore.init_connection(conn)
        feeder = Feeder(conn)
        feeder.seq["gw-a"] = 10_000  # after the seeded batches
        streams = [
            ("=1+2*cmd|x", "power_w"),
            ("@SUM(A1)", "power_w"),
            ("-1", "power_w"),
        ]
        ts = minute_ms(3)
        await feeder.feed("gw-a", streams, [(ts, 0, -1.5), (ts, 1, 2.0), (ts, 2, -3.0)])
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=served.base_url, timeout=timeout(30)) as c:
        r = await c.get(
            "/v1/gateways/gw-a/readings.csv",
            params={"since": "2000-01-01T00:00:00Z"},
            headers=_cloud_headers(served, "owner"),
        )
    assert r.status_code == 200
    rows = {line.split(",", 1)[1] for line in r.text.splitlines()[1:]}
    # CSV quoting aside, a text cell never starts a formula; numbers stay numbers
    assert "'=1+2*cmd|x,power_w,-1.5" in rows
    assert "'@SUM(A1),power_w,2.0" in rows
    assert "-1,power_w,-3.0" in rows


def test_web_forms_say_not_a_number(served: Served) -> None:
    """The pages' forms with ``nan``/``inf`` typed in: the flash message says
    which field is not a number (it used to say "the API answered 500")."""

    def flash(client: httpx.Client, token: str, path: str, form: dict[str, str]) -> str:
        client.cookies.set(SESSION_COOKIE, token)
        r = client.post(
            path,
            data={**form, "csrf": csrf_token(token)},
            headers={"Origin": served.base_url},
        )
        assert r.status_code == 303, r.text
        return unquote(r.cookies["fusebox_flash"])

    owner, installer = served.tokens["owner"], served.tokens["installer"]
    with httpx.Client(base_url=served.base_url, timeout=timeout(30)) as client:
        text = flash(
            client,
            owner,
            "/app/site/gw-a/chargers/CP-A/preferences",
            {"ready_by": "07:30", "mode": "smart", "target_energy_kwh": "nan"},
        )
        assert text.startswith("error|Not saved: target_energy_kwh: not a number")
        text = flash(
            client,
            owner,
            "/app/site/gw-a/readings",
            {"meter_id": "m-a-manual", "register_kwh": "inf"},
        )
        assert "register_kwh: not a number" in text and "500" not in text
        text = flash(
            client,
            installer,
            "/app/install/gw-a/chargers",
            {"charger_id": "CP-A", "max_power_w": "1e999", "phases": "1"},
        )
        assert "max_power_w: not a number" in text, text
        text = flash(
            client,
            installer,
            "/app/install/gw-a/site",
            {"owner_email": "owner_a@example.com", "main_fuse_a": "-Infinity"},
        )
        assert "main_fuse_a: not a number" in text, text


# -- the edge's local API ----------------------------------------------------------

EDGE_ROLES = ("anonymous", "installer")


@pytest.fixture
async def edge_api(tmp_path: Path) -> AsyncIterator[tuple[EdgeAgent, str]]:
    async with running(edge_config(tmp_path)) as (agent, url):
        yield agent, url


async def test_edge_refuses_bad_input_on_every_operation(
    edge_api: tuple[EdgeAgent, str], capfd: pytest.CaptureFixture[str]
) -> None:
    agent, url = edge_api
    assert agent.local_api is not None
    ops = operations(create_edge_app(agent.local_api.site), EDGE_PATH_VALUES)
    assert {"POST /api/site", "POST /ui/site", "GET /"} <= {str(o) for o in ops}
    huge = b'["' + b"a" * HUGE_BYTES + b'"]'
    numbers = 0
    with no_tracebacks():
        for role in EDGE_ROLES:
            auth = AUTH if role == "installer" else None
            async with httpx.AsyncClient(
                base_url=url, auth=auth, timeout=timeout(30), headers=JSON_TYPE
            ) as client:
                for op in ops:
                    for place in op.places:
                        for what, literal in BAD_LITERALS.items():
                            r = await client.request(
                                op.method, op.url, content=place.body(literal)
                            )
                            bounded(r, op, f"{role} {what} at {place.loc}")
                            assert names(r, place), (str(op), role, what, r.text)
                        for text in NUMBER_TEXTS if place.numeric else ():
                            r = await client.request(
                                op.method, op.url, content=place.body(text)
                            )
                            bounded(r, op, f"{role} {text} at {place.loc}")
                            if role == "installer":
                                assert names(r, place, "finite_number"), r.text
                                numbers += 1
                    r = await client.request(op.method, op.url, content=huge)
                    bounded(r, op, "10 MB declared")
                    assert r.status_code == 413
                    r = await client.request(
                        op.method, op.url, content=achunks(HUGE_BYTES)
                    )
                    assert r.status_code == 413
                    bounded(r, op, "10 MB chunked")
                    for depth in (100_000, 50_000):
                        r = await client.request(
                            op.method, op.url, content=b"[" * depth
                        )
                        bounded(r, op, f"{depth} levels")
        assert numbers >= 3 * len(NUMBER_TEXTS)  # fuse, approve's current, boost
        async with httpx.AsyncClient(
            base_url=url, auth=AUTH, timeout=timeout(10)
        ) as client:
            assert (await client.get("/api/health")).status_code == 200
            assert (await client.get("/api/status")).status_code == 200
            r = await client.post("/api/site", json={"main_fuse_a": 70})
            assert r.status_code == 200 and r.json()["main_fuse_a"] == 70
    assert "Traceback" not in capfd.readouterr().err

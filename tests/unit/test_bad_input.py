"""Bad request input, pure (issue 10): ``protocols.bodies`` (values JSON cannot
carry, bounded validation errors, ``RequestBody``), ``protocols.body_gate``
(caps, strict parsing, the ASGI shell over a plain ASGI app) and the CSV cell
escaping of ``cloud.api.readings``. The same paths run for real, over HTTP, in
``tests/component/test_api_bad_input.py``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import Field, ValidationError

from cloud.api.readings import csv_text
from protocols.bodies import (
    MAX_ERRORS,
    MAX_JSON_DEPTH,
    NOT_A_NUMBER,
    RequestBody,
    bounded_errors,
    excerpt,
    json_problem,
)
from protocols.body_gate import (
    DEFAULT_BODY_CAP_BYTES,
    BodyGate,
    GuardedBodies,
    Refusal,
    RouteCaps,
    parse_json_body,
)

JSON = [(b"content-type", b"application/json")]


class Slot(RequestBody):
    price: float | None = None
    count: int = 0
    name: str = ""
    values: list[float] = Field(default_factory=list)


# -- the values plain JSON cannot carry ----------------------------------------


@pytest.mark.parametrize(
    ("text", "loc", "kind"),
    [
        (b'{"a": NaN}', ["body", "a"], "finite_number"),
        (b'{"a": Infinity}', ["body", "a"], "finite_number"),
        (b'{"a": [1, -Infinity]}', ["body", "a", 1], "finite_number"),
        (b'{"a": {"b": 1e999}}', ["body", "a", "b"], "finite_number"),
        (b'[{"x": 1}, {"x": -1e400}]', ["body", 1, "x"], "finite_number"),
        (b'{"a": "ok", "b": "\\ud800"}', ["body", "b"], "string_unicode"),
        (b'{"\\udfff": 1}', ["body", "\\udfff"], "string_unicode"),
        (b"[" * 40 + b"]" * 40, ["body", *([0] * MAX_JSON_DEPTH)], "json_too_deep"),
        (b"[" * 100_000, ["body"], "json_too_deep"),
        (b'{"a": 1', ["body", 7], "json_invalid"),
        (b'{"a": "\xed\xa0\x80"}', ["body"], "json_invalid"),  # a surrogate in UTF-8
    ],
)
def test_strict_parse_refuses_and_names_the_place(
    text: bytes, loc: list[Any], kind: str
) -> None:
    with pytest.raises(Refusal) as refused:
        parse_json_body(text)
    assert refused.value.status == 422
    (error,) = refused.value.detail
    assert isinstance(error, dict)
    assert error["loc"] == loc and error["type"] == kind
    json.loads(refused.value.body())  # always encodes


def test_strict_parse_takes_plain_json() -> None:
    assert parse_json_body(
        b'\xef\xbb\xbf{"a": [1.5, -2e10, "\\u00e9 \\ud83d\\ude00"]}'
    ) == {"a": [1.5, -2e10, "é 😀"]}
    assert json_problem([[[1]]]) is None


def test_the_first_problem_in_document_order_is_named() -> None:
    problem = json_problem({"a": [1, float("nan")], "b": float("inf")}, ("body",))
    assert problem is not None and problem.loc == ("body", "a", 1)


# -- bounded validation errors -------------------------------------------------


def test_validation_errors_repeat_only_an_excerpt() -> None:
    errors = [
        {"loc": ("body", "a"), "msg": "bad", "type": "t", "input": "x" * 10_000_000},
        {"loc": ("body", "b"), "msg": "bad", "type": "t", "input": float("nan")},
        {"loc": ("body", "c"), "msg": "bad", "type": "t", "input": "\ud800"},
        {"loc": ("body", "\ud800"), "msg": "m\ud800", "type": "t", "input": [1] * 999},
        {"loc": ("body",), "msg": "x", "type": "t", "ctx": {"error": ValueError("z")}},
        {"loc": ("body", "d"), "msg": "bad", "type": "t", "input": 10**100},
    ]
    out = bounded_errors(errors)
    text = json.dumps({"detail": out}, allow_nan=False).encode()  # encodes
    assert len(text) < 1000
    assert out[0]["input"] == "x" * 63 + "…"
    assert "input" not in out[1] and "input" not in out[3] and "input" not in out[5]
    assert out[2]["input"] == "\\ud800" and out[3]["loc"] == ["body", "\\ud800"]
    assert out[4]["ctx"] == {"error": "z"}


def test_many_errors_are_cut_to_a_bounded_list() -> None:
    errors = [{"loc": ("body", i), "msg": "bad", "type": "t"} for i in range(35_000)]
    out = bounded_errors(errors)
    assert len(out) == MAX_ERRORS + 1
    assert out[-1]["type"] == "too_many_errors" and "34980 more" in out[-1]["msg"]


def test_excerpt() -> None:
    assert excerpt("short") == "short"
    assert len(excerpt("é" * 500)) == 64


# -- RequestBody ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"price": float("nan")}, ("price",)),
        ({"price": float("-inf")}, ("price",)),
        ({"price": "nan"}, ("price",)),  # a form's text
        ({"price": "Infinity"}, ("price",)),
        ({"price": "1e999"}, ("price",)),
        ({"count": "inf"}, ("count",)),
        ({"values": [1.0, float("inf")]}, ("values",)),
        ({"values": ["1", "nan"]}, ("values",)),
    ],
)
def test_a_number_that_is_not_finite_is_refused(
    data: dict[str, Any], loc: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as refused:
        Slot.model_validate(data)
    (error,) = refused.value.errors()
    assert error["loc"][: len(loc)] == loc
    assert "finite" in error["msg"]


def test_not_a_number_message_and_text_that_merely_reads_nan() -> None:
    with pytest.raises(ValidationError) as refused:
        Slot.model_validate({"price": "nan"})
    assert refused.value.errors()[0]["msg"] == NOT_A_NUMBER
    # text fields take such text: only numbers must be finite
    assert Slot.model_validate({"name": "nan"}).name == "nan"
    assert Slot.model_validate({"price": "-1.5"}).price == -1.5


def test_text_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Slot.model_validate({"name": "a\ud800"})
    (error,) = refused.value.errors()
    assert error["loc"] == ("name",) and error["type"] == "string_unicode"


# -- the gate ------------------------------------------------------------------


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    gate = BodyGate(1024, [*JSON, (b"content-length", b"10000000")])
    assert not gate.wants_more
    assert gate.refusal is not None and gate.refusal.status == 413
    assert "1024 bytes" in str(gate.refusal.detail)


def test_a_streamed_body_is_refused_as_it_passes_the_cap() -> None:
    gate = BodyGate(1024, JSON)
    for _ in range(3):
        gate.feed(b"x" * 400, more=True)
    assert gate.refusal is not None and gate.refusal.status == 413
    assert gate.body == b""  # nothing kept


def test_a_complete_json_body_is_judged() -> None:
    gate = BodyGate(1024, JSON)
    gate.feed(b'{"a": ', more=True)
    assert gate.wants_more
    gate.feed(b"NaN}", more=False)
    assert gate.refusal is not None and gate.refusal.status == 422
    ok = BodyGate(1024, JSON)
    ok.feed(b'{"a": 1}', more=False)
    assert ok.refusal is None and ok.body == b'{"a": 1}'


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"application/x-www-form-urlencoded")],
        [(b"content-type", b"text/plain")],
        [],  # FastAPI's strict content type: not read as JSON
    ],
)
def test_bodies_not_read_as_json_are_only_capped(
    headers: list[tuple[bytes, bytes]],
) -> None:
    gate = BodyGate(1024, headers)
    gate.feed(b"a=NaN", more=False)
    assert gate.refusal is None


def test_json_content_types() -> None:
    gate = BodyGate(1024, [(b"Content-Type", b"application/merge-patch+json; x=1")])
    gate.feed(b"NaN", more=False)
    assert gate.refusal is not None


def test_route_caps() -> None:
    caps = RouteCaps({("PUT", "/v1/tariffs/{tariff_id}/prices"): 5_000})
    assert caps("PUT", "/v1/tariffs/t-1/prices") == 5_000
    assert caps("put", "/v1/tariffs/t-1/prices") == 5_000
    assert caps("POST", "/v1/tariffs/t-1/prices") == DEFAULT_BODY_CAP_BYTES
    assert caps("PUT", "/v1/tariffs/t-1/prices/x") == DEFAULT_BODY_CAP_BYTES
    assert caps("PUT", "/v1/tariffs/a/b/prices") == DEFAULT_BODY_CAP_BYTES


def _run_shell(
    messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """``GuardedBodies`` around an app that echoes the body it reads."""
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    sent: list[dict[str, Any]] = []
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    shell = GuardedBodies(
        app, caps=RouteCaps(default_bytes=100), headers=lambda path: {"X-A": "b"}
    )
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    asyncio.run(shell(scope, receive, send))
    return sent, seen


def test_the_shell_replays_a_good_body_and_adds_headers() -> None:
    chunks = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b" 1}", "more_body": False},
    ]
    sent, seen = _run_shell(chunks, JSON)
    assert seen == [b'{"a": 1}']
    assert sent[0]["status"] == 200 and (b"x-a", b"b") in sent[0]["headers"]


def test_the_shell_answers_a_refusal_itself() -> None:
    chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 3
    sent, seen = _run_shell(chunks, JSON)
    assert seen == []  # the app never saw the request
    assert sent[0]["status"] == 413 and (b"x-a", b"b") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["detail"].startswith("request body too large")


def test_the_shell_gives_up_when_the_client_goes_away() -> None:
    sent, seen = _run_shell([{"type": "http.disconnect"}], JSON)
    assert sent == [] and seen == []


# -- CSV cells -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+2*cmd|x", "'=1+2*cmd|x"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-1.5", "-1.5"),  # a plain number is no formula
        ("+2e5", "+2e5"),
        ("CP-1", "CP-1"),
        ("", ""),
    ],
)
def test_csv_text_cells_cannot_be_formulas(cell: str, written: str) -> None:
    assert csv_text(cell) == written

"""Every HTTP request body, checked before an app reads it: capped in size
(413) and, when it is JSON, parsed strictly (422 naming the field), for the
cloud API (with the web app) and the edge's local API alike.

Why before the app: Python's json module reads ``NaN``, ``Infinity`` and
``1e999`` as floats that are not finite and keeps lone surrogates (``"\\ud800"``)
in text; FastAPI then hands them to handlers, or echoes them in a 422 it cannot
encode (a 500, the connection dropped). And a size cap must hold before the body
is read, not after.

Two layers:

* ``BodyGate`` is pure (sans-I/O): fed the request's headers and its body chunks
  as they arrive, it decides. A declared ``Content-Length`` over the cap is
  refused before a byte is read; a chunked body is counted as it streams and
  refused as soon as it passes the cap. A complete JSON body (``Content-Type``
  ``application/json`` or ``*+json``, as FastAPI reads it) must be UTF-8,
  well-formed, nest at most ``MAX_JSON_DEPTH`` deep and hold only finite numbers
  and valid text (``protocols.bodies.json_problem``).
* ``GuardedBodies`` is the ASGI middleware around an app: it pumps the server's
  messages through a gate, answers a refusal itself, else replays the body to
  the app; it also adds headers to every answer (``nosniff``, a CSP). It does no
  I/O of its own: the server hands it ``receive`` and ``send``.

Caps are per route (``RouteCaps``): ``DEFAULT_BODY_CAP_BYTES`` unless a route
needs more (the cloud's price curves).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from protocols.bodies import MAX_JSON_DEPTH, JsonProblem, json_problem

__all__ = [
    "DEFAULT_BODY_CAP_BYTES",
    "BodyGate",
    "GuardedBodies",
    "Refusal",
    "RouteCaps",
    "parse_json_body",
]

DEFAULT_BODY_CAP_BYTES = 64 * 1024
"""A request body's cap unless its route says otherwise (every JSON body the
APIs take is far smaller; a price curve is the exception)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Refusal(Exception):
    """A request refused before the app saw it: ``status`` and the ``detail``
    of the answer (FastAPI's shapes: a list of ``{loc, msg, type}`` for 422, a
    sentence otherwise)."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail

    def body(self) -> bytes:
        """The JSON answer, ASCII only (it always encodes)."""
        return json.dumps({"detail": self.detail}, allow_nan=False).encode()

    @classmethod
    def of(cls, problem: JsonProblem) -> Refusal:
        """The 422 naming where ``problem`` is."""
        return cls(422, [problem.error()])


def _size(n_bytes: int) -> str:
    return f"{n_bytes} bytes ({n_bytes / 1024:.0f} KiB)"


def too_large(cap_bytes: int, seen_bytes: int | None = None) -> Refusal:
    """The 413 for a body over ``cap_bytes`` (``seen_bytes``: its declared size,
    or ``None`` when it was still streaming)."""
    size = "" if seen_bytes is None else f" ({seen_bytes} bytes)"
    return Refusal(
        413,
        f"request body too large{size}: this route takes at most "
        f"{_size(cap_bytes)}; send a smaller body (split a long upload)",
    )


def parse_json_body(data: bytes) -> Any:
    """``data`` as strict JSON, or ``Refusal`` (422) naming where it breaks:
    not UTF-8, not well-formed, too deeply nested, a number that is not finite or
    text with a lone surrogate (``protocols.bodies.json_problem``)."""
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise Refusal(
            422,
            [
                {
                    "loc": ["body"],
                    "msg": f"the body is not UTF-8 (byte {exc.start}); send JSON "
                    "as UTF-8",
                    "type": "json_invalid",
                }
            ],
        ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refusal(
            422,
            [
                {
                    "loc": ["body", exc.pos],
                    "msg": "JSON decode error",
                    "type": "json_invalid",
                    "ctx": {"error": exc.msg},
                }
            ],
        ) from None
    except RecursionError:
        raise Refusal.of(
            JsonProblem(
                ("body",),
                f"nested deeper than {MAX_JSON_DEPTH} arrays or objects",
                "json_too_deep",
            )
        ) from None
    problem = json_problem(value, ("body",))
    if problem is not None:
        raise Refusal.of(problem)
    return value


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def reads_as_json(content_type: bytes | None) -> bool:
    """Whether FastAPI reads a body of ``content_type`` as JSON:
    ``application/json`` or ``application/*+json`` (with its default strict
    content type, a body without one is not read as JSON)."""
    if not content_type:
        return False
    mime = content_type.split(b";", 1)[0].strip().lower()
    main, _, sub = mime.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


class BodyGate:
    """One request's body, judged as it arrives. Feed it with ``feed`` while
    ``wants_more``; then ``refusal`` is the answer to give instead of the app's,
    or ``None`` and ``body`` holds the whole body to hand on."""

    def __init__(self, cap_bytes: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        headers = list(headers)
        self.cap_bytes = cap_bytes
        self.refusal: Refusal | None = None
        self.complete = False
        self._json = reads_as_json(_header(headers, b"content-type"))
        self._chunks: list[bytes] = []
        self._size = 0
        declared = _header(headers, b"content-length")
        if (
            declared is not None
            and declared.strip().isdigit()
            and (int(declared) > cap_bytes)
        ):
            self.refusal = too_large(cap_bytes, int(declared))

    @property
    def wants_more(self) -> bool:
        """Whether to read on (not refused, not complete)."""
        return self.refusal is None and not self.complete

    @property
    def body(self) -> bytes:
        """The body as received so far (all of it once complete)."""
        return b"".join(self._chunks)

    def feed(self, chunk: bytes, *, more: bool) -> None:
        """The next chunk of the body (``more``: others follow); judged at once."""
        self._size += len(chunk)
        if self._size > self.cap_bytes:
            self.refusal = too_large(self.cap_bytes)
            self._chunks.clear()
            return
        if chunk:
            self._chunks.append(chunk)
        if not more:
            self.complete = True
            if self._json and self._size:
                try:
                    parse_json_body(self.body)
                except Refusal as refusal:
                    self.refusal = refusal


def _template(path: str) -> re.Pattern[str]:
    """A route path (``/v1/tariffs/{tariff_id}/prices``) as a pattern."""
    parts = re.split(r"(\{[^}/]+\})", path)
    return re.compile(
        "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$"
    )


class RouteCaps:
    """The body cap of each request: ``caps`` maps ``(METHOD, route path)`` (path
    parameters in braces, as the app declares them) to a cap in bytes; every
    other route gets ``default_bytes``."""

    def __init__(
        self,
        caps: Mapping[tuple[str, str], int] | None = None,
        *,
        default_bytes: int = DEFAULT_BODY_CAP_BYTES,
    ) -> None:
        self.default_bytes = default_bytes
        self._caps = [
            (method.upper(), _template(path), cap)
            for (method, path), cap in (caps or {}).items()
        ]

    def __call__(self, method: str, path: str) -> int:
        """The cap in bytes of a ``method`` request to ``path``."""
        for m, pattern, cap in self._caps:
            if m == method.upper() and pattern.match(path):
                return cap
        return self.default_bytes


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``headers`` to the answer, each unless already set."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and headers:
            present = {k.lower() for k, _ in message.get("headers", ())}
            extra = [(k, v) for k, v in headers if k not in present]
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return sending


class GuardedBodies:
    """ASGI middleware: each HTTP request's body through a ``BodyGate`` with the
    cap ``caps(method, path)`` gives, a refusal answered here (the app never
    sees the request), and ``headers(path)`` added to every answer."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        caps: Callable[[str, str], int] | None = None,
        headers: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.app = app
        self.caps = caps or RouteCaps()
        self.headers = headers or (lambda path: {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection (only ``http`` ones are judged)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in self.headers(scope["path"]).items()
        ]
        send = _with_headers(send, extra)
        gate = BodyGate(self.caps(scope["method"], scope["path"]), scope["headers"])
        while gate.wants_more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            gate.feed(message.get("body", b""), more=message.get("more_body", False))
        if gate.refusal is not None:
            await _answer(send, gate.refusal)
            return
        await self.app(scope, _replay(gate.body, receive), send)


async def _answer(send: Send, refusal: Refusal) -> None:
    body = refusal.body()
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # no "Connection: close": the server then drops the rest of an
                # oversized body as it arrives (h11 and httptools both do), and
                # the client reads this answer instead of a reset connection
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives ``body`` whole first, then the server's messages
    (a disconnect, for apps that listen for one)."""
    given = False

    async def receiving() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receiving

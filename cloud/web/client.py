"""The API, in-process: every page calls the JSON endpoints through
:func:`api_call`, a direct ASGI call into the app serving the request, carrying
the session's bearer token. So tenancy, validation and rate limits are exactly
the API's (a page can show nothing the token could not read), and no SQL lives
in the web app.

An in-process call is part of the page request, which admission control
(``cloud.api.admission``) admitted already: its scope carries
``IN_PROCESS_KEY`` so it is not counted twice. A page that gets 429 or 503 from
the API passes ``ApiAnswer.retry_after_s`` on to the browser, whose script
(``static/app.js``) backs off with full jitter and never sooner than told.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import Request

from cloud.web.formatting import zone

log = logging.getLogger("fusebox.cloud.web")

IN_PROCESS_KEY = "fusebox.in_process"
"""``cloud.api.admission.IN_PROCESS``: this call belongs to an admitted page."""


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """What the API answered: the HTTP status and the decoded JSON body (or the
    text, when the answer was not JSON)."""

    status: int
    body: Any
    retry_after_s: int | None = None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300

    def error(self) -> str:
        """The API's ``detail`` as one line (fields named)."""
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            parts = []
            for d in detail:
                if not isinstance(d, dict):
                    parts.append(str(d))
                    continue
                loc = [str(x) for x in d.get("loc", []) if x not in ("body", "query")]
                msg = str(d.get("msg", "invalid"))
                parts.append(f"{loc[-1]}: {msg}" if loc else msg)
            return "; ".join(parts)
        return f"the API answered {self.status}"


def _segment(value: str) -> str:
    # ids never contain "/" (the API's patterns); refuse rather than re-route
    if "/" in value or not value:
        raise ValueError(f"bad path segment {value!r}")
    return value


def api_path(*segments: str) -> str:
    """The API path of ``segments``; raises ``ValueError`` for an empty segment
    or one containing ``/`` rather than letting it re-route the call."""
    return "/" + "/".join(_segment(s) for s in segments)


def _scope(
    request: Request,
    method: str,
    path: str,
    token: str | None,
    body: bytes,
    json_body: Any,
    query: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ASGI scope of the in-process call, as the browser's client address."""
    headers = [
        (b"host", (request.headers.get("host") or "localhost").encode("latin-1")),
        (b"accept", b"application/json"),
    ]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    if json_body is not None:
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
    qs = urlencode({k: v for k, v in (query or {}).items() if v is not None})
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": quote(path).encode(),
        "root_path": "",
        "query_string": qs.encode(),
        "headers": headers,
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
        IN_PROCESS_KEY: True,
    }


async def api_call(
    request: Request,
    method: str,
    path: str,
    *,
    token: str | None,
    json_body: Any = None,
    query: Mapping[str, Any] | None = None,
) -> ApiAnswer:
    """Call the API app serving ``request`` in-process, as the browser's client
    address, with ``token``; returns status and decoded JSON (or text)."""
    body = b"" if json_body is None else json.dumps(json_body).encode()
    scope = _scope(request, method, path, token, body, json_body, query)
    sent = False

    async def receive() -> dict[str, Any]:
        """ASGI receive: the whole body at once, then a disconnect."""
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 500
    content_type = ""
    retry_after: int | None = None
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        """ASGI send: keep the status, the content type, Retry-After and the
        body."""
        nonlocal status, content_type, retry_after
        if message["type"] == "http.response.start":
            status = message["status"]
            for k, v in message.get("headers", []):
                if k.lower() == b"content-type":
                    content_type = v.decode("latin-1")
                elif k.lower() == b"retry-after" and v.isdigit():
                    retry_after = int(v)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await request.app(scope, receive, send)
    except Exception:  # the 500 was already sent by the app's error middleware
        log.exception("web: %s %s failed", method, path)
        if not chunks:
            return ApiAnswer(500, {"detail": "internal error"})
    raw = b"".join(chunks)
    if content_type.startswith("application/json"):
        try:
            return ApiAnswer(status, json.loads(raw or b"null"), retry_after)
        except ValueError:
            pass
    return ApiAnswer(status, raw.decode("utf-8", "replace"), retry_after)


async def site_for(request: Request, token: str, gw: str) -> tuple[ApiAnswer, ZoneInfo]:
    """``GET /v1/sites/{gw}`` with ``token``, and the site's time zone (the
    default zone when the site is unknown or has none)."""
    site = await api_call(request, "GET", api_path("v1", "sites", gw), token=token)
    tz = zone(
        (site.body.get("site") or {}).get("timezone")
        if site.ok and isinstance(site.body, dict)
        else None
    )
    return site, tz

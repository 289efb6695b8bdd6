"""The HTTP app: JSON routes under ``/api``, the page at ``/`` and its forms
under ``/ui`` (the same changes, form-encoded, answered with a redirect to the
page), behind the installer's login and a same-origin guard.

Every request body first passes ``protocols.body_gate.GuardedBodies``: over
64 KiB it is answered 413 unread; JSON with ``NaN``, ``Infinity``, ``1e999``
or a lone surrogate is answered 422 naming the field; validation errors repeat
at most a short excerpt of the input (``protocols.bodies.bounded_errors``)."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError

from edge.config import LOCAL_API_USER, is_loopback
from edge.local_api._bodies import ApproveBody, BoostBody, SiteBody
from edge.local_api._discovery import forget_pending
from edge.local_api._errors import BadValue, LocalApiError, status_of
from edge.local_api._page import DONE, approved_done, render_page
from edge.local_api._site import LocalSite
from edge.local_api._throttle import BasicAuthThrottle
from protocols.bodies import bounded_errors
from protocols.body_gate import GuardedBodies, RouteCaps

__all__ = ["REALM", "create_app"]

REALM = "fusebox-edge"

_FORM_INTS = frozenset({"phases", "phase"})
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}

# every body the API takes is a few hundred bytes; the gate's default is ample
_BODY_CAPS = RouteCaps()

# module level: FastAPI resolves the dependency's (string) annotations here
_BASIC = HTTPBasic(auto_error=False, realm=REALM)


def create_app(site: LocalSite) -> FastAPI:
    """The local page and API over ``site`` (served by ``LocalApiServer``; tests
    may also drive it through httpx's ASGI transport)."""
    app = FastAPI(
        title="Fusebox edge (local)",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.middleware("http")(_guard)
    app.state.basic_auth_throttle = throttle = BasicAuthThrottle()
    auth = [Depends(_installer_check(site, throttle))]
    _add_api_routes(app, site, auth)
    _add_page_routes(app, site, auth)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # outermost: bodies capped (413) and strictly parsed (422) before anything,
    # the security headers on every answer, refusals included
    app.add_middleware(GuardedBodies, caps=_BODY_CAPS, headers=_security_headers)
    return app


def _security_headers(path: str) -> dict[str, str]:
    return _HEADERS


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 shape with at most an excerpt of the input, bounded in size
    and always encodable (``protocols.bodies.bounded_errors``)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": bounded_errors(errors)}, status_code=422)


def _client_host(request: Request) -> str:
    return request.client.host if request.client else ""


def _authorised(
    site: LocalSite, request: Request, cred: HTTPBasicCredentials | None
) -> bool:
    password = site.config.local_api.password
    if password is None:
        # only allowed on loopback (config): answer this machine only, and
        # only under a loopback name, so that a web page whose name is
        # re-pointed at 127.0.0.1 (DNS rebinding) cannot use the browser
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        return is_loopback(_client_host(request)) and is_loopback(host)
    if cred is None:
        return False
    user_ok = secrets.compare_digest(cred.username.encode(), LOCAL_API_USER.encode())
    password_ok = secrets.compare_digest(
        cred.password.encode(), password.get_secret_value().encode()
    )
    return user_ok and password_ok


def _installer_check(
    site: LocalSite, throttle: BasicAuthThrottle
) -> Callable[..., Any]:
    """The dependency every route but ``/api/health`` carries: 401 unless the
    installer logged in (or, with no password, the client is this machine);
    429 while wrong passwords from the client's address are throttled."""

    async def installer(
        request: Request,
        cred: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)],
    ) -> None:
        """401 with a Basic challenge unless the client may use the API."""
        who = (cred.username, _client_host(request)) if cred else None
        if who:
            throttle.check(*who)
        if not _authorised(site, request, cred):
            if who:
                throttle.failed(*who)
            raise HTTPException(
                status_code=401,
                detail=f"log in as {LOCAL_API_USER!r} with the local_api password "
                "from the edge config",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
        if who:
            throttle.succeeded(*who)

    return installer


async def _guard(request: Request, call_next: Any) -> Response:
    """Refuse changes from a foreign ``Origin`` (403), so another web site cannot
    drive the installer's browser; add the security headers to every answer."""
    if request.method in _UNSAFE:
        origin = request.headers.get("origin")
        if origin is not None and (
            origin == "null" or urlsplit(origin).netloc != request.headers.get("host")
        ):
            response: Response = JSONResponse(
                {"detail": "cross-origin request refused"}, status_code=403
            )
        else:
            response = await call_next(request)
    else:
        response = await call_next(request)
    for k, v in _HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def _http_error(exc: LocalApiError) -> HTTPException:
    if isinstance(exc, BadValue):  # shaped like pydantic's 422s
        detail: Any = [
            {"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}
        ]
    else:
        detail = str(exc)
    return HTTPException(status_code=status_of(exc), detail=detail)


def _add_api_routes(app: FastAPI, site: LocalSite, auth: list[DependsParam]) -> None:
    """The JSON API under ``/api``."""

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Open to all: the gateway id lets a client check it reached the edge it
        meant."""
        return {"ok": True, "gateway_id": site.config.gateway_id}

    @app.get("/api/status", dependencies=auth)
    async def status() -> dict[str, Any]:
        """The status document, claim code included."""
        return await site.status(show_claim=True)

    @app.post("/api/chargers/{charger_id}/approve", dependencies=auth)
    async def approve(charger_id: str, body: ApproveBody) -> dict[str, Any]:
        """Accept a pending charger (``LocalSite.approve``)."""
        try:
            return await site.approve(charger_id, body)
        except LocalApiError as exc:
            raise _http_error(exc) from None

    @app.post("/api/chargers/{charger_id}/forget", dependencies=auth)
    async def forget(charger_id: str) -> dict[str, Any]:
        """Forget a pending charger (``edge.local_api._discovery``)."""
        try:
            return forget_pending(site, charger_id)
        except LocalApiError as exc:
            raise _http_error(exc) from None

    @app.post("/api/site", dependencies=auth)
    async def set_site(body: SiteBody) -> dict[str, Any]:
        """Set the main fuse limit (``LocalSite.set_main_fuse``)."""
        try:
            return site.set_main_fuse(body)
        except LocalApiError as exc:
            raise _http_error(exc) from None

    @app.post("/api/chargers/{charger_id}/boost", dependencies=auth)
    async def boost(charger_id: str, body: BoostBody | None = None) -> dict[str, Any]:
        """Boost a charger; no body: until the EV is unplugged."""
        try:
            return site.boost(charger_id, body or BoostBody())
        except LocalApiError as exc:
            raise _http_error(exc) from None

    @app.post("/api/chargers/{charger_id}/cancel_boost", dependencies=auth)
    async def cancel_boost(charger_id: str) -> dict[str, Any]:
        """End a charger's boost."""
        try:
            return site.cancel_boost(charger_id)
        except LocalApiError as exc:
            raise _http_error(exc) from None


async def _form(request: Request) -> dict[str, Any]:
    """A posted form's non-empty fields, the numeric choices as ints."""
    body = (await request.body()).decode("utf-8", "replace")
    fields: dict[str, Any] = {k: v for k, v in parse_qsl(body) if v != ""}
    for key in _FORM_INTS & fields.keys():
        # a form sends text; these are Literal[1, 3]-style choices
        if fields[key].isdigit():
            fields[key] = int(fields[key])
    return fields


def _invalid(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
    )


def _add_page_routes(app: FastAPI, site: LocalSite, auth: list[DependsParam]) -> None:
    """The page at ``/`` and its forms under ``/ui``."""

    async def page(message: str = "", error: str = "", code: int = 200) -> Response:
        """The page as it is now, with a message or an error at the top."""
        data = await site.status(show_claim=True)
        return HTMLResponse(render_page(data, message=message, error=error), code)

    async def run_form(
        action: Callable[[], object], done: str | Callable[[Any], str]
    ) -> Response:
        """Carry out a form's ``action``: redirect to the page saying ``done``
        (a key of ``DONE``, or a function of the result giving one), or show the
        page again with the error."""
        try:
            result = action()
            if inspect.isawaitable(result):
                result = await result
        except ValidationError as exc:
            return await page(error=_invalid(exc), code=422)
        except LocalApiError as exc:
            return await page(error=str(exc), code=status_of(exc))
        key = done if isinstance(done, str) else done(result)
        return RedirectResponse(f"/?done={quote(key)}", status_code=303)

    @app.get("/", response_class=HTMLResponse, dependencies=auth)
    async def index(request: Request) -> Response:
        """The page; ``?done=<key>`` says what the last form did."""
        done = request.query_params.get("done", "")
        return await page(message=DONE.get(done, ""))

    @app.post("/ui/chargers/{charger_id}/approve", dependencies=auth)
    async def approve_form(charger_id: str, request: Request) -> Response:
        """The page's approve form."""
        fields = await _form(request)
        return await run_form(
            lambda: site.approve(charger_id, ApproveBody.model_validate(fields)),
            approved_done,
        )

    @app.post("/ui/chargers/{charger_id}/forget", dependencies=auth)
    async def forget_form(charger_id: str) -> Response:
        """The page's forget button."""
        return await run_form(lambda: forget_pending(site, charger_id), "forgotten")

    @app.post("/ui/site", dependencies=auth)
    async def site_form(request: Request) -> Response:
        """The page's fuse limit form."""
        fields = await _form(request)
        return await run_form(
            lambda: site.set_main_fuse(SiteBody.model_validate(fields)), "fuse"
        )

    @app.post("/ui/chargers/{charger_id}/boost", dependencies=auth)
    async def boost_form(charger_id: str, request: Request) -> Response:
        """The page's boost button."""
        fields = await _form(request)
        return await run_form(
            lambda: site.boost(charger_id, BoostBody.model_validate(fields)), "boost"
        )

    @app.post("/ui/chargers/{charger_id}/cancel_boost", dependencies=auth)
    async def cancel_boost_form(charger_id: str) -> Response:
        """The page's cancel boost button."""
        return await run_form(lambda: site.cancel_boost(charger_id), "cancel_boost")

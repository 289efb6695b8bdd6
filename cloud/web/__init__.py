"""The web app (issue 5): server-rendered pages for owners and installers, served
by the cloud API process under ``/app`` (and ``/login``).

The pages are a client of the API, in the same process: every page calls the
JSON endpoints through :func:`~cloud.web.client.api_call`, a direct ASGI call
carrying the session's bearer token. So tenancy, validation and rate limits are
exactly the API's (a page can show nothing the token could not read), and no SQL
lives here.

Markup is built with f-strings; every value from the API or the user passes
through :func:`h` (``html.escape``). The chart of the next 24 h is inline SVG
drawn here, and the only script (``/app/static/app.js``) refreshes the live and
plan panels while the page is visible. Headers forbid inline scripts (CSP) and
framing.

Modules::

    client       the API in-process: api_call, api_path, ApiAnswer, site_for
    session      session cookie, CSRF, Origin check, flash messages
    markup       h(), security headers, the error page, <option> lists
    layout       the page frame (head, navigation, flash notice)
    formatting   kW, kWh, £, CO₂, local times; form numbers
    chart        the next 24 h as SVG
    accounts     /, /login, /logout, /app (home by role, operator's fleet)
    owner        /app/site/...: the owner's dashboard and its forms
    owner_access the dashboard's installers section, keep/revoke forms
    installer    /app/install/...: claim, site, devices, commissioning
    assets       /app/static/app.css and app.js, from the files in static/
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from cloud.web import accounts, assets, installer, owner, owner_access
from cloud.web.chart import plan_chart
from cloud.web.client import ApiAnswer, api_call, api_path
from cloud.web.markup import h
from cloud.web.session import Redirect, Session, answer_redirect, csrf_token

__all__ = [
    "ApiAnswer",
    "Session",
    "api_call",
    "api_path",
    "csrf_token",
    "h",
    "mount",
    "plan_chart",
    "router",
]

router = APIRouter(include_in_schema=False)
for _pages in (accounts, owner, owner_access, installer, assets):
    router.include_router(_pages.router)


def mount(app: FastAPI) -> None:
    """Serve the web app's pages on ``app``."""
    app.include_router(router)
    app.add_exception_handler(Redirect, answer_redirect)

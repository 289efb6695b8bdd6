"""The installer's local page and API: works on site with no internet.

Served by uvicorn inside the edge's own event loop (one task of the agent's
TaskGroup) on ``[local_api] listen`` (default ``127.0.0.1:8088``; on by default
when chargers, charger discovery or meters are configured). Off loopback a
password is required (the config refuses to load without one); every route but
``GET /api/health`` then needs HTTP Basic ``installer:<password>``. With no
password (loopback only) only clients on this machine are answered.

Routes::

    GET  /                               the page (phone-sized, no JavaScript)
    GET  /api/health                     {"ok": true, "gateway_id"}, open
    GET  /api/status                     claim code, health, site, chargers,
                                         pending chargers, meters
    POST /api/chargers/{id}/approve      {password, ocpp_version?, max_current_a?,
                                          phases?, phase?}
    POST /api/chargers/{id}/forget       unbind a pending charger id (or drop
                                         the password waiting for an approved one)
    POST /api/site                       {main_fuse_a}
    POST /api/chargers/{id}/boost        {duration_min?}  (else until unplugged)
    POST /api/chargers/{id}/cancel_boost
    POST /ui/...                         the page's forms (the same, form-encoded,
                                         answered with a redirect to the page)

Bad input: 422 whose ``detail[].loc`` names the field (a fuse must exceed the
margin plus 6 A); unknown charger: 404; approving a charger that is not pending,
or boosting without a running controller: 409; the overrides file cannot be
written: 503 (nothing changed). Requests that change something and carry a
foreign ``Origin`` are refused (403), so another web site cannot drive the
installer's browser.

What the installer changes here is kept in the overrides file beside the outbox
(``edge.overrides``) and applied on every start on top of the TOML config by
``edge.config.load_config``. An approved charger is accepted (with its new
password) from its next connection on; its open pending connection is closed so
that it reconnects. The controller takes it under smart control at once.

Inside::

    _errors   the refusals and their HTTP statuses
    _bodies   the request bodies
    _status   the status document, read from the running edge's parts
    _site     LocalSite: those parts, and the changes the installer makes
    _discovery  forgetting a pending charger
    _page     the page, rendered from the status document
    _app      the FastAPI app: login, same-origin guard, routes, forms
    _server   LocalApiServer (uvicorn in the edge's loop), base_url
"""

from __future__ import annotations

from edge.local_api._app import REALM, create_app
from edge.local_api._bodies import ApproveBody, BoostBody, SiteBody
from edge.local_api._errors import (
    BadValue,
    Conflict,
    LocalApiError,
    NotFound,
    NotSaved,
)
from edge.local_api._page import render_page
from edge.local_api._server import LocalApiServer, base_url
from edge.local_api._site import LocalSite
from edge.overrides import Overrides, overrides_path_beside

__all__ = [
    "REALM",
    "ApproveBody",
    "BadValue",
    "BoostBody",
    "Conflict",
    "LocalApiError",
    "LocalApiServer",
    "LocalSite",
    "NotFound",
    "NotSaved",
    "Overrides",
    "SiteBody",
    "base_url",
    "create_app",
    "overrides_path_beside",
    "render_page",
]

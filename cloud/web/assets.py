"""The stylesheet and the one script, served from the files in ``static/``
(shipped as package data). They are read once, at import, and served with an
hour of public caching; the script's refresh period (15 s) is in ``app.js``."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

_STATIC = files("cloud.web").joinpath("static")
_CSS = _STATIC.joinpath("app.css").read_bytes()
_JS = _STATIC.joinpath("app.js").read_bytes()
_CACHING = {"Cache-Control": "public, max-age=3600"}


@router.get("/app/static/app.css")
async def app_css() -> Response:
    """The stylesheet."""
    return Response(_CSS, media_type="text/css; charset=utf-8", headers=_CACHING)


@router.get("/app/static/app.js")
async def app_js() -> Response:
    """The script that refreshes the panels marked ``data-refresh``."""
    return Response(_JS, media_type="text/javascript; charset=utf-8", headers=_CACHING)

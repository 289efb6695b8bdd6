"""The API's interactive documentation, ``/docs`` (Swagger UI) and ``/redoc``,
each with a Content-Security-Policy that allows only what the page loads.

Both pages are FastAPI's own HTML, which loads its script and stylesheet from a
CDN (``cdn.jsdelivr.net``). Swagger UI starts from one inline script: it is
allowed by its SHA-256 hash (computed from the page as served), not by
``'unsafe-inline'``. Styles do need ``'unsafe-inline'``: both UIs put ``<style>``
elements into the page as they render. ReDoc also runs its search in a worker
made from a ``blob:`` URL and takes fonts from Google Fonts. Everything else is
``'none'``, and neither page may be framed.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

__all__ = ["CDN", "add_docs", "inline_script_hashes"]

CDN = "https://cdn.jsdelivr.net"
_FAVICON_HOST = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_FRAME = "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def inline_script_hashes(html: str) -> list[str]:
    """The CSP hash sources (``'sha256-...'``) of ``html``'s inline scripts."""
    return [
        "'sha256-"
        + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def _with_csp(page: HTMLResponse, csp: str) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = csp
    page.headers["Cache-Control"] = "no-store"
    return page


def add_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/redoc`` on ``app`` (created with ``docs_url`` and
    ``redoc_url`` set to ``None``), each with its CSP."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        """Swagger UI: its CDN, its own inline script (by hash), this origin's
        OpenAPI and "try it out" requests."""
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        scripts = " ".join([CDN, *inline_script_hashes(bytes(page.body).decode())])
        return _with_csp(
            page,
            f"default-src 'none'; script-src {scripts}; "
            f"style-src {CDN} 'unsafe-inline'; img-src 'self' data: {_FAVICON_HOST}; "
            f"connect-src 'self'; {_FRAME}",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        """ReDoc: its CDN, Google Fonts, a ``blob:`` worker for its search."""
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=root + openapi_url, title=f"{app.title} - ReDoc"
        )
        return _with_csp(
            page,
            f"default-src 'none'; script-src {CDN}; worker-src blob:; "
            "style-src 'unsafe-inline' https://fonts.googleapis.com; "
            "font-src https://fonts.gstatic.com; "
            f"img-src 'self' data: {_FAVICON_HOST} https://cdn.redoc.ly; "
            f"connect-src 'self'; {_FRAME}",
        )

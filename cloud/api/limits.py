"""The cloud API's request body caps and the headers on every answer, applied by
``protocols.body_gate.GuardedBodies`` around the whole app (API, web pages,
static files, docs).

Caps: ``DEFAULT_BODY_CAP_BYTES`` (64 KiB) for every route, except a price curve
upload (``PUT /v1/tariffs/{tariff_id}/prices``: up to two years of half-hour
slots, about 35,000 of ~100 bytes each), which may take ``PRICE_CURVE_CAP_BYTES``.
A body over its cap is answered 413 before it is read; a JSON body with ``NaN``,
``Infinity``, ``1e999`` or a lone surrogate is answered 422 naming the field.

Headers: ``X-Content-Type-Options: nosniff`` on every answer (the web pages set
their own CSP, ``cloud.web.markup``; the docs theirs, ``cloud.api.docs``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI

from protocols.body_gate import DEFAULT_BODY_CAP_BYTES, GuardedBodies, RouteCaps

__all__ = ["BODY_CAPS", "PRICE_CURVE_CAP_BYTES", "guard_requests"]

PRICE_CURVE_CAP_BYTES = 8 * 1024 * 1024
BODY_CAPS = RouteCaps(
    {("PUT", "/v1/tariffs/{tariff_id}/prices"): PRICE_CURVE_CAP_BYTES},
    default_bytes=DEFAULT_BODY_CAP_BYTES,
)
_EVERY_ANSWER = {"X-Content-Type-Options": "nosniff"}


def _headers(path: str) -> Mapping[str, str]:
    return _EVERY_ANSWER


def guard_requests(app: FastAPI) -> None:
    """Cap and strictly parse every request body to ``app`` (outermost of its
    middleware), and add ``nosniff`` to every answer."""
    app.add_middleware(GuardedBodies, caps=BODY_CAPS, headers=_headers)

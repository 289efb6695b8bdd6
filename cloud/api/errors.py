"""Errors the API handlers raise themselves, shaped like FastAPI's own (the base of
request bodies is ``protocols.bodies.RequestBody``), and the handler that turns a
value PostgreSQL refuses into the same 422 shape."""

from __future__ import annotations

import logging
from typing import Literal

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("fusebox.cloud.api")


def field_error(
    field: str, msg: str, where: Literal["body", "query", "path"] = "body"
) -> HTTPException:
    """A 422 shaped like FastAPI's validation errors (``detail``: a list), naming
    ``field`` in ``where``, so it matches the published HTTPValidationError."""
    return HTTPException(
        422, [{"loc": [where, field], "msg": msg, "type": "value_error"}]
    )


async def data_error(request: Request, exc: Exception) -> JSONResponse:
    """A value PostgreSQL cannot take (out of range, bad encoding) that got past
    validation: still the caller's input, so 422, not 500, in the published
    ValidationError shape (which field is not known here)."""
    log.warning("api: %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=422,
        content={
            "detail": [
                {"loc": [], "msg": f"invalid input: {exc}", "type": "value_error"}
            ]
        },
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer ``asyncpg.DataError`` on ``app`` with :func:`data_error`."""
    app.add_exception_handler(asyncpg.DataError, data_error)

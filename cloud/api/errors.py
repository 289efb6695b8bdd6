"""Errors the API handlers raise themselves, shaped like FastAPI's own (the base of
request bodies is ``protocols.bodies.RequestBody``); the handler that turns a
value PostgreSQL refuses into the same 422 shape; and FastAPI's validation-error
handler replaced by one whose answer is bounded and always encodes (FastAPI's own
echoes the input: a 10 MB body came back in a 10 MB 422, and a ``NaN`` or a lone
surrogate in it could not be encoded at all, a 500)."""

from __future__ import annotations

import logging
from typing import Literal

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from protocols.bodies import bounded_errors, excerpt

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
    log.warning(
        "api: %s %s: %s", request.method, request.url.path, excerpt(str(exc), 300)
    )
    return JSONResponse(
        status_code=422,
        content={
            "detail": [
                {
                    "loc": [],
                    "msg": f"invalid input: {excerpt(str(exc), 200)}",
                    "type": "value_error",
                }
            ]
        },
    )


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (``detail``: ``loc``, ``msg``, ``type``), with at most a short
    excerpt of the input and a bounded number of errors
    (``protocols.bodies.bounded_errors``)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": bounded_errors(errors)})


def add_error_handlers(app: FastAPI) -> None:
    """Answer ``asyncpg.DataError`` on ``app`` with :func:`data_error` and
    request validation errors with :func:`validation_error`."""
    app.add_exception_handler(asyncpg.DataError, data_error)
    app.add_exception_handler(RequestValidationError, validation_error)

"""Errors the API handlers raise themselves, shaped like FastAPI's own (the base of
request bodies is ``protocols.bodies.RequestBody``)."""

from __future__ import annotations

from typing import Literal

from fastapi import HTTPException


def field_error(
    field: str, msg: str, where: Literal["body", "query", "path"] = "body"
) -> HTTPException:
    """A 422 shaped like FastAPI's validation errors (``detail``: a list), naming
    ``field`` in ``where``, so it matches the published HTTPValidationError."""
    return HTTPException(
        422, [{"loc": [where, field], "msg": msg, "type": "value_error"}]
    )

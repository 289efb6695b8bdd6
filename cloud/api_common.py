"""What the API routers share: the base of request bodies, and the errors the
handlers raise themselves, shaped like FastAPI's own."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, model_validator


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(v, bool) for v in get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_admits_bool(a) for a in get_args(annotation))
    return False


class RequestBody(BaseModel):
    """A JSON request body: unknown fields are refused, and so is a JSON boolean
    where the field is not a boolean (pydantic's lax mode would read ``true`` as 1
    for a number, which the published schema does not allow)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_other_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        bad = [
            name
            for name, field in cls.model_fields.items()
            if isinstance(data.get(name), bool) and not _admits_bool(field.annotation)
        ]
        if not bad:
            return data
        # as text the value fails the field's own validation, at the field's loc
        return {**data, **{name: str(data[name]).lower() for name in bad}}


def field_error(
    field: str, msg: str, where: Literal["body", "query", "path"] = "body"
) -> HTTPException:
    """A 422 shaped like FastAPI's validation errors (``detail``: a list), naming
    ``field`` in ``where``, so it matches the published HTTPValidationError."""
    return HTTPException(
        422, [{"loc": [where, field], "msg": msg, "type": "value_error"}]
    )

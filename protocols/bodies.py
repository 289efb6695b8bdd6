"""The base of JSON request bodies, for the cloud API and the edge's local API."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


def _reads_bool_as_number(annotation: Any) -> bool:
    """Whether pydantic's lax mode would take a JSON boolean as 1/0 here: an int
    or float field, a Literal of ints, or a union with one of them and no bool."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return any(type(v) is int for v in args) and not any(
            isinstance(v, bool) for v in args
        )
    if get_origin(annotation) in (Union, types.UnionType):
        return bool not in args and any(_reads_bool_as_number(a) for a in args)
    return False


class RequestBody(BaseModel):
    """A JSON request body: unknown fields are refused, and so is a JSON boolean
    for a number (pydantic's lax mode would read ``true`` as 1, which the
    published schema does not allow; other types refuse a boolean themselves)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        bad = [
            name
            for name, field in cls.model_fields.items()
            if isinstance(data.get(name), bool)
            and _reads_bool_as_number(field.annotation)
        ]
        if not bad:
            return data
        # as text the value fails the field's own validation, at the field's loc
        return {**data, **{name: str(data[name]).lower() for name in bad}}

"""The base of JSON request bodies, for the cloud API and the edge's local API."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


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
    """A JSON request body. Refused, each at the field's own location: unknown
    fields; a JSON boolean for a number (pydantic's lax mode would read ``true`` as
    1, which the published schema does not allow; other types refuse a boolean
    themselves); text with a NUL character (PostgreSQL text cannot hold one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _plain_json(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("text must not contain NUL characters (\\u0000)")
        elif isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _reads_bool_as_number(field.annotation):
                raise ValueError("a JSON boolean (true/false) is not a number")
        return value

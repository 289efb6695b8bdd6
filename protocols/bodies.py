"""JSON request bodies, for the cloud API and the edge's local API: the base of
their models (``RequestBody``), the values plain JSON cannot carry
(``json_problem``), and validation errors cut down to a bounded, encodable answer
(``bounded_errors``).

Seams: ``protocols.body_gate`` parses every request body with these rules before
an app sees it (the ASGI shell of both APIs); each app's validation-error handler
answers with ``bounded_errors``; ``RequestBody`` applies the same rules to values
that reach a model by another road (the pages' forms, in-process calls).
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "EXCERPT_CHARS",
    "MAX_ERRORS",
    "MAX_JSON_DEPTH",
    "NOT_A_NUMBER",
    "NOT_UNICODE",
    "JsonProblem",
    "RequestBody",
    "bounded_errors",
    "excerpt",
    "json_problem",
]

EXCERPT_CHARS = 64
"""The most of a caller's own input an error answer repeats (per value)."""
MAX_ERRORS = 20
"""The most field errors one 422 lists; the rest are counted in a last entry."""
MAX_JSON_DEPTH = 32
"""Arrays and objects nest at most this deep (no body needs more than 3)."""
_MAX_MSG_CHARS = 300

NOT_A_NUMBER = (
    "not a number: NaN, Infinity and numbers too large for a 64-bit float "
    "(such as 1e999) are refused; give a finite number"
)
NOT_UNICODE = (
    "not valid text: a lone UTF-16 surrogate (\\ud800 to \\udfff) is not a "
    "character; send the text as UTF-8"
)

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class JsonProblem:
    """Where a value breaks the plain-JSON rules, and why; ``type`` is the
    error type of the 422 (pydantic's name where it has one)."""

    loc: Loc
    msg: str
    type: str

    def error(self) -> dict[str, Any]:
        """This problem as one entry of a 422's ``detail`` (FastAPI's shape)."""
        return {
            "loc": [_safe_key(k) for k in self.loc],
            "msg": self.msg,
            "type": self.type,
        }


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate): it encodes as UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _items(value: list[Any] | dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
    return iter(value.items()) if isinstance(value, dict) else enumerate(value)


def json_problem(value: Any, loc: Loc = ()) -> JsonProblem | None:
    """The first value (in document order) under ``value`` that plain JSON cannot
    carry: a float that is not finite (Python's json module reads ``NaN``,
    ``Infinity`` and ``1e999`` as such), text or an object key with a lone
    surrogate (``"\\ud800"``), or nesting deeper than ``MAX_JSON_DEPTH``.
    ``loc`` is where ``value`` itself sits (``("body",)`` for a whole body).
    Walked without recursion, so any depth is safe to check."""
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    base = len(loc)
    while stack:
        v, where = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                return JsonProblem(where, NOT_A_NUMBER, "finite_number")
        elif isinstance(v, str):
            if not is_unicode(v):
                return JsonProblem(where, NOT_UNICODE, "string_unicode")
        elif isinstance(v, list | dict):
            if len(where) - base >= MAX_JSON_DEPTH:
                return JsonProblem(
                    where,
                    f"nested deeper than {MAX_JSON_DEPTH} arrays or objects",
                    "json_too_deep",
                )
            children: list[tuple[Any, Loc]] = []
            for key, item in _items(v):
                if isinstance(key, str) and not is_unicode(key):
                    return JsonProblem((*where, key), NOT_UNICODE, "string_unicode")
                children.append((item, (*where, key)))
            stack.extend(reversed(children))
    return None


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` as at most ``limit`` characters that always encode (a lone
    surrogate shown as ``\\ud800``), cut with ``…`` when longer."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def _safe_key(key: Any) -> str | int:
    return (
        key if isinstance(key, int) and not isinstance(key, bool) else excerpt(str(key))
    )


def _safe_scalar(value: Any) -> tuple[bool, Any]:
    """``(True, value)`` for a value an error may repeat (bounded, encodable),
    text cut to an excerpt; ``(False, None)`` for anything else."""
    if value is None or isinstance(value, bool):
        return True, value
    if isinstance(value, int):
        return (True, value) if abs(value) < 10**EXCERPT_CHARS else (False, None)
    if isinstance(value, float):
        return (True, value) if math.isfinite(value) else (False, None)
    if isinstance(value, str):
        return True, excerpt(value)
    return False, None


def _bounded_error(error: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "loc": [_safe_key(k) for k in error.get("loc", ())],
        "msg": excerpt(str(error.get("msg", "invalid")), _MAX_MSG_CHARS),
        "type": excerpt(str(error.get("type", "value_error"))),
    }
    if "input" in error:
        ok, value = _safe_scalar(error["input"])
        if ok:
            out["input"] = value
    ctx = error.get("ctx")
    if isinstance(ctx, Mapping):
        safe_ctx = {}
        for key, value in list(ctx.items())[:8]:
            ok, kept = _safe_scalar(value)
            safe_ctx[excerpt(str(key))] = kept if ok else excerpt(str(value))
        out["ctx"] = safe_ctx
    return out


def bounded_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors (pydantic's / FastAPI's) as a 422's ``detail``: the
    published shape (``loc``, ``msg``, ``type``; ``input`` and ``ctx`` only as
    short, encodable excerpts, a container input left out), at most
    ``MAX_ERRORS`` of them, so the answer never grows with the request and always
    encodes as JSON."""
    out = [_bounded_error(e) for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append(
            {
                "loc": [],
                "msg": f"and {len(errors) - MAX_ERRORS} more errors like these",
                "type": "too_many_errors",
            }
        )
    return out


def _reads_number(annotation: Any, *, bool_too: bool = False) -> bool:
    """Whether a field reads numbers: an int or float field, a Literal of ints,
    or a union with one of them (and, unless ``bool_too``, no bool: pydantic's
    lax mode would then take a JSON boolean as 1/0)."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Literal:
        return any(type(v) is int for v in args) and (
            bool_too or not any(isinstance(v, bool) for v in args)
        )
    if get_origin(annotation) in (Union, types.UnionType):
        return (bool_too or bool not in args) and any(
            _reads_number(a, bool_too=bool_too) for a in args
        )
    metadata = getattr(annotation, "__metadata__", None)  # Annotated[...]
    if metadata is not None:
        return _reads_number(get_args(annotation)[0], bool_too=bool_too)
    return False


def _non_finite_text(text: str) -> bool:
    """Whether ``text`` reads as a number that is not finite (``"nan"``,
    ``"inf"``, ``"-Infinity"``, ``"1e999"``)."""
    try:
        return not math.isfinite(float(text))
    except (ValueError, OverflowError):
        return False


class RequestBody(BaseModel):
    """A JSON request body. Refused, each at the field's own location: unknown
    fields; a JSON boolean for a number (pydantic's lax mode would read ``true`` as
    1, which the published schema does not allow; other types refuse a boolean
    themselves); text with a NUL character (PostgreSQL text cannot hold one) or a
    lone surrogate; numbers that are not finite (``NaN``, ``Infinity``,
    ``1e999``, also as text such as ``"nan"`` from a form), nested values
    included."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_json(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        annotation = field.annotation if field is not None else None
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError("text must not contain NUL characters (\\u0000)")
            if not is_unicode(value):
                raise PydanticCustomError("string_unicode", NOT_UNICODE)
            if _reads_number(annotation, bool_too=True) and _non_finite_text(value):
                raise PydanticCustomError("finite_number", NOT_A_NUMBER)
        elif isinstance(value, bool):
            if _reads_number(annotation):
                raise ValueError("a JSON boolean (true/false) is not a number")
        elif isinstance(value, float | list | dict):
            problem = json_problem(value)
            if problem is not None:
                where = "".join(f"[{k!r}]" for k in problem.loc)
                msg = f"at {excerpt(where)}: {problem.msg}" if where else problem.msg
                raise PydanticCustomError(problem.type, msg)
        return value

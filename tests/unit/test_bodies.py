"""protocols.bodies.RequestBody: unknown fields, JSON booleans for numbers and
text with NUL characters are refused, each at the field's own location."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import ValidationError

from protocols.bodies import RequestBody


class Sample(RequestBody):
    fuse_a: float = 60.0
    count: int | None = None
    phases: Literal[1, 3] = 1
    enabled: bool = True
    maybe: bool | None = None
    name: str = "x"


@pytest.mark.parametrize("field", ["fuse_a", "count", "phases", "name"])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_where_the_field_is_not_one(
    field: str, value: bool
) -> None:
    with pytest.raises(ValidationError) as refused:
        Sample.model_validate({field: value})
    (error,) = refused.value.errors()
    assert error["loc"] == (field,)


def test_booleans_numbers_and_unknown_fields() -> None:
    ok = Sample.model_validate(
        {"enabled": False, "maybe": True, "fuse_a": 1, "count": 2}
    )
    assert ok.enabled is False and ok.maybe is True
    assert ok.fuse_a == 1.0 and ok.count == 2
    with pytest.raises(ValidationError) as extra:
        Sample.model_validate({"colour": "red"})
    assert extra.value.errors()[0]["loc"] == ("colour",)
    # not a mapping: left to pydantic's own error
    with pytest.raises(ValidationError):
        Sample.model_validate([1, 2])


def test_text_with_a_nul_character_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Sample.model_validate({"name": "a\x00b"})
    (error,) = refused.value.errors()
    assert error["loc"] == ("name",) and "NUL" in error["msg"]

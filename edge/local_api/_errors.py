"""What the local API refuses, and the HTTP status each refusal is answered with::

EdgeError
 └── LocalApiError      the request cannot be carried out; the message says why
      ├── NotFound      404  no such charger
      ├── Conflict      409  not pending, no controller, not under control
      ├── BadValue      422  a value the site cannot take (names the field)
      └── NotSaved      503  the overrides file cannot be written
"""

from __future__ import annotations

from edge import EdgeError

__all__ = [
    "BadValue",
    "Conflict",
    "LocalApiError",
    "NotFound",
    "NotSaved",
    "status_of",
]


class LocalApiError(EdgeError):
    """A request the local API cannot carry out; the message says why."""


class NotFound(LocalApiError):
    """No such charger."""


class Conflict(LocalApiError):
    """The request does not fit the current state (not pending, no controller)."""


class BadValue(LocalApiError):
    """A value that passes its own bounds but not the site's (answered 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotSaved(LocalApiError):
    """The overrides file could not be written; nothing was changed."""


def status_of(exc: LocalApiError) -> int:
    """The HTTP status a refusal is answered with (the API's and the page's)."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadValue):
        return 422
    if isinstance(exc, NotSaved):
        return 503
    return 409

"""The controller's port to the chargers: what it reads of each and how it sends a
charging profile, as small ``typing.Protocol``s.

``edge.ocpp.server.OcppServer`` (with its ``ChargerState``) is the production
implementation; a test may pass any object of this shape, no type-ignore needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Protocol

from protocols.ocpp import ChargingProfile

__all__ = ["ChargerCapabilities", "ChargerPort", "ChargerView"]


class ChargerCapabilities(Protocol):
    """What a charger said about its smart charging (``edge.ocpp.commands``)."""

    @property
    def rate_units(self) -> AbstractSet[str]: ...
    @property
    def max_stack_level(self) -> int | None: ...


class ChargerView(Protocol):
    """What the controller reads of one charger's live state."""

    @property
    def ocpp_version(self) -> str: ...
    @property
    def registration(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    @property
    def capabilities(self) -> ChargerCapabilities | None: ...
    @property
    def transactions(self) -> Mapping[int, str]: ...
    @property
    def power_w(self) -> float | None: ...
    @property
    def register_wh(self) -> float | None: ...


class ChargerPort(Protocol):
    """How the controller reaches the chargers: their live state by id (a new
    object after each reconnect), observers called with a charger id on every
    change, and installing a charging profile, which answers the charger's status
    ("Accepted", ...) or raises ``ChargerNotConnected``, ``CommandFailed``,
    ``ProfileError`` or ``TimeoutError``."""

    @property
    def chargers(self) -> Mapping[str, ChargerView]: ...
    @property
    def observers(self) -> list[Callable[[str], None]]: ...

    async def set_charging_profile(
        self, charger_id: str, target: int, profile: ChargingProfile, /
    ) -> str: ...

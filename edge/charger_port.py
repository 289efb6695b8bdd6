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
    def rate_units(self) -> AbstractSet[str]:
        """The units its profiles may use, a subset of {"A", "W"} (empty: assume
        "A")."""

    @property
    def max_stack_level(self) -> int | None:
        """The highest profile stack level it accepts (None: it did not say)."""


class ChargerView(Protocol):
    """What the controller reads of one charger's live state."""

    @property
    def ocpp_version(self) -> str:
        """The OCPP version it speaks: "1.6" or "2.0.1"."""

    @property
    def registration(self) -> str:
        """Either "accepted", or "pending" while the charger waits for approval."""

    @property
    def connected(self) -> bool:
        """Whether its WebSocket is open now (the state outlives a disconnect)."""

    @property
    def capabilities(self) -> ChargerCapabilities | None:
        """Its smart-charging capabilities, None until they have been read after
        boot."""

    @property
    def profiles_ready(self) -> bool:
        """Whether profiles may be sent on this connection: after its boot was
        answered (or the backstop for a charger that does not boot)."""

    @property
    def transactions(self) -> Mapping[int, str]:
        """Running transaction ids by connector (1.6) or EVSE (2.0.1)."""

    @property
    def power_w(self) -> float | None:
        """The latest measured power in W (None: never measured)."""

    @property
    def register_wh(self) -> float | None:
        """The latest energy register in Wh (None: never measured)."""


class ChargerPort(Protocol):
    """How the controller reaches the chargers: their live state by id (a new
    object after each reconnect), observers called with a charger id on every
    change, and installing a charging profile, which answers the charger's status
    ("Accepted", ...) or raises ``ChargerNotConnected``, ``CommandFailed``,
    ``ProfileError`` or ``TimeoutError``."""

    @property
    def chargers(self) -> Mapping[str, ChargerView]:
        """The live state of each charger by id; a reconnect puts a new object here."""

    @property
    def observers(self) -> list[Callable[[str], None]]:
        """Callbacks run with a charger id whenever that charger's state changes."""

    async def set_charging_profile(
        self, charger_id: str, target: int, profile: ChargingProfile, /
    ) -> str:
        """Install ``profile`` on connector/EVSE ``target`` (0: the whole charger);
        returns the charger's status."""

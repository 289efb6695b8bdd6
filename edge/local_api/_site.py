"""The site as the installer sees and changes it: the running edge's parts, read
into the status document and changed on the installer's word (persisted in the
overrides file first, then live)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.claim import ClaimCode
from edge.config import EdgeConfig
from edge.controller import Controller
from edge.local_api._bodies import ApproveBody, BoostBody, SiteBody
from edge.local_api._errors import BadValue, Conflict, NotFound, NotSaved
from edge.local_api._status import iso, status_document
from edge.meters import MeterService
from edge.ocpp.config import ChargerConfig
from edge.ocpp.server import OcppServer
from edge.outbox import Outbox
from edge.overrides import Overrides
from edge.uplink import Uplink

__all__ = ["MIN_EV_A", "LocalSite"]

log = logging.getLogger("fusebox.edge.local_api")

MIN_EV_A = 6.0  # IEC 61851: an EV cannot charge on less


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LocalSite:
    """The running edge's parts the local API reads and drives; any may be
    missing (no chargers: no OCPP server; control off: no controller)."""

    config: EdgeConfig
    claim: ClaimCode
    overrides: Overrides
    ocpp: OcppServer | None = None
    controller: Controller | None = None
    meters: MeterService | None = None
    uplink: Uplink | None = None
    outbox: Outbox | None = None
    software: str = ""
    now: Callable[[], datetime] = _utc_now

    @property
    def main_fuse_a(self) -> float:
        """The fuse limit in force (the controller's, once it runs)."""
        if self.controller is not None:
            return self.controller.site.main_fuse_a
        return self.config.site.main_fuse_a

    async def status(self, *, show_claim: bool) -> dict[str, Any]:
        """The status document (``edge.local_api._status``)."""
        return await status_document(self, show_claim=show_claim)

    # -- changing -------------------------------------------------------------

    async def approve(self, charger_id: str, body: ApproveBody) -> dict[str, Any]:
        """Accept a pending charger: persisted first, then live; its new password
        is set on it when it is connected."""
        if self.ocpp is None:
            raise NotFound(f"no charger {charger_id!r}: the OCPP server is off")
        if charger_id in self.ocpp.known:
            raise Conflict(f"charger {charger_id!r} is accepted already")
        if charger_id not in self.ocpp.pending:
            raise NotFound(f"no pending charger {charger_id!r}")
        charger = ChargerConfig(
            id=charger_id,
            password=body.password,
            ocpp_version=body.ocpp_version,
            max_current_a=body.max_current_a,
            phases=body.phases,
            phase=body.phase,
        )
        self._save(self.overrides.add_charger, charger)
        outcome = await self.ocpp.approve(charger)
        if self.controller is not None:
            self.controller.add_charger(charger)
        controlled = self.controller is not None and charger_id in (
            self.controller.chargers
        )
        if outcome.password == "Accepted":
            note = "password set on the charger; it reconnects with it now"
        elif outcome.held_for is not None:
            note = (
                f"the charger is offline: its password is sent to it when its "
                f"{outcome.held_for} reconnects (or set it on the charger itself)"
            )
        elif outcome.password is not None:
            note = (
                f"the charger did not take the password ({outcome.password}): set "
                "it on the charger itself; accepted from its next connection"
            )
        else:
            note = "accepted from its next connection (with this password)"
        if self.config.site.control != "off" and not controlled:
            note += "; under smart control after the edge's next restart"
        return {
            "id": charger_id,
            "approved": True,
            "reconnecting": outcome.reconnecting,
            "password_set": outcome.password,
            "password_held_for": outcome.held_for,
            "controlled": controlled,
            "note": note,
        }

    def set_main_fuse(self, body: SiteBody) -> dict[str, Any]:
        """A new fuse limit: persisted first, then live in the controller."""
        margin_a = self.config.site.margin_a
        if body.main_fuse_a <= margin_a + MIN_EV_A:
            raise BadValue(
                "main_fuse_a",
                f"must be over {margin_a + MIN_EV_A:g} A (site.margin_a "
                f"{margin_a:g} A plus one EV's {MIN_EV_A:g} A minimum)",
            )
        self._save(self.overrides.set_main_fuse, body.main_fuse_a)
        if self.controller is not None:
            self.controller.set_main_fuse(body.main_fuse_a)
        else:
            self.config = self.config.model_copy(
                update={
                    "site": self.config.site.model_copy(
                        update={"main_fuse_a": body.main_fuse_a}
                    )
                }
            )
        log.info("local api: main fuse set to %g A by the installer", body.main_fuse_a)
        return {
            "main_fuse_a": body.main_fuse_a,
            "applied": self.controller is not None,
        }

    def _save(self, change: Callable[[Any], None], value: Any) -> None:
        try:
            change(value)
        except OSError as exc:
            log.error("local api: cannot write %s: %s", self.overrides.path, exc)
            raise NotSaved(
                f"cannot save the change ({exc.strerror or exc}); nothing was "
                "changed: is the gateway's disk full or read-only?"
            ) from None

    def _controlled(self, charger_id: str) -> Controller:
        known = self.ocpp is not None and (
            charger_id in self.ocpp.known or charger_id in self.ocpp.chargers
        )
        if not known:
            raise NotFound(f"no charger {charger_id!r}")
        c = self.controller
        if c is None:
            raise Conflict(
                "no controller is running (site.control = 'off', or no charger "
                "was configured at start): boost is not available"
            )
        if charger_id not in c.chargers:
            raise Conflict(
                f"charger {charger_id!r} is not under smart control yet; restart "
                "the edge after approving it"
            )
        return c

    def boost(self, charger_id: str, body: BoostBody) -> dict[str, Any]:
        """Full power for a charger under smart control, until ``body``'s
        duration is over or (none given) the EV is unplugged."""
        c = self._controlled(charger_id)
        until = (
            None
            if body.duration_min is None
            else c.clock.now() + timedelta(minutes=body.duration_min)
        )
        c.boost(charger_id, until)
        return {"id": charger_id, "boost": True, "until": iso(until)}

    def cancel_boost(self, charger_id: str) -> dict[str, Any]:
        """Back to the plan for a boosted charger."""
        c = self._controlled(charger_id)
        c.cancel_boost(charger_id)
        return {"id": charger_id, "boost": False, "until": None}

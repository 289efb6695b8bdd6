"""Smart charging: installed charging profiles, the limit they offer a connector
and GetCompositeSchedule."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Final

from protocols.ocpp import (
    InstalledProfile,
    ProfileError,
    ProfilePurpose,
    composite_schedule,
    from_ocpp16,
    from_ocpp201,
    limit_at,
    parse_set_charging_profile_16,
    parse_set_charging_profile_201,
    to_ocpp16,
    to_ocpp201,
)
from simulators.charger._connectors import Connector, Transaction
from simulators.charger._core import utc_text
from simulators.charger._meter_values import MeterValuesLayer

log = logging.getLogger("fusebox.sim.charger")

MAX_STACK_LEVEL: Final = 10
MAX_PERIODS: Final = 24
MAX_PROFILES: Final = 20


class ProfilesLayer(MeterValuesLayer):
    """The charging profiles a charger keeps, and what they allow now."""

    def installed(self) -> list[InstalledProfile]:
        """The installed profiles, parsed from the state file (cached)."""
        if self._installed is None:
            parse = from_ocpp16 if self.version == "1.6" else from_ocpp201
            self._installed = [
                InstalledProfile(int(item["connector"]), parse(item["profile"]))
                for item in self.state.data["profiles"]
            ]
        return self._installed

    def set_profile(self, request: dict[str, Any]) -> str:
        """SetChargingProfile with the request's camelCase payload: the status to
        answer; an accepted profile replaces the one in its slot and applies now."""
        try:
            if self.version == "1.6":
                target, profile = parse_set_charging_profile_16(request)
                wire = to_ocpp16(profile)
            else:
                target, profile = parse_set_charging_profile_201(request)
                wire = to_ocpp201(profile)
        except ProfileError as exc:
            log.warning("charger %s: profile rejected: %s", self.config.charger_id, exc)
            return "Rejected"
        if target > self.config.connectors or profile.stack_level > MAX_STACK_LEVEL:
            return "Rejected"
        if any(len(s.periods) > MAX_PERIODS for s in profile.schedules):
            return "Rejected"
        if profile.purpose is ProfilePurpose.TX:
            tx = self.connectors[target].tx if target in self.connectors else None
            if tx is None:
                return "Rejected"
            known = self._tx_key(tx)
            # a 1.6 id not recorded yet: the StartTransaction answer is in, but
            # its awaiting task has not run (a real charger has the id by then)
            if known is not None and profile.transaction_id != known:
                return "Rejected"  # bound to another transaction (K01.FR.09)
        kept = []
        for item, installed in zip(
            self.state.data["profiles"], self.installed(), strict=True
        ):
            old = installed.profile
            same_slot = (
                installed.connector_id == target
                and old.purpose is profile.purpose
                and old.stack_level == profile.stack_level
            )
            if old.id != profile.id and not same_slot:
                kept.append(item)
        if len(kept) >= MAX_PROFILES:
            return "Rejected"
        kept.append({"connector": target, "profile": wire})
        self.state.data["profiles"] = kept
        self._installed = None
        self.state.save()
        self._follow_profiles()
        log.info(
            "charger %s: profile %d (%s, level %d) installed on %d",
            self.config.charger_id,
            profile.id,
            profile.purpose.value,
            profile.stack_level,
            target,
        )
        return "Accepted"

    def clear_profiles(
        self,
        profile_id: int | None,
        connector_id: int | None,
        purpose: str | None,
        stack_level: int | None,
    ) -> bool:
        """ClearChargingProfile: ``True`` if a profile matched and was removed."""
        kept, removed = [], 0
        for item, installed in zip(
            self.state.data["profiles"], self.installed(), strict=True
        ):
            profile = installed.profile
            wire_purpose = item["profile"].get("chargingProfilePurpose")
            if profile_id is not None:
                match = profile.id == profile_id
            else:
                match = (
                    (connector_id is None or installed.connector_id == connector_id)
                    and (purpose is None or wire_purpose == purpose)
                    and (stack_level is None or profile.stack_level == stack_level)
                )
            if match:
                removed += 1
            else:
                kept.append(item)
        if removed:
            self.state.data["profiles"] = kept
            self._installed = None
            self.state.save()
            self._follow_profiles()
        return removed > 0

    def _drop_tx_profiles(self, connector: Connector) -> None:
        before = len(self.state.data["profiles"])
        self.state.data["profiles"] = [
            item
            for item, installed in zip(
                self.state.data["profiles"], self.installed(), strict=True
            )
            if not (
                installed.connector_id == connector.id
                and installed.profile.purpose is ProfilePurpose.TX
            )
        ]
        if len(self.state.data["profiles"]) != before:
            self._installed = None
            self.state.save()

    def _tx_key(self, tx: Transaction) -> int | str | None:
        return tx.ref if self.version == "2.0.1" else self.tx_ids.get(tx.ref)

    def offered_limit_w(self, connector: Connector, now: datetime) -> float:
        """The power (W) the installed profiles offer ``connector`` at ``now``, at
        most the charger's maximum."""
        tx = connector.tx
        limit = limit_at(
            self.installed(),
            now,
            connector_id=connector.id,
            transaction_active=tx is not None,
            rate_unit="W",
            transaction_start=None if tx is None else tx.started_at,
            transaction_id=None if tx is None else self._tx_key(tx),
            default_phases=self.config.phases,
            charger_max=self.config.charger_max_w,
        )
        return self.config.charger_max_w if limit is None else limit.limit

    def composite(
        self, connector_id: int, duration_s: int, unit: str | None
    ) -> tuple[str, str, list[dict[str, Any]]] | None:
        """GetCompositeSchedule from the installed profiles: (start, unit,
        periods), or ``None`` for an unknown connector."""
        if connector_id != 0 and connector_id not in self.connectors:
            return None
        unit = unit or "A"
        now = self.clock().replace(microsecond=0)
        charger_max = (
            self.config.max_current_a if unit == "A" else self.config.charger_max_w
        )
        tx = self.connectors[connector_id].tx if connector_id else None
        schedule = composite_schedule(
            self.installed(),
            now=now,
            duration_s=max(1, int(duration_s)),
            connector_id=connector_id,
            transaction_active=tx is not None,
            rate_unit=unit,
            transaction_start=None if tx is None else tx.started_at,
            transaction_id=None if tx is None else self._tx_key(tx),
            default_phases=self.config.phases,
            charger_max=charger_max,
        )
        periods = [
            {
                "start_period": round(p.start_s),
                "limit": charger_max if p.limit is None else p.limit,
                "number_phases": p.number_phases,
            }
            for p in schedule.periods
        ]
        return utc_text(now), unit, periods

    def _follow_profiles(self) -> None:
        """The EVs draw what a changed limit allows now, not at the next step (the
        status it may change is reported after the step, behind the answer)."""
        now = self.clock()
        for connector in self.connectors.values():
            if connector.tx is None or connector.ev is None:
                continue
            offered = self.offered_limit_w(connector, now) if connector.operative else 0
            connector.power_w = connector.ev.power_for(offered)
        if self.power_listener is not None:
            self.power_listener()

"""The status document (``GET /api/status``, and what the page shows): the
running edge's parts read into plain JSON, any of them possibly missing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge.metrics import age_seconds
from edge.ocpp import OcppNotStarted
from edge.ocpp.pending import Binding
from edge.ocpp.server import ChargerState, OcppServer
from protocols.times import from_ms

if TYPE_CHECKING:
    from edge.controller import Controller
    from edge.local_api._site import LocalSite

__all__ = ["iso", "status_document"]


def iso(ts: datetime | None) -> str | None:
    """``ts`` as ISO 8601 UTC to the second with a ``Z``; None stays None."""
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


async def status_document(site: LocalSite, *, show_claim: bool) -> dict[str, Any]:
    """Everything the installer sees: claim code, health, site, chargers, pending
    chargers and meters (``show_claim=False`` leaves the code itself out)."""
    if site.ocpp is not None:
        site.ocpp.discovery.expire()  # stale pending chargers leave the page
    return {
        "gateway_id": site.config.gateway_id,
        "software": site.software,
        "claim_code": site.claim.code if show_claim else None,
        "claim_sha256": site.claim.sha256,
        "health": await _health(site),
        "site": _site(site),
        "chargers": [_charger(site, cid) for cid in _charger_ids(site.ocpp)],
        "pending": _pending(site.ocpp),
        "meters": _meters(site),
        "unmatched_messages": site.meters.unmatched if site.meters else 0,
    }


async def _health(site: LocalSite) -> dict[str, Any]:
    ocpp = site.ocpp
    out: dict[str, Any] = {
        "uplink_connected": bool(site.uplink and site.uplink.metrics.connected),
        "meters_connected": bool(site.meters and site.meters.connected),
        "meters_configured": len(site.config.meters),
        "ocpp_listening": _listening(ocpp),
        "chargers_connected": sum(
            1
            for s in (ocpp.chargers.values() if ocpp else ())
            if s.connected and s.registration == "accepted"
        ),
        "backlog_records": None,
        "backlog_oldest_age_s": None,
        "outbox_used_bytes": None,
        "outbox_cap_bytes": None,
        "site_broker": _site_broker(site),
        "ocpp_refused": _refused(ocpp),
    }
    if site.outbox is not None:
        s = await site.outbox.stats()
        out["backlog_records"] = max(0, s.backlog_records)
        out["backlog_oldest_age_s"] = round(age_seconds(s.backlog_oldest_ms), 1)
        out["outbox_used_bytes"] = s.used_bytes
        out["outbox_cap_bytes"] = s.cap_bytes
    return out


def _site_broker(site: LocalSite) -> dict[str, Any] | None:
    """What a crash of the site broker can lose: what its config file says
    (``local.broker_config``) and what this run has seen (reconnects on which
    the broker had lost this gateway's session)."""
    if site.meters is None:
        return None
    d = site.meters.site_broker
    return {
        "config": _str_or_none(site.config.local.broker_config),
        "durability": d if isinstance(d, str) else d.summary,
        "saves_every_reading": None if isinstance(d, str) else d.every_message,
        "sessions_kept": site.meters.sessions_kept,
        "sessions_lost": site.meters.sessions_lost,
    }


def _site(site: LocalSite) -> dict[str, Any]:
    config = site.config.site
    c = site.controller
    out: dict[str, Any] = {
        "main_fuse_a": site.main_fuse_a,
        "main_fuse_a_in_config_file": site.overrides.data.main_fuse_a is None,
        "phases": config.phases,
        "voltage_v": config.voltage_v,
        "margin_a": config.margin_a,
        "meter": config.meter,
        "control": config.control,
        "controller_running": c is not None,
        "site_import_w": None,
        "site_meter_age_s": None,
        "lease_version": None,
        "lease_valid_until": None,
    }
    if c is not None:
        if c.site_import_w is not None and c.site_at is not None:
            out["site_import_w"] = round(sum(c.site_import_w), 1)
            age = (c.clock.now() - c.site_at).total_seconds()
            out["site_meter_age_s"] = round(age, 1)
        if c.lease is not None:
            out["lease_version"] = c.lease.version
            out["lease_valid_until"] = iso(from_ms(c.lease.valid_until_ms))
    return out


def _charger_ids(ocpp: OcppServer | None) -> list[str]:
    ids: set[str] = set()
    if ocpp is not None:
        ids |= set(ocpp.known)
        ids |= {cid for cid, s in ocpp.chargers.items() if s.registration == "accepted"}
    return sorted(ids)


def _charger(site: LocalSite, cid: str) -> dict[str, Any]:
    assert site.ocpp is not None
    state = site.ocpp.chargers.get(cid)
    cfg = site.ocpp.known.get(cid)
    out: dict[str, Any] = {
        "id": cid,
        "configured": cfg is not None,
        "connected": bool(state and state.connected),
        "ocpp_version": state.ocpp_version if state else None,
        "last_seen": iso(state.last_seen) if state else None,
        "remote": state.remote if state else None,
        "vendor": None,
        "model": None,
        "serial_number": None,
        "firmware_version": None,
        "status": _summary_status(state, approved=cfg is not None),
        "connectors": [],
        "transactions": {},
        "power_w": state.power_w if state else None,
        "register_wh": state.register_wh if state else None,
        "measured_at": iso(state.measured_at) if state else None,
        "max_current_a": cfg.max_current_a if cfg else None,
        "phases": cfg.phases if cfg else None,
        "control": None,
    }
    if state is not None:
        out.update(_charger_state(state))
    out["password_delivery"] = _delivery(site.ocpp, cid)
    if site.controller is not None and cid in site.controller.chargers:
        out["control"] = _control(site.controller, cid)
    return out


def _charger_state(state: ChargerState) -> dict[str, Any]:
    """What a charger that has connected told about itself."""
    out: dict[str, Any] = {}
    if state.boot is not None:
        out["vendor"] = state.boot.vendor
        out["model"] = state.boot.model
        out["serial_number"] = state.boot.serial_number
        out["firmware_version"] = state.boot.firmware_version
    out["connectors"] = [
        {
            "evse_id": evse,
            "connector_id": conn,
            "status": st.status,
            "error_code": st.error_code,
        }
        for (evse, conn), st in sorted(
            state.connectors.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])
        )
    ]
    out["transactions"] = {str(k): v for k, v in state.transactions.items()}
    return out


def _control(c: Controller, cid: str) -> dict[str, Any]:
    """The controller's latest decision for a charger under smart control."""
    d = c.decisions.get(cid)
    boosting = cid in c.boosts
    until = c.boosts.get(cid)
    return {
        "state": d.state if d else "idle",
        "limit_a": round(d.limit_a, 2) if d else None,
        "planned_a": d.planned_a if d else None,
        "limit_w": round(d.limit_w, 1) if d else None,
        "detail": d.detail if d else "no running transaction",
        "boost": boosting,
        "boost_until": iso(until) if boosting else None,
    }


def _refused(ocpp: OcppServer | None) -> dict[str, int]:
    """Handshakes refused since the start, by reason (``edge.ocpp.pending``)."""
    if ocpp is None:
        return {}
    return dict(sorted(ocpp.discovery.registry.refused.items()))


def _binding(binding: Binding | None) -> dict[str, Any]:
    """Whom a pending id is bound to, and the other devices that tried it."""
    if binding is None:
        return {
            "bound_to": None,
            "bound_address": None,
            "bound_certificate_sha256": None,
            "conflicts": [],
        }
    return {
        "bound_to": binding.peer.label,
        "bound_address": binding.peer.address,
        "bound_certificate_sha256": binding.peer.fingerprint,
        "conflicts": [
            {
                "address": c.peer.address,
                "certificate_sha256": c.peer.fingerprint,
                "first_at": iso(c.first_at),
                "last_at": iso(c.last_at),
                "attempts": c.attempts,
            }
            for c in binding.conflicts
        ],
    }


def _delivery(ocpp: OcppServer | None, cid: str) -> dict[str, Any] | None:
    """An approved charger's new password: waiting for its bound device, or the
    charger's last answer to it; None when it was never sent."""
    if ocpp is None:
        return None
    registry = ocpp.discovery.registry
    waiting = registry.deliveries.get(cid)
    answer = registry.delivery_results.get(cid)
    if waiting is None and answer is None:
        return None
    return {"waiting": waiting is not None, "answer": answer, **_binding(waiting)}


def _pending(ocpp: OcppServer | None) -> list[dict[str, Any]]:
    if ocpp is None:
        return []
    bindings = ocpp.discovery.registry.bindings
    out = []
    for p in sorted(ocpp.pending.values(), key=lambda p: p.first_seen):
        state = ocpp.chargers.get(p.id)
        out.append(
            {
                "id": p.id,
                "connected": bool(
                    state and state.connected and state.registration == "pending"
                ),
                "ocpp_version": p.ocpp_version,
                "first_seen": iso(p.first_seen),
                "last_seen": iso(p.last_seen),
                "remote": p.remote,
                "vendor": p.boot.vendor if p.boot else None,
                "model": p.boot.model if p.boot else None,
                "serial_number": p.boot.serial_number if p.boot else None,
                "firmware_version": p.boot.firmware_version if p.boot else None,
                **_binding(bindings.get(p.id)),
            }
        )
    return out


def _meters(site: LocalSite) -> list[dict[str, Any]]:
    if site.meters is None:
        return []
    out = []
    for d in site.meters.drivers:
        c = d.counters
        out.append(
            {
                "id": d.id,
                "type": d.config.type,
                "topic": d.config.topic,
                "site_meter": d.id == site.config.site.meter,
                "messages": c.messages,
                "readings": c.readings,
                "duplicates": c.duplicates,
                "bad": dict(sorted(c.bad.items())),
                "last_ts": iso(c.last_ts),
                "last_values": dict(sorted(c.last_values.items())),
            }
        )
    return out


def _listening(ocpp: OcppServer | None) -> bool:
    if ocpp is None:
        return False
    try:
        ocpp.port  # noqa: B018 -- raises until the server is bound
    except OcppNotStarted:
        return False
    return True


def _summary_status(state: ChargerState | None, *, approved: bool) -> str:
    if state is None:
        return "never connected"
    if state.registration == "pending":
        # the connection it was pending on (closed once approved)
        return "approved, waiting for it to reconnect" if approved else "pending"
    if not state.connected:
        return "offline"
    # the charger-wide entry (connector 0 / no EVSE) says little when a
    # connector has its own status
    statuses = [
        s.status
        for (evse, conn), s in sorted(
            state.connectors.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])
        )
        if conn != 0 and evse != 0
    ] or [s.status for s in state.connectors.values()]
    return ", ".join(dict.fromkeys(statuses)) or "connected"

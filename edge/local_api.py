"""The installer's local page and API: works on site with no internet.

Served by uvicorn inside the edge's own event loop (one task of the agent's
TaskGroup) on ``[local_api] listen`` (default ``127.0.0.1:8088``; on by default
when chargers, charger discovery or meters are configured). Off loopback a
password is required (the config refuses to load without one); every route but
``GET /api/health`` then needs HTTP Basic ``installer:<password>``. With no
password (loopback only) only clients on this machine are answered.

Routes::

    GET  /                               the page (phone-sized, no JavaScript)
    GET  /api/health                     {"ok": true, "gateway_id"}, open
    GET  /api/status                     claim code, health, site, chargers,
                                         pending chargers, meters
    POST /api/chargers/{id}/approve      {password, ocpp_version?, max_current_a?,
                                          phases?, phase?}
    POST /api/site                       {main_fuse_a}
    POST /api/chargers/{id}/boost        {duration_min?}  (else until unplugged)
    POST /api/chargers/{id}/cancel_boost
    POST /ui/...                         the page's forms (the same, form-encoded,
                                         answered with a redirect to the page)

Bad input: 422 whose ``detail[].loc`` names the field (a fuse must exceed the
margin plus 6 A); unknown charger: 404; approving a charger that is not pending,
or boosting without a running controller: 409; the overrides file cannot be
written: 503 (nothing changed). Requests that change something and carry a
foreign ``Origin`` are refused (403), so another web site cannot drive the
installer's browser.

What the installer changes here is kept in the **overrides file** beside the
outbox (``<outbox stem>-overrides.json``, JSON, written atomically, mode 0600)
and applied on every start on top of the TOML config: ``main_fuse_a`` replaces
``site.main_fuse_a``; ``chargers`` (approved on this page) are added to
``[[chargers]]`` (a charger the TOML file names itself wins). Delete the file to
forget them. An unreadable overrides file stops the edge (exit 2): running on a
fuse limit higher than the one the installer set would not be safe.

An approved charger is accepted (with its new password) from its next
connection on; its open pending connection is closed so that it reconnects. The
controller takes it under smart control at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import json
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from edge import ConfigError, EdgeError
from edge.claim import ClaimCode, write_private_file
from edge.config import (
    LOCAL_API_USER,
    EdgeConfig,
    is_loopback,
    split_listen,
)
from edge.controller import Controller
from edge.meters import MeterService
from edge.metrics import age_seconds
from edge.ocpp import OcppNotStarted
from edge.ocpp.config import ChargerConfig, OcppVersion
from edge.ocpp.server import ChargerState, OcppServer
from edge.outbox import Outbox
from edge.uplink import Uplink
from protocols.bodies import RequestBody

__all__ = [
    "ApproveBody",
    "BoostBody",
    "Conflict",
    "LocalApiError",
    "LocalApiServer",
    "LocalSite",
    "NotFound",
    "Overrides",
    "SiteBody",
    "base_url",
    "create_app",
    "overrides_path_beside",
]

log = logging.getLogger("fusebox.edge.local_api")

REALM = "fusebox-edge"


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


# -- request bodies ------------------------------------------------------------


class ApproveBody(RequestBody):
    """What the installer tells about a pending charger to accept it."""

    password: SecretStr = Field(
        min_length=16,
        max_length=40,
        description=(
            "the charger's HTTP Basic password (OCPP profile 1/2): set on the "
            "charger by the edge while it is connected (1.6 AuthorizationKey, "
            "2.0.1 BasicAuthPassword), else by the installer"
        ),
    )
    ocpp_version: OcppVersion | None = Field(
        default=None, description="pin the version; unset: the charger's choice"
    )
    max_current_a: float = Field(default=32, ge=6, le=80)
    phases: Literal[1, 3] = 1
    phase: Literal[1, 2, 3] = 1


class SiteBody(RequestBody):
    main_fuse_a: float = Field(gt=0, le=2000, description="main fuse, A per phase")


class BoostBody(RequestBody):
    duration_min: float | None = Field(
        default=None, gt=0, le=24 * 60, description="unset: until the EV is unplugged"
    )


# -- the overrides file -------------------------------------------------------


class _OverridesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    main_fuse_a: float | None = Field(default=None, gt=0, le=2000)
    chargers: list[ChargerConfig] = Field(default_factory=list)


def overrides_path_beside(outbox_path: Path) -> Path:
    return outbox_path.with_name(outbox_path.stem + "-overrides.json")


class Overrides:
    """The installer's changes made on the local page, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = self._load()

    def _load(self) -> _OverridesFile:
        fix = (
            "correct it, or delete it to forget the fuse limit and the chargers "
            "approved on the local page"
        )
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _OverridesFile()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read ({exc}); {fix}") from None
        try:
            return _OverridesFile.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigError(
                f"{self.path}: not a valid overrides file ({where}: {first['msg']}); "
                + fix
            ) from None

    def _save(self) -> None:
        chargers = []
        for c in self.data.chargers:
            entry = c.model_dump(mode="json", exclude_defaults=True)
            entry["id"] = c.id
            if c.password is not None:
                entry["password"] = c.password.get_secret_value()
            chargers.append(entry)
        doc: dict[str, Any] = {"version": 1}
        if self.data.main_fuse_a is not None:
            doc["main_fuse_a"] = self.data.main_fuse_a
        doc["chargers"] = chargers
        write_private_file(self.path, json.dumps(doc, indent=2) + "\n")

    def set_main_fuse(self, main_fuse_a: float) -> None:
        self.data.main_fuse_a = main_fuse_a
        self._save()

    def add_charger(self, charger: ChargerConfig) -> None:
        kept = [c for c in self.data.chargers if c.id != charger.id]
        self.data.chargers = [*kept, charger]
        self._save()

    def apply(self, config: EdgeConfig) -> EdgeConfig:
        """``config`` with the overrides on top (a new object; ``config`` stays)."""
        update: dict[str, Any] = {}
        fuse = self.data.main_fuse_a
        if fuse is not None and fuse != config.site.main_fuse_a:
            log.info(
                "overrides: main fuse %g A as set on the local page (the config "
                "file says %g A; %s)",
                fuse,
                config.site.main_fuse_a,
                self.path,
            )
            update["site"] = config.site.model_copy(update={"main_fuse_a": fuse})
        in_file = {c.id for c in config.chargers}
        added = []
        for c in self.data.chargers:
            if c.id in in_file:
                log.info(
                    "overrides: charger %s is in the config file now; the approval "
                    "in %s is not used",
                    c.id,
                    self.path,
                )
            else:
                added.append(c)
        if added:
            log.info(
                "overrides: %d charger(s) approved on the local page: %s",
                len(added),
                ", ".join(c.id for c in added),
            )
            update["chargers"] = [*config.chargers, *added]
        return config.model_copy(update=update) if update else config


# -- the site, as the installer sees and changes it ---------------------------


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
        if self.controller is not None:
            return self.controller.site.main_fuse_a
        return self.config.site.main_fuse_a

    # -- reading --------------------------------------------------------------

    async def status(self, *, show_claim: bool) -> dict[str, Any]:
        return {
            "gateway_id": self.config.gateway_id,
            "software": self.software,
            "claim_code": self.claim.code if show_claim else None,
            "claim_sha256": self.claim.sha256,
            "health": await self._health(),
            "site": self._site(),
            "chargers": [self._charger(cid) for cid in self._charger_ids()],
            "pending": self._pending(),
            "meters": self._meters(),
            "unmatched_messages": self.meters.unmatched if self.meters else 0,
        }

    async def _health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uplink_connected": bool(self.uplink and self.uplink.metrics.connected),
            "meters_connected": bool(self.meters and self.meters.connected),
            "meters_configured": len(self.config.meters),
            "ocpp_listening": _listening(self.ocpp),
            "chargers_connected": sum(
                1
                for s in (self.ocpp.chargers.values() if self.ocpp else ())
                if s.connected and s.registration == "accepted"
            ),
            "backlog_records": None,
            "backlog_oldest_age_s": None,
            "outbox_used_bytes": None,
            "outbox_cap_bytes": None,
            "site_broker": self._site_broker(),
        }
        if self.outbox is not None:
            s = await self.outbox.stats()
            out["backlog_records"] = max(0, s.backlog_records)
            out["backlog_oldest_age_s"] = round(age_seconds(s.backlog_oldest_ms), 1)
            out["outbox_used_bytes"] = s.used_bytes
            out["outbox_cap_bytes"] = s.cap_bytes
        return out

    def _site_broker(self) -> dict[str, Any] | None:
        """What a crash of the site broker can lose: what its config file says
        (``local.broker_config``) and what this run has seen (reconnects on which
        the broker had lost this gateway's session)."""
        if self.meters is None:
            return None
        d = self.meters.site_broker
        return {
            "config": _str_or_none(self.config.local.broker_config),
            "durability": d if isinstance(d, str) else d.summary,
            "saves_every_reading": None if isinstance(d, str) else d.every_message,
            "sessions_kept": self.meters.sessions_kept,
            "sessions_lost": self.meters.sessions_lost,
        }

    def _site(self) -> dict[str, Any]:
        site = self.config.site
        c = self.controller
        out: dict[str, Any] = {
            "main_fuse_a": self.main_fuse_a,
            "main_fuse_a_in_config_file": self.overrides.data.main_fuse_a is None,
            "phases": site.phases,
            "voltage_v": site.voltage_v,
            "margin_a": site.margin_a,
            "meter": site.meter,
            "control": site.control,
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
                out["lease_valid_until"] = _iso(
                    datetime.fromtimestamp(c.lease.valid_until_ms / 1000, UTC)
                )
        return out

    def _charger_ids(self) -> list[str]:
        ids: set[str] = set()
        if self.ocpp is not None:
            ids |= set(self.ocpp.known)
            ids |= {
                cid
                for cid, s in self.ocpp.chargers.items()
                if s.registration == "accepted"
            }
        return sorted(ids)

    def _charger(self, cid: str) -> dict[str, Any]:
        assert self.ocpp is not None
        state = self.ocpp.chargers.get(cid)
        cfg = self.ocpp.known.get(cid)
        out: dict[str, Any] = {
            "id": cid,
            "configured": cfg is not None,
            "connected": bool(state and state.connected),
            "ocpp_version": state.ocpp_version if state else None,
            "last_seen": _iso(state.last_seen) if state else None,
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
            "measured_at": _iso(state.measured_at) if state else None,
            "max_current_a": cfg.max_current_a if cfg else None,
            "phases": cfg.phases if cfg else None,
            "control": None,
        }
        if state is not None:
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
        c = self.controller
        if c is not None and cid in c.chargers:
            d = c.decisions.get(cid)
            boosting = cid in c.boosts
            until = c.boosts.get(cid)
            out["control"] = {
                "state": d.state if d else "idle",
                "limit_a": round(d.limit_a, 2) if d else None,
                "planned_a": d.planned_a if d else None,
                "limit_w": round(d.limit_w, 1) if d else None,
                "detail": d.detail if d else "no running transaction",
                "boost": boosting,
                "boost_until": _iso(until) if boosting else None,
            }
        return out

    def _pending(self) -> list[dict[str, Any]]:
        if self.ocpp is None:
            return []
        out = []
        for p in sorted(self.ocpp.pending.values(), key=lambda p: p.first_seen):
            state = self.ocpp.chargers.get(p.id)
            out.append(
                {
                    "id": p.id,
                    "connected": bool(state and state.connected),
                    "ocpp_version": p.ocpp_version,
                    "first_seen": _iso(p.first_seen),
                    "last_seen": _iso(p.last_seen),
                    "remote": p.remote,
                    "vendor": p.boot.vendor if p.boot else None,
                    "model": p.boot.model if p.boot else None,
                    "serial_number": p.boot.serial_number if p.boot else None,
                    "firmware_version": p.boot.firmware_version if p.boot else None,
                }
            )
        return out

    def _meters(self) -> list[dict[str, Any]]:
        if self.meters is None:
            return []
        out = []
        for d in self.meters.drivers:
            c = d.counters
            out.append(
                {
                    "id": d.id,
                    "type": d.config.type,
                    "topic": d.config.topic,
                    "site_meter": d.id == self.config.site.meter,
                    "messages": c.messages,
                    "readings": c.readings,
                    "duplicates": c.duplicates,
                    "bad": dict(sorted(c.bad.items())),
                    "last_ts": _iso(c.last_ts),
                    "last_values": dict(sorted(c.last_values.items())),
                }
            )
        return out

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
            "controlled": controlled,
            "note": note,
        }

    def set_main_fuse(self, body: SiteBody) -> dict[str, Any]:
        """A new fuse limit: persisted first, then live in the controller."""
        margin_a = self.config.site.margin_a
        if body.main_fuse_a <= margin_a + _MIN_EV_A:
            raise BadValue(
                "main_fuse_a",
                f"must be over {margin_a + _MIN_EV_A:g} A (site.margin_a "
                f"{margin_a:g} A plus one EV's {_MIN_EV_A:g} A minimum)",
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
        c = self._controlled(charger_id)
        until = (
            None
            if body.duration_min is None
            else c.clock.now() + timedelta(minutes=body.duration_min)
        )
        c.boost(charger_id, until)
        return {"id": charger_id, "boost": True, "until": _iso(until)}

    def cancel_boost(self, charger_id: str) -> dict[str, Any]:
        c = self._controlled(charger_id)
        c.cancel_boost(charger_id)
        return {"id": charger_id, "boost": False, "until": None}


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


# -- the HTTP app -------------------------------------------------------------

_FORM_INTS = frozenset({"phases", "phase"})
_MIN_EV_A = 6.0  # IEC 61851: an EV cannot charge on less
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}


# module level: FastAPI resolves the dependency's (string) annotations here
_BASIC = HTTPBasic(auto_error=False, realm=REALM)


def _status_of(exc: LocalApiError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadValue):
        return 422
    if isinstance(exc, NotSaved):
        return 503
    return 409


def _client_host(request: Request) -> str:
    return request.client.host if request.client else ""


def create_app(site: LocalSite) -> FastAPI:
    """The local page and API over ``site`` (served by ``LocalApiServer``; tests
    may also drive it through httpx's ASGI transport)."""
    app = FastAPI(
        title="Fusebox edge (local)",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def authorised(request: Request, cred: HTTPBasicCredentials | None) -> bool:
        password = site.config.local_api.password
        if password is None:
            # only allowed on loopback (config): answer this machine only, and
            # only under a loopback name, so that a web page whose name is
            # re-pointed at 127.0.0.1 (DNS rebinding) cannot use the browser
            host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
            return is_loopback(_client_host(request)) and is_loopback(host)
        if cred is None:
            return False
        user_ok = secrets.compare_digest(
            cred.username.encode(), LOCAL_API_USER.encode()
        )
        password_ok = secrets.compare_digest(
            cred.password.encode(), password.get_secret_value().encode()
        )
        return user_ok and password_ok

    async def installer(
        request: Request,
        cred: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)],
    ) -> None:
        if not authorised(request, cred):
            raise HTTPException(
                status_code=401,
                detail=f"log in as {LOCAL_API_USER!r} with the local_api password "
                "from the edge config",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )

    auth = [Depends(installer)]

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.method in _UNSAFE:
            origin = request.headers.get("origin")
            if origin is not None and (
                origin == "null"
                or urlsplit(origin).netloc != request.headers.get("host")
            ):
                response: Response = JSONResponse(
                    {"detail": "cross-origin request refused"}, status_code=403
                )
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        for k, v in _HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def http_error(exc: LocalApiError) -> HTTPException:
        if isinstance(exc, BadValue):  # shaped like pydantic's 422s
            detail: Any = [
                {"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}
            ]
        else:
            detail = str(exc)
        return HTTPException(status_code=_status_of(exc), detail=detail)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        # the gateway id lets a client check it reached the edge it meant
        return {"ok": True, "gateway_id": site.config.gateway_id}

    @app.get("/api/status", dependencies=auth)
    async def status() -> dict[str, Any]:
        return await site.status(show_claim=True)

    @app.post("/api/chargers/{charger_id}/approve", dependencies=auth)
    async def approve(charger_id: str, body: ApproveBody) -> dict[str, Any]:
        try:
            return await site.approve(charger_id, body)
        except LocalApiError as exc:
            raise http_error(exc) from None

    @app.post("/api/site", dependencies=auth)
    async def set_site(body: SiteBody) -> dict[str, Any]:
        try:
            return site.set_main_fuse(body)
        except LocalApiError as exc:
            raise http_error(exc) from None

    @app.post("/api/chargers/{charger_id}/boost", dependencies=auth)
    async def boost(charger_id: str, body: BoostBody | None = None) -> dict[str, Any]:
        try:
            return site.boost(charger_id, body or BoostBody())
        except LocalApiError as exc:
            raise http_error(exc) from None

    @app.post("/api/chargers/{charger_id}/cancel_boost", dependencies=auth)
    async def cancel_boost(charger_id: str) -> dict[str, Any]:
        try:
            return site.cancel_boost(charger_id)
        except LocalApiError as exc:
            raise http_error(exc) from None

    # -- the page and its forms ---------------------------------------------

    async def page(message: str = "", error: str = "", code: int = 200) -> Response:
        data = await site.status(show_claim=True)
        return HTMLResponse(render_page(data, message=message, error=error), code)

    @app.get("/", response_class=HTMLResponse, dependencies=auth)
    async def index(request: Request) -> Response:
        done = request.query_params.get("done", "")
        return await page(message=_DONE.get(done, ""))

    async def form(request: Request) -> dict[str, Any]:
        body = (await request.body()).decode("utf-8", "replace")
        fields: dict[str, Any] = {k: v for k, v in parse_qsl(body) if v != ""}
        for key in _FORM_INTS & fields.keys():
            # a form sends text; these are Literal[1, 3]-style choices
            if fields[key].isdigit():
                fields[key] = int(fields[key])
        return fields

    def invalid(exc: ValidationError) -> str:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )

    async def run_form(
        action: Callable[[], object], done: str | Callable[[Any], str]
    ) -> Response:
        try:
            result = action()
            if inspect.isawaitable(result):
                result = await result
        except ValidationError as exc:
            return await page(error=invalid(exc), code=422)
        except LocalApiError as exc:
            return await page(error=str(exc), code=_status_of(exc))
        key = done if isinstance(done, str) else done(result)
        return RedirectResponse(f"/?done={quote(key)}", status_code=303)

    @app.post("/ui/chargers/{charger_id}/approve", dependencies=auth)
    async def approve_form(charger_id: str, request: Request) -> Response:
        fields = await form(request)
        return await run_form(
            lambda: site.approve(charger_id, ApproveBody.model_validate(fields)),
            _approved_done,
        )

    @app.post("/ui/site", dependencies=auth)
    async def site_form(request: Request) -> Response:
        fields = await form(request)
        return await run_form(
            lambda: site.set_main_fuse(SiteBody.model_validate(fields)), "fuse"
        )

    @app.post("/ui/chargers/{charger_id}/boost", dependencies=auth)
    async def boost_form(charger_id: str, request: Request) -> Response:
        fields = await form(request)
        return await run_form(
            lambda: site.boost(charger_id, BoostBody.model_validate(fields)), "boost"
        )

    @app.post("/ui/chargers/{charger_id}/cancel_boost", dependencies=auth)
    async def cancel_boost_form(charger_id: str) -> Response:
        return await run_form(lambda: site.cancel_boost(charger_id), "cancel_boost")

    return app


# -- the page -----------------------------------------------------------------


def _approved_done(result: dict[str, Any]) -> str:
    answer = result.get("password_set")
    if answer is None:
        return "approved"
    if answer == "Accepted":
        return "approved_password_set"
    return "approved_password_refused"


_DONE = {
    "approved": "Charger approved: it is accepted when it connects again.",
    "approved_password_set": (
        "Charger approved and its new password set on it: it reconnects now."
    ),
    "approved_password_refused": (
        "Charger approved, but it did not take the new password: set the password "
        "on the charger itself; it is accepted when it connects with it."
    ),
    "fuse": "Fuse limit saved and applied.",
    "boost": "Boost on.",
    "cancel_boost": "Boost cancelled.",
}

_CSS = """
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:40rem;padding:.5rem}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
.card{border:1px solid #ccc;border-radius:6px;padding:.6rem;margin:.4rem 0}
.claim{font:bold 1.6rem monospace;letter-spacing:.1em}
.ok{color:#070}.bad{color:#b00}.muted{color:#666;font-size:.9rem}
.msg{background:#e7f6e7;padding:.5rem}.err{background:#fbe3e3;padding:.5rem}
table{border-collapse:collapse;width:100%}td{padding:.15rem .3rem;vertical-align:top}
input,select,button{font-size:1rem;margin:.15rem 0;max-width:100%}
label{display:block;margin:.3rem 0}label input,label select{display:block}
input{width:14rem}button{padding:.3rem .8rem}form{margin:.3rem 0}
"""


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _yes(flag: object, yes: str, no: str) -> str:
    return (
        f'<span class="ok">{yes}</span>' if flag else f'<span class="bad">{no}</span>'
    )


def _row(label: str, value_html: str) -> str:
    return f"<tr><td>{_e(label)}</td><td>{value_html}</td></tr>"


def _num(value: object, unit: str, digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:,.{digits}f} {unit}"


def _broker_keeps(sb: dict[str, Any] | None) -> str:
    """The site broker's durability line: green only when it saves every reading
    and has never lost this gateway's session."""
    if sb is None:
        return "-"
    text = _e(sb["durability"])
    if sb["sessions_lost"]:
        text += f"; lost this gateway's session {_e(sb['sessions_lost'])} time(s)"
    good = sb["saves_every_reading"] is True and not sb["sessions_lost"]
    return f'<span class="{"ok" if good else "bad"}">{text}</span>'


def render_page(data: dict[str, Any], *, message: str = "", error: str = "") -> str:
    """The installer's page from the ``status`` document."""
    h = data["health"]
    s = data["site"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>Fusebox {_e(data['gateway_id'])}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>Fusebox gateway {_e(data['gateway_id'])}</h1>",
        f'<p class=muted>{_e(data["software"])} · <a href="/">refresh</a></p>',
    ]
    if message:
        out.append(f"<p class=msg>{_e(message)}</p>")
    if error:
        out.append(f"<p class=err>{_e(error)}</p>")
    if data.get("claim_code"):
        out += [
            "<h2>Claim code</h2>",
            f'<div class="card"><div class=claim>{_e(data["claim_code"])}</div>',
            "<div class=muted>Type it in the installer app to claim this "
            "gateway.</div></div>",
        ]
    backlog = h["backlog_records"]
    waiting = f"{_e(backlog if backlog is not None else '-')} readings"
    if backlog:
        waiting += f" (oldest {_num(h['backlog_oldest_age_s'], 's')})"
    used_mb = (h["outbox_used_bytes"] or 0) / 1e6
    cap_mb = (h["outbox_cap_bytes"] or 0) / 1e6
    broker = (
        _yes(h["meters_connected"], "connected", "not connected")
        if h["meters_configured"]
        else "no meters configured"
    )
    out += [
        "<h2>Health</h2><div class=card><table>",
        _row("Cloud", _yes(h["uplink_connected"], "connected", "unreachable")),
        _row("Waiting for the cloud", waiting),
        _row("Outbox", f"{_num(used_mb, 'MB', 1)} of {_num(cap_mb, 'MB')}"),
        _row("Meter broker", broker),
        _row("Meter broker keeps", _broker_keeps(h.get("site_broker"))),
        _row("Chargers connected", _e(h["chargers_connected"])),
        "</table></div>",
    ]
    out += [
        "<h2>Site</h2><div class=card>",
        f"<p>Main fuse <b>{_num(s['main_fuse_a'], 'A', 1)}</b> per phase, "
        f"{_e(s['phases'])} phase(s), margin {_num(s['margin_a'], 'A', 1)}"
        + ("" if s["main_fuse_a_in_config_file"] else " (set on this page)")
        + "</p>",
        "<p>Site import "
        + (
            f"{_num(s['site_import_w'], 'W')} ({_num(s['site_meter_age_s'], 's')} ago)"
            if s["site_import_w"] is not None
            else "unknown" + ("" if s["meter"] else " (no site meter configured)")
        )
        + "</p>",
        '<form method=post action="/ui/site"><label>New fuse limit (A)',
        "<input name=main_fuse_a type=number min=1 max=2000 step=any required "
        f'value="{_e(s["main_fuse_a"])}">',
        "</label><button>Set fuse limit</button></form></div>",
    ]
    out.append("<h2>Chargers</h2>")
    if not data["chargers"]:
        out.append("<p class=muted>No chargers configured or connected.</p>")
    for c in data["chargers"]:
        cid = quote(c["id"], safe="")
        ctl = c["control"]
        register_kwh = None if c["register_wh"] is None else c["register_wh"] / 1000.0
        out += [
            "<div class=card>",
            f"<b>{_e(c['id'])}</b> {_yes(c['connected'], 'connected', 'offline')}",
            f"<div>OCPP {_e(c['ocpp_version'] or '-')} · {_e(c['status'])}"
            + (f" · {_e(c['vendor'])} {_e(c['model'])}" if c["vendor"] else "")
            + "</div>",
            f"<div>Power {_num(c['power_w'], 'W')} · register "
            f"{_num(register_kwh, 'kWh', 2)}"
            + (" · charging" if c["transactions"] else "")
            + "</div>",
        ]
        if ctl is not None:
            out.append(
                f"<div>Controller: {_e(ctl['state'])}"
                + (f", limit {_num(ctl['limit_a'], 'A', 1)}" if ctl["limit_a"] else "")
                + (f" · {_e(ctl['detail'])}" if ctl["detail"] else "")
                + "</div>"
            )
            if ctl["boost"]:
                out.append(
                    f'<form method=post action="/ui/chargers/{cid}/cancel_boost">'
                    "<button>Cancel boost</button></form>"
                )
            else:
                out.append(
                    f'<form method=post action="/ui/chargers/{cid}/boost">'
                    "<button>Boost (full power until unplugged)</button></form>"
                )
        out.append("</div>")
    if data["pending"]:
        out.append("<h2>Waiting for approval</h2>")
    for p in data["pending"]:
        cid = quote(p["id"], safe="")
        out += [
            "<div class=card>",
            f"<b>{_e(p['id'])}</b> {_yes(p['connected'], 'connected', 'offline')}",
            f"<div>{_e(p['vendor'] or '')} {_e(p['model'] or '')} · OCPP "
            f"{_e(p['ocpp_version'])} · from {_e(p['remote'])} · first seen "
            f"{_e(p['first_seen'])}</div>",
            f'<form method=post action="/ui/chargers/{cid}/approve">',
            "<label>Password set on the charger (16-40 characters)"
            "<input name=password type=password minlength=16 maxlength=40 "
            "required autocomplete=new-password></label>",
            "<label>Rating (A per phase)<input name=max_current_a type=number "
            "min=6 max=80 step=any value=32></label>",
            "<label>Phases<select name=phases><option>1</option><option>3</option>"
            "</select></label>",
            "<label>OCPP version<select name=ocpp_version><option value=''>as the "
            "charger offers</option><option>1.6</option><option>2.0.1</option>"
            "</select></label>",
            "<button>Approve</button></form></div>",
        ]
    out.append("<h2>Meters</h2>")
    if not data["meters"]:
        out.append("<p class=muted>No meters configured.</p>")
    for m in data["meters"]:
        values = "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
            for k, v in m["last_values"].items()
        )
        out += [
            "<div class=card>",
            f"<b>{_e(m['id'])}</b> ({_e(m['type'])}, {_e(m['topic'])})"
            + (" · site meter" if m["site_meter"] else ""),
            f"<div class=muted>{_e(m['readings'])} readings · last "
            f"{_e(m['last_ts'] or 'never')}"
            + (
                " · bad payloads: "
                + ", ".join(f"{_e(k)} {_e(v)}" for k, v in m["bad"].items())
                if m["bad"]
                else ""
            )
            + "</div>",
            f"<table>{values}</table>" if values else "<div>no readings yet</div>",
            "</div>",
        ]
    if data["unmatched_messages"]:
        out.append(
            f"<p class=muted>{_e(data['unmatched_messages'])} message(s) on the "
            "broker matched no configured meter.</p>"
        )
    out.append("</body></html>")
    return "\n".join(out)


# -- serving ------------------------------------------------------------------


def base_url(config: EdgeConfig) -> str:
    """The URL a client on this machine uses to reach the local API."""
    host, port = split_listen(config.local_api.listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class LocalApiServer:
    """``serve()`` runs the app with uvicorn in the current event loop until
    cancelled. A port that cannot be bound is logged, and the rest of the edge
    runs on without its page. ``port`` tells where it listens (``:0`` picks)."""

    def __init__(self, site: LocalSite, listen: str) -> None:
        self.site = site
        self.listen = listen
        self.port: int | None = None
        self._server: uvicorn.Server | None = None

    @property
    def started(self) -> bool:
        return self._server is not None and self._server.started

    async def serve(self) -> None:
        host, port = split_listen(self.listen)
        try:
            sock = socket.create_server(
                (host, port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            )
        except OSError as exc:
            # deliberately not fatal (unlike metrics.listen): the page is a
            # convenience and readings do not depend on it
            log.error(
                "local api: cannot listen on %s (%s); the installer page is off, "
                "the rest of the edge runs on. To get the page: choose another "
                "[local_api] listen in the config, or stop the other process",
                self.listen,
                exc.strerror or exc,
            )
            return
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.site),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        server = self._server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "local api: installer page on http://%s:%d/ (%s)",
            shown,
            self.port,
            f"user {LOCAL_API_USER!r} and the local_api password"
            if self.site.config.local_api.password
            else "this machine only",
        )
        try:
            # the edge process owns the signals (one Ctrl-C stops every task),
            # so serve without uvicorn's own signal capture, like the cloud API
            await server._serve([sock])
        except asyncio.CancelledError:
            server.should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await server.shutdown([sock])
            raise
        finally:
            sock.close()

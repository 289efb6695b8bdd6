"""Admission control for the API (issue 11): a surge is served or refused at
once, never queued until everything times out.

Every request is put in a priority class by what it asks for (``classify``):

============  ==========================================================
class         what
============  ==========================================================
``login``     ``POST /v1/auth/login``, ``/v1/auth/password``, ``/login``
``read``      the owner's reads and small writes (the app's pages too)
``submit``    manual meter readings (``POST .../meters/{m}/readings``)
``install``   the installer's flow (claims, bundles, commissioning)
``bulk``      operator and bulk work (``/v1/fleet``, CSV, price uploads)
============  ==========================================================

``AdmissionPlan`` is the pure state machine (after ``edge.uplink.SendPlan``): per
class a cap on requests in flight, and a share of one process-wide cap beyond
which the class is not admitted, so bulk work is shed first and owner reads last.
A request over its caps is refused at once with 503 and ``Retry-After`` (whole
seconds); nothing waits in a queue, so the number of requests in flight, and so
the waiters on the database pool, are bounded by ``total_in_flight``. Each class
has a deadline: a request that has not begun its answer by then is cancelled
and answered 503 (``Retry-After``); an answer once begun streams on.

``Admission`` is the ASGI shell around the app. ``/healthz`` and the static
files are never refused (a load balancer must see the process alive), and the
web app's in-process calls into the API (``cloud.web.client``, marked in their
scope with ``IN_PROCESS``) are part of the page that was admitted already.

``FUSEBOX_ADMISSION=off`` switches all of it off. It exists only so that
``fusebox bench surge`` can measure the same code without admission control;
never run a deployment with it.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "IN_PROCESS",
    "Admission",
    "AdmissionPlan",
    "AdmissionSettings",
    "Admit",
    "ClassLimits",
    "Priority",
    "Refuse",
    "classify",
    "default_limits",
]

log = logging.getLogger("fusebox.cloud.api.admission")

IN_PROCESS = "fusebox.in_process"
"""Scope key set on the web app's in-process API calls (``cloud.web.client``
sets it by this name): not admitted again."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Priority(enum.Enum):
    """The priority classes, from the most protected to the first shed."""

    READ = "read"
    SUBMIT = "submit"
    LOGIN = "login"
    INSTALL = "install"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class ClassLimits:
    """One class's caps: ``max_in_flight`` of its own; admitted only while the
    process has fewer than ``admit_below_total`` requests in flight; answered
    by ``deadline_s`` or refused; told to come back after ``retry_after_s``."""

    max_in_flight: int
    admit_below_total: int
    deadline_s: float
    retry_after_s: float


def default_limits(total_in_flight: int = 64) -> dict[Priority, ClassLimits]:
    """The caps for one API process allowed ``total_in_flight`` requests: owner
    reads may fill it, submissions most of it, logins (CPU-bound, behind the
    hashing pool too) a slice, bulk work only its first half."""
    t = total_in_flight
    return {
        Priority.READ: ClassLimits(max(1, t * 3 // 4), t, 10.0, 1.0),
        Priority.SUBMIT: ClassLimits(max(1, t // 2), t * 7 // 8, 10.0, 2.0),
        Priority.LOGIN: ClassLimits(max(1, t // 4), t * 7 // 8, 15.0, 2.0),
        Priority.INSTALL: ClassLimits(max(1, t // 4), t * 3 // 4, 30.0, 5.0),
        Priority.BULK: ClassLimits(max(1, t // 8), t // 2, 60.0, 10.0),
    }


@dataclass(frozen=True, slots=True)
class Admit:
    """The request may run; release it with ``AdmissionPlan.release``."""

    priority: Priority
    deadline_s: float


@dataclass(frozen=True, slots=True)
class Refuse:
    """The request is refused now: answer ``status`` with ``Retry-After``."""

    priority: Priority
    retry_after_s: int
    reason: str
    status: int = 503


@dataclass
class AdmissionPlan:
    """Requests in flight per class against the caps (pure: no clock, no I/O).

    ``admit`` either counts the request in (``Admit``) or refuses it
    (``Refuse``); every ``Admit`` must be matched by one ``release``."""

    limits: Mapping[Priority, ClassLimits]
    total_in_flight: int
    in_flight: dict[Priority, int] = field(default_factory=dict)
    admitted: dict[Priority, int] = field(default_factory=dict)
    refused: dict[Priority, int] = field(default_factory=dict)

    @property
    def busy(self) -> int:
        """Requests in flight, all classes."""
        return sum(self.in_flight.values())

    def admit(self, priority: Priority) -> Admit | Refuse:
        """Count a request of ``priority`` in, or refuse it with the reason."""
        lim = self.limits[priority]
        mine = self.in_flight.get(priority, 0)
        busy = self.busy
        reason = None
        if mine >= lim.max_in_flight:
            reason = f"{mine} {priority.value} requests in flight, the most allowed"
        elif busy >= min(lim.admit_below_total, self.total_in_flight):
            reason = f"{busy} requests in flight; {priority.value} is shed first"
        if reason is not None:
            self.refused[priority] = self.refused.get(priority, 0) + 1
            return Refuse(priority, max(1, math.ceil(lim.retry_after_s)), reason)
        self.in_flight[priority] = mine + 1
        self.admitted[priority] = self.admitted.get(priority, 0) + 1
        return Admit(priority, lim.deadline_s)

    def release(self, priority: Priority) -> None:
        """A request admitted as ``priority`` is done (answered or not)."""
        n = self.in_flight.get(priority, 0)
        if n <= 0:
            raise ValueError(f"no {priority.value} request in flight to release")
        self.in_flight[priority] = n - 1

    def figures(self) -> dict[str, dict[str, int]]:
        """In flight, admitted and refused so far, per class (for /healthz and logs)."""
        return {
            p.value: {
                "in_flight": self.in_flight.get(p, 0),
                "admitted": self.admitted.get(p, 0),
                "refused": self.refused.get(p, 0),
            }
            for p in Priority
        }


_EXEMPT = re.compile(r"^/(healthz|app/static/.*|favicon\.ico)$")
_LOGIN = re.compile(r"^/(v1/auth/(login|password)|login)$")
_SUBMIT = re.compile(r"^/v1/gateways/[^/]+/meters/[^/]+/readings$")
_INSTALL = re.compile(
    r"^/(v1/claims|v1/gateways/[^/]+/(broker_credentials|commissioning)"
    r"|app/install(/.*)?)$"
)
_BULK = re.compile(r"^/(v1/fleet|v1/tariffs/.*|openapi\.json|docs.*|redoc.*)$|\.csv$")


def classify(method: str, path: str) -> Priority | None:
    """The class of a request, or None for one never refused (``/healthz``,
    static files)."""
    if _EXEMPT.match(path):
        return None
    if method == "POST" and _LOGIN.match(path):
        return Priority.LOGIN
    if method == "POST" and _SUBMIT.match(path):
        return Priority.SUBMIT
    if _INSTALL.match(path):
        return Priority.INSTALL
    if _BULK.search(path) or (method == "PUT" and path.startswith("/v1/tariffs/")):
        return Priority.BULK
    return Priority.READ


class AdmissionSettings(BaseSettings):
    """``FUSEBOX_ADMISSION`` (``on``; ``off`` only for ``fusebox bench surge``)
    and ``FUSEBOX_API_MAX_IN_FLIGHT``, the process-wide cap."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_", extra="ignore")

    admission: Literal["on", "off"] = Field(
        default="on", description="off: for the surge benchmark's comparison only"
    )
    api_max_in_flight: int = Field(default=64, ge=2, le=100_000)


async def _answer(
    send: Send, status: int, retry_after_s: int, detail: str, started: bool
) -> None:
    """Send the refusal (unless an answer was already begun)."""
    if started:
        return
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Admission:
    """ASGI middleware: admit each HTTP request through an ``AdmissionPlan`` and
    hold it to its class's deadline. ``enabled=False`` passes everything."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        plan: AdmissionPlan,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.plan = plan
        self.enabled = enabled
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit, run under the deadline, release; refuse with 503 otherwise."""
        if not self.enabled or scope["type"] != "http" or scope.get(IN_PROCESS):
            await self.app(scope, receive, send)
            return
        priority = classify(scope["method"], scope["path"])
        if priority is None:
            await self.app(scope, receive, send)
            return
        decision = self.plan.admit(priority)
        if isinstance(decision, Refuse):
            await _answer(
                send,
                decision.status,
                decision.retry_after_s,
                f"busy: {decision.reason}; retry after {decision.retry_after_s} s",
                False,
            )
            return
        try:
            await self._run(scope, receive, send, decision)
        finally:
            self.plan.release(priority)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, admitted: Admit
    ) -> None:
        """Run the app; cancel it and answer 503 if it has not begun its answer
        by the deadline (an answer once begun, such as a long CSV export,
        streams on)."""
        started = False
        deadline: asyncio.Timeout | None = None

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if deadline is not None:
                    deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(admitted.deadline_s) as deadline:
                await self.app(scope, receive, tracked)
        except TimeoutError:
            log.warning(
                "admission: %s %s passed its %.0f s deadline (%s)",
                scope["method"],
                scope["path"],
                admitted.deadline_s,
                admitted.priority.value,
            )
            retry = self.plan.limits[admitted.priority].retry_after_s
            await _answer(
                send,
                503,
                max(1, math.ceil(retry)),
                f"not answered within {admitted.deadline_s:g} s; retry later",
                started,
            )

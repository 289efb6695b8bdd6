"""The cloud HTTP API: readings (issue 2), smart charging (issue 4), and the
people's side (issue 5): accounts, owners, installers and operators.

Every endpoint but ``/healthz``, ``/openapi.json`` and ``POST /v1/auth/login``
needs a bearer token (``cloud.auth``), and every gateway-scoped one checks tenancy:
what a caller may not see is 404, never 403. Device traffic never passes through
this process.

Layout (after fastapi/full-stack-fastapi-template): ``deps`` (the shared
dependencies), ``errors`` (the 422 shape), one module with an ``APIRouter`` per
resource, and ``app`` (``create_app``, composing them).

* ``health``: ``/healthz``. ``gateways``: the gateway list and ``live``.
  ``readings``: a gateway's readings, paged and as CSV. ``sessions``: charging
  sessions with cost and carbon. ``manual_readings``: meter readings typed in.
* ``accounts``: login, logout, ``/v1/me``. ``fleet``: the operator's overview.
* ``sites``: sites and their settings. ``chargers`` and ``meters``: registered
  devices. ``charging``: preferences, plan, boost. ``prices``: tariff curves.
* ``claims``, ``bundle`` (config bundle, broker credentials) and
  ``commissioning``: the installer's flow.
"""

from __future__ import annotations

from cloud.api.app import create_app
from cloud.api.gateways import GatewayPublic
from cloud.api.health import HEALTHZ_TIMEOUT_S, database_problem

__all__ = ["HEALTHZ_TIMEOUT_S", "GatewayPublic", "create_app", "database_problem"]

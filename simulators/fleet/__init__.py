"""A fleet of simulated gateways (and chargers) for load and recovery tests.

``Fleet`` (``simulators.fleet._fleet``) runs thousands of gateways in a few
worker processes; each gateway (``_gateway``) has its own MQTT connection and
account, its own outbox semantics and sequence numbers (``_plan``: the edge's
send plan restated) and a ledger of every reading it produced, which
``Fleet.reconcile`` compares with PostgreSQL (``_reconcile``). The MQTT client is
a minimal asyncio protocol (``_mqtt``), a few KiB per connection. ``_cli`` is
``fusebox sim fleet``.
"""

from __future__ import annotations

from simulators.fleet._cli import add_arguments, run
from simulators.fleet._fleet import Fleet, FleetConfig, FleetError
from simulators.fleet._gateway import GatewaySettings, SimGateway
from simulators.fleet._plan import FleetSendPlan, HeldSeqs
from simulators.fleet._reconcile import Reconciliation
from simulators.fleet._worker import WorkerStats, raise_fd_limit

__all__ = [
    "Fleet",
    "FleetConfig",
    "FleetError",
    "FleetSendPlan",
    "GatewaySettings",
    "HeldSeqs",
    "Reconciliation",
    "SimGateway",
    "WorkerStats",
    "add_arguments",
    "raise_fd_limit",
    "run",
]

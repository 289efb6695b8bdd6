"""A simulated AC charge point on OCPP-J 1.6 or 2.0.1, with an EV on each connector.

``python -m simulators.charger`` runs one (or ``--fleet N``) charge points::

    python -m simulators.charger --url ws://127.0.0.1:9000/ocpp --id CP1 \\
        --ocpp 2.0.1 --plug-in-after 5 --unplug-after 600 --speed 60 \\
        --ledger var/cp1.jsonl --state var/cp1.state.json

The charge point connects to ``<url>/<id>`` (HTTP Basic auth with ``--password``,
or with the password the CSMS set: 1.6 ``AuthorizationKey``, 2.0.1
``SecurityCtrlr.BasicAuthPassword``, kept in the state file), boots, sends
heartbeats and StatusNotifications, and runs transactions from a scenario:
``--plug-in-after``/``--unplug-after`` or ``--scenario FILE``, a JSON list of timed
actions (seconds after start)::

    [{"at": 2, "action": "plug", "connector": 1},
     {"at": 3, "action": "start", "connector": 1, "id_tag": "TAG1"},
     {"at": 60, "action": "stop", "connector": 1},
     {"at": 61, "action": "unplug", "connector": 1}]

``start`` authorizes and then starts. With a scenario the process exits 0 once
every action has run, no transaction is open and every queued message has been
delivered. The CSMS can also start and stop transactions remotely (a remote start
on an empty connector plugs in a new EV).

The EV (``simulators.ev``) draws ``min(EV maximum, composite limit)``, the limit
computed by ``protocols.ocpp`` from the installed charging profiles; ``--speed``
simulated seconds pass per real second, so the energy register moves ``--speed``
times faster than the power it reports. Profiles, energy registers, the seqNo and
the queue of undelivered transaction messages live in ``--state FILE``.

Offline: transaction messages (1.6 Start/StopTransaction and MeterValues, 2.0.1
TransactionEvent with ``offline=true`` when produced offline) go through one queue,
in memory and in the state file, and are delivered in order, each resent with its
original message id until the CSMS answers it. Other messages are sent only while
connected. The link reconnects with capped full-jitter backoff.

The ledger (``--ledger FILE``) gets one JSON line per transaction message the CSMS
answered with a CallResult::

    {"charger": "CP1", "ocpp": "1.6", "kind": "start", "action": "StartTransaction",
     "connector": 1, "transaction_id": 17, "tx_ref": "9f0c...", "message_id": "...",
     "timestamp": "2024-05-01T18:00:00Z", "acked_at": "2024-05-01T18:00:00.2Z",
     "offline": false, "meter_start_wh": 1000}

``kind`` is ``start``/``meter``/``stop`` (2.0.1: TransactionEvent Started/Updated/
Ended, with ``seq_no`` and ``event_type``); ``meter`` lines carry ``energy_wh``,
``power_w`` and ``soc_pct``; ``stop`` lines ``meter_stop_wh`` and ``reason``.
With ``--quirks`` every transaction message with meter values also carries
sampled values the OCPP schemas refuse (a 1.6 unit ``Hz``, ``"NaN"``, ``"abc"``,
unknown measurands, a 2.0.1 register sent as text; ``_quirks``), a 1.6 stop
carries ``transactionData``, and the ledger line lists them (``quirks``).
``transaction_id`` is the CSMS's (1.6, ``-1`` if the start was never answered) or
the charger's uuid (2.0.1).

SIGTERM and SIGINT end the run after saving the state; exit code 0.

Time. With the real clock (the default) ``--speed`` scales the EV's energy only and
``--meter-interval`` and scenario times are real seconds. With a simulated clock
(``--clock sim:<ISO start>@<anchor>x<speed>`` or ``$FUSEBOX_CLOCK``,
``protocols.clock``), shared with the edge and the meters of a scenario, the EV
integrates simulated seconds (``--speed`` is ignored), every timestamp and every
profile evaluation uses the clock, ``--meter-interval`` (and the CSMS's
``MeterValueSampleInterval``) is simulated seconds, and a scenario's ``at`` is
simulated seconds after the start, or an ISO time on the clock
(``{"at": "2025-01-15T18:00:00Z", ...}``). Heartbeats and reconnect backoff stay in
real seconds.

``--power-file FILE`` keeps the total power the process's EVs draw now in FILE
(JSON ``{"power_w": 7360.0, "ts": "...", "chargers": {"CP1": 7360.0}}``, replaced
atomically on every change and at least every second), for ``fusebox sim meter
--add-load-file FILE``: the site meter then sees the EVs.

A transaction still open when the process ended (it is in the state file) is
ended when the charger starts again with that state, as a charge point does after
a reboot: StopTransaction (1.6) / TransactionEvent Ended (2.0.1, offline) with
reason ``Reboot`` if the last run shut down cleanly, else ``PowerLoss``, at the
time and energy register of the last save, queued behind whatever was queued.

The package. ``ChargerSim`` is built in layers, one concern each, each in its own
module and built on the one before: ``_core`` (configuration, state, connectors,
clock) -> ``_messages`` (the transaction-message queue, messages sent now) ->
``_meter_values`` -> ``_profiles`` (smart charging) -> ``_ev_model`` ->
``_config_keys`` (configuration keys, the Basic auth password) -> ``_transactions``
(plug, start, stop) -> ``_remote`` (what the CSMS asks) -> ``_sim`` (the link, the
tasks of one charge point), ``_quirks`` the values of ``--quirks``. ``_session``
is one websocket connection,
``_handlers16``/``_handlers201`` answer the CSMS's calls per version, ``_config``
the flags and the scenario, ``_state`` the state file and the ledger, ``_fleet``
fleet mode and the power file, ``_cli`` ``add_arguments``/``run``/``main``.
"""

from __future__ import annotations

from simulators.charger._cli import add_arguments, main, run
from simulators.charger._config import (
    ACTIONS,
    VERSIONS,
    ChargerConfig,
    ScenarioAction,
    parse_scenario,
)
from simulators.charger._config_keys import CONFIG_KEYS, ConfigKey
from simulators.charger._connectors import Connector, Transaction
from simulators.charger._core import utc_text
from simulators.charger._fleet import PowerFile
from simulators.charger._messages import TX_MESSAGE_ATTEMPTS
from simulators.charger._profiles import MAX_PERIODS, MAX_PROFILES, MAX_STACK_LEVEL
from simulators.charger._session import RESPONSE_TIMEOUT_S, LinkDown
from simulators.charger._sim import ChargerSim
from simulators.charger._state import Ledger, StateStore

__all__ = [
    "ACTIONS",
    "CONFIG_KEYS",
    "MAX_PERIODS",
    "MAX_PROFILES",
    "MAX_STACK_LEVEL",
    "RESPONSE_TIMEOUT_S",
    "TX_MESSAGE_ATTEMPTS",
    "VERSIONS",
    "ChargerConfig",
    "ChargerSim",
    "ConfigKey",
    "Connector",
    "Ledger",
    "LinkDown",
    "PowerFile",
    "ScenarioAction",
    "StateStore",
    "Transaction",
    "add_arguments",
    "main",
    "parse_scenario",
    "run",
    "utc_text",
]

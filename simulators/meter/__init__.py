"""A smart meter on MQTT: a simulated household published as a real device would.

``fusebox sim meter`` (or ``python -m simulators.meter``) runs one meter::

    fusebox sim meter --format glow --device 70B3D54B0001 --interval 10 \\
        --ledger var/meter.jsonl

Formats, topics and payloads are those of the real devices (one module per
model, ``_glow`` ...): a Hildebrand Glow, a Tasmota (``ENERGY`` block or an SML
reading head), a Shelly Pro EM (single phase) or Pro 3EM (``--phases 3``), or a
generic JSON meter described by ``SIM_GENERIC_MAPPING``. The edge subscribes
with ``protocols.meters.meter_topic_filters(format, sim_base_topic(format,
device))``.

The ledger is the meter's proof of what it published: one JSON line per reading,
written only after the broker acknowledged the publish (QoS 1 PUBACK), with the
values exactly as ``protocols.meters`` will decode them::

    {"n": 1, "device": "m1", "format": "glow",
     "topic": "glow/m1/SENSOR/electricitymeter",
     "ts": "2024-05-01T18:00:00+00:00", "ts_ms": 1714586400000,
     "import_energy_wh": 6613405.0, "export_energy_wh": 0.0, "power_w": 951.0}

(three-phase meters add ``"phase_import_energy_wh": [l1, l2, l3]``). A reading is
in the ledger only if the broker has it. If the broker goes away the meter holds the
unacknowledged reading, reconnects with capped full-jitter backoff and publishes it
again; simulated time does not move on until it is acknowledged, so no reading is
skipped. A reading published but not yet ledgered when the process is killed
(SIGKILL between PUBACK and the write) is delivered but not in the ledger, and a
resumed run (``--resume-ledger``) uses its timestamp again for a new reading.

SIGTERM and SIGINT finish the in-flight publish, write its ledger line and exit 0.

Time. With the real clock (the default) ``--interval`` is real seconds between
publishes and each reading moves the household ``--step`` simulated seconds on from
``--start``. With a simulated clock (``--clock sim:<ISO start>@<anchor>x<speed>`` or
``$FUSEBOX_CLOCK``, ``protocols.clock``), shared with the edge and the chargers of a
scenario, ``--interval`` is *simulated* seconds between readings (>= 1), each reading
is stamped with the clock's time when it is published, and ``--start``/``--step``
are refused (the clock says both). The household model runs from the clock's start,
so a seed gives the same household in every run of a scenario. After an outage a
simulated-clock meter carries on at the clock's time instead of replaying the
missed readings.

Loads behind the meter. ``--add-load-file FILE`` (repeatable) adds the power a
charger simulator writes with ``--power-file`` (JSON ``{"power_w": 7360.0, ...}``)
to the household; ``--spike-file FILE`` adds the ``add_w`` it holds (JSON
``{"add_w": 8000}``) while the file exists. Both are read just before each reading,
spread evenly over the meter's phases, shown in its power and integrated into its
import register (held until the next reading). A missing file adds nothing.

The package. Each simulated meter model is one module (``_glow``, ``_tasmota``,
``_shelly``, ``_generic``: the decimal places it publishes, its base topic and its
encoder) and one line in ``_registry.SIM_METER_MODELS``, from which ``--format``'s
choices, ``sim_base_topic`` and ``WIRE_RESOLUTION`` are derived; ``_wire`` holds
what models are made of, ``_encoder`` turns samples into payloads, ``_ledger`` the
ledger, ``_config`` and ``_cli`` the command line, ``_publisher`` the MQTT shell and
``_simulator`` one meter.
"""

from __future__ import annotations

from simulators.meter._cli import add_arguments, main, run
from simulators.meter._config import BROKER_URL_ENV, DEFAULT_BROKER_URL, MeterSimConfig
from simulators.meter._encoder import MeterEncoder, quantize_sample
from simulators.meter._generic import SIM_GENERIC_MAPPING
from simulators.meter._ledger import LedgerEntry, last_ledger_entry, read_ledger
from simulators.meter._registry import (
    FORMAT_CHOICES,
    SIM_METER_MODELS,
    WIRE_RESOLUTION,
    sim_base_topic,
    sim_meter_model,
)
from simulators.meter._simulator import PROGRESS_EVERY_READINGS, MeterSimulator
from simulators.meter._wire import (
    DeviceMemory,
    SimMeterModel,
    TasmotaVariant,
    WireResolution,
)

__all__ = [
    "BROKER_URL_ENV",
    "DEFAULT_BROKER_URL",
    "FORMAT_CHOICES",
    "PROGRESS_EVERY_READINGS",
    "SIM_GENERIC_MAPPING",
    "SIM_METER_MODELS",
    "WIRE_RESOLUTION",
    "DeviceMemory",
    "LedgerEntry",
    "MeterEncoder",
    "MeterSimConfig",
    "MeterSimulator",
    "SimMeterModel",
    "TasmotaVariant",
    "WireResolution",
    "add_arguments",
    "last_ledger_entry",
    "main",
    "quantize_sample",
    "read_ledger",
    "run",
    "sim_base_topic",
    "sim_meter_model",
]

"""A smart meter on MQTT: a simulated household published as a real device would.

``fusebox sim meter`` (or ``python -m simulators.meter``) runs one meter::

    fusebox sim meter --format glow --device 70B3D54B0001 --interval 10 \\
        --ledger var/meter.jsonl

Formats, topics and payloads are those of the real devices (``encode`` below): a
Hildebrand Glow, a Tasmota (``ENERGY`` block or an SML reading head), a Shelly Pro EM
(single phase) or Pro 3EM (``--phases 3``), or a generic JSON meter described by
``SIM_GENERIC_MAPPING``. The edge subscribes with
``protocols.meters.meter_topic_filters(format, sim_base_topic(format, device))``.

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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import ssl
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Literal, TextIO
from zoneinfo import ZoneInfo

import aiomqtt

from protocols.clock import Clock, clock_from_env
from protocols.meters import (
    FieldMapping,
    GenericMapping,
    MeterFormat,
    meter_topic_filters,
)
from protocols.readings import ts_to_ms
from protocols.urls import BadURL, MqttTarget, parse_mqtt_url
from simulators._args import add_clock_argument
from simulators._signals import stop_on_signals
from simulators.household import HouseholdLoad, MeterSample, PhaseSample

log = logging.getLogger("fusebox.sim.meter")

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
BROKER_URL_ENV = "FUSEBOX_LOCAL_MQTT_URL"
PROGRESS_EVERY_READINGS = 1000

TasmotaVariant = Literal["energy", "sml"]

# --- wire formats --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireResolution:
    """Decimal places each format publishes, in canonical units (a Glow's kWh with 3
    decimals is Wh with 0)."""

    energy_wh: int
    power_w: int
    voltage_v: int
    current_a: int
    frequency_hz: int
    power_factor: int = 2


WIRE_RESOLUTION: dict[MeterFormat, WireResolution] = {
    MeterFormat.GLOW: WireResolution(0, 0, 1, 3, 2),
    MeterFormat.TASMOTA: WireResolution(0, 0, 0, 3, 0),
    MeterFormat.SHELLY: WireResolution(2, 1, 1, 3, 1),
    MeterFormat.GENERIC: WireResolution(0, 0, 1, 3, 2),
}

SIM_GENERIC_MAPPING = GenericMapping(
    fields=(
        FieldMapping(path="meter.energy_kwh", quantity="import_energy_wh", unit="kWh"),
        FieldMapping(
            path="meter.export_kwh",
            quantity="export_energy_wh",
            unit="kWh",
            required=False,
        ),
        FieldMapping(path="meter.power_kw", quantity="power_w", unit="kW"),
        FieldMapping(path="meter.voltage_v", quantity="voltage_v", required=False),
        FieldMapping(path="meter.current_a", quantity="current_a", required=False),
        *(
            FieldMapping(
                path=f"meter.phases.{index}.{key}",
                quantity=quantity.format(n=index + 1),
                unit=unit,
                required=False,
            )
            for index in range(3)
            for key, quantity, unit in (
                ("power_kw", "power_l{n}_w", "kW"),
                ("voltage_v", "voltage_l{n}_v", "V"),
                ("current_a", "current_l{n}_a", "A"),
            )
        ),
    ),
    timestamp_path="ts",
    timestamp_format="unix_ms",
)
"""The ``GenericMapping`` of the simulator's generic format: configure the edge's
generic meter with it. Payload on ``sim/<device>/reading``::

    {"ts": 1714586400000,
     "meter": {"energy_kwh": 6613.405, "export_kwh": 0.0, "power_kw": 0.951,
               "voltage_v": 231.4, "current_a": 4.33}}

(three-phase: ``"phases": [{"power_kw", "voltage_v", "current_a"} x 3]`` in place
of ``voltage_v``/``current_a``)."""


def sim_base_topic(meter_format: MeterFormat | str, device_id: str) -> str:
    """The base topic to configure on the edge for a simulated meter, as
    ``protocols.meters.meter_topic_filters`` expects it."""
    meter_format = MeterFormat(meter_format)
    return {
        MeterFormat.GLOW: f"glow/{device_id}",
        MeterFormat.TASMOTA: f"tele/{device_id}",
        MeterFormat.SHELLY: device_id,
        MeterFormat.GENERIC: f"sim/{device_id}/reading",
    }[meter_format]


def _decimal(value: float) -> Decimal:
    return Decimal(repr(value))


def _quantize(value: float, places: int) -> float:
    exponent = Decimal(1).scaleb(-places)
    return float(_decimal(value).quantize(exponent, rounding=ROUND_HALF_EVEN))


def _per(value: float, divisor: int) -> float:
    """``value / divisor`` exactly in decimal (6613405.0 Wh -> 6613.405 kWh), so
    that the decoder's ``* divisor`` gives ``value`` back."""
    return float(_decimal(value) / divisor)


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def quantize_sample(
    meter_format: MeterFormat | str, sample: MeterSample
) -> MeterSample:
    """``sample`` at the resolution ``meter_format`` publishes, so that decoding the
    encoded sample gives these values exactly. The total power of a three-phase
    sample becomes the exact sum of its rounded phases (Tasmota publishes only the
    phases)."""
    res = WIRE_RESOLUTION[MeterFormat(meter_format)]
    phases = tuple(
        PhaseSample(
            power_w=_quantize(phase.power_w, res.power_w),
            voltage_v=_quantize(phase.voltage_v, res.voltage_v),
            current_a=_quantize(phase.current_a, res.current_a),
            import_energy_wh=_quantize(phase.import_energy_wh, res.energy_wh),
            power_factor=_quantize(phase.power_factor, res.power_factor),
        )
        for phase in sample.phases
    )
    total_power_w = float(
        sum((_decimal(phase.power_w) for phase in phases), Decimal(0))
    )
    return MeterSample(
        ts=sample.ts.astimezone(UTC).replace(microsecond=0),
        import_energy_wh=_quantize(sample.import_energy_wh, res.energy_wh),
        export_energy_wh=_quantize(sample.export_energy_wh, res.energy_wh),
        power_w=total_power_w,
        frequency_hz=_quantize(sample.frequency_hz, res.frequency_hz),
        phases=phases,
    )


class MeterEncoder:
    """Turns samples into ``(topic, payload)`` exactly as the real device publishes.

    Stateful only for the informational period counters real devices carry (a
    Glow's day/week/month import, a Tasmota's Today/Yesterday/Period), which start
    counting at the first sample. Decoders ignore those counters.
    """

    def __init__(
        self,
        meter_format: MeterFormat | str,
        device_id: str,
        *,
        tasmota_variant: TasmotaVariant = "energy",
    ) -> None:
        self.meter_format = MeterFormat(meter_format)
        self.device_id = device_id
        self.tasmota_variant = tasmota_variant
        # The first filter the edge subscribes to is where the device publishes.
        self.topic = meter_topic_filters(
            self.meter_format, sim_base_topic(self.meter_format, device_id)
        )[0]
        self._period_start_wh: dict[str, tuple[object, float]] = {}
        self._yesterday_kwh = 0.0
        self._last_import_wh: float | None = None
        self._first_ts: datetime | None = None

    def quantize(self, sample: MeterSample) -> MeterSample:
        """``quantize_sample`` for this encoder's format."""
        return quantize_sample(self.meter_format, sample)

    def encode(self, sample: MeterSample) -> tuple[str, bytes]:
        """The topic and payload for ``sample`` (quantized first)."""
        sample = self.quantize(sample)
        if self._first_ts is None:
            self._first_ts = sample.ts
        encoder = {
            MeterFormat.GLOW: self._glow,
            MeterFormat.TASMOTA: self._tasmota,
            MeterFormat.SHELLY: self._shelly,
            MeterFormat.GENERIC: self._generic,
        }[self.meter_format]
        payload = encoder(sample)
        self._last_import_wh = sample.import_energy_wh
        return self.topic, payload

    def _period_kwh(self, period: str, key: object, register_wh: float) -> float:
        """Import since the start of the current day/week/month, in kWh; a period
        starts at the last register seen before it (or at the first sample)."""
        start = self._period_start_wh.get(period)
        if start is None or start[0] != key:
            base_wh = (
                register_wh if self._last_import_wh is None else self._last_import_wh
            )
            if period == "day" and start is not None:
                self._yesterday_kwh = round((base_wh - start[1]) / 1000, 3)
            start = (key, base_wh)
            self._period_start_wh[period] = start
        return round((register_wh - start[1]) / 1000, 3)

    def _glow(self, sample: MeterSample) -> bytes:
        ts = sample.ts
        iso_week = ts.isocalendar()[:2]
        register_wh = sample.import_energy_wh
        return _json(
            {
                "electricitymeter": {
                    "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "energy": {
                        "export": {
                            "cumulative": _per(sample.export_energy_wh, 1000),
                            "units": "kWh",
                        },
                        "import": {
                            "cumulative": _per(register_wh, 1000),
                            "day": self._period_kwh("day", ts.date(), register_wh),
                            "week": self._period_kwh("week", iso_week, register_wh),
                            "month": self._period_kwh(
                                "month", (ts.year, ts.month), register_wh
                            ),
                            "units": "kWh",
                            "mpan": "1900012345678",
                            "supplier": "Fusebox Sim Energy",
                            "price": {"unitrate": 0.2450, "standingcharge": 0.6040},
                        },
                    },
                    "power": {"value": _per(sample.power_w, 1000), "units": "kW"},
                }
            }
        )

    def _tasmota(self, sample: MeterSample) -> bytes:
        local_time = sample.ts.strftime("%Y-%m-%dT%H:%M:%S")
        phases = sample.phases
        three_phase = len(phases) == 3
        if self.tasmota_variant == "sml":
            block: dict[str, object] = {
                "Total_in": _per(sample.import_energy_wh, 1000),
                "Total_out": _per(sample.export_energy_wh, 1000),
                "Power_curr": sample.power_w,
            }
            if three_phase:
                for index, phase in enumerate(phases, start=1):
                    block[f"Power_L{index}"] = phase.power_w
            return _json({"Time": local_time, "SML": block})

        def per_phase(values: list[float]) -> float | list[float]:
            return values if three_phase else values[0]

        today_kwh = self._period_kwh("day", sample.ts.date(), sample.import_energy_wh)
        period_wh = (
            0
            if self._last_import_wh is None
            else round(sample.import_energy_wh - self._last_import_wh)
        )
        apparent = [round(p.voltage_v * p.current_a) for p in phases]
        reactive = [
            round(math.sqrt(max(0.0, s * s - p.power_w * p.power_w)))
            for s, p in zip(apparent, phases, strict=True)
        ]
        first_ts = self._first_ts or sample.ts
        energy: dict[str, object] = {
            "TotalStartTime": first_ts.strftime("%Y-%m-%dT%H:%M:%S"),
            "Total": _per(sample.import_energy_wh, 1000),
            "Yesterday": self._yesterday_kwh,
            "Today": today_kwh,
            "Period": period_wh,
            "Power": per_phase([p.power_w for p in phases]),
            "ApparentPower": per_phase([float(s) for s in apparent]),
            "ReactivePower": per_phase([float(r) for r in reactive]),
            "Factor": per_phase([p.power_factor for p in phases]),
            "Frequency": sample.frequency_hz,
            "Voltage": per_phase([p.voltage_v for p in phases]),
            "Current": per_phase([p.current_a for p in phases]),
            "ExportActive": _per(sample.export_energy_wh, 1000),
        }
        return _json({"Time": local_time, "ENERGY": energy})

    def _shelly(self, sample: MeterSample) -> bytes:
        phases = sample.phases
        params: dict[str, object] = {"ts": sample.ts.timestamp()}
        if len(phases) == 3:
            em: dict[str, object] = {"id": 0}
            emdata: dict[str, object] = {"id": 0}
            for letter, phase in zip("abc", phases, strict=True):
                em[f"{letter}_current"] = phase.current_a
                em[f"{letter}_voltage"] = phase.voltage_v
                em[f"{letter}_act_power"] = phase.power_w
                em[f"{letter}_aprt_power"] = round(phase.voltage_v * phase.current_a, 1)
                em[f"{letter}_pf"] = phase.power_factor
                em[f"{letter}_freq"] = sample.frequency_hz
                emdata[f"{letter}_total_act_energy"] = phase.import_energy_wh
                emdata[f"{letter}_total_act_ret_energy"] = 0.0
            em["n_current"] = None
            em["total_current"] = round(sum(p.current_a for p in phases), 3)
            em["total_act_power"] = sample.power_w
            em["total_aprt_power"] = round(
                sum(p.voltage_v * p.current_a for p in phases), 3
            )
            em["user_calibrated_phase"] = []
            emdata["total_act"] = sample.import_energy_wh
            emdata["total_act_ret"] = sample.export_energy_wh
            params["em:0"] = em
            params["emdata:0"] = emdata
        else:
            (phase,) = phases
            params["em1:0"] = {
                "id": 0,
                "current": phase.current_a,
                "voltage": phase.voltage_v,
                "act_power": phase.power_w,
                "aprt_power": round(phase.voltage_v * phase.current_a, 1),
                "pf": phase.power_factor,
                "freq": sample.frequency_hz,
                "calibration": "factory",
            }
            params["em1data:0"] = {
                "id": 0,
                "total_act_energy": sample.import_energy_wh,
                "total_act_ret_energy": sample.export_energy_wh,
            }
        return _json(
            {
                "src": self.device_id,
                "dst": f"{self.device_id}/events",
                "method": "NotifyStatus",
                "params": params,
            }
        )

    def _generic(self, sample: MeterSample) -> bytes:
        meter: dict[str, object] = {
            "energy_kwh": _per(sample.import_energy_wh, 1000),
            "export_kwh": _per(sample.export_energy_wh, 1000),
            "power_kw": _per(sample.power_w, 1000),
        }
        if len(sample.phases) == 3:
            meter["phases"] = [
                {
                    "power_kw": _per(phase.power_w, 1000),
                    "voltage_v": phase.voltage_v,
                    "current_a": phase.current_a,
                }
                for phase in sample.phases
            ]
        else:
            meter["voltage_v"] = sample.phases[0].voltage_v
            meter["current_a"] = sample.phases[0].current_a
        return _json({"ts": ts_to_ms(sample.ts), "meter": meter})


# --- the ledger ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One published and acknowledged reading, as written to the ledger."""

    n: int
    device: str
    format: str
    topic: str
    ts: datetime
    import_energy_wh: float
    export_energy_wh: float
    power_w: float
    phase_import_energy_wh: tuple[float, ...] | None = None

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "n": self.n,
            "device": self.device,
            "format": self.format,
            "topic": self.topic,
            "ts": self.ts.isoformat(),
            "ts_ms": ts_to_ms(self.ts),
            "import_energy_wh": self.import_energy_wh,
            "export_energy_wh": self.export_energy_wh,
            "power_w": self.power_w,
        }
        if self.phase_import_energy_wh is not None:
            record["phase_import_energy_wh"] = list(self.phase_import_energy_wh)
        return json.dumps(record, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> LedgerEntry:
        """Parse a ledger line; raises ``ValueError`` if it is not one."""
        try:
            record = json.loads(line)
            phases = record.get("phase_import_energy_wh")
            return cls(
                n=int(record["n"]),
                device=str(record["device"]),
                format=str(record["format"]),
                topic=str(record["topic"]),
                ts=datetime.fromisoformat(record["ts"]).astimezone(UTC),
                import_energy_wh=float(record["import_energy_wh"]),
                export_energy_wh=float(record["export_energy_wh"]),
                power_w=float(record["power_w"]),
                phase_import_energy_wh=None
                if phases is None
                else tuple(float(v) for v in phases),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a ledger line: {line[:80]!r} ({exc})") from None


def read_ledger(path: Path) -> Iterator[LedgerEntry]:
    """Every complete line of a ledger, in order (a torn last line is skipped)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.endswith("\n") and line.strip():
                yield LedgerEntry.from_json(line)


def last_ledger_entry(path: Path) -> LedgerEntry | None:
    """The last complete entry of the ledger at ``path``, or ``None`` if it does
    not exist or is empty. A torn last line (the process died while writing it) is
    cut off so that appending continues on a line boundary."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    with path.open("rb+") as ledger:
        tail_start = max(0, size - 65536)
        ledger.seek(tail_start)
        tail = ledger.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            log.warning("ledger %s ends with a torn line; cutting it off", path)
            ledger.truncate(tail_start + cut)
            tail = tail[:cut]
    for raw in reversed(tail.splitlines()):
        if raw.strip():
            return LedgerEntry.from_json(raw.decode("utf-8"))
    return None


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterSimConfig:
    """Everything one simulated meter needs; built from the CLI by ``from_args``."""

    target: MqttTarget
    meter_format: MeterFormat
    device_id: str
    interval_s: float = 10.0
    step_s: float = 10.0
    start: datetime | None = None
    count: int | None = None
    seed: int = 0
    qos: int = 1
    ledger_path: Path | None = None
    resume_ledger: bool = False
    phases: int = 1
    household_timezone: str = "Europe/London"
    tasmota_variant: TasmotaVariant = "energy"
    initial_import_kwh: float | None = None
    max_backoff_s: float = 15.0
    publish_timeout_s: float = 10.0
    log_every_s: float = 10.0
    clock: Clock = field(default_factory=Clock)
    add_load_paths: tuple[Path, ...] = ()
    spike_path: Path | None = None

    @property
    def simulated(self) -> bool:
        """True when readings follow the shared simulated clock."""
        return self.clock.simulated

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MeterSimConfig:
        """Validate parsed CLI arguments; raises ``ValueError`` (``BadURL``) with a
        message for the user."""
        device_id = str(args.device)
        if (
            not device_id
            or any(c in device_id for c in "/+#\x00")
            or len(device_id) > 64
        ):
            raise ValueError(
                f"--device {device_id!r}: use 1-64 characters without / + # "
                "(e.g. a meter's MAC like 70B3D54B0001)"
            )
        if args.interval < 0:
            raise ValueError("--interval must be >= 0 seconds")
        clock = clock_from_env(getattr(args, "clock", None))
        if clock.simulated:
            if args.step is not None or args.start is not None:
                raise ValueError(
                    "--step and --start come from the clock when it is simulated "
                    f"({clock.spec()}): give --interval in simulated seconds only"
                )
            if args.interval < 1:
                raise ValueError(
                    "--interval must be >= 1 simulated second with a simulated clock"
                )
        step_s = args.interval if args.step is None else args.step
        if step_s < 1:
            raise ValueError(
                "--step must be >= 1 simulated second: meters stamp readings to the "
                "second and every reading needs its own timestamp"
            )
        if args.count is not None and args.count < 1:
            raise ValueError("--count must be >= 1")
        start = None
        if args.start is not None:
            start = datetime.fromisoformat(args.start)
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            start = start.astimezone(UTC).replace(microsecond=0)
        try:
            ZoneInfo(args.household_timezone)
        except (ValueError, KeyError):
            raise ValueError(
                f"--household-timezone {args.household_timezone!r}: use an IANA "
                "name such as Europe/London"
            ) from None
        if args.resume_ledger and args.ledger is None:
            raise ValueError("--resume-ledger needs --ledger FILE")
        seed = args.seed if args.seed is not None else zlib.crc32(device_id.encode())
        return cls(
            target=parse_mqtt_url(args.broker),
            meter_format=MeterFormat(args.format),
            device_id=device_id,
            interval_s=float(args.interval),
            step_s=float(step_s),
            start=start,
            count=args.count,
            seed=seed,
            qos=args.qos,
            ledger_path=None if args.ledger is None else Path(args.ledger),
            resume_ledger=bool(args.resume_ledger),
            phases=args.phases,
            household_timezone=args.household_timezone,
            tasmota_variant=args.tasmota_variant,
            initial_import_kwh=args.initial_import_kwh,
            max_backoff_s=float(args.max_backoff),
            publish_timeout_s=float(args.publish_timeout),
            log_every_s=float(args.log_every),
            clock=clock,
            add_load_paths=tuple(
                Path(p) for p in getattr(args, "add_load_file", None) or ()
            ),
            spike_path=None
            if getattr(args, "spike_file", None) is None
            else Path(args.spike_file),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fusebox sim meter`` flags to ``parser``; pass the parsed namespace
    to ``run``."""
    parser.add_argument(
        "--broker",
        default=os.environ.get(BROKER_URL_ENV) or DEFAULT_BROKER_URL,
        help=f"MQTT broker URL (default ${BROKER_URL_ENV} or {DEFAULT_BROKER_URL})",
    )
    parser.add_argument(
        "--format",
        choices=[f.value for f in MeterFormat],
        default=MeterFormat.GLOW.value,
        help="device to imitate (default glow)",
    )
    parser.add_argument("--device", default="sim-meter-1", help="device id in topics")
    parser.add_argument(
        "--interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="real seconds between publishes (default 10); simulated seconds "
        "between readings when --clock is simulated",
    )
    add_clock_argument(parser)
    parser.add_argument(
        "--add-load-file",
        action="append",
        default=None,
        metavar="FILE",
        help='add the power in this JSON file ({"power_w": W}, e.g. a charger '
        "simulator's --power-file) to the household; repeatable",
    )
    parser.add_argument(
        "--spike-file",
        default=None,
        metavar="FILE",
        help='while this file exists, add the W it holds ({"add_w": 8000})',
    )
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        metavar="SECONDS",
        help="simulated seconds per reading, >= 1 (default: the interval)",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="ISO",
        help="simulated time of the first reading (default: now, to the second; "
        "naive means UTC)",
    )
    parser.add_argument(
        "--count", type=int, default=None, help="stop after N readings (default: never)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="household seed (default: from --device)"
    )
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    parser.add_argument(
        "--ledger",
        default=None,
        metavar="FILE",
        help="append one JSON line per reading the broker acknowledged",
    )
    parser.add_argument(
        "--resume-ledger",
        action="store_true",
        help="continue registers and time from the ledger's last line",
    )
    parser.add_argument(
        "--phases", type=int, choices=(1, 3), default=1, help="supply phases"
    )
    parser.add_argument(
        "--household-timezone",
        default="Europe/London",
        help="IANA zone for the household's time of day",
    )
    parser.add_argument(
        "--tasmota-variant",
        choices=("energy", "sml"),
        default="energy",
        help="tasmota: ENERGY block or an SML reading head",
    )
    parser.add_argument(
        "--initial-import-kwh",
        type=float,
        default=None,
        help="import register at the start (default: from the seed)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="cap of the reconnect backoff (default 15)",
    )
    parser.add_argument(
        "--publish-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wait this long for the broker's acknowledgement (default 10)",
    )
    parser.add_argument(
        "--log-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="progress line interval on stderr (default 10)",
    )


# --- the MQTT shell -------------------------------------------------------------------


class _Stopped(Exception):
    """The stop event was set while waiting to connect or back off."""


class _Publisher:
    """One MQTT connection that publishes a message until the broker has it.

    A watcher task iterates the client's (empty) message stream, which aiomqtt ends
    with ``MqttError`` when the connection drops: a publish waiting for its PUBACK
    then fails at once instead of after ``publish_timeout_s``. Logs connection state
    changes (connected, lost, back), not every failed attempt.
    """

    def __init__(self, config: MeterSimConfig, stop: asyncio.Event) -> None:
        self._config = config
        self._stop = stop
        self._client: aiomqtt.Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._link_watch: asyncio.Task[None] | None = None
        self._jitter = random.Random()
        self._down_since: float | None = None
        self._ever_connected = False
        self.reconnects = 0

    async def publish(self, topic: str, payload: bytes) -> bool:
        """Publish until acknowledged (``True``) or until stopped while not
        connected (``False``: the broker does not have it)."""
        attempt = 0
        while True:
            try:
                await self._publish_once(topic, payload)
            except _Stopped:
                return False
            except aiomqtt.MqttError as exc:
                await self._lost(exc)
                attempt += 1
                cap_s = min(self._config.max_backoff_s, 0.1 * 2**attempt)
                if await _wait(self._stop, self._jitter.uniform(0.0, cap_s)):
                    return False
                continue
            if self._down_since is not None:
                log.info(
                    "broker %s back after %.1f s; resent the held reading",
                    self._config.target.url(),
                    time.monotonic() - self._down_since,
                )
                self._down_since = None
                self.reconnects += 1
            return True

    async def _publish_once(self, topic: str, payload: bytes) -> None:
        client, link_watch = await self._connected()
        publish = asyncio.ensure_future(
            client.publish(
                topic,
                payload,
                qos=self._config.qos,
                timeout=self._config.publish_timeout_s,
            )
        )
        await asyncio.wait({publish, link_watch}, return_when=asyncio.FIRST_COMPLETED)
        if publish.done():
            publish.result()  # raises MqttError if the publish failed
            return
        publish.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await publish
        raise aiomqtt.MqttError("connection lost while waiting for the PUBACK")

    async def _connected(self) -> tuple[aiomqtt.Client, asyncio.Task[None]]:
        if self._client is not None and self._link_watch is not None:
            return self._client, self._link_watch
        if self._stop.is_set():
            raise _Stopped
        target = self._config.target
        client = aiomqtt.Client(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            identifier=f"fusebox-sim-{self._config.device_id}",
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            keepalive=15,
            timeout=self._config.publish_timeout_s,
            tls_context=ssl.create_default_context() if target.tls else None,
        )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(client)
        if not self._ever_connected:
            self._ever_connected = True
            log.info("connected to %s as %s", target.url(), client.identifier)
        self._client, self._stack = client, stack
        self._link_watch = asyncio.create_task(
            _until_disconnected(client), name="meter-link-watch"
        )
        return client, self._link_watch

    async def _lost(self, exc: aiomqtt.MqttError) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "broker %s unavailable (%s); holding the reading and retrying",
                self._config.target.url(),
                exc,
            )
        else:
            log.debug("broker still unavailable: %s", exc)
        await self.close()

    async def close(self) -> None:
        """Drop the connection (gracefully if it is still up)."""
        stack, self._client, self._stack = self._stack, None, None
        watch, self._link_watch = self._link_watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await watch
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await stack.aclose()


async def _until_disconnected(client: aiomqtt.Client) -> None:
    """Return (by ``MqttError``) when ``client`` loses its connection; the meter
    subscribes to nothing, so no message ever arrives."""
    async for _ in client.messages:
        pass


async def _wait(stop: asyncio.Event, timeout_s: float) -> bool:
    """Sleep ``timeout_s``; ``True`` if ``stop`` was set meanwhile."""
    if timeout_s <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await stop.wait()
    return stop.is_set()


class MeterSimulator:
    """One simulated meter: household model, encoder, publisher and ledger."""

    def __init__(self, config: MeterSimConfig) -> None:
        self.config = config
        self.encoder = MeterEncoder(
            config.meter_format,
            config.device_id,
            tasmota_variant=config.tasmota_variant,
        )
        self.published = 0
        resume = (
            last_ledger_entry(config.ledger_path)
            if config.resume_ledger and config.ledger_path is not None
            else None
        )
        if resume is not None:
            if (
                resume.device != config.device_id
                or resume.format != config.meter_format
            ):
                raise ValueError(
                    f"ledger {config.ledger_path} is for {resume.format} meter "
                    f"{resume.device!r}, not {config.meter_format} {config.device_id!r}"
                )
            origin, first_index = resume.ts, 1
            import_wh, export_wh = resume.import_energy_wh, resume.export_energy_wh
            phase_wh = resume.phase_import_energy_wh
            if phase_wh is not None and len(phase_wh) != config.phases:
                raise ValueError(
                    f"ledger has {len(phase_wh)} phases, not {config.phases}"
                )
            log.info(
                "resuming %s after %s at %.0f Wh", config.device_id, origin, import_wh
            )
        else:
            if config.simulated:
                origin = datetime.fromtimestamp(
                    math.ceil(config.clock.timestamp()), UTC
                )
            else:
                origin = config.start or datetime.now(UTC).replace(microsecond=0)
            first_index = 0
            seeded = random.Random(config.seed)
            import_kwh = (
                config.initial_import_kwh
                if config.initial_import_kwh is not None
                else seeded.uniform(5_000.0, 40_000.0)
            )
            import_wh, export_wh, phase_wh = import_kwh * 1000.0, 0.0, None
        household_start = origin
        clock_start = config.clock.start
        if resume is None and clock_start is not None and clock_start <= origin:
            # the household runs from the clock's start: the same seed gives the
            # same household in every run of a scenario, whenever the meter starts
            household_start = clock_start
        self._origin = origin
        self._first_index = first_index
        # simulated clock: when the next reading is due (epoch seconds)
        self._next_s = origin.timestamp() + (config.interval_s if resume else 0.0)
        self._last_s: int | None = math.floor(origin.timestamp()) if resume else None
        self._extra_w = 0.0
        self._unreadable: set[Path] = set()
        self.household = HouseholdLoad(
            seed=config.seed,
            start=household_start,
            import_energy_wh=import_wh,
            export_energy_wh=export_wh,
            phases=config.phases,
            phase_import_energy_wh=phase_wh,
            timezone=config.household_timezone,
        )

    def sim_time(self, n: int) -> datetime:
        """Simulated instant of the ``n``-th reading of this run (``n`` from 1)."""
        offset_s = math.floor((n - 1 + self._first_index) * self.config.step_s)
        return self._origin + timedelta(seconds=offset_s)

    def next_clock_time(self) -> datetime:
        """Simulated clock: the instant of the next reading, ``interval`` after the
        last one, or the clock's now (to the second) if that is more than an
        interval behind it (an outage: carry on, no burst)."""
        interval = self.config.interval_s
        now_s = self.config.clock.timestamp()
        due = self._next_s
        if due < now_s - interval:
            due = math.floor(now_s)
        ts_s = math.floor(due)
        if self._last_s is not None:
            ts_s = max(ts_s, self._last_s + 1)
        self._next_s = due + interval
        self._last_s = ts_s
        return datetime.fromtimestamp(ts_s, UTC)

    def extra_load_w(self) -> float:
        """The loads behind the meter from ``--add-load-file`` and ``--spike-file``
        now (W)."""
        total = 0.0
        for path in self.config.add_load_paths:
            total += self._read_watts(path, "power_w")
        spike = self.config.spike_path
        if spike is not None:
            total += self._read_watts(spike, "add_w")
        return total

    def _read_watts(self, path: Path, key: str) -> float:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0.0
        except (OSError, ValueError) as exc:
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("load file %s unreadable (%s): adds nothing", path, exc)
            return 0.0
        value = document.get(key) if isinstance(document, dict) else None
        try:
            watts = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            watts = math.nan
        if not math.isfinite(watts) or watts < 0:
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("load file %s has no %s >= 0: adds nothing", path, key)
            return 0.0
        self._unreadable.discard(path)
        return watts

    def prepare(self, n: int) -> tuple[MeterSample, str, bytes]:
        """Advance the household to reading ``n`` and encode it."""
        return self.prepare_at(self.sim_time(n))

    def prepare_at(self, ts: datetime) -> tuple[MeterSample, str, bytes]:
        """Advance the household to ``ts``, add the loads behind the meter as they
        are now, and encode the reading."""
        self.household.advance_to(ts)
        if self.config.add_load_paths or self.config.spike_path is not None:
            extra_w = self.extra_load_w()
            if (extra_w > 0) != (self._extra_w > 0) or abs(
                extra_w - self._extra_w
            ) > 1000:
                log.info(
                    "meter %s: load behind the meter %.0f W (was %.0f W)",
                    self.config.device_id,
                    extra_w,
                    self._extra_w,
                )
            self._extra_w = extra_w
            self.household.set_extra_w(extra_w)
        sample = self.encoder.quantize(self.household.sample())
        topic, payload = self.encoder.encode(sample)
        return sample, topic, payload

    def ledger_entry(self, n: int, sample: MeterSample, topic: str) -> LedgerEntry:
        return LedgerEntry(
            n=n,
            device=self.config.device_id,
            format=self.config.meter_format.value,
            topic=topic,
            ts=sample.ts,
            import_energy_wh=sample.import_energy_wh,
            export_energy_wh=sample.export_energy_wh,
            power_w=sample.power_w,
            phase_import_energy_wh=tuple(p.import_energy_wh for p in sample.phases)
            if len(sample.phases) > 1
            else None,
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Publish readings until ``count`` is reached or ``stop`` is set; 0 when
        done, 1 if the ledger cannot be written."""
        config = self.config
        ledger: TextIO | None = None
        publisher = _Publisher(config, stop)
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        last_log = time.monotonic()
        n = 1
        try:
            if config.ledger_path is not None:
                ledger = config.ledger_path.open("a", encoding="utf-8")
            while not stop.is_set() and (config.count is None or n <= config.count):
                if config.simulated:
                    ts = self.next_clock_time()
                    ahead_s = (ts - config.clock.now()).total_seconds()
                    if await _wait(stop, config.clock.real_seconds(ahead_s)):
                        break
                else:
                    if await _wait(stop, next_due - loop.time()):
                        break
                    ts = self.sim_time(n)
                # read the loads behind the meter at the moment of the reading
                sample, topic, payload = self.prepare_at(ts)
                if not await publisher.publish(topic, payload):
                    break
                if ledger is not None:
                    entry = self.ledger_entry(n, sample, topic)
                    ledger.write(entry.to_json() + "\n")
                    ledger.flush()
                self.published = n
                now_mono = time.monotonic()
                if (
                    n == 1
                    or n % PROGRESS_EVERY_READINGS == 0
                    or now_mono - last_log >= config.log_every_s
                ):
                    last_log = now_mono
                    self._log_progress(sample, publisher.reconnects)
                n += 1
                next_due += config.interval_s
                if next_due < loop.time():
                    next_due = loop.time()  # after an outage: carry on, no burst
        except OSError as exc:
            log.error("cannot write the ledger %s: %s", config.ledger_path, exc)
            return 1
        finally:
            await publisher.close()
            if ledger is not None:
                ledger.close()
        log.info(
            "meter %s stopped after %d readings (%d reconnects)",
            config.device_id,
            self.published,
            publisher.reconnects,
        )
        return 0

    def _log_progress(self, sample: MeterSample, reconnects: int) -> None:
        log.info(
            "meter %s: %d readings sent; last %s import=%.0f Wh power=%.0f W "
            "running=%s reconnects=%d",
            self.config.device_id,
            self.published,
            sample.ts.isoformat(),
            sample.import_energy_wh,
            sample.power_w,
            ",".join(self.household.running_appliances) or "-",
            reconnects,
        )


async def run(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> int:
    """Run one simulated meter from parsed ``add_arguments`` flags.

    Returns 0 when ``--count`` readings are published or on SIGTERM/SIGINT (after
    the in-flight publish), 2 for bad flags, 1 if the ledger cannot be written.
    ``stop`` lets an in-process caller (a test, the demo) stop the meter.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        config = MeterSimConfig.from_args(args)
        simulator = MeterSimulator(config)
    except (BadURL, ValueError, OSError) as exc:
        log.error("fusebox sim meter: %s", exc)
        return 2
    stop = stop or asyncio.Event()
    with stop_on_signals(stop):
        return await simulator.run(stop)


def main(argv: list[str] | None = None) -> int:
    """``python -m simulators.meter``: the same as ``fusebox sim meter``."""
    parser = argparse.ArgumentParser(
        prog="fusebox sim meter",
        description="Publish a simulated household as a smart meter over MQTT.",
    )
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""``MeterSimConfig``: everything one simulated meter needs, validated from the
command line."""

from __future__ import annotations

import argparse
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from protocols.clock import Clock
from protocols.meters import MeterFormat
from protocols.urls import MqttTarget, parse_mqtt_url
from simulators._args import clock_from_args
from simulators.meter._wire import TasmotaVariant

DEFAULT_BROKER_URL = "mqtt://127.0.0.1:1883"
BROKER_URL_ENV = "FUSEBOX_LOCAL_MQTT_URL"


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
    clock: Clock = field(default_factory=lambda: Clock(real=time.time))
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
        clock = clock_from_args(args)
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

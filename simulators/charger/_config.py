"""The charger's configuration: the scenario of timed actions and ``ChargerConfig``
(built from the command line by ``ChargerConfig.from_args``)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from protocols.clock import Clock
from simulators._args import clock_from_args
from simulators.ev import VOLTAGE_V

VERSIONS: Final = ("1.6", "2.0.1")
ACTIONS: Final = {"plug", "start", "stop", "unplug"}
_ACTION_ALIASES: Final = {"authorize+start": "start", "authorize_start": "start"}


@dataclass(frozen=True, slots=True)
class ScenarioAction:
    """One timed action: ``plug``, ``start`` (authorize + start), ``stop``,
    ``unplug``, ``at_s`` seconds after the run starts."""

    at_s: float
    action: str
    connector: int = 1
    id_tag: str | None = None
    at_time: datetime | None = None
    """An absolute time (on the charger's clock) in place of ``at_s``."""


def parse_scenario(document: object) -> tuple[ScenarioAction, ...]:
    """A scenario file's JSON list to actions sorted by time; ``ValueError`` if it is
    not one."""
    if not isinstance(document, list):
        raise ValueError("a scenario is a JSON list of {at, action, ...} objects")
    actions: list[ScenarioAction] = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise ValueError(f"scenario item {index} is not an object")
        name = str(item.get("action", ""))
        name = _ACTION_ALIASES.get(name, name)
        if name not in ACTIONS:
            raise ValueError(
                f"scenario item {index}: action must be one of {sorted(ACTIONS)} "
                f"(or authorize+start), got {item.get('action')!r}"
            )
        at_time: datetime | None = None
        try:
            if isinstance(item.get("at"), str):
                at_time = datetime.fromisoformat(item["at"].replace("Z", "+00:00"))
                if at_time.tzinfo is None:
                    raise ValueError("naive time")
                at_s = at_time.timestamp()
            else:
                at_s = float(item["at"])
            connector = int(item.get("connector", 1))
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"scenario item {index}: needs a number (seconds) or an ISO time "
                "with a zone 'at' and an int 'connector'"
            ) from None
        id_tag = item.get("id_tag")
        actions.append(
            ScenarioAction(
                at_s,
                name,
                connector,
                None if id_tag is None else str(id_tag),
                at_time,
            )
        )
    if len({a.at_time is None for a in actions}) > 1:
        raise ValueError("a scenario's 'at' are all seconds or all ISO times")
    return tuple(sorted(actions, key=lambda a: a.at_s))


@dataclass(frozen=True, slots=True)
class ChargerConfig:
    """One charge point's settings; a fleet has one per charger (``_fleet``)."""

    url: str
    charger_id: str
    version: str = "1.6"
    password: str | None = None
    connectors: int = 1
    ev_battery_kwh: float = 60.0
    ev_soc_pct: float = 20.0
    ev_max_kw: float = 11.0
    phases: int = 3
    max_current_a: float = 32.0
    id_tag: str = "SIMTAG01"
    meter_interval_s: float = 10.0
    heartbeat_s: float | None = None
    scenario: tuple[ScenarioAction, ...] | None = None
    speed: float = 1.0
    ledger_path: Path | None = None
    state_path: Path | None = None
    max_backoff_s: float = 15.0
    clock: Clock = field(default_factory=lambda: Clock(real=time.time))
    power_path: Path | None = None
    quirks: bool = False
    """Mix quirky sampled values into transaction messages (``_quirks``)."""

    @property
    def endpoint(self) -> str:
        """The websocket URL this charger connects to: ``<url>/<charger id>``."""
        return f"{self.url.rstrip('/')}/{self.charger_id}"

    @property
    def charger_max_w(self) -> float:
        """The charger's own maximum power (W) on all its phases."""
        return self.max_current_a * VOLTAGE_V * self.phases

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChargerConfig:
        """Validate parsed ``add_arguments`` flags; ``ValueError`` with a message for
        the user (``run`` exits 2 with it)."""
        if args.ocpp not in VERSIONS:
            raise ValueError(f"--ocpp must be one of {VERSIONS}")
        if not str(args.url).startswith(("ws://", "wss://")):
            raise ValueError(f"--url must be ws:// or wss://, got {args.url!r}")
        if args.connectors < 1:
            raise ValueError("--connectors must be >= 1")
        if args.speed <= 0 or args.meter_interval <= 0:
            raise ValueError("--speed and --meter-interval must be > 0")
        scenario: tuple[ScenarioAction, ...] | None = None
        if args.scenario is not None:
            if args.plug_in_after is not None or args.unplug_after is not None:
                raise ValueError("use --scenario or --plug-in-after, not both")
            scenario = parse_scenario(
                json.loads(Path(args.scenario).read_text(encoding="utf-8"))
            )
        elif args.plug_in_after is not None:
            plug = float(args.plug_in_after)
            steps = [
                ScenarioAction(plug, "plug", c) for c in range(1, args.connectors + 1)
            ] + [
                ScenarioAction(plug, "start", c) for c in range(1, args.connectors + 1)
            ]
            if args.unplug_after is not None:
                unplug = float(args.unplug_after)
                if unplug < plug:
                    raise ValueError("--unplug-after must be >= --plug-in-after")
                for c in range(1, args.connectors + 1):
                    steps += [
                        ScenarioAction(unplug, "stop", c),
                        ScenarioAction(unplug, "unplug", c),
                    ]
            scenario = tuple(steps)
        elif args.unplug_after is not None:
            raise ValueError("--unplug-after needs --plug-in-after")
        for action in scenario or ():
            if not 1 <= action.connector <= args.connectors:
                raise ValueError(f"scenario connector {action.connector} not present")
        return cls(
            url=str(args.url),
            charger_id=str(args.id),
            version=str(args.ocpp),
            password=args.password,
            connectors=int(args.connectors),
            ev_battery_kwh=float(args.ev_battery_kwh),
            ev_soc_pct=float(args.ev_soc),
            ev_max_kw=float(args.ev_max_kw),
            phases=int(args.phases),
            max_current_a=float(args.max_current),
            id_tag=str(args.id_tag),
            meter_interval_s=float(args.meter_interval),
            heartbeat_s=None if args.heartbeat is None else float(args.heartbeat),
            scenario=scenario,
            speed=float(args.speed),
            ledger_path=None if args.ledger is None else Path(args.ledger),
            state_path=None if args.state is None else Path(args.state),
            max_backoff_s=float(args.max_backoff),
            clock=clock_from_args(args),
            power_path=None
            if getattr(args, "power_file", None) is None
            else Path(args.power_file),
            quirks=bool(getattr(args, "quirks", False)),
        )
